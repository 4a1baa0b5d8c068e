//! Parquet files of the store: bucket files of events, the identity table, quarantine files.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayBuilder, ArrayRef, AsArray, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use funnel_core::schema;
use funnel_core::{FileSum, SumWriter};
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::WriterProperties;

use crate::IngestError;
use crate::batch::{Cols, from_store, store_schema, to_store};
use crate::limits::{QUARANTINE_TEXT_BYTES, cut};

const BATCH_ROWS: usize = 64 * 1024;

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

/// Default target rows of a row group of a bucket file. Row groups of bucket files end only
/// where the person changes, so a reader can process each row group on its own, in bounded
/// memory.
pub const ROW_GROUP_ROWS: usize = 64 * 1024;

fn writer_props(sorting: Option<Vec<SortingColumn>>) -> WriterProperties {
    // Bucket files (sorted) end their row groups themselves, at person boundaries.
    let max_rows = if sorting.is_some() {
        None
    } else {
        Some(256 * 1024)
    };
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).expect("level 1 is valid"),
        ))
        .set_max_row_group_row_count(max_rows)
        .set_sorting_columns(sorting)
        .set_created_by(format!("funnel {}", funnel_core::TOOL_VERSION))
        .build()
}

/// The Parquet writer of a store file: its size and checksum are computed as it is written.
type Writer = ArrowWriter<SumWriter<File>>;

/// A Parquet writer on a new file at `path` (parent directories created).
fn open_writer(
    path: &Path,
    schema: SchemaRef,
    props: WriterProperties,
) -> Result<Writer, IngestError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| IngestError::store(parent, e))?;
    }
    let file = File::create(path).map_err(|e| IngestError::store(path, e))?;
    ArrowWriter::try_new(SumWriter::new(file), schema, Some(props))
        .map_err(|e| IngestError::store(path, e))
}

/// Finishes a Parquet file and syncs it to disk; returns its size and checksum.
fn close(path: &Path, writer: Writer) -> Result<FileSum, IngestError> {
    let (file, sum) = writer
        .into_inner()
        .map_err(|e| IngestError::store(path, e))?
        .into_parts();
    file.sync_all().map_err(|e| IngestError::store(path, e))?;
    Ok(sum)
}

/// A Parquet file created on its first batch (nothing written: no file).
struct LazyParquet {
    path: std::path::PathBuf,
    schema: SchemaRef,
    writer: Option<Writer>,
}

impl LazyParquet {
    fn new(path: std::path::PathBuf, schema: SchemaRef) -> LazyParquet {
        LazyParquet {
            path,
            schema,
            writer: None,
        }
    }

    fn write(
        &mut self,
        batch: Result<RecordBatch, arrow::error::ArrowError>,
    ) -> Result<(), IngestError> {
        let batch = batch.map_err(|e| IngestError::store(&self.path, e))?;
        if self.writer.is_none() {
            let w = open_writer(&self.path, self.schema.clone(), writer_props(None))?;
            self.writer = Some(w);
        }
        let writer = self.writer.as_mut().expect("opened above");
        writer
            .write(&batch)
            .map_err(|e| IngestError::store(&self.path, e))
    }

    /// The file's path and sum if anything was written.
    fn finish(self) -> Result<Option<(std::path::PathBuf, FileSum)>, IngestError> {
        match self.writer {
            Some(w) => {
                let sum = close(&self.path, w)?;
                Ok(Some((self.path, sum)))
            }
            None => Ok(None),
        }
    }
}

fn write_batches(
    path: &Path,
    schema: SchemaRef,
    props: WriterProperties,
    batches: impl Iterator<Item = Result<Option<RecordBatch>, arrow::error::ArrowError>>,
) -> Result<FileSum, IngestError> {
    let mut writer = open_writer(path, schema, props)?;
    // `None` ends the current row group.
    for batch in batches {
        match batch.map_err(|e| IngestError::store(path, e))? {
            Some(batch) => writer.write(&batch),
            None => writer.flush(),
        }
        .map_err(|e| IngestError::store(path, e))?;
    }
    close(path, writer)
}

/// Writes a work batch (sorted by person_id, ts, event_id) as one bucket file, in row groups
/// of about `row_group_rows` that never split a person; `properties` names the property
/// columns (sorted).
pub(crate) fn write_events(
    path: &Path,
    properties: &[String],
    sorted: &RecordBatch,
    row_group_rows: usize,
) -> Result<FileSum, IngestError> {
    let schema = store_schema(properties);
    let sorting = ["person_id", "ts", "event_id"]
        .iter()
        .map(|c| SortingColumn {
            column_idx: schema.index_of(c).expect("sort column in schema") as i32,
            descending: false,
            nulls_first: false,
        })
        .collect();
    let props = writer_props(Some(sorting));
    let batches = person_groups(Cols::of(sorted).person_id, row_group_rows)
        .into_iter()
        .flat_map(|g| {
            (g.start..g.end)
                .step_by(BATCH_ROWS)
                .map(move |s| (s, BATCH_ROWS.min(g.end - s)))
                .map(|(s, n)| to_store(&sorted.slice(s, n), properties).map(Some))
                .chain([Ok(None)])
        });
    write_batches(path, schema.clone(), props, batches)
}

