//! The event batch: the one Arrow schema and codec of events inside an ingest run.
//!
//! Between reading and writing, accepted rows travel as Arrow record batches of one fixed
//! *work schema*, never as per-row structs: the store's columns in store order, with every
//! property of a row packed into one binary column (properties are open-ended and the set grows
//! as files are read), then the row's place in this run's inputs. The phases move batches
//! whole (filter, take, slice, concatenate) and look at single columns; a bucket file is the
//! work batch with the properties unpacked into one column each ([`to_store`]), and a stored
//! bucket file reads back into work batches ([`from_store`]).
//!
//! A new contract column is a change here (and in `Event`, the row a validated export row
//! becomes), nowhere else.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayBuilder, ArrayRef, AsArray, BinaryArray, BinaryBuilder, Decimal128Builder,
    GenericByteArray, GenericByteBuilder, PrimitiveArray, PrimitiveBuilder, RecordBatch,
    StringArray, StringBuilder, TimestampMillisecondArray, TimestampMillisecondBuilder,
    UInt32Array, UInt32Builder, UInt64Array, UInt64Builder,
};
use arrow::datatypes::{
    ArrowPrimitiveType, ByteArrayType, DataType, Decimal128Type, Field, Schema, SchemaRef,
    TimeUnit, TimestampMillisecondType, UInt32Type, UInt64Type,
};
use arrow::error::ArrowError;
use funnel_core::schema::{self, AMOUNT_PRECISION, AMOUNT_SCALE};

use crate::event::Event;

/// Column positions of the work schema.
pub(crate) mod col {
    pub const EVENT_ID: usize = 0;
    pub const USER_ID: usize = 1;
    pub const EVENT_TYPE: usize = 2;
    pub const TS: usize = 3;
    pub const PLATFORM: usize = 4;
    pub const JOURNEY: usize = 5;
    pub const CHAT_TYPE: usize = 6;
    pub const WARNING_ACTION: usize = 7;
    pub const ACCOUNT_ID: usize = 8;
    pub const ORDER_ID: usize = 9;
    pub const AMOUNT: usize = 10;
    pub const CURRENCY: usize = 11;
    pub const PERSON_ID: usize = 12;
    /// Store columns before the properties: `0..FIXED`.
    pub const FIXED: usize = 13;
    pub const CONTENT_HASH: usize = 13;
    pub const SOURCE_FILE: usize = 14;
    pub const SOURCE_LINE: usize = 15;
    pub const INGEST_RUN: usize = 16;
    /// Store columns after the properties: `FIXED..STORED`.
    pub const STORED: usize = 17;
    /// The row's properties, `(u32 length, bytes)` of each key then value, keys sorted; null
    /// when it has none.
    pub const PROPERTIES: usize = 17;
    /// Index of the input file in this run (0 for events read from the store).
    pub const FILE: usize = 18;
    /// 1-based row number in the input file (0 for events read from the store).
    pub const ROW: usize = 19;
}

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn amount_type() -> DataType {
    DataType::Decimal128(AMOUNT_PRECISION, AMOUNT_SCALE as i8)
}

/// The store's columns, in store order, without the properties.
fn stored_fields() -> Vec<Field> {
    vec![
        utf8(schema::EVENT_ID, false),
        utf8(schema::USER_ID, false),
        utf8(schema::EVENT_TYPE, false),
        Field::new(schema::TS, ts_type(), false),
        utf8(schema::PLATFORM, true),
        utf8(schema::JOURNEY, true),
        utf8(schema::CHAT_TYPE, true),
        utf8(schema::WARNING_ACTION, true),
        utf8(schema::ACCOUNT_ID, true),
        utf8(schema::ORDER_ID, true),
        Field::new(schema::AMOUNT, amount_type(), true),
        utf8(schema::CURRENCY, true),
        utf8(schema::PERSON_ID, false),
        Field::new(schema::CONTENT_HASH, DataType::UInt64, false),
        utf8(schema::SOURCE_FILE, false),
        Field::new(schema::SOURCE_LINE, DataType::UInt64, false),
        Field::new(schema::INGEST_RUN, DataType::UInt64, false),
    ]
}

