//! Work spread over threads with results in a fixed order, so that what a run writes does not
//! depend on how many threads it had.

use std::sync::Mutex;

/// Threads a phase may use: the machine's cores, or `FUNNEL_THREADS` when set (to measure how
/// the ingest scales).
pub(crate) fn threads() -> usize {
    std::env::var("FUNNEL_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .filter(|t| *t > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Runs `work` on every job with up to `threads` threads (taking jobs in order as they free
/// up); the results in job order.
pub(crate) fn map_ordered<J: Send, R: Send>(
    jobs: Vec<J>,
    threads: usize,
    work: impl Fn(J) -> R + Sync,
) -> Vec<R> {
    let n = jobs.len();
    if threads <= 1 || n <= 1 {
        return jobs.into_iter().map(work).collect();
    }
    let queue = Mutex::new(jobs.into_iter().enumerate());
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..n).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads.min(n) {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().expect("job queue").next();
                    let Some((i, job)) = next else { break };
                    let r = work(job);
                    results.lock().expect("results")[i] = Some(r);
                }
            });
        }
    });
    results
        .into_inner()
        .expect("results")
        .into_iter()
        .map(|r| r.expect("every job ran"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::map_ordered;

    #[test]
    fn results_keep_the_job_order_whatever_the_threads() {
        for threads in [1, 2, 3, 16] {
            let out = map_ordered((0..100u64).collect(), threads, |j| j * j);
            assert_eq!(out, (0..100u64).map(|j| j * j).collect::<Vec<_>>());
        }
        assert!(map_ordered(Vec::<u8>::new(), 4, |j| j).is_empty());
    }
}
