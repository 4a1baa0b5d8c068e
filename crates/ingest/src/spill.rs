//! Temporary spill files (Arrow IPC, lz4) that keep ingest memory bounded:
//! - a [`Spill`] is partitioned: rows are split by partition as they arrive, written out, and
//!   read back one partition at a time, in the order pushed;
//! - a [`Sequence`] keeps batches whole, in the order pushed, in segments of about
//!   [`SEGMENT_ROWS`] rows, each row known by its ordinal (its position in the sequence).

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;

use crate::IngestError;

/// Rows buffered across all partitions of a spill before everything buffered is written: it
/// bounds the memory of a spill (a buffered slice keeps its whole parent batch alive, so all
/// partitions are written together when the total is reached).
const BUFFERED_ROWS: usize = 256 * 1024;

/// Rows buffered per partition before that partition is written: at most 16384, at least 64
/// (where partitions are many).
fn chunk_rows(partitions: usize) -> usize {
    (BUFFERED_ROWS / partitions.max(1)).clamp(64, 16 * 1024)
}

/// Write buffer of each partition's file: 8 MiB shared among the partitions, from 8 KiB to
/// 1 MiB each (every partition's file stays open, so at 512 partitions 1 MiB each was half a
/// gigabyte).
fn write_buffer(partitions: usize) -> usize {
    ((8 << 20) / partitions.max(1)).clamp(8 << 10, 1 << 20)
}

#[derive(Default)]
struct Part {
    pending: Vec<RecordBatch>,
    rows: usize,
    writer: Option<FileWriter<BufWriter<File>>>,
}

/// A set of partitions, each an Arrow IPC file written in the order rows are pushed.
pub(crate) struct Spill {
    dir: PathBuf,
    schema: SchemaRef,
    parts: Vec<Part>,
    chunk: usize,
    buffered: usize,
    /// Bytes of each open partition's write buffer.
    write_buffer: usize,
}

impl std::fmt::Debug for Spill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spill").field("dir", &self.dir).finish()
    }
}

impl Spill {
    pub fn new(
        dir: &Path,
        name: &str,
        partitions: usize,
        schema: SchemaRef,
    ) -> Result<Spill, IngestError> {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| IngestError::store(&dir, e))?;
        Ok(Spill {
            dir,
            schema,
            parts: (0..partitions).map(|_| Part::default()).collect(),
            chunk: chunk_rows(partitions),
            buffered: 0,
            write_buffer: write_buffer(partitions),
        })
    }

    fn path(&self, part: usize) -> PathBuf {
        self.dir.join(format!("{part:05}.arrow"))
    }

    fn err(&self, part: usize, e: impl std::fmt::Display) -> IngestError {
        IngestError::store(self.path(part), format!("spill: {e}"))
    }

    /// Appends a whole batch to one partition.
    pub fn push(&mut self, part: usize, batch: RecordBatch) -> Result<(), IngestError> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let p = &mut self.parts[part];
        p.pending.push(batch);
        p.rows += n;
        self.buffered += n;
        if self.buffered >= BUFFERED_ROWS {
            for part in 0..self.parts.len() {
                self.flush(part)?;
            }
        } else if self.parts[part].rows >= self.chunk {
            self.flush(part)?;
        }
        Ok(())
    }

    /// Appends each row of `batch` to its partition `parts[row]`, keeping the rows' order
    /// within each partition: one gather of the batch by partition, then a slice per partition.
    pub fn push_rows(&mut self, batch: &RecordBatch, parts: &[u32]) -> Result<(), IngestError> {
        debug_assert_eq!(batch.num_rows(), parts.len());
        let mut starts = vec![0u32; self.parts.len() + 1];
        for &p in parts {
            starts[p as usize + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let mut at = starts.clone();
        let mut order = vec![0u32; parts.len()];
        for (row, &p) in parts.iter().enumerate() {
            order[at[p as usize] as usize] = row as u32;
            at[p as usize] += 1;
        }
        let gathered =
            take_record_batch(batch, &UInt32Array::from(order)).map_err(|e| self.err(0, e))?;
        for part in 0..self.parts.len() {
            let (s, e) = (starts[part] as usize, starts[part + 1] as usize);
            if e > s {
                self.push(part, gathered.slice(s, e - s))?;
            }
        }
        Ok(())
    }

    fn flush(&mut self, part: usize) -> Result<(), IngestError> {
        if self.parts[part].pending.is_empty() {
            return Ok(());
        }
        let schema = self.schema.clone();
        if self.parts[part].writer.is_none() {
            let path = self.path(part);
            let w = open(&path, &schema, self.write_buffer).map_err(|e| self.err(part, e))?;
            self.parts[part].writer = Some(w);
        }
        let pending = std::mem::take(&mut self.parts[part].pending);
        let batch = concat_batches(&schema, &pending).map_err(|e| self.err(part, e))?;
        self.buffered -= self.parts[part].rows;
        self.parts[part].rows = 0;
        let result = self.parts[part]
            .writer
            .as_mut()
            .expect("opened above")
            .write(&batch);
        result.map_err(|e| self.err(part, e))
    }

    /// Closes every partition; returns the path of each non-empty one.
    pub fn finish(mut self) -> Result<Vec<Option<PathBuf>>, IngestError> {
        let mut out = Vec::with_capacity(self.parts.len());
        for part in 0..self.parts.len() {
            self.flush(part)?;
            match self.parts[part].writer.take() {
                Some(mut w) => {
                    w.finish().map_err(|e| self.err(part, e))?;
                    out.push(Some(self.path(part)));
                }
                None => out.push(None),
            }
        }
        Ok(out)
    }
}

/// Opens a spill file for writing. lz4: spilled columns are mostly repeated text, and a large
/// run spills each row twice; uncompressed, the writeback of gigabytes of scratch stalls the run
/// (measured at 10M rows).
fn open(
    path: &Path,
    schema: &SchemaRef,
    buffer: usize,
) -> Result<FileWriter<BufWriter<File>>, String> {
    let file = File::create(path).map_err(|e| e.to_string())?;
    let options = arrow::ipc::writer::IpcWriteOptions::default()
        .try_with_compression(Some(arrow::ipc::CompressionType::LZ4_FRAME))
        .map_err(|e| e.to_string())?;
    FileWriter::try_new_with_options(BufWriter::with_capacity(buffer, file), schema, options)
        .map_err(|e| e.to_string())
}

/// Rows of a segment of a [`Sequence`] (it ends after the batch that reaches this many): the
/// unit of work of the phase that reads it back, a segment or two per thread in memory.
pub(crate) const SEGMENT_ROWS: u64 = 128 * 1024;

/// A file of a [`Sequence`]: rows `first..first + rows`, in order.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    pub path: PathBuf,
    pub first: u64,
    pub rows: u64,
}