static WORK: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = stored_fields();
    fields.push(Field::new("_properties", DataType::Binary, true));
    fields.push(Field::new("_file", DataType::UInt32, false));
    fields.push(Field::new("_row", DataType::UInt64, false));
    Arc::new(Schema::new(fields))
});

/// The work schema.
pub(crate) fn work_schema() -> SchemaRef {
    WORK.clone()
}

/// The schema of a bucket file: contract columns, person_id, properties (in the order given,
/// sorted), internal columns.
pub(crate) fn store_schema(properties: &[String]) -> SchemaRef {
    let mut fields = stored_fields();
    let tail = fields.split_off(col::FIXED);
    fields.extend(properties.iter().map(|p| utf8(p, true)));
    fields.extend(tail);
    Arc::new(Schema::new(fields))
}

/// Typed views of a work batch's columns.
pub(crate) struct Cols<'a> {
    pub event_id: &'a StringArray,
    pub user_id: &'a StringArray,
    pub event_type: &'a StringArray,
    pub ts: &'a TimestampMillisecondArray,
    pub person_id: &'a StringArray,
    pub content_hash: &'a UInt64Array,
    pub source_file: &'a StringArray,
    pub source_line: &'a UInt64Array,
    pub properties: &'a BinaryArray,
    pub file: &'a UInt32Array,
    pub row: &'a UInt64Array,
}

impl<'a> Cols<'a> {
    pub fn of(b: &'a RecordBatch) -> Cols<'a> {
        let s = |i: usize| b.column(i).as_string::<i32>();
        Cols {
            event_id: s(col::EVENT_ID),
            user_id: s(col::USER_ID),
            event_type: s(col::EVENT_TYPE),
            ts: b.column(col::TS).as_primitive::<TimestampMillisecondType>(),
            person_id: s(col::PERSON_ID),
            content_hash: b.column(col::CONTENT_HASH).as_primitive::<UInt64Type>(),
            source_file: s(col::SOURCE_FILE),
            source_line: b.column(col::SOURCE_LINE).as_primitive::<UInt64Type>(),
            properties: b.column(col::PROPERTIES).as_binary::<i32>(),
            file: b.column(col::FILE).as_primitive::<UInt32Type>(),
            row: b.column(col::ROW).as_primitive::<UInt64Type>(),
        }
    }
}

/// Appends properties `(key, value)` (keys sorted, no repeats) to `out` in the packed form.
fn pack_properties<'s>(pairs: impl IntoIterator<Item = (&'s str, &'s str)>, out: &mut Vec<u8>) {
    for (k, v) in pairs {
        for s in [k, v] {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
}

/// The `(key, value)` pairs of a packed properties value, keys in order.
pub(crate) fn unpack_properties(mut b: &[u8]) -> impl Iterator<Item = (&str, &str)> {
    let mut take = move || -> Option<&str> {
        let n = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
        let s = std::str::from_utf8(b.get(4..4 + n)?).expect("packed by pack_properties");
        b = &b[4 + n..];
        Some(s)
    };
    std::iter::from_fn(move || Some((take()?, take()?)))
}

/// Builds work batches row by row from validated events.
pub(crate) struct Builder {
    event_id: StringBuilder,
    user_id: StringBuilder,
    event_type: StringBuilder,
    ts: TimestampMillisecondBuilder,
    text: [StringBuilder; 7],
    amount: Decimal128Builder,
    content_hash: UInt64Builder,
    source_file: StringBuilder,
    source_line: UInt64Builder,
    run: UInt64Builder,
    properties: BinaryBuilder,
    packed: Vec<u8>,
    file: UInt32Builder,
    row: UInt64Builder,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            event_id: StringBuilder::new(),
            user_id: StringBuilder::new(),
            event_type: StringBuilder::new(),
            ts: TimestampMillisecondBuilder::new(),
            text: std::array::from_fn(|_| StringBuilder::new()),
            amount: Decimal128Builder::new(),
            content_hash: UInt64Builder::new(),
            source_file: StringBuilder::new(),
            source_line: UInt64Builder::new(),
            run: UInt64Builder::new(),
            properties: BinaryBuilder::new(),
            packed: Vec::new(),
            file: UInt32Builder::new(),
            row: UInt64Builder::new(),
        }
    }
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("rows", &self.len())
            .finish()
    }
}

