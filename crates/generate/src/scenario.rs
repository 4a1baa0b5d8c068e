//! The scenario model: persons, sessions, journeys, and injected faults.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::rng::Rng;
use crate::sinks::{Amount, Row, Sink, Ts};

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("invalid {option}: {message}")]
    InvalidOption {
        option: &'static str,
        message: String,
    },
}

impl GenerateError {
    pub(crate) fn io(path: &Path, e: impl std::fmt::Display) -> GenerateError {
        GenerateError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Csv,
    Jsonl,
    Parquet,
    /// Chat platform as CSV, shop as JSON lines with every third day as Parquet, gzip on
    /// alternate days: what a mixed delivery looks like.
    Mixed,
}

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub out: PathBuf,
    pub persons: u64,
    pub seed: u64,
    pub format: OutputFormat,
    /// Compress every CSV / JSON lines file (Mixed compresses alternate days anyway).
    pub gzip: bool,
    /// First day of the export (Asia/Shanghai calendar).
    pub start: NaiveDate,
    pub days: u32,
    /// Per real event: chance of an exact re-delivered copy.
    pub duplicate_rate: f64,
    /// Per real event: chance of a copy with the same event_id and different content.
    pub conflict_rate: f64,
    /// Per real event: chance of an extra malformed row (a reason drawn uniformly).
    pub fault_rate: f64,
    /// Per text file: chance that it ends in a truncated line.
    pub truncated_file_rate: f64,
    /// Where to write the ground truth (default `OUT/truth.json`).
    pub truth: Option<PathBuf>,
    /// Per journey: the weights of the chat surfaces its sessions are clicked on (in the order
    /// one_to_one, group, official_account), instead of the common mix. Changes who uses a
    /// journey where, not how well it converts on each surface: a Simpson's-paradox mix.
    pub chat_mix: Vec<(String, [f64; 3])>,
    /// Changes of the chance that a session's first step continues (the warning page passed,
    /// the page viewed, the app opened) on one chat surface, from a day on or always.
    pub chat_effects: Vec<ChatEffect>,
}

/// `delta` added to the chance that a session clicked on `chat` continues past its first
/// step, for sessions on or after `from` (Asia/Shanghai days; always when `None`).
#[derive(Debug, Clone, PartialEq)]
pub struct ChatEffect {
    pub chat: String,
    pub delta: f64,
    pub from: Option<NaiveDate>,
}

/// The surface knobs, resolved against the journeys and days of one generation.
struct Surfaces {
    /// Per journey (JOURNEYS order): chat weights.
    mix: [[f64; 3]; 4],
    /// Per chat (CHATS order): (first day index, delta).
    effects: [Vec<(i64, f64)>; 3],
}

impl Surfaces {
    fn new(opts: &GenerateOptions) -> Result<Surfaces, GenerateError> {
        let invalid = |option, message: String| GenerateError::InvalidOption { option, message };
        let mut mix = [CHAT_WEIGHTS; 4];
        for (journey, w) in &opts.chat_mix {
            let j = JOURNEYS.iter().position(|x| x == journey).ok_or_else(|| {
                invalid(
                    "--chat-mix",
                    format!("no journey {journey:?} (journeys: {})", JOURNEYS.join(", ")),
                )
            })?;
            if w.iter().any(|x| !(x.is_finite() && *x >= 0.0)) || w.iter().sum::<f64>() <= 0.0 {
                return Err(invalid(
                    "--chat-mix",
                    format!("{journey}: weights {w:?} must be non-negative with a positive sum"),
                ));
            }
            mix[j] = *w;
        }
        let mut effects: [Vec<(i64, f64)>; 3] = Default::default();
        for e in &opts.chat_effects {
            let c = CHATS.iter().position(|x| *x == e.chat).ok_or_else(|| {
                invalid(
                    "--chat-effect",
                    format!(
                        "no chat surface {:?} (surfaces: {})",
                        e.chat,
                        CHATS.join(", ")
                    ),
                )
            })?;
            if !(-1.0..=1.0).contains(&e.delta) {
                return Err(invalid(
                    "--chat-effect",
                    format!("{}: {} is not between -1 and 1", e.chat, e.delta),
                ));
            }
            let day = e.from.map_or(i64::MIN, |d| (d - opts.start).num_days());
            effects[c].push((day, e.delta));
        }
        Ok(Surfaces { mix, effects })
    }

