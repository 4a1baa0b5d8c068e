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

/// `text` cut to at most `max` bytes (on a character boundary), with a note of what was cut.
pub fn cut(text: &str, max: usize) -> String {
    cut_bytes(text.as_bytes(), text.len(), max)
}

/// Like [`cut`] for bytes that may not be UTF-8 (replaced lossily), of which `total` were seen
/// (`bytes` may already be a prefix of the whole).
pub fn cut_bytes(bytes: &[u8], total: usize, max: usize) -> String {
    if total <= max && bytes.len() == total {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let mut end = bytes.len().min(max);
    // Back off to a UTF-8 character boundary (a continuation byte is 0b10xx_xxxx).
    while end > 0 && end < bytes.len() && (bytes[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    let kept = String::from_utf8_lossy(&bytes[..end]);
    format!("{kept}… [{} more bytes cut]", total - end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_keeps_short_text_and_cuts_on_a_char_boundary() {
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abcd", 3), "abc… [1 more bytes cut]");
        // "é" is two bytes: a cut inside it backs off before it.
        assert_eq!(cut("aé", 2), "a… [2 more bytes cut]");
        assert_eq!(cut_bytes(b"ab", 10, 5), "ab… [8 more bytes cut]");
        assert_eq!(cut_bytes(b"\xffz", 2, 5), "\u{fffd}z");
        assert_eq!(one_line("got \rser_id\n"), "got \\rser_id\\n");
        assert!(one_line(&"x".repeat(5000)).len() < 1100);
    }
}
