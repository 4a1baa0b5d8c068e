//! The query's result columns (`grp`, `kp`, `k0..`, `what`, `step`, `ms`, `window_open`,
//! `persons`, `cutoff_ms`) as level counts and time-to-convert distributions.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type};
use arrow::record_batch::RecordBatch;
use funnel_core::{DurationCount, LevelCount, NextCount};

use crate::RemoteError;

fn column(
    batch: &RecordBatch,
    name: &str,
    to: &DataType,
    engine: &'static str,
) -> Result<ArrayRef, RemoteError> {
    let answer = |message: String| RemoteError::Answer { engine, message };
    let c = batch
        .column_by_name(name)
        .ok_or_else(|| answer(format!("no column {name:?} in the result")))?;
    // Booleans become 0/1; ClickHouse may send strings as binary.
    let c = match (c.data_type(), to) {
        (DataType::Boolean, DataType::Int64) => cast(c, &DataType::UInt8),
        (DataType::Binary | DataType::LargeBinary, DataType::Utf8) => {
            let b = cast(c, &DataType::LargeBinary).map_err(|e| answer(e.to_string()))?;
            let b = b.as_binary::<i64>();
            let strings: arrow::array::StringArray = (0..b.len())
                .map(|i| (!b.is_null(i)).then(|| String::from_utf8_lossy(b.value(i)).into_owned()))
                .collect();
            return Ok(std::sync::Arc::new(strings));
        }
        _ => Ok(c.clone()),
    }
    .map_err(|e| answer(e.to_string()))?;
    cast(&c, to).map_err(|e| answer(format!("column {name:?}: {e}")))
}

/// A query's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Sorted.
    pub rows: Vec<LevelCount>,
    /// Sorted.
    pub durations: Vec<DurationCount>,
    /// Sorted ("where the dropped went", when the query asks for it).
    pub nexts: Vec<NextCount>,
    /// The latest event the query read (`None` when no person reached step 1).
    pub max_ts_ms: Option<i64>,
}

/// One result row, as read from either format.
struct Row {
    grp: i64,
    period: Option<String>,
    keys: Vec<Option<String>>,
    what: i64,
    step: i64,
    ms: i64,
    window_open: bool,
    persons: u64,
    /// What followed a stopped chain: `nk` 0 (an event: `nt`, `nv`), otherwise nothing.
    next_kind: i64,
    next_type: Option<String>,
    next_value: Option<String>,
}

impl Answer {
    fn new(
        mut rows: Vec<Row>,
        max_ts_ms: Option<i64>,
        engine: &'static str,
    ) -> Result<Answer, RemoteError> {
        let mut levels = Vec::new();
        let mut durations = Vec::new();
        let mut nexts = Vec::new();
        for row in rows.drain(..) {
            let key = (row.grp & 1 != 0).then_some(row.keys);
            let period = if row.grp & 2 != 0 { row.period } else { None };
            let step = u32::try_from(row.step).map_err(|_| RemoteError::Answer {
                engine,
                message: format!("step {} out of range", row.step),
            })?;
            match row.what {
                0 => levels.push(LevelCount {
                    key,
                    period,
                    level: step,
                    window_open: row.window_open,
                    persons: row.persons,
                }),
                1 | 2 => durations.push(DurationCount {
                    key,
                    period,
                    step,
                    from_first: row.what == 2,
                    ms: row.ms,
                    window_open: row.window_open,
                    persons: row.persons,
                }),
                3 => nexts.push(NextCount {
                    key,
                    period,
                    level: step,
                    window_open: row.window_open,
                    next: (row.next_kind == 0).then_some((row.next_type, row.next_value)),
                    persons: row.persons,
                }),
                w => {
                    return Err(RemoteError::Answer {
                        engine,
                        message: format!("unknown row kind {w}"),
                    });
                }
            }
        }
        levels.sort();
        durations.sort();
        nexts.sort();
        Ok(Answer {
            rows: levels,
            durations,
            nexts,
            max_ts_ms,
        })
    }
}

