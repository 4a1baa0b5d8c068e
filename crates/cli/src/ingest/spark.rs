//! `funnel ingest --engine spark`: the embedded ingest's run as Spark jobs over Spark Connect,
//! into the same store.
//!
//! This process holds the store (its lock, the committed generation's lease, the new
//! generation's directory and the commit: `funnel_ingest::StoreRun`, as the embedded ingest);
//! the cluster does the work with the embedded ingest's own code where Spark has no exact
//! equivalent. In order:
//!
//! 1. **read**: `funnel spark-worker read` on the workers (`funnel_sql::read_query`): records,
//!    lines, raw text and read rejections, and each file's size and SHA-256; a file that cannot
//!    be read stops the run with the embedded ingest's message and exit code;
//! 2. **rules**: `funnel_sql::rules_query`, compiled from `funnel_core::rules::ROW_RULES`;
//! 3. **dedup**: `funnel_sql::dedup_query` against the committed generation's events;
//! 4. **stitching**: the accepted logins' links and the stored identity, as connected
//!    components (`funnel_sql::Stitch`), so every id gets the smallest id of its group;
//! 5. **merges**: each id's person before (the stored identity, else the id) and after;
//! 6. **buckets**: the store's hash of persons and event ids (`spark-worker hash`), and the
//!    touched buckets, by the embedded ingest's rule (`write.rs`): those that get new events,
//!    and those of each merged person's old and new person_id;
//! 7. **files**: the workers write the quarantine, the touched buckets (stored events re-keyed,
//!    plus the new ones), the touched id-index partitions and the identity with the embedded
//!    writers (`spark-worker write-*`, `funnel_sql::write_events_query`...), and report each
//!    file's figures and sum;
//! 8. **commit**: untouched files are carried over (checked against the manifest), the
//!    manifest written and `current` switched, by `StoreRun::commit`.
//!
//! Every file of the committed generation that the cluster reads is checked against its
//! manifest first, as the embedded ingest checks what it reads. The cluster's intermediate
//! tables are Parquet in the run's scratch directory in the store, removed when the run ends.
//! `FUNNEL_TRACE` prints each step's time on stderr.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use funnel_core::schema::{self, CONTRACT_COLUMNS, store_column_name};
use funnel_core::{Counts, EventFile, FileSum, IdFile, InputFile, Manifest, StoreLayout};
use funnel_ingest::{
    IngestOptions, IngestReport, NewGeneration, Progress, ScanFile, StoreRun, scan_inputs,
};
use funnel_remote::SparkSession;
use funnel_sql::{
    Dialect, Generation, HANDED_EVENT_COLUMNS, dedup_query, hash_query, read_query, rules_query,
    write_events_query, write_identity_query, write_ids_query, write_quarantine_query,
};
use serde::Deserialize;

/// A file the workers could not read as a whole: the embedded ingest's message and exit code
/// for it (the run stops, nothing is committed).
#[derive(Debug)]
pub struct UnreadFile {
    pub message: String,
    pub exit: u8,
}

impl std::fmt::Display for UnreadFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UnreadFile {}

/// Most read tasks: one per input file up to this many.
const MAX_READ_TASKS: usize = 512;

/// The run's temporary views (one session's).
const FILES: &str = "funnel_ingest_files";
const READ: &str = "funnel_ingest_read";
const SRC: &str = "funnel_ingest_src";
const VALIDATED: &str = "funnel_ingest_validated";
const VERDICTS: &str = "funnel_ingest_verdicts";
const STORED: &str = "funnel_ingest_stored";
const STORED_IDENTITY: &str = "funnel_ingest_stored_identity";
const LABELS: &str = "funnel_ingest_labels";
const NEW: &str = "funnel_ingest_new";
const MERGES: &str = "funnel_ingest_merges";
const HASHED: &str = "funnel_ingest_hashed";

/// The session and where its tables go.
struct Cluster<'a> {
    session: SparkSession,
    /// The run's scratch directory for the cluster's tables (absolute).
    scratch: String,
    worker: &'a str,
    started: Instant,
    trace: bool,
    progress: &'a dyn Fn(Progress<'_>),
}