impl Builder {
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn push(&mut self, e: &Event) {
        self.event_id.append_value(&e.event_id);
        self.user_id.append_value(&e.user_id);
        self.event_type.append_value(&e.event_type);
        self.ts.append_value(e.ts_ms);
        let text = [
            &e.platform,
            &e.journey,
            &e.chat_type,
            &e.warning_action,
            &e.account_id,
            &e.order_id,
            &e.currency,
        ];
        for (b, v) in self.text.iter_mut().zip(text) {
            b.append_option(v.as_deref());
        }
        self.amount.append_option(e.amount.map(i128::from));
        self.content_hash.append_value(e.content_hash);
        self.source_file.append_value(&e.source_file);
        self.source_line.append_value(e.source_line);
        self.run.append_value(e.run);
        if e.properties.is_empty() {
            self.properties.append_null();
        } else {
            self.packed.clear();
            pack_properties(
                e.properties.iter().map(|(k, v)| (k.as_ref(), v.as_ref())),
                &mut self.packed,
            );
            self.properties.append_value(&self.packed);
        }
        self.file.append_value(e.file);
        self.row.append_value(e.row);
    }

    /// The rows pushed so far as a batch (person_id empty: it is assigned at routing); the
    /// builder starts over.
    pub fn finish(&mut self) -> RecordBatch {
        let n = self.len();
        let [
            platform,
            journey,
            chat_type,
            warning_action,
            account_id,
            order_id,
            currency,
        ] = &mut self.text;
        let amount = again(&mut self.amount)
            .with_precision_and_scale(AMOUNT_PRECISION, AMOUNT_SCALE as i8)
            .expect("the store's decimal type");
        let cols: Vec<ArrayRef> = vec![
            Arc::new(again_bytes(&mut self.event_id)),
            Arc::new(again_bytes(&mut self.user_id)),
            Arc::new(again_bytes(&mut self.event_type)),
            Arc::new(again(&mut self.ts).with_timezone("UTC")),
            Arc::new(again_bytes(platform)),
            Arc::new(again_bytes(journey)),
            Arc::new(again_bytes(chat_type)),
            Arc::new(again_bytes(warning_action)),
            Arc::new(again_bytes(account_id)),
            Arc::new(again_bytes(order_id)),
            Arc::new(amount),
            Arc::new(again_bytes(currency)),
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n("", n))),
            Arc::new(again(&mut self.content_hash)),
            Arc::new(again_bytes(&mut self.source_file)),
            Arc::new(again(&mut self.source_line)),
            Arc::new(again(&mut self.run)),
            Arc::new(again_bytes(&mut self.properties)),
            Arc::new(again(&mut self.file)),
            Arc::new(again(&mut self.row)),
        ];
        RecordBatch::try_new(work_schema(), cols).expect("columns match the work schema")
    }
}

/// Finishes a column builder and leaves it with room for as many rows again: a file's batches
/// are alike, so the next one is built without growing (and copying) its buffers.
fn again<T: ArrowPrimitiveType>(b: &mut PrimitiveBuilder<T>) -> PrimitiveArray<T> {
    let rows = b.len();
    let out = b.finish();
    *b = PrimitiveBuilder::with_capacity(rows).with_data_type(out.data_type().clone());
    out
}

/// [`again`] for a text or binary column: room for as many rows and value bytes.
fn again_bytes<T: ByteArrayType>(b: &mut GenericByteBuilder<T>) -> GenericByteArray<T> {
    let (rows, bytes) = (b.len(), b.values_slice().len());
    let out = b.finish();
    *b = GenericByteBuilder::with_capacity(rows, bytes);
    out
}

/// The batch with its person_id column replaced.
pub(crate) fn with_persons(batch: &RecordBatch, persons: StringArray) -> RecordBatch {
    let mut cols = batch.columns().to_vec();
    cols[col::PERSON_ID] = Arc::new(persons);
    RecordBatch::try_new(batch.schema(), cols).expect("same schema")
}

