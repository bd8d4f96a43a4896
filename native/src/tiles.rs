//! A windowed view's tiles for one entity, kept in Rust, and the fold of its events into them.
//!
//! The encoding is `featurestream.online.series`'s, which the serving reader decodes: a MessagePack map from
//! series name to a flat array `[start, slot, ..., start, slot, ...]`, oldest first, and under `newest` the
//! newest event time applied. Between writes the state stays here, in a few contiguous vectors per series:
//! as Python lists and numbers, following its pointers cost more than the arithmetic.
//!
//! Values merge as in Python: an int sum stays an int (one that leaves 64 bits is an error: MessagePack
//! could not hold it), a float makes it a float; values of one kind compare here, any others by Python's
//! own `<` and `>`.

use std::cmp::Ordering;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyString};

use crate::add_note;
use crate::events::{last_offsets, Cell, EntityEvents, Event};
use rmpv::Value as Packed;

/// How a series' value slot merges (`featurestream.online.series.SLOT_KINDS`).
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Add,
    Max,
    Min,
    Last,
}

/// What an event contributes to its tile: its value, 1 (a count) or its value squared.
#[derive(Clone, Copy, PartialEq)]
enum Contribution {
    Value,
    One,
    Square,
}

/// A tile's value. `Other` holds, encoded, what no arithmetic reads (a datetime, an int past 63 bits): `last`
/// keeps it, `min` and `max` compare it in Python.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Other(Packed),
}

impl Value {
    fn number(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            Value::Bool(b) => Some(*b as i64 as f64),
            _ => None,
        }
    }

    fn integer(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Bool(_) => "bool",
            Value::Str(_) => "str",
            Value::Other(_) => "object",
        }
    }

    fn add(&self, other: &Value) -> PyResult<Value> {
        if let (Some(a), Some(b)) = (self.integer(), other.integer()) {
            return a.checked_add(b).map(Value::Int).ok_or_else(|| {
                PyOverflowError::new_err(format!("the sum {a} + {b} leaves 64 bits: a tile could not store it"))
            });
        }
        match (self.number(), other.number()) {
            (Some(a), Some(b)) => Ok(Value::Float(a + b)),
            _ => Err(PyTypeError::new_err(format!(
                "unsupported operand type(s) for +: '{}' and '{}'",
                self.type_name(),
                other.type_name()
            ))),
        }
    }

    /// The order of two values of one kind; None when only Python can tell (mixed or other types).
    fn native_order(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Str(a), Value::Str(b)) => Some(a.cmp(b)),
            // NaN is neither greater nor smaller, as in Python: the held value stays.
            (Value::Float(a), Value::Float(b)) => Some(a.partial_cmp(b).unwrap_or(Ordering::Equal)),
            _ => match (self.integer(), other.integer()) {
                (Some(a), Some(b)) => Some(a.cmp(&b)),
                _ => None,
            },
        }
    }

    fn pack(&self, out: &mut Vec<u8>) {
        // Writing to a Vec cannot fail.
        match self {
            Value::Int(i) => {
                let _ = rmp::encode::write_sint(out, *i);
            }
            Value::Float(f) => {
                let _ = rmp::encode::write_f64(out, *f);
            }
            Value::Bool(b) => {
                let _ = rmp::encode::write_bool(out, *b);
            }
            Value::Str(s) => {
                let _ = rmp::encode::write_str(out, s);
            }
            Value::Other(v) => {
                let _ = rmpv::encode::write_value(out, v);
            }
        }
    }

    fn to_py<'py>(&self, py: Python<'py>, decode_other: &PyObject) -> PyResult<Bound<'py, PyAny>> {
        Ok(match self {
            Value::Int(i) => i.into_pyobject(py)?.into_any(),
            Value::Float(f) => PyFloat::new(py, *f).into_any(),
            Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
            Value::Str(s) => PyString::new(py, s).into_any(),
            Value::Other(_) => {
                let mut packed = Vec::new();
                self.pack(&mut packed);
                decode_other.call1(py, (PyBytes::new(py, &packed),))?.into_bound(py)
            }
        })
    }

    fn unpack(packed: Packed) -> PyResult<Value> {
        Ok(match packed {
            // An unsigned int past 63 bits (old code let sums reach it) is kept as it is, for `last`, `min`, `max`.
            Packed::Integer(i) => match i.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Other(Packed::Integer(i)),
            },
            Packed::F64(f) => Value::Float(f),
            Packed::F32(f) => Value::Float(f as f64),
            Packed::Boolean(b) => Value::Bool(b),
            Packed::String(s) => match s.into_str() {
                Some(s) => Value::Str(s),
                None => return Err(PyValueError::new_err("a tile value is not valid UTF-8")),
            },
            other => Value::Other(other),
        })
    }
}

