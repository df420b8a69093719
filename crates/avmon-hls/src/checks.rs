//! The delivery checks of one variant, as a pure state machine: reload results and segment
//! outcomes in, [`Finding`]s and the segments to fetch out. No I/O and no clock of its own (the
//! monitor passes wall seconds), so every rule is tested here on made-up windows.
//!
//! **Media time** is the sum of the `EXTINF` durations of the segments taken on since the
//! monitor started (fetched or failed), plus an estimate (their mean duration) for segments
//! that left the playlist before a reload saw them. A segment's findings sit at its start.
//!
//! | kind | Begin | End |
//! |---|---|---|
//! | `hls.stale` | a reload finds no new segment, `stale_factor` × target duration after the last one that did | the next reload with a new segment |
//! | `hls.segment_error` | a segment fails (HTTP status, timeout, empty, undecodable, decryption) | the next segment that does not |
//! | `hls.slow_segment` | a segment's download takes longer than its duration | the next segment downloaded in time |
//! | `hls.target_duration` | a segment's `EXTINF`, rounded to the nearest integer, exceeds the target duration (RFC 8216, 4.3.3.1) | the next segment within it |
//! | `hls.sequence_error` | the media sequence goes backwards or jumps ahead by more than 10 000 (a restarted packager: monitoring restarts at the live edge), or skips segments never listed | at once (the skipped media's estimated end) |
//! | `hls.discontinuity` | an `EXT-X-DISCONTINUITY` (info) | at once |
//!
//! Wall times (how long the playlist was stale, how long a download took) go in the details.

use avmon_core::{kinds, round_ms, Details, Finding, Findings, Severity};
use serde::Serialize;

use crate::manifest::{DocTimes, MediaWindow, SegmentRef};

/// The kinds a format's delivery checks report under: the same rules, named for the format.
#[derive(Debug)]
pub struct DeliveryKinds {
    pub stale: &'static str,
    pub segment_error: &'static str,
    pub slow_segment: &'static str,
    pub sequence_error: &'static str,
    /// A segment longer than the document allows.
    pub too_long: &'static str,
    /// A discontinuity (HLS) or a new Period (DASH).
    pub discontinuity: &'static str,
}

pub static HLS_KINDS: DeliveryKinds = DeliveryKinds {
    stale: kinds::HLS_STALE,
    segment_error: kinds::HLS_SEGMENT_ERROR,
    slow_segment: kinds::HLS_SLOW_SEGMENT,
    sequence_error: kinds::HLS_SEQUENCE_ERROR,
    too_long: kinds::HLS_TARGET_DURATION,
    discontinuity: kinds::HLS_DISCONTINUITY,
};

pub static DASH_KINDS: DeliveryKinds = DeliveryKinds {
    stale: kinds::DASH_STALE,
    segment_error: kinds::DASH_SEGMENT_ERROR,
    slow_segment: kinds::DASH_SLOW_SEGMENT,
    sequence_error: kinds::DASH_SEQUENCE_ERROR,
    too_long: kinds::DASH_SEGMENT_DURATION,
    discontinuity: kinds::DASH_PERIOD,
};

/// `availabilityStartTime` moving by less than this (seconds) is rounding, not a change.
const AST_TOLERANCE_S: f64 = 0.001;

/// A forward jump of the media sequence by more than this many segments is a renumbering (a
/// restarted packager), not segments lost: no media time is estimated for it.
const MAX_SKIPPED: u64 = 10_000;

/// A player starts this many target durations from the live edge (RFC 8216, 6.3.3).
const START_TARGET_DURATIONS: f64 = 3.0;

/// Running totals of one variant: its metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct VariantStats {
    pub reloads: u64,
    pub reload_errors: u64,
    /// Segments fetched and accepted.
    pub segments: u64,
    pub segment_errors: u64,
    /// Bytes of the accepted segments (after decryption).
    pub bytes: u64,
    /// Media seconds of the accepted segments.
    pub media_s: f64,
    /// Seconds spent downloading the accepted segments, in total and at most.
    pub download_s_total: f64,
    pub download_s_max: f64,
    pub slow_segments: u64,
    pub target_duration_errors: u64,
    pub sequence_errors: u64,
    /// Segments that left the playlist before a reload listed them.
    pub skipped_segments: u64,
    pub discontinuities: u64,
    pub stale_events: u64,
}

impl VariantStats {
    /// Every count, which only ever grows (for checks of that).
    pub fn counts(&self) -> [u64; 10] {
        let s = self;
        [
            s.reloads,
            s.reload_errors,
            s.segments,
            s.segment_errors,
            s.bytes,
            s.slow_segments,
            s.target_duration_errors,
            s.sequence_errors,
            s.skipped_segments,
            s.discontinuities,
        ]
    }