/// Row ranges of about `target` rows (sorted events) that never split a person: a range ends
/// at the first person boundary once it holds `len / ceil(len / target)` rows or more.
fn person_groups(persons: &StringArray, target: usize) -> Vec<std::ops::Range<usize>> {
    let n = persons.len();
    let size = n.div_ceil(n.div_ceil(target.max(1)).max(1)).max(1);
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=n {
        if i == n || (i - start >= size && persons.value(i) != persons.value(i - 1)) {
            out.push(start..i);
            start = i;
        }
    }
    out
}

/// A reader of a file of the committed generation: what it cannot read makes the store damaged.
fn open_reader(
    path: &Path,
    columns: Option<&[&str]>,
) -> Result<parquet::arrow::arrow_reader::ParquetRecordBatchReader, IngestError> {
    let file = File::open(path).map_err(|e| IngestError::damaged(path, e))?;
    let mut builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| IngestError::damaged(path, e))?;
    crate::footer::check(builder.metadata()).map_err(|e| IngestError::damaged(path, e))?;
    if let Some(cols) = columns {
        let mask = ProjectionMask::columns(builder.parquet_schema(), cols.iter().copied());
        builder = builder.with_projection(mask);
    }
    builder
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| IngestError::damaged(path, e))
}

fn column<'a>(
    batch: &'a RecordBatch,
    name: &str,
    path: &Path,
) -> Result<&'a ArrayRef, IngestError> {
    batch
        .column_by_name(name)
        .ok_or_else(|| IngestError::damaged(path, format!("lacks column {name}")))
}

/// Batches of `(event_id, content hash)` of every event in a bucket file or an id-index file
/// (columns 0 and 1).
pub(crate) fn read_ids(path: &Path) -> Result<Vec<RecordBatch>, IngestError> {
    let mut out = Vec::new();
    for batch in open_reader(path, Some(&[schema::EVENT_ID, schema::CONTENT_HASH]))? {
        let batch = batch.map_err(|e| IngestError::damaged(path, e))?;
        let ids = column(&batch, schema::EVENT_ID, path)?.clone();
        let hashes = column(&batch, schema::CONTENT_HASH, path)?.clone();
        if ids.data_type() != &DataType::Utf8 || hashes.data_type() != &DataType::UInt64 {
            return Err(IngestError::damaged(
                path,
                "event_id or content hash of another type",
            ));
        }
        let pair = RecordBatch::try_new(ids_schema(), vec![ids, hashes])
            .map_err(|e| IngestError::damaged(path, e))?;
        out.push(pair);
    }
    Ok(out)
}

/// Every event of a bucket file, as work batches.
pub(crate) fn read_events(path: &Path) -> Result<Vec<RecordBatch>, IngestError> {
    let mut out = Vec::new();
    for batch in open_reader(path, None)? {
        let batch = batch.map_err(|e| IngestError::damaged(path, e))?;
        out.push(from_store(&batch).map_err(|e| IngestError::damaged(path, e))?);
    }
    Ok(out)
}

fn ids_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8(schema::EVENT_ID, false),
        Field::new(schema::CONTENT_HASH, DataType::UInt64, false),
    ]))
}

/// Writes one partition of the event-id index (sorted by event_id).
pub(crate) fn write_ids<S: AsRef<str>>(
    path: &Path,
    ids: &[(S, u64)],
) -> Result<FileSum, IngestError> {
    let schema = ids_schema();
    let batches = ids.chunks(BATCH_ROWS).map(|chunk| {
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    chunk.iter().map(|p| p.0.as_ref()),
                )),
                Arc::new(UInt64Array::from_iter_values(chunk.iter().map(|p| p.1))),
            ],
        )
        .map(Some)
    });
    write_batches(path, schema.clone(), writer_props(None), batches)
}

fn identity_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("id", false),
        utf8(schema::PERSON_ID, false),
    ]))
}

/// Writes the identity file `(id, person_id)`, pushed in id order, one batch at a time (the
/// identity holds every linked id of the store: it is never materialised as strings at once).
pub(crate) struct IdentityWriter {
    file: LazyParquet,
    ids: arrow::array::StringBuilder,
    persons: arrow::array::StringBuilder,
}

