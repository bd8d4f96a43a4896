//! Commands in Redis's wire protocol (RESP), packed into one buffer for the socket.
//!
//! redis-py packs through hiredis, which allocates per argument and formats lengths with `sprintf`: a sixth
//! of the stream writer's own time went there. Here a whole chunk of commands is written into one vector.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyFloat, PyInt, PyString, PyTuple};

/// The decimal digits of `number`, at the end of a stack buffer: (buffer, where they start).
fn digits(number: u64) -> ([u8; 20], usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = number;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            return (digits, at);
        }
    }
}

fn decimal(out: &mut Vec<u8>, number: usize) {
    let (digits, at) = digits(number as u64);
    out.extend_from_slice(&digits[at..]);
}

fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'$');
    decimal(out, bytes.len());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// One argument as redis-py's encoder writes it: bytes as they are, str in UTF-8, numbers in decimal.
fn argument(out: &mut Vec<u8>, arg: &Bound<'_, PyAny>) -> PyResult<()> {
    if let Ok(bytes) = arg.downcast::<PyBytes>() {
        bulk(out, bytes.as_bytes());
    } else if let Ok(text) = arg.downcast::<PyString>() {
        bulk(out, text.to_str()?.as_bytes());
    } else if arg.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err("Invalid input of type: 'bool'. Convert to a bytes, string, int or float first."));
    } else if let Ok(int) = arg.downcast::<PyInt>() {
        match int.extract::<i64>() {
            Ok(number) => {
                let (mut digits, mut at) = digits(number.unsigned_abs());
                if number < 0 {
                    at -= 1;
                    digits[at] = b'-';
                }
                bulk(out, &digits[at..]);
            }
            Err(_) => bulk(out, int.str()?.to_str()?.as_bytes()),
        }
    } else if arg.is_instance_of::<PyFloat>() {
        bulk(out, arg.repr()?.to_str()?.as_bytes());
    } else {
        let kind = arg.get_type().name()?;
        return Err(PyTypeError::new_err(format!(
            "Invalid input of type: '{kind}'. Convert to a bytes, string, int or float first."
        )));
    }
    Ok(())
}

/// The RESP of `commands`, each a tuple of its words, back to back.
#[pyfunction]
pub fn pack_commands<'py>(py: Python<'py>, commands: Vec<Bound<'py, PyTuple>>) -> PyResult<Bound<'py, PyBytes>> {
    let mut out = Vec::with_capacity(commands.iter().map(|c| c.len() * 24).sum());
    for command in &commands {
        out.push(b'*');
        decimal(&mut out, command.len());
        out.extend_from_slice(b"\r\n");
        for arg in command.iter() {
            argument(&mut out, &arg)?;
        }
    }
    Ok(PyBytes::new(py, &out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_written_in_decimal() {
        for number in [0, 7, 10, 99, 1234, usize::MAX] {
            let mut out = Vec::new();
            decimal(&mut out, number);
            assert_eq!(String::from_utf8(out).unwrap(), number.to_string());
        }
    }
}