/// Rows of Arrow batches answering a query with `breakdown` key columns (and `kp`, the
/// period, where the query has trends).
pub fn from_batches(
    batches: &[RecordBatch],
    breakdown: usize,
    engine: &'static str,
) -> Result<Answer, RemoteError> {
    let mut out = Vec::new();
    let mut max_ts_ms = None;
    for batch in batches {
        if batch.num_rows() > 0 {
            let c = column(batch, "cutoff_ms", &DataType::Int64, engine)?;
            let c = c.as_primitive::<Int64Type>();
            max_ts_ms = (!c.is_null(0)).then(|| c.value(0));
        }
        let int = |name: &str| -> Result<ArrayRef, RemoteError> {
            column(batch, name, &DataType::Int64, engine)
        };
        let (grp, what, step, ms, open, persons) = (
            int("grp")?,
            int("what")?,
            int("step")?,
            int("ms")?,
            int("window_open")?,
            int("persons")?,
        );
        let keys: Vec<ArrayRef> = (0..breakdown)
            .map(|i| column(batch, &format!("k{i}"), &DataType::Utf8, engine))
            .collect::<Result<_, _>>()?;
        let optional = |name: &str, to: &DataType| match batch.column_by_name(name) {
            Some(_) => column(batch, name, to, engine).map(Some),
            None => Ok(None),
        };
        let period = optional("kp", &DataType::Utf8)?;
        let (nk, nt, nv) = (
            optional("nk", &DataType::Int64)?,
            optional("nt", &DataType::Utf8)?,
            optional("nv", &DataType::Utf8)?,
        );
        let i64s = |a: &ArrayRef, i: usize| a.as_primitive::<Int64Type>().value(i);
        let text = |a: &ArrayRef, i: usize| {
            let a = a.as_string::<i32>();
            (!a.is_null(i)).then(|| a.value(i).to_string())
        };
        for i in 0..batch.num_rows() {
            out.push(Row {
                grp: i64s(&grp, i),
                period: period.as_ref().and_then(|p| text(p, i)),
                keys: keys.iter().map(|k| text(k, i)).collect(),
                what: i64s(&what, i),
                step: i64s(&step, i),
                ms: i64s(&ms, i),
                window_open: i64s(&open, i) != 0,
                persons: i64s(&persons, i) as u64,
                next_kind: nk.as_ref().map_or(1, |a| i64s(a, i)),
                next_type: nt.as_ref().and_then(|a| text(a, i)),
                next_value: nv.as_ref().and_then(|a| text(a, i)),
            });
        }
    }
    Answer::new(out, max_ts_ms, engine)
}

/// Batches of Arrow IPC data: the stream format, or the file format (`ARROW1` magic).
pub fn read_ipc(bytes: &[u8], engine: &'static str) -> Result<Vec<RecordBatch>, RemoteError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let answer = |e: arrow::error::ArrowError| RemoteError::Answer {
        engine,
        message: format!("reading the Arrow answer: {e}"),
    };
    if bytes.starts_with(b"ARROW1") {
        let reader = arrow::ipc::reader::FileReader::try_new(std::io::Cursor::new(bytes), None)
            .map_err(answer)?;
        return reader.collect::<Result<Vec<_>, _>>().map_err(answer);
    }
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(answer)?;
    reader.collect::<Result<Vec<_>, _>>().map_err(answer)
}