impl Cluster<'_> {
    fn sql(&self, sql: &str) -> Result<()> {
        self.session
            .execute(sql)
            .with_context(|| format!("on Spark: {}", short(sql)))
    }

    fn strings(&self, sql: &str) -> Result<Vec<String>> {
        self.session
            .strings(sql)
            .with_context(|| format!("on Spark: {}", short(sql)))
    }

    fn count(&self, sql: &str) -> Result<u64> {
        self.session
            .count(sql)
            .with_context(|| format!("on Spark: {}", short(sql)))
    }

    /// Each line of `sql`'s answer (one text column) read as `T`.
    fn json<T: serde::de::DeserializeOwned>(&self, sql: &str) -> Result<Vec<T>> {
        self.strings(sql)?
            .iter()
            .map(|l| {
                serde_json::from_str(l)
                    .with_context(|| format!("Spark answered an unexpected line: {}", short(l)))
            })
            .collect()
    }

    /// Writes `query`'s answer as Parquet under the scratch directory and names it `view`.
    fn materialize(&self, view: &str, query: &str) -> Result<()> {
        let d = Dialect::Spark;
        let path = d.string(&format!("{}/{view}", self.scratch));
        self.sql(&format!(
            "INSERT OVERWRITE DIRECTORY {path} USING parquet {query}"
        ))?;
        self.sql(&format!(
            "CREATE OR REPLACE TEMPORARY VIEW {view} USING parquet OPTIONS (path {path})"
        ))
    }

    fn view(&self, view: &str, query: &str) -> Result<()> {
        self.sql(&format!(
            "CREATE OR REPLACE TEMPORARY VIEW {view} AS {query}"
        ))
    }

    fn mark(&self, what: &str) {
        (self.progress)(Progress::Step(what));
        if self.trace {
            eprintln!(
                "{:>8.3} s  spark: {what}",
                self.started.elapsed().as_secs_f64()
            );
        }
    }
}

/// The head of a statement, for an error message.
fn short(sql: &str) -> String {
    const MAX: usize = 300;
    match sql.char_indices().nth(MAX) {
        Some((i, _)) => format!("{} …", &sql[..i]),
        None => sql.to_string(),
    }
}

fn quote(text: &str) -> String {
    Dialect::Spark.string(text)
}

fn ident(name: &str) -> String {
    Dialect::Spark.ident(name)
}

/// `path` as the cluster's workers reach it (absolute; not resolved through links).
fn absolute(path: &Path) -> Result<String> {
    let abs = std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))?;
    abs.to_str()
        .map(str::to_string)
        .ok_or_else(|| crate::UsageError(format!("{}: not UTF-8", abs.display())).into())
}

/// Runs the ingest of `inputs` into `opts.store` on the Spark Connect server at `remote`, with
/// the `funnel` binary at `worker` on the workers; the same report (and store) as
/// `funnel_ingest::ingest`.
pub fn ingest(
    opts: &IngestOptions,
    inputs: &[PathBuf],
    remote: &str,
    worker: &str,
    progress: &dyn Fn(Progress<'_>),
) -> Result<IngestReport> {
    opts.check()?;
    let (files, skipped) = scan_inputs(inputs, &opts.store)?;
    let session = SparkSession::connect(remote).map_err(|e| match e {
        funnel_remote::RemoteError::SparkNotBuilt => crate::UsageError(e.to_string()).into(),
        e => anyhow::Error::from(e),
    })?;
    let sized: Vec<(&Path, bool)> = files
        .iter()
        .map(|f| (f.path.as_path(), f.gzip || f.format == "parquet"))
        .collect();
    let store = StoreRun::begin(opts, &sized, progress)?;
    let scratch = store.scratch_dir().join("spark");
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let cluster = Cluster {
        session,
        scratch: absolute(&scratch)?,
        worker,
        started: Instant::now(),
        trace: std::env::var_os("FUNNEL_TRACE").is_some(),
        progress,
    };
    let run = Run {
        opts,
        files: &files,
        cluster: &cluster,
    };
    let report = run.go(store, skipped)?;
    drop(cluster);
    Ok(report)
}

struct Run<'a> {
    opts: &'a IngestOptions,
    files: &'a [ScanFile],
    cluster: &'a Cluster<'a>,
}

/// A line of a writer's answer (`spark-worker write-*`).
#[derive(Debug, Deserialize)]
struct Wrote<F> {
    file: F,
    sum: FileSum,
}

#[derive(Debug, Deserialize)]
struct QuarantineWrote {
    sum: Option<FileSum>,
}

