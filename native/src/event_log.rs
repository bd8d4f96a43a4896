//! The event log's buffers: accepted events per partition, kept as Arrow-layout columns until a flush.
//!
//! Appending a row to Python lists, then converting the lists to Arrow, cost the consumer thread a tenth
//! of its time and the flusher most of its own. Here each column is a vector in Arrow's own layout
//! (values, a validity bitmap, offsets for strings), so a flush hands pyarrow the buffers as they are
//! (`materializers.stream.event_log` makes the arrays and the files).

use std::collections::{BTreeMap, HashSet};

use pyo3::exceptions::PyTypeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDateAccess, PyDateTime, PyDict, PyFloat, PyInt, PyString, PyTimeAccess, PyTuple};

use crate::decode::{days_from_civil, parse_schema, Kind};

/// Bits in Arrow's order: bit i of byte i / 8, least significant first.
#[derive(Default)]
struct Bits {
    bytes: Vec<u8>,
    len: usize,
}

impl Bits {
    fn push(&mut self, bit: bool) {
        if self.len.is_multiple_of(8) {
            self.bytes.push(0);
        }
        if bit {
            self.bytes[self.len / 8] |= 1 << (self.len % 8);
        }
        self.len += 1;
    }
}

/// One value of a row, checked against its column's type before anything of the row is appended.
pub(crate) enum ColumnValue<'py> {
    Null,
    Text(Bound<'py, PyString>),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl<'py> ColumnValue<'py> {
    /// A non-null value as a column of `kind` takes it (a timestamp: a datetime or epoch ms).
    fn of(kind: Kind, value: Bound<'py, PyAny>) -> PyResult<Option<Self>> {
        if value.is_instance_of::<PyBool>() {
            return Ok((kind == Kind::Boolean).then(|| ColumnValue::Bool(value.is_truthy().unwrap_or_default())));
        }
        Ok(match kind {
            Kind::String => match value.downcast_into::<PyString>() {
                Ok(text) => {
                    text.to_str()?; // not UTF-8 (a lone surrogate): refused here, not halfway through the row
                    Some(ColumnValue::Text(text))
                }
                Err(_) => None,
            },
            Kind::Bigint | Kind::Timestamp if value.is_instance_of::<PyInt>() => Some(ColumnValue::Int(value.extract()?)),
            Kind::Timestamp => match value.downcast::<PyDateTime>() {
                Ok(datetime) => Some(ColumnValue::Int(epoch_ms(datetime)?)),
                Err(_) => None,
            },
            Kind::Double if value.is_instance_of::<PyInt>() => Some(ColumnValue::Float(value.extract()?)),
            Kind::Double => value.downcast::<PyFloat>().ok().map(|float| ColumnValue::Float(float.value())),
            _ => None,
        })
    }
}

enum Values {
    Utf8 { offsets: Vec<i64>, data: Vec<u8> },
    Int(Vec<i64>),
    Float(Vec<f64>),
    Bool(Bits),
}

struct ColumnBuffer {
    valid: Bits,
    nulls: usize,
    values: Values,
}

impl ColumnBuffer {
    fn new(kind: Kind) -> Self {
        let values = match kind {
            Kind::String => Values::Utf8 { offsets: vec![0], data: Vec::new() },
            Kind::Bigint | Kind::Timestamp => Values::Int(Vec::new()),
            Kind::Double => Values::Float(Vec::new()),
            Kind::Boolean => Values::Bool(Bits::default()),
        };
        ColumnBuffer { valid: Bits::default(), nulls: 0, values }
    }

    fn push(&mut self, cell: &ColumnValue<'_>) {
        self.valid.push(!matches!(cell, ColumnValue::Null));
        self.nulls += matches!(cell, ColumnValue::Null) as usize;
        match (&mut self.values, cell) {
            (Values::Utf8 { offsets, data }, cell) => {
                if let ColumnValue::Text(text) = cell {
                    // `ColumnValue::of` made sure the text is UTF-8 (Python keeps the encoding it made).
                    data.extend_from_slice(text.to_str().map(str::as_bytes).unwrap_or_default());
                }
                offsets.push(data.len() as i64);
            }
            (Values::Int(values), ColumnValue::Int(int)) => values.push(*int),
            (Values::Int(values), _) => values.push(0),
            (Values::Float(values), ColumnValue::Float(float)) => values.push(*float),
            (Values::Float(values), _) => values.push(0.0),
            (Values::Bool(bits), cell) => bits.push(matches!(cell, ColumnValue::Bool(true))),
        }
    }

    /// (null count, validity bitmap, the value buffers: offsets and data for strings).
    fn buffers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let (nulls, valid) = (self.nulls, PyBytes::new(py, &self.valid.bytes));
        match &self.values {
            Values::Utf8 { offsets, data } => PyTuple::new(py, [nulls.into_pyobject(py)?.into_any(), valid.into_any(),
                                                                 PyBytes::new(py, &le_bytes(offsets)).into_any(),
                                                                 PyBytes::new(py, data).into_any()]),
            Values::Int(values) => (nulls, valid, PyBytes::new(py, &le_bytes(values))).into_pyobject(py),
            Values::Float(values) => {
                let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                (nulls, valid, PyBytes::new(py, &bytes)).into_pyobject(py)
            }
            Values::Bool(bits) => (nulls, valid, PyBytes::new(py, &bits.bytes)).into_pyobject(py),
        }
    }
}