/// Batches kept whole and in order, in segment files.
pub(crate) struct Sequence {
    dir: PathBuf,
    schema: SchemaRef,
    writer: Option<FileWriter<BufWriter<File>>>,
    segments: Vec<Segment>,
    rows: u64,
}

impl std::fmt::Debug for Sequence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sequence").field("dir", &self.dir).finish()
    }
}

impl Sequence {
    pub fn new(dir: &Path, name: &str, schema: SchemaRef) -> Result<Sequence, IngestError> {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| IngestError::store(&dir, e))?;
        Ok(Sequence {
            dir,
            schema,
            writer: None,
            segments: Vec::new(),
            rows: 0,
        })
    }

    /// Rows pushed so far: the ordinal of the next row.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Appends a batch; returns the ordinal of its first row (its rows get the next ones).
    pub fn push(&mut self, batch: &RecordBatch) -> Result<u64, IngestError> {
        let first = self.rows;
        let n = batch.num_rows() as u64;
        if n == 0 {
            return Ok(first);
        }
        if self.writer.is_none() {
            let path = self.dir.join(format!("{:05}.arrow", self.segments.len()));
            let w = open(&path, &self.schema, 1 << 20)
                .map_err(|e| IngestError::store(&path, format!("spill: {e}")))?;
            self.writer = Some(w);
            self.segments.push(Segment {
                path,
                first: self.rows,
                rows: 0,
            });
        }
        let seg = self.segments.last_mut().expect("opened above");
        let err =
            |e: arrow::error::ArrowError| IngestError::store(&seg.path, format!("spill: {e}"));
        let w = self.writer.as_mut().expect("opened above");
        w.write(batch).map_err(err)?;
        seg.rows += n;
        self.rows += n;
        if seg.rows >= SEGMENT_ROWS {
            self.writer.take().expect("open").finish().map_err(err)?;
        }
        Ok(first)
    }

    /// Closes the last segment; returns them all, in order.
    pub fn finish(mut self) -> Result<Vec<Segment>, IngestError> {
        if let Some(mut w) = self.writer.take() {
            let seg = self.segments.last().expect("a writer has its segment");
            w.finish()
                .map_err(|e| IngestError::store(&seg.path, format!("spill: {e}")))?;
        }
        Ok(self.segments)
    }
}

