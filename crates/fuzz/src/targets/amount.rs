//! The readers' decimal amount parser (`funnel_ingest`, `event.rs`).

use funnel_core::schema::AMOUNT_SCALE;
use funnel_ingest::fuzzing::{format_amount, parse_amount};

use crate::reference;

/// Invariants: the parser accepts exactly what the exact decimal reference accepts, with the
/// same value; an accepted value's text (`format_amount`) is the reference's and parses back to
/// the same value; an error is one line.
pub fn amount(input: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(input);
    let got = parse_amount(&text);
    let want = reference::amount(&text, AMOUNT_SCALE as usize);
    match (&got, want) {
        (Ok(a), Some(b)) if *a == b => {}
        (Err(e), None) => super::one_line("the amount error", e, 200)?,
        (g, w) => {
            return Err(format!(
                "{text:?}: parse_amount gives {g:?}, the exact reference {w:?}"
            ));
        }
    }
    if let Ok(units) = got {
        let formatted = format_amount(units);
        let scale = AMOUNT_SCALE as usize;
        let digits = format!("{:0>width$}", units.unsigned_abs(), width = scale + 1);
        let (int, frac) = digits.split_at(digits.len() - scale);
        let want = format!("{}{int}.{frac}", if units < 0 { "-" } else { "" });
        if formatted != want {
            return Err(format!(
                "format_amount({units}) is {formatted:?}, expected {want:?}"
            ));
        }
        match parse_amount(&formatted) {
            Ok(back) if back == units => {}
            other => {
                return Err(format!(
                    "{formatted:?} (format_amount of {units}) parses back as {other:?}"
                ));
            }
        }
    }
    Ok(())
}