/// Rows of a JSON-lines answer (ClickHouse `JSONEachRow`).
pub fn from_json_lines(
    text: &str,
    breakdown: usize,
    engine: &'static str,
) -> Result<Answer, RemoteError> {
    let answer = |message: String| RemoteError::Answer { engine, message };
    let mut out = Vec::new();
    let mut max_ts_ms = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| answer(format!("{e}: {line}")))?;
        let int = |name: &str| -> Result<i64, RemoteError> {
            match &v[name] {
                serde_json::Value::Number(n) => n.as_i64(),
                serde_json::Value::String(s) => s.parse().ok(),
                serde_json::Value::Bool(b) => Some(i64::from(*b)),
                _ => None,
            }
            .ok_or_else(|| answer(format!("no integer {name:?} in {line}")))
        };
        max_ts_ms = Some(int("cutoff_ms")?);
        out.push(Row {
            grp: int("grp")?,
            period: v["kp"].as_str().map(str::to_string),
            keys: (0..breakdown)
                .map(|i| v[format!("k{i}")].as_str().map(str::to_string))
                .collect(),
            what: int("what")?,
            step: int("step")?,
            ms: int("ms")?,
            window_open: int("window_open")? != 0,
            persons: int("persons")? as u64,
            next_kind: int("nk").unwrap_or(1),
            next_type: v["nt"].as_str().map(str::to_string),
            next_value: v["nv"].as_str().map(str::to_string),
        });
    }
    Answer::new(out, max_ts_ms, engine)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        BinaryArray, BooleanArray, Int32Array, Int64Array, UInt8Array, UInt64Array,
    };
    use arrow::ipc::writer::StreamWriter;

    use super::*;

    #[test]
    fn arrow_and_json_answers_give_the_same_rows() {
        let batch = RecordBatch::try_from_iter(vec![
            (
                "grp",
                Arc::new(UInt8Array::from(vec![0, 1, 1, 3])) as ArrayRef,
            ),
            (
                "kp",
                Arc::new(BinaryArray::from(vec![
                    None,
                    None,
                    None,
                    Some(&b"2021-09"[..]),
                ])) as ArrayRef,
            ),
            (
                "k0",
                Arc::new(BinaryArray::from(vec![
                    None,
                    Some(&b"wechat"[..]),
                    None,
                    Some(&b"wechat"[..]),
                ])) as ArrayRef,
            ),
            (
                "what",
                Arc::new(Int32Array::from(vec![0, 0, 0, 2])) as ArrayRef,
            ),
            (
                "step",
                Arc::new(Int32Array::from(vec![2, 1, 3, 1])) as ArrayRef,
            ),
            (
                "ms",
                Arc::new(Int64Array::from(vec![0, 0, 0, 1500])) as ArrayRef,
            ),
            (
                "window_open",
                Arc::new(BooleanArray::from(vec![true, false, false, false])) as ArrayRef,
            ),
            (
                "persons",
                Arc::new(UInt64Array::from(vec![5, 7, 1, 4])) as ArrayRef,
            ),
            (
                "cutoff_ms",
                Arc::new(Int64Array::from(vec![9, 9, 9, 9])) as ArrayRef,
            ),
        ])
        .unwrap();
        let mut bytes = Vec::new();
        let mut w = StreamWriter::try_new(&mut bytes, &batch.schema()).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
        drop(w);
        let from_arrow = from_batches(&read_ipc(&bytes, "test").unwrap(), 1, "test").unwrap();
        let json = "{\"grp\":0,\"kp\":null,\"k0\":null,\"what\":0,\"step\":2,\"ms\":0,\"window_open\":1,\"persons\":\"5\",\"cutoff_ms\":9}\n\
                    {\"grp\":1,\"kp\":null,\"k0\":\"wechat\",\"what\":0,\"step\":1,\"ms\":\"0\",\"window_open\":false,\"persons\":7,\"cutoff_ms\":9}\n\
                    {\"grp\":1,\"k0\":null,\"what\":0,\"step\":3,\"ms\":0,\"window_open\":0,\"persons\":1,\"cutoff_ms\":\"9\"}\n\
                    {\"grp\":3,\"kp\":\"2021-09\",\"k0\":\"wechat\",\"what\":2,\"step\":1,\"ms\":1500,\"window_open\":0,\"persons\":4,\"cutoff_ms\":9}\n";
        let from_json = from_json_lines(json, 1, "test").unwrap();
        assert_eq!(from_arrow, from_json);
        assert_eq!(from_arrow.max_ts_ms, Some(9));
        let rows = &from_arrow.rows;
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].key, None);
        assert!(rows[0].window_open);
        assert_eq!(rows[2].key, Some(vec![Some("wechat".to_string())]));
        assert_eq!(
            from_arrow.durations,
            vec![DurationCount {
                key: Some(vec![Some("wechat".to_string())]),
                period: Some("2021-09".to_string()),
                step: 1,
                from_first: true,
                ms: 1500,
                window_open: false,
                persons: 4,
            }]
        );
        assert!(from_json_lines("{\"grp\":0}", 0, "test").is_err());
    }
}
