//! Size limits on input, and how much of a rejected text the quarantine keeps.
//!
//! The limits bound ingest memory whatever the input: a record is never buffered beyond
//! [`MAX_RECORD_BYTES`] (the rest of an oversized record is scanned and dropped), and no text
//! longer than [`QUARANTINE_TEXT_BYTES`] is kept for the quarantine or for an error message.

/// Longest field (a CSV field, a JSON or Parquet value) stored; a longer one rejects its row as
/// `value_too_large`.
pub const MAX_FIELD_BYTES: usize = 1 << 20;

/// Longest CSV record or JSON line (without its line end); a longer one is rejected as
/// `record_too_large` (a CSV header that long makes the file unreadable).
pub const MAX_RECORD_BYTES: usize = 16 << 20;

/// Longest `raw` and `value` text kept in a quarantine row; a longer text is cut (on a
/// character boundary) and ends with a note of how many bytes were cut.
pub const QUARANTINE_TEXT_BYTES: usize = 64 << 10;

/// Longest quoted value in an error message.
pub const MESSAGE_VALUE_BYTES: usize = 200;

/// `text` as one line of at most [`MESSAGE_VALUE_BYTES`] * 5 bytes: control characters (a
/// carriage return in a damaged file's column name, say) escaped, the rest cut with a note.
pub fn one_line(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    cut(&escaped, MESSAGE_VALUE_BYTES * 5)
}

/// `text` cut to at most `max` bytes (on a character boundary), the note of what was cut
/// included: cutting a cut text again changes nothing, so the note keeps the true count.
/// `max` leaves room for the note (at least [`MIN_CUT_BYTES`]).
pub fn cut(text: &str, max: usize) -> String {
    cut_bytes(text.as_bytes(), text.len(), max)
}

/// The least `max` of [`cut`]: room for the longest note (41 bytes, with a 20-digit count).
pub const MIN_CUT_BYTES: usize = 48;

/// Like [`cut`] for bytes that may not be UTF-8, of which `total` were seen (`bytes` may
/// already be a prefix of the whole). They are decoded first (a byte that is not UTF-8 becomes
/// U+FFFD, three bytes) and the text is cut, so the result is within `max` whatever they hold.
pub fn cut_bytes(bytes: &[u8], total: usize, max: usize) -> String {
    debug_assert!(max >= MIN_CUT_BYTES, "no room for the note in {max} bytes");
    let text = String::from_utf8_lossy(bytes);
    // The decoded text's length, the bytes never seen counted as they are.
    let total = text.len() + total.saturating_sub(bytes.len());
    if total <= max {
        return text.into_owned();
    }
    let note = |cut: usize| format!("… [{cut} more bytes cut]");
    // The note is never longer than with `total` in it.
    let mut end = text.len().min(max.saturating_sub(note(total).len()));
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{}", &text[..end], note(total - end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_keeps_short_text_and_cuts_on_a_char_boundary() {
        // The note ("… [NNN more bytes cut]", 24 bytes with three digits) counts in the limit.
        let long = "abcdefghij".repeat(10);
        assert_eq!(cut("abc", 64), "abc");
        assert_eq!(
            cut(&long, 64),
            format!("{}… [60 more bytes cut]", &long[..40])
        );
        // "é" is two bytes: a cut inside it backs off before it.
        let text = format!("{}é{}", "a".repeat(39), "x".repeat(70));
        assert_eq!(
            cut(&text, 64),
            format!("{}… [72 more bytes cut]", "a".repeat(39))
        );
        assert_eq!(cut_bytes(b"ab", 100, 64), "ab… [98 more bytes cut]");
        assert_eq!(cut_bytes(b"\xffz", 2, 64), "\u{fffd}z");
        // Bytes that are not UTF-8 grow when decoded; the cut is of the decoded text.
        let once = cut_bytes(&[0xff; 100], 100, 64);
        assert_eq!(
            once,
            format!("{}… [261 more bytes cut]", "\u{fffd}".repeat(13))
        );
        assert_eq!(cut(&once, 64), once);
        // Within its limit, and cutting again keeps the text and its count.
        for n in [0usize, 5, 100, 70_000, 2_000_000] {
            let once = cut(&"x".repeat(n), 65_536);
            assert!(once.len() <= 65_536, "{n}: {}", once.len());
            assert_eq!(cut(&once, 65_536), once);
        }
        assert_eq!(one_line("got \rser_id\n"), "got \\rser_id\\n");
        assert!(one_line(&"x".repeat(5000)).len() < 1100);
    }
}