/// One series' live tiles, oldest first; `keys` (the order key of `last`'s value) only for `last`.
#[derive(Default)]
struct Tiles {
    starts: Vec<i64>,
    values: Vec<Value>,
    keys: Vec<String>,
}

/// An entity's tiles, opaque to Python: `TilePlan` decodes, folds into and encodes it.
#[pyclass(module = "featurestream_native")]
pub struct TileState {
    /// The series names of the plan that decoded it: `series` is in that plan's order.
    plan: u64,
    newest: Option<i64>,
    series: Vec<Tiles>,
}

struct Series {
    name: String,
    column: String,
    slide: i64,
    /// A tile starting at or before the newest event time minus this has left every window.
    span: i64,
    kind: Kind,
    /// A tile's length in the flat encoding: its start and its slots.
    stride: usize,
    contribution: Contribution,
}

const NEWEST: &str = "newest";

/// A windowed view's series, parsed once: the decoding, the fold and the encoding of an entity's tiles.
#[pyclass(frozen, module = "featurestream_native")]
pub struct TilePlan {
    series: Vec<Series>,
    fingerprint: u64,
    /// `msgspec.msgpack.encode` and `decode`, for values of types the tiles do not know (kept encoded).
    encode_other: PyObject,
    decode_other: PyObject,
}

#[pymethods]
impl TilePlan {
    /// `series`: per series, (name, column, slide ms, span ms, slot kind, stride, component).
    #[new]
    fn new(py: Python<'_>, series: Vec<(String, String, i64, i64, String, usize, String)>) -> PyResult<Self> {
        let mut parsed = Vec::with_capacity(series.len());
        for (name, column, slide, span, kind, stride, component) in series {
            let kind = match kind.as_str() {
                "add" => Kind::Add,
                "max" => Kind::Max,
                "min" => Kind::Min,
                "last" => Kind::Last,
                other => return Err(PyValueError::new_err(format!("series {name}: unknown slot kind '{other}'"))),
            };
            let contribution = match component.as_str() {
                "n" => Contribution::One,
                "q" => Contribution::Square,
                _ => Contribution::Value,
            };
            let slots = if kind == Kind::Last { 2 } else { 1 };
            if slide <= 0 || stride != slots + 1 {
                return Err(PyValueError::new_err(format!(
                    "series {name}: slide {slide} ms and stride {stride} do not fit a '{component}' series"
                )));
            }
            parsed.push(Series { name, column, slide, span, kind, stride, contribution });
        }
        let mut hasher = DefaultHasher::new();
        for series in &parsed {
            series.name.hash(&mut hasher);
        }
        let msgpack = py.import("msgspec.msgpack")?;
        Ok(TilePlan {
            series: parsed,
            fingerprint: hasher.finish(),
            encode_other: msgpack.getattr("encode")?.unbind(),
            decode_other: msgpack.getattr("decode")?.unbind(),
        })
    }

