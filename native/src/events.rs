//! One micro-batch's events per entity, in arrival order, and what the folds read of them.
//!
//! Views keyed alike and fed the same udf output share one (a user's windows and sessions): an event is
//! added once. The folds take the events past the offsets an entity's stored state already includes
//! (a replay after a crash or rebalance repeats some) and return the last offset per partition they
//! applied, which the compare-and-set records.
//!
//! An event keeps only the values of the columns its views read, taken from the udf's output as it is
//! added, while that dict is fresh in memory: read by the writer thread a micro-batch later, the rows'
//! dicts were cold (dict lookups took a sixth of an in-process replay's CPU, by perf).

use pyo3::exceptions::{PyKeyError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDateTime, PyDict, PyFloat, PyInt, PyList, PyString, PyTzInfoAccess};

/// One value an event carries for the views, taken from the udf's output while it is fresh in memory.
/// Python's int, float, bool and str (and other integers and reals, numpy's say) become Rust's; anything
/// else (an int past 64 bits, a datetime) stays a Python object, which the folds judge as they did the row's.
pub(crate) enum Cell {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Py(PyObject),
}

impl Cell {
    fn of(value: Bound<'_, PyAny>) -> PyResult<Option<Cell>> {
        if value.is_none() {
            return Ok(None);
        }
        Ok(Some(if let Ok(flag) = value.downcast::<PyBool>() {
            Cell::Bool(flag.is_true())
        } else if let Ok(float) = value.downcast::<PyFloat>() {
            Cell::Float(float.value())
        } else if let Ok(text) = value.downcast::<PyString>() {
            match text.to_str() {
                Ok(text) => Cell::Str(text.to_owned()),
                Err(_) => Cell::Py(value.unbind()),
            }
        } else if value.is_instance_of::<PyInt>() {
            match value.extract::<i64>() {
                Ok(int) => Cell::Int(int),
                Err(_) => Cell::Py(value.unbind()),
            }
        } else {
            // Other numbers (numpy's, from a pandas-minded udf) become Python's when the `numbers` tower says
            // they are integers or reals: the folds and encodings take only those. Anything else (a Decimal, a
            // datetime) stays a Python object.
            let py = value.py();
            let numbers = py.import(intern!(py, "numbers"))?;
            if value.is_instance(&numbers.getattr(intern!(py, "Integral"))?)? {
                match value.extract::<i64>() {
                    Ok(int) => Cell::Int(int),
                    Err(_) => Cell::Py(value.unbind()),
                }
            } else if value.is_instance(&numbers.getattr(intern!(py, "Real"))?)? {
                Cell::Float(value.extract::<f64>()?)
            } else {
                Cell::Py(value.unbind())
            }
        }))
    }

    /// The value as the Python object the row held (an equal one).
    pub(crate) fn to_object<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(match self {
            Cell::Int(int) => int.into_pyobject(py)?.into_any(),
            Cell::Float(float) => PyFloat::new(py, *float).into_any(),
            Cell::Bool(flag) => PyBool::new(py, *flag).to_owned().into_any(),
            Cell::Str(text) => PyString::new(py, text).into_any(),
            Cell::Py(object) => object.bind(py).clone(),
        })
    }
}

struct Record {
    partition: i64,
    offset: i64,
    ts: i64,
    /// per column of the `EntityEvents`, its value (None: null)
    values: Vec<Option<Cell>>,
}

/// One event as the folds read it: partition, offset, event time (ms) and the values of the columns.
pub(crate) struct Event<'a> {
    partition: i64,
    offset: i64,
    pub(crate) ts: i64,
    values: &'a [Option<Cell>],
}

impl Event<'_> {
    /// The value of the events' column `at` (see `EntityEvents::column`), None when null.
    pub(crate) fn value(&self, at: usize) -> Option<&Cell> {
        self.values[at].as_ref()
    }

    /// Fixed width, so string order is (event time, partition, offset) order.
    pub(crate) fn order_key(&self) -> String {
        // Digits written by hand: `format!` with widths took 200 ns, most of a `last` series' fold. It stays
        // for a negative number or one wider than its field, which Python's format signs or never truncates.
        let mut key = [b'0'; 40];
        for (mut number, end, width) in [(self.ts, 15, 15), (self.partition, 21, 6), (self.offset, 40, 19)] {
            let mut at = end;
            while number > 0 && at > end - width {
                at -= 1;
                key[at] = b'0' + (number % 10) as u8;
                number /= 10;
            }
            if number != 0 {
                return format!("{:015}{:06}{:019}", self.ts, self.partition, self.offset);
            }
        }
        key.iter().map(|&digit| digit as char).collect()
    }
}

