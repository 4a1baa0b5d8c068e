//! Deterministic synthetic exports of the WeChat external-link scenario.
//!
//! Persons meet product links on chat surfaces and follow one of four journeys
//! (`wechat_native`, `mini_program`, `external_link` with the warning page and a forced login,
//! `tao_code` through the shop app), over several days, under several ids that only login
//! events link. The exports are split per day and platform, as real deliveries are, with
//! duplicates, conflicting duplicates and malformed rows of every rejection reason injected as
//! extra rows. A `truth.json` beside them says what a correct ingest must find.
//!
//! Two knobs plant what the comparisons must find: `chat_mix` (a journey used on other chat
//! surfaces than the others, with the same per-surface rates: Simpson's paradox) and
//! `chat_effects` (a change of one surface's continuation from a day on). Without them the
//! scenario's own mix and rates hold.
//!
//! The same options and seed always give byte-identical files.

mod rng;
mod scenario;
mod sinks;

pub use scenario::{ChatEffect, GenerateError, GenerateOptions, OutputFormat, Truth, generate};