    /// The chance `p` of continuing past the first step, for a session on `chat` on `day`.
    fn continue_chance(&self, p: f64, chat: usize, day: i64) -> f64 {
        let delta: f64 = self.effects[chat]
            .iter()
            .filter(|(from, _)| day >= *from)
            .map(|(_, d)| d)
            .sum();
        if delta == 0.0 {
            // Without a knob the chance is exactly the scenario's (the same draws, the same files).
            p
        } else {
            (p + delta).clamp(0.0, 1.0)
        }
    }
}

impl GenerateOptions {
    pub fn new(out: impl Into<PathBuf>, persons: u64, seed: u64) -> GenerateOptions {
        GenerateOptions {
            out: out.into(),
            persons,
            seed,
            format: OutputFormat::Mixed,
            gzip: false,
            start: NaiveDate::from_ymd_opt(2021, 9, 13).expect("valid date"),
            days: 28,
            duplicate_rate: 0.01,
            conflict_rate: 0.002,
            fault_rate: 0.005,
            truncated_file_rate: 0.1,
            truth: None,
            chat_mix: Vec::new(),
            chat_effects: Vec::new(),
        }
    }

    /// No duplicates, conflicts or malformed rows.
    pub fn clean(mut self) -> GenerateOptions {
        self.duplicate_rate = 0.0;
        self.conflict_rate = 0.0;
        self.fault_rate = 0.0;
        self.truncated_file_rate = 0.0;
        self
    }
}

/// What a correct ingest of the generated files (into an empty store) must find.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Truth {
    pub seed: u64,
    /// People simulated (a person whose ids no login links is several persons to any ingest).
    pub humans: u64,
    pub expected: ExpectedCounts,
    /// Valid distinct events by event_type.
    pub events_by_type: BTreeMap<String, u64>,
    /// Linkable persons: groups of ids that the generated login events connect.
    pub persons: u64,
    /// Every id that appears in a valid event (user_id, or account_id of a login) -> a label of
    /// its linkable person. Labels are opaque: compare groupings, not names.
    pub id_person: BTreeMap<String, String>,
    /// Files written, relative to the output directory, with their row counts.
    pub files: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectedCounts {
    pub rows_read: u64,
    pub rows_stored: u64,
    pub rows_rejected: u64,
    pub rows_duplicate: u64,
    pub rejected_by_reason: BTreeMap<String, u64>,
}

const PLATFORMS: [&str; 2] = ["wechat", "taobao"];
const JOURNEYS: [&str; 4] = ["external_link", "wechat_native", "mini_program", "tao_code"];
const JOURNEY_WEIGHTS: [f64; 4] = [0.40, 0.25, 0.20, 0.15];
const CHATS: [&str; 3] = ["one_to_one", "group", "official_account"];
const CHAT_WEIGHTS: [f64; 3] = [0.55, 0.30, 0.15];
const CAMPAIGNS: [&str; 4] = ["autumn_sale", "new_arrivals", "flash_deal", "member_day"];

/// Most sessions a person has.
const MAX_SESSIONS: u32 = 6;
/// A session starting less than this after the previous one's last event is moved later...
const SESSION_SPACING_MS: i64 = 60_000;
/// ... by this spacing and up to (not including) this much more.
const SESSION_SHIFT_MS: u64 = 3_600_000;
/// The most a session's last event can come after its click (tao_code: 300 s to open the app,
/// 60 s to log in, 1,800 s to buy; the other journeys are shorter).
const SESSION_MAX_MS: i64 = 2_160_000;
/// The most a conflicting copy's timestamp comes after the event's.
const CONFLICT_SHIFT_MS: u64 = 60_000;

/// The earliest and latest timestamp (epoch ms) a generation from `start_ms` (midnight of the
/// first day, Asia/Shanghai) over `days` days can write: sessions start between 08:00 and
/// midnight local time on one of the days, and may be pushed later by the sessions before them.
fn time_bounds(start_ms: i64, days: u32) -> (i64, i64) {
    let first = start_ms + 8 * 3_600_000;
    let last_start = start_ms + i64::from(days) * 86_400_000 - 1;
    let pushes = i64::from(MAX_SESSIONS - 1) * (SESSION_SPACING_MS + SESSION_SHIFT_MS as i64 - 1);
    let sessions = i64::from(MAX_SESSIONS) * SESSION_MAX_MS;
    (
        first,
        last_start + pushes + sessions + CONFLICT_SHIFT_MS as i64 - 1,
    )
}

