//! Phase 4 of a run: each accepted row to its person's bucket.
//!
//! Once every accepted login has been linked (phase 2), the identity gives each row's person:
//! the smallest id of its group of linked ids, or its user_id when it was never linked. Rows go
//! to the spill partition of their person's bucket, with person_id filled in; the property
//! names met join the store's.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use arrow::array::{RecordBatch, StringArray, StringBuilder};
use funnel_core::bucket_of;

use crate::IngestError;
use crate::batch::{Cols, property_keys, with_persons};
use crate::identity::Identity;
use crate::parallel::map_ordered;
use crate::spill::{Spill, read_spill};

/// Batches read from the accepted rows before their persons are looked up together, per
/// thread.
const BATCHES_PER_THREAD: usize = 4;

/// Routes the accepted rows (a spill partition, if any) into one spill partition per bucket.
/// The persons of a few batches at a time are looked up on `threads` threads; the batches are
/// pushed in the order read.
pub(crate) fn route(
    accepted: Option<&Path>,
    scratch: &Path,
    buckets: u32,
    identity: &Identity,
    properties: &mut BTreeSet<String>,
    threads: usize,
) -> Result<Vec<Option<PathBuf>>, IngestError> {
    let mut by_bucket = Spill::new(scratch, "by-bucket", buckets as usize)?;
    let mut chunk = Vec::new();
    let mut push = |chunk: Vec<RecordBatch>, by_bucket: &mut Spill| {
        let persons = map_ordered(chunk, threads, |batch| {
            let (persons, parts) = persons(&batch, identity, buckets);
            (with_persons(&batch, persons), parts)
        });
        for (batch, parts) in persons {
            property_keys(&batch, |k| {
                if !properties.contains(k) {
                    properties.insert(k.to_string());
                }
            });
            by_bucket.push_rows(&batch, &parts)?;
        }
        Ok::<(), IngestError>(())
    };
    if let Some(path) = accepted {
        read_spill(path, |batch| {
            chunk.push(batch);
            if chunk.len() >= threads * BATCHES_PER_THREAD {
                push(std::mem::take(&mut chunk), &mut by_bucket)?;
            }
            Ok(())
        })?;
        push(chunk, &mut by_bucket)?;
    }
    by_bucket.finish()
}

/// The person of each row of a batch, and its bucket.
fn persons(batch: &RecordBatch, identity: &Identity, buckets: u32) -> (StringArray, Vec<u32>) {
    let users = Cols::of(batch).user_id;
    let mut persons = StringBuilder::with_capacity(batch.num_rows(), users.value_data().len());
    let mut parts = Vec::with_capacity(batch.num_rows());
    for u in users.iter() {
        let person = identity.person_of(u.expect("user_id is never null"));
        parts.push(bucket_of(person, buckets));
        persons.append_value(person);
    }
    (persons.finish(), parts)
}