    /// Mean bitrate of the accepted segments (bytes × 8 / media seconds).
    pub fn bitrate_bps(&self) -> Option<f64> {
        (self.media_s > 0.0).then(|| self.bytes as f64 * 8.0 / self.media_s)
    }

    pub fn download_s_mean(&self) -> Option<f64> {
        (self.segments > 0).then(|| self.download_s_total / self.segments as f64)
    }
}

/// A segment to fetch, placed on the media clock.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    pub seg: SegmentRef,
    /// Media time at which the segment starts.
    pub start_t: f64,
}

/// What a reload meant.
#[derive(Clone, Debug, PartialEq)]
pub struct Reloaded {
    /// New segments appeared (or the playlist ended): reload after a target duration, not half.
    pub changed: bool,
    pub planned: Vec<Planned>,
}

#[derive(Debug)]
pub struct Checks {
    kinds: &'static DeliveryKinds,
    stale_factor: f64,
    variant: String,
    /// See the module docs.
    pub media_t: f64,
    pub stats: VariantStats,
    target_duration: Option<f64>,
    /// The sequence number expected next; `None` until a window with segments was seen.
    next_seq: Option<u64>,
    prev_first: Option<u64>,
    /// Last sequence number listed at the previous reload.
    last_listed: Option<u64>,
    /// Wall second of the last reload that found the playlist changed.
    last_change: f64,
    last_error: Option<String>,
    /// Media before the next accepted segment is missing (failed, skipped, or a restart).
    gap: bool,
    /// Wall second at which `hls.stale` was raised, while it is open.
    stale_since: Option<f64>,
    segment_error: Condition,
    slow: Condition,
    too_long: Condition,
    /// Sum and count of listed durations, for estimating skipped segments.
    listed_s: f64,
    listed: u64,
    /// The last document's own times (DASH).
    doc: Option<DocTimes>,
}

impl Checks {
    /// What must hold after any input, given the counts and media time before it and the
    /// findings it made: no count went down, media time is finite and did not go back, and no
    /// finding is before it. For the randomised tests and the fuzz target.
    pub fn moved_forward(
        &self,
        before: &[u64; 10],
        t0: f64,
        out: &[Finding],
    ) -> Result<(), String> {
        let after = self.stats.counts();
        if before.iter().zip(&after).any(|(b, a)| a < b) {
            return Err(format!("a count went down: {before:?} -> {after:?}"));
        }
        if !(self.media_t.is_finite() && self.media_t >= t0) {
            return Err(format!("media time {t0} -> {}", self.media_t));
        }
        match out.iter().find(|f| !(f.t.is_finite() && f.t >= t0)) {
            Some(f) => Err(format!("{} at {} before {t0}", f.kind, f.t)),
            None => Ok(()),
        }
    }

    /// `now` is the wall second the monitor started; `variant` labels the findings' details.
    pub fn new(stale_factor: f64, variant: impl Into<String>, now: f64) -> Self {
        Checks {
            kinds: &HLS_KINDS,
            stale_factor,
            variant: variant.into(),
            media_t: 0.0,
            stats: VariantStats::default(),
            target_duration: None,
            next_seq: None,
            prev_first: None,
            last_listed: None,
            last_change: now,
            last_error: None,
            gap: false,
            stale_since: None,
            segment_error: Condition::new(kinds::HLS_SEGMENT_ERROR, Severity::Major),
            slow: Condition::new(kinds::HLS_SLOW_SEGMENT, Severity::Warning),
            too_long: Condition::new(kinds::HLS_TARGET_DURATION, Severity::Warning),
            listed_s: 0.0,
            listed: 0,
            doc: None,
        }
    }

    /// Report under `kinds` (a format's; HLS's by default).
    pub fn with_kinds(mut self, kinds: &'static DeliveryKinds) -> Self {
        self.kinds = kinds;
        self.segment_error = Condition::new(kinds.segment_error, Severity::Major);
        self.slow = Condition::new(kinds.slow_segment, Severity::Warning);
        self.too_long = Condition::new(kinds.too_long, Severity::Warning);
        self
    }

    /// The target duration of the last window, once one was loaded.
    pub fn target_duration(&self) -> Option<f64> {
        self.target_duration
    }

    fn details(&self) -> Details {
        details(&self.variant)
    }

    fn instant(
        &self,
        kind: &'static str,
        sev: Severity,
        t0: f64,
        t1: f64,
        d: Details,
        out: &mut Findings,
    ) {
        out.push(Finding::begin(kind, sev, t0, d.clone()));
        out.push(Finding::end(kind, sev, t1, d));
    }