/// Row `i` of a work batch as an event, borrowing the batch (for the quarantine of a conflict,
/// and for tests).
pub(crate) fn event_at(batch: &RecordBatch, i: usize) -> Event<'_> {
    let c = Cols::of(batch);
    let opt = |k: usize| {
        let a = batch.column(k).as_string::<i32>();
        a.is_valid(i).then(|| Cow::Borrowed(a.value(i)))
    };
    let amount = batch.column(col::AMOUNT).as_primitive::<Decimal128Type>();
    Event {
        event_id: c.event_id.value(i).into(),
        user_id: c.user_id.value(i).into(),
        event_type: c.event_type.value(i).into(),
        ts_ms: c.ts.value(i),
        platform: opt(col::PLATFORM),
        journey: opt(col::JOURNEY),
        chat_type: opt(col::CHAT_TYPE),
        warning_action: opt(col::WARNING_ACTION),
        account_id: opt(col::ACCOUNT_ID),
        order_id: opt(col::ORDER_ID),
        amount: amount.is_valid(i).then(|| amount.value(i) as i64),
        currency: opt(col::CURRENCY),
        properties: if c.properties.is_valid(i) {
            unpack_properties(c.properties.value(i))
                .map(|(k, v)| (k.into(), v.into()))
                .collect()
        } else {
            BTreeMap::new()
        },
        person_id: c.person_id.value(i).into(),
        content_hash: c.content_hash.value(i),
        source_file: Arc::from(c.source_file.value(i)),
        source_line: c.source_line.value(i),
        run: batch
            .column(col::INGEST_RUN)
            .as_primitive::<UInt64Type>()
            .value(i),
        file: c.file.value(i),
        row: c.row.value(i),
    }
}

/// A work batch as a bucket file's batch: the properties unpacked into one column each, named
/// by `properties` (sorted; every key of the batch must be among them), lineage of the run
/// dropped.
pub(crate) fn to_store(
    batch: &RecordBatch,
    properties: &[String],
) -> Result<RecordBatch, ArrowError> {
    let n = batch.num_rows();
    let mut builders: Vec<StringBuilder> =
        properties.iter().map(|_| StringBuilder::new()).collect();
    let packed = Cols::of(batch).properties;
    for i in 0..n {
        let mut next = 0;
        if packed.is_valid(i) {
            for (k, v) in unpack_properties(packed.value(i)) {
                let at = next
                    + properties[next..]
                        .binary_search_by(|p| p.as_str().cmp(k))
                        .map_err(|_| {
                            ArrowError::SchemaError(format!("property {k} is not in the schema"))
                        })?;
                for b in &mut builders[next..at] {
                    b.append_null();
                }
                builders[at].append_value(v);
                next = at + 1;
            }
        }
        for b in &mut builders[next..] {
            b.append_null();
        }
    }
    let mut cols: Vec<ArrayRef> = batch.columns()[..col::FIXED].to_vec();
    cols.extend(
        builders
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef),
    );
    cols.extend(batch.columns()[col::FIXED..col::STORED].iter().cloned());
    RecordBatch::try_new(store_schema(properties), cols)
}

/// A bucket file's batch as a work batch: its property columns (every column that is not a
/// store column) packed, file and row 0. `Err` names a store column that is missing or of
/// another type.
pub(crate) fn from_store(batch: &RecordBatch) -> Result<RecordBatch, String> {
    let n = batch.num_rows();
    let fields = stored_fields();
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(col::ROW + 1);
    for f in &fields {
        let a = batch
            .column_by_name(f.name())
            .ok_or_else(|| format!("lacks column {}", f.name()))?;
        if a.data_type() != f.data_type() {
            return Err(format!(
                "column {} is {}, not {}",
                f.name(),
                a.data_type(),
                f.data_type()
            ));
        }
        cols.push(a.clone());
    }
    let schema = batch.schema();
    let mut props: Vec<(&str, &StringArray)> = Vec::new();
    for (f, a) in schema.fields().iter().zip(batch.columns()) {
        if fields.iter().any(|s| s.name() == f.name()) {
            continue;
        }
        let a = a
            .as_string_opt::<i32>()
            .ok_or_else(|| format!("property column {} is not text", f.name()))?;
        props.push((f.name().as_str(), a));
    }
    props.sort_unstable_by_key(|(name, _)| *name);
    let mut packed = BinaryBuilder::new();
    let mut buf = Vec::new();
    for i in 0..n {
        buf.clear();
        pack_properties(
            props
                .iter()
                .filter(|(_, a)| a.is_valid(i))
                .map(|(k, a)| (*k, a.value(i))),
            &mut buf,
        );
        if buf.is_empty() {
            packed.append_null();
        } else {
            packed.append_value(&buf);
        }
    }
    cols.push(Arc::new(packed.finish()));
    cols.push(Arc::new(UInt32Array::from_iter_values(
        std::iter::repeat_n(0, n),
    )));
    cols.push(Arc::new(UInt64Array::from_iter_values(
        std::iter::repeat_n(0, n),
    )));
    RecordBatch::try_new(work_schema(), cols).map_err(|e| e.to_string())
}

