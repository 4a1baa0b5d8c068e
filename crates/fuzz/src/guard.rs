//! Running a target with panics caught and turned into findings.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;

use crate::Target;

/// The message and location of the latest panic, kept by the hook [`record_panics`] installs.
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Replaces the panic hook by one that records the panic (on any thread, so a panic in a worker
/// thread of the code under test is reported with its location) instead of printing it.
pub fn record_panics() {
    std::panic::set_hook(Box::new(|info| {
        let mut last = LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none() {
            *last = Some(info.to_string().replace('\n', " "));
        }
    }));
}

/// Runs `target` on `input`: its own verdict, or a panic as `Err("panic: ...")`.
pub fn check(target: &Target, input: &[u8]) -> Result<(), String> {
    LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()).take();
    match catch_unwind(AssertUnwindSafe(|| (target.run)(input))) {
        Ok(verdict) => verdict,
        Err(payload) => {
            let recorded = LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()).take();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(non-text payload)".into());
            Err(format!("panic: {}", recorded.unwrap_or(message)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boom(input: &[u8]) -> Result<(), String> {
        if input.is_empty() {
            panic!("empty input");
        }
        Err("not empty".into())
    }

    #[test]
    fn panics_become_findings() {
        let t = Target {
            name: "boom",
            run: boom,
            max_len: 16,
            corpus: &[],
            dictionary: &[],
        };
        let e = check(&t, b"").unwrap_err();
        assert!(e.starts_with("panic: ") && e.contains("empty input"), "{e}");
        assert_eq!(check(&t, b"x"), Err("not empty".into()));
    }
}
