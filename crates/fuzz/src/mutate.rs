//! The mutations, driven by a small deterministic generator: the same seed and inputs give the
//! same sequence of mutated inputs on every machine.

/// Numbers at the edges of what parsers handle: signs, zeros, exponents, separators, the limits
/// of i64/u64/f64 and of the store's decimal (18 digits, 4 decimals).
const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "+0",
    "00",
    "1",
    "-1",
    "+7",
    "+-1",
    "--1",
    ".5",
    "5.",
    ".",
    "-.5",
    "0.0001",
    "0.00005",
    "0.00010",
    "1.23450",
    "199.00",
    "-3.5",
    "1e3",
    "1E-3",
    "1e999",
    "NaN",
    "nan",
    "inf",
    "-inf",
    "Infinity",
    "0x10",
    "1_000",
    "1,000.00",
    "1 000",
    "12,50",
    "¥99",
    "2147483647",
    "2147483648",
    "-2147483649",
    "4294967296",
    "9007199254740993",
    "99999999999999.9999",
    "99999999999999.99995",
    "100000000000000",
    "999999999999999999",
    "1000000000000000000",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "18446744073709551615",
    "340282366920938463463374607431768211456",
    "1.7976931348623157e308",
    "5e-324",
];

/// Timestamps at the edges: years 0 and 1 and 9999 and beyond, 1970 and just before it, leap
/// days and seconds, hours and offsets out of range, too many fraction digits, lower-case
/// separators, local times in a daylight-saving gap or fold, and epoch milliseconds at and
/// beyond the accepted range.
const TIMESTAMPS: &[&str] = &[
    "0000-01-01T00:00:00Z",
    "0000-12-31T23:59:59.999Z",
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+00:01",
    "0001-01-01 00:00:00",
    "9999-12-31T23:59:59.999Z",
    "9999-12-31T23:59:59.999-00:01",
    "9999-12-31 23:59:59.999",
    "10000-01-01T00:00:00Z",
    "+002021-09-17T10:00:00Z",
    "1969-12-31T23:59:59.999Z",
    "1969-12-31T23:59:59.9999Z",
    "1970-01-01T00:00:00Z",
    "1900-12-31 23:57:00",
    "2016-12-31T23:59:60Z",
    "2020-02-29T12:00:00Z",
    "2021-02-29T00:00:00Z",
    "2021-09-31T10:00:00Z",
    "2021-09-17T24:00:00Z",
    "2021-09-17T23:60:00Z",
    "2021-09-17T10:00:00+24:00",
    "2021-09-17T10:00:00+23:59",
    "2021-09-17T10:00:00-00:00",
    "2021-09-17T10:00:00+08",
    "2021-09-17T10:00:00+0800",
    "2021-09-17T10:00:00.1234567891Z",
    "2021-09-17T10:00:00.Z",
    "2021-09-17t10:00:00z",
    "2021-09-17 10:00:00",
    "2021-09-17T10:00",
    "2021-09-17",
    "1988-04-10 02:30:00",
    "1988-09-11 01:30:00",
    "2021-03-28 02:30:00",
    "2021-10-31 02:30:00",
    "-62135596800000",
    "-62135596800001",
    "-62135625600000",
    "253402300799999",
    "253402300800000",
    "-1",
    "1631844000123",
    "-9223372036854775808",
    "9223372036854775807",
];

/// Characters that end or open quoted text, lines and records, and control bytes.
const QUOTES: &[&[u8]] = &[
    b"\"", b"'", b"`", b"\\", b"\r", b"\n", b"\r\n", b",", b"\t", b"\0", b"\x1f", b"\x0b", b"\x0c",
];

/// Byte sequences that are not, or not quite, UTF-8 text, and text that is unusual.
const ODD_TEXT: &[&[u8]] = &[
    b"\xef\xbb\xbf",
    b"\xff\xfe",
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xe2\x80\xa8",
    b"\xc2\x85",
    "é".as_bytes(),
    "𝕏".as_bytes(),
    "\u{202e}".as_bytes(),
];

/// A mutation engine over byte strings, deterministic given its seed.
#[derive(Debug, Clone)]
pub struct Mutator {
    state: u64,
    dictionary: &'static [&'static [u8]],
    max_len: usize,
}

