//! Applying one entity's events to its sessions, in place (`featurestream.windows.sessions` documents the
//! state: `[start_ms, last_ms, event_count, {aggregation name: partial}]` per session, sorted by start).
//!
//! Partials are the Python dicts of `featurestream.windows.aggregations`, updated with Python's own
//! operators so values equal the reference's exactly. Merging two sessions (an out-of-order event filling
//! a gap) is rare and stays in Python: the fold calls the `absorb` it was given.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyList, PyString};

use crate::events::{last_offsets, EntityEvents, Event};

const START: usize = 0;
const LAST: usize = 1;
const COUNT: usize = 2;
const AGGS: usize = 3;

#[derive(Clone, Copy, PartialEq)]
enum Function {
    Count,
    Sum,
    Mean,
    Spread, // var and stddev keep the same partial
    Min,
    Max,
    Last,
}

struct Aggregation {
    name: Py<PyString>,
    function: Function,
    column: String,
}

/// Interned component names of the partials.
struct Components {
    n: Py<PyString>,
    s: Py<PyString>,
    q: Py<PyString>,
    lo: Py<PyString>,
    hi: Py<PyString>,
    lv: Py<PyString>,
    lk: Py<PyString>,
}

#[pyclass(frozen, module = "featurestream_native")]
pub struct SessionFold {
    aggregations: Vec<Aggregation>,
    /// The view's (name, function, column) as `absorb` takes them.
    described: Py<PyList>,
    gap: i64,
    absorb: PyObject,
    components: Components,
}

#[pymethods]
impl SessionFold {
    /// `aggregations`: the view's (name, function, column), every one; `absorb(into, later, aggregations)`
    /// merges the next session into one.
    #[new]
    fn new(py: Python<'_>, aggregations: Vec<(String, String, String)>, gap_ms: i64, absorb: PyObject) -> PyResult<Self> {
        let described = PyList::empty(py);
        let mut parsed = Vec::with_capacity(aggregations.len());
        for (name, function, column) in aggregations {
            described.append((name.as_str(), function.as_str(), column.as_str()))?;
            let function = match function.as_str() {
                "count" => Function::Count,
                "sum" => Function::Sum,
                "mean" => Function::Mean,
                "var" | "stddev" => Function::Spread,
                "min" => Function::Min,
                "max" => Function::Max,
                "last" => Function::Last,
                other => {
                    return Err(PyValueError::new_err(format!(
                        "unknown aggregation function '{other}'; expected one of count, sum, mean, var, stddev, min, max, last"
                    )))
                }
            };
            parsed.push(Aggregation {
                name: PyString::intern(py, &name).unbind(),
                function,
                column,
            });
        }
        if gap_ms <= 0 {
            return Err(PyValueError::new_err(format!("the session gap must be positive, not {gap_ms} ms")));
        }
        let intern = |s: &str| PyString::intern(py, s).unbind();
        Ok(SessionFold {
            aggregations: parsed,
            described: described.unbind(),
            gap: gap_ms,
            absorb,
            components: Components {
                n: intern("n"),
                s: intern("s"),
                q: intern("q"),
                lo: intern("lo"),
                hi: intern("hi"),
                lv: intern("lv"),
                lk: intern("lk"),
            },
        })
    }

    /// Apply the entity's events past `applied` (partition -> last offset applied) to `state`, in place; the
    /// last offset applied per partition, or None when every event was applied before.
    fn fold<'py>(&self, py: Python<'py>, state: &Bound<'py, PyList>, events: &Bound<'py, EntityEvents>,
                 entity: &Bound<'py, PyAny>, applied: &Bound<'py, PyDict>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let events = events.borrow();
        let fresh = events.fresh_events(py, entity, applied)?;
        if fresh.is_empty() {
            return Ok(None);
        }
        let columns = self.aggregations.iter().map(|a| events.column(py, &a.column)).collect::<PyResult<Vec<_>>>()?;
        for event in &fresh {
            let session = self.session_of(py, state, event.ts)?;
            let count: Bound<'_, PyAny> = session.get_item(COUNT)?;
            session.set_item(COUNT, count.add(1)?)?;
            let aggs = session.get_item(AGGS)?.downcast_into::<PyDict>()?;
            for (aggregation, &column) in self.aggregations.iter().zip(&columns) {
                if let Some(value) = event.value(column) {
                    self.accumulate(py, &aggs, aggregation, &value.to_object(py)?, event)?;
                }
            }
        }
        last_offsets(py, &fresh).map(Some)
    }
}

