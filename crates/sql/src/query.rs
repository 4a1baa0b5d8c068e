//! The query: per person (and per breakdown value, or trend period, of the step-1 events), the
//! person's events as a sorted list of `(ts, step, event_id)` entries, walked by a fold that is
//! the embedded kernel's state machine written in SQL.
//!
//! Entries are what ClickHouse's windowFunnel walks: one per step an event satisfies, and under
//! `strict_order` one "other" entry (step -1) for an event that satisfies none; sorted by
//! timestamp, then step ("other" first), then event_id (the store's order of ties). The fold
//! keeps, per level, the latest chain that reached it (its start, last timestamp and the
//! timestamps of its steps); under `strict_once`, every chain per level with the events it used.
//! The level is the highest level reached; the reported chain (the one that gave the level, as
//! the kernel reports it) tells whether its window was still open at the cutoff (CONTRACT §5,
//! and `pending` of the embedded engine) and how long each step took (time to convert).
//!
//! The ClickHouse dialect takes the level from `windowFunnel` itself (up to its 32 conditions)
//! and the reported chain from the fold.
//!
//! Groups: all persons; each breakdown value; with trends (`PlanOptions::interval`) each
//! calendar period of the step-1 events, alone and with each breakdown value. A group's step 1
//! also requires its values, as in the embedded engine.
//!
//! Result columns, one row per group, window state and item: `grp` (bit 1: a breakdown value
//! in `k0..`; bit 2: a period in `kp`), `kp` (with trends only), `k0..` (the breakdown values,
//! NULL where the step-1 event lacks the column, and in rows without bit 1), `what` (0: persons
//! at level `step`; 1: persons who took `ms` milliseconds from the previous step to step `step`
//! (0-based); 2: the same from step 1), `step`, `ms`, `window_open`, `persons`, and `cutoff_ms`
//! (the latest event read, the cutoff when none was given). Times to convert come back as a
//! distribution of exact values, so the client computes the same median, percentiles and mean
//! as the embedded engine; the answer grows with the distinct durations, not with the events.

use funnel_core::schema;

use crate::plan::{Dialect, Plan};

/// Added to epoch milliseconds before ClickHouse's windowFunnel reads them as `UInt64`: the
/// earliest instant a timestamp may name ([`funnel_core::time::MIN_MS`], year 1) becomes 0.
const TS_BIAS: i64 = -funnel_core::time::MIN_MS;

// windowFunnel compares `ts <= start + window` in UInt64 (and documents timestamps up to the
// Int64 maximum): the latest shifted instant plus the largest window must stay below that.
const _: () = assert!(
    (funnel_core::time::MAX_MS + TS_BIAS)
        .checked_add(funnel_core::MAX_WINDOW_MS)
        .is_some()
);

/// The query for `plan` in `dialect` over `source` (a table name, or a Parquet path or glob
/// with the store's columns).
pub fn query(plan: &Plan<'_>, dialect: Dialect, source: &str) -> String {
    Query { plan, d: dialect }.render(source)
}

/// The audit rows of `plan` (built with `PlanOptions::audit`) in Spark SQL over `source`: one
/// row per person and group, as the embedded engine's `--persons-out` writes them (`funnel`,
/// `group` as a JSON object, `person_id`, `level`, `window_open`, then `step_K_ts` and
/// `step_K_event_id` for K in 1..=`steps`, null beyond the person's level). Every person of the
/// source is in the all-persons group (level 0 without a chain); persons left out by
/// `--closed-windows-only` are not audited, as in the embedded engine.
pub fn audit_query(plan: &Plan<'_>, source: &str, steps: usize, closed_only: bool) -> String {
    assert!(
        plan.options.audit,
        "an audit query needs PlanOptions::audit"
    );
    Query {
        plan,
        d: Dialect::Spark,
    }
    .render_audit(source, steps, closed_only)
}

/// A fold over a person's entries, and what is read from its final state `st` (whose level is
/// `st_level`): the level, and the reported chain's start, timestamps and event ids.
struct Fold {
    fold: String,
    level: String,
    start: String,
    chain: String,
    ids: String,
}

struct Query<'p, 's> {
    plan: &'p Plan<'s>,
    d: Dialect,
}

impl Query<'_, '_> {
    fn spec(&self) -> &funnel_core::FunnelSpec {
        self.plan.spec
    }

    fn n(&self) -> usize {
        self.plan.steps()
    }

    fn breakdown(&self) -> usize {
        self.spec().breakdown.len()
    }

    /// The groups the query counts persons in: all persons, each breakdown value, and with
    /// trends each period alone and with each breakdown value. Per group set: its `grp` code
    /// (bit 1: breakdown values in `k0..`, bit 2: a period in `kp`) and the event columns its
    /// key reads (`b0..`, `bp`).
    fn group_sets(&self) -> Vec<(u8, Vec<String>)> {
        let b: Vec<String> = (0..self.breakdown()).map(|i| format!("b{i}")).collect();
        let mut sets = vec![(0, Vec::new())];
        if !b.is_empty() {
            sets.push((1, b.clone()));
        }
        if self.plan.options.interval.is_some() {
            sets.push((2, vec!["bp".to_string()]));
            if !b.is_empty() {
                let mut keys = vec!["bp".to_string()];
                keys.extend(b);
                sets.push((3, keys));
            }
        }
        sets
    }

