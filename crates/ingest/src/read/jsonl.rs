//! JSON lines files: one object per line, each line parsed on its own.
//!
//! - A line that is not valid JSON, or is JSON but not an object, is `malformed_record`.
//! - Values keep their literal text: a number is stored as written (`123456789012345678901`
//!   stays exact, `1e2` stays `1e2`), so a number and the same text as a string are one value.
//!   `true`/`false` become their names; `null` means absent; a repeated key keeps its last value.
//! - A JSON object or array is `nested_value` in a contract column and its compact JSON text
//!   in a property column.
//! - A line longer than [`MAX_RECORD_BYTES`] is `record_too_large` (read on without buffering
//!   it); a value longer than the field limit, `value_too_large`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::sync::Arc;

use funnel_core::RejectReason;

use super::{Cell, Column, InputSpec, Item, ReadRejection, Record, open_text};
use crate::IngestError;
use crate::limits::{MAX_RECORD_BYTES, QUARANTINE_TEXT_BYTES, cut, cut_bytes};

pub(super) fn read(
    spec: &InputSpec,
    sink: &mut dyn FnMut(Item<'_>) -> Result<(), IngestError>,
) -> Result<(), IngestError> {
    let path = &spec.path;
    let mut reader = BufReader::with_capacity(256 * 1024, open_text(spec)?);
    let mut keys: HashMap<String, Arc<Column>> = HashMap::new();
    let mut line_keys: Vec<Arc<Column>> = Vec::new();
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    let mut row = 0u64;
    loop {
        let total = read_line(&mut reader, &mut buf, MAX_RECORD_BYTES).map_err(|e| {
            IngestError::unreadable(path, Some(line_no + 1), format!("read failed: {e}"))
        })?;
        let Some(total) = total else { break };
        line_no += 1;
        if total > MAX_RECORD_BYTES {
            row += 1;
            sink(Item::Rejected(ReadRejection {
                line: Some(line_no),
                row,
                reason: RejectReason::RecordTooLarge,
                field: None,
                value: None,
                message: format!("line of {total} bytes, over the limit of {MAX_RECORD_BYTES}"),
                raw: cut_bytes(&buf, total, QUARANTINE_TEXT_BYTES),
            }))?;
            continue;
        }
        let mut bytes = &buf[..];
        if line_no == 1 {
            bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
        }
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        row += 1;
        sink(line_item(bytes, line_no, row, &mut keys, &mut line_keys))?;
    }
    Ok(())
}

/// One line that is not blank, as a record or a rejection. `keys` interns the member names;
/// `line_keys` holds the columns of this line's members, which the record borrows.
fn line_item<'a>(
    bytes: &'a [u8],
    line: u64,
    row: u64,
    keys: &mut HashMap<String, Arc<Column>>,
    line_keys: &'a mut Vec<Arc<Column>>,
) -> Item<'a> {
    let reject = |reason, field: Option<&str>, value: Option<String>, message| {
        Item::Rejected(ReadRejection {
            line: Some(line),
            row,
            reason,
            field: field.map(str::to_string),
            value,
            message,
            raw: cut_bytes(bytes, bytes.len(), QUARANTINE_TEXT_BYTES),
        })
    };
    let malformed = |message| reject(RejectReason::MalformedRecord, None, None, message);
    let Ok(text) = std::str::from_utf8(bytes) else {
        return malformed("line is not valid UTF-8".to_string());
    };
    if let Err(check) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
        // The message as a full parse words it ("EOF while parsing a value", not "... an
        // object"), so the quarantine says what it said before the syntax-only check.
        let e = serde_json::from_str::<serde_json::Value>(text)
            .err()
            .unwrap_or(check);
        return malformed(format!("invalid JSON: {e}"));
    }
    let members = match members(text) {
        Ok(Some(m)) => m,
        Ok(None) => return malformed("line is JSON but not an object".to_string()),
        // A string the syntax check passes but that does not decode (a lone surrogate).
        Err(e) => return malformed(format!("invalid JSON: {e}")),
    };
    // The members left after repeated keys (the last value counts, null included), each with
    // its column.
    line_keys.clear();
    let mut kept: Vec<Option<Cow<'a, str>>> = Vec::with_capacity(members.len());
    // The first object or array in a contract column, even under a key repeated later.
    let mut nested = None;
    for (key, value, decoded) in members {
        let col = match keys.get(key.as_ref()) {
            Some(a) => a.clone(),
            None => {
                let a = Arc::new(Column::new(&key));
                keys.insert(key.into_owned(), a.clone());
                a
            }
        };
        if let Some(at) = line_keys.iter().position(|k| Arc::ptr_eq(k, &col)) {
            line_keys.remove(at);
            kept.remove(at);
        }
        if matches!(value.as_bytes()[0], b'{' | b'[') && col.is_contract() {
            nested.get_or_insert((col.name.clone(), value));
        }
        line_keys.push(col);
        kept.push(decoded);
    }
    if let Some((key, value)) = nested {
        let message = format!("{key} holds a JSON object or array, not a single value");
        let value = Some(cut(value, QUARANTINE_TEXT_BYTES));
        return reject(RejectReason::NestedValue, Some(&key), value, message);
    }
    let cells = line_keys
        .iter()
        .zip(kept)
        // null: absent
        .filter_map(|(col, decoded)| Some((col.as_ref(), Cell::Str(decoded?))))
        .collect();
    Record {
        line: Some(line),
        row,
        cells,
        line_text: Some(text),
        csv: false,
    }
    .check_sizes()
}