#[derive(Debug, Deserialize)]
struct FileRead {
    file: usize,
    bytes: u64,
    sha256: String,
}

#[derive(Debug, Deserialize)]
struct Outcome {
    file: usize,
    outcome: String,
    n: u64,
}

#[derive(Debug, Deserialize)]
struct Unread {
    message: String,
    exit: u8,
}

#[derive(Debug, Deserialize)]
struct Range {
    min: Option<i64>,
    max: Option<i64>,
}

/// The committed generation's files the cluster reads (absolute paths): its directory when it
/// has events, and its directory and identity file when it has one.
#[derive(Debug, Clone, Copy)]
struct Stored<'a> {
    events: Option<&'a str>,
    identity: Option<(&'a str, &'a str)>,
}

/// The buckets and id-index partitions a run rewrites.
struct Touched {
    buckets: BTreeSet<u32>,
    partitions: BTreeSet<u32>,
}

/// The outcome names of the counts query for rows that are not rejected.
const STORED_ROW: &str = ".stored";
const DUPLICATE_ROW: &str = ".duplicate";

impl Run<'_> {
    fn go(
        &self,
        mut store: StoreRun,
        skipped: Vec<funnel_ingest::Skipped>,
    ) -> Result<IngestReport> {
        let c = self.cluster;
        let manifest = store.manifest().clone();

        // The committed generation's files the cluster reads, checked first.
        let committed = match store.committed_dir() {
            Some(dir) => Some(absolute(dir)?),
            None => None,
        };
        for f in &manifest.event_files {
            store.reread(&f.path, Some(f.rows))?;
        }
        if let Some(f) = &manifest.identity_file {
            store.reread(f, None)?;
        }
        let stored = Stored {
            events: committed
                .as_deref()
                .filter(|_| !manifest.event_files.is_empty()),
            identity: committed.as_deref().zip(manifest.identity_file.as_deref()),
        };

        let properties = self.read_and_validate()?;
        self.deduplicate(stored, &properties, &manifest.properties)?;

        // The counts per file, the quarantine, and the run's record.
        let inputs = self.input_records()?;
        let range: Vec<Range> = c.json(&format!(
            "SELECT to_json(named_struct('min', min(_ts_ms), 'max', max(_ts_ms))) \
             FROM {VERDICTS} WHERE _verdict = 'accepted'"
        ))?;
        let ts_range = range.first().and_then(|r| r.min.zip(r.max));
        let mut run = store.record(self.opts, inputs, ts_range);
        anyhow::ensure!(
            run.counts.reconciles(),
            "the cluster's counts do not reconcile: {:?}",
            run.counts
        );
        let quarantine_path = store.scratch_dir().join("quarantine.parquet");
        let quarantined = self
            .write_quarantine(run.run, &absolute(&quarantine_path)?)?
            .map(|sum| (quarantine_path, sum));
        c.mark("quarantine");
        let report = store.admit(
            self.opts,
            &run,
            skipped,
            quarantined.as_ref().map(|(q, _)| q.as_path()),
        )?;

        let linked = self.stitch(stored)?;
        c.materialize(NEW, &self.new_events(run.run, &properties))?;
        self.merges(stored)?;
        let touched = self.hash(manifest.buckets)?;
        let mut new_properties: BTreeSet<String> = manifest.properties.iter().cloned().collect();
        new_properties.extend(c.strings(&format!(
            "SELECT DISTINCT explode(map_keys(properties)) FROM {NEW}"
        ))?);
        let new_properties: Vec<String> = new_properties.into_iter().collect();
        if stored.events.is_some() {
            run.persons_merged = c.count(&format!(
                "SELECT count(DISTINCT s.{p}) FROM {STORED} s JOIN {MERGES} m ON s.{p} = m.old",
                p = ident(schema::PERSON_ID)
            ))?;
        }
        c.mark("merges and buckets");

        // The files: touched buckets, touched id partitions, the identity.
        let gen_dir = absolute(store.gen_dir())?;
        let g = Generation {
            worker: c.worker,
            dir: &gen_dir,
            generation: store.generation(),
        };
        let event_files = self.write_buckets(
            &mut store,
            &manifest,
            g,
            &touched.buckets,
            stored,
            &new_properties,
        )?;
        c.mark("bucket files");
        let id_files = self.write_ids(&mut store, &manifest, g, &touched.partitions, stored)?;
        c.mark("id index");
        let identity = if linked {
            let path = format!("{gen_dir}/{}", StoreLayout::IDENTITY_FILE);
            let wrote: Vec<QuarantineWrote> =
                c.json(&write_identity_query(LABELS, c.worker, &path))?;
            wrote.into_iter().next().and_then(|w| w.sum)
        } else {
            None
        };
        c.mark("identity");

        let report = store.commit(
            NewGeneration {
                run,
                properties: new_properties,
                event_files,
                id_files,
                identity,
                quarantine: quarantined,
            },
            report,
        )?;
        c.mark("commit");
        Ok(report)
    }

    /// Reads the input files on the workers and applies the row rules; the export's property
    /// columns as (column of the validated view, store name).
    fn read_and_validate(&self) -> Result<Vec<(String, String)>> {
        let c = self.cluster;
        // Reading, on the workers.
        self.files_view()?;
        let tasks = self.files.len().clamp(1, MAX_READ_TASKS);
        c.materialize(READ, &read_query(FILES, c.worker, tasks))?;
        let unread: Vec<Unread> = c.json(&format!(
            "SELECT to_json(named_struct('message', message, 'exit', exit)) FROM \
             (SELECT * FROM {READ} WHERE kind = 'error' ORDER BY file LIMIT 1)"
        ))?;
        if let Some(u) = unread.into_iter().next() {
            return Err(UnreadFile {
                message: u.message,
                exit: u.exit,
            }
            .into());
        }
        c.mark("read");

        // The rules, over the records' cells; property columns get positional names here.
        let mut keys = c.strings(&format!(
            "SELECT DISTINCT explode(map_keys(cells)) FROM {READ} WHERE kind = 'record'"
        ))?;
        keys.retain(|k| !CONTRACT_COLUMNS.contains(&k.as_str()));
        keys.sort();
        let properties: Vec<(String, String)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (format!("_p{i}"), store_column_name(k)))
            .collect();
        let mut cells: Vec<String> = CONTRACT_COLUMNS
            .iter()
            .map(|c| format!("cells[{}] AS {}", quote(c), ident(c)))
            .collect();
        cells.extend(
            keys.iter()
                .zip(&properties)
                .map(|(k, (col, _))| format!("cells[{}] AS {col}", quote(k))),
        );
        c.view(
            SRC,
            &format!(
                "SELECT file AS _file, row AS _row, coalesce(line, row) AS _line, \
                 line AS _read_line, {} FROM {READ} WHERE kind = 'record'",
                cells.join(", ")
            ),
        )?;
        c.materialize(VALIDATED, &rules_query(SRC, &self.opts.timezone))?;
        c.mark("rules");
        Ok(properties)
    }

    /// Deduplicates the valid rows against the stored events (`stored_properties`: their
    /// property columns) and the run's earlier rows.
    fn deduplicate(
        &self,
        stored: Stored<'_>,
        properties: &[(String, String)],
        stored_properties: &[String],
    ) -> Result<()> {
        let c = self.cluster;
        if let Some(dir) = stored.events {
            c.view(
                STORED,
                &format!(
                    "SELECT *, CAST(regexp_extract(_metadata.file_path, 'bucket=([0-9]+)/', 1) \
                     AS INT) AS _bucket FROM parquet.{}",
                    ident(&format!("{dir}/events/*/*.parquet"))
                ),
            )?;
        }
        c.materialize(
            VERDICTS,
            &dedup_query(
                VALIDATED,
                stored.events.map(|_| STORED),
                properties,
                stored_properties,
            ),
        )?;
        c.mark("dedup");
        Ok(())
    }

    /// Labels every linked id with its person: the connected components of the accepted
    /// logins' links and the stored identity. Whether any id is linked.
    fn stitch(&self, stored: Stored<'_>) -> Result<bool> {
        let c = self.cluster;
        let mut edges = format!(
            "SELECT user_id AS a, account_id AS b FROM {VERDICTS} WHERE _verdict = 'accepted' \
             AND event_type = {} AND NULLIF(account_id, '') IS NOT NULL",
            quote(schema::LOGIN)
        );
        if let Some((dir, file)) = stored.identity {
            c.view(
                STORED_IDENTITY,
                &format!("SELECT * FROM parquet.{}", ident(&format!("{dir}/{file}"))),
            )?;
            edges.push_str(&format!(
                " UNION ALL SELECT id AS a, {} AS b FROM {STORED_IDENTITY}",
                ident(schema::PERSON_ID)
            ));
        }
        let edges = format!("({edges}) g");
        let linked = c.count(&format!("SELECT count(*) FROM {edges} WHERE a <> b"))? > 0;
        let rounds = if linked {
            let dir = format!("{}/stitch", c.scratch);
            let stitch = crate::stitch::stitch(&c.session, &edges, &dir)?;
            c.view(LABELS, &format!("SELECT v, l FROM {}", stitch.labels()))?;
            stitch.rounds()
        } else {
            c.view(
                LABELS,
                "SELECT CAST(NULL AS STRING) AS v, CAST(NULL AS STRING) AS l WHERE false",
            )?;
            0
        };
        c.mark(&format!("stitching ({rounds} rounds)"));
        Ok(linked)
    }

    /// The merged persons: each linked id's person before this run (stored, else the id itself)
    /// and now, where they differ.
    fn merges(&self, stored: Stored<'_>) -> Result<()> {
        let (old, join) = match stored.identity {
            Some(_) => (
                format!("coalesce(s.{}, l.v)", ident(schema::PERSON_ID)),
                format!(" LEFT JOIN {STORED_IDENTITY} s ON l.v = s.id"),
            ),
            None => ("l.v".to_string(), String::new()),
        };
        self.cluster.materialize(
            MERGES,
            &format!(
                "SELECT DISTINCT {old} AS old, l.l AS new FROM {LABELS} l{join} WHERE {old} <> l.l"
            ),
        )
    }

    /// The store's hash (of `buckets`) of every person and event id the writers group by; the
    /// touched buckets (new events', and each merged person's old and new bucket) and id-index
    /// partitions (new events').
    fn hash(&self, buckets: u32) -> Result<Touched> {
        let c = self.cluster;
        c.materialize(
            HASHED,
            &hash_query(
                &format!(
                    "(SELECT DISTINCT key FROM (SELECT person_id AS key FROM {NEW} \
                     UNION ALL SELECT event_id FROM {NEW} UNION ALL SELECT old FROM {MERGES} \
                     UNION ALL SELECT new FROM {MERGES})) k"
                ),
                c.worker,
                buckets,
            ),
        )?;
        Ok(Touched {
            buckets: self.numbers(&format!(
                "SELECT DISTINCT CAST(h.bucket AS STRING) FROM (SELECT person_id AS k FROM {NEW} \
                 UNION ALL SELECT old FROM {MERGES} UNION ALL SELECT new FROM {MERGES}) x \
                 JOIN {HASHED} h ON x.k = h.key"
            ))?,
            partitions: self.numbers(&format!(
                "SELECT DISTINCT CAST(h.bucket AS STRING) FROM {NEW} n JOIN {HASHED} h \
                 ON n.event_id = h.key"
            ))?,
        })
    }

    /// Writes the touched buckets (their stored events re-keyed, and the new events) on the
    /// workers and carries the others (`manifest`: the committed one); every bucket file of the
    /// new generation, in bucket order.
    fn write_buckets(
        &self,
        store: &mut StoreRun,
        manifest: &Manifest,
        g: Generation<'_>,
        touched: &BTreeSet<u32>,
        stored: Stored<'_>,
        properties: &[String],
    ) -> Result<Vec<EventFile>> {
        let mut event_files = Vec::new();
        if !touched.is_empty() {
            let mut events =
                format!("SELECT n.*, h.bucket FROM {NEW} n JOIN {HASHED} h ON n.person_id = h.key");
            if stored.events.is_some() {
                events.push_str(" UNION ALL ");
                events.push_str(&self.stored_events(touched, &manifest.properties));
            }
            let wrote: Vec<Wrote<EventFile>> = self.cluster.json(&write_events_query(
                &format!("({events}) e"),
                g,
                properties,
                self.opts.row_group_rows,
            ))?;
            for w in wrote {
                store.wrote(&w.file.path, w.sum);
                event_files.push(w.file);
            }
        }
        for f in &manifest.event_files {
            if !touched.contains(&f.bucket) {
                store.carry(&f.path, Some(f.rows))?;
                event_files.push(f.clone());
            }
        }
        event_files.sort_by_key(|f| f.bucket);
        Ok(event_files)
    }

    /// Writes the touched id-index partitions (their stored rows, checked first, and the new
    /// events) on the workers and carries the others; every partition file, in order.
    fn write_ids(
        &self,
        store: &mut StoreRun,
        manifest: &Manifest,
        g: Generation<'_>,
        touched: &BTreeSet<u32>,
        stored: Stored<'_>,
    ) -> Result<Vec<IdFile>> {
        let mut id_files = Vec::new();
        if !touched.is_empty() {
            let stored_parts: Vec<&IdFile> = manifest
                .id_files
                .iter()
                .filter(|f| touched.contains(&f.partition))
                .collect();
            for f in &stored_parts {
                store.reread(&f.path, Some(f.rows))?;
            }
            let stored = match (stored.events, stored_parts.is_empty()) {
                (Some(dir), false) => Some(format!(
                    "(SELECT * FROM (SELECT CAST(regexp_extract(_metadata.file_path, \
                     'part=([0-9]+)/', 1) AS INT) AS partition, event_id, {h} AS content_hash \
                     FROM parquet.{path}) WHERE partition IN ({list})) s",
                    h = ident(schema::CONTENT_HASH),
                    path = ident(&format!("{dir}/ids/*/*.parquet")),
                    list = in_list(stored_parts.iter().map(|f| f.partition)),
                )),
                _ => None,
            };
            let new = format!(
                "(SELECT n.*, h.bucket AS partition FROM {NEW} n JOIN {HASHED} h \
                 ON n.event_id = h.key) n"
            );
            let wrote: Vec<Wrote<IdFile>> =
                self.cluster
                    .json(&write_ids_query(&new, stored.as_deref(), g))?;
            for w in wrote {
                store.wrote(&w.file.path, w.sum);
                id_files.push(w.file);
            }
        }
        for f in &manifest.id_files {
            if !touched.contains(&f.partition) {
                store.carry(&f.path, Some(f.rows))?;
                id_files.push(f.clone());
            }
        }
        id_files.sort_by_key(|f| f.partition);
        Ok(id_files)
    }

    /// The view of the input files: number (sorted path order), path as the workers reach it,
    /// path as the store records it, format, gzip.
    fn files_view(&self) -> Result<()> {
        let mut rows = Vec::with_capacity(self.files.len());
        for (i, f) in self.files.iter().enumerate() {
            rows.push(format!(
                "({i}, {}, {}, {}, {})",
                quote(&absolute(&f.path)?),
                quote(&f.path.display().to_string()),
                quote(f.format),
                f.gzip
            ));
        }
        let query = if rows.is_empty() {
            "SELECT CAST(NULL AS INT) AS file, CAST(NULL AS STRING) AS path, \
             CAST(NULL AS STRING) AS source, CAST(NULL AS STRING) AS format, \
             CAST(NULL AS BOOLEAN) AS gzip WHERE false"
                .to_string()
        } else {
            format!(
                "SELECT * FROM VALUES {} AS t(file, path, source, format, gzip)",
                rows.join(", ")
            )
        };
        self.cluster.view(FILES, &query)
    }

    /// Each input file's record: size, SHA-256 and counts by outcome.
    fn input_records(&self) -> Result<Vec<InputFile>> {
        let c = self.cluster;
        let mut inputs: Vec<InputFile> = self
            .files
            .iter()
            .map(|f| InputFile {
                path: f.path.display().to_string(),
                format: f.format.to_string(),
                gzip: f.gzip,
                bytes: 0,
                sha256: String::new(),
                counts: Counts::default(),
            })
            .collect();
        let read: Vec<FileRead> = c.json(&format!(
            "SELECT to_json(named_struct('file', file, 'bytes', bytes, 'sha256', sha256)) \
             FROM {READ} WHERE kind = 'file'"
        ))?;
        anyhow::ensure!(
            read.len() == inputs.len(),
            "the workers read {} of {} files",
            read.len(),
            inputs.len()
        );
        for r in read {
            let f = &mut inputs[r.file];
            f.bytes = r.bytes;
            f.sha256 = r.sha256;
        }
        let outcomes: Vec<Outcome> = c.json(&format!(
            "SELECT to_json(named_struct('file', file, 'outcome', outcome, 'n', count(*))) FROM (\
             SELECT file, reason AS outcome FROM {READ} WHERE kind = 'rejected' \
             UNION ALL SELECT _file, _reason FROM {VALIDATED} WHERE _reason IS NOT NULL \
             UNION ALL SELECT _file, CASE _verdict WHEN 'accepted' THEN '{STORED_ROW}' \
             WHEN 'duplicate' THEN '{DUPLICATE_ROW}' ELSE _verdict END FROM {VERDICTS}) \
             GROUP BY file, outcome"
        ))?;
        for o in outcomes {
            let counts = &mut inputs[o.file].counts;
            counts.rows_read += o.n;
            match o.outcome.as_str() {
                STORED_ROW => counts.rows_stored += o.n,
                DUPLICATE_ROW => counts.rows_duplicate += o.n,
                reason => {
                    counts.rows_rejected += o.n;
                    *counts
                        .rejected_by_reason
                        .entry(reason.to_string())
                        .or_default() += o.n;
                }
            }
        }
        Ok(inputs)
    }

    /// Writes the run's quarantine at `path`: read rejections and rule rejections in read
    /// order, then the conflicts in read order (the embedded ingest's order); its sum, or
    /// `None` when no row was rejected.
    fn write_quarantine(&self, run: u64, path: &str) -> Result<Option<FileSum>> {
        let c = self.cluster;
        let rows = format!(
            "(SELECT named_struct('p', 0, 'f', r.file, 'r', r.row) AS _order, {run} AS run, \
             f.source AS source_file, r.line, r.row, r.reason, r.field, r.value, r.message, \
             r.raw FROM {READ} r JOIN {FILES} f ON r.file = f.file WHERE r.kind = 'rejected' \
             UNION ALL SELECT named_struct('p', 0, 'f', v._file, 'r', v._row), {run}, f.source, \
             v._read_line, v._row, v._reason, v._field, v._value, v._message, r.raw \
             FROM {VALIDATED} v JOIN {FILES} f ON v._file = f.file JOIN {READ} r \
             ON r.kind = 'record' AND r.file = v._file AND r.row = v._row \
             WHERE v._reason IS NOT NULL \
             UNION ALL SELECT named_struct('p', 1, 'f', d._file, 'r', d._row), {run}, f.source, \
             d._read_line, d._row, 'duplicate_conflict', d._conflict_field, d._conflict_value, \
             d._conflict_message, d._conflict_raw FROM {VERDICTS} d JOIN {FILES} f \
             ON d._file = f.file WHERE d._verdict = 'duplicate_conflict') q"
        );
        let wrote: Vec<QuarantineWrote> = c.json(&write_quarantine_query(&rows, c.worker, path))?;
        Ok(wrote.into_iter().next().and_then(|w| w.sum))
    }

    /// The run's accepted rows as the writers take them ([`HANDED_EVENT_COLUMNS`]), with the
    /// person of their user_id.
    fn new_events(&self, run: u64, properties: &[(String, String)]) -> String {
        let text = |c: &str| format!("NULLIF(v.{}, '')", ident(c));
        let mut props: Vec<String> = properties
            .iter()
            .map(|(col, store)| {
                format!(
                    "named_struct('key', {}, 'value', NULLIF(v.{col}, ''))",
                    quote(store)
                )
            })
            .collect();
        props.push(format!(
            "named_struct('key', {}, 'value', v._unparsed_amount)",
            quote(funnel_core::rules::UNPARSED_AMOUNT)
        ));
        let columns: Vec<String> = HANDED_EVENT_COLUMNS
            .iter()
            .map(|&c| {
                let value = match c {
                    "ts_ms" => "v._ts_ms".to_string(),
                    "amount_units" => "v._amount_units".to_string(),
                    "currency" => "v._currency".to_string(),
                    "properties" => properties_map(&props),
                    "person_id" => "coalesce(l.l, v.user_id)".to_string(),
                    "source_file" => "f.source".to_string(),
                    "source_line" => "v._line".to_string(),
                    "run" => format!("CAST({run} AS BIGINT)"),
                    c => text(c),
                };
                format!("{value} AS {}", ident(c))
            })
            .collect();
        format!(
            "SELECT {} FROM {VERDICTS} v JOIN {FILES} f ON v._file = f.file \
             LEFT JOIN {LABELS} l ON v.user_id = l.v WHERE v._verdict = 'accepted'",
            columns.join(", ")
        )
    }

    /// The stored events of the buckets `touched`, as the writers take them, re-keyed to their
    /// merged person, with their new bucket (`properties`: the store's property columns).
    fn stored_events(&self, touched: &BTreeSet<u32>, properties: &[String]) -> String {
        let person = ident(schema::PERSON_ID);
        let entries: Vec<String> = properties
            .iter()
            .map(|p| format!("named_struct('key', {}, 'value', s.{})", quote(p), ident(p)))
            .collect();
        let props = properties_map(&entries);
        let columns: Vec<String> = HANDED_EVENT_COLUMNS
            .iter()
            .map(|&c| {
                let value = match c {
                    "ts_ms" => format!("unix_millis(s.{})", ident(schema::TS)),
                    "amount_units" => format!(
                        "CAST(s.{} * {} AS BIGINT)",
                        ident(schema::AMOUNT),
                        10i64.pow(schema::AMOUNT_SCALE)
                    ),
                    "properties" => props.clone(),
                    "person_id" => format!("coalesce(m.new, s.{person})"),
                    "source_file" => format!("s.{}", ident(schema::SOURCE_FILE)),
                    "source_line" => format!("CAST(s.{} AS BIGINT)", ident(schema::SOURCE_LINE)),
                    "run" => format!("CAST(s.{} AS BIGINT)", ident(schema::INGEST_RUN)),
                    c => format!("s.{}", ident(c)),
                };
                format!("{value} AS {}", ident(c))
            })
            .collect();
        format!(
            "SELECT {}, coalesce(h.bucket, s._bucket) AS bucket FROM {STORED} s \
             LEFT JOIN {MERGES} m ON s.{person} = m.old LEFT JOIN {HASHED} h ON m.new = h.key \
             WHERE s._bucket IN ({})",
            columns.join(", "),
            in_list(touched.iter().copied())
        )
    }

    /// The numbers a query answers (one text column of decimal numbers).
    fn numbers(&self, sql: &str) -> Result<BTreeSet<u32>> {
        self.cluster
            .strings(sql)?
            .iter()
            .map(|n| {
                n.parse::<u32>()
                    .with_context(|| format!("Spark answered {n:?} for a bucket"))
            })
            .collect()
    }
}

