//! One micro-batch's events per entity, in arrival order, and what the folds read of them.
//!
//! Views keyed alike and fed the same udf output share one (a user's windows and sessions): an event is
//! added once. The folds take the events past the offsets an entity's stored state already includes
//! (a replay after a crash or rebalance repeats some) and return the last offset per partition they
//! applied, which the compare-and-set records.

use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

struct Record {
    partition: i64,
    offset: i64,
    ts: i64,
    row: PyObject,
}

/// One event as the folds read it: partition, offset, event time (ms) and the row.
pub(crate) struct Event<'py> {
    partition: i64,
    offset: i64,
    pub(crate) ts: i64,
    row: Bound<'py, PyAny>,
}

impl<'py> Event<'py> {
    /// A udf may return any mapping; a dict is read without a method call.
    pub(crate) fn value(&self, column: &Bound<'py, PyString>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let value = match self.row.downcast::<PyDict>() {
            Ok(row) => match row.get_item(column)? {
                Some(value) => value,
                None => return Err(PyKeyError::new_err(column.clone().unbind())),
            },
            Err(_) => self.row.get_item(column)?,
        };
        Ok(if value.is_none() { None } else { Some(value) })
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
    /// entity (a tuple of join-key values) -> its position in the vectors below
    positions: Py<PyDict>,
    entities: Vec<PyObject>,
    events: Vec<Vec<Record>>,
    /// per entity, the partitions of its events, ascending
    partitions: Vec<Vec<i64>>,
}

#[pymethods]
impl EntityEvents {
    #[new]
    fn new(py: Python<'_>) -> Self {
        EntityEvents { positions: PyDict::new(py).unbind(), entities: Vec::new(), events: Vec::new(), partitions: Vec::new() }
    }

    pub(crate) fn add(&mut self, py: Python<'_>, entity: Bound<'_, PyAny>, partition: i64, offset: i64, ts_ms: i64,
           row: Bound<'_, PyAny>) -> PyResult<()> {
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
        self.events[at].push(Record { partition, offset, ts: ts_ms, row: row.unbind() });
        let partitions = &mut self.partitions[at];
        if let Err(slot) = partitions.binary_search(&partition) {
            partitions.insert(slot, partition);
        }
        Ok(())
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
    /// (partition, offset, event time, row).
    fn fresh<'py>(&self, py: Python<'py>, entity: &Bound<'py, PyAny>, applied: &Bound<'py, PyDict>)
                  -> PyResult<Bound<'py, PyList>> {
        let events = self.fresh_events(py, entity, applied)?;
        let tuples = events
            .into_iter()
            .map(|e| (e.partition, e.offset, e.ts, e.row).into_pyobject(py))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, tuples)
    }
}

impl EntityEvents {
    fn position(&self, py: Python<'_>, entity: &Bound<'_, PyAny>) -> PyResult<usize> {
        match self.positions.bind(py).get_item(entity)? {
            Some(at) => at.extract(),
            None => Err(PyKeyError::new_err(entity.clone().unbind())),
        }
    }

    /// The entity's events past `applied`, in arrival order.
    pub(crate) fn fresh_events<'py>(&self, py: Python<'py>, entity: &Bound<'py, PyAny>, applied: &Bound<'py, PyDict>)
                                    -> PyResult<Vec<Event<'py>>> {
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
            .map(|record| Event { partition: record.partition, offset: record.offset, ts: record.ts, row: record.row.bind(py).clone() })
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