    /// The state stored as `blob` (None: nothing yet), less the series this plan no longer keeps.
    #[pyo3(signature = (blob))]
    fn decode(&self, blob: Option<&[u8]>) -> PyResult<TileState> {
        let mut state = TileState {
            plan: self.fingerprint,
            newest: None,
            series: self.series.iter().map(|_| Tiles::default()).collect(),
        };
        let Some(mut bytes) = blob.filter(|b| !b.is_empty()) else { return Ok(state) };
        let entries = match rmpv::decode::read_value(&mut bytes) {
            Ok(Packed::Map(entries)) => entries,
            Ok(_) => return Err(PyValueError::new_err("stored tiles are not a MessagePack map")),
            Err(err) => return Err(PyValueError::new_err(format!("stored tiles are not MessagePack: {err}"))),
        };
        for (name, value) in entries {
            let Some(name) = name.as_str() else { continue };
            if name == NEWEST {
                state.newest = Some(value.as_i64().ok_or_else(|| {
                    PyValueError::new_err(format!("stored tiles have a {NEWEST} that is not an int: {value}"))
                })?);
                continue;
            }
            let Some(at) = self.series.iter().position(|s| s.name == name) else { continue };
            let Packed::Array(flat) = value else {
                return Err(PyValueError::new_err(format!("stored series {name} is not an array")));
            };
            let stride = self.series[at].stride;
            if flat.len() % stride != 0 {
                return Err(PyValueError::new_err(format!("stored series {name} is not whole tiles")));
            }
            let tiles = &mut state.series[at];
            let mut slots = flat.into_iter();
            while let (Some(start), Some(value)) = (slots.next(), slots.next()) {
                let Some(start) = start.as_i64() else {
                    return Err(PyValueError::new_err(format!("stored series {name} has a tile start that is not an int")));
                };
                tiles.starts.push(start);
                tiles.values.push(Value::unpack(value)?);
                if stride == 3 {
                    match slots.next().map(Value::unpack).transpose()? {
                        Some(Value::Str(key)) => tiles.keys.push(key),
                        _ => return Err(PyValueError::new_err(format!("stored series {name} has an order key that is not a string"))),
                    }
                }
            }
        }
        Ok(state)
    }

    /// Merge the entity's events past `applied` (partition -> last offset applied) into `state`, then drop the
    /// tiles that left every window as of the newest event time ever applied; the last offset applied per
    /// partition, or None when every event was applied before.
    fn fold<'py>(&self, py: Python<'py>, state: &Bound<'py, TileState>, events: &Bound<'py, EntityEvents>,
                 entity: &Bound<'py, PyAny>, applied: &Bound<'py, PyDict>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let events = events.borrow();
        let parsed = events.fresh_events(py, entity, applied)?;
        if parsed.is_empty() {
            return Ok(None);
        }
        let mut state = self.own(state.try_borrow_mut()?)?;
        let newest = parsed.iter().map(|e| e.ts).chain(state.newest).max().unwrap_or_default();
        state.newest = Some(newest);
        for (series, tiles) in self.series.iter().zip(state.series.iter_mut()) {
            let cutoff = newest - series.span;
            let column = events.column(py, &series.column)?;
            // Which series failed (a udf's column of an unexpected type, say), kept on the error itself.
            self.fold_series(py, series, column, tiles, &parsed, cutoff)
                .inspect_err(|err| add_note(py, err, format!("while folding events into tile series {}", series.name)))?;
            let expired = tiles.starts.partition_point(|&start| start <= cutoff);
            if expired > 0 {
                tiles.starts.drain(..expired);
                tiles.values.drain(..expired);
                if series.kind == Kind::Last {
                    tiles.keys.drain(..expired);
                }
            }
        }
        last_offsets(py, &parsed).map(Some)
    }

    /// The state's encoding, as the reader decodes it (`featurestream.online.series.decode_tiles`).
    fn encode<'py>(&self, py: Python<'py>, state: &Bound<'py, TileState>) -> PyResult<Bound<'py, PyBytes>> {
        let state = self.own(state.try_borrow()?)?;
        let kept = state.series.iter().filter(|t| !t.starts.is_empty()).count();
        let mut out = Vec::with_capacity(64 + 16 * state.series.iter().map(|t| t.starts.len()).sum::<usize>());
        let _ = rmp::encode::write_map_len(&mut out, (kept + state.newest.is_some() as usize) as u32);
        if let Some(newest) = state.newest {
            let _ = rmp::encode::write_str(&mut out, NEWEST);
            let _ = rmp::encode::write_sint(&mut out, newest);
        }
        for (series, tiles) in self.series.iter().zip(&state.series) {
            if tiles.starts.is_empty() {
                continue;
            }
            let _ = rmp::encode::write_str(&mut out, &series.name);
            let _ = rmp::encode::write_array_len(&mut out, (tiles.starts.len() * series.stride) as u32);
            for (at, (start, value)) in tiles.starts.iter().zip(&tiles.values).enumerate() {
                let _ = rmp::encode::write_sint(&mut out, *start);
                value.pack(&mut out);
                if series.kind == Kind::Last {
                    let _ = rmp::encode::write_str(&mut out, &tiles.keys[at]);
                }
            }
        }
        Ok(PyBytes::new(py, &out))
    }
}

