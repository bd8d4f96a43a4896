//! Kernels of the stream materializer that run once per event, where Python's interpreter was the
//! bottleneck (see docs/BENCHMARKS.md). Built and installed by `make install`.

use pyo3::prelude::*;

mod tiles;

#[pymodule]
fn featurestream_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<tiles::TilePlan>()?;
    Ok(())
}
