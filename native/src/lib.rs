//! Kernels of the stream materializer that run once per event, where Python's interpreter was the
//! bottleneck (see docs/BENCHMARKS.md): records' decoding and routing, the event log's buffers, a micro-batch's
//! events per entity, windows' tiles and sessions, the writer's per-key work and cache, and the RESP of the writes.
//! Built and installed by `make install`.

use pyo3::prelude::*;

mod decode;
mod event_log;
mod events;
mod resp;
mod router;
mod sessions;
mod state_cache;
mod state_writes;
mod tiles;

/// Adds `note` to a Python exception, saying where it happened; a note that cannot be added is no reason to
/// lose the error itself.
pub(crate) fn add_note(py: Python<'_>, err: &PyErr, note: String) {
    let _ = err.value(py).call_method1("add_note", (note,));
}

#[pymodule]
fn featurestream_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<decode::RowDecoder>()?;
    m.add_class::<router::Router>()?;
    m.add_function(wrap_pyfunction!(router::route, m)?)?;
    for reason in [decode::UNDECODABLE, decode::MISSING_KEY, decode::MISSING_TIMESTAMP, decode::WRONG_TYPE,
                   decode::BAD_TIMESTAMP, router::LATE, router::UDF_ERROR] {
        m.add(reason.to_uppercase(), reason)?;
    }
    m.add_class::<event_log::LogBuffers>()?;
    m.add_class::<event_log::PartitionLog>()?;
    m.add_class::<events::EntityEvents>()?;
    m.add_function(wrap_pyfunction!(resp::pack_commands, m)?)?;
    m.add_class::<tiles::TilePlan>()?;
    m.add_class::<tiles::TileState>()?;
    m.add_class::<sessions::SessionFold>()?;
    m.add_class::<state_cache::StateCache>()?;
    m.add_class::<state_writes::StateWrites>()?;
    Ok(())
}
