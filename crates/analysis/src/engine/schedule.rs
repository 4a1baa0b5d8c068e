//! The thread scheduler: units of work on threads, their results merged in unit order.

use std::collections::BTreeMap;

/// Runs `work` on every unit, on twice as many threads as rayon's global pool has (a thread
/// waits while polars decodes its unit), and hands the results to `merge` in unit order,
/// whatever order they finish in: the output does not depend on scheduling. At most
/// `2 × threads` units are started and not yet merged, so memory holds a bounded number of
/// units' results plus the merged results, even behind one slow unit.
///
/// Plain threads, not rayon tasks: a rayon worker blocked in polars' `collect` (which runs on
/// polars' own pool) steals further units meanwhile, so many units would be decoded at once.
pub(super) fn in_order<U: Sync, T: Send, E: Send>(
    units: &[U],
    work: impl Fn(&U) -> Result<T, E> + Sync,
    mut merge: impl FnMut(T),
) -> Result<(), E> {
    use std::sync::{Mutex, mpsc};
    let threads = (2 * rayon::current_num_threads()).clamp(1, units.len().max(1));
    let window = 2 * threads;
    let (job_tx, job_rx) = mpsc::channel::<usize>();
    let job_rx = Mutex::new(job_rx);
    let (done_tx, done_rx) = mpsc::channel::<(usize, Result<T, E>)>();
    std::thread::scope(|scope| {
        // Owned here, so that returning (done or failed) closes the queue before the workers
        // are joined.
        let job_tx = job_tx;
        for _ in 0..threads {
            let done_tx = done_tx.clone();
            let (job_rx, work) = (&job_rx, &work);
            scope.spawn(move || {
                loop {
                    // The lock is released before the work starts (in a `while let` scrutinee
                    // it would be held through the loop body, one worker at a time).
                    let job = job_rx.lock().expect("a worker panicked").recv();
                    // Ends when the job queue closes (all merged, or an error).
                    let Ok(i) = job else { break };
                    if done_tx.send((i, work(&units[i]))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        let mut sent = 0;
        let send_next = |sent: &mut usize| {
            if *sent < units.len() {
                job_tx.send(*sent).expect("workers outlive the queue");
                *sent += 1;
            }
        };
        while sent < window.min(units.len()) {
            send_next(&mut sent);
        }
        let mut waiting: BTreeMap<usize, T> = BTreeMap::new();
        let mut due = 0;
        while due < units.len() {
            let (i, result) = done_rx.recv().expect("a worker holds the sender");
            // On an error, returning drops the job queue: the workers stop after their unit.
            waiting.insert(i, result?);
            while let Some(t) = waiting.remove(&due) {
                merge(t);
                due += 1;
                send_next(&mut sent);
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_merge_in_unit_order_whatever_finishes_first() {
        let units: Vec<u64> = (0..40).collect();
        let mut seen = Vec::new();
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let merged = AtomicUsize::new(0);
        let (running, most_running) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let window = 4 * rayon::current_num_threads();
        in_order(
            &units,
            |u| {
                let i = *u;
                // Never more than `window` units started and not merged.
                let m = merged.load(SeqCst);
                assert!(
                    (i as usize) < m + window,
                    "unit {i} started with {m} merged"
                );
                // Later units finish first; unit 0 is slowest of all.
                let now = running.fetch_add(1, SeqCst) + 1;
                most_running.fetch_max(now, SeqCst);
                let ms = if i == 0 { 100 } else { 40 - i };
                std::thread::sleep(std::time::Duration::from_millis(ms));
                running.fetch_sub(1, SeqCst);
                Ok::<u64, String>(i)
            },
            |i| {
                seen.push(i);
                merged.fetch_add(1, SeqCst);
            },
        )
        .unwrap();
        assert_eq!(seen, (0..40).collect::<Vec<_>>());
        // Units run side by side (at least two threads, even on one core).
        assert!(most_running.load(SeqCst) >= 2);
        let failed = in_order(
            &units,
            |u| {
                if *u == 7 {
                    Err("unit 7".to_string())
                } else {
                    Ok(())
                }
            },
            |_| {},
        );
        assert_eq!(failed.unwrap_err(), "unit 7");
    }
}
