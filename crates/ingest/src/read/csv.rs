//! CSV (RFC 4180) files, with a tokenizer of our own so that one malformed record is
//! quarantined on its own and never swallows the rows after it.
//!
//! - Fields are separated by `,`, records end at `\n`, `\r\n` or `\r`; empty lines are skipped.
//! - A field that starts with `"` is quoted: it runs to the next `"` not doubled, may hold
//!   commas and line ends, and must be followed by `,`, a line end or the end of the file. A `"`
//!   inside an unquoted field is kept as it is.
//! - A record that breaks these rules (a closing quote followed by other text, a quote never
//!   closed), or that has another number of fields than the header, is rejected as
//!   `malformed_record` with its first physical line as raw text, and reading resumes on the
//!   next line: a stray quote costs its own line, never the rest of the file.
//! - A record longer than [`MAX_RECORD_BYTES`] is rejected as `record_too_large` (only the
//!   first [`QUARANTINE_TEXT_BYTES`] are kept); a field longer than the field limit, as
//!   `value_too_large`. Memory stays bounded by the record limit whatever the file holds.
//! - The header is the first record: a malformed, oversized or not-an-export header, or one that
//!   names a column twice, makes the file unreadable.

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::Read;
use std::sync::Arc;

use funnel_core::{RejectReason, schema};

use super::{Cell, Column, InputSpec, Item, ReadRejection, Record, open_text};
use crate::IngestError;
use crate::limits::{MAX_RECORD_BYTES, MESSAGE_VALUE_BYTES, QUARANTINE_TEXT_BYTES, cut, cut_bytes};

const REQUIRED: [&str; 4] = [
    schema::EVENT_ID,
    schema::USER_ID,
    schema::EVENT_TYPE,
    schema::TS,
];

/// Bytes read from the input at a time.
const CHUNK: usize = 256 * 1024;

/// Why a record is malformed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fault {
    /// A closing quote followed by this byte instead of a separator or line end.
    TextAfterQuote(u8),
    /// End of the file (or of the record limit) inside a quoted field.
    Unterminated,
    /// Fields found, fields expected.
    FieldCount(usize, usize),
    /// A record over [`MAX_RECORD_BYTES`] on one line; its length in bytes.
    TooLarge(usize),
}

impl Fault {
    fn message(&self) -> String {
        match self {
            Fault::TextAfterQuote(b) => format!(
                "a closing quote is followed by {:?} instead of a comma or a line end",
                char::from(*b)
            ),
            Fault::Unterminated => {
                "a quoted field is never closed; reading resumed on the next line".into()
            }
            Fault::FieldCount(found, expected) => {
                format!("{found} fields where the header has {expected}")
            }
            Fault::TooLarge(n) => {
                format!("record of {n} bytes, over the limit of {MAX_RECORD_BYTES}")
            }
        }
    }
}

/// What [`Tokenizer::next`] found.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// A record: its fields are in [`Tokenizer::field`], it starts on `line`.
    Record {
        line: u64,
    },
    /// A malformed record starting on `line`: `raw` is its first line (or what is kept of an
    /// oversized one); reading goes on after that line.
    Bad {
        line: u64,
        fault: Fault,
        raw: String,
    },
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    FieldStart,
    Unquoted,
    Quoted,
    /// A `"` seen inside a quoted field: a doubled quote or the field's end.
    QuoteInQuoted,
}

/// Splits CSV text into records, keeping in memory only the record being read.
struct Tokenizer<R> {
    input: R,
    /// Unconsumed input; the record being read starts at `start`.
    buf: Vec<u8>,
    start: usize,
    eof: bool,
    /// Physical line of `buf[start]`.
    line: u64,
    /// Fields expected per record (`None` while reading the header).
    expected: Option<usize>,
    /// The current record's fields, concatenated, and their ends.
    fields: Vec<u8>,
    ends: Vec<usize>,
}

impl<R: Read> Tokenizer<R> {
    fn new(input: R) -> Self {
        Tokenizer {
            input,
            buf: Vec::with_capacity(CHUNK),
            start: 0,
            eof: false,
            line: 1,
            expected: None,
            fields: Vec::new(),
            ends: Vec::new(),
        }
    }

    fn field(&self, i: usize) -> &[u8] {
        let from = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.fields[from..self.ends[i]]
    }

    fn field_count(&self) -> usize {
        self.ends.len()
    }

