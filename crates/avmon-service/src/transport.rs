//! TR 101 290 on every transport stream avmon reads itself: a [`TransportTap`] sees the bytes on
//! their way to FFmpeg's demuxer (`avmon_media::ingest`), and a [`TransportDetector`] in the
//! stream's pipeline turns the analyser's events into findings of kind `transport.<indicator>`,
//! merged into one finding while the condition persists (events less than [`HOLD_S`] apart).
//!
//! Files are timed by the stream's own PCR ([`Clock::Stream`]); live inputs by when their bytes
//! arrived ([`Clock::Arrival`]), so that a PAT that stops arriving is an error even while the
//! stream's clock says nothing. Counts run across reconnections; each connection starts a fresh
//! analyser (a new connection is not a continuity error).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use avmon_core::{Details, Detector, Finding, Findings, Severity};
use avmon_media::ByteTap;
use avmon_transport::{Analyzer, Clock, Counters, Event, Indicator, Settings};

/// Events of one indicator less than this many seconds (media time) apart are one finding.
pub const HOLD_S: f64 = 1.0;

/// The analyser, fed from the demuxer's reads.
pub struct TransportTap {
    state: Mutex<TapState>,
}

struct TapState {
    settings: Settings,
    analyzer: Analyzer,
    events: Vec<Event>,
    /// Counts and packets of earlier connections.
    earlier: Counters,
    earlier_packets: u64,
    /// The arrival clock's origin, for live inputs.
    live: Option<Instant>,
    rtp_lost: u64,
}

/// How long a table may be missing from HLS segments. RFC 8216 (§3.2) asks for a PAT and a PMT
/// at the start of each segment, and segmenters write them only there, so TR 101 290's 0.5 s
/// (1.3.a, 1.5.a), a broadcast rule, is not asked of them: a table is missing when a segment of
/// up to this long comes without one.
pub const HLS_TABLE_INTERVAL_S: f64 = 30.0;

impl TransportTap {
    pub fn new(live: bool) -> Arc<TransportTap> {
        TransportTap::with_settings(live, Settings::default())
    }

    /// For HLS segments: tables once per segment (see [`HLS_TABLE_INTERVAL_S`]).
    pub fn hls() -> Arc<TransportTap> {
        TransportTap::with_settings(
            false,
            Settings {
                pat_interval_s: HLS_TABLE_INTERVAL_S,
                pmt_interval_s: HLS_TABLE_INTERVAL_S,
                ..Settings::default()
            },
        )
    }