    /// A reload at wall second `now` returned `w`.
    pub fn on_window(&mut self, w: &MediaWindow, now: f64, out: &mut Findings) -> Reloaded {
        self.stats.reloads += 1;
        self.last_error = None;
        self.target_duration = Some(w.target_duration);
        // A window that lists nothing (every segment aged out of a DASH window) is no change.
        let last = w.last_sequence();
        let changed = w.ended || (last.is_some() && last != self.last_listed);
        if last.is_some() {
            self.last_listed = last;
        }
        if changed {
            self.last_change = now;
            if let Some(since) = self.stale_since.take() {
                let mut d = self.details();
                d.insert("stale_s".into(), round_ms(now - since).into());
                out.push(Finding::end(
                    self.kinds.stale,
                    Severity::Critical,
                    self.media_t,
                    d,
                ));
            }
        } else {
            self.check_stale(now, out);
        }
        if let Some(doc) = &w.doc {
            self.compare_doc(doc, out);
        }
        let start = self.start_index(w, out);
        self.prev_first = Some(w.first_sequence);
        let planned = w.segments[start..]
            .iter()
            .map(|s| self.plan(s, w.target_duration, out))
            .collect();
        Reloaded { changed, planned }
    }

    /// An MPD's own times against the last update's: `availabilityStartTime` must stay put,
    /// `publishTime` must not go back.
    fn compare_doc(&mut self, doc: &DocTimes, out: &mut Findings) {
        if let Some(prev) = self.doc.take() {
            let t = self.media_t;
            if let (Some(a), Some(b)) = (prev.availability_start, doc.availability_start) {
                if (a - b).abs() > AST_TOLERANCE_S {
                    let mut d = self.details();
                    d.insert("before".into(), rfc3339(a).into());
                    d.insert("after".into(), rfc3339(b).into());
                    d.insert("moved_s".into(), round_ms(b - a).into());
                    self.instant(
                        kinds::DASH_AVAILABILITY_START,
                        Severity::Major,
                        t,
                        t,
                        d,
                        out,
                    );
                }
            }
            if let (Some(a), Some(b)) = (prev.publish, doc.publish) {
                if b < a {
                    let mut d = self.details();
                    d.insert("before".into(), rfc3339(a).into());
                    d.insert("after".into(), rfc3339(b).into());
                    self.instant(kinds::DASH_PUBLISH_TIME, Severity::Warning, t, t, d, out);
                }
            }
        }
        self.doc = Some(doc.clone());
    }

    /// A reload at wall second `now` failed (`reason`): the playlist did not change.
    pub fn on_reload_failed(&mut self, now: f64, reason: &str, out: &mut Findings) {
        self.stats.reload_errors += 1;
        self.last_error = Some(reason.to_owned());
        self.check_stale(now, out);
    }

    fn check_stale(&mut self, now: f64, out: &mut Findings) {
        let Some(td) = self.target_duration else {
            return;
        };
        // An MPD may promise to change less often than its segments last.
        let period = self
            .doc
            .as_ref()
            .and_then(|d| d.update_period)
            .unwrap_or(0.0);
        let limit = self.stale_factor * td.max(period);
        let unchanged = now - self.last_change;
        if self.stale_since.is_none() && unchanged > limit {
            self.stale_since = Some(now);
            self.stats.stale_events += 1;
            let mut d = self.details();
            d.insert("unchanged_s".into(), round_ms(unchanged).into());
            d.insert("limit_s".into(), round_ms(limit).into());
            if let Some(e) = &self.last_error {
                d.insert("last_error".into(), e.clone().into());
            }
            out.push(Finding::begin(
                self.kinds.stale,
                Severity::Critical,
                self.media_t,
                d,
            ));
        }
    }

    /// Where in `w` to start taking segments, after reporting a skip or a restart.
    fn start_index(&mut self, w: &MediaWindow, out: &mut Findings) -> usize {
        let (Some(next), Some(last)) = (self.next_seq, w.last_sequence()) else {
            return self.live_edge(w);
        };
        let first = w.first_sequence;
        let backwards = self.prev_first.is_some_and(|p| first < p) || last.saturating_add(1) < next;
        let restart = if backwards {
            Some("media sequence went backwards".to_owned())
        } else if first.saturating_sub(next) > MAX_SKIPPED {
            Some(format!(
                "media sequence jumped ahead by {} (renumbered)",
                first - next
            ))
        } else {
            None
        };
        if let Some(reason) = restart {
            self.sequence_error(&reason, next, first, None, out);
            return self.live_edge(w);
        }
        if first > next {
            let skipped = first - next;
            self.stats.skipped_segments += skipped;
            self.sequence_error(
                "segments left the playlist before it listed them",
                next,
                first,
                Some((skipped, w.target_duration)),
                out,
            );
        }
        w.segments
            .iter()
            .position(|s| s.sequence >= next)
            .unwrap_or(w.segments.len())
    }

