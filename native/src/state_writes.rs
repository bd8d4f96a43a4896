//! The per-key work of writing one micro-batch's entity states (`materializers/stream/redis_sink.py` runs the
//! round trips): which keys the cache serves and which are read first, the compare-and-set calls of the
//! updates, and what a round's replies settle. Done per key in Python, this was half the writer thread's
//! time (py-spy); the views' folds and encodings stay behind each batch's `update` and `decode`.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::add_note;
use crate::events::EntityEvents;
use crate::state_cache::{StateCache, Stored};

/// What a write needs of one view's micro-batch (a `StateBatch`).
struct Batch {
    /// `update(entity, state, applied)`: (encoded state, last offset applied per partition) or None
    update: PyObject,
    /// `decode(blob)`: the state stored as `blob` (None: the key holds none yet)
    decode: PyObject,
    expiry_ms: i64,
    /// partition -> the field of its fence, as `offset_field` names it
    fields: HashMap<i64, Py<PyString>>,
}

/// One entity's key in one view.
struct Target {
    batch: usize,
    entity: PyObject,
    key: Py<PyString>,
    partitions: Vec<i64>,
}

/// A key ready for its compare-and-set: what Redis holds.
struct Held {
    target: Target,
    stored: Stored,
}

/// A key's compare-and-set, sent: the new state went to Redis and is cached once it took it.
struct Update {
    held: Held,
    offsets: Py<PyDict>,
    size: usize,
}

/// An update and the new state's encoding, until its call is sent.
type Built = (Update, Py<PyBytes>);

/// One write of a micro-batch's view batches: its keys, over as many rounds of reads and compare-and-sets
/// as conflicts take. A write has its own version token, so a key is written at most once by it.
#[pyclass(module = "featurestream_native")]
pub struct StateWrites {
    cache: Py<StateCache>,
    #[pyo3(get)]
    version: Py<PyString>,
    batches: Vec<Batch>,
    /// keys to read (HMGET) in the next round
    to_read: Vec<Target>,
    /// keys to compare-and-set in the next round
    ready: Vec<Held>,
    /// this round's compare-and-set calls, in the order they were sent
    sent: Vec<Vec<Update>>,
}

#[pymethods]
impl StateWrites {
    /// The keys of `batches`' entities, each ready when `cache` holds its state, else to read.
    #[new]
    fn new(py: Python<'_>, cache: Bound<'_, StateCache>, batches: Vec<Bound<'_, PyAny>>) -> PyResult<Self> {
        let version = PyString::new(py, &cache.try_borrow_mut()?.new_version()).unbind();
        let mut writes = StateWrites {
            cache: cache.clone().unbind(),
            version,
            batches: Vec::new(),
            to_read: Vec::new(),
            ready: Vec::new(),
            sent: Vec::new(),
        };
        for (at, batch) in batches.iter().enumerate() {
            let events = batch.getattr("events")?.downcast_into::<EntityEvents>()?;
            let events = events.try_borrow()?;
            let key_of = batch.getattr("key")?;
            let offset_field = batch.getattr("offset_field")?;
            let mut fields = HashMap::new();
            for (entity, partitions) in events.entities.iter().zip(&events.partitions) {
                for &partition in partitions {
                    if let Entry::Vacant(field) = fields.entry(partition) {
                        field.insert(offset_field.call1((partition,))?.downcast_into::<PyString>()?.unbind());
                    }
                }
                let key = key_of.call1((entity,))?.downcast_into::<PyString>()?;
                // The cache is borrowed for the lookup only: no Python code runs meanwhile.
                let stored = cache.try_borrow()?.lookup(&key, partitions)?.map(|stored| stored.clone_ref(py));
                let target = Target { batch: at, entity: entity.clone_ref(py), key: key.unbind(), partitions: partitions.clone() };
                match stored {
                    Some(stored) => writes.ready.push(Held { target, stored }),
                    None => writes.to_read.push(target),
                }
            }
            writes.batches.push(Batch {
                update: batch.getattr("update")?.unbind(),
                decode: batch.getattr("decode")?.unbind(),
                expiry_ms: batch.getattr("expiry_ms")?.extract()?,
                fields,
            });
        }
        Ok(writes)
    }

    /// Keys still to read or to write.
    fn __len__(&self) -> usize {
        self.to_read.len() + self.ready.len()
    }

