//! Kernels of the stream materializer that run once per event, where Python's interpreter was the
//! bottleneck (see docs/BENCHMARKS.md): records' decoding, a micro-batch's events per entity, windows' tiles
//! and sessions.
//! Built and installed by `make install`.

use pyo3::prelude::*;

mod decode;
mod events;
mod sessions;
mod tiles;

#[pymodule]
fn featurestream_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<decode::RowDecoder>()?;
    for reason in [decode::UNDECODABLE, decode::MISSING_KEY, decode::MISSING_TIMESTAMP, decode::WRONG_TYPE, decode::BAD_TIMESTAMP] {
        m.add(reason.to_uppercase(), reason)?;
    }
    m.add_class::<events::EntityEvents>()?;
    m.add_class::<tiles::TilePlan>()?;
    m.add_class::<tiles::TileState>()?;
    m.add_class::<sessions::SessionFold>()?;
    Ok(())
}
