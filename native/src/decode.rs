//! A Kafka record's JSON into the typed row the udf and the views read, or the reason it is dead-lettered.
//!
//! A record is parsed once, with its values borrowed from its bytes, then checked column by column
//! against the KafkaSource schema: only then are the row's Python objects made. The event time comes out
//! in epoch milliseconds, computed from the text itself, and the row holds it as an aware UTC datetime
//! truncated to the millisecond, as the event log keeps it.

use std::borrow::Cow;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{timezone_utc, PyBool, PyDateTime, PyDict, PyFloat, PyString};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

// Dead-letter reasons: the `reason` header and the metric label.
pub const UNDECODABLE: &str = "undecodable";
pub const MISSING_KEY: &str = "missing_key";
pub const MISSING_TIMESTAMP: &str = "missing_timestamp";
pub const WRONG_TYPE: &str = "wrong_type";
pub const BAD_TIMESTAMP: &str = "bad_timestamp";

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    String,
    Bigint,
    Double,
    Boolean,
    Timestamp,
}

impl Kind {
    pub(crate) fn parse(kind: &str) -> Option<Kind> {
        Some(match kind {
            "string" => Kind::String,
            "bigint" => Kind::Bigint,
            "double" => Kind::Double,
            "boolean" => Kind::Boolean,
            "timestamp" => Kind::Timestamp,
            _ => return None,
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::String => "string",
            Kind::Bigint => "bigint",
            Kind::Double => "double",
            Kind::Boolean => "boolean",
            Kind::Timestamp => "timestamp",
        }
    }
}

/// One JSON value as parsed, before the schema judges it; strings stay borrowed unless they had escapes.
enum Scalar<'de> {
    Null,
    Bool(bool),
    Int(i64),
    /// past i64::MAX
    UInt(u64),
    Float(f64),
    Str(Cow<'de, str>),
    Nested,
}

impl Scalar<'_> {
    fn integer(&self) -> Option<i64> {
        match self {
            Scalar::Int(i) => Some(*i),
            _ => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Scalar::Null => "null".into(),
            Scalar::Bool(b) => format!("the boolean {b}"),
            Scalar::Int(i) => format!("the integer {i}"),
            Scalar::UInt(u) => format!("the integer {u}"),
            Scalar::Float(f) => format!("the number {f}"),
            Scalar::Str(s) => format!("the string {s:?}"),
            Scalar::Nested => "an array or object".into(),
        }
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Bool(b))
    }
    fn visit_i64<E>(self, i: i64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Int(i))
    }
    fn visit_u64<E>(self, u: u64) -> Result<Scalar<'de>, E> {
        // JSON does not tell signed from unsigned: serde_json gives every non-negative integer here.
        Ok(i64::try_from(u).map_or(Scalar::UInt(u), Scalar::Int))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Float(f))
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Owned(s.to_owned())))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Nested)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Nested)
    }
}

impl<'de> serde::Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// A key of the record's object: the schema column it names, if any.
struct KeySeed<'a>(&'a [Column]);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<usize>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|c| c.name == key))
    }
}

/// The record's object: per schema column, its value if the record has the key (the last one wins).
struct RecordSeed<'a>(&'a [Column]);