    /// Report a sequence error at the media clock: `expected` was due, the window starts at
    /// `first`. With `skipped` (count, target duration), the clock first moves over the skipped
    /// segments' estimated media (their mean listed duration; the target duration before any).
    fn sequence_error(
        &mut self,
        reason: &str,
        expected: u64,
        first: u64,
        skipped: Option<(u64, f64)>,
        out: &mut Findings,
    ) {
        self.stats.sequence_errors += 1;
        self.gap = true;
        let t0 = self.media_t;
        let mut d = self.details();
        d.insert("reason".into(), reason.into());
        d.insert("expected".into(), expected.into());
        d.insert("first".into(), first.into());
        if let Some((n, td)) = skipped {
            let mean = if self.listed > 0 {
                self.listed_s / self.listed as f64
            } else {
                td
            };
            self.media_t += n as f64 * mean;
            d.insert("skipped".into(), n.into());
        }
        self.instant(
            self.kinds.sequence_error,
            Severity::Major,
            t0,
            self.media_t,
            d,
            out,
        );
    }

    /// Start (or restart) as a player does: three target durations from the live edge; at the
    /// first segment of an ended playlist.
    fn live_edge(&self, w: &MediaWindow) -> usize {
        if w.ended {
            return 0;
        }
        let mut from_end = 0.0;
        for (i, s) in w.segments.iter().enumerate().rev() {
            from_end += s.duration;
            if from_end >= START_TARGET_DURATIONS * w.target_duration {
                return i;
            }
        }
        0
    }

    fn plan(&mut self, s: &SegmentRef, td: f64, out: &mut Findings) -> Planned {
        let start_t = self.media_t;
        self.media_t += s.duration;
        self.listed_s += s.duration;
        self.listed += 1;
        self.next_seq = Some(s.sequence.saturating_add(1));
        if s.discontinuity {
            self.stats.discontinuities += 1;
            let mut d = self.details();
            d.insert("sequence".into(), s.sequence.into());
            self.instant(
                self.kinds.discontinuity,
                Severity::Info,
                start_t,
                start_t,
                d,
                out,
            );
        }
        if let Some(gap) = s.gap_before_s {
            let (kind, sev) = if gap > 0.0 {
                (kinds::DASH_TIMELINE_GAP, Severity::Major)
            } else {
                (kinds::DASH_TIMELINE_OVERLAP, Severity::Warning)
            };
            let mut d = self.details();
            d.insert("sequence".into(), s.sequence.into());
            d.insert("uri".into(), s.uri.as_str().into());
            d.insert(
                if gap > 0.0 { "gap_s" } else { "overlap_s" }.into(),
                round_ms(gap.abs()).into(),
            );
            self.instant(kind, sev, start_t, start_t, d, out);
        }
        if let Some(c) = &s.cue {
            let mut d = self.details();
            d.insert("sequence".into(), s.sequence.into());
            d.insert("source".into(), "hls".into());
            d.insert("tag".into(), c.tag.into());
            d.insert("out_of_network".into(), c.out.into());
            if let Some(v) = c.duration {
                d.insert("duration_s".into(), round_ms(v).into());
            }
            if let Some(id) = &c.id {
                d.insert("id".into(), id.as_str().into());
            }
            if let Some(Ok(info)) = c.scte35.as_deref().map(avmon_transport::scte35::parse) {
                d.insert("command".into(), info.command.name().into());
            }
            self.instant(kinds::SCTE35_CUE, Severity::Info, start_t, start_t, d, out);
        }
        // RFC 8216, 4.3.3.1: each EXTINF, rounded to the nearest integer, <= the target duration.
        let too_long = s.duration.round() > td;
        if too_long {
            self.stats.target_duration_errors += 1;
        }
        self.too_long
            .judge(too_long, start_t, &self.variant, out, |d| {
                d.insert("sequence".into(), s.sequence.into());
                d.insert("extinf_s".into(), round_ms(s.duration).into());
                d.insert("target_duration_s".into(), td.into());
            });
        Planned {
            seg: s.clone(),
            start_t,
        }
    }

    /// `p` was fetched and accepted: `bytes` long, downloaded in `download_s`. Returns whether
    /// media is missing before it (see [`crate::Segment::after_gap`]).
    pub fn on_segment_ok(
        &mut self,
        p: &Planned,
        bytes: usize,
        download_s: f64,
        out: &mut Findings,
    ) -> bool {
        let st = &mut self.stats;
        st.segments += 1;
        st.bytes += bytes as u64;
        st.media_s += p.seg.duration;
        st.download_s_total += download_s;
        st.download_s_max = st.download_s_max.max(download_s);
        let (variant, t) = (&self.variant, p.start_t);
        self.segment_error.judge(false, t, variant, out, |_| {});
        let slow = p.seg.duration > 0.0 && download_s > p.seg.duration;
        if slow {
            self.stats.slow_segments += 1;
        }
        self.slow.judge(slow, t, variant, out, |d| {
            d.insert("sequence".into(), p.seg.sequence.into());
            d.insert("download_s".into(), round_ms(download_s).into());
            d.insert("duration_s".into(), round_ms(p.seg.duration).into());
        });
        std::mem::take(&mut self.gap)
    }

