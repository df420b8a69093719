//! TR 101 290 on every transport stream avmon reads itself: a [`TransportTap`] sees the bytes on
//! their way to FFmpeg's demuxer (`avmon_media::ingest`), and a [`TransportDetector`] in the
//! stream's pipeline turns the analyser's events into findings of kind `transport.<indicator>`,
//! merged into one finding while the condition persists: while an absence the analyser reported
//! (a PAT, PMT, PID, PCR or PTS that stopped coming: [`Edge::Begin`]) has not ended
//! ([`Edge::End`]), and while events come less than [`HOLD_S`] apart. So a PAT missing for 2 s
//! is one finding from its onset to its return, and a burst of continuity errors is one finding.
//! The finding's `count` (in its end's details) is how many times the indicator fired over it:
//! the counters' increments (one per gap of a table or PID, one per too-long PCR or PTS
//! interval, one per continuity break, ...).
//!
//! Files are timed by the stream's own PCR ([`Clock::Stream`]); live inputs by when their bytes
//! were read ([`Clock::Arrival`]), which the analyser follows only where the stream's own clock
//! cannot be trusted (before a PCR, or more than a second apart from it): a PAT that stops
//! arriving is an error even while the stream's clock says nothing, and a burst read late on a
//! busy host is not. Counts run across reconnections; each connection starts a fresh
//! analyser (a new connection is not a continuity error).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use avmon_core::{kinds, Details, Detector, Finding, Findings, Severity};
use avmon_detect::{MdiConfig, Scte35Config};
use avmon_media::ByteTap;
use avmon_transport::mdi::{Mdi, MdiMeter, INTERVAL_S};
use avmon_transport::{Analyzer, Clock, Counters, Cue, Edge, Event, Indicator, Settings};

use crate::scte35::Scte35Judge;

/// Events of one indicator less than this many seconds (media time) apart are one finding.
pub const HOLD_S: f64 = 1.0;

/// The most events the tap holds for the pipeline (see [`TransportTap`]'s `on_bytes`).
const MAX_QUEUED: usize = 10_000;

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
    /// RFC 4445's Media Delivery Index, from the datagrams' arrival times (UDP and RTP).
    mdi: MdiMeter,
    /// Intervals measured, for the detector (at most [`MAX_QUEUED_MDI`]).
    mdi_done: Vec<Mdi>,
    /// The analyser's lost packets already handed to the meter.
    lost_seen: u64,
    /// SCTE 35 cues found, for the detector (at most [`avmon_transport::MAX_CUES`]).
    cues: Vec<Cue>,
}