impl SessionFold {
    /// The session the event at `ts` belongs to, after merging the sessions it joins, or a new one.
    fn session_of<'py>(&self, py: Python<'py>, state: &Bound<'py, PyList>, ts: i64) -> PyResult<Bound<'py, PyList>> {
        let bound = |session: &Bound<'py, PyAny>, slot: usize| -> PyResult<i64> { session.get_item(slot)?.extract() };
        // Sessions [0, hi) start no later than ts + G; of those, [lo, hi) also end no earlier than ts - G.
        // Both bounds are monotone in the list, so [lo, hi) is exactly the sessions the event touches.
        let mut hi = state.len();
        while hi > 0 && bound(&state.get_item(hi - 1)?, START)? - self.gap > ts {
            hi -= 1;
        }
        let mut lo = hi;
        while lo > 0 && bound(&state.get_item(lo - 1)?, LAST)? + self.gap >= ts {
            lo -= 1;
        }
        if lo == hi {
            let session = PyList::new(py, [ts.into_pyobject(py)?.into_any(), ts.into_pyobject(py)?.into_any(),
                                           0i64.into_pyobject(py)?.into_any(), PyDict::new(py).into_any()])?;
            state.insert(hi, &session)?;
            return Ok(session);
        }
        let session = state.get_item(lo)?.downcast_into::<PyList>()?;
        if hi - lo > 1 {
            let described = self.described.bind(py);
            for other in state.get_slice(lo + 1, hi).iter() {
                self.absorb.call1(py, (&session, other, described))?;
            }
            state.del_slice(lo + 1, hi)?;
        }
        if ts < bound(session.as_any(), START)? {
            session.set_item(START, ts)?;
        } else if ts > bound(session.as_any(), LAST)? {
            session.set_item(LAST, ts)?;
        }
        Ok(session)
    }

    /// Add one non-null value to the aggregation's partial (as `tests/partials.py`'s `accumulate` states it).
    fn accumulate(&self, py: Python<'_>, aggs: &Bound<'_, PyDict>, aggregation: &Aggregation, value: &Bound<'_, PyAny>,
                  event: &Event) -> PyResult<()> {
        let name = aggregation.name.bind(py);
        let partial = match aggs.get_item(name)? {
            Some(partial) => partial.downcast_into::<PyDict>()?,
            None => {
                let partial = PyDict::new(py);
                aggs.set_item(name, &partial)?;
                partial
            }
        };
        let c = &self.components;
        let add = |component: &Py<PyString>, value: &Bound<'_, PyAny>, zero: Bound<'_, PyAny>| -> PyResult<()> {
            let component = component.bind(py);
            let held = partial.get_item(component)?.unwrap_or(zero);
            partial.set_item(component, held.add(value)?)
        };
        let one = 1i64.into_pyobject(py)?.into_any();
        let zero = || 0i64.into_pyobject(py).map(|z| z.into_any());
        match aggregation.function {
            Function::Count => add(&c.n, &one, zero()?)?,
            Function::Sum => add(&c.s, value, zero()?)?,
            Function::Mean => {
                add(&c.n, &one, zero()?)?;
                add(&c.s, value, zero()?)?;
            }
            Function::Spread => {
                add(&c.n, &one, zero()?)?;
                add(&c.s, value, zero()?)?;
                // Always a float: squares of big ints would overflow the session state's encoding.
                let x: f64 = value.extract()?;
                add(&c.q, PyFloat::new(py, x * x).as_any(), PyFloat::new(py, 0.0).into_any())?;
            }
            Function::Min | Function::Max => {
                let component = if aggregation.function == Function::Min { c.lo.bind(py) } else { c.hi.bind(py) };
                let replace = match partial.get_item(component)? {
                    Some(held) if !held.is_none() => {
                        if aggregation.function == Function::Min { value.lt(&held)? } else { value.gt(&held)? }
                    }
                    _ => true,
                };
                if replace {
                    partial.set_item(component, value)?;
                }
            }
            Function::Last => {
                let key = PyString::new(py, &event.order_key());
                let newer = match partial.get_item(c.lk.bind(py))? {
                    Some(held) if !held.is_none() => key.gt(&held)?,
                    _ => true,
                };
                if newer {
                    partial.set_item(c.lv.bind(py), value)?;
                    partial.set_item(c.lk.bind(py), key)?;
                }
            }
        }
        Ok(())
    }
}
