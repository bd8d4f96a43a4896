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
//!
//! The cache has no `__traverse__`: the collector never sees the states it holds, which is right for states
//! (Rust tiles, lists of session dicts) that reference nothing back; see materializers/stream/collection.py.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::fs::File;
use std::io::Read;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

const CACHE_ENTRIES: usize = 1 << 17;
/// Encoded bytes of the cached states, at most: decoded, they take several times that in memory.
const CACHE_BYTES: usize = 64 << 20;

/// (version, state, applied), as Python sees a cached entry.
type Cached = (Py<PyString>, PyObject, Py<PyDict>);

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
    /// the key's text: another key of the same hash is a miss, never this entry
    key: Box<str>,
    stored: Stored,
    /// when it was put: its place in `order`
    stamp: u64,
}

/// Hashes a u64 to itself: the map's keys are Python's hashes of the state keys already.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    /// Only `write_u64` is used; hashing anything else stays correct, if slow.
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, number: u64) {
        self.0 = number;
    }
}

/// Bounded map of state key -> what Redis holds; the least recently written entries go first.
///
/// Entries are found by the key's Python hash, which a str computes once and keeps (the key cache hands
/// out the same str objects batch after batch): no hashing of the text per lookup, no copy of it per put.
/// Two keys of one hash share a slot, the newer replacing the older, which costs a read, never a result.
#[pyclass(module = "featurestream_native")]
pub struct StateCache {
    #[pyo3(get)]
    capacity: usize,
    #[pyo3(get)]
    capacity_bytes: usize,
    entries: HashMap<u64, Slot, BuildHasherDefault<Prehashed>>,
    /// (stamp, key hash) of every put, oldest first; an item is stale once its slot was put again or dropped
    order: VecDeque<(u64, u64)>,
    stamps: u64,
    bytes: usize,
    prefix: String,
    writes: u64,
}

fn hash_of(key: &Bound<'_, PyString>) -> PyResult<u64> {
    Ok(key.hash()? as u64)
}

impl StateCache {
    /// The cached state of `key`, if it knows the fence of every one of `partitions`.
    pub(crate) fn lookup(&self, key: &Bound<'_, PyString>, partitions: &[i64]) -> PyResult<Option<&Stored>> {
        let Some(slot) = self.entries.get(&hash_of(key)?) else { return Ok(None) };
        if *slot.key != *key.to_str()? {
            return Ok(None);
        }
        let applied = slot.stored.applied.bind(key.py());
        for &partition in partitions {
            if !applied.contains(partition)? {
                return Ok(None);
            }
        }
        Ok(Some(&slot.stored))
    }

    pub(crate) fn insert(&mut self, key: &Bound<'_, PyString>, stored: Stored) -> PyResult<()> {
        let (hash, text) = (hash_of(key)?, key.to_str()?);
        self.stamps += 1;
        let stamp = self.stamps;
        self.bytes += stored.size;
        match self.entries.entry(hash) {
            Entry::Occupied(mut occupied) => {
                let slot = occupied.get_mut();
                self.bytes -= slot.stored.size;
                if *slot.key != *text {
                    slot.key = text.into();
                }
                slot.stored = stored;
                slot.stamp = stamp;
            }
            Entry::Vacant(vacant) => {
                vacant.insert(Slot { key: text.into(), stored, stamp });
            }
        }
        self.order.push_back((stamp, hash));
        while self.entries.len() > self.capacity || self.bytes > self.capacity_bytes {
            let Some((stamp, oldest)) = self.order.pop_front() else { break };
            if self.entries.get(&oldest).is_some_and(|slot| slot.stamp == stamp) {
                self.evict(oldest);
            }
        }
        if self.order.len() > 2 * self.entries.len() + 1024 {
            let entries = &self.entries;
            self.order.retain(|(stamp, hash)| entries.get(hash).is_some_and(|slot| slot.stamp == *stamp));
        }
        Ok(())
    }

    pub(crate) fn remove(&mut self, key: &Bound<'_, PyString>) -> PyResult<()> {
        let (hash, text) = (hash_of(key)?, key.to_str()?);
        if self.entries.get(&hash).is_some_and(|slot| *slot.key == *text) {
            self.evict(hash);
        }
        Ok(())
    }

    fn evict(&mut self, hash: u64) {
        if let Some(slot) = self.entries.remove(&hash) {
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
            entries: HashMap::default(),
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

    /// (version, state, a copy of the fences) of `key`, if the entry knows the fence of every one of `partitions`.
    fn get(&self, py: Python<'_>, key: &Bound<'_, PyString>, partitions: Vec<i64>) -> PyResult<Option<Cached>> {
        self.lookup(key, &partitions)?
            .map(|s| Ok((s.version.clone_ref(py), s.state.clone_ref(py), s.applied.bind(py).copy()?.unbind())))
            .transpose()
    }

    fn put(&mut self, key: &Bound<'_, PyString>, version: Py<PyString>, state: PyObject, applied: Py<PyDict>,
           size: usize) -> PyResult<()> {
        self.insert(key, Stored { version, state, applied, size })
    }

    #[pyo3(name = "drop")]
    fn forget(&mut self, key: &Bound<'_, PyString>) -> PyResult<()> {
        self.remove(key)
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
        self.bytes = 0;
    }

    /// A version token no other process or write will ever use.
    pub(crate) fn new_version(&mut self) -> String {
        self.writes += 1;
        format!("{}.{:x}", self.prefix, self.writes)
    }
}