/// A map of the non-null values of `entries` (`named_struct('key', K, 'value', V)`
/// expressions): an event's properties.
fn properties_map(entries: &[String]) -> String {
    if entries.is_empty() {
        return "CAST(map() AS MAP<STRING, STRING>)".to_string();
    }
    format!(
        "map_from_entries(filter(CAST(array({}) AS ARRAY<STRUCT<key: STRING, value: STRING>>), \
         x -> x.value IS NOT NULL))",
        entries.join(", ")
    )
}

/// `numbers` as the list of a SQL `IN (...)`.
fn in_list(numbers: impl Iterator<Item = u32>) -> String {
    let items: Vec<String> = numbers.map(|n| n.to_string()).collect();
    items.join(", ")
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    /// The columns the queries hand to the writers are exactly `HandedEvent`'s fields: an
    /// event with every column parses (unknown fields are refused), and fills every field.
    #[test]
    fn the_handed_columns_are_the_handed_events_fields() {
        let mut event = serde_json::Map::new();
        for c in HANDED_EVENT_COLUMNS {
            let v = match c {
                "ts_ms" | "amount_units" | "source_line" | "run" => json!(7),
                "properties" => json!({"note": "n"}),
                _ => json!("x"),
            };
            event.insert(c.to_string(), v);
        }
        let e: funnel_ingest::HandedEvent =
            serde_json::from_value(Value::Object(event.clone())).expect("parses");
        let optional = [
            &e.platform,
            &e.journey,
            &e.chat_type,
            &e.warning_action,
            &e.account_id,
            &e.order_id,
            &e.currency,
        ];
        assert!(optional.iter().all(|v| v.as_deref() == Some("x")), "{e:?}");
        assert_eq!((e.amount_units, e.ts_ms, e.run), (Some(7), 7, 7));
        assert_eq!(e.properties.get("note").map(String::as_str), Some("n"));
        event.insert("extra".into(), json!("x"));
        assert!(
            serde_json::from_value::<funnel_ingest::HandedEvent>(Value::Object(event)).is_err()
        );
    }
}