    /// The result's key columns: `kp` with trends, then `k0..`.
    fn key_columns(&self) -> Vec<String> {
        let mut keys = Vec::new();
        if self.plan.options.interval.is_some() {
            keys.push("kp".to_string());
        }
        keys.extend((0..self.breakdown()).map(|i| format!("k{i}")));
        keys
    }

    /// The common table expressions of the query: `e` (the events), and per group set its
    /// person rows `f{grp}` (`p`, the set's key columns, `level`, `window_open`, the reported
    /// chain `ct` (and `ci`, its event ids, with the audit), the answer items `o`); with the
    /// sets, as `(grp, key columns)`.
    fn ctes(&self, source: &str) -> (Vec<String>, Vec<(u8, Vec<String>)>) {
        let d = self.d;
        let spec = self.spec();
        let ts = d.ident(schema::TS);
        // e: one row per event with its step conditions and breakdown values.
        let not_null = |e: String| match d {
            Dialect::Spark => e,
            Dialect::ClickHouse => format!("assumeNotNull({e})"),
        };
        let mut e_cols = vec![
            format!("{} AS p", d.ident(schema::PERSON_ID)),
            format!("{} AS t", not_null(d.millis(&ts))),
            format!("{} AS r", not_null(d.ident(schema::EVENT_ID))),
        ];
        for (k, step) in spec.steps.iter().enumerate() {
            let mut parts = vec![format!(
                "{} = {}",
                d.ident(schema::EVENT_TYPE),
                d.string(&step.event_type)
            )];
            for f in &step.filters {
                parts.push(d.is_in(&d.ident(&f.column), &f.values));
            }
            if k == 0 {
                if let Some(from) = self.plan.options.from_ms {
                    parts.push(format!("{} >= {from}", d.millis(&ts)));
                }
                if let Some(to) = self.plan.options.to_ms {
                    parts.push(format!("{} < {to}", d.millis(&ts)));
                }
            }
            e_cols.push(format!("({}) AS c{k}", parts.join(" AND ")));
        }
        for (i, b) in spec.breakdown.iter().enumerate() {
            let value = match self.plan.options.split_at_ms {
                // The derived before/after column (as the embedded scan derives it).
                Some(at) if b == schema::SPLIT => d.iff(
                    &format!("{} >= {at}", not_null(d.millis(&ts))),
                    &d.text(&d.string(schema::SPLIT_AFTER)),
                    &d.text(&d.string(schema::SPLIT_BEFORE)),
                ),
                _ => d.text(&d.ident(b)),
            };
            let value = match &self.plan.kept {
                Some(kept) => d.kept_or_other(&value, kept),
                None => value,
            };
            e_cols.push(format!("{value} AS b{i}"));
        }
        if let Some(interval) = self.plan.options.interval {
            let tz = match self.plan.options.timezone.as_str() {
                "" => "UTC",
                tz => tz,
            };
            e_cols.push(format!(
                "{} AS bp",
                d.period(interval, tz, &not_null(d.millis(&ts)))
            ));
        }
        if let Some(next_by) = &self.plan.options.next_by {
            e_cols.push(format!("{} AS ty", d.text(&d.ident(schema::EVENT_TYPE))));
            let nb = match next_by {
                Some(column) => d.text(&d.ident(column)),
                None => d.null_text().to_string(),
            };
            e_cols.push(format!("{nb} AS nb"));
        }
        // Without a cutoff, every event is read and the cutoff is the latest of them.
        let until = match self.plan.options.cutoff_ms {
            Some(c) => format!(" WHERE {} <= {c}", d.millis(&ts)),
            None => String::new(),
        };
        let mut ctes = vec![format!(
            "e AS (SELECT {} FROM {}{until})",
            e_cols.join(", "),
            d.source(source),
        )];
        if self.plan.options.next_by.is_some() {
            // Every event of a person in the store's order (time, then event_id), for what
            // followed a chain.
            let item = d.record(&[
                ("t", "t".into()),
                ("r", "r".into()),
                ("ty", "ty".into()),
                ("nb", "nb".into()),
            ]);
            ctes.push(format!(
                "pe AS (SELECT p, {} AS evs FROM e GROUP BY p)",
                d.sorted_list(&item)
            ));
        }
        let n = self.n();
        let any_step = |prefix: &str| {
            if self.plan.modes.strict_order {
                String::new()
            } else {
                let c: Vec<String> = (0..n).map(|k| format!("{prefix}c{k}")).collect();
                format!(" WHERE {}", c.join(" OR "))
            }
        };
        let mut sets = Vec::new();
        for (grp, keys) in self.group_sets() {
            // The set's key columns, named as in the result (`kp` for the period).
            let named: Vec<String> = keys
                .iter()
                .map(|c| match c.as_str() {
                    "bp" => "kp".to_string(),
                    b => format!("k{}", &b[1..]),
                })
                .collect();
            let (x, f) = (format!("x{grp}"), format!("f{grp}"));
            if keys.is_empty() {
                let conds: Vec<String> = (0..n).map(|k| format!("c{k}")).collect();
                ctes.push(format!(
                    "{x} AS (SELECT p, t, r, {} FROM e{})",
                    conds.join(", "),
                    any_step("")
                ));
                ctes.push(format!(
                    "{f} AS (SELECT p, {} FROM {x} GROUP BY p)",
                    self.person_columns()
                ));
            } else {
                let g = format!("g{grp}");
                let distinct: Vec<String> = keys
                    .iter()
                    .zip(&named)
                    .map(|(c, k)| format!("{c} AS {k}"))
                    .collect();
                ctes.push(format!(
                    "{g} AS (SELECT DISTINCT p, {} FROM e WHERE c0)",
                    distinct.join(", ")
                ));
                // Step 1 also requires the group's key values (CONTRACT §5).
                let same: Vec<String> = keys
                    .iter()
                    .zip(&named)
                    .map(|(c, k)| d.same(&format!("e.{c}"), &format!("{g}.{k}")))
                    .collect();
                let rest: String = (1..n).map(|k| format!(", e.c{k} AS c{k}")).collect();
                let carried: String = named.iter().map(|k| format!(", {g}.{k} AS {k}")).collect();
                ctes.push(format!(
                    "{x} AS (SELECT {g}.p AS p{carried}, e.t AS t, e.r AS r, (e.c0 AND {same}) AS c0{rest} \
                     FROM e INNER JOIN {g} ON e.p = {g}.p{})",
                    any_step("e."),
                    same = same.join(" AND "),
                ));
                let by: String = named.iter().map(|k| format!(", {k}")).collect();
                ctes.push(format!(
                    "{f} AS (SELECT p{by}, {cols} FROM {x} GROUP BY p{by})",
                    cols = self.person_columns()
                ));
            }
            sets.push((grp, named));
        }
        (ctes, sets)
    }

