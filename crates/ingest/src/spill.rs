//! Temporary, partitioned spill files (Arrow IPC) that keep ingest memory bounded: rows are
//! written out as they are read and read back one partition at a time, in the order written.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, UInt32Type, UInt64Type};
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;

use crate::IngestError;
use crate::event::Event;

/// Rows buffered across all partitions of a spill before they are written (about 100 MB of
/// events): each partition buffers its share, so memory does not grow with the partition count.
const BUFFERED_ROWS: usize = 256 * 1024;

/// Rows buffered per partition: at most 4096, at least 64 (where partitions are many).
fn chunk_rows(partitions: usize) -> usize {
    (BUFFERED_ROWS / partitions.max(1)).clamp(64, 4096)
}

/// Properties as `(u32 length, bytes)` pairs of key and value: cheaper than JSON, and any
/// text round-trips.
fn encode_props(props: &std::collections::BTreeMap<String, String>) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in props {
        for s in [k, v] {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
    out
}

fn decode_props(mut b: &[u8]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let take = |b: &mut &[u8]| -> String {
        let n = u32::from_le_bytes(b[..4].try_into().expect("4 bytes")) as usize;
        let s = String::from_utf8(b[4..4 + n].to_vec()).expect("spilled text is UTF-8");
        *b = &b[4 + n..];
        s
    };
    while !b.is_empty() {
        let k = take(&mut b);
        let v = take(&mut b);
        out.insert(k, v);
    }
    out
}

/// The text columns, in order; the properties (binary) follow them, then the numbers.
const STRINGS: [&str; 12] = [
    "event_id",
    "user_id",
    "event_type",
    "platform",
    "journey",
    "chat_type",
    "warning_action",
    "account_id",
    "order_id",
    "currency",
    "person_id",
    "source_file",
];

fn schema() -> SchemaRef {
    let mut fields: Vec<Field> = STRINGS
        .iter()
        .map(|n| Field::new(*n, DataType::Utf8, true))
        .collect();
    fields.push(Field::new("props", DataType::Binary, true));
    fields.push(Field::new("ts", DataType::Int64, false));
    fields.push(Field::new("amount", DataType::Int64, true));
    fields.push(Field::new("hash", DataType::UInt64, false));
    fields.push(Field::new("line", DataType::UInt64, false));
    fields.push(Field::new("run", DataType::UInt64, false));
    fields.push(Field::new("file", DataType::UInt32, false));
    fields.push(Field::new("row", DataType::UInt64, false));
    Arc::new(Schema::new(fields))
}

fn strings<'a>(n: usize, f: impl Fn(usize) -> Option<&'a str>) -> ArrayRef {
    Arc::new((0..n).map(f).collect::<StringArray>())
}

fn to_batch(schema: &SchemaRef, events: &[Event]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let props: Vec<Option<Vec<u8>>> = events
        .iter()
        .map(|e| (!e.properties.is_empty()).then(|| encode_props(&e.properties)))
        .collect();
    let n = events.len();
    let cols: Vec<ArrayRef> = vec![
        strings(n, |i| Some(&events[i].event_id)),
        strings(n, |i| Some(&events[i].user_id)),
        strings(n, |i| Some(&events[i].event_type)),
        strings(n, |i| events[i].platform.as_deref()),
        strings(n, |i| events[i].journey.as_deref()),
        strings(n, |i| events[i].chat_type.as_deref()),
        strings(n, |i| events[i].warning_action.as_deref()),
        strings(n, |i| events[i].account_id.as_deref()),
        strings(n, |i| events[i].order_id.as_deref()),
        strings(n, |i| events[i].currency.as_deref()),
        strings(n, |i| Some(&events[i].person_id)),
        strings(n, |i| Some(&events[i].source_file)),
        Arc::new(
            props
                .iter()
                .map(|p| p.as_deref())
                .collect::<arrow::array::BinaryArray>(),
        ),
        Arc::new(Int64Array::from_iter_values(events.iter().map(|e| e.ts_ms))),
        Arc::new(events.iter().map(|e| e.amount).collect::<Int64Array>()),
        Arc::new(UInt64Array::from_iter_values(
            events.iter().map(|e| e.content_hash),
        )),
        Arc::new(UInt64Array::from_iter_values(
            events.iter().map(|e| e.source_line),
        )),
        Arc::new(UInt64Array::from_iter_values(events.iter().map(|e| e.run))),
        Arc::new(UInt32Array::from_iter_values(events.iter().map(|e| e.file))),
        Arc::new(UInt64Array::from_iter_values(events.iter().map(|e| e.row))),
    ];
    RecordBatch::try_new(schema.clone(), cols)
}