impl IdentityWriter {
    pub fn new(path: std::path::PathBuf) -> IdentityWriter {
        IdentityWriter {
            file: LazyParquet::new(path, identity_schema()),
            ids: arrow::array::StringBuilder::new(),
            persons: arrow::array::StringBuilder::new(),
        }
    }

    pub fn push(&mut self, id: &str, person: &str) -> Result<(), IngestError> {
        self.ids.append_value(id);
        self.persons.append_value(person);
        if self.ids.len() >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), IngestError> {
        if self.ids.is_empty() {
            return Ok(());
        }
        let batch = RecordBatch::try_new(
            identity_schema(),
            vec![Arc::new(self.ids.finish()), Arc::new(self.persons.finish())],
        );
        self.file.write(batch)
    }

    /// Closes the file; returns its path and sum if any pair was written.
    pub fn finish(mut self) -> Result<Option<(std::path::PathBuf, FileSum)>, IngestError> {
        self.flush()?;
        self.file.finish()
    }
}

/// Calls `each(id, person_id)` for every row of an identity file.
pub(crate) fn read_identity(
    path: &Path,
    mut each: impl FnMut(&str, &str) -> Result<(), IngestError>,
) -> Result<(), IngestError> {
    for batch in open_reader(path, None)? {
        let batch = batch.map_err(|e| IngestError::damaged(path, e))?;
        let ids = column(&batch, "id", path)?.as_string::<i32>();
        let persons = column(&batch, schema::PERSON_ID, path)?.as_string::<i32>();
        for i in 0..batch.num_rows() {
            each(ids.value(i), persons.value(i))?;
        }
    }
    Ok(())
}

/// A quarantined row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QuarantineRow {
    pub run: u64,
    pub source_file: Arc<str>,
    pub line: Option<u64>,
    pub row: u64,
    pub reason: &'static str,
    pub field: Option<String>,
    pub value: Option<String>,
    pub message: String,
    pub raw: String,
}

fn quarantine_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("run", DataType::UInt64, false),
        utf8("source_file", false),
        Field::new("line", DataType::UInt64, true),
        Field::new("row", DataType::UInt64, false),
        utf8("reason", false),
        utf8("field", true),
        utf8("value", true),
        utf8("message", false),
        utf8("raw", false),
    ]))
}

/// Streams quarantined rows into one Parquet file, created on the first row.
pub(crate) struct QuarantineWriter {
    file: LazyParquet,
    pending: Vec<QuarantineRow>,
    rows: u64,
}

impl QuarantineWriter {
    pub fn new(path: std::path::PathBuf) -> QuarantineWriter {
        QuarantineWriter {
            file: LazyParquet::new(path, quarantine_schema()),
            pending: Vec::new(),
            rows: 0,
        }
    }

    /// Adds a row; its `raw` and `value` are cut to [`QUARANTINE_TEXT_BYTES`] here, whatever
    /// made them (the one place the limit is applied to what the quarantine keeps).
    pub fn push(&mut self, mut row: QuarantineRow) -> Result<(), IngestError> {
        let keep = |t: &mut String| {
            if t.len() > QUARANTINE_TEXT_BYTES {
                *t = cut(t, QUARANTINE_TEXT_BYTES);
            }
        };
        keep(&mut row.raw);
        if let Some(v) = row.value.as_mut() {
            keep(v);
        }
        self.rows += 1;
        self.pending.push(row);
        if self.pending.len() >= 8192 {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), IngestError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = quarantine_batch(&self.pending);
        self.pending.clear();
        self.file.write(batch)
    }

    /// Closes the file; returns its path and sum if any row was written.
    pub fn finish(mut self) -> Result<Option<(std::path::PathBuf, FileSum)>, IngestError> {
        self.flush()?;
        self.file.finish()
    }
}

