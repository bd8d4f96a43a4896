//! What this process last read or wrote for each state key, so a compare-and-set needs no read first.
//!
//! Every successful compare-and-set stores a version token unique to this process and write, so a cached
//! entry whose version Redis still holds is exactly the stored state: nobody wrote the key since (not another
//! process, not a rebuild, not a recreation after expiry). When somebody did, the compare-and-set fails, the
//! entry is dropped and the key is read again, so the cache never changes a result.
//!
//! Entries hold the decoded state, which a write updates in place: decoding a key's whole state for every
//! write would cost more than the write. So an entry is only ever put back after Redis took the write, and
//! the owner clears the cache when a write fails midway (the updated states may or may not be in Redis).

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::Read;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

const CACHE_ENTRIES: usize = 1 << 17;
/// Encoded bytes of the cached states, at most: decoded, they take several times that in memory.
const CACHE_BYTES: usize = 64 << 20;

/// (version, state, applied), as Python sees a cached entry.
type Entry = (Py<PyString>, PyObject, Py<PyDict>);

/// A key's state as Redis holds it, as far as this process knows.
pub(crate) struct Stored {
    /// '' when the key does not exist
    pub(crate) version: Py<PyString>,
    /// the decoded state (a view batch's own type), updated in place by a write
    pub(crate) state: PyObject,
    /// source partition -> last applied offset (-1: none)
    pub(crate) applied: Py<PyDict>,
    /// the state's encoded length
    pub(crate) size: usize,
}

impl Stored {
    pub(crate) fn clone_ref(&self, py: Python<'_>) -> Stored {
        Stored {
            version: self.version.clone_ref(py),
            state: self.state.clone_ref(py),
            applied: self.applied.clone_ref(py),
            size: self.size,
        }
    }
}

struct Slot {
    stored: Stored,
    /// when it was put: its place in `order`
    stamp: u64,
}

/// Bounded map of state key -> what Redis holds; the least recently written entries go first.
#[pyclass(module = "featurestream_native")]
pub struct StateCache {
    #[pyo3(get)]
    capacity: usize,
    #[pyo3(get)]
    capacity_bytes: usize,
    entries: HashMap<String, Slot>,
    /// (stamp, key) of every put, oldest first; an item is stale once its key was put again or dropped
    order: VecDeque<(u64, String)>,
    stamps: u64,
    bytes: usize,
    prefix: String,
    writes: u64,
}

impl StateCache {
    /// The cached state of `key`, if it knows the fence of every one of `partitions`.
    pub(crate) fn lookup(&self, py: Python<'_>, key: &str, partitions: &[i64]) -> PyResult<Option<&Stored>> {
        let Some(slot) = self.entries.get(key) else { return Ok(None) };
        let applied = slot.stored.applied.bind(py);
        for &partition in partitions {
            if !applied.contains(partition)? {
                return Ok(None);
            }
        }
        Ok(Some(&slot.stored))
    }

    pub(crate) fn insert(&mut self, key: String, stored: Stored) {
        self.remove(&key);
        self.stamps += 1;
        self.bytes += stored.size;
        self.order.push_back((self.stamps, key.clone()));
        self.entries.insert(key, Slot { stored, stamp: self.stamps });
        while self.entries.len() > self.capacity || self.bytes > self.capacity_bytes {
            let Some((stamp, oldest)) = self.order.pop_front() else { break };
            if self.entries.get(&oldest).is_some_and(|slot| slot.stamp == stamp) {
                self.remove(&oldest);
            }
        }
        if self.order.len() > 2 * self.entries.len() + 1024 {
            let entries = &self.entries;
            self.order.retain(|(stamp, key)| entries.get(key).is_some_and(|slot| slot.stamp == *stamp));
        }
    }

    pub(crate) fn remove(&mut self, key: &str) {
        if let Some(slot) = self.entries.remove(key) {
            self.bytes -= slot.stored.size;
        }
    }
}

#[pymethods]
impl StateCache {
    #[new]
    #[pyo3(signature = (capacity = CACHE_ENTRIES, capacity_bytes = CACHE_BYTES))]
    fn new(capacity: usize, capacity_bytes: usize) -> PyResult<Self> {
        let mut random = [0u8; 8];
        File::open("/dev/urandom")?.read_exact(&mut random)?;
        Ok(StateCache {
            capacity,
            capacity_bytes,
            entries: HashMap::new(),
            order: VecDeque::new(),
            stamps: 0,
            bytes: 0,
            prefix: random.iter().map(|byte| format!("{byte:02x}")).collect(),
            writes: 0,
        })
    }

    fn __len__(&self) -> usize {
        self.entries.len()
    }

    /// (version, state, applied) of `key`, if the entry knows the fence of every one of `partitions`.
    fn get(&self, py: Python<'_>, key: &str, partitions: Vec<i64>) -> PyResult<Option<Entry>> {
        Ok(self.lookup(py, key, &partitions)?.map(|s| (s.version.clone_ref(py), s.state.clone_ref(py), s.applied.clone_ref(py))))
    }

    fn put(&mut self, key: String, version: Py<PyString>, state: PyObject, applied: Py<PyDict>, size: usize) {
        self.insert(key, Stored { version, state, applied, size });
    }

    #[pyo3(name = "drop")]
    fn forget(&mut self, key: &str) {
        self.remove(key);
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
        self.bytes = 0;
    }

    /// A version token no other process or write will ever use.
    fn new_version(&mut self) -> String {
        self.writes += 1;
        format!("{}.{:x}", self.prefix, self.writes)
    }
}
