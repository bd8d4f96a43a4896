//! A source's records into its views' micro-batch: decode, watermark, udf, event log, per-entity events.
//!
//! This is the consumer thread's whole per-record path. `route` takes a micro-batch's Kafka messages as
//! they came from `Consumer.consume`, so the batch crosses from Python once: per record, Python only runs
//! the udf. The order of effects per record is the contract of
//! `materializers.stream.source`: the watermark check, then every udf, and only once all of them ran
//! the watermark, the event log and the views' events.

use pyo3::exceptions::{PyException, PyKeyError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::decode::{Reject, RowDecoder};
use crate::event_log::LogBuffers;
use crate::events::{item, EntityEvents};

// Dead-letter reasons of records that decode (the decoder has the others).
pub const LATE: &str = "late";
pub const UDF_ERROR: &str = "udf_error";

/// Views keyed alike and fed one udf's output share the events of their entities.
struct Sink {
    keys: Vec<Py<PyString>>,
    events: Py<EntityEvents>,
}

/// The views fed one udf's output (or the row itself).
struct Group {
    udf: Option<PyObject>,
    sinks: Vec<Sink>,
}

/// A partition's `PartitionProgress` while a call runs: read once, written back when the call ends.
struct Progress<'py> {
    object: Bound<'py, PyAny>,
    offset: i64,
    max_ts: i64,
}

impl<'py> Progress<'py> {
    fn load(object: Bound<'py, PyAny>) -> PyResult<Self> {
        let py = object.py();
        let offset = object.getattr(intern!(py, "offset"))?.extract()?;
        let max_ts = object.getattr(intern!(py, "max_ts"))?.extract()?;
        Ok(Progress { object, offset, max_ts })
    }

    fn store(&self) -> PyResult<()> {
        let py = self.object.py();
        self.object.setattr(intern!(py, "offset"), self.offset)?;
        self.object.setattr(intern!(py, "max_ts"), self.max_ts)
    }
}

/// Why a record is dead-lettered: (reason, detail).
type Refusal = (&'static str, String);
/// Per udf (None: the row itself), the join keys and events of each set of views it feeds.
type Groups = Vec<(Option<PyObject>, Vec<(Vec<String>, Py<EntityEvents>)>)>;
/// Where `route` stopped, and each refused message with its reason and detail.
type Routed<'py> = (usize, Vec<(Bound<'py, PyAny>, &'static str, String)>);

/// One micro-batch's routing for one source; `SourcePipeline` makes one per micro-batch, with its new events.
#[pyclass(module = "featurestream_native")]
pub struct Router {
    decoder: Py<RowDecoder>,
    lateness_ms: i64,
    groups: Vec<Group>,
    /// the event log's buffers, if the source keeps one
    log: Option<Py<LogBuffers>>,
    /// the newest accepted event time, 0 before any
    #[pyo3(get)]
    newest: i64,
    #[pyo3(get)]
    accepted: u64,
}

#[pymethods]
impl Router {
    #[new]
    #[pyo3(signature = (decoder, lateness_ms, groups, log = None))]
    fn new(py: Python<'_>, decoder: Py<RowDecoder>, lateness_ms: i64,
           groups: Groups, log: Option<Py<LogBuffers>>) -> Self {
        let groups = groups
            .into_iter()
            .map(|(udf, sinks)| Group {
                udf,
                sinks: sinks
                    .into_iter()
                    .map(|(keys, events)| Sink { keys: keys.iter().map(|k| PyString::intern(py, k).unbind()).collect(), events })
                    .collect(),
            })
            .collect();
        Router { decoder, lateness_ms, groups, log, newest: 0, accepted: 0 }
    }

    /// One decoded row (the event log's, during a rebuild); None when accepted, else (reason, detail).
    fn apply(&mut self, progress: Bound<'_, PyAny>, partition: i64, offset: i64, row: Bound<'_, PyAny>, ts_ms: i64)
             -> PyResult<Option<Refusal>> {
        let mut progress = Progress::load(progress)?;
        let refused = self.accept(&mut progress, partition, offset, &row, ts_ms);
        progress.store()?;
        refused
    }
}

impl Router {
    fn decode_and_apply(&mut self, progress: &mut Progress<'_>, partition: i64, offset: i64, value: Option<&[u8]>,
                        now_ms: i64) -> PyResult<Option<Refusal>> {
        let py = progress.object.py();
        match self.decoder.get().row(py, value, Some(now_ms)) {
            Ok((row, ts_ms)) => self.accept(progress, partition, offset, row.as_any(), ts_ms),
            Err(Reject::Record(reason, detail)) => Ok(Some((reason, detail))),
            Err(Reject::Python(err)) => Err(err),
        }
    }

    fn accept(&mut self, progress: &mut Progress<'_>, partition: i64, offset: i64, row: &Bound<'_, PyAny>, ts_ms: i64)
              -> PyResult<Option<Refusal>> {
        let py = row.py();
        let watermark = progress.max_ts - self.lateness_ms;
        if ts_ms < watermark {
            let behind = watermark - ts_ms;
            return Ok(Some((LATE, format!("event time {ts_ms} ms is {behind} ms behind the watermark {watermark}"))));
        }
        // The event log's values are taken before any udf runs (one may change its input in place), and every udf
        // runs, and every entity and value the views read is found, before anything changes: a refused record
        // leaves no trace.
        let logged = match &self.log {
            Some(log) => Some(log.borrow(py).cells(row.downcast()?, ts_ms)?),
            None => None,
        };
        let mut routed = Vec::with_capacity(self.groups.len());
        for group in &self.groups {
            let out = match &group.udf {
                None => row.clone(),
                Some(udf) => match udf.bind(py).call1((row,)) {
                    Ok(out) => out,
                    Err(err) => return udf_error(py, err),
                },
            };
            let mut entities = Vec::with_capacity(group.sinks.len());
            for sink in &group.sinks {
                let found = entity(&out, &sink.keys).and_then(|entity| Ok((entity, sink.events.borrow(py).values(&out)?)));
                match found {
                    Ok(found) => entities.push(found),
                    Err(err) => return udf_error(py, err),
                }
            }
            routed.push(entities);
        }
        progress.max_ts = progress.max_ts.max(ts_ms);
        self.newest = self.newest.max(ts_ms);
        if let (Some(log), Some(cells)) = (&self.log, logged) {
            log.borrow_mut(py).push(partition, offset, &cells);
        }
        for (group, entities) in self.groups.iter().zip(routed) {
            for (sink, (entity, values)) in group.sinks.iter().zip(entities) {
                sink.events.borrow_mut(py).push(py, entity, partition, offset, ts_ms, values)?;
            }
        }
        self.accepted += 1;
        Ok(None)
    }
}

/// The entity a udf's output (any mapping) belongs to: its join-key values, none of them null.
fn entity<'py>(out: &Bound<'py, PyAny>, keys: &[Py<PyString>]) -> PyResult<Bound<'py, PyAny>> {
    let py = out.py();
    let mut values = Vec::with_capacity(keys.len());
    for key in keys {
        let key = key.bind(py);
        match item(out, key)? {
            Some(value) if !value.is_none() => values.push(value),
            Some(_) => return Err(PyTypeError::new_err(format!("the udf's output has a null join key `{key}`"))),
            None => return Err(PyKeyError::new_err(format!("the udf's output has no join key `{key}`"))),
        }
    }
    let entity = PyTuple::new(py, values)?.into_any();
    entity.hash()?; // an unhashable key (a list, say) is the udf's error, found before anything changes
    Ok(entity)
}