/// Refuses a `--start` and `--days` whose timestamps would leave the range ingest accepts
/// (years 1..9999), where the truth file would count events that no ingest can store. Most
/// timestamps are written as Asia/Shanghai local time (+08:00 after 1991), whose year must be
/// 9999 at most too: the latest instant is 8 hours before the end of 9999 in UTC.
fn check_time_range(opts: &GenerateOptions, start_ms: i64) -> Result<(), GenerateError> {
    use funnel_core::time::{MIN_MS, format_ms};
    const MAX_MS: i64 = funnel_core::time::MAX_MS - 8 * 3_600_000;
    let (first, last) = time_bounds(start_ms, opts.days);
    let problem = if first < MIN_MS {
        Some(format!(
            "timestamps from {}, before {}, the earliest that ingest accepts",
            format_ms(first),
            format_ms(MIN_MS)
        ))
    } else if last > MAX_MS {
        Some(format!(
            "timestamps up to {}, after {} (9999-12-31 23:59:59.999 in Asia/Shanghai), the \
             latest that ingest accepts",
            format_ms(last),
            format_ms(MAX_MS)
        ))
    } else {
        None
    };
    match problem {
        Some(p) => Err(GenerateError::InvalidOption {
            option: "--start",
            message: format!("{} with --days {} would write {p}", opts.start, opts.days),
        }),
        None => Ok(()),
    }
}

const FAULTS: [&str; 12] = [
    "missing_event_id",
    "missing_user_id",
    "missing_event_type",
    "missing_ts",
    "bad_timestamp",
    "bad_event_type",
    "bad_warning_action",
    "missing_account_id",
    "missing_order_id",
    "bad_amount",
    "negative_amount",
    "malformed_record",
];

struct Person {
    h: u64,
    wx: String,
    acct: String,
    dev: String,
    webview_login: bool,
    mini_login: bool,
    app_login: bool,
    used: Vec<String>,
    events: u64,
}

/// One real event before it is written.
struct Ev {
    row: Row,
    ms: i64,
    platform: usize,
}

struct Writer<'a> {
    opts: &'a GenerateOptions,
    start_ms: i64,
    sinks: BTreeMap<(u32, usize), Sink>,
    truth: ExpectedCounts,
    by_type: BTreeMap<String, u64>,
    variant: u64,
}