    fn render(&self, source: &str) -> String {
        let d = self.d;
        let (ctes, sets) = self.ctes(source);
        let key_columns = self.key_columns();
        let mut selects = Vec::new();
        for (grp, named) in sets {
            let f = format!("f{grp}");
            // The result's key columns: the set's own, NULL for the others.
            let out_keys: String = key_columns
                .iter()
                .map(|k| {
                    if named.contains(k) {
                        format!(", {k}")
                    } else {
                        format!(", {} AS {k}", d.null_text())
                    }
                })
                .collect();
            let group_by: String = named.iter().map(|k| format!("{k}, ")).collect();
            let row = "x";
            let (what, step, ms) = (
                d.field(row, "w", 1),
                d.field(row, "i", 2),
                d.field(row, "m", 3),
            );
            let no_next = if self.plan.options.next_by.is_some() {
                format!(
                    ", {} AS nk, {null} AS nt, {null} AS nv",
                    d.int64("0"),
                    null = d.null_text()
                )
            } else {
                String::new()
            };
            selects.push(format!(
                "SELECT {grp} AS grp{out_keys}, {what} AS what, {step} AS step, {ms} AS ms, \
                 window_open{no_next}, count(*) AS persons FROM {} WHERE level > 0 \
                 GROUP BY {group_by}{what}, {step}, {ms}, window_open",
                d.explode(&f, "o", row),
            ));
            if self.plan.options.next_by.is_some() {
                selects.push(self.next_select(grp, &named, &out_keys, &group_by));
            }
        }
        let order: String = key_columns.iter().map(|k| format!(", {k}")).collect();
        format!(
            "WITH {}\nSELECT *, (SELECT max(t) FROM e) AS cutoff_ms FROM (\n{}\n) AS result\nORDER BY grp{order}, what, step, ms, window_open\n",
            ctes.join(",\n"),
            selects.join("\nUNION ALL\n"),
        )
    }

    fn render_audit(&self, source: &str, steps: usize, closed_only: bool) -> String {
        let d = self.d;
        let (ctes, sets) = self.ctes(source);
        let spec = self.spec();
        let no_chain = "CAST(array() AS ARRAY<BIGINT>)";
        let mut selects = Vec::new();
        for (grp, named) in sets {
            // The group key as the embedded engine writes it: a JSON object, keys in byte order.
            let mut names: Vec<(String, String)> = named
                .iter()
                .map(|k| {
                    let name = match k.as_str() {
                        "kp" => "period".to_string(),
                        k => spec.breakdown[k[1..].parse::<usize>().expect("k<i>")].clone(),
                    };
                    (name, k.clone())
                })
                .collect();
            names.sort();
            let group = if names.is_empty() {
                d.string("{}")
            } else {
                let (keys, values): (Vec<String>, Vec<String>) =
                    names.iter().map(|(n, k)| (d.string(n), k.clone())).unzip();
                format!(
                    "to_json(map_from_arrays(array({}), array({})))",
                    keys.join(", "),
                    values.join(", ")
                )
            };
            // All persons: every person of the source, level 0 where no chain started.
            let from = if grp == 0 {
                format!(
                    "(SELECT everyone.p AS p, COALESCE(f0.level, 0) AS level, \
                     COALESCE(f0.window_open, false) AS window_open, COALESCE(f0.ct, {no_chain}) AS ct, \
                     COALESCE(f0.ci, {texts}) AS ci FROM (SELECT DISTINCT p FROM e) AS everyone \
                     LEFT JOIN f0 ON everyone.p = f0.p) AS a{grp}",
                    texts = d.empty_texts()
                )
            } else {
                format!("(SELECT * FROM f{grp} WHERE level > 0) AS a{grp}")
            };
            let mut cols = vec![
                format!("{} AS funnel", d.string(&spec.name)),
                format!("{group} AS `group`"),
                "CAST(p AS STRING) AS person_id".to_string(),
                "CAST(level AS INT) AS level".to_string(),
                "window_open".to_string(),
            ];
            for k in 0..steps {
                cols.push(format!(
                    "IF(size(ct) > {k}, timestamp_millis(ct[{k}]), CAST(NULL AS TIMESTAMP)) AS step_{}_ts",
                    k + 1
                ));
                cols.push(format!(
                    "IF(size(ci) > {k}, ci[{k}], CAST(NULL AS STRING)) AS step_{}_event_id",
                    k + 1
                ));
            }
            let closed = if closed_only {
                " WHERE NOT window_open"
            } else {
                ""
            };
            selects.push(format!("SELECT {} FROM {from}{closed}", cols.join(", ")));
        }
        format!(
            "WITH {}\nSELECT * FROM (\n{}\n) AS audit",
            ctes.join(",\n"),
            selects.join("\nUNION ALL\n"),
        )
    }