/// Calls `each` with every property key of a work batch.
pub(crate) fn property_keys<'a>(batch: &'a RecordBatch, mut each: impl FnMut(&'a str)) {
    let packed = Cols::of(batch).properties;
    for i in 0..batch.num_rows() {
        if packed.is_valid(i) {
            unpack_properties(packed.value(i)).for_each(|(k, _)| each(k));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn event(i: u64) -> Event<'static> {
        let mut e = Event {
            event_id: format!("e{i}").into(),
            user_id: format!("u{}", i % 3).into(),
            event_type: if i.is_multiple_of(2) {
                "purchase"
            } else {
                "click"
            }
            .into(),
            ts_ms: 1_600_000_000_000 + i as i64,
            platform: Some("taobao".into()),
            journey: i.is_multiple_of(3).then(|| "external_link".into()),
            chat_type: None,
            warning_action: None,
            account_id: i.is_multiple_of(5).then(|| format!("a{i}").into()),
            order_id: Some(format!("o{i}").into()),
            amount: i.is_multiple_of(2).then_some(-(i as i64) * 10_000),
            currency: Some("CNY".into()),
            properties: BTreeMap::new(),
            person_id: "".into(),
            content_hash: 0,
            source_file: Arc::from("x.csv"),
            source_line: i + 2,
            run: 3,
            file: (i % 4) as u32,
            row: i + 1,
        };
        if i.is_multiple_of(2) {
            e.properties
                .insert("campaign".into(), format!("c{i}").into());
        }
        if i.is_multiple_of(3) {
            e.properties.insert("item_id".into(), "".into());
            e.properties.insert("zz".into(), "ü,\"\n".into());
        }
        e.content_hash = e.compute_content_hash();
        e
    }

    #[test]
    fn events_round_trip_through_work_and_store_batches() {
        let events: Vec<Event> = (0..50).map(event).collect();
        let mut b = Builder::default();
        events.iter().for_each(|e| b.push(e));
        let batch = b.finish();
        assert_eq!(b.len(), 0);
        let back: Vec<Event> = (0..batch.num_rows()).map(|i| event_at(&batch, i)).collect();
        assert_eq!(back, events);

        let props: Vec<String> = ["campaign", "item_id", "other", "zz"]
            .map(String::from)
            .into();
        let stored = to_store(&batch, &props).unwrap();
        assert_eq!(stored.schema(), store_schema(&props));
        let col = stored
            .column_by_name("campaign")
            .unwrap()
            .as_string::<i32>();
        assert_eq!(col.value(0), "c0");
        assert!(col.is_null(1));
        assert_eq!(stored.column_by_name("other").unwrap().null_count(), 50);
        let again = from_store(&stored).unwrap();
        for (i, want) in events.iter().enumerate() {
            let got = event_at(&again, i);
            assert_eq!(got.properties, want.properties);
            assert_eq!((got.file, got.row), (0, 0));
            assert_eq!(got.compute_content_hash(), want.content_hash);
        }
        let missing = to_store(&batch, &["campaign".to_string()]).unwrap_err();
        assert!(missing.to_string().contains("item_id"), "{missing}");
    }

    #[test]
    fn a_store_batch_missing_a_column_is_named() {
        let mut b = Builder::default();
        b.push(&event(1));
        let stored = to_store(&b.finish(), &[]).unwrap();
        let without = stored.project(&[0, 1, 2, 3]).unwrap();
        assert_eq!(from_store(&without).unwrap_err(), "lacks column platform");
    }
}