    /// Send a round through `commands` (`send(*words)`): a read of each key to read, then the compare-and-set
    /// of each ready key with events to apply, many keys per call of the script `sha` (a call goes as soon as
    /// it holds `keys_per_call`, so Redis runs it while the next is built). `slot_of(key)`, on a cluster,
    /// keeps a call's keys in one hash slot.
    #[pyo3(signature = (commands, sha, keys_per_call, slot_of = None))]
    fn send(&mut self, py: Python<'_>, commands: &Bound<'_, PyAny>, sha: &Bound<'_, PyString>, keys_per_call: usize,
            slot_of: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        if !self.sent.is_empty() {
            return Err(PyRuntimeError::new_err("the last round was sent but not settled"));
        }
        let send = commands.getattr("send")?;
        for target in &self.to_read {
            let fields = &self.batches[target.batch].fields;
            let mut words: Vec<Bound<'_, PyAny>> = vec![
                intern!(py, "HMGET").clone().into_any(),
                target.key.bind(py).clone().into_any(),
                intern!(py, "v").clone().into_any(),
                intern!(py, "s").clone().into_any(),
            ];
            words.extend(target.partitions.iter().map(|p| fields[p].bind(py).clone().into_any()));
            send.call1(PyTuple::new(py, words)?)?;
        }
        // (hash slot, expiry) -> the updates of the call being filled; the order the buckets first appeared
        let mut pending: HashMap<(i64, i64), Vec<Built>> = HashMap::new();
        let mut buckets = Vec::new();
        for held in std::mem::take(&mut self.ready) {
            let batch = &self.batches[held.target.batch];
            let stored = &held.stored;
            let new = batch.update.call1(py, (held.target.entity.bind(py), stored.state.bind(py), stored.applied.bind(py)))?;
            let Some((blob, offsets)) = new.extract::<Option<(Bound<'_, PyBytes>, Bound<'_, PyDict>)>>(py)? else {
                continue;
            };
            let slot = match &slot_of {
                Some(slot_of) => slot_of.call1((held.target.key.bind(py),))?.extract()?,
                None => 0,
            };
            let bucket = (slot, batch.expiry_ms);
            let call = pending.entry(bucket).or_insert_with(|| {
                buckets.push(bucket);
                Vec::new()
            });
            let size = blob.as_bytes().len();
            call.push((Update { held, offsets: offsets.unbind(), size }, blob.unbind()));
            if call.len() >= keys_per_call {
                let full = std::mem::take(call);
                self.send_call(py, &send, sha, bucket.1, full)?;
            }
        }
        for bucket in buckets {
            let call = pending.remove(&bucket).unwrap_or_default();
            if !call.is_empty() {
                self.send_call(py, &send, sha, bucket.1, call)?;
            }
        }
        Ok(())
    }

    /// Settle a round from its replies (the reads', then one list of 1/0 per compare-and-set call): cache what
    /// Redis took, and make ready the keys read; the keys somebody else wrote first are read again. Every
    /// reply is checked before anything changes. True when nothing is left to send.
    fn settle(&mut self, py: Python<'_>, replies: Vec<Bound<'_, PyAny>>) -> PyResult<bool> {
        let reads = self.to_read.len();
        if replies.len() != reads + self.sent.len() {
            return Err(PyRuntimeError::new_err(format!(
                "{} replies for {reads} reads and {} compare-and-set calls", replies.len(), self.sent.len())));
        }
        let mut results = Vec::with_capacity(self.sent.len());
        for (call, oks) in self.sent.iter().zip(&replies[reads..]) {
            let first = call[0].held.target.key.bind(py);
            let oks = oks.downcast::<PyList>().ok().and_then(|oks| oks.extract::<Vec<i64>>().ok()).ok_or_else(|| {
                PyRuntimeError::new_err(format!("the compare-and-set of {} keys from {first} returned {oks}, not a list of \
                                                 1 and 0", call.len()))
            })?;
            if oks.len() != call.len() {
                return Err(PyRuntimeError::new_err(format!(
                    "the compare-and-set of {} keys from {first} returned {} results", call.len(), oks.len())));
            }
            results.push(oks);
        }
        let mut failed = Vec::new();
        {
            let mut cache = self.cache.bind(py).try_borrow_mut()?;
            for (call, oks) in std::mem::take(&mut self.sent).into_iter().zip(results) {
                for (update, ok) in call.into_iter().zip(oks) {
                    let Update { held: Held { target, stored }, offsets, size } = update;
                    let key = target.key.bind(py);
                    if ok == 1 {
                        // The entry is replaced: updating its fences in place is safe.
                        stored.applied.bind(py).update(offsets.bind(py).as_mapping())?;
                        cache.insert(key, Stored { version: self.version.clone_ref(py), size, ..stored })?;
                    } else {
                        cache.remove(key)?;
                        failed.push(target);
                    }
                }
            }
        }
        for (target, read) in std::mem::take(&mut self.to_read).into_iter().zip(&replies[..reads]) {
            let stored = self.parse(py, &target, read)?;
            self.ready.push(Held { target, stored });
        }
        self.to_read = failed;
        Ok(self.to_read.is_empty() && self.ready.is_empty())
    }
}