fn from_batch(batch: &RecordBatch, sources: &mut BTreeMap<String, Arc<str>>) -> Vec<Event> {
    let s: Vec<&StringArray> = (0..STRINGS.len())
        .map(|i| batch.column(i).as_string::<i32>())
        .collect();
    let props = batch.column(STRINGS.len()).as_binary::<i32>();
    let opt = |a: &StringArray, i: usize| a.is_valid(i).then(|| a.value(i).to_string());
    let ts = batch.column(13).as_primitive::<Int64Type>();
    let amount = batch.column(14).as_primitive::<Int64Type>();
    let hash = batch.column(15).as_primitive::<UInt64Type>();
    let line = batch.column(16).as_primitive::<UInt64Type>();
    let run = batch.column(17).as_primitive::<UInt64Type>();
    let file = batch.column(18).as_primitive::<UInt32Type>();
    let row = batch.column(19).as_primitive::<UInt64Type>();
    (0..batch.num_rows())
        .map(|i| {
            let src = s[11].value(i);
            let source_file = match sources.get(src) {
                Some(a) => a.clone(),
                None => {
                    let a: Arc<str> = Arc::from(src);
                    sources.insert(src.to_string(), a.clone());
                    a
                }
            };
            Event {
                event_id: s[0].value(i).to_string(),
                user_id: s[1].value(i).to_string(),
                event_type: s[2].value(i).to_string(),
                ts_ms: ts.value(i),
                platform: opt(s[3], i),
                journey: opt(s[4], i),
                chat_type: opt(s[5], i),
                warning_action: opt(s[6], i),
                account_id: opt(s[7], i),
                order_id: opt(s[8], i),
                amount: amount.is_valid(i).then(|| amount.value(i)),
                currency: opt(s[9], i),
                properties: if props.is_valid(i) {
                    decode_props(props.value(i))
                } else {
                    BTreeMap::new()
                },
                person_id: s[10].value(i).to_string(),
                content_hash: hash.value(i),
                source_file,
                source_line: line.value(i),
                run: run.value(i),
                file: file.value(i),
                row: row.value(i),
            }
        })
        .collect()
}

struct Part {
    pending: Vec<Event>,
    writer: Option<FileWriter<BufWriter<File>>>,
}

/// A set of partitions, each an Arrow IPC file written in the order rows are pushed.
pub(crate) struct Spill {
    dir: PathBuf,
    schema: SchemaRef,
    parts: Vec<Part>,
    chunk: usize,
}