impl Mutator {
    /// `dictionary`: tokens of the target's format; `max_len`: no output is longer.
    pub fn new(seed: u64, dictionary: &'static [&'static [u8]], max_len: usize) -> Mutator {
        Mutator {
            state: seed ^ 0x6a09_e667_f3bc_c909,
            dictionary,
            max_len: max_len.max(1),
        }
    }

    /// SplitMix64.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// True with probability 1/n.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// Applies 1 to 8 stacked mutations (fewer more often) to `input`; `other` is a second input
    /// for splices.
    pub fn mutate(&mut self, input: &mut Vec<u8>, other: &[u8]) {
        let mut n = 1;
        while n < 8 && self.one_in(2) {
            n += 1;
        }
        for _ in 0..n {
            self.mutate_once(input, other);
        }
        input.truncate(self.max_len);
    }

    fn mutate_once(&mut self, v: &mut Vec<u8>, other: &[u8]) {
        match self.below(17) {
            0 if !v.is_empty() => {
                let i = self.below(v.len());
                v[i] ^= 1 << self.below(8);
            }
            1 if !v.is_empty() => {
                let i = self.below(v.len());
                v[i] = self.next_u64() as u8;
            }
            2 => {
                let bytes: Vec<u8> = (0..1 + self.below(8))
                    .map(|_| self.next_u64() as u8)
                    .collect();
                self.insert(v, &bytes);
            }
            3 if !v.is_empty() => {
                let (a, b) = self.range(v.len());
                v.drain(a..b);
            }
            4 if !v.is_empty() => {
                let (a, b) = self.range(v.len());
                let chunk = v[a..b].to_vec();
                self.insert(v, &chunk);
            }
            5 if !other.is_empty() => {
                // Head of this input, tail of the other, cut at lines half of the time.
                let cut_self = self.cut(v);
                let cut_other = self.cut(other);
                v.truncate(cut_self);
                v.extend_from_slice(&other[cut_other..]);
            }
            6 => {
                if let Some((a, b)) = self.line(v) {
                    let line = v[a..b].to_vec();
                    let at = self.line(v).map_or(v.len(), |(s, _)| s);
                    v.splice(at..at, line);
                }
            }
            7 => {
                if let Some((a, b)) = self.line(v) {
                    v.drain(a..b);
                }
            }
            8 => {
                let at = self.cut(v);
                v.truncate(at);
            }
            9 => {
                let q = QUOTES[self.below(QUOTES.len())];
                self.insert(v, q);
            }
            10 => {
                let t = ODD_TEXT[self.below(ODD_TEXT.len())];
                self.insert(v, t);
            }
            11 => {
                // A huge repeat of one byte or of a chunk of the input.
                let unit: Vec<u8> = if v.is_empty() || self.one_in(2) {
                    const BYTES: &[u8] = b"\"'\\,{[0a \n";
                    vec![BYTES[self.below(BYTES.len())]]
                } else {
                    let (a, b) = self.range(v.len());
                    v[a..b.min(a + 16)].to_vec()
                };
                let times = (self.max_len / unit.len().max(1)).clamp(1, 1 + self.below(4096));
                self.insert(v, &unit.repeat(times));
            }
            12 => {
                let n = NUMBERS[self.below(NUMBERS.len())];
                self.replace_token(v, n.as_bytes(), |b| {
                    b.is_ascii_digit() || b"+-.eE".contains(&b)
                });
            }
            13 => {
                let t = TIMESTAMPS[self.below(TIMESTAMPS.len())];
                self.replace_token(v, t.as_bytes(), |b| {
                    b.is_ascii_digit() || b"+-.:TZtz ".contains(&b)
                });
            }
            14 if !self.dictionary.is_empty() => {
                let t = self.dictionary[self.below(self.dictionary.len())];
                self.insert(v, t);
            }
            15 => {
                if let (Some((a, b)), Some((c, d))) = (self.line(v), self.line(v))
                    && b <= c
                {
                    let second = v[c..d].to_vec();
                    let first = v[a..b].to_vec();
                    v.splice(c..d, first);
                    v.splice(a..b, second);
                }
            }
            16 if !v.is_empty() => {
                // A run of bytes re-cased or shifted: letters, digits and signs nearby.
                let (a, b) = self.range(v.len());
                let shift = self.below(3);
                for x in &mut v[a..b.min(a + 8)] {
                    *x = match shift {
                        0 => x.to_ascii_uppercase(),
                        1 => x.to_ascii_lowercase(),
                        _ => x.wrapping_add(1),
                    };
                }
            }
            _ => {
                let bytes = [self.next_u64() as u8];
                self.insert(v, &bytes);
            }
        }
    }

    fn insert(&mut self, v: &mut Vec<u8>, bytes: &[u8]) {
        let room = self.max_len.saturating_sub(v.len()).max(1);
        let bytes = &bytes[..bytes.len().min(room)];
        let at = self.below(v.len() + 1);
        v.splice(at..at, bytes.iter().copied());
    }

    /// A non-empty range within `0..len` (len > 0), mostly short.
    fn range(&mut self, len: usize) -> (usize, usize) {
        let a = self.below(len);
        let max = if self.one_in(4) {
            len - a
        } else {
            (len - a).min(8)
        };
        (a, a + 1 + self.below(max))
    }

    /// A cut point: at a line start half of the time.
    fn cut(&mut self, v: &[u8]) -> usize {
        let at = self.below(v.len() + 1);
        if self.one_in(2) {
            v[..at]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1)
        } else {
            at
        }
    }

    /// A random line, with its newline.
    fn line(&mut self, v: &[u8]) -> Option<(usize, usize)> {
        if v.is_empty() {
            return None;
        }
        let at = self.below(v.len());
        let start = v[..at]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let end = v[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(v.len(), |i| at + i + 1);
        Some((start, end))
    }

    /// Replaces a run of bytes of the token class around a random position by `with`, or
    /// inserts `with` where the input has none.
    fn replace_token(&mut self, v: &mut Vec<u8>, with: &[u8], class: impl Fn(u8) -> bool) {
        let starts: Vec<usize> = (0..v.len())
            .filter(|&i| class(v[i]) && (i == 0 || !class(v[i - 1])))
            .collect();
        if starts.is_empty() || self.one_in(4) {
            self.insert(v, with);
            return;
        }
        let a = starts[self.below(starts.len())];
        let b = (a..v.len()).find(|&i| !class(v[i])).unwrap_or(v.len());
        v.splice(a..b, with.iter().copied());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_bounded() {
        let run = |seed| {
            let mut m = Mutator::new(seed, &[b"tok"], 64);
            let mut out = Vec::new();
            let mut v = b"a,b\n1,2\n".to_vec();
            for _ in 0..500 {
                m.mutate(&mut v, b"x,y\n3,4\n");
                assert!(v.len() <= 64);
                out.push(v.clone());
                if v.is_empty() {
                    v = b"a".to_vec();
                }
            }
            out
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
        // The mutations reach far: quotes, NULs and dictionary tokens all appear.
        let all: Vec<u8> = run(3).concat();
        for needle in [&b"\""[..], b"\0", b"tok"] {
            assert!(all.windows(needle.len()).any(|w| w == needle), "{needle:?}");
        }
    }
}