/// A udf's exception (or its output's) refuses the record: a udf bug on one event must not stop the
/// partition. Anything else (KeyboardInterrupt, SystemExit) stops the batch.
fn udf_error(py: Python<'_>, err: PyErr) -> PyResult<Option<Refusal>> {
    if !err.is_instance_of::<PyException>(py) {
        return Err(err);
    }
    let kind = err.get_type(py).name().map_or_else(|_| "Exception".to_owned(), |name| name.to_string());
    Ok(Some((UDF_ERROR, format!("{kind}: {}", err.value(py)))))
}

/// Records routed between two chances for other threads to take the GIL (a few ms of work).
const YIELD_EVERY: usize = 2048;

/// Route `messages[start:]` (confluent-kafka `Message`s) to their topics' routers. `routes`: per topic, its
/// name, router and progress by partition (`new_progress()` makes a partition's first). Returns where it
/// stopped (a message carrying a Kafka error, for the caller, or the end) and the records to dead-letter,
/// as (message, reason, detail).
#[pyfunction]
pub fn route<'py>(py: Python<'py>, messages: &Bound<'py, PyList>, start: usize, now_ms: i64,
                  routes: Vec<(String, Bound<'py, Router>, Bound<'py, PyDict>)>, new_progress: &Bound<'py, PyAny>)
                  -> PyResult<Routed<'py>> {
    let mut progress: Vec<(usize, i64, Progress<'py>)> = Vec::new();
    let mut refused = Vec::new();
    let mut routers = routes.iter().map(|(_, router, _)| router.try_borrow_mut()).collect::<Result<Vec<_>, _>>()?;
    let mut run = || -> PyResult<usize> {
        for (at, message) in messages.iter().enumerate().skip(start) {
            if (at - start) % YIELD_EVERY == YIELD_EVERY - 1 {
                // Let the writer thread in: without a udf to run, nothing here would give up the GIL.
                py.allow_threads(|| ());
            }
            if !message.call_method0(intern!(py, "error"))?.is_none() {
                return Ok(at);
            }
            let topic = message.call_method0(intern!(py, "topic"))?;
            let topic = topic.downcast::<PyString>()?.to_str()?;
            let Some(which) = routes.iter().position(|(name, _, _)| name == topic) else {
                return Err(PyKeyError::new_err(format!("no pipeline for topic {topic}")));
            };
            let partition: i64 = message.call_method0(intern!(py, "partition"))?.extract()?;
            let offset: i64 = message.call_method0(intern!(py, "offset"))?.extract()?;
            let value = message.call_method0(intern!(py, "value"))?;
            let value = if value.is_none() { None } else { Some(value.downcast::<PyBytes>()?.as_bytes()) };
            let slot = match progress.iter().position(|(t, p, _)| *t == which && *p == partition) {
                Some(slot) => slot,
                None => {
                    let partitions = &routes[which].2;
                    let object = match partitions.get_item(partition)? {
                        Some(object) => object,
                        None => {
                            let object = new_progress.call0()?;
                            partitions.set_item(partition, &object)?;
                            object
                        }
                    };
                    progress.push((which, partition, Progress::load(object)?));
                    progress.len() - 1
                }
            };
            let state = &mut progress[slot].2;
            state.offset = offset;
            if let Some((reason, detail)) = routers[which].decode_and_apply(state, partition, offset, value, now_ms)? {
                refused.push((message, reason, detail));
            }
        }
        Ok(messages.len())
    };
    let stopped = run();
    for (_, _, state) in &progress {
        state.store()?;
    }
    Ok((stopped?, refused))
}