impl TilePlan {
    /// The state, if this plan (same series) decoded it: another's would fold into the wrong series.
    fn own<S: std::ops::Deref<Target = TileState>>(&self, state: S) -> PyResult<S> {
        if state.plan != self.fingerprint {
            return Err(PyValueError::new_err("these tiles were decoded for other series: decode them with this view's plan"));
        }
        Ok(state)
    }

    /// Whether `value` replaces `held` in a `max` (greater) or `min` (smaller) tile, as Python's `>` / `<` say.
    fn replaces(&self, py: Python<'_>, kind: Kind, value: &Value, held: &Value) -> PyResult<bool> {
        let wanted = if kind == Kind::Max { Ordering::Greater } else { Ordering::Less };
        if let Some(order) = value.native_order(held) {
            return Ok(order == wanted);
        }
        let (value, held) = (value.to_py(py, &self.decode_other)?, held.to_py(py, &self.decode_other)?);
        if kind == Kind::Max { value.gt(held) } else { value.lt(held) }
    }

    fn fold_series(&self, py: Python<'_>, series: &Series, column: usize, tiles: &mut Tiles, events: &[Event], cutoff: i64)
                   -> PyResult<()> {
        for event in events {
            let Some(value) = event.value(column) else { continue };
            let start = event.ts - event.ts.rem_euclid(series.slide);
            if start <= cutoff {
                continue;
            }
            let value = match series.contribution {
                Contribution::One => Value::Int(1),
                Contribution::Square => {
                    let x: f64 = match value {
                        Cell::Int(int) => *int as f64,
                        Cell::Float(float) => *float,
                        Cell::Bool(flag) => *flag as i64 as f64,
                        other => other.to_object(py)?.extract()?,
                    };
                    Value::Float(x * x) // a float always, as `tests/partials.py`'s accumulate keeps it
                }
                Contribution::Value => match value {
                    Cell::Int(int) => Value::Int(*int),
                    Cell::Float(float) => Value::Float(*float),
                    Cell::Bool(flag) => Value::Bool(*flag),
                    Cell::Str(text) => Value::Str(text.clone()),
                    Cell::Py(object) => self.value_of(py, object.bind(py))?,
                },
            };
            match tiles.starts.binary_search(&start) {
                Err(at) => {
                    tiles.starts.insert(at, start);
                    tiles.values.insert(at, value);
                    if series.kind == Kind::Last {
                        tiles.keys.insert(at, event.order_key());
                    }
                }
                Ok(at) => {
                    let held = &mut tiles.values[at];
                    match series.kind {
                        Kind::Add => *held = held.add(&value)?,
                        Kind::Max | Kind::Min => {
                            if self.replaces(py, series.kind, &value, held)? {
                                *held = value;
                            }
                        }
                        Kind::Last => {
                            let key = event.order_key();
                            if key > tiles.keys[at] {
                                *held = value;
                                tiles.keys[at] = key;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn value_of(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<Value> {
        if let Ok(b) = value.downcast::<PyBool>() {
            return Ok(Value::Bool(b.is_true()));
        }
        if value.is_instance_of::<PyInt>() {
            return match value.extract::<i64>() {
                Ok(i) => Ok(Value::Int(i)),
                Err(_) => Err(PyOverflowError::new_err(format!("{value} leaves 64 bits: a tile could not store it"))),
            };
        }
        if let Ok(f) = value.downcast::<PyFloat>() {
            return Ok(Value::Float(f.value()));
        }
        if let Ok(s) = value.downcast::<PyString>() {
            return Ok(Value::Str(s.to_str()?.to_owned()));
        }
        let encoded = self.encode_other.call1(py, (value,))?;
        let mut bytes: &[u8] = encoded.downcast_bound::<PyBytes>(py)?.as_bytes();
        let packed = rmpv::decode::read_value(&mut bytes)
            .map_err(|err| PyValueError::new_err(format!("cannot keep {value} in a tile: {err}")))?;
        Ok(Value::Other(packed))
    }
}
