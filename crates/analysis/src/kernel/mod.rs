//! The per-person kernels, and the one place that picks a funnel's kernel.
//!
//! - `window.rs`: ClickHouse `windowFunnel`, exactly, in every mode ([`Kernel`]).
//! - `extended.rs`: chain extensions beyond windowFunnel (order, exclusions, optional steps,
//!   `within`, `hold_constant`, attempts), by exhaustive search.
//! - `reference.rs` (tests only): a slow windowFunnel written from the rules, for the property
//!   tests of `window.rs`.
//!
//! Which kernel a funnel runs on is [`funnel_core::FunnelSpec::is_extended`]; its modes are
//! [`funnel_core::ModeSet`]. A new mode is a change to `window.rs` plus its arm in `ModeSet`.

mod extended;
#[cfg(test)]
mod reference;
mod window;

use funnel_core::FunnelSpec;

pub(crate) use extended::SKIPPED;
use extended::{ExtKernel, Rows};
pub use window::{Kernel, Scratch};

/// The kernel of one funnel.
pub(crate) enum FunnelKernel {
    Window(Kernel),
    Extended(ExtKernel),
}

/// Per-event data of one person for one funnel.
pub(crate) struct PersonView<'a> {
    pub ts: &'a [i64],
    pub masks: &'a [u64],
    pub excluded: &'a [u64],
    pub hold: &'a [u32],
}

impl FunnelKernel {
    pub fn new(spec: &FunnelSpec) -> FunnelKernel {
        if spec.is_extended() {
            FunnelKernel::Extended(ExtKernel::new(spec))
        } else {
            FunnelKernel::Window(Kernel::new(
                spec.steps.len(),
                spec.window_ms,
                spec.mode_set(),
            ))
        }
    }

    /// Whether a person without a step-1 event is at level 0 without running the kernel
    /// (windowFunnel: no chain starts).
    pub fn zero_without_step1(&self) -> bool {
        matches!(self, FunnelKernel::Window(_))
    }

    /// Level and reported chain (in `scratch.path`); `masks` may be a restricted copy of
    /// `p.masks`; `only_start`: the one step-1 row chains may start at (attempts).
    pub fn eval(
        &self,
        p: &PersonView<'_>,
        masks: &[u64],
        only_start: Option<usize>,
        scratch: &mut Scratch,
    ) -> u32 {
        match self {
            FunnelKernel::Window(k) => k.run(p.ts, masks, scratch),
            FunnelKernel::Extended(k) => {
                let rows = Rows {
                    ts: p.ts,
                    masks,
                    excluded: p.excluded,
                    hold: p.hold,
                };
                k.best(rows, only_start, &mut scratch.path)
            }
        }
    }
}