    /// "Where the dropped went" of group set `grp`: per level short of the last, persons by the
    /// event that followed their chain's last event (the next in the store's order, if within
    /// the window from the chain's first event): `what` 3, `nk` 0 with its type `nt` and
    /// `next_by` value `nv`; else `nk` 2 where the window is still open, 1 where it closed.
    fn next_select(&self, grp: u8, named: &[String], out_keys: &str, group_by: &str) -> String {
        let d = self.d;
        let n = self.n();
        let w = self.spec().window_ms;
        let keys: String = named.iter().map(|k| format!("{k}, ")).collect();
        let last_t = d.get("ct", "st_level - 1");
        let last_r = d.get("ci", "st_level - 1");
        let (xt, xr) = (d.field("x", "t", 1), d.field("x", "r", 2));
        let after = d.filter(
            "evs",
            "x",
            &format!("{xt} > {last_t} OR ({xt} = {last_t} AND {xr} > {last_r})"),
        );
        let first = d.get("nx", "0");
        let has = d.iff(
            &format!("{} > 0", d.size("nx")),
            &format!("{} <= {} + {w}", d.field(&first, "t", 1), d.get("ct", "0")),
            d.bool_lit(false),
        );
        let nk = d.int64(&d.iff(
            &d.is_true("has"),
            "0",
            &d.iff(&d.is_true("window_open"), "2", "1"),
        ));
        let text = |field: &str, position: usize| {
            d.iff(
                &d.is_true("has"),
                &d.text(&d.field(&first, field, position)),
                d.null_text(),
            )
        };
        format!(
            "SELECT {grp} AS grp{out_keys}, {} AS what, {} AS step, {} AS ms, window_open, nk, nt, \
             nv, count(*) AS persons FROM (SELECT {keys}level, window_open, {nk} AS nk, {nt} AS nt, \
             {nv} AS nv FROM (SELECT {keys}level, window_open, ct, {after} AS nx, {has} AS has FROM \
             (SELECT {fkeys}f.level AS level, f.window_open AS window_open, f.st_level AS st_level, \
             f.ct AS ct, f.ci AS ci, pe.evs AS evs FROM f{grp} AS f INNER JOIN pe ON f.p = pe.p \
             WHERE f.level > 0 AND f.level < {n}) AS y0) AS y1) AS y2 \
             GROUP BY {group_by}level, window_open, nk, nt, nv",
            d.int64("3"),
            d.int64("level"),
            d.int64("0"),
            fkeys = named
                .iter()
                .map(|k| format!("f.{k} AS {k}, "))
                .collect::<String>(),
            nt = text("ty", 3),
            nv = text("nb", 4),
        )
    }

    /// Whether the fold keeps the chains' event ids (`ci`).
    fn keeps_ids(&self) -> bool {
        self.plan.options.audit || self.plan.options.next_by.is_some()
    }

    /// A one-step funnel outside `strict_order` is complete at its first step-1 entry, and that
    /// event's chain is the one reported (windowFunnel answers 1 at once; so does the kernel).
    fn first_step_completes(&self) -> bool {
        self.n() == 1 && !self.plan.modes.strict_order
    }