fn le_bytes(values: &[i64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Epoch ms of a datetime: aware at its offset, naive as UTC (as pyarrow reads it into a UTC column).
fn epoch_ms(datetime: &Bound<'_, PyDateTime>) -> PyResult<i64> {
    let py = datetime.py();
    let days = days_from_civil(datetime.get_year() as i64, datetime.get_month() as i64, datetime.get_day() as i64);
    let ms = ((days * 24 + datetime.get_hour() as i64) * 60 + datetime.get_minute() as i64) * 60_000
        + datetime.get_second() as i64 * 1000 + datetime.get_microsecond() as i64 / 1000;
    let offset = datetime.call_method0(intern!(py, "utcoffset"))?;
    if offset.is_none() {
        return Ok(ms);
    }
    let seconds: f64 = offset.call_method0(intern!(py, "total_seconds"))?.extract()?;
    Ok(ms - (seconds * 1000.0).round() as i64)
}

/// One partition's buffered events: from offset `first` to `last`, the schema's columns and the offsets.
#[pyclass(frozen, module = "featurestream_native")]
pub struct PartitionLog {
    #[pyo3(get)]
    first: i64,
    #[pyo3(get)]
    last: i64,
    #[pyo3(get)]
    rows: usize,
    columns: Vec<ColumnBuffer>,
    offsets: Vec<i64>,
}

#[pymethods]
impl PartitionLog {
    /// Per schema column, (null count, validity bitmap, value buffers...), in Arrow's layout (strings with
    /// 64-bit offsets, timestamps as epoch ms).
    fn columns<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyTuple>>> {
        self.columns.iter().map(|column| column.buffers(py)).collect()
    }

    /// The events' Kafka offsets, as little-endian int64.
    fn offsets<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &le_bytes(&self.offsets))
    }
}

/// The buffers of one source's event log, per partition.
#[pyclass(module = "featurestream_native")]
pub struct LogBuffers {
    columns: Vec<(Py<PyString>, Kind)>,
    /// the event time's column: it holds the time the views applied, not the row's value
    timestamp: usize,
    partitions: BTreeMap<i64, PartitionLog>,
}

#[pymethods]
impl LogBuffers {
    #[new]
    fn new(py: Python<'_>, schema: Vec<(String, String)>, timestamp_field: &str) -> PyResult<Self> {
        let (columns, timestamp) = parse_schema(schema, timestamp_field)?;
        let columns = columns.into_iter().map(|(name, kind)| (PyString::intern(py, &name).unbind(), kind)).collect();
        Ok(LogBuffers { columns, timestamp, partitions: BTreeMap::new() })
    }

    /// Buffer one accepted event: `row` holds the schema's columns (absent or None: null), `ts_ms` its event time.
    fn append(&mut self, partition: i64, offset: i64, row: &Bound<'_, PyDict>, ts_ms: i64) -> PyResult<()> {
        let cells = self.cells(row, ts_ms)?;
        self.push(partition, offset, &cells);
        Ok(())
    }

    /// Events buffered, all partitions together.
    #[getter]
    fn pending(&self) -> usize {
        self.partitions.values().map(|log| log.rows).sum()
    }

    /// Hand over the buffers of `partitions` (all by default), by partition, to write while appends go on.
    #[pyo3(signature = (partitions = None))]
    fn take(&mut self, partitions: Option<HashSet<i64>>) -> Vec<(i64, PartitionLog)> {
        let chosen: Vec<i64> = match partitions {
            None => self.partitions.keys().copied().collect(),
            Some(wanted) => self.partitions.keys().copied().filter(|p| wanted.contains(p)).collect(),
        };
        chosen.into_iter().filter_map(|p| self.partitions.remove(&p).map(|log| (p, log))).collect()
    }

    fn discard(&mut self, partitions: HashSet<i64>) {
        self.partitions.retain(|p, _| !partitions.contains(p));
    }
}

impl LogBuffers {
    /// A row's values as its columns take them; a value of the wrong type is a TypeError, before anything is
    /// buffered.
    pub(crate) fn cells<'py>(&self, row: &Bound<'py, PyDict>, ts_ms: i64) -> PyResult<Vec<ColumnValue<'py>>> {
        let py = row.py();
        let mut cells = Vec::with_capacity(self.columns.len());
        for (at, (name, kind)) in self.columns.iter().enumerate() {
            if at == self.timestamp {
                cells.push(ColumnValue::Int(ts_ms));
                continue;
            }
            cells.push(match row.get_item(name.bind(py))?.filter(|v| !v.is_none()) {
                None => ColumnValue::Null,
                Some(value) => match ColumnValue::of(*kind, value.clone())? {
                    Some(cell) => cell,
                    None => {
                        let (name, type_name) = (name.bind(py), value.get_type().name()?);
                        return Err(PyTypeError::new_err(format!("event log column {name}: a {type_name} is not a {}", kind.name())));
                    }
                },
            });
        }
        Ok(cells)
    }

    pub(crate) fn push(&mut self, partition: i64, offset: i64, cells: &[ColumnValue<'_>]) {
        let columns = &self.columns;
        let log = self.partitions.entry(partition).or_insert_with(|| PartitionLog {
            first: offset,
            last: offset,
            rows: 0,
            columns: columns.iter().map(|(_, kind)| ColumnBuffer::new(*kind)).collect(),
            offsets: Vec::new(),
        });
        for (column, cell) in log.columns.iter_mut().zip(cells) {
            column.push(cell);
        }
        log.offsets.push(offset);
        log.last = offset;
        log.rows += 1;
    }
}