    /// `p` failed: `reason`, with the HTTP status when there was one.
    pub fn on_segment_failed(
        &mut self,
        p: &Planned,
        reason: &str,
        status: Option<u16>,
        out: &mut Findings,
    ) {
        self.stats.segment_errors += 1;
        self.gap = true;
        self.segment_error
            .judge(true, p.start_t, &self.variant, out, |d| {
                d.insert("sequence".into(), p.seg.sequence.into());
                d.insert("uri".into(), p.seg.uri.as_str().into());
                d.insert("reason".into(), reason.into());
                if let Some(s) = status {
                    d.insert("status".into(), s.into());
                }
            });
    }
}

/// Unix seconds as RFC 3339 (UTC, milliseconds).
fn rfc3339(t: f64) -> String {
    chrono::DateTime::from_timestamp_millis((t * 1000.0).round() as i64)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| t.to_string())
}

/// Details every finding of a variant carries.
fn details(variant: &str) -> Details {
    let mut d = Details::new();
    d.insert("variant".into(), variant.into());
    d
}

/// A condition judged segment by segment: Begin at the start of the first affected segment,
/// End at the start of the next unaffected one.
#[derive(Debug)]
struct Condition {
    kind: &'static str,
    severity: Severity,
    open: bool,
}

impl Condition {
    fn new(kind: &'static str, severity: Severity) -> Self {
        Condition {
            kind,
            severity,
            open: false,
        }
    }

