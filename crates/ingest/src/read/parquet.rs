//! Parquet files: columns of any type become cells, row by row.
//!
//! - A timestamp column is an instant (with a time zone) or a wall-clock time (without one);
//!   floats and other primitives become their display text, strings stay as they are.
//! - A binary column holds text: a value that is not UTF-8 rejects its row as
//!   `malformed_record`, naming the column.
//! - A nested column (list, struct, map) is `nested_value` in a contract column and its display
//!   text in a property column.
//! - A value longer than the field limit rejects its row as `value_too_large`.

use std::borrow::Cow;
use std::fs::File;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringArray};
use arrow::datatypes::{DataType, Int64Type, TimeUnit};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use funnel_core::RejectReason;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::{Cell, Column, InputSpec, Item, ReadRejection, Record};
use crate::IngestError;
use crate::limits::{QUARANTINE_TEXT_BYTES, cut};

/// How one Parquet column becomes cells.
enum ColumnCells {
    Ts {
        values: Int64Array,
        per_ms: i64,
        utc: bool,
    },
    Float(ArrayRef),
    Text(ArrayRef),
    /// Binary values: text if they are UTF-8.
    Binary(ArrayRef),
    /// List, struct or map values, as display text.
    Nested(ArrayRef),
}

/// One value of a row as the reader sees it.
enum Value<'a> {
    Cell(Cell<'a>),
    NotUtf8,
    Nested(&'a str),
}

fn display_texts(array: &ArrayRef) -> Result<ArrayRef, String> {
    let fmt = ArrayFormatter::try_new(array.as_ref(), &FormatOptions::default())
        .map_err(|e| e.to_string())?;
    let texts: Vec<Option<String>> = (0..array.len())
        .map(|i| array.is_valid(i).then(|| fmt.value(i).to_string()))
        .collect();
    Ok(Arc::new(StringArray::from(texts)))
}

fn column_cells(array: &ArrayRef) -> Result<ColumnCells, String> {
    match array.data_type() {
        DataType::Timestamp(unit, tz) => {
            let values =
                arrow::compute::cast(array, &DataType::Int64).map_err(|e| e.to_string())?;
            let per_ms = match unit {
                TimeUnit::Second => -1000,
                TimeUnit::Millisecond => 1,
                TimeUnit::Microsecond => 1000,
                TimeUnit::Nanosecond => 1_000_000,
            };
            Ok(ColumnCells::Ts {
                values: values.as_primitive::<Int64Type>().clone(),
                per_ms,
                utc: tz.is_some(),
            })
        }
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            let f = arrow::compute::cast(array, &DataType::Float64).map_err(|e| e.to_string())?;
            Ok(ColumnCells::Float(f))
        }
        DataType::Utf8 => Ok(ColumnCells::Text(array.clone())),
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => {
            let b =
                arrow::compute::cast(array, &DataType::LargeBinary).map_err(|e| e.to_string())?;
            Ok(ColumnCells::Binary(b))
        }
        DataType::List(_)
        | DataType::LargeList(_)
        | DataType::ListView(_)
        | DataType::LargeListView(_)
        | DataType::FixedSizeList(..)
        | DataType::Struct(_)
        | DataType::Map(..)
        | DataType::Union(..) => Ok(ColumnCells::Nested(display_texts(array)?)),
        _ => match arrow::compute::cast(array, &DataType::Utf8) {
            Ok(a) => Ok(ColumnCells::Text(a)),
            Err(_) => Ok(ColumnCells::Text(display_texts(array)?)),
        },
    }
}