impl<'de> DeserializeSeed<'de> for RecordSeed<'_> {
    type Value = Vec<Option<Scalar<'de>>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RecordSeed<'_> {
    type Value = Vec<Option<Scalar<'de>>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut values: Vec<Option<Scalar<'de>>> = self.0.iter().map(|_| None).collect();
        while let Some(key) = map.next_key_seed(KeySeed(self.0))? {
            match key {
                Some(at) => values[at] = Some(map.next_value()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(values)
    }
}

/// A KafkaSource schema's columns, typed, and where its event time is (a timestamp, or a bigint of epoch ms):
/// what the decoder and the event log both read it as.
pub(crate) fn parse_schema(schema: Vec<(String, String)>, timestamp_field: &str) -> PyResult<(Vec<(String, Kind)>, usize)> {
    let mut columns = Vec::with_capacity(schema.len());
    for (name, kind) in schema {
        let Some(parsed) = Kind::parse(&kind) else {
            return Err(PyValueError::new_err(format!("column {name}: unknown type '{kind}'")));
        };
        columns.push((name, parsed));
    }
    let Some(timestamp) = columns.iter().position(|(name, _)| name == timestamp_field) else {
        return Err(PyValueError::new_err(format!("the schema has no column {timestamp_field} for the event time")));
    };
    let kind = columns[timestamp].1;
    if kind != Kind::Timestamp && kind != Kind::Bigint {
        return Err(PyValueError::new_err(format!(
            "the event time column {timestamp_field} is a {}: it must be a timestamp, or a bigint of epoch milliseconds",
            kind.name()
        )));
    }
    Ok((columns, timestamp))
}

struct Column {
    name: String,
    py_name: Py<PyString>,
    kind: Kind,
    required: bool,
}

/// Decodes and validates JSON records against a KafkaSource schema (column -> string, bigint, double,
/// boolean or timestamp); `decode` gives (row, event time in ms) or raises `rejected(reason, detail)`.
#[pyclass(frozen, subclass, module = "featurestream_native")]
pub struct RowDecoder {
    columns: Vec<Column>,
    timestamp: usize,
    rejected: PyObject,
    /// Plausible event times: from `min_ms`, to `max_ms` for epoch numbers, and at most `max_future_ms`
    /// past the wall clock.
    min_ms: i64,
    max_ms: i64,
    max_future_ms: i64,
}

#[pymethods]
impl RowDecoder {
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(py: Python<'_>, schema: Vec<(String, String)>, timestamp_field: &str, required_keys: Vec<String>,
           rejected: PyObject, min_ms: i64, max_ms: i64, max_future_ms: i64) -> PyResult<Self> {
        let (parsed, timestamp) = parse_schema(schema, timestamp_field)?;
        let columns: Vec<Column> = parsed
            .into_iter()
            .map(|(name, kind)| {
                let required = required_keys.contains(&name);
                Column { py_name: PyString::intern(py, &name).unbind(), name, kind, required }
            })
            .collect();
        if let Some(key) = required_keys.iter().find(|k| !columns.iter().any(|c| &c.name == *k)) {
            return Err(PyValueError::new_err(format!("the schema has no column for the key {key}")));
        }
        Ok(RowDecoder { columns, timestamp, rejected, min_ms, max_ms, max_future_ms })
    }

    /// The row (every schema column, absent ones None) and its event time in ms. `now_ms`, the wall clock
    /// that bounds plausible event times, is read once per micro-batch by the caller (None: read here).
    /// The event time is judged first: a record whose event time is missing or bad is dead-lettered for
    /// that, whatever else is wrong with it.
    #[pyo3(signature = (value, now_ms = None))]
    fn decode<'py>(&self, py: Python<'py>, value: Option<&[u8]>, now_ms: Option<i64>) -> PyResult<(Bound<'py, PyDict>, i64)> {
        match self.row(py, value, now_ms) {
            Ok(row) => Ok(row),
            Err(Reject::Record(reason, detail)) => Err(PyErr::from_value(self.rejected.bind(py).call1((reason, detail))?)),
            Err(Reject::Python(err)) => Err(err),
        }
    }
}

pub(crate) enum Reject {
    Record(&'static str, String),
    Python(PyErr),
}

impl From<PyErr> for Reject {
    fn from(err: PyErr) -> Self {
        Reject::Python(err)
    }
}

impl RowDecoder {
    pub(crate) fn row<'py>(&self, py: Python<'py>, value: Option<&[u8]>, now_ms: Option<i64>) -> Result<(Bound<'py, PyDict>, i64), Reject> {
        let bytes = value.filter(|v| !v.is_empty()).ok_or(Reject::Record(UNDECODABLE, "empty message".into()))?;
        let mut parser = serde_json::Deserializer::from_slice(bytes);
        let values = RecordSeed(&self.columns)
            .deserialize(&mut parser)
            .and_then(|values| parser.end().map(|_| values))
            .map_err(|err| Reject::Record(UNDECODABLE, format!("not a JSON object: {err}")))?;
        let ts_ms = self.event_time(&values[self.timestamp], now_ms)?;
        let row = PyDict::new(py);
        for (at, (column, value)) in self.columns.iter().zip(&values).enumerate() {
            let object = match value {
                Some(_) if at == self.timestamp => datetime(py, ts_ms)?.into_any(),
                None | Some(Scalar::Null) if column.required => return Err(absent(MISSING_KEY, column, value)),
                None | Some(Scalar::Null) => py.None().into_bound(py),
                Some(scalar) => typed(py, column, scalar)?,
            };
            row.set_item(column.py_name.bind(py), object)?;
        }
        Ok((row, ts_ms))
    }

    fn event_time(&self, value: &Option<Scalar>, now_ms: Option<i64>) -> Result<i64, Reject> {
        let column = &self.columns[self.timestamp];
        let bad = |detail: String| Reject::Record(BAD_TIMESTAMP, detail);
        let ts_ms = match value {
            None | Some(Scalar::Null) => return Err(absent(MISSING_TIMESTAMP, column, value)),
            Some(Scalar::Str(text)) if column.kind == Kind::Timestamp => parse_iso_ms(text)
                .ok_or_else(|| bad(format!("`{}`: {text:?} is not an ISO 8601 date and time", column.name)))?,
            Some(Scalar::Int(ms)) if (self.min_ms..=self.max_ms).contains(ms) => *ms,
            Some(number @ (Scalar::Int(_) | Scalar::UInt(_))) => {
                return Err(bad(format!("`{}`: {} is not plausible epoch milliseconds", column.name, number.describe())));
            }
            Some(other) => {
                let expected = if column.kind == Kind::Timestamp { "an ISO 8601 string or epoch milliseconds" } else { "epoch milliseconds" };
                return Err(bad(format!("`{}`: expected {expected}, got {}", column.name, other.describe())))
            }
        };
        let now_ms = now_ms.unwrap_or_else(wall_clock_ms);
        if ts_ms < self.min_ms || ts_ms > now_ms.saturating_add(self.max_future_ms) {
            return Err(bad(format!("`{}`: {} is implausible", column.name, iso(ts_ms))));
        }
        Ok(ts_ms)
    }
}

/// A required column with no value (`value` None: no key at all).
fn absent(reason: &'static str, column: &Column, value: &Option<Scalar>) -> Reject {
    let what = if value.is_none() { "missing" } else { "null" };
    Reject::Record(reason, format!("required field `{}` is {what}", column.name))
}

/// A non-null value of a column other than the event time as its Python object, if its JSON type fits the
/// column's (a timestamp: an ISO 8601 string or epoch milliseconds).
fn typed<'py>(py: Python<'py>, column: &Column, value: &Scalar) -> Result<Bound<'py, PyAny>, Reject> {
    Ok(match (column.kind, value) {
        (Kind::String, Scalar::Str(s)) => PyString::new(py, s).into_any(),
        (Kind::Bigint, Scalar::Int(i)) => i.into_pyobject(py).map_err(PyErr::from)?.into_any(),
        (Kind::Double, Scalar::Float(f)) => PyFloat::new(py, *f).into_any(),
        (Kind::Double, Scalar::Int(i)) => PyFloat::new(py, *i as f64).into_any(),
        (Kind::Double, Scalar::UInt(u)) => PyFloat::new(py, *u as f64).into_any(),
        (Kind::Boolean, Scalar::Bool(b)) => PyBool::new(py, *b).to_owned().into_any(),
        (Kind::Timestamp, Scalar::Str(_) | Scalar::Int(_)) => {
            let ms = match value {
                Scalar::Str(s) => parse_iso_ms(s),
                _ => value.integer(),
            };
            match ms.filter(|ms| in_datetime_range(*ms)) {
                Some(ms) => datetime(py, ms)?.into_any(),
                None => return Err(wrong_type(column, value)),
            }
        }
        _ => return Err(wrong_type(column, value)),
    })
}

