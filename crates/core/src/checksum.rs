//! Size and checksum of the files of a store generation, as the manifest records them.

use std::io::{Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3Default;

/// Size and xxh3-128 (hex) of one file of a generation ([`crate::Manifest::files`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSum {
    pub bytes: u64,
    pub xxh3_128: String,
}

impl FileSum {
    /// Reads the file at `path` to the end.
    pub fn of_file(path: &Path) -> std::io::Result<FileSum> {
        let mut file = std::fs::File::open(path)?;
        let mut sum = SumWriter::new(std::io::sink());
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            sum.write_all(&buf[..n])?;
        }
        Ok(sum.into_parts().1)
    }
}

/// A writer that sums what it passes on: a file's [`FileSum`] computed while it is written.
pub struct SumWriter<W> {
    inner: W,
    hasher: Box<Xxh3Default>,
    bytes: u64,
}

impl<W> std::fmt::Debug for SumWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SumWriter")
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl<W: Write> SumWriter<W> {
    pub fn new(inner: W) -> SumWriter<W> {
        SumWriter {
            inner,
            hasher: Box::new(Xxh3Default::new()),
            bytes: 0,
        }
    }

    /// The inner writer and the sum of everything written through it.
    pub fn into_parts(self) -> (W, FileSum) {
        let sum = FileSum {
            bytes: self.bytes,
            xxh3_128: format!("{:032x}", self.hasher.digest128()),
        };
        (self.inner, sum)
    }
}

impl<W: Write> Write for SumWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_and_read_sums_agree() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        let mut w = SumWriter::new(std::fs::File::create(&path).unwrap());
        for chunk in data.chunks(7_777) {
            w.write_all(chunk).unwrap();
        }
        let (_, written) = w.into_parts();
        assert_eq!(written.bytes, data.len() as u64);
        assert_eq!(
            written.xxh3_128,
            format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&data))
        );
        assert_eq!(FileSum::of_file(&path).unwrap(), written);
        // Pinned: the empty input's xxh3-128 (seed 0).
        let (_, empty) = SumWriter::new(std::io::sink()).into_parts();
        assert_eq!(empty.xxh3_128, "99aa06d3014798d86001c324468d497f");
    }
}