    /// `level` and `window_open` of one person (and group), from the rows of x0 or x1.
    fn person_columns(&self) -> String {
        let d = self.d;
        let n = self.n();
        // Entries of each event: the steps it satisfies; under strict_order, -1 when none.
        let ks = {
            let items: Vec<String> = (0..n)
                .map(|k| match d {
                    Dialect::Spark => format!("IF(c{k}, {k}, -9)"),
                    Dialect::ClickHouse => format!("toInt32(if(c{k}, {k}, -9))"),
                })
                .collect();
            let ks = d.filter(&d.array(&items), "v", "v >= 0");
            if self.plan.modes.strict_order {
                let other = match d {
                    Dialect::Spark => "array(-1)".to_string(),
                    Dialect::ClickHouse => "[toInt32(-1)]".to_string(),
                };
                d.iff(&format!("{} = 0", d.size(&ks)), &other, &ks)
            } else {
                ks
            }
        };
        let entry = d.record(&[("t", "t".into()), ("k", "v".into()), ("r", "r".into())]);
        let entries = d.sorted_flat_list(&d.map(&ks, "v", &entry));
        let Fold {
            fold,
            level: fold_level,
            start,
            chain,
            ids,
        } = if self.plan.modes.strict_once {
            self.fold_strict_once(&entries)
        } else {
            self.fold_latest(&entries)
        };
        let window = self.spec().window_ms;
        let cutoff = match self.plan.options.cutoff_ms {
            Some(c) => c.to_string(),
            None => "(SELECT max(t) FROM e)".to_string(),
        };
        let level = if d == Dialect::ClickHouse && n <= 32 && !self.plan.options.fold_level {
            // ClickHouse's own windowFunnel gives the level.
            let modes: String = self
                .spec()
                .modes
                .iter()
                .map(|m| format!(", {}", d.string(m.as_str())))
                .collect();
            let conds: String = (0..n).map(|k| format!(", toUInt8(c{k})")).collect();
            // windowFunnel takes unsigned timestamps (toUInt64 wraps a negative one): shifted
            // by TS_BIAS, every instant of years 1..9999 is non-negative, before 1970 too, and
            // the window comparisons, differences of timestamps, are unchanged.
            format!("toInt64(windowFunnel({window}{modes})(toUInt64(t + {TS_BIAS}){conds}))")
        } else {
            "st_level".to_string()
        };
        let open = d.boolean(&d.iff(
            "st_level > 0",
            &format!("{start} + {window} > {cutoff}"),
            d.bool_lit(false),
        ));
        // The reported chain's timestamps (none at level 0).
        let no_chain = match d {
            Dialect::Spark => "CAST(array() AS ARRAY<BIGINT>)",
            Dialect::ClickHouse => "CAST([], 'Array(Int64)')",
        };
        let ct = d.iff("st_level > 0", &chain, no_chain);
        // What the person adds to the answer: their level, and per step after the first the
        // time from the previous step and from step 1 ((what, step, ms) records).
        let item = |w: u8, i: &str, m: &str| {
            let int = |e: &str| match d {
                Dialect::Spark => format!("CAST({e} AS BIGINT)"),
                Dialect::ClickHouse => format!("toInt64({e})"),
            };
            d.record(&[("w", int(&w.to_string())), ("i", int(i)), ("m", int(m))])
        };
        let after_first = |w: u8, from: &str| {
            d.filter(
                &d.map_indexed("ct", &item(w, "j", &format!("v - {from}"))),
                "y",
                &format!("{} > 0", d.field("y", "i", 2)),
            )
        };
        let o = d.concat(
            &d.array(&[item(0, "level", "0")]),
            &d.concat(
                &after_first(1, &d.get("ct", "greatest(j - 1, 0)")),
                &after_first(2, &d.get("ct", "0")),
            ),
        );
        // The fold state is computed once per person: Spark and ClickHouse both allow a
        // select-list alias to be used later in the same list.
        let ci = if self.keeps_ids() {
            format!(", {} AS ci", d.iff("st_level > 0", &ids, d.empty_texts()))
        } else {
            String::new()
        };
        format!(
            "{fold} AS st, {fold_level} AS st_level, {level} AS level, {open} AS window_open, \
             {ct} AS ct, {o} AS o{ci}"
        )
    }

    /// Latest chain per level. State: (lvl, stop, s: start per level, l: last per level).
    /// Returns (fold, the level from the fold state `st`, the reported chain's start from `st`
    /// and the level `st_level`).
    fn fold_latest(&self, entries: &str) -> Fold {
        let d = self.d;
        let p = self.plan;
        let n = self.n();
        let w = self.spec().window_ms;
        let lvl = d.field("acc", "lvl", 1);
        let stop = d.field("acc", "stop", 2);
        let s = d.field("acc", "s", 3);
        let l = d.field("acc", "l", 4);
        // Per level, the timestamps of its chain, step 1 first (for time to convert).
        let c = d.field("acc", "c", 5);
        // With the audit (and "where the dropped went"), also the event ids of each level's
        // chain.
        let audit = self.keeps_ids();
        let ids = d.field("acc", "ids", 6);
        let t = d.field("x", "t", 1);
        let k = d.field("x", "k", 2);
        let r = d.field("x", "r", 3);
        let (int, bigint_array, empty_chain) = match d {
            Dialect::Spark => (
                "CAST(0 AS INT)",
                "CAST(0 AS BIGINT)",
                "CAST(array() AS ARRAY<BIGINT>)",
            ),
            Dialect::ClickHouse => ("toInt64(0)", "toInt64(0)", "CAST([], 'Array(Int64)')"),
        };
        let mk = |lvl: &str, stop: &str, s: &str, l: &str, c: &str, ids: &str| -> String {
            let lvl = match d {
                Dialect::Spark => lvl.to_string(),
                Dialect::ClickHouse => format!("toInt64({lvl})"),
            };
            let mut fields = vec![
                ("lvl", lvl),
                ("stop", stop.to_string()),
                ("s", s.to_string()),
                ("l", l.to_string()),
                ("c", c.to_string()),
            ];
            if audit {
                fields.push(("ids", ids.to_string()));
            }
            d.record(&fields)
        };
        let set = |array: &str, at: &str, value: &str| -> String {
            d.map_indexed(array, &d.iff(&format!("j = {at}"), value, "v"))
        };
        let first_completes = self.first_step_completes();
        let stopped = mk(&lvl, d.bool_lit(true), &s, &l, &c, &ids);
        let mut arms: Vec<(String, String)> = vec![(d.is_true(&stop), "acc".into())];
        if p.modes.strict_order {
            arms.push((
                format!("{k} = -1"),
                mk(&lvl, &d.boolean(&format!("{lvl} > 0")), &s, &l, &c, &ids),
            ));
        }
        arms.push((
            format!("{k} = 0"),
            mk(
                &format!("greatest({lvl}, 1)"),
                d.bool_lit(first_completes),
                &set(&s, "0", &t),
                &set(&l, "0", &t),
                &set(&c, "0", &d.array(std::slice::from_ref(&t))),
                &set(&ids, "0", &d.array(std::slice::from_ref(&r))),
            ),
        ));
        if p.modes.strict_deduplication {
            arms.push((format!("{k} < {lvl}"), stopped.clone()));
        }
        if p.modes.strict_order && !p.modes.allow_reentry {
            arms.push((format!("{lvl} > 0 AND {k} > {lvl}"), stopped.clone()));
        }
        let prev_start = d.get(&s, &format!("{k} - 1"));
        let mut extend = format!("{k} <= {lvl} AND {t} <= {prev_start} + {w}");
        if p.modes.strict_increase {
            extend.push_str(&format!(" AND {} < {t}", d.get(&l, &format!("{k} - 1"))));
        }
        arms.push((
            extend,
            mk(
                &format!("greatest({lvl}, {k} + 1)"),
                &d.boolean(&format!("{k} + 1 = {n}")),
                &set(&s, &k, &prev_start),
                &set(&l, &k, &t),
                &set(&c, &k, &d.append(&d.get(&c, &format!("{k} - 1")), &t)),
                &set(&ids, &k, &d.append(&d.get(&ids, &format!("{k} - 1")), &r)),
            ),
        ));
        let body = d.cases(&arms, "acc");
        let init = mk(
            int,
            d.bool_lit(false),
            &d.repeat(bigint_array, n),
            &d.repeat(bigint_array, n),
            &d.repeat(empty_chain, n),
            &d.repeat(d.empty_texts(), n),
        );
        let fold = d.fold(entries, &init, &body);
        let level = d.field("st", "lvl", 1);
        let start = d.get(&d.field("st", "s", 3), "st_level - 1");
        let chain = d.get(&d.field("st", "c", 5), "st_level - 1");
        let ids = d.get(&d.field("st", "ids", 6), "st_level - 1");
        Fold {
            fold,
            level,
            start,
            chain,
            ids,
        }
    }

