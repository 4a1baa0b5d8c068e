//! The query: per person (and per breakdown value of the step-1 events), the person's events as
//! a sorted list of `(ts, step, event_id)` entries, walked by a fold that is the embedded
//! kernel's state machine written in SQL.
//!
//! Entries are what ClickHouse's windowFunnel walks: one per step an event satisfies, and under
//! `strict_order` one "other" entry (step -1) for an event that satisfies none; sorted by
//! timestamp, then step ("other" first), then event_id (the store's order of ties). The fold
//! keeps, per level, the latest chain that reached it (its start and last timestamp); under
//! `strict_once`, every chain per level with the events it used. The level is the highest level
//! reached, and the reported chain's start tells whether its window was still open at the
//! cutoff (CONTRACT §5, and `pending` of the embedded engine).
//!
//! The ClickHouse dialect takes the level from `windowFunnel` itself (up to its 32 conditions)
//! and the start of the reported chain from the fold.
//!
//! Result columns, one row per group, level and window state:
//! `grp` (0: all persons, 1: a breakdown value), `k0..` (the breakdown values, NULL where the
//! step-1 event lacks the column; NULL in the all-persons rows), `level` (1..=steps),
//! `window_open`, `persons`, and `cutoff_ms` (the latest event read, the cutoff when none was
//! given).

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

    /// Columns k0.. as a comma-prefixed list (empty without breakdown).
    fn keys(&self, prefix: &str) -> String {
        (0..self.breakdown())
            .map(|i| format!(", {prefix}k{i}"))
            .collect()
    }

    fn render(&self, source: &str) -> String {
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
            e_cols.push(format!("{} AS b{i}", d.text(&d.ident(b))));
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
        let conds: Vec<String> = (0..self.n()).map(|k| format!("c{k}")).collect();
        let any_step = if self.plan.modes.strict_order {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" OR "))
        };
        let cond_list = conds.join(", ");
        ctes.push(format!(
            "x0 AS (SELECT p, t, r, {cond_list} FROM e{any_step})"
        ));
        ctes.push(format!(
            "f0 AS (SELECT p, {} FROM x0 GROUP BY p)",
            self.person_columns()
        ));
        if self.breakdown() > 0 {
            let distinct: Vec<String> = (0..self.breakdown())
                .map(|i| format!("b{i} AS k{i}"))
                .collect();
            ctes.push(format!(
                "g AS (SELECT DISTINCT p, {} FROM e WHERE c0)",
                distinct.join(", ")
            ));
            // Step 1 also requires the group's breakdown values (CONTRACT §5).
            let same: Vec<String> = (0..self.breakdown())
                .map(|i| d.same(&format!("e.b{i}"), &format!("g.k{i}")))
                .collect();
            let rest: String = (1..self.n()).map(|k| format!(", e.c{k} AS c{k}")).collect();
            let any_step = if self.plan.modes.strict_order {
                String::new()
            } else {
                let c: Vec<String> = (0..self.n()).map(|k| format!("e.c{k}")).collect();
                format!(" WHERE {}", c.join(" OR "))
            };
            ctes.push(format!(
                "x1 AS (SELECT g.p AS p{keys}, e.t AS t, e.r AS r, (e.c0 AND {same}) AS c0{rest} \
                 FROM e INNER JOIN g ON e.p = g.p{any_step})",
                keys = (0..self.breakdown())
                    .map(|i| format!(", g.k{i} AS k{i}"))
                    .collect::<String>(),
                same = same.join(" AND "),
            ));
            ctes.push(format!(
                "f1 AS (SELECT p{keys}, {cols} FROM x1 GROUP BY p{keys})",
                keys = self.keys(""),
                cols = self.person_columns()
            ));
        }
        let null_keys: String = (0..self.breakdown())
            .map(|i| format!(", {} AS k{i}", d.null_text()))
            .collect();
        let mut selects = vec![format!(
            "SELECT 0 AS grp{null_keys}, level, window_open, count(*) AS persons FROM f0 \
             WHERE level > 0 GROUP BY level, window_open"
        )];
        if self.breakdown() > 0 {
            selects.push(format!(
                "SELECT 1 AS grp{keys}, level, window_open, count(*) AS persons FROM f1 \
                 WHERE level > 0 GROUP BY {group}level, window_open",
                keys = self.keys(""),
                group = (0..self.breakdown())
                    .map(|i| format!("k{i}, "))
                    .collect::<String>(),
            ));
        }
        format!(
            "WITH {}\nSELECT *, (SELECT max(t) FROM e) AS cutoff_ms FROM (\n{}\n) AS result\nORDER BY grp{}, level, window_open\n",
            ctes.join(",\n"),
            selects.join("\nUNION ALL\n"),
            self.keys(""),
        )
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
        let (fold, fold_level, start) = if self.plan.modes.strict_once {
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
        // The fold state is computed once per person: Spark and ClickHouse both allow a
        // select-list alias to be used later in the same list.
        format!("{fold} AS st, {fold_level} AS st_level, {level} AS level, {open} AS window_open")
    }

    /// Latest chain per level. State: (lvl, stop, s: start per level, l: last per level).
    /// Returns (fold, the level from the fold state `st`, the reported chain's start from `st`
    /// and the level `st_level`).
    fn fold_latest(&self, entries: &str) -> (String, String, String) {
        let d = self.d;
        let p = self.plan;
        let n = self.n();
        let w = self.spec().window_ms;
        let lvl = d.field("acc", "lvl", 1);
        let stop = d.field("acc", "stop", 2);
        let s = d.field("acc", "s", 3);
        let l = d.field("acc", "l", 4);
        let t = d.field("x", "t", 1);
        let k = d.field("x", "k", 2);
        let (int, bigint_array) = match d {
            Dialect::Spark => ("CAST(0 AS INT)", "CAST(0 AS BIGINT)"),
            Dialect::ClickHouse => ("toInt64(0)", "toInt64(0)"),
        };
        let mk = |lvl: &str, stop: &str, s: &str, l: &str| -> String {
            let lvl = match d {
                Dialect::Spark => lvl.to_string(),
                Dialect::ClickHouse => format!("toInt64({lvl})"),
            };
            d.record(&[
                ("lvl", lvl),
                ("stop", stop.to_string()),
                ("s", s.to_string()),
                ("l", l.to_string()),
            ])
        };
        let set = |array: &str, at: &str, value: &str| -> String {
            d.map_indexed(array, &d.iff(&format!("j = {at}"), value, "v"))
        };
        let stopped = mk(&lvl, d.bool_lit(true), &s, &l);
        let mut arms: Vec<(String, String)> = vec![(d.is_true(&stop), "acc".into())];
        if p.modes.strict_order {
            arms.push((
                format!("{k} = -1"),
                mk(&lvl, &d.boolean(&format!("{lvl} > 0")), &s, &l),
            ));
        }
        arms.push((
            format!("{k} = 0"),
            mk(
                &format!("greatest({lvl}, 1)"),
                d.bool_lit(false),
                &set(&s, "0", &t),
                &set(&l, "0", &t),
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
            ),
        ));
        let body = d.cases(&arms, "acc");
        let init = mk(
            int,
            d.bool_lit(false),
            &d.repeat(bigint_array, n),
            &d.repeat(bigint_array, n),
        );
        let fold = d.fold(entries, &init, &body);
        let level = d.field("st", "lvl", 1);
        let start = d.get(&d.field("st", "s", 3), "st_level - 1");
        (fold, level, start)
    }

    /// strict_once: every chain per level. State: (lv: per level, chains (start, last, used
    /// event_ids); stop). Returns as [`Query::fold_latest`] does.
    fn fold_strict_once(&self, entries: &str) -> (String, String, String) {
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
        let chain = |s: &str, l: &str, u: &str| {
            d.record(&[
                ("s", s.to_string()),
                ("l", l.to_string()),
                ("u", u.to_string()),
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
        let new_chains = d.map(
            &d.filter(&kept, "c", &usable),
            "c",
            &chain(
                &d.field("c", "s", 1),
                &t,
                &d.append(&d.field("c", "u", 3), &r),
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
        let started = chain(&t, &t, &d.array(std::slice::from_ref(&r)));
        arms.push((
            format!("{k} = 0"),
            mk(
                &d.map_indexed(&lv, &d.iff("j = 0", &d.append("v", &started), "v")),
                d.bool_lit(false),
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
                "CAST(array() AS ARRAY<STRUCT<s: BIGINT, l: BIGINT, u: ARRAY<STRING>>>)".to_string()
            }
            Dialect::ClickHouse => {
                "CAST([], 'Array(Tuple(Int64, Int64, Array(String)))')".to_string()
            }
        };
        let init = mk(&d.repeat(&empty, n), d.bool_lit(false));
        let fold = d.fold(entries, &init, &body);
        let level = d.count_if(
            &d.field("st", "lv", 1),
            "a",
            &format!("{} > 0", d.size("a")),
        );
        let start = d.field(
            &d.last(&d.get(&d.field("st", "lv", 1), "st_level - 1")),
            "s",
            1,
        );
        (fold, level, start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PlanOptions;

    fn spec(text: &str) -> funnel_core::FunnelSpec {
        funnel_core::parse_funnel(text, "f.toml").unwrap()
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
    }
}