fn wrong_type(column: &Column, value: &Scalar) -> Reject {
    // bigint is 64-bit, as in Feast and DuckDB: a wider value could not be stored.
    let range = if column.kind == Kind::Bigint && matches!(value, Scalar::UInt(_) | Scalar::Float(_)) {
        " (a bigint is a 64-bit integer)"
    } else {
        ""
    };
    Reject::Record(WRONG_TYPE, format!("`{}`: expected a {}{range}, got {}", column.name, column.kind.name(),
                                       value.describe()))
}

/// Whether a datetime can hold the time: years 1 to 9999.
fn in_datetime_range(ms: i64) -> bool {
    (-62_135_596_800_000..253_402_300_800_000).contains(&ms)
}

fn wall_clock_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
pub(crate) fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day number from 1970-01-01: (year, month, day).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    (year_of_era + era * 400 + (month <= 2) as i64, month, day)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

const DAY_MS: i64 = 86_400_000;

/// Epoch milliseconds of an ISO 8601 date and time: `YYYY-MM-DD`, `T` (or `t` or a space),
/// `HH:MM[:SS[.fraction]]` (`.` or `,`), then `Z` (or `z`), `±HH:MM`, `±HHMM`, `±HH` or nothing (UTC).
/// Digits past the millisecond are dropped.
fn parse_iso_ms(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let number = |at: usize, width: usize| -> Option<i64> {
        let digits = b.get(at..at + width)?;
        digits.iter().try_fold(0i64, |n, &d| d.is_ascii_digit().then(|| n * 10 + (d - b'0') as i64))
    };
    let (year, month, day) = (number(0, 4)?, number(5, 2)?, number(8, 2)?);
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') || !matches!(b.get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    let (hour, minute) = (number(11, 2)?, number(14, 2)?);
    if b.get(13) != Some(&b':') {
        return None;
    }
    let mut at = 16;
    let mut second = 0;
    let mut millis = 0;
    if b.get(at) == Some(&b':') {
        second = number(at + 1, 2)?;
        at += 3;
        if matches!(b.get(at), Some(b'.' | b',')) {
            let digits = b[at + 1..].iter().take_while(|d| d.is_ascii_digit()).count();
            if digits == 0 {
                return None;
            }
            for place in 0..3 {
                millis = millis * 10 + if place < digits { (b[at + 1 + place] - b'0') as i64 } else { 0 };
            }
            at += 1 + digits;
        }
    }
    let offset_minutes = match b.get(at) {
        None => 0,
        Some(b'Z' | b'z') if at + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) => {
            let hours = number(at + 1, 2)?;
            let minutes = match b.len() - at {
                3 => 0,
                5 => number(at + 3, 2)?,
                6 if b[at + 3] == b':' => number(at + 4, 2)?,
                _ => return None,
            };
            if hours > 23 || minutes > 59 {
                return None;
            }
            (hours * 60 + minutes) * if sign == b'-' { -1 } else { 1 }
        }
        _ => return None,
    };
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    Some(days_from_civil(year, month, day) * DAY_MS + ((hour * 60 + minute - offset_minutes) * 60 + second) * 1000 + millis)
}