impl ColumnCells {
    fn value(&self, i: usize) -> Option<Value<'_>> {
        match self {
            ColumnCells::Ts {
                values,
                per_ms,
                utc,
            } => {
                if values.is_null(i) {
                    return None;
                }
                let v = values.value(i);
                let ms = if *per_ms < 0 {
                    v.saturating_mul(-per_ms)
                } else {
                    v.div_euclid(*per_ms)
                };
                Some(Value::Cell(if *utc {
                    Cell::TsUtcMs(ms)
                } else {
                    Cell::TsLocalMs(ms)
                }))
            }
            ColumnCells::Float(a) => {
                let a = a.as_primitive::<arrow::datatypes::Float64Type>();
                a.is_valid(i)
                    .then(|| Value::Cell(Cell::Str(Cow::Owned(format!("{}", a.value(i))))))
            }
            ColumnCells::Text(a) => {
                let a = a.as_string::<i32>();
                a.is_valid(i)
                    .then(|| Value::Cell(Cell::Str(Cow::Borrowed(a.value(i)))))
            }
            ColumnCells::Binary(a) => {
                let a = a.as_binary::<i64>();
                a.is_valid(i)
                    .then(|| match std::str::from_utf8(a.value(i)) {
                        Ok(s) => Value::Cell(Cell::Str(Cow::Borrowed(s))),
                        Err(_) => Value::NotUtf8,
                    })
            }
            ColumnCells::Nested(a) => {
                let a = a.as_string::<i32>();
                a.is_valid(i).then(|| Value::Nested(a.value(i)))
            }
        }
    }
}

pub(super) fn read(
    spec: &InputSpec,
    sink: &mut dyn FnMut(Item<'_>) -> Result<(), IngestError>,
) -> Result<(), IngestError> {
    let path = &spec.path;
    let file = File::open(path).map_err(|e| IngestError::unreadable(path, None, e))?;
    let unreadable = |e: String| {
        IngestError::unreadable(path, None, format!("not a readable Parquet file: {e}"))
    };
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| unreadable(e.to_string()))?;
    crate::footer::check(builder.metadata()).map_err(unreadable)?;
    let reader = builder
        .with_batch_size(8192)
        .build()
        .map_err(|e| unreadable(e.to_string()))?;
    let mut row = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| {
            IngestError::unreadable(
                path,
                None,
                format!("Parquet read failed after row {row}: {e}"),
            )
        })?;
        let schema = batch.schema();
        let mut columns = Vec::with_capacity(batch.num_columns());
        for (field, array) in schema.fields().iter().zip(batch.columns()) {
            let cells = column_cells(array).map_err(|e| {
                IngestError::unreadable(path, None, format!("column {}: {e}", field.name()))
            })?;
            columns.push((Column::new(field.name()), cells));
        }
        for i in 0..batch.num_rows() {
            row += 1;
            let mut cells = Vec::with_capacity(columns.len());
            let mut fault: Option<(RejectReason, &Arc<str>, Option<String>)> = None;
            for (column, col) in &columns {
                let name = &column.name;
                match col.value(i) {
                    None => {}
                    Some(Value::Cell(c)) => cells.push((column, c)),
                    Some(Value::NotUtf8) => {
                        fault.get_or_insert((RejectReason::MalformedRecord, name, None));
                    }
                    Some(Value::Nested(text)) => {
                        if column.is_contract() {
                            let value = Some(cut(text, QUARANTINE_TEXT_BYTES));
                            fault.get_or_insert((RejectReason::NestedValue, name, value));
                        }
                        cells.push((column, Cell::Str(Cow::Borrowed(text))));
                    }
                }
            }
            let record = Record {
                line: None,
                row,
                cells,
                line_text: None,
                csv: false,
            };
            let item = match fault {
                None => record.check_sizes(),
                Some((reason, name, value)) => Item::Rejected(ReadRejection {
                    line: None,
                    row,
                    reason,
                    field: Some(name.to_string()),
                    value,
                    message: match reason {
                        RejectReason::NestedValue => {
                            format!("{name} holds a nested value, not a single value")
                        }
                        _ => format!("field {name} is not valid UTF-8"),
                    },
                    raw: cut(&record.raw_text(), QUARANTINE_TEXT_BYTES),
                }),
            };
            sink(item)?;
        }
    }
    Ok(())
}