impl StateWrites {
    fn send_call(&mut self, py: Python<'_>, send: &Bound<'_, PyAny>, sha: &Bound<'_, PyString>, expiry_ms: i64,
                 call: Vec<Built>) -> PyResult<()> {
        let mut words: Vec<Bound<'_, PyAny>> = Vec::with_capacity(5 + call.len() * 6);
        words.push(intern!(py, "EVALSHA").clone().into_any());
        words.push(sha.clone().into_any());
        words.push(call.len().into_pyobject(py)?.into_any());
        for (update, _) in &call {
            words.push(update.held.target.key.bind(py).clone().into_any());
        }
        words.push(expiry_ms.into_pyobject(py)?.into_any());
        words.push(self.version.bind(py).clone().into_any());
        let mut updates = Vec::with_capacity(call.len());
        for (update, blob) in call {
            let fields = &self.batches[update.held.target.batch].fields;
            let mut offsets: Vec<(i64, i64)> = update.offsets.bind(py).extract::<HashMap<i64, i64>>()?.into_iter().collect();
            offsets.sort_unstable();
            words.push(update.held.stored.version.bind(py).clone().into_any());
            words.push(blob.into_bound(py).into_any());
            words.push(offsets.len().into_pyobject(py)?.into_any());
            for (partition, offset) in offsets {
                let field = fields.get(&partition).ok_or_else(|| PyRuntimeError::new_err(format!(
                    "a fold applied partition {partition}, which none of the batch's events came from")))?;
                words.push(field.bind(py).clone().into_any());
                words.push(offset.into_pyobject(py)?.into_any());
            }
            updates.push(update);
        }
        send.call1(PyTuple::new(py, words)?)?;
        self.sent.push(updates);
        Ok(())
    }

    /// The reply to a read (HMGET of `v`, `s` and the fences of the target's partitions).
    fn parse<'py>(&self, py: Python<'py>, target: &Target, read: &Bound<'py, PyAny>) -> PyResult<Stored> {
        let key = target.key.bind(py);
        let values = read.downcast::<PyList>().ok().and_then(|read| read.extract::<Vec<Option<Bound<'py, PyBytes>>>>().ok())
            .ok_or_else(|| PyRuntimeError::new_err(format!("a read of {key} returned {read}, not a list of bytes or nil")))?;
        let [version, blob, offsets @ ..] = values.as_slice() else {
            return Err(PyRuntimeError::new_err(format!("a read of {key} returned {} values", values.len())));
        };
        if offsets.len() != target.partitions.len() {
            return Err(PyRuntimeError::new_err(format!("a read of {key} returned {} fences", offsets.len())));
        }
        if version.is_none() && offsets.iter().any(Option::is_some) {
            // This layout writes all three together.
            let error = py.import("featurestream.online.keys")?.getattr("OldLayoutError")?.call1((format!(
                "{key} holds fences but no state version: it was written by an older featurestream layout. Stop the \
                 stream materializers and run `featurestream rebuild` to recompute the views from the event log."),))?;
            return Err(PyErr::from_value(error));
        }
        let applied = PyDict::new(py);
        for (partition, offset) in target.partitions.iter().zip(offsets) {
            let offset = match offset {
                Some(text) => std::str::from_utf8(text.as_bytes()).ok().and_then(|t| t.parse::<i64>().ok()).ok_or_else(|| {
                    PyRuntimeError::new_err(format!("{key} holds a fence that is not an offset: {text}"))
                })?,
                None => -1,
            };
            applied.set_item(partition, offset)?;
        }
        let version = match version {
            Some(version) => std::str::from_utf8(version.as_bytes())
                .map_err(|_| PyRuntimeError::new_err(format!("{key} holds a version that is not text")))?,
            None => "",
        };
        let state = self.batches[target.batch].decode.call1(py, (blob,))
            .inspect_err(|err| add_note(py, err, format!("while decoding the state stored in {key}")))?;
        Ok(Stored { version: PyString::new(py, version).unbind(), state, applied: applied.unbind(), size: 0 })
    }
}