fn iso(ts_ms: i64) -> String {
    let (year, month, day) = civil_from_days(ts_ms.div_euclid(DAY_MS));
    let ms = ts_ms.rem_euclid(DAY_MS);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000)
}

/// The aware UTC datetime of an event time (one already checked plausible, so within datetime's years).
fn datetime(py: Python<'_>, ts_ms: i64) -> PyResult<Bound<'_, PyDateTime>> {
    let (year, month, day) = civil_from_days(ts_ms.div_euclid(DAY_MS));
    let ms = ts_ms.rem_euclid(DAY_MS);
    PyDateTime::new(py, year as i32, month as u8, day as u8, (ms / 3_600_000) as u8, (ms / 60_000 % 60) as u8,
                    (ms / 1000 % 60) as u8, (ms % 1000 * 1000) as u32, Some(&timezone_utc(py)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_through_day_numbers() {
        for days in [-719_468, -1, 0, 59, 365, 10_957, 11_016, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn iso_texts_give_epoch_milliseconds() {
        assert_eq!(parse_iso_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_iso_ms("2026-11-26T10:00:00.123Z"), Some(1_795_687_200_123));
        assert_eq!(parse_iso_ms("2026-11-26T12:00:00.1239+02:00"), Some(1_795_687_200_123));
        assert_eq!(parse_iso_ms("2026-11-26 09:30-0030"), Some(1_795_687_200_000));
        assert_eq!(parse_iso_ms("2026-11-26t10:00:00.5"), Some(1_795_687_200_500));
        for bad in ["2026-02-29T00:00:00Z", "2026-11-26T24:00:00Z", "2026-11-26T10:00:00.Z", "2026-11-26",
                    "2026-11-26T10:00:00Zjunk", "2026-11-26T10:00:00+2", "yesterday", "2026-1-26T10:00:00Z"] {
            assert_eq!(parse_iso_ms(bad), None, "{bad}");
        }
        assert_eq!(iso(1_795_687_200_123), "2026-11-26T10:00:00.123Z");
    }
}