    /// The segment starting at media time `t` is `affected` or not; `begin` adds a Begin's
    /// details (the segment's measurements).
    fn judge(
        &mut self,
        affected: bool,
        t: f64,
        variant: &str,
        out: &mut Findings,
        begin: impl FnOnce(&mut Details),
    ) {
        if affected == self.open {
            return;
        }
        self.open = affected;
        let mut d = details(variant);
        if affected {
            begin(&mut d);
            out.push(Finding::begin(self.kind, self.severity, t, d));
        } else {
            out.push(Finding::end(self.kind, self.severity, t, d));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Encryption;
    use avmon_core::FindingEdge;
    use url::Url;

    fn window(first: u64, durations: &[f64], td: f64) -> MediaWindow {
        MediaWindow {
            target_duration: td,
            first_sequence: first,
            segments: durations
                .iter()
                .enumerate()
                .map(|(i, d)| SegmentRef {
                    sequence: first + i as u64,
                    uri: Url::parse(&format!("http://o.test/s{}.ts", first + i as u64)).unwrap(),
                    duration: *d,
                    discontinuity: false,
                    range: None,
                    encryption: Encryption::None,
                    init: None,
                    cue: None,
                    gap_before_s: None,
                    presentation_s: None,
                })
                .collect(),
            ended: false,
            doc: None,
        }
    }

    fn seqs(r: &Reloaded) -> Vec<u64> {
        r.planned.iter().map(|p| p.seg.sequence).collect()
    }

    fn kinds_of(out: &Findings) -> Vec<(&'static str, FindingEdge)> {
        out.iter().map(|f| (f.kind, f.edge)).collect()
    }

    /// Checks (stale factor 3) that loaded `w` at wall second 0, what they found, and the plan.
    fn started(w: &MediaWindow) -> (Checks, Findings, Reloaded) {
        let mut c = Checks::new(3.0, "v0", 0.0);
        let mut out = Vec::new();
        let r = c.on_window(w, 0.0, &mut out);
        (c, out, r)
    }

    /// A Begin of `kind` and its End.
    fn begin_end(kind: &'static str) -> Vec<(&'static str, FindingEdge)> {
        vec![(kind, FindingEdge::Begin), (kind, FindingEdge::End)]
    }

    #[test]
    fn starts_three_target_durations_from_the_live_edge_then_takes_only_new_segments() {
        let (mut c, mut out, r) = started(&window(10, &[2.0; 6], 2.0));
        assert_eq!(seqs(&r), [13, 14, 15]);
        assert!(r.changed);
        assert_eq!(r.planned[1].start_t, 2.0);
        assert_eq!(c.media_t, 6.0);
        let r = c.on_window(&window(11, &[2.0; 6], 2.0), 2.0, &mut out);
        assert_eq!(seqs(&r), [16]);
        assert_eq!(r.planned[0].start_t, 6.0);
        let r = c.on_window(&window(11, &[2.0; 6], 2.0), 3.0, &mut out);
        assert!(!r.changed && r.planned.is_empty());
        // An ended (VOD) playlist is taken from its first segment.
        let mut v = window(0, &[2.0; 4], 2.0);
        v.ended = true;
        let mut c = Checks::new(3.0, "v0", 0.0);
        assert_eq!(seqs(&c.on_window(&v, 0.0, &mut out)), [0, 1, 2, 3]);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn a_skip_is_one_sequence_error_spanning_the_missing_media() {
        let (mut c, mut out, _) = started(&window(0, &[2.0; 3], 2.0));
        assert_eq!(c.media_t, 6.0);
        // 3..=4 were never listed: the window jumped from 0..=2 to 5..=7.
        let r = c.on_window(&window(5, &[2.0; 3], 2.0), 2.0, &mut out);
        assert_eq!(seqs(&r), [5, 6, 7]);
        assert_eq!(kinds_of(&out), begin_end(kinds::HLS_SEQUENCE_ERROR));
        assert_eq!((out[0].t, out[1].t), (6.0, 10.0));
        assert_eq!(out[0].details["skipped"], 2);
        assert_eq!(out[0].details["expected"], 3);
        assert_eq!(r.planned[0].start_t, 10.0);
        assert_eq!(c.stats.skipped_segments, 2);
        // The next accepted segment says media is missing before it; the one after does not.
        assert!(c.on_segment_ok(&r.planned[0], 1000, 0.1, &mut out));
        assert!(!c.on_segment_ok(&r.planned[1], 1000, 0.1, &mut out));
    }

    #[test]
    fn a_sequence_going_backwards_is_a_restart_from_the_live_edge() {
        let (mut c, mut out, _) = started(&window(40, &[1.0; 5], 1.0));
        let r = c.on_window(&window(0, &[1.0; 5], 1.0), 1.0, &mut out);
        assert_eq!(seqs(&r), [2, 3, 4]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].kind, kinds::HLS_SEQUENCE_ERROR);
        assert_eq!(out[0].details["reason"], "media sequence went backwards");
        assert_eq!(c.stats.sequence_errors, 1);
        // Continues normally from the new numbering.
        let r = c.on_window(&window(1, &[1.0; 5], 1.0), 2.0, &mut out);
        assert_eq!(seqs(&r), [5]);
        assert_eq!(out.len(), 2);
        // A jump far ahead is a renumbering too, not ten million lost segments.
        let r = c.on_window(&window(10_000_000, &[1.0; 5], 1.0), 3.0, &mut out);
        assert_eq!(seqs(&r), [10_000_002, 10_000_003, 10_000_004]);
        assert!(out[2].details["reason"]
            .as_str()
            .unwrap()
            .contains("jumped ahead"));
        assert_eq!(c.stats.skipped_segments, 0);
    }

    #[test]
    fn stale_after_factor_target_durations_without_a_new_segment_cleared_by_one() {
        let mut c = Checks::new(3.0, "v0", 0.0);
        let mut out = Vec::new();
        let w = window(0, &[2.0; 3], 2.0);
        c.on_window(&w, 0.0, &mut out);
        c.on_window(&w, 1.0, &mut out);
        c.on_window(&w, 6.0, &mut out);
        assert!(out.is_empty(), "exactly 3 x 2 s is not yet stale");
        c.on_reload_failed(6.5, "HTTP 503", &mut out);
        assert_eq!(kinds_of(&out), [(kinds::HLS_STALE, FindingEdge::Begin)]);
        assert_eq!(out[0].t, 6.0);
        assert_eq!(out[0].details["unchanged_s"], 6.5);
        assert_eq!(out[0].details["last_error"], "HTTP 503");
        c.on_window(&w, 8.0, &mut out);
        assert_eq!(out.len(), 1, "raised once");
        c.on_window(&window(1, &[2.0; 3], 2.0), 9.0, &mut out);
        assert_eq!(out[1].edge, FindingEdge::End);
        assert_eq!(out[1].details["stale_s"], 2.5);
        assert_eq!(c.stats.stale_events, 1);
    }

    #[test]
    fn segment_errors_raise_once_and_clear_at_the_next_good_segment() {
        let (mut c, mut out, r) = started(&window(0, &[1.0; 3], 1.0));
        c.on_segment_failed(&r.planned[0], "HTTP 404", Some(404), &mut out);
        c.on_segment_failed(&r.planned[1], "timed out after 10.0 s", None, &mut out);
        assert_eq!(
            kinds_of(&out),
            [(kinds::HLS_SEGMENT_ERROR, FindingEdge::Begin)]
        );
        assert_eq!(out[0].details["status"], 404);
        assert_eq!(out[0].details["sequence"], 0);
        assert_eq!(out[0].details["variant"], "v0");
        assert!(c.on_segment_ok(&r.planned[2], 500, 0.1, &mut out));
        assert_eq!(out[1].edge, FindingEdge::End);
        assert_eq!(out[1].t, 2.0);
        assert_eq!(c.stats.segment_errors, 2);
        assert_eq!(c.stats.segments, 1);
    }

    #[test]
    fn slow_segments_and_the_metrics_of_accepted_ones() {
        let (mut c, mut out, r) = started(&window(0, &[2.0; 3], 2.0));
        c.on_segment_ok(&r.planned[0], 250_000, 2.5, &mut out);
        c.on_segment_ok(&r.planned[1], 250_000, 3.0, &mut out);
        c.on_segment_ok(&r.planned[2], 250_000, 0.5, &mut out);
        assert_eq!(kinds_of(&out), begin_end(kinds::HLS_SLOW_SEGMENT));
        assert_eq!((out[0].t, out[1].t), (0.0, 4.0));
        assert_eq!(out[0].details["download_s"], 2.5);
        assert_eq!(c.stats.slow_segments, 2);
        assert_eq!(c.stats.bitrate_bps(), Some(1_000_000.0));
        assert_eq!(c.stats.download_s_max, 3.0);
        assert_eq!(c.stats.download_s_mean(), Some(2.0));
    }

    #[test]
    fn target_duration_uses_rounded_extinf_and_discontinuities_are_reported() {
        let mut c = Checks::new(3.0, "v0", 0.0);
        let mut out = Vec::new();
        let mut w = window(0, &[2.4, 2.6, 2.7, 2.0], 2.0);
        w.ended = true;
        w.segments[3].discontinuity = true;
        c.on_window(&w, 0.0, &mut out);
        assert_eq!(
            kinds_of(&out),
            [
                (kinds::HLS_TARGET_DURATION, FindingEdge::Begin),
                (kinds::HLS_DISCONTINUITY, FindingEdge::Begin),
                (kinds::HLS_DISCONTINUITY, FindingEdge::End),
                (kinds::HLS_TARGET_DURATION, FindingEdge::End),
            ]
        );
        // 2.4 rounds to 2: fine; 2.6 rounds to 3 > 2.
        assert_eq!(out[0].t, 2.4);
        assert_eq!(out[0].details["extinf_s"], 2.6);
        assert_eq!(out[3].t, 7.7);
        assert_eq!(out[1].severity, Severity::Info);
        assert_eq!(c.stats.target_duration_errors, 2);
        assert_eq!(c.stats.discontinuities, 1);
    }

    #[test]
    fn ad_cues_are_events_where_their_segment_starts() {
        let mut c = Checks::new(3.0, "v0", 0.0);
        let mut out = Vec::new();
        let mut w = window(0, &[2.0; 4], 2.0);
        w.ended = true;
        w.segments[2].cue = Some(crate::manifest::HlsCue {
            tag: "EXT-X-CUE-OUT",
            out: true,
            duration: Some(30.0),
            id: None,
            scte35: None,
        });
        c.on_window(&w, 0.0, &mut out);
        assert_eq!(
            kinds_of(&out),
            [
                (kinds::SCTE35_CUE, FindingEdge::Begin),
                (kinds::SCTE35_CUE, FindingEdge::End)
            ]
        );
        assert_eq!((out[0].t, out[0].severity), (4.0, Severity::Info));
        assert_eq!(out[0].details["out_of_network"], true);
        assert_eq!(out[0].details["duration_s"], 30.0);
        assert_eq!(out[0].details["sequence"], 2);
    }

    /// Hostile windows (sequence numbers at the edge of u64, zero and huge durations, windows
    /// that jump anywhere) and any order of outcomes: findings, never a panic.
    #[test]
    fn dash_documents_are_compared_between_updates() {
        let doc = |ast: f64, publish: f64, mup: Option<f64>| {
            let mut w = window(0, &[1.0, 1.0], 1.0);
            w.doc = Some(DocTimes {
                availability_start: Some(ast),
                publish: Some(publish),
                update_period: mup,
            });
            w
        };
        let mut c = Checks::new(3.0, "video/0", 0.0).with_kinds(&DASH_KINDS);
        let mut out = Vec::new();
        c.on_window(&doc(1000.0, 1010.0, Some(10.0)), 0.0, &mut out);
        assert!(out.is_empty(), "{out:?}");
        // Unchanged for 20 s: not stale when the MPD may wait 10 s between updates (limit 30 s).
        c.on_window(&doc(1000.0, 1010.0, Some(10.0)), 20.0, &mut out);
        assert!(out.is_empty(), "{out:?}");
        c.on_window(&doc(1000.0, 1010.0, Some(10.0)), 31.0, &mut out);
        assert_eq!(kinds_of(&out), [(kinds::DASH_STALE, FindingEdge::Begin)]);
        out.clear();
        // availabilityStartTime moved and publishTime went back: one event each.
        let mut w = doc(1000.5, 1005.0, Some(10.0));
        w.segments[1].sequence = 2;
        c.on_window(&w, 32.0, &mut out);
        let k = kinds_of(&out);
        assert!(k.contains(&(kinds::DASH_STALE, FindingEdge::End)), "{k:?}");
        for kind in [kinds::DASH_AVAILABILITY_START, kinds::DASH_PUBLISH_TIME] {
            assert_eq!(
                k.iter().filter(|(x, _)| *x == kind).count(),
                2,
                "{kind}: {k:?}"
            );
        }
        let ast = out
            .iter()
            .find(|f| f.kind == kinds::DASH_AVAILABILITY_START)
            .unwrap();
        assert_eq!(ast.details["moved_s"], 0.5);
        assert_eq!(ast.details["before"], "1970-01-01T00:16:40.000Z");
    }

    #[test]
    fn timeline_gaps_and_overlaps_are_reported_once_at_their_segment() {
        let mut w = window(10, &[2.0, 2.0, 2.0, 2.0], 2.0);
        w.ended = true;
        w.segments[1].gap_before_s = Some(0.5);
        w.segments[3].gap_before_s = Some(-0.25);
        let mut c = Checks::new(3.0, "audio/1", 0.0).with_kinds(&DASH_KINDS);
        let mut out = Vec::new();
        c.on_window(&w, 0.0, &mut out);
        let gaps: Vec<_> = out
            .iter()
            .filter(|f| f.edge == FindingEdge::Begin)
            .map(|f| {
                (
                    f.kind,
                    f.t,
                    f.details
                        .get("gap_s")
                        .or(f.details.get("overlap_s"))
                        .cloned(),
                )
            })
            .collect();
        assert_eq!(
            gaps,
            [
                (kinds::DASH_TIMELINE_GAP, 2.0, Some(0.5.into())),
                (kinds::DASH_TIMELINE_OVERLAP, 6.0, Some(0.25.into()))
            ]
        );
        // The same window again: nothing new is planned, nothing reported again.
        out.clear();
        c.on_window(&w, 1.0, &mut out);
        assert!(out.is_empty(), "{out:?}");
        // And a failed segment is reported under the DASH kind.
        let p = Planned {
            seg: w.segments[0].clone(),
            start_t: 0.0,
        };
        c.on_segment_failed(&p, "404", Some(404), &mut out);
        assert_eq!(
            kinds_of(&out),
            [(kinds::DASH_SEGMENT_ERROR, FindingEdge::Begin)]
        );
    }

    #[test]
    fn random_windows_and_outcomes_never_panic() {
        let mut rnd = crate::xorshift(0x9e37_79b9_7f4a_7c15u64);
        let mut c = Checks::new(3.0, "v0", 0.0);
        let mut out = Vec::new();
        for i in 0..5_000 {
            let first = match rnd() % 4 {
                0 => u64::MAX - rnd() % 4,
                1 => rnd() % 8,
                _ => rnd(),
            };
            let n = (rnd() % 6) as usize;
            let durations: Vec<f64> = (0..n)
                .map(|_| [0.0, 1.0, 6.0, 1e30][(rnd() % 4) as usize])
                .collect();
            let mut w = window(0, &durations, [1.0, 6.0, 3600.0][(rnd() % 3) as usize]);
            w.first_sequence = first;
            for (k, s) in w.segments.iter_mut().enumerate() {
                s.sequence = first.saturating_add(k as u64);
                s.discontinuity = rnd() % 5 == 0;
            }
            w.ended = rnd() % 50 == 0;
            let (before, t0) = (c.stats.counts(), c.media_t);
            let r = c.on_window(&w, i as f64, &mut out);
            let starts = r.planned.iter().map(|p| p.start_t);
            assert!(
                starts.clone().zip(starts.skip(1)).all(|(a, b)| a <= b),
                "{r:?}"
            );
            for p in &r.planned {
                if rnd() % 3 == 0 {
                    c.on_segment_failed(p, "HTTP 500", Some(500), &mut out);
                } else {
                    c.on_segment_ok(
                        p,
                        (rnd() % 1_000_000) as usize,
                        (rnd() % 20) as f64,
                        &mut out,
                    );
                }
            }
            if rnd() % 7 == 0 {
                c.on_reload_failed(i as f64 + 0.5, "timed out", &mut out);
            }
            if let Err(e) = c.moved_forward(&before, t0, &out) {
                panic!("{e}");
            }
            out.clear();
        }
        assert_eq!(c.stats.reloads, 5_000);
    }
}
