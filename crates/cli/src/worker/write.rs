//! `funnel spark-worker hash` and the writers `write-events`, `write-ids`, `write-quarantine`,
//! `write-identity` (protocol in `worker`).

use std::collections::BTreeSet;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use funnel_ingest::{
    HandedEvent, HandedRejection, LinkWriter, RejectionWriter, write_bucket_file, write_id_file,
};
use serde::Deserialize;
use serde_json::json;

use super::{emit, input};

fn stdout() -> BufWriter<std::io::StdoutLock<'static>> {
    BufWriter::with_capacity(1 << 16, std::io::stdout().lock())
}

fn done(mut out: impl Write) -> Result<()> {
    out.flush().context("writing to standard output")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Keyed {
    key: String,
}

pub fn hash(buckets: u32) -> Result<()> {
    if buckets == 0 {
        return Err(crate::UsageError("--buckets: must be at least 1".into()).into());
    }
    let mut out = stdout();
    for k in input::<Keyed>() {
        let k = k?;
        let bucket = funnel_core::bucket_of(&k.key, buckets);
        emit(&mut out, &json!({"key": k.key, "bucket": bucket}))
            .context("writing to standard output")?;
    }
    done(out)
}

/// Calls `each` with every run of consecutive items of one key. A key met again after another
/// is an error: the caller's input was to be grouped by key.
fn grouped<T, K: Ord + Copy + std::fmt::Debug>(
    items: impl Iterator<Item = Result<T>>,
    key: impl Fn(&T) -> K,
    mut each: impl FnMut(K, Vec<T>) -> Result<()>,
) -> Result<()> {
    let mut finished = BTreeSet::new();
    let mut current: Option<(K, Vec<T>)> = None;
    for item in items {
        let item = item?;
        let k = key(&item);
        match &mut current {
            Some((c, group)) if *c == k => group.push(item),
            _ => {
                if let Some((c, group)) = current.take() {
                    each(c, group)?;
                    finished.insert(c);
                }
                if finished.contains(&k) {
                    bail!("the input is not grouped: {k:?} comes again after another key");
                }
                current = Some((k, vec![item]));
            }
        }
    }
    if let Some((c, group)) = current {
        each(c, group)?;
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BucketRow {
    bucket: u32,
    event: HandedEvent,
}

pub fn events(
    dir: &Path,
    generation: u64,
    properties: &[String],
    row_group_rows: usize,
) -> Result<()> {
    let mut out = stdout();
    grouped(
        input::<BucketRow>(),
        |r| r.bucket,
        |bucket, rows| {
            let events: Vec<HandedEvent> = rows.into_iter().map(|r| r.event).collect();
            let written =
                write_bucket_file(dir, generation, bucket, properties, row_group_rows, &events)?;
            if let Some((file, sum)) = written {
                emit(
                    &mut out,
                    &json!({"kind": "events", "file": file, "sum": sum}),
                )
                .context("writing to standard output")?;
            }
            Ok(())
        },
    )?;
    done(out)
}

/// A row of the event-id index: a stored one (event_id and hash), or a new event's.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdRow {
    partition: u32,
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default)]
    content_hash: Option<u64>,
    #[serde(default)]
    event: Option<HandedEvent>,
}

pub fn ids(dir: &Path, generation: u64) -> Result<()> {
    let mut out = stdout();
    grouped(
        input::<IdRow>(),
        |r| r.partition,
        |partition, rows| {
            let mut ids = Vec::with_capacity(rows.len());
            for r in rows {
                ids.push(match (r.event_id, r.content_hash, r.event) {
                    (Some(id), Some(hash), None) => (id, hash),
                    (None, None, Some(e)) => {
                        let hash = e.content_hash()?;
                        (e.event_id, hash)
                    }
                    _ => bail!(
                        "partition {partition}: an id row has an event_id and a content_hash, \
                         or an event, not both"
                    ),
                });
            }
            if let Some((file, sum)) = write_id_file(dir, generation, partition, ids)? {
                emit(&mut out, &json!({"kind": "ids", "file": file, "sum": sum}))
                    .context("writing to standard output")?;
            }
            Ok(())
        },
    )?;
    done(out)
}

pub fn quarantine(path: PathBuf) -> Result<()> {
    let mut writer = RejectionWriter::new(path);
    for r in input::<HandedRejection>() {
        writer.push(r?)?;
    }
    let sum = writer.finish()?;
    let mut out = stdout();
    emit(&mut out, &json!({"kind": "quarantine", "sum": sum}))
        .context("writing to standard output")?;
    done(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Link {
    id: String,
    person_id: String,
}

pub fn identity(path: PathBuf) -> Result<()> {
    let mut writer = LinkWriter::new(path);
    for l in input::<Link>() {
        let l = l?;
        writer.push(&l.id, &l.person_id)?;
    }
    let sum = writer.finish()?;
    let mut out = stdout();
    emit(&mut out, &json!({"kind": "identity", "sum": sum}))
        .context("writing to standard output")?;
    done(out)
}
