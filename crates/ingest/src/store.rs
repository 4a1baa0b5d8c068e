//! Parquet files of the store: bucket files of events, the identity table, quarantine files.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayBuilder, ArrayRef, AsArray, Decimal128Array, RecordBatch, StringArray,
    TimestampMillisecondArray, UInt64Array,
};
use arrow::datatypes::{
    DataType, Decimal128Type, Field, Schema, SchemaRef, TimeUnit, TimestampMillisecondType,
    UInt64Type,
};
use funnel_core::schema::{self, AMOUNT_PRECISION, AMOUNT_SCALE};
use funnel_core::{FileSum, SumWriter};
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::WriterProperties;

use crate::IngestError;
use crate::event::Event;
use crate::limits::{QUARANTINE_TEXT_BYTES, cut};

const BATCH_ROWS: usize = 64 * 1024;

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

/// The schema of a bucket file: contract columns, person_id, properties (sorted), internal columns.
pub(crate) fn events_schema(properties: &[String]) -> SchemaRef {
    let mut fields = vec![
        utf8(schema::EVENT_ID, false),
        utf8(schema::USER_ID, false),
        utf8(schema::EVENT_TYPE, false),
        Field::new(
            schema::TS,
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        utf8(schema::PLATFORM, true),
        utf8(schema::JOURNEY, true),
        utf8(schema::CHAT_TYPE, true),
        utf8(schema::WARNING_ACTION, true),
        utf8(schema::ACCOUNT_ID, true),
        utf8(schema::ORDER_ID, true),
        Field::new(
            schema::AMOUNT,
            DataType::Decimal128(AMOUNT_PRECISION, AMOUNT_SCALE as i8),
            true,
        ),
        utf8(schema::CURRENCY, true),
        utf8(schema::PERSON_ID, false),
    ];
    fields.extend(properties.iter().map(|p| utf8(p, true)));
    fields.push(Field::new(schema::CONTENT_HASH, DataType::UInt64, false));
    fields.push(utf8(schema::SOURCE_FILE, false));
    fields.push(Field::new(schema::SOURCE_LINE, DataType::UInt64, false));
    fields.push(Field::new(schema::INGEST_RUN, DataType::UInt64, false));
    Arc::new(Schema::new(fields))
}

/// Default target rows of a row group of a bucket file. Row groups of bucket files end only
/// where the person changes, so a reader can process each row group on its own, in bounded
/// memory.
pub(crate) const ROW_GROUP_ROWS: usize = 64 * 1024;

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

fn opt_strings<'a>(events: &[&'a Event], f: impl Fn(&'a Event) -> Option<&'a str>) -> ArrayRef {
    Arc::new(events.iter().map(|e| f(e)).collect::<StringArray>())
}

fn events_batch(
    schema: &SchemaRef,
    properties: &[String],
    events: &[&Event],
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut cols: Vec<ArrayRef> = vec![
        opt_strings(events, |e| Some(&e.event_id)),
        opt_strings(events, |e| Some(&e.user_id)),
        opt_strings(events, |e| Some(&e.event_type)),
        Arc::new(
            TimestampMillisecondArray::from_iter_values(events.iter().map(|e| e.ts_ms))
                .with_timezone("UTC"),
        ),
        opt_strings(events, |e| e.platform.as_deref()),
        opt_strings(events, |e| e.journey.as_deref()),
        opt_strings(events, |e| e.chat_type.as_deref()),
        opt_strings(events, |e| e.warning_action.as_deref()),
        opt_strings(events, |e| e.account_id.as_deref()),
        opt_strings(events, |e| e.order_id.as_deref()),
        Arc::new(
            events
                .iter()
                .map(|e| e.amount.map(i128::from))
                .collect::<Decimal128Array>()
                .with_precision_and_scale(AMOUNT_PRECISION, AMOUNT_SCALE as i8)?,
        ),
        opt_strings(events, |e| e.currency.as_deref()),
        opt_strings(events, |e| Some(&e.person_id)),
    ];
    for p in properties {
        cols.push(opt_strings(events, |e| {
            e.properties.get(p).map(String::as_str)
        }));
    }
    cols.push(Arc::new(UInt64Array::from_iter_values(
        events.iter().map(|e| e.content_hash),
    )));
    cols.push(opt_strings(events, |e| Some(&e.source_file)));
    cols.push(Arc::new(UInt64Array::from_iter_values(
        events.iter().map(|e| e.source_line),
    )));
    cols.push(Arc::new(UInt64Array::from_iter_values(
        events.iter().map(|e| e.run),
    )));
    RecordBatch::try_new(schema.clone(), cols)
}

