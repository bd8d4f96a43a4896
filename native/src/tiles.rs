//! Folding one entity's events into the flat tile series of a windowed view, in place.
//!
//! The state and its encoding are `featurestream.online.series`'s: a dict from series name to a flat list
//! `[start, slot, ..., start, slot, ...]`, oldest first. Values stay Python objects and merge with Python's
//! own operators (`+`, `<`, `>`), so a sum of ints stays an exact int and the result equals the
//! pure-Python fold that the tests check it against; only the loops and the tile search run here.

use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyList, PyString, PyTuple};

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

struct Series {
    name: Py<PyString>,
    column: Py<PyString>,
    slide: i64,
    /// A tile starting at or before the newest event time minus this has left every window.
    span: i64,
    kind: Kind,
    stride: usize,
    contribution: Contribution,
}

/// One event as the folds read it: partition, offset, event time (ms) and the row.
pub(crate) struct Event<'py> {
    partition: i64,
    offset: i64,
    pub(crate) ts: i64,
    pub(crate) row: Bound<'py, PyDict>,
}

impl<'py> Event<'py> {
    /// From the batch's (partition, offset, event time, row) tuple.
    pub(crate) fn parse(event: Bound<'py, PyTuple>) -> PyResult<Self> {
        Ok(Event {
            partition: event.get_item(0)?.extract()?,
            offset: event.get_item(1)?.extract()?,
            ts: event.get_item(2)?.extract()?,
            row: event.get_item(3)?.downcast_into::<PyDict>()?,
        })
    }
}

/// Fixed width, so string order is (event time, partition, offset) order: `series.order_key`'s format.
pub(crate) fn order_key(event: &Event) -> String {
    format!("{:015}{:06}{:019}", event.ts, event.partition, event.offset)
}

/// A windowed view's series, parsed once, and the fold of an entity's events into them.
#[pyclass(frozen, module = "featurestream_native")]
pub struct TilePlan {
    series: Vec<Series>,
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
            parsed.push(Series {
                name: PyString::intern(py, &name).unbind(),
                column: PyString::intern(py, &column).unbind(),
                slide,
                span,
                kind,
                stride,
                contribution,
            });
        }
        Ok(TilePlan { series: parsed })
    }

    /// Merge `events` ((partition, offset, event time, row), in arrival order) into `state`'s series, drop the
    /// tiles that left every window as of `newest` and the series left empty.
    fn fold(&self, py: Python<'_>, state: &Bound<'_, PyDict>, events: &Bound<'_, PyList>, newest: i64) -> PyResult<()> {
        let mut parsed = Vec::with_capacity(events.len());
        for event in events.iter() {
            parsed.push(Event::parse(event.downcast_into::<PyTuple>()?)?);
        }
        for series in &self.series {
            let name = series.name.bind(py);
            let tiles = match state.get_item(name)? {
                Some(tiles) => tiles.downcast_into::<PyList>()?,
                None => PyList::empty(py),
            };
            let cutoff = newest - series.span;
            fold_series(py, series, &tiles, &parsed, cutoff)?;
            prune(&tiles, series.stride, cutoff)?;
            if tiles.len() > 0 {
                state.set_item(name, tiles)?;
            } else if state.contains(name)? {
                state.del_item(name)?;
            }
        }
        Ok(())
    }
}

fn start_at(tiles: &Bound<'_, PyList>, at: usize) -> PyResult<i64> {
    tiles.get_item(at)?.extract()
}

/// Where the last tile starting at or before `start` begins (None: none does), scanning from the newest:
/// writes are mostly about the newest tiles.
fn tile_at_or_before(tiles: &Bound<'_, PyList>, stride: usize, start: i64) -> PyResult<Option<usize>> {
    let mut at = tiles.len().checked_sub(stride);
    while let Some(here) = at {
        if start_at(tiles, here)? <= start {
            break;
        }
        at = here.checked_sub(stride);
    }
    Ok(at)
}

fn fold_series(py: Python<'_>, series: &Series, tiles: &Bound<'_, PyList>, events: &[Event], cutoff: i64) -> PyResult<()> {
    let column = series.column.bind(py);
    let stride = series.stride;
    // The tile of the previous event: events mostly come in time order, so the search is mostly skipped.
    let mut cursor: Option<(usize, i64)> = None;
    for event in events {
        let value = match event.row.get_item(column)? {
            Some(value) => value,
            None => return Err(PyKeyError::new_err(column.clone().unbind())),
        };
        if value.is_none() {
            continue;
        }
        let start = event.ts - event.ts.rem_euclid(series.slide);
        if start <= cutoff {
            continue;
        }
        let value = match series.contribution {
            Contribution::Value => value,
            Contribution::One => 1i64.into_pyobject(py)?.into_any(),
            Contribution::Square => {
                let x: f64 = value.extract()?;
                PyFloat::new(py, x * x).into_any()
            }
        };
        let at = match cursor {
            Some((at, held)) if held == start => at,
            _ => {
                let found = tile_at_or_before(tiles, stride, start)?;
                match found {
                    Some(at) if start_at(tiles, at)? == start => at,
                    _ => {
                        let at = found.map_or(0, |at| at + stride);
                        tiles.insert(at, start)?;
                        tiles.insert(at + 1, value)?;
                        if series.kind == Kind::Last {
                            tiles.insert(at + 2, order_key(event))?;
                        }
                        cursor = Some((at, start));
                        continue;
                    }
                }
            }
        };
        cursor = Some((at, start));
        let here = at + 1;
        let held = tiles.get_item(here)?;
        match series.kind {
            Kind::Add => tiles.set_item(here, held.add(value)?)?,
            Kind::Max => {
                if value.gt(&held)? {
                    tiles.set_item(here, value)?;
                }
            }
            Kind::Min => {
                if value.lt(&held)? {
                    tiles.set_item(here, value)?;
                }
            }
            Kind::Last => {
                let key = order_key(event);
                let held_key = tiles.get_item(here + 1)?;
                if key.as_str() > held_key.downcast::<PyString>()?.to_str()? {
                    tiles.set_item(here, value)?;
                    tiles.set_item(here + 1, key)?;
                }
            }
        }
    }
    Ok(())
}

/// Drop the tiles starting at or before `cutoff` (the oldest first).
fn prune(tiles: &Bound<'_, PyList>, stride: usize, cutoff: i64) -> PyResult<()> {
    let mut end = 0;
    while end < tiles.len() && start_at(tiles, end)? <= cutoff {
        end += stride;
    }
    if end > 0 {
        tiles.del_slice(0, end)?;
    }
    Ok(())
}