#[pyclass(module = "featurestream_native")]
pub struct EntityEvents {
    /// the udf-output columns the views read, which each event keeps
    columns: Vec<Py<PyString>>,
    /// per column, what the views need of its values
    needs: Vec<Need>,
    /// entity (a tuple of join-key values) -> its position in the vectors below
    positions: Py<PyDict>,
    pub(crate) entities: Vec<PyObject>,
    events: Vec<Vec<Record>>,
    /// per entity, the partitions of its events, ascending
    pub(crate) partitions: Vec<Vec<i64>>,
}

#[pymethods]
impl EntityEvents {
    /// `numeric`: the columns a view sums, averages or takes the spread of; `ordered`: those it takes a min or
    /// max of.
    #[new]
    #[pyo3(signature = (columns, numeric = Vec::new(), ordered = Vec::new()))]
    fn new(py: Python<'_>, columns: Vec<String>, numeric: Vec<String>, ordered: Vec<String>) -> Self {
        EntityEvents {
            needs: columns
                .iter()
                .map(|c| if numeric.contains(c) { Need::Number } else if ordered.contains(c) { Need::Ordered } else { Need::Any })
                .collect(),
            columns: columns.iter().map(|c| PyString::intern(py, c).unbind()).collect(),
            positions: PyDict::new(py).unbind(),
            entities: Vec::new(),
            events: Vec::new(),
            partitions: Vec::new(),
        }
    }

    /// Add an event of `entity`; `row` (the udf's output, any mapping) must hold every column.
    fn add(&mut self, py: Python<'_>, entity: Bound<'_, PyAny>, partition: i64, offset: i64, ts_ms: i64,
           row: Bound<'_, PyAny>) -> PyResult<()> {
        let values = self.values(&row)?;
        self.push(py, entity, partition, offset, ts_ms, values)
    }

    #[getter]
    fn columns(&self, py: Python<'_>) -> Vec<String> {
        self.columns.iter().map(|c| c.bind(py).to_string()).collect()
    }

    fn __len__(&self) -> usize {
        self.entities.len()
    }

    /// The entities with events, in the order their first event arrived.
    fn entities<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.entities.iter().map(|entity| entity.bind(py)))
    }

    /// The source partitions of the entity's events, ascending.
    fn partitions(&self, py: Python<'_>, entity: &Bound<'_, PyAny>) -> PyResult<Vec<i64>> {
        Ok(self.partitions[self.position(py, entity)?].clone())
    }

    /// The entity's events past `applied` (partition -> last offset applied), in arrival order, as
    /// (partition, offset, event time, {column: value}).
    fn fresh<'py>(&self, py: Python<'py>, entity: &Bound<'py, PyAny>, applied: &Bound<'py, PyDict>)
                  -> PyResult<Bound<'py, PyList>> {
        let mut tuples = Vec::new();
        for event in self.fresh_events(py, entity, applied)? {
            let values = PyDict::new(py);
            for (column, value) in self.columns.iter().zip(event.values) {
                values.set_item(column.bind(py), value.as_ref().map(|v| v.to_object(py)).transpose()?)?;
            }
            tuples.push((event.partition, event.offset, event.ts, values).into_pyobject(py)?);
        }
        PyList::new(py, tuples)
    }
}

/// A value a view adds up must be a number (int, float or bool) or null: anything else would stop the writer
/// at the fold or the encoding, batch after batch, so it is refused with its record.
fn number(column: &Bound<'_, PyString>, cell: &Option<Cell>, py: Python<'_>) -> PyResult<()> {
    let held = match cell {
        None | Some(Cell::Int(_) | Cell::Float(_) | Cell::Bool(_)) => return Ok(()),
        Some(Cell::Str(text)) => format!("the string {text:?}"),
        Some(Cell::Py(object)) => described(object.bind(py))?,
    };
    Err(refusal(column, &held, "adds it up (sum, mean, stddev or var)", "an int, a float or a bool"))
}

/// A value a view takes the min or max of must come back from the state's encoding as itself, to be compared
/// with later ones: a number, a bool, a string or a timezone-aware datetime. A naive datetime, a date or a
/// Decimal comes back a string, and the writer would stop at the next comparison; so it is refused with its record.
fn ordered(column: &Bound<'_, PyString>, cell: &Option<Cell>, py: Python<'_>) -> PyResult<()> {
    let Some(Cell::Py(object)) = cell else { return Ok(()) };
    let object = object.bind(py);
    let held = match object.downcast::<PyDateTime>() {
        Ok(when) if when.get_tzinfo().is_some() => return Ok(()),
        Ok(_) => "a datetime without a timezone".to_owned(),
        Err(_) => described(object)?,
    };
    Err(refusal(column, &held, "takes its min or max", "a number, a bool, a string or a timezone-aware datetime"))
}

/// A Python value a view refuses, as its refusal names it.
fn described(object: &Bound<'_, PyAny>) -> PyResult<String> {
    Ok(if object.is_instance_of::<PyInt>() {
        format!("{object}, which leaves 64 bits")
    } else {
        format!("a {}", object.get_type().name()?)
    })
}