impl Writer<'_> {
    fn day_of(&self, ms: i64) -> u32 {
        ((ms - self.start_ms).div_euclid(86_400_000)).max(0) as u32
    }

    fn sink(&mut self, day: u32, platform: usize) -> Result<&mut Sink, GenerateError> {
        if !self.sinks.contains_key(&(day, platform)) {
            let date = self.opts.start + chrono::Days::new(u64::from(day));
            let dir = self.opts.out.join(date.format("%Y-%m-%d").to_string());
            std::fs::create_dir_all(&dir).map_err(|e| GenerateError::io(&dir, e))?;
            let name = PLATFORMS[platform];
            let gz = |alt: bool| self.opts.gzip || alt;
            let sink = match self.opts.format {
                OutputFormat::Csv => Sink::csv(dir.join(ext(name, "csv", gz(false))), gz(false))?,
                OutputFormat::Jsonl => {
                    Sink::jsonl(dir.join(ext(name, "jsonl", gz(false))), gz(false))?
                }
                OutputFormat::Parquet => Sink::parquet(dir.join(format!("{name}.parquet")))?,
                OutputFormat::Mixed => match platform {
                    0 => Sink::csv(
                        dir.join(ext(name, "csv", gz(day.is_multiple_of(2)))),
                        gz(day.is_multiple_of(2)),
                    )?,
                    _ if day % 3 == 2 => Sink::parquet(dir.join(format!("{name}.parquet")))?,
                    _ => Sink::jsonl(
                        dir.join(ext(name, "jsonl", gz(day % 2 == 1))),
                        gz(day % 2 == 1),
                    )?,
                },
            };
            self.sinks.insert((day, platform), sink);
        }
        Ok(self
            .sinks
            .get_mut(&(day, platform))
            .expect("inserted above"))
    }

    fn write(&mut self, day: u32, platform: usize, row: &Row) -> Result<(), GenerateError> {
        self.variant += 1;
        let v = self.variant;
        self.truth.rows_read += 1;
        self.sink(day, platform)?.write(row, v)
    }

    fn reject(&mut self, reason: &str) {
        self.truth.rows_rejected += 1;
        *self
            .truth
            .rejected_by_reason
            .entry(reason.to_string())
            .or_default() += 1;
    }

    /// Writes a real event and whatever copies and faults it draws.
    fn emit(&mut self, ev: &Ev, rng: &mut Rng, fault_id: &str) -> Result<(), GenerateError> {
        let day = self.day_of(ev.ms);
        self.write(day, ev.platform, &ev.row)?;
        self.truth.rows_stored += 1;
        *self
            .by_type
            .entry(ev.row.event_type.clone().unwrap_or_default())
            .or_default() += 1;
        if rng.chance(self.opts.duplicate_rate) {
            let d = day + rng.range(0, 3) as u32;
            self.write(d, ev.platform, &ev.row)?;
            self.truth.rows_duplicate += 1;
        }
        if rng.chance(self.opts.conflict_rate) {
            let mut row = ev.row.clone();
            row.ts = Some(Ts::Ms(ev.ms + rng.range(1_000, CONFLICT_SHIFT_MS) as i64));
            let d = day + rng.range(0, 3) as u32;
            self.write(d, ev.platform, &row)?;
            self.reject("duplicate_conflict");
        }
        if rng.chance(self.opts.fault_rate) {
            let text = self.sink(day, ev.platform)?.is_text();
            let kinds: Vec<&str> = FAULTS
                .iter()
                .copied()
                .filter(|k| text || !matches!(*k, "bad_timestamp" | "malformed_record"))
                .collect();
            let kind = kinds[rng.range(0, kinds.len() as u64) as usize];
            let mut row = ev.row.clone();
            row.event_id = Some(fault_id.to_string());
            let purchase = |row: &mut Row| {
                row.event_type = Some("purchase".into());
                row.order_id = Some(format!("{fault_id}-o"));
                row.amount = Some(Amount::Cents(1_000));
            };
            match kind {
                "missing_event_id" => row.event_id = None,
                "missing_user_id" => row.user_id = None,
                "missing_event_type" => row.event_type = None,
                "missing_ts" => row.ts = None,
                "bad_timestamp" => {
                    let bad = [
                        "2021-09-31 10:00:00",
                        "not a time",
                        "17/09/2021 10:00",
                        "2021-09-17T25:00:00+08:00",
                    ];
                    row.ts = Some(Ts::Text(bad[rng.range(0, 4) as usize].into()));
                }
                "bad_event_type" => {
                    let bad = ["Page-View", "1click", "CLICK", "add to cart"];
                    row.event_type = Some(bad[rng.range(0, 4) as usize].into());
                }
                "bad_warning_action" => {
                    row.event_type = Some("warning".into());
                    row.warning_action = rng.chance(0.5).then(|| "ignore".to_string());
                }
                "missing_account_id" => {
                    row.event_type = Some("login".into());
                    row.account_id = None;
                }
                "missing_order_id" => {
                    purchase(&mut row);
                    row.order_id = None;
                }
                "bad_amount" => {
                    purchase(&mut row);
                    let bad = ["12,50", "abc", "1e3", "¥99"];
                    row.amount = Some(Amount::Text(bad[rng.range(0, 4) as usize].into()));
                }
                "negative_amount" => {
                    purchase(&mut row);
                    row.amount = Some(Amount::Cents(-(rng.range(1, 50_000) as i64)));
                }
                "malformed_record" => {
                    let v = self.variant;
                    let sink = self.sink(day, ev.platform)?;
                    let full = sink.row_text(&row, v);
                    let broken = match sink {
                        Sink::Jsonl { .. } => full[..full.len() / 2].to_string(),
                        _ => full.splitn(4, ',').take(3).collect::<Vec<_>>().join(","),
                    };
                    sink.write_raw(&broken, true)?;
                    self.truth.rows_read += 1;
                    self.reject(kind);
                    return Ok(());
                }
                _ => unreachable!("all kinds handled"),
            }
            self.write(day, ev.platform, &row)?;
            self.reject(kind);
        }
        Ok(())
    }
}

fn ext(name: &str, e: &str, gz: bool) -> String {
    if gz {
        format!("{name}.{e}.gz")
    } else {
        format!("{name}.{e}")
    }
}