impl Spill {
    pub fn new(dir: &Path, name: &str, partitions: usize) -> Result<Spill, IngestError> {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| IngestError::store(&dir, e))?;
        Ok(Spill {
            dir,
            schema: schema(),
            parts: (0..partitions)
                .map(|_| Part {
                    pending: Vec::new(),
                    writer: None,
                })
                .collect(),
            chunk: chunk_rows(partitions),
        })
    }

    fn path(&self, part: usize) -> PathBuf {
        self.dir.join(format!("{part:05}.arrow"))
    }

    pub fn push(&mut self, part: usize, event: Event) -> Result<(), IngestError> {
        self.parts[part].pending.push(event);
        if self.parts[part].pending.len() >= self.chunk {
            self.flush(part)?;
        }
        Ok(())
    }

    fn flush(&mut self, part: usize) -> Result<(), IngestError> {
        if self.parts[part].pending.is_empty() {
            return Ok(());
        }
        let path = self.path(part);
        let err = |e: &dyn std::fmt::Display| IngestError::store(&path, format!("spill: {e}"));
        if self.parts[part].writer.is_none() {
            let file = File::create(&path).map_err(|e| err(&e))?;
            // lz4: spilled rows are mostly repeated strings, and a large run spills each row
            // three times (by event_id, accepted, by bucket).
            let options = arrow::ipc::writer::IpcWriteOptions::default()
                .try_with_compression(Some(arrow::ipc::CompressionType::LZ4_FRAME))
                .map_err(|e| err(&e))?;
            let w = FileWriter::try_new_with_options(BufWriter::new(file), &self.schema, options)
                .map_err(|e| err(&e))?;
            self.parts[part].writer = Some(w);
        }
        let batch = to_batch(&self.schema, &self.parts[part].pending).map_err(|e| err(&e))?;
        self.parts[part].pending.clear();
        let writer = self.parts[part].writer.as_mut().expect("opened above");
        writer.write(&batch).map_err(|e| err(&e))
    }

    /// Closes every partition; returns the path of each non-empty one.
    pub fn finish(mut self) -> Result<Vec<Option<PathBuf>>, IngestError> {
        let mut out = Vec::with_capacity(self.parts.len());
        for part in 0..self.parts.len() {
            self.flush(part)?;
            let path = self.path(part);
            match self.parts[part].writer.take() {
                Some(mut w) => {
                    w.finish()
                        .map_err(|e| IngestError::store(&path, format!("spill: {e}")))?;
                    out.push(Some(path));
                }
                None => out.push(None),
            }
        }
        Ok(out)
    }
}

/// Reads a spilled partition back, batch by batch, in the order it was written, then deletes
/// it (each partition is read once), so the scratch space of a run stays near one copy of it.
pub(crate) fn read_spill(
    path: &Path,
    mut each: impl FnMut(Vec<Event>) -> Result<(), IngestError>,
) -> Result<(), IngestError> {
    let err = |e: &dyn std::fmt::Display| IngestError::store(path, format!("spill: {e}"));
    let file = File::open(path).map_err(|e| err(&e))?;
    let reader = FileReader::try_new(std::io::BufReader::new(file), None).map_err(|e| err(&e))?;
    let mut sources = BTreeMap::new();
    for batch in reader {
        let batch = batch.map_err(|e| err(&e))?;
        each(from_batch(&batch, &mut sources))?;
    }
    std::fs::remove_file(path).map_err(|e| err(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_shrink_as_partitions_grow() {
        assert_eq!(chunk_rows(1), 4096);
        assert_eq!(chunk_rows(64), 4096);
        assert_eq!(chunk_rows(512), 512);
        assert_eq!(chunk_rows(65_536), 64);
        assert!((1..=65_536).all(|p| chunk_rows(p) * p <= BUFFERED_ROWS.max(64 * p)));
    }

    #[test]
    fn round_trip_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut spill = Spill::new(dir.path(), "t", 3).unwrap();
        let mut want: Vec<Vec<Event>> = vec![Vec::new(); 3];
        for i in 0..10_000u64 {
            let mut e = Event {
                event_id: format!("e{i}"),
                user_id: "u".into(),
                event_type: "purchase".into(),
                ts_ms: i as i64,
                platform: None,
                journey: Some("j".into()),
                chat_type: None,
                warning_action: None,
                account_id: None,
                order_id: Some("o".into()),
                amount: Some(-5),
                currency: None,
                properties: BTreeMap::new(),
                person_id: String::new(),
                content_hash: i * 7,
                source_file: Arc::from("f.csv"),
                source_line: i,
                run: 2,
                file: (i % 5) as u32,
                row: i + 1,
            };
            if i % 3 == 0 {
                e.properties.insert("campaign".into(), format!("c{i}"));
            }
            let part = (i % 2) as usize; // partition 2 stays empty
            want[part].push(e.clone());
            spill.push(part, e).unwrap();
        }
        let paths = spill.finish().unwrap();
        assert!(paths[2].is_none());
        for part in 0..2 {
            let mut got = Vec::new();
            read_spill(paths[part].as_ref().unwrap(), |batch| {
                got.extend(batch);
                Ok(())
            })
            .unwrap();
            assert_eq!(got, want[part]);
        }
    }
}