/// The most MDI intervals the tap holds for the pipeline (ten minutes of them).
const MAX_QUEUED_MDI: usize = 600;

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
                mdi: MdiMeter::new(),
                mdi_done: Vec::new(),
                lost_seen: 0,
                cues: Vec::new(),
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, TapState> {
        // The state stays consistent even if a holder panicked: counters and a queue.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new connection: a fresh analyser (the counts so far are kept). What the old one had
    /// open ends here ([`Analyzer::finish`]): the new one judges afresh.
    fn restart(&self) {
        let mut s = self.state();
        let done = *s.analyzer.counters();
        s.earlier.add(&done);
        s.earlier_packets += s.analyzer.packets();
        let fresh = Analyzer::with_settings(s.settings).unwrap_or_else(|_| Analyzer::new());
        let mut old = std::mem::replace(&mut s.analyzer, fresh);
        s.events.clear();
        old.finish(&mut s.events);
        let cues = old.take_cues();
        s.cues.extend(cues);
        s.mdi = MdiMeter::new();
        s.lost_seen = 0;
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

    fn drain(&self, out: &mut Vec<Event>, mdi: &mut Vec<Mdi>, cues: &mut Vec<Cue>) {
        let mut s = self.state();
        out.append(&mut s.events);
        mdi.append(&mut s.mdi_done);
        cues.append(&mut s.cues);
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
        let found = analyzer.take_cues();
        let lost = analyzer.lost_packets();
        if lost > s.lost_seen {
            let new = lost - s.lost_seen;
            s.mdi.lost(new);
            s.lost_seen = lost;
        }
        if !found.is_empty() && s.cues.len() < avmon_transport::MAX_CUES {
            s.cues.extend(found);
        }
        let TapState { events, .. } = &mut *s;
        // Bounded: the pipeline drains the queue at every demuxed packet; a flood of errors
        // between two packets keeps its first 10 000 (the counters count all), and the ends of
        // absences after them (no more than it began), so that none stays open.
        if events.len() > MAX_QUEUED {
            let mut n = 0;
            events.retain(|e| {
                n += 1;
                n <= MAX_QUEUED || e.edge == Edge::End
            });
        }
    }

    fn on_rtp_loss(&self, lost: u64) {
        self.state().rtp_lost += lost;
    }

    fn on_arrival(&self, at_s: f64, bytes: usize) {
        let mut s = self.state();
        if let Some(m) = s.mdi.arrival(at_s, bytes) {
            if s.mdi_done.len() < MAX_QUEUED_MDI {
                s.mdi_done.push(m);
            }
        }
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
#[derive(Clone, Debug)]
struct Open {
    /// The latest time it was seen: an occurrence, or the end of an absence.
    last: f64,
    /// The indicator's counts it spans.
    count: u64,
    /// The PIDs whose absence (an [`Edge::Begin`] without its [`Edge::End`] yet) holds it
    /// open.
    absent: Vec<Option<u16>>,
}

/// Turns the tap's events into findings, on the stream's thread. It lives as long as the tap
/// (across reconnections), so the absences a connection left open are ended by the tap's
/// restart.
pub struct TransportDetector {
    tap: Arc<TransportTap>,
    open: [Option<Open>; Indicator::ALL.len()],
    scratch: Vec<Event>,
    live: bool,
    mdi_cfg: MdiConfig,
    /// `network.delay_factor` and `network.media_loss`.
    mdi_judges: [MdiJudge; 2],
    mdi_scratch: Vec<Mdi>,
    /// This metrics period's intervals: the largest delay factor, the summed loss rate and
    /// rate, and how many.
    period: (f64, f64, f64, u32),
    /// The whole input's largest delay factor and loss rate, and intervals measured.
    whole: (f64, f64, u64),
    scte35: Scte35Judge,
    cue_scratch: Vec<Cue>,
}

/// One MDI limit's state: intervals in a row over it or within it, and whether its finding is
/// open.
#[derive(Default)]
struct MdiJudge {
    over: u32,
    under: u32,
    open: bool,
    worst: f64,
}

impl MdiJudge {
    /// One interval's `value` against `limit`, at media time `now`.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        kind: &'static str,
        severity: Severity,
        value: f64,
        limit: f64,
        cfg: &MdiConfig,
        now: f64,
        out: &mut Findings,
    ) {
        let intervals = |s: f64| (s / INTERVAL_S).round().max(1.0) as u32;
        let name = if kind == kinds::NETWORK_DELAY_FACTOR {
            "df_ms"
        } else {
            "mlr"
        };
        if value > limit {
            self.under = 0;
            self.over += 1;
            self.worst = if self.over == 1 && !self.open {
                value
            } else {
                self.worst.max(value)
            };
            if !self.open && self.over >= intervals(cfg.raise_after_s) {
                self.open = true;
                let mut d = Details::new();
                d.insert(name.into(), round3(value).into());
                d.insert("limit".into(), limit.into());
                d.insert("standard".into(), "RFC 4445".into());
                let onset = now - f64::from(self.over) * INTERVAL_S;
                out.push(Finding::begin(kind, severity, onset.max(0.0), d));
            }
        } else {
            self.over = 0;
            if self.open {
                self.under += 1;
                if self.under >= intervals(cfg.clear_after_s) {
                    self.close(
                        kind,
                        severity,
                        name,
                        now - f64::from(self.under) * INTERVAL_S,
                        out,
                    );
                }
            }
        }
    }

    fn close(
        &mut self,
        kind: &'static str,
        severity: Severity,
        name: &str,
        t: f64,
        out: &mut Findings,
    ) {
        if !std::mem::take(&mut self.open) {
            return;
        }
        let mut d = Details::new();
        d.insert(format!("{name}_max"), round3(self.worst).into());
        out.push(Finding::end(kind, severity, t.max(0.0), d));
        self.under = 0;
        self.over = 0;
    }
}

fn round3(v: f64) -> f64 {
    avmon_core::round_ms(v)
}

impl TransportDetector {
    pub fn new(tap: Arc<TransportTap>, mdi: MdiConfig, scte35: Scte35Config) -> Self {
        let live = tap.state().live.is_some();
        TransportDetector {
            live,
            tap,
            open: Default::default(),
            scratch: Vec::new(),
            mdi_cfg: mdi,
            mdi_judges: Default::default(),
            mdi_scratch: Vec::new(),
            period: (0.0, 0.0, 0.0, 0),
            whole: (0.0, 0.0, 0),
            scte35: Scte35Judge::new(scte35),
            cue_scratch: Vec::new(),
        }
    }

    /// Take the tap's events, at media time `now`.
    fn take(&mut self, now: f64, out: &mut Findings) {
        let mut events = std::mem::take(&mut self.scratch);
        let mut mdi = std::mem::take(&mut self.mdi_scratch);
        let mut cues = std::mem::take(&mut self.cue_scratch);
        self.tap.drain(&mut events, &mut mdi, &mut cues);
        for e in events.drain(..) {
            self.event(&e, now, out);
        }
        for m in mdi.drain(..) {
            self.mdi(&m, now, out);
        }
        for c in cues.drain(..) {
            // As for the analyser's events: a file by the cue's own media time, a live input by
            // the packet clock.
            let t = match c.media_s {
                Some(m) if !self.live => m,
                _ => now,
            };
            self.scte35.cue(&c, t.max(0.0), out);
        }
        self.scratch = events;
        self.mdi_scratch = mdi;
        self.cue_scratch = cues;
    }

    /// One interval of the Media Delivery Index.
    fn mdi(&mut self, m: &Mdi, now: f64, out: &mut Findings) {
        let df_ms = m.df_s * 1000.0;
        self.period.0 = self.period.0.max(df_ms);
        self.period.1 += m.mlr;
        self.period.2 += m.rate_bps;
        self.period.3 += 1;
        self.whole = (
            self.whole.0.max(df_ms),
            self.whole.1.max(m.mlr),
            self.whole.2 + 1,
        );
        if !self.mdi_cfg.enabled {
            return;
        }
        let cfg = &self.mdi_cfg;
        let [df, mlr] = &mut self.mdi_judges;
        if let Some(limit) = cfg.df_max_ms {
            df.step(
                kinds::NETWORK_DELAY_FACTOR,
                Severity::Minor,
                df_ms,
                limit,
                cfg,
                now,
                out,
            );
        }
        mlr.step(
            kinds::NETWORK_MEDIA_LOSS,
            Severity::Major,
            m.mlr,
            cfg.mlr_max,
            cfg,
            now,
            out,
        );
    }

    fn event(&mut self, e: &Event, now: f64, out: &mut Findings) {
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
        if e.edge == Edge::End {
            // The absence it ends: the finding stays open until the last one ends, and then
            // for HOLD_S. An end whose begin this detector never saw (dropped from a full
            // queue, or a connection's last events) ends nothing.
            if let Some(o) = &mut self.open[k] {
                if let Some(j) = o.absent.iter().position(|&p| p == e.pid) {
                    o.absent.swap_remove(j);
                    o.last = o.last.max(t);
                }
            }
            return;
        }
        // An event more than HOLD_S after the open one's last, with nothing absent: that one
        // ended.
        if let Some(o) = self.open[k].take_if(|o| o.absent.is_empty() && t - o.last >= HOLD_S) {
            out.push(end_at(e.indicator, &o, o.last));
        }
        match &mut self.open[k] {
            Some(o) => {
                o.last = o.last.max(t);
                o.count += 1;
            }
            slot @ None => {
                *slot = Some(Open {
                    last: t,
                    count: 1,
                    absent: Vec::new(),
                });
                out.push(Finding::begin(
                    e.indicator.kind(),
                    severity(e.indicator),
                    t,
                    details(e.indicator, e.pid),
                ));
            }
        }
        if e.edge == Edge::Begin {
            if let Some(o) = &mut self.open[k] {
                o.absent.push(e.pid);
            }
        }
    }

    /// The input ended at media time `end`: the tap's last events are taken, and every open
    /// finding ends: at its last event, or at `end` while an absence holds it open.
    pub fn finish(&mut self, end: f64, out: &mut Findings) {
        self.take(end, out);
        self.scte35.finish(end, out);
        let [df, mlr] = &mut self.mdi_judges;
        df.close(
            kinds::NETWORK_DELAY_FACTOR,
            Severity::Minor,
            "df_ms",
            end,
            out,
        );
        mlr.close(kinds::NETWORK_MEDIA_LOSS, Severity::Major, "mlr", end, out);
        for (k, slot) in self.open.iter_mut().enumerate() {
            if let Some(o) = slot.take() {
                let at = if o.absent.is_empty() {
                    o.last
                } else {
                    end.max(o.last)
                };
                out.push(end_at(Indicator::ALL[k], &o, at));
            }
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

fn end_at(i: Indicator, o: &Open, t: f64) -> Finding {
    let mut d = details(i, None);
    d.insert("count".into(), o.count.into());
    Finding::end(i.kind(), severity(i), t, d)
}

impl Detector for TransportDetector {
    fn kind(&self) -> &'static str {
        "transport"
    }

    fn take_metrics(&mut self, put: &mut dyn FnMut(&'static str, f64)) {
        let (df, mlr, rate, n) = std::mem::replace(&mut self.period, (0.0, 0.0, 0.0, 0));
        if n > 0 {
            put("mdi_df_ms", round3(df));
            put("mdi_mlr", round3(mlr / f64::from(n)));
            put("mdi_rate_kbps", round3(rate / f64::from(n) / 1000.0));
        }
    }

    fn summarize(&self, put: &mut dyn FnMut(&'static str, f64)) {
        let [cues, late, avails, heartbeats] = self.scte35.counts;
        if cues + heartbeats > 0 {
            put("scte35.cues", cues as f64);
            put("scte35.late_cues", late as f64);
            put("scte35.avails", avails as f64);
            put("scte35.heartbeats", heartbeats as f64);
        }
        let (df, mlr, n) = self.whole;
        if n > 0 {
            put("network.mdi_df_max_ms", round3(df));
            put("network.mdi_mlr_max", round3(mlr));
            put("network.mdi_intervals", n as f64);
        }
    }

    fn on_tick(&mut self, now: f64, out: &mut Findings) {
        self.take(now, out);
        self.scte35.tick(now, out);
        for (k, slot) in self.open.iter_mut().enumerate() {
            if let Some(o) = slot.take_if(|o| o.absent.is_empty() && now - o.last >= HOLD_S) {
                out.push(end_at(Indicator::ALL[k], &o, o.last));
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

#[cfg(test)]
mod tests {
    use super::*;
    use avmon_core::FindingEdge;
    use avmon_transport::psi::long_section;

    fn event(indicator: Indicator, edge: Edge, pid: u16, media: f64) -> Event {
        Event {
            indicator,
            edge,
            pid: Some(pid),
            packet: 0,
            offset: 0,
            time_s: media,
            media_s: Some(media),
        }
    }

    /// A tap for a file, its detector, and where the findings go.
    fn file_detector() -> (Arc<TransportTap>, TransportDetector, Findings) {
        let tap = TransportTap::new(false);
        (
            tap.clone(),
            TransportDetector::new(tap, MdiConfig::default(), Scte35Config::default()),
            Findings::new(),
        )
    }

    /// As if the analyser had found `events` in the bytes.
    fn found(tap: &TransportTap, events: &[Event]) {
        tap.state().events.extend_from_slice(events);
    }

    /// `(kind, edge, t, count)` of each finding.
    fn seen(out: &Findings) -> Vec<(&'static str, FindingEdge, f64, Option<u64>)> {
        out.iter()
            .map(|f| {
                let count = f.details.get("count").and_then(|c| c.as_u64());
                (f.kind, f.edge, f.t, count)
            })
            .collect()
    }

    /// The findings are one of `kind`: its begin at `begin`, its end at `end` with `count`.
    fn one_finding(out: &Findings, kind: &str, begin: f64, end: f64, count: u64) {
        use FindingEdge::{Begin, End};
        assert_eq!(
            seen(out),
            [(kind, Begin, begin, None), (kind, End, end, Some(count))]
        );
    }

    #[test]
    fn an_absence_is_one_finding_from_its_onset_to_its_return_however_long() {
        use FindingEdge::Begin;
        let (tap, mut d, mut out) = file_detector();
        // The PAT, last seen at 5.3 s, is missing from 5.8 s; a continuity error on it at 6 s.
        found(&tap, &[event(Indicator::PatError, Edge::Begin, 0, 5.8)]);
        d.on_tick(5.9, &mut out);
        found(&tap, &[event(Indicator::PatError, Edge::Once, 0, 6.0)]);
        // Long after HOLD_S it is still missing: still open.
        for t in [6.5, 7.0, 7.2] {
            d.on_tick(t, &mut out);
        }
        assert_eq!(seen(&out), [("transport.pat_error", Begin, 5.8, None)]);
        // Back at 7.3 s: it ends there, once HOLD_S has passed without it missing again.
        found(&tap, &[event(Indicator::PatError, Edge::End, 0, 7.3)]);
        d.on_tick(7.4, &mut out);
        assert_eq!(out.len(), 1);
        d.on_tick(7.3 + HOLD_S, &mut out);
        one_finding(&out, "transport.pat_error", 5.8, 7.3, 2);
    }

    #[test]
    fn absences_of_several_pids_hold_the_finding_until_the_last_returns() {
        use FindingEdge::Begin;
        let (tap, mut d, mut out) = file_detector();
        let pid = Indicator::PidError;
        found(
            &tap,
            &[
                event(pid, Edge::Begin, 0x100, 7.0),
                event(pid, Edge::Begin, 0x101, 7.1),
                event(pid, Edge::End, 0x100, 8.0),
            ],
        );
        d.on_tick(8.0, &mut out);
        d.on_tick(12.0, &mut out);
        // An end of an absence never begun (a connection's last events) ends nothing.
        found(&tap, &[event(pid, Edge::End, 0x102, 12.5)]);
        d.on_tick(14.0, &mut out);
        assert_eq!(seen(&out), [("transport.pid_error", Begin, 7.0, None)]);
        found(&tap, &[event(pid, Edge::End, 0x101, 15.0)]);
        d.on_tick(16.5, &mut out);
        one_finding(&out, "transport.pid_error", 7.0, 15.0, 2);
    }

    #[test]
    fn bursts_still_merge_and_the_end_of_the_input_ends_what_is_open() {
        use FindingEdge::{Begin, End};
        let (tap, mut d, mut out) = file_detector();
        let (cc, pts) = (Indicator::CcError, Indicator::PtsError);
        // Continuity errors 0.5 s apart are one finding; 1.5 s after the last, another.
        found(
            &tap,
            &[
                event(cc, Edge::Once, 0x100, 1.0),
                event(cc, Edge::Once, 0x100, 1.5),
                event(cc, Edge::Once, 0x101, 3.0),
                event(pts, Edge::Begin, 0x101, 3.2),
            ],
        );
        d.on_tick(3.5, &mut out);
        // The input ends at 4 s: the open burst ends at its last event, the absence at the end.
        d.finish(4.0, &mut out);
        let mut got = seen(&out);
        got.sort_by(|a, b| (a.0, a.2).partial_cmp(&(b.0, b.2)).unwrap());
        assert_eq!(
            got,
            [
                ("transport.cc_error", Begin, 1.0, None),
                ("transport.cc_error", End, 1.5, Some(2)),
                ("transport.cc_error", Begin, 3.0, None),
                ("transport.cc_error", End, 3.0, Some(1)),
                ("transport.pts_error", Begin, 3.2, None),
                ("transport.pts_error", End, 4.0, Some(1)),
            ]
        );
    }

    /// A transport stream of `secs` on its own clock: a PAT (naming a program whose PMT never
    /// comes) at the start, then a packet with a PCR every 20 ms on PID 0x100.
    fn pat_then_pcrs(secs: f64) -> Vec<u8> {
        let mut ts = Vec::new();
        let mut pat = [0xFFu8; 188];
        let section = long_section(0x00, 1, &[0x00, 0x01, 0xF0, 0x00]);
        pat[..5].copy_from_slice(&[0x47, 0x40, 0x00, 0x10, 0x00]);
        pat[5..5 + section.len()].copy_from_slice(&section);
        ts.extend(pat);
        for n in 0..(secs / 0.02) as u64 {
            let base = n * 1800; // 20 ms at 90 kHz
            let mut p = [0xFFu8; 188];
            p[..6].copy_from_slice(&[0x47, 0x01, 0x00, 0x20, 183, 0x10]);
            p[6..12].copy_from_slice(&[
                (base >> 25) as u8,
                (base >> 17) as u8,
                (base >> 9) as u8,
                (base >> 1) as u8,
                ((base & 1) << 7) as u8 | 0x7E,
                0,
            ]);
            ts.extend(p);
        }
        ts
    }

    #[test]
    fn a_reconnection_ends_what_the_connection_before_left_open() {
        use FindingEdge::{Begin, End};
        let (tap, mut d, mut out) = file_detector();
        tap.on_start();
        // 2 s with one PAT at the start: the PAT and the PMT are missing from 0.5 s.
        tap.on_bytes(&pat_then_pcrs(2.0));
        d.on_tick(1.0, &mut out);
        let begun: Vec<_> = seen(&out).into_iter().map(|f| (f.0, f.1)).collect();
        assert_eq!(
            begun,
            [
                ("transport.pat_error", Begin),
                ("transport.pmt_error", Begin)
            ]
        );
        // The source reconnects: the new connection is judged afresh, and what the old one had
        // open ends where it stopped (its last packet, at 2 s on its clock).
        tap.on_start();
        d.on_tick(2.5, &mut out);
        d.on_tick(3.5, &mut out);
        let ended: Vec<_> = seen(&out)[2..].iter().map(|f| (f.0, f.1)).collect();
        assert_eq!(
            ended,
            [("transport.pat_error", End), ("transport.pmt_error", End)]
        );
        assert!(
            out[2..].iter().all(|f| (f.t - 1.98).abs() < 0.01),
            "{out:?}"
        );
        assert_eq!(tap.counters().pat_errors, 1);
    }
}