/// Writes the exports and `truth.json` into `opts.out`, returning the truth.
pub fn generate(opts: &GenerateOptions) -> Result<Truth, GenerateError> {
    for (option, v) in [
        ("--duplicate-rate", opts.duplicate_rate),
        ("--conflict-rate", opts.conflict_rate),
        ("--fault-rate", opts.fault_rate),
        ("--truncated-file-rate", opts.truncated_file_rate),
    ] {
        if !(0.0..=1.0).contains(&v) {
            return Err(GenerateError::InvalidOption {
                option,
                message: format!("{v} is not between 0 and 1"),
            });
        }
    }
    if opts.days == 0 {
        return Err(GenerateError::InvalidOption {
            option: "--days",
            message: "must be at least 1".into(),
        });
    }
    let start_ms = opts
        .start
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp_millis()
        - 8 * 3_600_000; // midnight in Asia/Shanghai
    check_time_range(opts, start_ms)?;
    let surfaces = Surfaces::new(opts)?;
    std::fs::create_dir_all(&opts.out).map_err(|e| GenerateError::io(&opts.out, e))?;
    let mut w = Writer {
        opts,
        start_ms,
        sinks: BTreeMap::new(),
        truth: ExpectedCounts::default(),
        by_type: BTreeMap::new(),
        variant: 0,
    };
    let mut id_person = BTreeMap::new();
    let mut persons = 0u64;
    for h in 0..opts.persons {
        let mut rng = Rng::derive(opts.seed, h);
        let mut p = Person {
            h,
            wx: format!("wx_{h:07}"),
            acct: format!("acct_{h:07}"),
            dev: format!("dev_{h:07}"),
            webview_login: false,
            mini_login: false,
            app_login: false,
            used: Vec::new(),
            events: 0,
        };
        for ev in person_events(&mut p, &mut rng, opts.days, start_ms, &surfaces) {
            let fault_id = format!("x-{h:07}-{:03}", p.events);
            p.events += 1;
            w.emit(&ev, &mut rng, &fault_id)?;
        }
        persons += label_persons(&p, &mut id_person);
    }
    // Truncated last lines, file by file in path order.
    let mut sinks = std::mem::take(&mut w.sinks);
    let mut files = BTreeMap::new();
    for (i, ((_, _), sink)) in sinks.iter_mut().enumerate() {
        let mut rng = Rng::derive(opts.seed ^ 0x7472_756e_6361_7465, i as u64);
        if sink.is_text() && rng.chance(opts.truncated_file_rate) {
            let row = Row {
                event_id: Some(format!("t-{i:05}")),
                user_id: Some("wx_truncated".into()),
                event_type: Some("click".into()),
                ts: Some(Ts::Ms(start_ms)),
                journey: Some("external_link".into()),
                ..Row::default()
            };
            let full = sink.row_text(&row, 1);
            let cut = match sink {
                Sink::Jsonl { .. } => full[..full.len() * 2 / 3].to_string(),
                _ => full.splitn(4, ',').take(3).collect::<Vec<_>>().join(","),
            };
            sink.write_raw(&cut, false)?;
            w.truth.rows_read += 1;
            w.reject("malformed_record");
        }
    }
    for (_, sink) in sinks {
        let rel = sink
            .path()
            .strip_prefix(&opts.out)
            .unwrap_or(sink.path())
            .display()
            .to_string();
        files.insert(rel, sink.rows());
        sink.finish()?;
    }
    let truth = Truth {
        seed: opts.seed,
        humans: opts.persons,
        expected: w.truth,
        events_by_type: w.by_type,
        persons,
        id_person,
        files,
    };
    let path = opts
        .truth
        .clone()
        .unwrap_or_else(|| opts.out.join("truth.json"));
    let text = serde_json::to_string_pretty(&truth).expect("truth serialises");
    std::fs::write(&path, text).map_err(|e| GenerateError::io(&path, e))?;
    Ok(truth)
}

/// Labels the ids a person used by the groups their logins link; returns the number of groups.
fn label_persons(p: &Person, id_person: &mut BTreeMap<String, String>) -> u64 {
    // Three ids at most: wx and dev each link to acct through their own kind of login.
    let wx_acct = p.webview_login || p.mini_login;
    let dev_acct = p.app_login;
    let group = |id: &str| -> u8 {
        if id == p.acct || (id == p.wx && wx_acct) || (id == p.dev && dev_acct) {
            0
        } else if id == p.wx {
            1
        } else {
            2
        }
    };
    let mut groups = std::collections::BTreeSet::new();
    for id in &p.used {
        let g = group(id);
        groups.insert(g);
        id_person.insert(id.clone(), format!("h{:07}/{g}", p.h));
    }
    groups.len() as u64
}