    /// strict_once: every chain per level. State: (lv: per level, chains (start, last, used
    /// event_ids, timestamps); stop). Returns as [`Query::fold_latest`] does.
    fn fold_strict_once(&self, entries: &str) -> Fold {
        let d = self.d;
        let p = self.plan;
        let n = self.n();
        let w = self.spec().window_ms;
        let lv = d.field("acc", "lv", 1);
        let stop = d.field("acc", "stop", 2);
        let t = d.field("x", "t", 1);
        let k = d.field("x", "k", 2);
        let r = d.field("x", "r", 3);
        let mk =
            |lv: &str, stop: &str| d.record(&[("lv", lv.to_string()), ("stop", stop.to_string())]);
        let chain = |s: &str, l: &str, u: &str, c: &str| {
            d.record(&[
                ("s", s.to_string()),
                ("l", l.to_string()),
                ("u", u.to_string()),
                ("c", c.to_string()),
            ])
        };
        let nonempty = |a: &str| format!("{} > 0", d.size(a));
        let first = d.get(&lv, "0");
        let prev = d.get(&lv, &format!("{k} - 1"));
        let cur = d.get(&lv, &k);
        let in_window = |c: &str| format!("{t} <= {} + {w}", d.field(c, "s", 1));
        // Chains out of the window are dropped, keeping one (as ClickHouse does).
        let kept = d.iff(
            &d.exists(&prev, "c", &in_window("c")),
            &d.filter(&prev, "c", &in_window("c")),
            &d.keep_last(&prev),
        );
        let mut usable = format!(
            "{} AND NOT {}",
            in_window("c"),
            d.contains(&d.field("c", "u", 3), &r)
        );
        if p.modes.strict_increase {
            usable.push_str(&format!(" AND {} < {t}", d.field("c", "l", 2)));
        }
        // The last step: the first chain to complete it is the one reported (the kernel
        // returns at once).
        let usable_chains = d.filter(&kept, "c", &usable);
        let usable_chains = d.iff(
            &format!("{k} + 1 = {n}"),
            &d.keep_first(&usable_chains),
            &usable_chains,
        );
        let new_chains = d.map(
            &usable_chains,
            "c",
            &chain(
                &d.field("c", "s", 1),
                &t,
                &d.append(&d.field("c", "u", 3), &r),
                &d.append(&d.field("c", "c", 4), &t),
            ),
        );
        let extended = d.map_indexed(
            &lv,
            &d.cases(
                &[
                    (format!("j = {k} - 1"), kept.clone()),
                    (format!("j = {k}"), d.concat("v", &new_chains)),
                ],
                "v",
            ),
        );
        let stopped = mk(&lv, d.bool_lit(true));
        let mut arms: Vec<(String, String)> = vec![(d.is_true(&stop), "acc".into())];
        if p.modes.strict_order {
            arms.push((format!("{k} = -1"), mk(&lv, &d.boolean(&nonempty(&first)))));
        }
        let started = chain(
            &t,
            &t,
            &d.array(std::slice::from_ref(&r)),
            &d.array(std::slice::from_ref(&t)),
        );
        arms.push((
            format!("{k} = 0"),
            mk(
                &d.map_indexed(&lv, &d.iff("j = 0", &d.append("v", &started), "v")),
                d.bool_lit(self.first_step_completes()),
            ),
        ));
        if p.modes.strict_deduplication {
            arms.push((nonempty(&cur), stopped.clone()));
        }
        if p.modes.strict_order && !p.modes.allow_reentry {
            arms.push((
                format!("{} AND NOT ({})", nonempty(&first), nonempty(&prev)),
                stopped.clone(),
            ));
        }
        // The funnel is complete as soon as one chain reaches the last step.
        let complete = format!("{k} + 1 = {n} AND {}", d.exists(&kept, "c", &usable));
        arms.push((nonempty(&prev), mk(&extended, &d.boolean(&complete))));
        let body = d.cases(&arms, "acc");
        let empty = match d {
            Dialect::Spark => {
                "CAST(array() AS ARRAY<STRUCT<s: BIGINT, l: BIGINT, u: ARRAY<STRING>, c: ARRAY<BIGINT>>>)"
                    .to_string()
            }
            Dialect::ClickHouse => {
                "CAST([], 'Array(Tuple(Int64, Int64, Array(String), Array(Int64)))')".to_string()
            }
        };
        let init = mk(&d.repeat(&empty, n), d.bool_lit(false));
        let fold = d.fold(entries, &init, &body);
        let level = d.count_if(
            &d.field("st", "lv", 1),
            "a",
            &format!("{} > 0", d.size("a")),
        );
        let reported = d.last(&d.get(&d.field("st", "lv", 1), "st_level - 1"));
        let start = d.field(&reported, "s", 1);
        let chain = d.field(&reported, "c", 4);
        let ids = d.field(&reported, "u", 3);
        Fold {
            fold,
            level,
            start,
            chain,
            ids,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PlanOptions;

    fn spec(text: &str) -> funnel_core::FunnelSpec {
        funnel_core::parse_funnel(text, "f.toml").unwrap()
    }

    /// A funnel "x" of a click then a purchase within an hour, `head` (TOML lines) added.
    fn two_steps(head: &str) -> funnel_core::FunnelSpec {
        spec(&format!(
            "name = \"x\"\nwindow = \"1h\"\n{head}[[steps]]\nname = \"a\"\nevent_type = \"click\"\n[[steps]]\nname = \"b\"\nevent_type = \"purchase\"\n"
        ))
    }

    /// The query text outside string literals and quoted identifiers.
    fn outside_quotes(sql: &str, d: Dialect) -> String {
        let mut out = String::new();
        let mut quote: Option<char> = None;
        let mut chars = sql.chars().peekable();
        while let Some(c) = chars.next() {
            match quote {
                Some(q) => {
                    if c == '\\' && (q == '\'' || d == Dialect::ClickHouse) {
                        chars.next();
                    } else if c == q {
                        if q == '`' && d == Dialect::Spark && chars.peek() == Some(&'`') {
                            chars.next();
                        } else {
                            quote = None;
                        }
                    }
                }
                None if c == '\'' || c == '`' => quote = Some(c),
                None => out.push(c),
            }
        }
        out
    }

    const HOSTILE: &str = r#"
name = "x"
window = "1h"
mode = ["strict_order", "strict_once"]
breakdown = ["journ`ey) FROM x; DROP TABLE y; --", "campaign"]
[[steps]]
name = "a"
event_type = "click"
where = { journey = ["x') OR 1=1 --", "y\\'z", "\\u0027) OR (1=1"], "we`ird' col" = "v" }
[[steps]]
name = "b"
event_type = "purchase"
"#;

    #[test]
    fn hostile_store_values_kept_by_top_stay_data() {
        let f = two_steps("breakdown = \"journ`ey\"\n");
        let options = PlanOptions {
            interval: Some(funnel_core::Interval::Month),
            timezone: "Asia/Shanghai') OR 1=1 --".into(),
            ..PlanOptions::default()
        };
        // Kept values come from the store's data: as hostile as any export.
        let plan = Plan::new(&f, options).unwrap().keeping(vec![
            Some("x') OR 1=1 --".into()),
            Some("back\\slash'quote`tick DROP".into()),
            None,
        ]);
        for d in [Dialect::Spark, Dialect::ClickHouse] {
            let sql = query(&plan, d, "events");
            let outside = outside_quotes(&sql, d);
            for bad in ["1=1", "--", "DROP", "tick"] {
                assert!(
                    !outside.contains(bad),
                    "{bad} outside quotes in {d:?}:\n{outside}"
                );
            }
            assert!(sql.contains("'(other)'"), "{sql}");
            assert!(sql.contains(r"'x\') OR 1=1 --'"), "{sql}");
            assert!(sql.contains(r"'Asia/Shanghai\') OR 1=1 --'"), "{sql}");
        }
    }

    #[test]
    fn a_hostile_funnel_stays_data() {
        let f = spec(HOSTILE);
        let plan = Plan::new(&f, PlanOptions::default()).unwrap();
        for d in [Dialect::Spark, Dialect::ClickHouse] {
            let sql = query(&plan, d, "/data/it's`here/*.parquet");
            let outside = outside_quotes(&sql, d);
            for bad in ["1=1", "--", "DROP", "here", "ird"] {
                assert!(
                    !outside.contains(bad),
                    "{bad} outside quotes in {d:?}:\n{outside}"
                );
            }
            assert!(sql.contains(r"'x\') OR 1=1 --'"), "{sql}");
            assert!(sql.contains(r"'y\\\'z'"), "{sql}");
            assert!(sql.contains(r"'\\u0027) OR (1=1'"), "{sql}");
            // Quotes balance: the text outside them is the query's own.
            assert_eq!(
                outside.matches('(').count(),
                outside.matches(')').count(),
                "{d:?}"
            );
        }
    }

    #[test]
    fn the_query_follows_the_modes_and_scope() {
        let f = spec(
            "name = \"x\"\nwindow = \"1h\"\nmode = [\"strict_increase\"]\n[[steps]]\nname = \"a\"\nevent_type = \"click\"\n[[steps]]\nname = \"b\"\nevent_type = \"purchase\"\n",
        );
        let opts = PlanOptions {
            from_ms: Some(1000),
            to_ms: Some(2000),
            cutoff_ms: Some(5000),
            fold_level: false,
            ..PlanOptions::default()
        };
        let plan = Plan::new(&f, opts).unwrap();
        let ch = query(&plan, Dialect::ClickHouse, "events");
        assert!(
            ch.contains("windowFunnel(3600000, 'strict_increase')(toUInt64(t + 62135596800000)"),
            "{ch}"
        );
        assert!(ch.contains(">= 1000") && ch.contains("< 2000"), "{ch}");
        assert!(ch.contains("<= 5000") && ch.contains("> 5000"), "{ch}");
        let spark = query(&plan, Dialect::Spark, "lake.events");
        assert!(spark.contains("aggregate(") && spark.contains("`lake`.`events`"));
        assert!(!spark.contains("windowFunnel"));
        let fold = Plan::new(
            &f,
            PlanOptions {
                fold_level: true,
                ..PlanOptions::default()
            },
        )
        .unwrap();
        let ch = query(&fold, Dialect::ClickHouse, "events");
        assert!(
            !ch.contains("windowFunnel") && ch.contains("arrayFold"),
            "{ch}"
        );
        // Without strict_order, events that match no step are left out before the fold.
        assert!(spark.contains("WHERE c0 OR c1"), "{spark}");
        // Without trends: the all-persons group only, and no period column.
        assert!(!spark.contains("g2") && !spark.contains("kp"), "{spark}");
    }

    #[test]
    fn the_audit_reads_every_person_and_the_chains_event_ids() {
        let f = two_steps("breakdown = \"journey\"\n");
        let options = PlanOptions {
            interval: Some(funnel_core::Interval::Day),
            audit: true,
            ..PlanOptions::default()
        };
        let plan = Plan::new(&f, options).unwrap();
        let sql = audit_query(&plan, "events", 3, false);
        // Every person of the source is in the all-persons group.
        assert!(
            sql.contains("FROM (SELECT DISTINCT p FROM e) AS everyone"),
            "{sql}"
        );
        // Group keys in byte order, as the embedded engine's JSON: journey before period.
        assert!(
            sql.contains("map_from_arrays(array('journey', 'period'), array(k0, kp))"),
            "{sql}"
        );
        // The fold keeps the event ids, and three steps of columns are written.
        assert!(
            sql.contains("'ids'") && sql.contains("step_3_event_id"),
            "{sql}"
        );
        // The counting query does not carry them.
        let counts = Plan::new(
            &f,
            PlanOptions {
                audit: false,
                ..plan.options.clone()
            },
        )
        .unwrap();
        assert!(!query(&counts, Dialect::Spark, "events").contains("'ids'"));
    }

    #[test]
    fn where_the_dropped_went_reads_every_event_after_the_chain() {
        let f = two_steps("");
        let plain = Plan::new(&f, PlanOptions::default()).unwrap();
        let next = Plan::new(
            &f,
            PlanOptions {
                next_by: Some(Some("warning_action".into())),
                ..PlanOptions::default()
            },
        )
        .unwrap();
        for d in [Dialect::Spark, Dialect::ClickHouse] {
            let sql = query(&next, d, "events");
            assert!(
                sql.contains("pe AS (SELECT p, ") && sql.contains("`warning_action`"),
                "{sql}"
            );
            // Only persons who stopped short of the last step, with their chain's event ids.
            assert!(
                sql.contains("f.level < 2") && sql.contains(" AS ci"),
                "{sql}"
            );
            assert!(!query(&plain, d, "events").contains("pe AS"));
        }
    }

    #[test]
    fn trends_add_period_groups_in_the_zone_given() {
        let f = two_steps("breakdown = \"journey\"\n");
        let plan = Plan::new(
            &f,
            PlanOptions {
                interval: Some(funnel_core::Interval::Week),
                timezone: "America/New_York".into(),
                ..PlanOptions::default()
            },
        )
        .unwrap();
        for d in [Dialect::Spark, Dialect::ClickHouse] {
            let sql = query(&plan, d, "events");
            // All persons, by value, by period, by period and value.
            for grp in [
                "SELECT 0 AS grp",
                "SELECT 1 AS grp",
                "SELECT 2 AS grp",
                "SELECT 3 AS grp",
            ] {
                assert!(sql.contains(grp), "{grp} in {d:?}:\n{sql}");
            }
            assert!(
                sql.contains("'America/New_York'") && sql.contains(" AS bp"),
                "{sql}"
            );
            assert!(
                sql.contains("ORDER BY grp, kp, k0, what, step, ms, window_open"),
                "{sql}"
            );
        }
    }
}