    /// Reads more input after `buf`'s end, dropping what lies before `start`. False at the end.
    fn fill(&mut self) -> std::io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + CHUNK, 0);
        let n = loop {
            match self.input.read(&mut self.buf[old..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(e);
                }
            }
        };
        self.buf.truncate(old + n);
        self.eof = n == 0;
        Ok(n > 0)
    }

    /// The next record (see [`Next`]).
    fn next(&mut self) -> std::io::Result<Next> {
        'record: loop {
            self.fields.clear();
            self.ends.clear();
            let mut state = State::FieldStart;
            // Offset (from `start`) of the end of the record's first line, once seen.
            let mut first_line_end: Option<usize> = None;
            let mut newlines = 0u64;
            let mut i = self.start;
            loop {
                if i == self.buf.len() {
                    let at = i - self.start;
                    if !self.fill()? {
                        // End of input.
                        return Ok(match state {
                            State::Quoted => self.bad(first_line_end, at, Fault::Unterminated)?,
                            _ if at == 0 => Next::End,
                            _ => {
                                self.ends.push(self.fields.len());
                                let line = self.line;
                                self.start = self.buf.len();
                                self.line += newlines;
                                self.check_count(line, first_line_end, at)?
                            }
                        });
                    }
                    i = self.start + at;
                }
                if i - self.start > MAX_RECORD_BYTES {
                    let at = i - self.start;
                    if self.expected.is_none() {
                        // A header that long: the file is not read on.
                        let raw = String::new();
                        let (line, fault) = (self.line, Fault::TooLarge(at));
                        return Ok(Next::Bad { line, fault, raw });
                    }
                    return match first_line_end {
                        // A quoted field running over lines: a quote that never closed.
                        Some(_) => self.bad(first_line_end, at, Fault::Unterminated),
                        None => self.skip_long_line(),
                    };
                }
                let b = self.buf[i];
                match state {
                    State::FieldStart | State::Unquoted => match b {
                        b',' => {
                            self.ends.push(self.fields.len());
                            state = State::FieldStart;
                        }
                        b'\n' | b'\r' => {
                            let at = i - self.start;
                            let mut term = 1;
                            if b == b'\r' {
                                if i + 1 == self.buf.len() {
                                    self.fill()?;
                                    i = self.start + at;
                                }
                                if self.buf.get(i + 1) == Some(&b'\n') {
                                    term = 2;
                                }
                            }
                            let has_nl = b == b'\n' || term == 2;
                            if at == 0 {
                                // An empty line: skipped.
                                self.start += term;
                                self.line += u64::from(has_nl);
                                continue 'record;
                            }
                            self.ends.push(self.fields.len());
                            let line = self.line;
                            let first = first_line_end.unwrap_or(at);
                            self.start += at + term;
                            self.line += newlines + u64::from(has_nl);
                            return self.check_count(line, Some(first), at);
                        }
                        b'"' if state == State::FieldStart => state = State::Quoted,
                        _ => {
                            // The run of ordinary bytes up to the next separator or line end,
                            // kept whole (never past the record limit, checked above).
                            let n =
                                self.run_len(i, |rest| memchr::memchr3(b',', b'\n', b'\r', rest));
                            self.fields.extend_from_slice(&self.buf[i..i + n]);
                            state = State::Unquoted;
                            i += n;
                            continue;
                        }
                    },
                    State::Quoted => match b {
                        b'"' => state = State::QuoteInQuoted,
                        b'\n' => {
                            newlines += 1;
                            first_line_end.get_or_insert(i - self.start);
                            self.fields.push(b);
                        }
                        _ => {
                            let n = self.run_len(i, |rest| memchr::memchr2(b'"', b'\n', rest));
                            self.fields.extend_from_slice(&self.buf[i..i + n]);
                            i += n;
                            continue;
                        }
                    },
                    State::QuoteInQuoted => match b {
                        b'"' => {
                            self.fields.push(b'"');
                            state = State::Quoted;
                        }
                        b',' | b'\n' | b'\r' => {
                            state = State::Unquoted;
                            continue; // the separator or line end, handled as unquoted
                        }
                        other => {
                            let at = i - self.start;
                            return self.bad(first_line_end, at, Fault::TextAfterQuote(other));
                        }
                    },
                }
                i += 1;
            }
        }
    }

    /// Length of the run of bytes from `i` (at least 1) before the first byte `find` finds, or
    /// to the end of the buffer, cut so that the record stays within [`MAX_RECORD_BYTES`] + 1
    /// bytes: stepping over it is the same as reading it byte by byte.
    fn run_len(&self, i: usize, find: impl Fn(&[u8]) -> Option<usize>) -> usize {
        let limit = MAX_RECORD_BYTES + 1 - (i - self.start);
        let rest = &self.buf[i..self.buf.len().min(i + limit)];
        find(rest).unwrap_or(rest.len()).max(1)
    }

    /// A record of the expected field count, or [`Fault::FieldCount`]. The record (`len`
    /// bytes, starting on `line`) is consumed already: on one line it is the raw text; over
    /// several lines, reading steps back and resumes after its first line.
    fn check_count(
        &mut self,
        line: u64,
        first_line_end: Option<usize>,
        len: usize,
    ) -> std::io::Result<Next> {
        let found = self.ends.len();
        let expected = match self.expected {
            Some(expected) if expected != found => expected,
            _ => return Ok(Next::Record { line }),
        };
        let fault = Fault::FieldCount(found, expected);
        let before = &self.buf[..self.start];
        let term = if before.ends_with(b"\r\n") {
            2
        } else {
            usize::from(before.ends_with(b"\n") || before.ends_with(b"\r"))
        };
        let record_start = self.start - term - len;
        match first_line_end.filter(|&f| f < len) {
            None => {
                let raw = &self.buf[record_start..record_start + len];
                let raw = cut_bytes(raw, raw.len(), QUARANTINE_TEXT_BYTES);
                Ok(Next::Bad { line, fault, raw })
            }
            Some(first) => {
                self.start = record_start;
                self.line = line;
                self.bad(Some(first), len, fault)
            }
        }
    }

    /// The record starting at `start` is malformed: consumes its first line (to the first line
    /// end, or to `scanned` bytes if it has none yet, then on to the line's end) and returns it.
    fn bad(
        &mut self,
        first_line_end: Option<usize>,
        scanned: usize,
        fault: Fault,
    ) -> std::io::Result<Next> {
        let line = self.line;
        let end = match first_line_end {
            Some(e) => e,
            None => {
                // The rest of this line, found outside any quote.
                let mut at = scanned;
                loop {
                    match self.buf[self.start + at..].iter().position(|&b| b == b'\n') {
                        Some(p) => break at + p,
                        None => {
                            at = self.buf.len() - self.start;
                            if at > MAX_RECORD_BYTES {
                                return self.skip_long_line();
                            }
                            if !self.fill()? {
                                break at;
                            }
                        }
                    }
                }
            }
        };
        let mut raw = &self.buf[self.start..self.start + end];
        if raw.ends_with(b"\r") {
            raw = &raw[..raw.len() - 1];
        }
        let raw = cut_bytes(raw, raw.len(), QUARANTINE_TEXT_BYTES);
        let has_nl = self.start + end < self.buf.len();
        self.start += end + usize::from(has_nl);
        self.line += u64::from(has_nl);
        Ok(Next::Bad { line, fault, raw })
    }

    /// The line at `start` is over the record limit: keeps its first bytes, drops the rest up to
    /// and including its line end without buffering it.
    fn skip_long_line(&mut self) -> std::io::Result<Next> {
        let line = self.line;
        let keep = QUARANTINE_TEXT_BYTES.min(self.buf.len() - self.start);
        let head = self.buf[self.start..self.start + keep].to_vec();
        let mut total = 0usize;
        loop {
            let rest = &self.buf[self.start..];
            if let Some(p) = rest.iter().position(|&b| b == b'\n') {
                total += p;
                self.start += p + 1;
                self.line += 1;
                break;
            }
            total += rest.len();
            self.start = self.buf.len();
            if !self.fill()? {
                break;
            }
        }
        let raw = cut_bytes(&head, total, QUARANTINE_TEXT_BYTES);
        Ok(Next::Bad {
            line,
            fault: Fault::TooLarge(total),
            raw,
        })
    }
}

