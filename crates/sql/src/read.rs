//! Reading the input files on Spark with the embedded ingest's own readers: the first step of
//! the cluster ingest.
//!
//! The files are rows of a relation; `TRANSFORM` pipes them, a few files per task, through
//! `funnel spark-worker read` on the workers, which reads each file (by a path the workers
//! can open) with the ingest's readers and answers one JSON object per row. So the cluster finds
//! the same records, lines, raw text, size limits and read rejections as the embedded ingest,
//! with one reader to maintain instead of a second one in SQL. The file protocol is in the CLI's
//! `worker.rs`; this module only spells the query.

use crate::Dialect;
use crate::worker::worker_command;

/// Columns of the read output, one row per input row (`kind` `record` or `rejected`) and one
/// per file (`file`, or `error` when the file cannot be read as a whole).
pub const READ_COLUMNS: &str = "file INT, kind STRING, line BIGINT, row BIGINT, \
     cells MAP<STRING, STRING>, raw STRING, reason STRING, field STRING, value STRING, \
     message STRING, bytes BIGINT, sha256 STRING, rows BIGINT, exit INT";

/// The query that reads the files of `files` (a table or an aliased subquery with columns
/// `file INT` (sorted path order), `path STRING`, `format STRING` (`csv`, `jsonl`, `parquet`)
/// and `gzip BOOLEAN`) with the `funnel` binary at `worker` on each worker, in `tasks` tasks.
/// Its columns are [`READ_COLUMNS`]. A line of the worker's that is not one of its objects
/// fails the query (`FAILFAST`) rather than becoming a row of nulls that later filters drop.
pub fn read_query(files: &str, worker: &str, tasks: usize) -> String {
    let d = Dialect::Spark;
    let command = worker_command(worker, &["read"]);
    let tasks = tasks.max(1);
    // A repartition with a number is never coalesced by adaptive execution: the files spread
    // over `tasks` tasks, whatever their few bytes of request suggest.
    format!(
        "SELECT r.* FROM (SELECT from_json(line, {schema}, map('mode', 'FAILFAST')) AS r FROM (\
         SELECT TRANSFORM(request) USING {command} AS (line STRING) FROM (\
         SELECT /*+ REPARTITION_BY_RANGE({tasks}, file) */ file, \
         to_json(named_struct('file', file, 'path', path, 'format', format, 'gzip', gzip)) \
         AS request FROM {files})))",
        schema = d.string(READ_COLUMNS),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_path_is_quoted_for_the_shell_and_for_sql() {
        let q = read_query("files", "/opt/it's here/funnel", 3);
        assert!(
            q.contains(r"USING '\'/opt/it\'\\\'\'s here/funnel\' spark-worker read'"),
            "{q}"
        );
        assert!(q.contains("REPARTITION_BY_RANGE(3, file)"), "{q}");
        assert!(q.contains("FROM files"), "{q}");
    }
}