fn quarantine_batch(c: &[QuarantineRow]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let schema = quarantine_schema();
    {
        let s = |f: &dyn Fn(&QuarantineRow) -> Option<&str>| -> ArrayRef {
            Arc::new(c.iter().map(f).collect::<StringArray>())
        };
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(UInt64Array::from_iter_values(c.iter().map(|r| r.run))) as ArrayRef,
                s(&|r| Some(&r.source_file)),
                Arc::new(c.iter().map(|r| r.line).collect::<UInt64Array>()),
                Arc::new(UInt64Array::from_iter_values(c.iter().map(|r| r.row))),
                s(&|r| Some(r.reason)),
                s(&|r| r.field.as_deref()),
                s(&|r| r.value.as_deref()),
                s(&|r| Some(&r.message)),
                s(&|r| Some(&r.raw)),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::batch::{Builder, event_at, tests::event};
    use crate::event::Event;
    use arrow::datatypes::UInt64Type;

    fn batch_of(events: &[Event]) -> RecordBatch {
        let mut b = Builder::default();
        events.iter().for_each(|e| b.push(e));
        b.finish()
    }

    #[test]
    fn events_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b/part.parquet");
        let events: Vec<Event> = (0..10)
            .map(|i| Event {
                file: 0,
                row: 0,
                ..event(i)
            })
            .collect();
        let props: Vec<String> = ["campaign", "item_id", "zz"].map(String::from).into();
        let sum = write_events(&path, &props, &batch_of(&events), ROW_GROUP_ROWS).unwrap();
        assert_eq!(sum, FileSum::of_file(&path).unwrap());
        let batches = read_events(&path).unwrap();
        let back: Vec<Event> = batches
            .iter()
            .flat_map(|b| (0..b.num_rows()).map(|i| event_at(b, i)))
            .collect();
        assert_eq!(back, events);
        let ids = read_ids(&path).unwrap();
        assert_eq!(ids.iter().map(RecordBatch::num_rows).sum::<usize>(), 10);
        let hashes = ids[0].column(1).as_primitive::<UInt64Type>();
        assert_eq!(hashes.value(3), events[3].content_hash);
    }

    #[test]
    fn row_groups_never_split_a_person() {
        // Persons with 1..=7 events each, in order.
        let mut persons = Vec::new();
        for p in 0..200u64 {
            for _ in 0..(p % 7 + 1) {
                persons.push(format!("p{p:04}"));
            }
        }
        let persons = StringArray::from(persons);
        for target in [1, 5, 16, 100, 10_000] {
            let groups = person_groups(&persons, target);
            assert_eq!(groups.first().unwrap().start, 0);
            assert_eq!(groups.last().unwrap().end, persons.len());
            for w in groups.windows(2) {
                assert_eq!(w[0].end, w[1].start);
                assert_ne!(persons.value(w[0].end - 1), persons.value(w[1].start));
            }
            // Never more than a person (7 events) past the equalised target.
            assert!(groups.iter().all(|g| g.len() < target.max(1) + 7));
        }
        assert!(person_groups(&StringArray::from(Vec::<String>::new()), 10).is_empty());

        // A bucket file of more than ROW_GROUP_ROWS rows: its row groups end at person changes.
        let n = ROW_GROUP_ROWS + 5_000;
        let big = batch_of(&(0..n as u64).map(event).collect::<Vec<_>>());
        let persons = StringArray::from_iter_values((0..n).map(|i| format!("p{:06}", i / 3)));
        let big = crate::batch::with_persons(&big, persons);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.parquet");
        let props: Vec<String> = ["campaign", "item_id", "zz"].map(String::from).into();
        write_events(&path, &props, &big, ROW_GROUP_ROWS).unwrap();
        let meta = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap())
            .unwrap()
            .metadata()
            .clone();
        let sizes: Vec<i64> = meta.row_groups().iter().map(|g| g.num_rows()).collect();
        assert_eq!(sizes.len(), 2, "{sizes:?}");
        assert_eq!(sizes.iter().sum::<i64>(), n as i64);
        assert_eq!(
            sizes[0] % 3,
            0,
            "a person split between row groups: {sizes:?}"
        );
    }

    #[test]
    fn identity_and_quarantine_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("identity.parquet");
        let pairs = vec![
            ("a".to_string(), "a".to_string()),
            ("b".to_string(), "a".to_string()),
        ];
        let mut w = IdentityWriter::new(p.clone());
        for (a, b) in &pairs {
            w.push(a, b).unwrap();
        }
        // The sum computed while writing is the file's.
        let (path, sum) = w.finish().unwrap().unwrap();
        assert_eq!((&path, &sum), (&p, &FileSum::of_file(&p).unwrap()));
        let mut back = Vec::new();
        read_identity(&p, |a, b| {
            back.push((a.to_string(), b.to_string()));
            Ok(())
        })
        .unwrap();
        assert_eq!(back, pairs);
        assert_eq!(
            IdentityWriter::new(dir.path().join("none.parquet"))
                .finish()
                .unwrap(),
            None
        );
        let q = dir.path().join("q/run.parquet");
        let row = QuarantineRow {
            run: 1,
            source_file: Arc::from("f.csv"),
            line: Some(3),
            row: 2,
            reason: "bad_amount",
            field: Some("amount".into()),
            value: Some("x".into()),
            message: "not a decimal number".into(),
            raw: "e1,u1,purchase,...".into(),
        };
        let mut w = QuarantineWriter::new(q.clone());
        w.push(row).unwrap();
        let (path, sum) = w.finish().unwrap().unwrap();
        assert_eq!((&path, &sum), (&q, &FileSum::of_file(&q).unwrap()));
        assert!(q.metadata().unwrap().len() > 0);
        assert_eq!(
            QuarantineWriter::new(dir.path().join("none.parquet"))
                .finish()
                .unwrap(),
            None
        );
    }
}