/// Reads one line (without its `\n` or `\r\n`) into `buf`, keeping at most `max + 1` bytes of
/// it; returns the line's whole length, or `None` at the end of the input.
fn read_line(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<usize>> {
    buf.clear();
    let mut total = 0usize;
    let mut any = false;
    loop {
        let chunk = match reader.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            break;
        }
        any = true;
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(p) => (p, true),
            None => (chunk.len(), false),
        };
        let room = (max + 1).saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..take.min(room)]);
        total += take;
        reader.consume(take + usize::from(done));
        if done {
            break;
        }
    }
    if !any {
        return Ok(None);
    }
    if buf.len() == total && buf.last() == Some(&b'\r') {
        buf.pop();
        total -= 1;
    }
    Ok(Some(total))
}

/// The members of a JSON object as (key, the value's JSON text, the value as cell text: a
/// string decoded, an object or array as compact JSON, a number or boolean as written, `None`
/// for null); `Ok(None)` if `text` (valid JSON syntax) is not an object, an error if a string
/// does not decode (a lone surrogate escape passes the syntax check).
type Member<'a> = (Cow<'a, str>, &'a str, Option<Cow<'a, str>>);

/// The text of a JSON string literal (valid JSON): its inside when it holds no escape, else
/// decoded.
fn string(literal: &str) -> Result<Cow<'_, str>, serde_json::Error> {
    let inside = &literal[1..literal.len() - 1];
    if inside.contains('\\') {
        serde_json::from_str::<String>(literal).map(Cow::Owned)
    } else {
        Ok(Cow::Borrowed(inside))
    }
}

fn members(text: &str) -> Result<Option<Vec<Member<'_>>>, serde_json::Error> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return Ok(None);
    }
    i = skip_ws(b, i + 1);
    let mut out = Vec::new();
    if b.get(i) == Some(&b'}') {
        return Ok(Some(out));
    }
    loop {
        let key_end = value_end(b, i);
        let key = string(&text[i..key_end])?;
        i = skip_ws(b, key_end);
        debug_assert_eq!(b[i], b':');
        i = skip_ws(b, i + 1);
        let end = value_end(b, i);
        let value = &text[i..end];
        let decoded = match b[i] {
            b'n' => None,
            b'"' => Some(string(value)?),
            b'{' | b'[' => Some(Cow::Owned(
                serde_json::from_str::<serde_json::Value>(value)?.to_string(),
            )),
            _ => Some(Cow::Borrowed(value)),
        };
        out.push((key, value, decoded));
        i = skip_ws(b, end);
        if b[i] == b'}' {
            return Ok(Some(out));
        }
        debug_assert_eq!(b[i], b',');
        i = skip_ws(b, i + 1);
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// End of the JSON value starting at `i` in valid JSON.
fn value_end(b: &[u8], i: usize) -> usize {
    match b[i] {
        b'"' => {
            let mut j = i + 1;
            while b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            j + 1
        }
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match b[j] {
                    b'"' => {
                        j = value_end(b, j);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return j + 1;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                j += 1;
            }
            j
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_keep_literal_values() {
        let t = r#" { "a" : 123456789012345678901, "b\"c":"x\"y" ,"n":null,"o":{"k":[1,"]"]},"e":1e2,"t":true} "#;
        let got: Vec<(String, &str, Option<String>)> = members(t)
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|(k, v, d)| (k.into_owned(), v, d.map(Cow::into_owned)))
            .collect();
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            got,
            [
                (
                    "a".to_string(),
                    "123456789012345678901",
                    s("123456789012345678901")
                ),
                ("b\"c".to_string(), r#""x\"y""#, s("x\"y")),
                ("n".to_string(), "null", None),
                ("o".to_string(), r#"{"k":[1,"]"]}"#, s(r#"{"k":[1,"]"]}"#)),
                ("e".to_string(), "1e2", s("1e2")),
                ("t".to_string(), "true", s("true")),
            ]
        );
        assert!(members("{}").unwrap().unwrap().is_empty());
        assert!(members("[1]").unwrap().is_none());
        assert!(members("3").unwrap().is_none());
        // A lone surrogate passes the syntax check but does not decode.
        let lone = r#"{"a":"\ud800"}"#;
        assert!(serde_json::from_str::<serde::de::IgnoredAny>(lone).is_ok());
        assert!(members(lone).is_err());
    }

    #[test]
    fn long_lines_are_measured_not_kept() {
        let mut text = vec![b'x'; 100];
        text.extend(b"\r\nab\n\nlast");
        let mut r = std::io::BufReader::with_capacity(7, &text[..]);
        let mut buf = Vec::new();
        assert_eq!(read_line(&mut r, &mut buf, 10).unwrap(), Some(101));
        assert_eq!(buf.len(), 11);
        assert_eq!(read_line(&mut r, &mut buf, 10).unwrap(), Some(2));
        assert_eq!(buf, b"ab");
        assert_eq!(read_line(&mut r, &mut buf, 10).unwrap(), Some(0));
        assert_eq!(read_line(&mut r, &mut buf, 10).unwrap(), Some(4));
        assert_eq!(read_line(&mut r, &mut buf, 10).unwrap(), None);
    }
}
