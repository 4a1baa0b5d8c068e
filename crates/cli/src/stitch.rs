//! Identity stitching on Spark: runs [`funnel_sql::Stitch`] to its fixed point in one session.
//! The cluster ingest (`funnel ingest --engine spark`) reads the labels table it leaves; the
//! test below checks it against union-find on random id graphs.

use funnel_remote::{RemoteError, SparkSession};
use funnel_sql::Stitch;

/// More rounds than pointer jumping needs for any graph of ids that fits a cluster (each round
/// at least halves the distance from a vertex to its component's smallest id on a path).
const MAX_ROUNDS: u32 = 200;

/// Stitches the edges of `edges` (a table or a subquery with an alias, columns `a` and `b`)
/// in `session`, writing each round under `scratch` (a directory the cluster can write). The
/// returned state names the labels view (`v`, `l`) and the rounds run; the caller drops its
/// views with [`Stitch::finish`] and then removes `scratch`.
pub(crate) fn stitch(
    session: &SparkSession,
    edges: &str,
    scratch: &str,
) -> Result<Stitch, RemoteError> {
    let (mut stitch, start) = Stitch::start(edges, scratch);
    start.iter().try_for_each(|sql| session.execute(sql))?;
    loop {
        let (next, changed) = stitch.round();
        next.iter().try_for_each(|sql| session.execute(sql))?;
        let changed = session.count(&changed)?;
        if std::env::var_os("FUNNEL_STITCH_TRACE").is_some() {
            eprintln!(
                "stitch round {}: {changed} labels changed",
                stitch.rounds() + 1
            );
        }
        let (release, again) = stitch.advance(changed);
        release.iter().try_for_each(|sql| session.execute(sql))?;
        if !again {
            return Ok(stitch);
        }
        if stitch.rounds() >= MAX_ROUNDS {
            return Err(RemoteError::Answer {
                engine: "spark",
                message: format!("identity stitching did not settle in {MAX_ROUNDS} rounds"),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use arrow::array::{AsArray, RecordBatch};

    use super::*;

    /// The smallest id (byte order) of every linked id's group, by union-find: the reference.
    fn reference(edges: &[(String, String)]) -> BTreeMap<String, String> {
        let mut parent: BTreeMap<String, String> = BTreeMap::new();
        fn root(parent: &mut BTreeMap<String, String>, x: &str) -> String {
            let mut r = x.to_string();
            while let Some(p) = parent.get(&r).filter(|p| **p != r) {
                r = p.clone();
            }
            r
        }
        for (a, b) in edges.iter().filter(|(a, b)| a != b) {
            parent.entry(a.clone()).or_insert_with(|| a.clone());
            parent.entry(b.clone()).or_insert_with(|| b.clone());
            let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
            let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
            parent.insert(hi, lo);
        }
        let ids: Vec<String> = parent.keys().cloned().collect();
        ids.into_iter()
            .map(|id| {
                let r = root(&mut parent, &id);
                (id, r)
            })
            .collect()
    }

    fn labels(batches: &[RecordBatch]) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for b in batches {
            let (v, l) = (
                b.column(0).as_string::<i32>(),
                b.column(1).as_string::<i32>(),
            );
            for i in 0..b.num_rows() {
                out.insert(v.value(i).to_string(), l.value(i).to_string());
            }
        }
        out
    }

    /// Random graphs of ids (multi-byte, upper and lower case, so byte order matters): long
    /// paths, stars, a cycle and random edges. Needs a Spark Connect server on this machine
    /// (the scratch directory is local): set FUNNEL_SPARK_REMOTE (CI's Spark step does);
    /// skipped otherwise.
    #[test]
    fn stitching_on_spark_is_union_find() {
        let Ok(remote) = std::env::var("FUNNEL_SPARK_REMOTE") else {
            eprintln!("FUNNEL_SPARK_REMOTE is not set: skipped");
            return;
        };
        let session = SparkSession::connect(&remote).expect("Spark Connect server");
        let alphabet = ["a", "B", "z", "é", "Z", "0", "中", "_", "ø"];
        let mut x = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move |n: u64| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % n
        };
        // An id of number k: one to three random letters, then k (so distinct k, distinct id).
        let id = |next: &mut dyn FnMut(u64) -> u64, k: u64| {
            let mut s = String::new();
            for _ in 0..1 + k % 3 {
                s.push_str(alphabet[next(alphabet.len() as u64) as usize]);
            }
            format!("{s}{k}")
        };
        for case in 0..4 {
            let mut edges = Vec::new();
            // A long path in random id order: the worst case for plain propagation.
            let path: Vec<String> = (0..400 + case * 100).map(|k| id(&mut next, k)).collect();
            edges.extend(path.windows(2).map(|w| (w[0].clone(), w[1].clone())));
            // Stars, a cycle, self-loops, duplicates and random edges among fresh ids.
            let hub = id(&mut next, 10_000);
            edges.extend((0..50).map(|k| (hub.clone(), id(&mut next, 20_000 + k))));
            let cycle: Vec<String> = (0..30).map(|k| id(&mut next, 30_000 + k)).collect();
            edges.extend((0..30).map(|k| (cycle[k].clone(), cycle[(k + 1) % 30].clone())));
            edges.push((hub.clone(), hub.clone()));
            edges.push(edges[0].clone());
            for _ in 0..300 {
                let (a, b) = (next(400), next(400));
                let (a, b) = (id(&mut next, 40_000 + a), id(&mut next, 40_000 + b));
                edges.push((a, b));
            }
            let values: Vec<String> = edges
                .iter()
                .map(|(a, b)| {
                    let d = funnel_sql::Dialect::Spark;
                    format!("({}, {})", d.string(a), d.string(b))
                })
                .collect();
            let source = format!("(SELECT * FROM VALUES {} AS g(a, b)) g", values.join(", "));
            let scratch = tempfile::tempdir().unwrap();
            let done =
                stitch(&session, &source, scratch.path().to_str().unwrap()).expect("stitching");
            let got = labels(
                &session
                    .batches(&format!("SELECT v, l FROM {}", done.labels()))
                    .expect("labels"),
            );
            done.finish()
                .iter()
                .for_each(|sql| session.execute(sql).expect("release"));
            let want = reference(&edges);
            assert_eq!(got.len(), want.len(), "case {case}");
            for (v, l) in &want {
                assert_eq!(got.get(v), Some(l), "case {case}: {v}");
            }
            eprintln!(
                "case {case}: {} edges, {} ids, {} rounds",
                edges.len(),
                want.len(),
                done.rounds()
            );
        }
    }
}