fn refusal(column: &Bound<'_, PyString>, held: &str, use_: &str, must: &str) -> PyErr {
    PyTypeError::new_err(format!("the udf's output column `{column}` holds {held}, but a view {use_}: it must be {must}"))
}

/// What the views need of a column's values: the strictest of their functions' needs.
#[derive(Clone, Copy)]
enum Need {
    Any,
    /// a min or max: values that keep their type in the state's encoding (see `ordered`)
    Ordered,
    /// a sum, mean, stddev or var: numbers (see `number`)
    Number,
}

/// `mapping[key]`, None when the key is missing; a dict (what udfs return) is read without a method call.
pub(crate) fn item<'py>(mapping: &Bound<'py, PyAny>, key: &Bound<'py, PyString>) -> PyResult<Option<Bound<'py, PyAny>>> {
    match mapping.downcast::<PyDict>() {
        Ok(dict) => dict.get_item(key),
        Err(_) => match mapping.get_item(key) {
            Ok(value) => Ok(Some(value)),
            Err(err) if err.is_instance_of::<PyKeyError>(mapping.py()) => Ok(None),
            Err(err) => Err(err), // not a mapping
        },
    }
}

impl EntityEvents {
    /// The values of a row (any mapping) for the columns; a missing column is a KeyError, a value a view
    /// cannot add up or compare a TypeError.
    pub(crate) fn values(&self, row: &Bound<'_, PyAny>) -> PyResult<Vec<Option<Cell>>> {
        let py = row.py();
        self.columns
            .iter()
            .zip(&self.needs)
            .map(|(column, &need)| {
                let column = column.bind(py);
                let Some(value) = item(row, column)? else {
                    return Err(PyKeyError::new_err(format!("the udf's output has no column `{column}`, which a view reads")));
                };
                let cell = Cell::of(value)?;
                match need {
                    Need::Number => number(column, &cell, py)?,
                    Need::Ordered => ordered(column, &cell, py)?,
                    Need::Any => {}
                }
                Ok(cell)
            })
            .collect()
    }

    pub(crate) fn push(&mut self, py: Python<'_>, entity: Bound<'_, PyAny>, partition: i64, offset: i64, ts_ms: i64,
                       values: Vec<Option<Cell>>) -> PyResult<()> {
        let positions = self.positions.bind(py);
        let at = match positions.get_item(&entity)? {
            Some(at) => at.extract::<usize>()?,
            None => {
                let at = self.entities.len();
                positions.set_item(&entity, at)?;
                self.entities.push(entity.unbind());
                self.events.push(Vec::new());
                self.partitions.push(Vec::new());
                at
            }
        };
        self.events[at].push(Record { partition, offset, ts: ts_ms, values });
        let partitions = &mut self.partitions[at];
        if let Err(slot) = partitions.binary_search(&partition) {
            partitions.insert(slot, partition);
        }
        Ok(())
    }

    /// Where the folds find `column` among an event's values.
    pub(crate) fn column(&self, py: Python<'_>, column: &str) -> PyResult<usize> {
        self.columns.iter().position(|c| c.bind(py).to_str().is_ok_and(|c| c == column)).ok_or_else(|| {
            PyKeyError::new_err(format!("the events keep no column {column}: the views' batches were built for other columns"))
        })
    }

    fn position(&self, py: Python<'_>, entity: &Bound<'_, PyAny>) -> PyResult<usize> {
        match self.positions.bind(py).get_item(entity)? {
            Some(at) => at.extract(),
            None => Err(PyKeyError::new_err(entity.clone().unbind())),
        }
    }

    /// The entity's events past `applied`, in arrival order.
    pub(crate) fn fresh_events(&self, py: Python<'_>, entity: &Bound<'_, PyAny>, applied: &Bound<'_, PyDict>)
                               -> PyResult<Vec<Event<'_>>> {
        let at = self.position(py, entity)?;
        let mut fences = Vec::with_capacity(self.partitions[at].len());
        for &partition in &self.partitions[at] {
            match applied.get_item(partition)? {
                Some(offset) => fences.push((partition, offset.extract::<i64>()?)),
                None => return Err(PyKeyError::new_err(format!("no applied offset given for partition {partition}"))),
            }
        }
        let fence = |partition: i64| fences.iter().find(|(p, _)| *p == partition).map_or(i64::MAX, |(_, o)| *o);
        Ok(self.events[at]
            .iter()
            .filter(|record| record.offset > fence(record.partition))
            .map(|record| Event { partition: record.partition, offset: record.offset, ts: record.ts, values: &record.values })
            .collect())
    }
}

/// The last offset of each partition among events in arrival order: the fences their write records.
pub(crate) fn last_offsets<'py>(py: Python<'py>, events: &[Event]) -> PyResult<Bound<'py, PyDict>> {
    let offsets = PyDict::new(py);
    for event in events {
        offsets.set_item(event.partition, event.offset)?;
    }
    Ok(offsets)
}