/// Reads a spill file back, batch by batch, in the order it was written, then deletes it (each
/// is read once), so the scratch space of a run stays near one copy of its rows.
pub(crate) fn read_spill(
    path: &Path,
    mut each: impl FnMut(RecordBatch) -> Result<(), IngestError>,
) -> Result<(), IngestError> {
    let err = |e: &dyn std::fmt::Display| IngestError::store(path, format!("spill: {e}"));
    let file = File::open(path).map_err(|e| err(&e))?;
    let reader = FileReader::try_new(std::io::BufReader::with_capacity(1 << 20, file), None)
        .map_err(|e| err(&e))?;
    for batch in reader {
        each(batch.map_err(|e| err(&e))?)?;
    }
    std::fs::remove_file(path).map_err(|e| err(&e))
}

/// Every batch of a spilled partition (deleted once read).
pub(crate) fn read_spill_all(path: &Path) -> Result<Vec<RecordBatch>, IngestError> {
    let mut out = Vec::new();
    read_spill(path, |b| {
        out.push(b);
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{Builder, event_at, tests::event};
    use crate::event::Event;

    #[test]
    fn buffers_shrink_as_partitions_grow() {
        assert_eq!(chunk_rows(1), 16 * 1024);
        assert_eq!(chunk_rows(64), 4096);
        assert_eq!(chunk_rows(512), 512);
        assert_eq!(chunk_rows(65_536), 64);
        assert_eq!(write_buffer(1), 1 << 20);
        assert_eq!(write_buffer(512), 16 << 10);
        assert_eq!(write_buffer(65_536), 8 << 10);
    }

    #[test]
    fn round_trip_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut spill = Spill::new(dir.path(), "t", 3, crate::batch::work_schema()).unwrap();
        let mut want: Vec<Vec<Event>> = vec![Vec::new(); 3];
        let mut builder = Builder::default();
        let mut parts = Vec::new();
        for i in 0..40_000u64 {
            let e = event(i);
            // Partition 2 stays empty.
            let part = (i * 7 % 5 % 2) as u32;
            want[part as usize].push(e.clone());
            builder.push(&e);
            parts.push(part);
            if builder.len() == 1000 + (i as usize % 3) {
                spill.push_rows(&builder.finish(), &parts).unwrap();
                parts.clear();
            }
        }
        spill.push_rows(&builder.finish(), &parts).unwrap();
        let paths = spill.finish().unwrap();
        assert!(paths[2].is_none());
        for part in 0..2 {
            let path = paths[part].as_ref().unwrap();
            let batches = read_spill_all(path).unwrap();
            let got: Vec<Event> = batches
                .iter()
                .flat_map(|b| (0..b.num_rows()).map(|i| event_at(b, i)))
                .collect();
            assert_eq!(got, want[part]);
            assert!(!path.exists(), "a partition is deleted once read");
        }
    }

    #[test]
    fn a_sequence_keeps_batches_in_order_in_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut seq = Sequence::new(dir.path(), "s", crate::batch::work_schema()).unwrap();
        let mut builder = Builder::default();
        let mut want = Vec::new();
        let per_batch = 100_000u64;
        for b in 0..6u64 {
            for i in 0..per_batch {
                let e = event(b * per_batch + i);
                builder.push(&e);
                if i.is_multiple_of(9_973) {
                    want.push(e);
                }
            }
            assert_eq!(seq.push(&builder.finish()).unwrap(), b * per_batch);
        }
        let segments = seq.finish().unwrap();
        // A segment ends after the batch that reaches SEGMENT_ROWS: 2 batches, 2, then 2.
        let ranges: Vec<(u64, u64)> = segments.iter().map(|s| (s.first, s.rows)).collect();
        assert_eq!(
            ranges,
            [(0, 200_000), (200_000, 200_000), (400_000, 200_000)]
        );
        let mut got = Vec::new();
        for s in &segments {
            let mut ord = s.first;
            for b in read_spill_all(&s.path).unwrap() {
                for i in 0..b.num_rows() {
                    if (ord % per_batch).is_multiple_of(9_973) {
                        got.push(event_at(&b, i).into_owned());
                    }
                    ord += 1;
                }
            }
            assert_eq!(ord, s.first + s.rows);
        }
        assert_eq!(got, want);
    }
}