/// The real events of one person, in time order.
fn person_events(
    p: &mut Person,
    rng: &mut Rng,
    days: u32,
    start_ms: i64,
    surfaces: &Surfaces,
) -> Vec<Ev> {
    let mut sessions = 1;
    while sessions < MAX_SESSIONS && rng.chance(0.45) {
        sessions += 1;
    }
    let mut starts: Vec<i64> = (0..sessions)
        .map(|_| {
            let day = rng.range(0, u64::from(days)) as i64;
            let second = rng.range(8 * 3600, 24 * 3600) as i64;
            start_ms + day * 86_400_000 + second * 1000 + rng.range(0, 1000) as i64
        })
        .collect();
    starts.sort_unstable();
    let mut out = Vec::new();
    let mut t_end = i64::MIN;
    for (k, mut t) in starts.into_iter().enumerate() {
        if t < t_end + SESSION_SPACING_MS {
            t = t_end + SESSION_SPACING_MS + rng.range(0, SESSION_SHIFT_MS) as i64;
        }
        let day = (t - start_ms).div_euclid(86_400_000);
        session(p, rng, &mut out, t, day, k, surfaces);
        t_end = out.last().map_or(t, |e: &Ev| e.ms);
    }
    out
}

fn session(
    p: &mut Person,
    rng: &mut Rng,
    out: &mut Vec<Ev>,
    mut t: i64,
    day: i64,
    k: usize,
    surfaces: &Surfaces,
) {
    let j = rng.weighted(&JOURNEY_WEIGHTS);
    let journey = JOURNEYS[j];
    let c = rng.weighted(&surfaces.mix[j]);
    let chat = CHATS[c];
    let first_step = |p: f64| surfaces.continue_chance(p, c, day);
    let campaign = CAMPAIGNS[rng.range(0, CAMPAIGNS.len() as u64) as usize];
    let item = format!("item_{:03}", rng.range(0, 200));
    let mut n = 0;
    let h = p.h;
    let mut push = |p: &mut Person, platform: usize, row: Row, t: i64| {
        let mut row = row;
        row.event_id = Some(format!("{}-{h:07}-{k:02}-{n:02}", ["wc", "tb"][platform]));
        n += 1;
        row.ts = Some(Ts::Ms(t));
        row.platform = Some(PLATFORMS[platform].to_string());
        row.journey = Some(journey.to_string());
        for id in [&row.user_id, &row.account_id].into_iter().flatten() {
            if !p.used.contains(id) {
                p.used.push(id.clone());
            }
        }
        out.push(Ev {
            row,
            ms: t,
            platform,
        });
    };
    let base = |event: &str, user: &str| Row {
        event_type: Some(event.to_string()),
        user_id: Some(user.to_string()),
        item_id: Some(item.clone()),
        ..Row::default()
    };
    let purchase_row = |user: &str, rng: &mut Rng| Row {
        order_id: Some(format!("o-{h:07}-{k:02}")),
        amount: Some(Amount::Cents(rng.range(990, 99_900) as i64)),
        // Most exporters write the currency; some leave the default implied.
        currency: rng.chance(0.8).then(|| "CNY".to_string()),
        ..base("purchase", user)
    };
    let wx = p.wx.clone();
    let click = Row {
        chat_type: Some(chat.to_string()),
        campaign: Some(campaign.to_string()),
        ..base("click", &wx)
    };
    push(p, 0, click, t);
    let gap = |rng: &mut Rng, lo: u64, hi: u64| rng.range(lo * 1000, hi * 1000) as i64;
    match journey {
        "external_link" => {
            t += gap(rng, 1, 4);
            let warn = |action: &str| Row {
                warning_action: Some(action.to_string()),
                chat_type: Some(chat.to_string()),
                ..base("warning", &wx)
            };
            push(p, 0, warn("shown"), t);
            // People get used to the warning page: continuing grows week by week.
            let trend = 0.004 * day as f64;
            let (cont, report) = match chat {
                "one_to_one" => (0.60 + trend, 0.03),
                "group" => (0.35 + trend, 0.06),
                _ => (0.68 + trend, 0.02),
            };
            let cont = first_step(cont);
            t += gap(rng, 2, 20);
            let x = rng.f64();
            if x >= cont {
                let action = if x < cont + report {
                    "report"
                } else {
                    "return"
                };
                push(p, 0, warn(action), t);
                return;
            }
            push(p, 0, warn("continue"), t);
            t += gap(rng, 1, 5);
            push(p, 1, base("view", &wx), t);
            if !p.webview_login {
                if !rng.chance(0.70) {
                    return;
                }
                t += gap(rng, 5, 60);
                push(
                    p,
                    1,
                    Row {
                        account_id: Some(p.acct.clone()),
                        ..base("login", &wx)
                    },
                    t,
                );
                p.webview_login = true;
            }
            if rng.chance(0.32) {
                t += gap(rng, 30, 1800);
                let acct = p.acct.clone();
                push(p, 1, purchase_row(&acct, rng), t);
            }
        }
        "wechat_native" => {
            if !rng.chance(first_step(0.85)) {
                return;
            }
            t += gap(rng, 1, 5);
            push(p, 0, base("view", &wx), t);
            if rng.chance(0.30) {
                t += gap(rng, 30, 1200);
                push(p, 0, purchase_row(&wx, rng), t);
            }
        }
        "mini_program" => {
            if !rng.chance(first_step(0.90)) {
                return;
            }
            t += gap(rng, 1, 5);
            push(p, 0, base("view", &wx), t);
            if !p.mini_login {
                if !rng.chance(0.90) {
                    return;
                }
                t += gap(rng, 2, 20);
                push(
                    p,
                    0,
                    Row {
                        account_id: Some(p.acct.clone()),
                        ..base("login", &wx)
                    },
                    t,
                );
                p.mini_login = true;
            }
            if rng.chance(0.26) {
                t += gap(rng, 30, 1200);
                push(p, 0, purchase_row(&wx, rng), t);
            }
        }
        _ => {
            // tao_code: the code is copied in WeChat and opened in the shop app on a device.
            if !rng.chance(first_step(0.55)) {
                return;
            }
            t += gap(rng, 10, 300);
            let dev = p.dev.clone();
            push(p, 1, base("app_open", &dev), t);
            if !p.app_login {
                if !rng.chance(0.80) {
                    return;
                }
                t += gap(rng, 5, 60);
                push(
                    p,
                    1,
                    Row {
                        account_id: Some(p.acct.clone()),
                        ..base("login", &dev)
                    },
                    t,
                );
                p.app_login = true;
            }
            if rng.chance(0.30) {
                t += gap(rng, 30, 1800);
                let acct = p.acct.clone();
                push(p, 1, purchase_row(&acct, rng), t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else {
                    let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
                    out.insert(rel, std::fs::read(e.path()).unwrap());
                }
            }
        }
        out
    }

    #[test]
    fn deterministic_and_seed_dependent() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let c = tempfile::tempdir().unwrap();
        let ta = generate(&GenerateOptions::new(a.path(), 200, 7)).unwrap();
        let tb = generate(&GenerateOptions::new(b.path(), 200, 7)).unwrap();
        generate(&GenerateOptions::new(c.path(), 200, 8)).unwrap();
        assert_eq!(ta, tb);
        assert_eq!(read_all(a.path()), read_all(b.path()));
        assert_ne!(read_all(a.path()), read_all(c.path()));
    }

    #[test]
    fn truth_reconciles_and_files_exist() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = GenerateOptions::new(dir.path(), 300, 1);
        opts.fault_rate = 0.2;
        let t = generate(&opts).unwrap();
        let e = &t.expected;
        assert_eq!(
            e.rows_read,
            e.rows_stored + e.rows_rejected + e.rows_duplicate
        );
        assert_eq!(e.rejected_by_reason.values().sum::<u64>(), e.rows_rejected);
        assert_eq!(t.files.values().sum::<u64>(), e.rows_read);
        assert_eq!(t.events_by_type.values().sum::<u64>(), e.rows_stored);
        for reason in FAULTS {
            assert!(
                e.rejected_by_reason.get(reason).copied().unwrap_or(0) > 0,
                "{reason} never injected"
            );
        }
        for f in t.files.keys() {
            assert!(dir.path().join(f).is_file(), "{f}");
        }
        assert!(t.persons >= t.humans);
        assert!(t.id_person.contains_key("wx_0000000"));
    }

    #[test]
    fn timestamps_stay_within_the_bounds() {
        // Days = 1 packs every session into one day, so sessions are pushed the most.
        for days in [1, 28] {
            let start_ms = 1_631_462_400_000 - 8 * 3_600_000;
            let (first, last) = time_bounds(start_ms, days);
            let (mut lo, mut hi, mut longest) = (i64::MAX, i64::MIN, 0);
            for h in 0..20_000 {
                let mut rng = Rng::derive(11, h);
                let mut p = Person {
                    h,
                    wx: "wx".into(),
                    acct: "acct".into(),
                    dev: "dev".into(),
                    webview_login: false,
                    mini_login: false,
                    app_login: false,
                    used: Vec::new(),
                    events: 0,
                };
                let surfaces = Surfaces::new(&GenerateOptions::new("", 0, 0)).unwrap();
                let events = person_events(&mut p, &mut rng, days, start_ms, &surfaces);
                let mut sessions: BTreeMap<String, (i64, i64)> = BTreeMap::new();
                for ev in &events {
                    lo = lo.min(ev.ms);
                    hi = hi.max(ev.ms);
                    // event_id: PLATFORM-PERSON-SESSION-N
                    let id = ev.row.event_id.as_deref().unwrap();
                    let span = sessions
                        .entry(id[3..13].to_string())
                        .or_insert((ev.ms, ev.ms));
                    span.1 = span.1.max(ev.ms);
                }
                longest = sessions
                    .values()
                    .map(|(a, b)| b - a)
                    .fold(longest, i64::max);
            }
            assert!(
                first <= lo && hi + CONFLICT_SHIFT_MS as i64 <= last,
                "{days}"
            );
            assert!(longest <= SESSION_MAX_MS, "a session lasts {longest} ms");
            // The bounds are those of real data, not of any data: within a day of it.
            assert!(lo - first < 86_400_000 && last - hi < 86_400_000, "{days}");
        }
    }

    #[test]
    fn a_start_whose_timestamps_ingest_would_reject_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let date = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        for (start, days, named) in [
            (date(9999, 12, 31), 28, "up to +10000-01-28T"),
            (date(9999, 12, 1), 31, "after 9999-12-31T15:59:59.999Z"),
            (date(9999, 12, 31), 1, "up to +10000-01-01T0"),
            (
                date(0, 12, 31),
                1,
                "from 0000-12-31T00:00:00.000Z, before 0001-01-01",
            ),
        ] {
            let mut opts = GenerateOptions::new(&out, 10, 1);
            opts.start = start;
            opts.days = days;
            match generate(&opts) {
                Err(
                    e @ GenerateError::InvalidOption {
                        option: "--start", ..
                    },
                ) => {
                    let text = e.to_string();
                    assert!(text.contains(named), "{text}");
                    assert!(text.contains(&start.to_string()), "{text}");
                }
                other => panic!("{start}: {other:?}"),
            }
            assert!(!out.exists(), "nothing is written");
        }
        // The edges themselves are fine.
        for (start, days) in [(date(9999, 12, 30), 1), (date(1, 1, 1), 1)] {
            let mut opts = GenerateOptions::new(&out, 10, 1);
            opts.start = start;
            opts.days = days;
            assert!(generate(&opts).is_ok(), "{start}");
        }
    }

    #[test]
    fn clean_has_no_faults() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = GenerateOptions::new(dir.path(), 100, 3).clean();
        opts.format = OutputFormat::Csv;
        let t = generate(&opts).unwrap();
        assert_eq!(t.expected.rows_read, t.expected.rows_stored);
        assert!(t.files.keys().all(|f| f.ends_with(".csv")));
    }

    #[test]
    fn surface_knobs() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = GenerateOptions::new(dir.path(), 10, 1);
        let none = Surfaces::new(&opts).unwrap();
        assert_eq!(none.mix, [CHAT_WEIGHTS; 4]);
        // No knob: the scenario's chance, exactly (so the same draws and files).
        assert_eq!(none.continue_chance(0.123_456, 0, 5), 0.123_456);
        opts.chat_mix = vec![("mini_program".into(), [0.1, 0.8, 0.1])];
        opts.chat_effects = vec![
            ChatEffect {
                chat: "one_to_one".into(),
                delta: 0.15,
                from: Some(opts.start + chrono::Days::new(14)),
            },
            ChatEffect {
                chat: "group".into(),
                delta: -0.9,
                from: None,
            },
        ];
        let s = Surfaces::new(&opts).unwrap();
        assert_eq!(s.mix[2], [0.1, 0.8, 0.1]);
        assert_eq!(s.mix[0], CHAT_WEIGHTS);
        assert_eq!(s.continue_chance(0.6, 0, 13), 0.6);
        assert!((s.continue_chance(0.6, 0, 14) - 0.75).abs() < 1e-12);
        assert_eq!(s.continue_chance(0.35, 1, 0), 0.0);
        for (mix, effect) in [
            (
                vec![("carrier_pigeon".to_string(), [1.0, 1.0, 1.0])],
                vec![],
            ),
            (vec![("tao_code".to_string(), [0.0, 0.0, 0.0])], vec![]),
            (
                vec![],
                vec![ChatEffect {
                    chat: "telegram".into(),
                    delta: 0.1,
                    from: None,
                }],
            ),
        ] {
            opts.chat_mix = mix;
            opts.chat_effects = effect;
            assert!(matches!(
                Surfaces::new(&opts),
                Err(GenerateError::InvalidOption { .. })
            ));
        }
    }
}