/// Writes events (already sorted by person_id, ts, event_id) as one bucket file, in row groups
/// of about `row_group_rows` that never split a person.
pub(crate) fn write_events(
    path: &Path,
    properties: &[String],
    events: &[&Event],
    row_group_rows: usize,
) -> Result<FileSum, IngestError> {
    let schema = events_schema(properties);
    let sorting = ["person_id", "ts", "event_id"]
        .iter()
        .map(|c| SortingColumn {
            column_idx: schema.index_of(c).expect("sort column in schema") as i32,
            descending: false,
            nulls_first: false,
        })
        .collect();
    let props = writer_props(Some(sorting));
    let batches = person_groups(events, row_group_rows)
        .into_iter()
        .flat_map(|g| {
            let group = &events[g];
            group
                .chunks(BATCH_ROWS)
                .map(|chunk| events_batch(&schema, properties, chunk).map(Some))
                .chain([Ok(None)])
        });
    write_batches(path, schema.clone(), props, batches)
}

/// Row ranges of about `target` rows (sorted events) that never split a person: a range ends
/// at the first person boundary once it holds `len / ceil(len / target)` rows or more.
fn person_groups(events: &[&Event], target: usize) -> Vec<std::ops::Range<usize>> {
    let n = events.len();
    let size = n.div_ceil(n.div_ceil(target.max(1)).max(1)).max(1);
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=n {
        if i == n || (i - start >= size && events[i].person_id != events[i - 1].person_id) {
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

/// `(event_id, content hash)` of every event in a bucket file or an id-index file.
pub(crate) fn read_event_ids(
    path: &Path,
    into: &mut HashMap<String, u64>,
) -> Result<(), IngestError> {
    for batch in open_reader(path, Some(&[schema::EVENT_ID, schema::CONTENT_HASH]))? {
        let batch = batch.map_err(|e| IngestError::damaged(path, e))?;
        let ids = column(&batch, schema::EVENT_ID, path)?.as_string::<i32>();
        let hashes = column(&batch, schema::CONTENT_HASH, path)?.as_primitive::<UInt64Type>();
        for i in 0..batch.num_rows() {
            into.insert(ids.value(i).to_string(), hashes.value(i));
        }
    }
    Ok(())
}

/// Every event of a bucket file.
pub(crate) fn read_events(path: &Path) -> Result<Vec<Event>, IngestError> {
    let known: Vec<&str> = schema::CONTRACT_COLUMNS
        .iter()
        .chain([schema::PERSON_ID].iter())
        .chain(schema::INTERNAL_COLUMNS.iter())
        .copied()
        .collect();
    let mut out = Vec::new();
    let mut sources: HashMap<String, Arc<str>> = HashMap::new();
    for batch in open_reader(path, None)? {
        let batch = batch.map_err(|e| IngestError::damaged(path, e))?;
        let s = |name: &str| -> Result<&StringArray, IngestError> {
            Ok(column(&batch, name, path)?.as_string::<i32>())
        };
        let opt = |a: &StringArray, i: usize| a.is_valid(i).then(|| a.value(i).to_string());
        let (event_id, user_id, event_type) = (
            s(schema::EVENT_ID)?,
            s(schema::USER_ID)?,
            s(schema::EVENT_TYPE)?,
        );
        let ts = column(&batch, schema::TS, path)?.as_primitive::<TimestampMillisecondType>();
        let (platform, journey, chat_type) = (
            s(schema::PLATFORM)?,
            s(schema::JOURNEY)?,
            s(schema::CHAT_TYPE)?,
        );
        let (warning_action, account_id, order_id) = (
            s(schema::WARNING_ACTION)?,
            s(schema::ACCOUNT_ID)?,
            s(schema::ORDER_ID)?,
        );
        let amount = column(&batch, schema::AMOUNT, path)?.as_primitive::<Decimal128Type>();
        let currency = s(schema::CURRENCY)?;
        let person = s(schema::PERSON_ID)?;
        let hash = column(&batch, schema::CONTENT_HASH, path)?.as_primitive::<UInt64Type>();
        let source = s(schema::SOURCE_FILE)?;
        let line = column(&batch, schema::SOURCE_LINE, path)?.as_primitive::<UInt64Type>();
        let run = column(&batch, schema::INGEST_RUN, path)?.as_primitive::<UInt64Type>();
        let props: Vec<(String, &StringArray)> = batch
            .schema()
            .fields()
            .iter()
            .zip(batch.columns())
            .filter(|(f, _)| !known.contains(&f.name().as_str()))
            .map(|(f, a)| (f.name().clone(), a.as_string::<i32>()))
            .collect();
        for i in 0..batch.num_rows() {
            let src = source.value(i);
            let source_file = match sources.get(src) {
                Some(a) => a.clone(),
                None => {
                    let a: Arc<str> = Arc::from(src);
                    sources.insert(src.to_string(), a.clone());
                    a
                }
            };
            out.push(Event {
                event_id: event_id.value(i).to_string(),
                user_id: user_id.value(i).to_string(),
                event_type: event_type.value(i).to_string(),
                ts_ms: ts.value(i),
                platform: opt(platform, i),
                journey: opt(journey, i),
                chat_type: opt(chat_type, i),
                warning_action: opt(warning_action, i),
                account_id: opt(account_id, i),
                order_id: opt(order_id, i),
                amount: amount.is_valid(i).then(|| amount.value(i) as i64),
                currency: opt(currency, i),
                properties: props
                    .iter()
                    .filter(|(_, a)| a.is_valid(i))
                    .map(|(n, a)| (n.clone(), a.value(i).to_string()))
                    .collect(),
                person_id: person.value(i).to_string(),
                content_hash: hash.value(i),
                source_file,
                source_line: line.value(i),
                run: run.value(i),
                file: 0,
                row: 0,
            });
        }
    }
    Ok(out)
}

/// The first members of `(key, value)` pairs as a string column.
fn keys<T>(pairs: &[(String, T)]) -> ArrayRef {
    Arc::new(
        pairs
            .iter()
            .map(|p| Some(p.0.as_str()))
            .collect::<StringArray>(),
    )
}

/// Writes one partition of the event-id index (sorted by event_id).
pub(crate) fn write_ids(path: &Path, ids: &[(String, u64)]) -> Result<FileSum, IngestError> {
    let schema = Arc::new(Schema::new(vec![
        utf8(schema::EVENT_ID, false),
        Field::new(schema::CONTENT_HASH, DataType::UInt64, false),
    ]));
    let batches = ids.chunks(BATCH_ROWS).map(|chunk| {
        RecordBatch::try_new(
            schema.clone(),
            vec![
                keys(chunk),
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
    mut each: impl FnMut(&str, &str),
) -> Result<(), IngestError> {
    for batch in open_reader(path, None)? {
        let batch = batch.map_err(|e| IngestError::damaged(path, e))?;
        let ids = column(&batch, "id", path)?.as_string::<i32>();
        let persons = column(&batch, schema::PERSON_ID, path)?.as_string::<i32>();
        for i in 0..batch.num_rows() {
            each(ids.value(i), persons.value(i));
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
    use std::collections::BTreeMap;

    fn ev(i: u64) -> Event {
        let mut e = Event {
            event_id: format!("e{i}"),
            user_id: format!("u{}", i % 3),
            event_type: "purchase".into(),
            ts_ms: 1_600_000_000_000 + i as i64,
            platform: Some("taobao".into()),
            journey: None,
            chat_type: None,
            warning_action: None,
            account_id: None,
            order_id: Some(format!("o{i}")),
            amount: Some(1_990_000),
            currency: Some("CNY".into()),
            properties: BTreeMap::new(),
            person_id: format!("u{}", i % 3),
            content_hash: 0,
            source_file: Arc::from("x.csv"),
            source_line: i + 1,
            run: 1,
            file: 0,
            row: 0,
        };
        if i.is_multiple_of(2) {
            e.properties.insert("campaign".into(), format!("c{i}"));
        }
        e.content_hash = e.compute_content_hash();
        e
    }

    #[test]
    fn events_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b/part.parquet");
        let events: Vec<Event> = (0..10).map(ev).collect();
        let props = vec!["campaign".to_string(), "item_id".to_string()];
        let sum = write_events(
            &path,
            &props,
            &events.iter().collect::<Vec<_>>(),
            ROW_GROUP_ROWS,
        )
        .unwrap();
        assert_eq!(sum, FileSum::of_file(&path).unwrap());
        assert_eq!(read_events(&path).unwrap(), events);
        let mut ids = HashMap::new();
        read_event_ids(&path, &mut ids).unwrap();
        assert_eq!(ids.len(), 10);
        assert_eq!(ids["e3"], events[3].content_hash);
    }

    #[test]
    fn row_groups_never_split_a_person() {
        // Persons with 1..=7 events each, in order.
        let mut events = Vec::new();
        for p in 0..200u64 {
            for k in 0..(p % 7 + 1) {
                let mut e = ev(p * 10 + k);
                e.person_id = format!("p{p:04}");
                events.push(e);
            }
        }
        let refs: Vec<&Event> = events.iter().collect();
        for target in [1, 5, 16, 100, 10_000] {
            let groups = person_groups(&refs, target);
            assert_eq!(groups.first().unwrap().start, 0);
            assert_eq!(groups.last().unwrap().end, refs.len());
            for w in groups.windows(2) {
                assert_eq!(w[0].end, w[1].start);
                assert_ne!(refs[w[0].end - 1].person_id, refs[w[1].start].person_id);
            }
            // Never more than a person (7 events) past the equalised target.
            assert!(groups.iter().all(|g| g.len() < target.max(1) + 7));
        }
        assert!(person_groups(&[], 10).is_empty());

        // A bucket file of more than ROW_GROUP_ROWS rows: its row groups end at person changes.
        let mut big = Vec::new();
        for i in 0..(ROW_GROUP_ROWS as u64 + 5_000) {
            let mut e = ev(i);
            e.person_id = format!("p{:06}", i / 3);
            big.push(e);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.parquet");
        write_events(&path, &[], &big.iter().collect::<Vec<_>>(), ROW_GROUP_ROWS).unwrap();
        let meta = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap())
            .unwrap()
            .metadata()
            .clone();
        let sizes: Vec<i64> = meta.row_groups().iter().map(|g| g.num_rows()).collect();
        assert_eq!(sizes.len(), 2, "{sizes:?}");
        assert_eq!(sizes.iter().sum::<i64>(), big.len() as i64);
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
        read_identity(&p, |a, b| back.push((a.to_string(), b.to_string()))).unwrap();
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
