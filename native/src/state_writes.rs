//! The per-key work of writing one micro-batch's entity states (`materializers/stream/redis_sink.py` runs the
//! round trips): which keys the cache serves and which are read first, the compare-and-set calls of the
//! updates, and what a round's replies settle. Done per key in Python, this was half the writer thread's
//! time (py-spy); the views' folds and encodings stay behind each batch's `update` and `decode`.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};

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
    /// the new state's encoding, until its call is sent
    blob: Option<Py<PyBytes>>,
    offsets: Py<PyDict>,
    size: usize,
}

#[pyclass(module = "featurestream_native")]
pub struct StateWrites {
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
    fn new(py: Python<'_>, cache: PyRef<'_, StateCache>, batches: Vec<Bound<'_, PyAny>>) -> PyResult<Self> {
        let mut writes = StateWrites { batches: Vec::new(), to_read: Vec::new(), ready: Vec::new(), sent: Vec::new() };
        for (at, batch) in batches.iter().enumerate() {
            let events = batch.getattr("events")?.downcast_into::<EntityEvents>()?;
            let events = events.borrow();
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
                let target = Target { batch: at, entity: entity.clone_ref(py), key: key.clone().unbind(), partitions: partitions.clone() };
                match cache.lookup(&key, partitions)? {
                    Some(stored) => writes.ready.push(Held { target, stored: stored.clone_ref(py) }),
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
    #[pyo3(signature = (commands, sha, version, keys_per_call, slot_of = None))]
    fn send(&mut self, py: Python<'_>, commands: &Bound<'_, PyAny>, sha: &Bound<'_, PyString>, version: &Bound<'_, PyString>,
            keys_per_call: usize, slot_of: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let send = commands.getattr("send")?;
        for target in &self.to_read {
            let fields = &self.batches[target.batch].fields;
            let mut words: Vec<Bound<'_, PyAny>> = vec![
                PyString::new(py, "HMGET").into_any(),
                target.key.bind(py).clone().into_any(),
                PyString::new(py, "v").into_any(),
                PyString::new(py, "s").into_any(),
            ];
            words.extend(target.partitions.iter().map(|p| fields[p].bind(py).clone().into_any()));
            send.call1(PyTuple::new(py, words)?)?;
        }
        // (hash slot, expiry) -> the updates of the call being filled; the order the buckets first appeared
        let mut pending: HashMap<(i64, i64), Vec<Update>> = HashMap::new();
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
            call.push(Update { held, blob: Some(blob.unbind()), offsets: offsets.unbind(), size });
            if call.len() >= keys_per_call {
                let full = std::mem::take(call);
                self.send_call(py, &send, sha, version, bucket.1, full)?;
            }
        }
        for bucket in buckets {
            let call = pending.remove(&bucket).unwrap_or_default();
            if !call.is_empty() {
                self.send_call(py, &send, sha, version, bucket.1, call)?;
            }
        }
        Ok(())
    }

    /// Settle a round from its replies (the reads', then one list of 1/0 per compare-and-set call): cache what
    /// Redis took, and make ready the keys read; the keys somebody else wrote first are read again. True when
    /// nothing is left to send.
    fn settle(&mut self, py: Python<'_>, mut cache: PyRefMut<'_, StateCache>, replies: Vec<Bound<'_, PyAny>>,
              version: Py<PyString>) -> PyResult<bool> {
        let reads = self.to_read.len();
        if replies.len() != reads + self.sent.len() {
            return Err(PyRuntimeError::new_err(format!(
                "{} replies for {reads} reads and {} compare-and-set calls", replies.len(), self.sent.len())));
        }
        let mut failed = Vec::new();
        for (call, oks) in std::mem::take(&mut self.sent).into_iter().zip(&replies[reads..]) {
            let oks: Vec<i64> = oks.extract()?;
            if oks.len() != call.len() {
                return Err(PyRuntimeError::new_err(format!("{} results for a call of {} keys", oks.len(), call.len())));
            }
            for (update, ok) in call.into_iter().zip(oks) {
                let Update { held: Held { target, stored }, offsets, size, .. } = update;
                let key = target.key.bind(py);
                if ok == 1 {
                    // The entry is replaced: updating its fences in place is safe.
                    stored.applied.bind(py).update(offsets.bind(py).as_mapping())?;
                    cache.insert(key, Stored { version: version.clone_ref(py), size, ..stored })?;
                } else {
                    cache.remove(key)?;
                    failed.push(target);
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
    fn send_call(&mut self, py: Python<'_>, send: &Bound<'_, PyAny>, sha: &Bound<'_, PyString>, version: &Bound<'_, PyString>,
                 expiry_ms: i64, mut call: Vec<Update>) -> PyResult<()> {
        let mut words: Vec<Bound<'_, PyAny>> = Vec::with_capacity(5 + call.len() * 6);
        words.push(PyString::new(py, "EVALSHA").into_any());
        words.push(sha.clone().into_any());
        words.push(call.len().into_pyobject(py)?.into_any());
        for update in &call {
            words.push(update.held.target.key.bind(py).clone().into_any());
        }
        words.push(expiry_ms.into_pyobject(py)?.into_any());
        words.push(version.clone().into_any());
        for update in &mut call {
            let fields = &self.batches[update.held.target.batch].fields;
            let mut offsets: Vec<(i64, i64)> = update.offsets.bind(py).extract::<HashMap<i64, i64>>()?.into_iter().collect();
            offsets.sort_unstable();
            words.push(update.held.stored.version.bind(py).clone().into_any());
            let blob = update.blob.take().ok_or_else(|| PyRuntimeError::new_err("an update sent twice"))?;
            words.push(blob.into_bound(py).into_any());
            words.push(offsets.len().into_pyobject(py)?.into_any());
            for (partition, offset) in offsets {
                let field = fields.get(&partition).ok_or_else(|| PyRuntimeError::new_err(format!(
                    "a fold applied partition {partition}, which the entity has no events of")))?;
                words.push(field.bind(py).clone().into_any());
                words.push(offset.into_pyobject(py)?.into_any());
            }
        }
        send.call1(PyTuple::new(py, words)?)?;
        self.sent.push(call);
        Ok(())
    }

    /// The reply to a read (HMGET of `v`, `s` and the fences of the target's partitions).
    fn parse<'py>(&self, py: Python<'py>, target: &Target, read: &Bound<'py, PyAny>) -> PyResult<Stored> {
        let values: Vec<Option<Bound<'py, PyBytes>>> = read.extract()?;
        let [version, blob, offsets @ ..] = values.as_slice() else {
            return Err(PyRuntimeError::new_err(format!("a read of {} returned {} values", target.key, values.len())));
        };
        if offsets.len() != target.partitions.len() {
            return Err(PyRuntimeError::new_err(format!("a read of {} returned {} fences", target.key, offsets.len())));
        }
        if version.is_none() && offsets.iter().any(Option::is_some) {
            // This layout writes all three together.
            let error = py.import("featurestream.online.keys")?.getattr("OldLayoutError")?.call1((format!(
                "{} holds fences but no state version: it was written by an older featurestream layout. Stop the \
                 stream materializers and run `featurestream rebuild` to recompute the views from the event log.",
                target.key),))?;
            return Err(PyErr::from_value(error));
        }
        let applied = PyDict::new(py);
        for (partition, offset) in target.partitions.iter().zip(offsets) {
            let offset = match offset {
                Some(text) => std::str::from_utf8(text.as_bytes()).ok().and_then(|t| t.parse::<i64>().ok()).ok_or_else(|| {
                    PyRuntimeError::new_err(format!("{} holds a fence that is not an offset: {text:?}", target.key))
                })?,
                None => -1,
            };
            applied.set_item(partition, offset)?;
        }
        let version = match version {
            Some(version) => std::str::from_utf8(version.as_bytes())
                .map_err(|_| PyRuntimeError::new_err(format!("{} holds a version that is not text", target.key)))?,
            None => "",
        };
        Ok(Stored {
            version: PyString::new(py, version).unbind(),
            state: self.batches[target.batch].decode.call1(py, (blob,))?,
            applied: applied.unbind(),
            size: 0,
        })
    }
}