pub(super) fn read(
    spec: &InputSpec,
    sink: &mut dyn FnMut(Item<'_>) -> Result<(), IngestError>,
) -> Result<(), IngestError> {
    let path = &spec.path;
    let mut tok = Tokenizer::new(open_text(spec)?);
    let io_err = |e: std::io::Error, line: u64| {
        IngestError::unreadable(path, Some(line), format!("read failed: {e}"))
    };
    let header = match tok.next().map_err(|e| io_err(e, 1))? {
        Next::End => return Ok(()), // empty file
        Next::Bad { line, fault, .. } => {
            let message = match fault {
                Fault::TooLarge(_) => {
                    format!("the header is longer than the limit of {MAX_RECORD_BYTES} bytes")
                }
                other => format!("the header is malformed: {}", other.message()),
            };
            return Err(IngestError::unreadable(path, Some(line), message));
        }
        Next::Record { .. } => {
            let names =
                header_names(&tok).map_err(|m| IngestError::unreadable(path, Some(1), m))?;
            names.iter().map(|n| Column::new(n)).collect::<Vec<_>>()
        }
    };
    tok.expected = Some(header.len());
    let mut row = 0u64;
    loop {
        let next = tok.next().map_err(|e| io_err(e, tok.line))?;
        row += 1;
        let item = match next {
            Next::End => return Ok(()),
            Next::Bad { line, fault, raw } => Item::Rejected(ReadRejection {
                line: Some(line),
                row,
                reason: match fault {
                    Fault::TooLarge(_) => RejectReason::RecordTooLarge,
                    _ => RejectReason::MalformedRecord,
                },
                field: None,
                value: None,
                message: fault.message(),
                raw,
            }),
            Next::Record { line } => record(&tok, &header, line, row),
        };
        sink(item)?;
    }
}

/// The header's column names, or why the file is not an event export.
fn header_names<R: Read>(tok: &Tokenizer<R>) -> Result<Vec<Arc<str>>, String> {
    let mut names: Vec<Arc<str>> = Vec::with_capacity(tok.field_count());
    for i in 0..tok.field_count() {
        let mut name = std::str::from_utf8(tok.field(i)).map_err(|_| "header is not UTF-8 text")?;
        if i == 0 {
            name = name.trim_start_matches('\u{feff}');
        }
        names.push(Arc::from(name.trim()));
    }
    if !names.iter().any(|h| REQUIRED.contains(&h.as_ref())) {
        let shown: Vec<String> = names
            .iter()
            .take(6)
            .map(|h| cut(h, MESSAGE_VALUE_BYTES / 4))
            .collect();
        return Err(format!(
            "not an event export: the header names none of event_id, user_id, event_type, ts (found {shown:?})"
        ));
    }
    let mut seen: HashSet<&str> = HashSet::new();
    if let Some(dup) = names.iter().find(|n| !seen.insert(n)) {
        return Err(format!(
            "the header names column {:?} twice",
            cut(dup, MESSAGE_VALUE_BYTES)
        ));
    }
    Ok(names)
}

/// The record just read as cells borrowing the tokenizer's buffer, or its rejection (a field
/// that is not UTF-8 or too large).
fn record<'a, R: Read>(
    tok: &'a Tokenizer<R>,
    header: &'a [Column],
    line: u64,
    row: u64,
) -> Item<'a> {
    // One check of the whole record; then each field's ends are character boundaries of it
    // exactly when every field is valid on its own.
    let whole = std::str::from_utf8(&tok.fields)
        .ok()
        .filter(|text| tok.ends.iter().all(|&e| text.is_char_boundary(e)));
    let Some(text) = whole else {
        let bad = (0..header.len())
            .find(|&i| std::str::from_utf8(tok.field(i)).is_err())
            .expect("some field is not UTF-8");
        let name = &header[bad].name;
        let fields: Vec<String> = (0..tok.field_count())
            .map(|i| String::from_utf8_lossy(tok.field(i)).into_owned())
            .collect();
        return Item::Rejected(ReadRejection {
            line: Some(line),
            row,
            reason: RejectReason::MalformedRecord,
            field: Some(name.to_string()),
            value: None,
            message: format!("field {name} is not valid UTF-8"),
            raw: cut(&fields.join(","), QUARANTINE_TEXT_BYTES),
        });
    };
    let mut from = 0;
    let cells = header
        .iter()
        .zip(&tok.ends)
        .map(|(col, &to)| {
            let cell = Cell::Str(Cow::Borrowed(&text[from..to]));
            from = to;
            (col, cell)
        })
        .collect();
    Record {
        line: Some(line),
        row,
        cells,
        line_text: None,
        csv: true,
    }
    .check_sizes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record (line, fields) or a malformed one (line, raw text).
    type Token = Result<(u64, Vec<String>), (u64, String)>;

    /// Every outcome of the tokenizer on `text`, with fields as strings.
    fn tokens(text: &str, expected: Option<usize>) -> Vec<Token> {
        let mut tok = Tokenizer::new(text.as_bytes());
        tok.expected = expected;
        let mut out = Vec::new();
        loop {
            match tok.next().unwrap() {
                Next::End => return out,
                Next::Record { line } => out.push(Ok((
                    line,
                    (0..tok.field_count())
                        .map(|i| String::from_utf8(tok.field(i).to_vec()).unwrap())
                        .collect(),
                ))),
                Next::Bad { line, raw, .. } => out.push(Err((line, raw))),
            }
        }
    }

    fn ok(line: u64, fields: &[&str]) -> Token {
        Ok((line, fields.iter().map(|s| s.to_string()).collect()))
    }

    #[test]
    fn splits_rfc_4180_records() {
        let t = "a,b,c\n1,\"x,y\",\"he said \"\"hi\"\"\"\r\n\n2,\"two\nlines\",\r3,,z";
        assert_eq!(
            tokens(t, Some(3)),
            [
                ok(1, &["a", "b", "c"]),
                ok(2, &["1", "x,y", "he said \"hi\""]),
                ok(4, &["2", "two\nlines", ""]),
                ok(5, &["3", "", "z"]),
            ]
        );
        // A quote inside an unquoted field is kept; an empty quoted field is empty.
        assert_eq!(tokens("ab\"c,\"\"\n", None), [ok(1, &["ab\"c", ""])]);
        assert!(tokens("", None).is_empty());
        assert!(tokens("\n\r\n\n", None).is_empty());
    }

    #[test]
    fn a_stray_quote_costs_its_own_line_only() {
        let mut t = String::from("e0,u0,x\n");
        t.push_str("e1,\"stray,x\n");
        for i in 2..1000 {
            t.push_str(&format!("e{i},u{i},x\n"));
        }
        let out = tokens(&t, Some(3));
        assert_eq!(out.len(), 1000);
        assert_eq!(out[1], Err((2, "e1,\"stray,x".to_string())));
        assert_eq!(out[2], ok(3, &["e2", "u2", "x"]));
        assert_eq!(out[999], ok(1000, &["e999", "u999", "x"]));

        // Two stray quotes: the first closes at the second, which is followed by text.
        let mut t = String::new();
        for i in 0..10 {
            if i == 2 || i == 6 {
                t.push_str(&format!("e{i},\"stray{i},x\n"));
            } else {
                t.push_str(&format!("e{i},u{i},x\n"));
            }
        }
        let out = tokens(&t, Some(3));
        assert_eq!(out.len(), 10, "{out:?}");
        assert!(out[2].is_err() && out[6].is_err(), "{out:?}");
        assert_eq!(out.iter().filter(|o| o.is_err()).count(), 2);

        // A quoted field that closes properly but leaves the record a field short.
        let out = tokens("a,\"b\nc\",d\ne,f,g\n", Some(4));
        assert_eq!(out[0], Err((1, "a,\"b".to_string())));
        assert_eq!(out.len(), 3, "{out:?}");
    }

    #[test]
    fn a_file_cut_inside_a_quote_stores_nothing_of_it() {
        assert_eq!(
            tokens("a,b\n1,\"cut off", Some(2)),
            [ok(1, &["a", "b"]), Err((2, "1,\"cut off".to_string()))]
        );
        // Text after a closing quote, on one line.
        assert_eq!(
            tokens("1,\"x\"y,2\n3,4,5\n", Some(3)),
            [Err((1, "1,\"x\"y,2".to_string())), ok(2, &["3", "4", "5"])]
        );
    }

    #[test]
    fn an_oversized_line_is_dropped_without_buffering_it() {
        let mut t = b"a,b\n".to_vec();
        t.extend(std::iter::repeat_n(b'\0', MAX_RECORD_BYTES + 10));
        t.extend(b"\n1,2\n");
        let mut tok = Tokenizer::new(&t[..]);
        tok.expected = Some(2);
        assert!(matches!(tok.next().unwrap(), Next::Record { line: 1 }));
        match tok.next().unwrap() {
            Next::Bad {
                line: 2,
                fault: Fault::TooLarge(n),
                raw,
            } => {
                assert_eq!(n, MAX_RECORD_BYTES + 10);
                assert!(raw.len() < QUARANTINE_TEXT_BYTES + 100);
            }
            other => panic!("{other:?}"),
        }
        // The buffer grows by doubling: bounded by about twice the record limit.
        assert!(tok.buf.capacity() < 2 * MAX_RECORD_BYTES + 4 * CHUNK);
        assert!(matches!(tok.next().unwrap(), Next::Record { line: 3 }));
        assert_eq!(tok.next().unwrap(), Next::End);
    }
}