    fn with_settings(live: bool, settings: Settings) -> Arc<TransportTap> {
        Arc::new(TransportTap {
            state: Mutex::new(TapState {
                settings,
                analyzer: Analyzer::with_settings(settings).unwrap_or_else(|_| Analyzer::new()),
                events: Vec::new(),
                earlier: Counters::default(),
                earlier_packets: 0,
                live: live.then(Instant::now),
                rtp_lost: 0,
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, TapState> {
        // The state stays consistent even if a holder panicked: counters and a queue.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new connection: a fresh analyser (the counts so far are kept).
    fn restart(&self) {
        let mut s = self.state();
        let done = *s.analyzer.counters();
        s.earlier.add(&done);
        s.earlier_packets += s.analyzer.packets();
        s.analyzer = Analyzer::with_settings(s.settings).unwrap_or_else(|_| Analyzer::new());
        s.events.clear();
    }

    /// Counts since the first connection.
    pub fn counters(&self) -> Counters {
        let s = self.state();
        let mut c = s.earlier;
        c.add(s.analyzer.counters());
        c
    }

    /// Whether any transport-stream packet was seen (the input is MPEG-TS read by avmon).
    pub fn saw_packets(&self) -> bool {
        let s = self.state();
        s.analyzer.packets() + s.earlier_packets > 0
    }

    /// RTP packets lost (sequence gaps), for `rtp://` inputs.
    pub fn rtp_lost(&self) -> u64 {
        self.state().rtp_lost
    }

    fn drain(&self, out: &mut Vec<Event>) {
        out.append(&mut self.state().events);
    }
}

impl ByteTap for TransportTap {
    fn on_start(&self) {
        self.restart();
    }

    fn on_bytes(&self, bytes: &[u8]) {
        let mut s = self.state();
        let clock = s
            .live
            .map_or(Clock::Stream, |o| Clock::Arrival(o.elapsed().as_secs_f64()));
        let TapState {
            analyzer, events, ..
        } = &mut *s;
        analyzer.feed(bytes, clock, events);
        // Bounded: the pipeline drains the queue at every demuxed packet; a flood of errors
        // between two packets keeps its first 10 000 (the counters count all).
        events.truncate(10_000);
    }

    fn on_rtp_loss(&self, lost: u64) {
        self.state().rtp_lost += lost;
    }
}

/// Priority 1 indicators (the stream cannot be decoded reliably) are major, priority 2 minor.
fn severity(i: Indicator) -> Severity {
    match i {
        Indicator::SyncLoss
        | Indicator::SyncByteError
        | Indicator::PatError
        | Indicator::CcError
        | Indicator::PmtError
        | Indicator::PidError => Severity::Major,
        _ => Severity::Minor,
    }
}

/// One indicator's open finding.
#[derive(Clone, Copy, Debug)]
struct Open {
    last: f64,
    count: u64,
}

/// Turns the tap's events into findings, on the stream's thread.
pub struct TransportDetector {
    tap: Arc<TransportTap>,
    open: [Option<Open>; Indicator::ALL.len()],
    scratch: Vec<Event>,
    live: bool,
}

impl TransportDetector {
    pub fn new(tap: Arc<TransportTap>) -> Self {
        let live = tap.state().live.is_some();
        TransportDetector {
            live,
            tap,
            open: [None; Indicator::ALL.len()],
            scratch: Vec::new(),
        }
    }
}

fn details(i: Indicator, pid: Option<u16>) -> Details {
    let mut d = Details::new();
    d.insert("indicator".into(), i.clause().into());
    if let Some(pid) = pid {
        d.insert("pid".into(), pid.into());
    }
    d
}

fn end(i: Indicator, o: Open) -> Finding {
    let mut d = details(i, None);
    d.insert("count".into(), o.count.into());
    Finding::end(i.kind(), severity(i), o.last, d)
}

impl Detector for TransportDetector {
    fn kind(&self) -> &'static str {
        "transport"
    }

    fn on_tick(&mut self, now: f64, out: &mut Findings) {
        self.tap.drain(&mut self.scratch);
        for e in self.scratch.drain(..) {
            let k = Indicator::ALL
                .iter()
                .position(|&i| i == e.indicator)
                .unwrap_or(0);
            // A file: the analyser's own media time (the demuxer reads ahead, while probing by
            // seconds, so the packet clock `now` may lag the bytes that carried the error). A
            // live input: the packet clock, which runs on across reconnections where each new
            // connection's analyser starts its media time afresh.
            let t = match e.media_s {
                Some(m) if !self.live => m,
                _ => now,
            }
            .max(0.0);
            // An event more than HOLD_S after the open one's last: that one ended.
            if let Some(o) = self.open[k].filter(|o| t - o.last >= HOLD_S) {
                out.push(end(e.indicator, o));
                self.open[k] = None;
            }
            match &mut self.open[k] {
                Some(o) => {
                    o.last = o.last.max(t);
                    o.count += 1;
                }
                slot @ None => {
                    *slot = Some(Open { last: t, count: 1 });
                    out.push(Finding::begin(
                        e.indicator.kind(),
                        severity(e.indicator),
                        t,
                        details(e.indicator, e.pid),
                    ));
                }
            }
        }
        for (k, slot) in self.open.iter_mut().enumerate() {
            if let Some(o) = *slot {
                if now - o.last >= HOLD_S {
                    out.push(end(Indicator::ALL[k], o));
                    *slot = None;
                }
            }
        }
    }
}

/// The counts as a line of the text report.
pub fn text(c: &Counters) -> String {
    let found: Vec<String> = c
        .named()
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    if found.is_empty() {
        "transport: no TR 101 290 errors".into()
    } else {
        format!("transport (TR 101 290): {}", found.join(", "))
    }
}
