//! Identity stitching (CONTRACT §2) as Spark SQL: the connected components of the id graph,
//! each labelled by its smallest id in byte order (Spark compares strings by their UTF-8
//! bytes), by rounds of minimum-label hooking and shortcutting.
//!
//! The graph's edges are the rows `(a, b)` of a relation (login rows: user_id and account_id;
//! a stored person's ids and its person_id). Every vertex `v` has a label `l(v)`, an id of its
//! component no greater than `v`: at first the smallest of `v` and its neighbours. Each round,
//! in the manner of Shiloach and Vishkin's hooking and shortcutting:
//!
//! 1. `c(v)`: the smallest of `l(v)` and the labels of `v`'s neighbours;
//! 2. hooking: a vertex `r` that is the label of other vertices also takes the smallest `c` of
//!    those vertices, so a better label reaches the whole tree under `r` at once;
//! 3. shortcutting: `v` takes its label's new label where that is smaller.
//!
//! Labels only fall and stay in the component, and at a fixed point neighbours have equal
//! labels no greater than any member: every component is labelled by its smallest id. Plain
//! propagation needs as many rounds as a component's diameter (a long chain of logins); with
//! hooking and shortcutting the rounds grow about with its logarithm.
//!
//! The driver ([`Stitch`]) is a state machine over the statements to run, so that the cluster
//! client runs it and a test can follow it. Each round's labels are written as Parquet to a
//! scratch directory the cluster can write, and read back through a temporary view: that cuts
//! the plan's lineage. (Cached tables do not: a round's plan would hold the previous round's
//! three times over, and the driver ran out of memory after a few rounds of a long path.) The
//! number of vertices whose label changed decides whether another round follows.

use crate::Dialect;

/// The temporary view of the symmetric edges, without self-loops.
const EDGES: &str = "funnel_stitch_edges";

/// The statements of one stitching, step by step.
#[derive(Debug, Clone)]
pub struct Stitch {
    round: u32,
    scratch: String,
}

impl Stitch {
    /// The statements that write the edges of `edges` (a subquery with an alias or a table,
    /// columns `a` and `b`, both non-null) and the first labels under `scratch` (a directory
    /// the cluster can write, given as its URI or path; it must not hold anything else).
    pub fn start(edges: &str, scratch: &str) -> (Stitch, Vec<String>) {
        let stitch = Stitch {
            round: 0,
            scratch: scratch.trim_end_matches('/').to_string(),
        };
        let e = EDGES;
        let mut start = stitch.write(
            e,
            "edges",
            &format!(
                "SELECT DISTINCT a, b FROM (SELECT a, b FROM {edges} \
                 UNION ALL SELECT b AS a, a AS b FROM {edges}) WHERE a <> b"
            ),
        );
        start.extend(stitch.write(
            &labels(0),
            "labels-0",
            &format!("SELECT a AS v, least(a, min(b)) AS l FROM {e} GROUP BY a"),
        ));
        (stitch, start)
    }

    /// Writes `query` to `dir` under the scratch directory and names it `view`.
    fn write(&self, view: &str, dir: &str, query: &str) -> Vec<String> {
        let d = Dialect::Spark;
        let path = d.string(&format!("{}/{dir}", self.scratch));
        vec![
            format!("INSERT OVERWRITE DIRECTORY {path} USING parquet {query}"),
            format!("CREATE OR REPLACE TEMPORARY VIEW {view} USING parquet OPTIONS (path {path})"),
        ]
    }

    /// The statements that write the next round's labels, and the query that counts the
    /// vertices whose label it changed (one row, column `changed`).
    pub fn round(&self) -> (Vec<String>, String) {
        let (old, new) = (labels(self.round), labels(self.round + 1));
        let e = EDGES;
        let next = self.write(
            &new,
            &format!("labels-{}", self.round + 1),
            &format!(
                "WITH c AS (SELECT v, min(x) AS c FROM (SELECT v, l AS x FROM {old} \
                 UNION ALL SELECT e.a AS v, n.l AS x FROM {e} e JOIN {old} n ON e.b = n.v) \
                 GROUP BY v), \
                 h AS (SELECT o.l AS v, min(c.c) AS h FROM {old} o JOIN c ON o.v = c.v \
                 GROUP BY o.l), \
                 p AS (SELECT c.v, least(c.c, coalesce(h.h, c.c)) AS l FROM c \
                 LEFT JOIN h ON c.v = h.v) \
                 SELECT a.v, least(a.l, coalesce(b.l, a.l)) AS l FROM p a LEFT JOIN p b \
                 ON a.l = b.v"
            ),
        );
        let changed = format!(
            "SELECT count(*) AS changed FROM {new} n JOIN {old} o ON n.v = o.v WHERE n.l <> o.l"
        );
        (next, changed)
    }

    /// Moves on after a round that changed `changed` labels: the statements that drop the
    /// previous round's view, and whether another round is needed.
    pub fn advance(&mut self, changed: u64) -> (Vec<String>, bool) {
        let release = vec![format!("DROP VIEW IF EXISTS {}", labels(self.round))];
        self.round += 1;
        (release, changed > 0)
    }

    /// Rounds run so far (the last one changed nothing when the stitching is done).
    pub fn rounds(&self) -> u32 {
        self.round
    }

    /// The temporary view of the current labels: columns `v` (an id linked to another one)
    /// and `l` (its person_id). It reads the scratch directory, so use it before removing that.
    pub fn labels(&self) -> String {
        labels(self.round)
    }

    /// The statements that drop the views the stitching made (its files stay in the scratch
    /// directory, for the caller to remove).
    pub fn finish(&self) -> Vec<String> {
        vec![
            format!("DROP VIEW IF EXISTS {}", labels(self.round)),
            format!("DROP VIEW IF EXISTS {EDGES}"),
        ]
    }
}

fn labels(round: u32) -> String {
    Dialect::Spark.ident(&format!("funnel_stitch_labels_{round}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rounds_name_their_tables_in_order() {
        let (mut s, start) =
            Stitch::start("(SELECT user_id AS a, account_id AS b FROM x) g", "/tmp/s/");
        assert!(start[0].contains("UNION ALL") && start[0].contains("a <> b"));
        assert!(start[0].starts_with("INSERT OVERWRITE DIRECTORY '/tmp/s/edges' USING parquet"));
        assert!(start[3].contains("`funnel_stitch_labels_0`") && start[3].contains("labels-0"));
        let (next, changed) = s.round();
        assert!(
            next[0].contains("'/tmp/s/labels-1'") && next[0].contains("`funnel_stitch_labels_0`")
        );
        assert!(next[1].contains("VIEW `funnel_stitch_labels_1`"));
        assert!(changed.contains("n.l <> o.l"));
        let (release, again) = s.advance(3);
        assert!(again && release[0].contains("labels_0"));
        assert_eq!(s.labels(), "`funnel_stitch_labels_1`");
        let (_, again) = s.advance(0);
        assert!(!again);
        assert_eq!(s.rounds(), 2);
    }
}
