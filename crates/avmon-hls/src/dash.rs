//! MPEG-DASH (ISO/IEC 23009-1): the MPD as the second [`ManifestFormat`].
//!
//! `dash-mpd` parses the MPD into its model; it neither follows a live presentation nor reads a
//! clock, so this module does what a DASH client does with the model:
//!
//! - **Variants.** Every Representation of the Period playing now (the first Period of an
//!   on-demand MPD) is a [`Variant`]: video first, then audio, then the rest; thumbnail (image)
//!   adaptation sets are left out. `Variant::id` is the Representation's `@id`, and the variant's
//!   document is the MPD itself, reloaded for each.
//! - **Addressing.** `SegmentTemplate` with `$Number$` or `$Time$` (and `$RepresentationID$`,
//!   `$Bandwidth$`, `%0Nd` widths, `$$`), with `@duration` or a `SegmentTimeline` (`@r` = -1
//!   included), and `SegmentList`. Attributes are inherited Period > AdaptationSet >
//!   Representation, the lower level winning; `BaseURL`s are resolved MPD > Period >
//!   AdaptationSet > Representation, from the MPD's own URL. `SegmentBase` (one indexed file per
//!   Representation) is refused with a reason.
//! - **The live edge.** For a dynamic MPD avmon computes when each segment becomes available
//!   itself: at `availabilityStartTime` + the Period's start + the segment's end (less
//!   `availabilityTimeOffset`). A segment computed from `@duration` is listed
//!   [`AVAILABILITY_GRACE_S`] after that time; one a `SegmentTimeline` lists is taken up to
//!   [`LISTED_EARLY_S`] before it (the packager announced it, and clocks differ a little). The window reaches back
//!   `timeShiftBufferDepth` ([`LOOKBACK_S`] when the MPD gives none). Every Period is followed:
//!   a new Period's first segment is marked as a discontinuity.
//! - **Sequence numbers.** The monitor's checks count segments by sequence number; a DASH
//!   segment's identity is its presentation time (`$Number$` restarts per Period, and a
//!   `$Time$` template has none). So the format keeps, per variant, the segments of the last
//!   window it read: a segment listed again keeps its number, new ones follow on, and a window
//!   that starts after the last one ended counts the segments that left in between (checked as
//!   "segments left the window before it listed them"). A timeline that starts over earlier
//!   is a renumbering, as a restarted HLS packager's is.
//! - **The document's own times** ([`DocTimes`]): `availabilityStartTime`, `publishTime` and
//!   `minimumUpdatePeriod`, for the checks that compare one reload with the next, and
//!   timeline gaps and overlaps on the segment after them ([`SegmentRef::gap_before_s`]).
//! - **SCTE 35 in EventStreams** (`urn:scte:scte35:2013:xml` and `…:2014:xml+bin`): each event
//!   is a cue on the segment that contains its presentation time.
//!
//! Clocks: the MPD's times are compared with the host's clock; `UTCTiming` is not read (keep the
//! host on NTP, as the origin should be).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use dash_mpd::{AdaptationSet, Period, Representation, SegmentList, SegmentTemplate, MPD};
use url::Url;

use crate::manifest::{
    ByteRange, DocTimes, Encryption, HlsCue, InitRef, Manifest, ManifestError, ManifestFormat,
    MediaWindow, SegmentRef, Variant,
};

/// Segments of one window at most: bounds memory and work on a hostile MPD (a `@r` of 10¹²).
/// A live window keeps its newest segments; an on-demand MPD with more is refused.
pub const MAX_SEGMENTS: usize = 20_000;

/// How far back a live window reaches when the MPD gives no `timeShiftBufferDepth`, seconds.
pub const LOOKBACK_S: f64 = 120.0;

/// A segment a `SegmentTimeline` lists is taken up to this many seconds before its computed
/// availability: the packager announced it, and the origin's clock may run a little ahead.
pub const LISTED_EARLY_S: f64 = 1.0;

/// A segment computed from `@duration` is requested this many seconds after its availability
/// time: a packager writes a segment once the next frame is in, and hosts' clocks differ by a
/// few milliseconds. Later than this, a missing segment is an error.
pub const AVAILABILITY_GRACE_S: f64 = 1.0;

/// Timeline gaps and overlaps smaller than this (seconds) are rounding, not reported.
const GAP_TOLERANCE_S: f64 = 0.001;

/// A jump of the numbering that the checks take for a renumbering (see `checks::MAX_SKIPPED`).
const RENUMBER: u64 = 10_001;

/// Wall seconds since the Unix epoch.
type Clock = Arc<dyn Fn() -> f64 + Send + Sync>;

/// The DASH [`ManifestFormat`]. See the module docs.
#[derive(Clone)]
pub struct Dash {
    now: Clock,
    /// Per variant: the segments of the last window read (see "Sequence numbers").
    known: Arc<Mutex<HashMap<String, Vec<Known>>>>,
}

#[derive(Clone, Copy, Debug)]
struct Known {
    start: f64,
    end: f64,
    seq: u64,
}

impl std::fmt::Debug for Dash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dash")
    }
}

impl Default for Dash {
    fn default() -> Self {
        Dash::with_clock(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0)
        })
    }
}

impl Dash {
    /// A DASH format reading the time from `now` (wall seconds since the Unix epoch).
    pub fn with_clock(now: impl Fn() -> f64 + Send + Sync + 'static) -> Self {
        Dash {
            now: Arc::new(now),
            known: Arc::default(),
        }
    }
}

impl ManifestFormat for Dash {
    fn parse_top(&self, bytes: &[u8], base: &Url) -> Result<Manifest, ManifestError> {
        let mpd = parse(bytes)?;
        let doc = Doc::new(&mpd, base, (self.now)())?;
        let p = doc.current();
        let mut reps: Vec<(usize, Variant)> = Vec::new();
        for (ai, a) in doc.periods[p].period.adaptations.iter().enumerate() {
            for (ri, r) in a.representations.iter().enumerate() {
                let kind = content(a, r);
                let rank = match kind {
                    "video" => 0,
                    "audio" => 1,
                    "image" => continue,
                    "text" => 2,
                    _ => 3,
                };
                let id = rep_key(ai, ri, r);
                let resolution = match (r.width.or(a.width), r.height.or(a.height)) {
                    (Some(w), Some(h)) => Some(format!("{w}x{h}")),
                    _ => None,
                };
                reps.push((
                    rank,
                    Variant {
                        index: 0,
                        uri: base.clone(),
                        bandwidth: r.bandwidth.unwrap_or(0),
                        name: format!("{kind}/{id}"),
                        resolution,
                        id: Some(id),
                        captions: a
                            .Accessibility
                            .iter()
                            .any(|x| x.schemeIdUri.starts_with("urn:scte:dash:cc:cea-")),
                    },
                ));
            }
        }
        if reps.is_empty() {
            return Err(err("the MPD's Period has no Representation to monitor"));
        }
        reps.sort_by_key(|(rank, _)| *rank);
        Ok(Manifest::Variants(
            reps.into_iter()
                .enumerate()
                .map(|(i, (_, v))| Variant { index: i, ..v })
                .collect(),
        ))
    }

    fn parse_media(
        &self,
        bytes: &[u8],
        base: &Url,
        variant: &Variant,
    ) -> Result<MediaWindow, ManifestError> {
        let mpd = parse(bytes)?;
        let doc = Doc::new(&mpd, base, (self.now)())?;
        let key = variant.id.clone().unwrap_or_default();
        let mut slots = Vec::new();
        let mut found = false;
        for (pi, p) in doc.periods.iter().enumerate() {
            let Some((a, r)) = find_rep(p.period, &key) else {
                continue;
            };
            found = true;
            doc.slots(pi, a, r, &mut slots)?;
        }
        if !found {
            return Err(err(format!("the MPD no longer has Representation {key:?}")));
        }
        if slots.len() > MAX_SEGMENTS {
            if !doc.dynamic {
                return Err(err(format!(
                    "more than {MAX_SEGMENTS} segments in an on-demand MPD"
                )));
            }
            slots.drain(..slots.len() - MAX_SEGMENTS);
        }
        let cues = doc.cues();
        let seqs = self.number(&key, &slots);
        let max_d = slots.iter().map(|s| s.end - s.start).fold(0.0, f64::max);
        let target = mpd
            .maxSegmentDuration
            .map(|d| d.as_secs_f64())
            .filter(|d| *d > 0.0)
            .unwrap_or(if max_d > 0.0 { max_d } else { 1.0 });
        let segments: Vec<SegmentRef> = slots
            .into_iter()
            .zip(seqs)
            .map(|(s, sequence)| {
                let cue = cues
                    .iter()
                    .find(|(t, _)| *t >= s.start && *t < s.end)
                    .map(|(_, c)| c.clone());
                SegmentRef {
                    sequence,
                    uri: s.uri,
                    duration: s.end - s.start,
                    discontinuity: s.new_period,
                    range: s.range,
                    encryption: Encryption::None,
                    init: s.init,
                    cue,
                    gap_before_s: s.gap_before,
                    presentation_s: Some(s.start),
                }
            })
            .collect();
        Ok(MediaWindow {
            target_duration: target,
            first_sequence: segments.first().map(|s| s.sequence).unwrap_or(0),
            segments,
            ended: !doc.dynamic,
            doc: Some(DocTimes {
                availability_start: doc.ast_epoch,
                publish: mpd.publishTime.map(epoch),
                update_period: mpd.minimumUpdatePeriod.map(|d| d.as_secs_f64()),
            }),
        })
    }

    fn kinds(&self) -> &'static crate::checks::DeliveryKinds {
        &crate::checks::DASH_KINDS
    }
}

impl Dash {
    /// Sequence numbers for `slots` (see "Sequence numbers" in the module docs), remembering
    /// them for the next window of `key`.
    fn number(&self, key: &str, slots: &[Slot]) -> Vec<u64> {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let prev = known.remove(key).unwrap_or_default();
        let seqs = assign(&prev, slots);
        if known.len() > 1024 {
            known.clear();
        }
        let keep = slots
            .iter()
            .zip(&seqs)
            .map(|(s, &seq)| Known {
                start: s.start,
                end: s.end,
                seq,
            })
            .collect();
        known.insert(key.to_owned(), keep);
        seqs
    }
}

/// Sequence numbers for `slots`, given the last window's segments `prev`.
fn assign(prev: &[Known], slots: &[Slot]) -> Vec<u64> {
    let tol = 0.001;
    let matched: Vec<Option<u64>> = slots
        .iter()
        .map(|s| {
            prev.iter()
                .find(|k| (k.start - s.start).abs() <= tol)
                .map(|k| k.seq)
        })
        .collect();
    let mut out = vec![0u64; slots.len()];
    match matched.iter().position(Option::is_some) {
        Some(first) => {
            let m = matched[first].unwrap_or(0);
            for (i, o) in out.iter_mut().enumerate().take(first) {
                *o = m.saturating_sub((first - i) as u64);
            }
            out[first] = m;
            for i in first + 1..slots.len() {
                out[i] = matched[i].unwrap_or(out[i - 1].saturating_add(1));
            }
        }
        None => {
            let start = match (prev.last(), slots.first()) {
                (None, _) | (_, None) => 0,
                (Some(last), Some(s)) if s.start >= last.end - tol => {
                    let mean =
                        prev.iter().map(|k| k.end - k.start).sum::<f64>() / prev.len() as f64;
                    let missing = if mean > 0.0 {
                        ((s.start - last.end) / mean).round().clamp(0.0, 1e12) as u64
                    } else {
                        0
                    };
                    last.seq.saturating_add(1).saturating_add(missing)
                }
                // The timeline starts over earlier: a renumbering for the checks.
                (Some(last), Some(_)) => last.seq.saturating_add(RENUMBER),
            };
            for (i, o) in out.iter_mut().enumerate() {
                *o = start.saturating_add(i as u64);
            }
        }
    }
    out
}

fn err(msg: impl Into<String>) -> ManifestError {
    ManifestError(msg.into())
}

fn parse(bytes: &[u8]) -> Result<MPD, ManifestError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        err(format!(
            "not UTF-8 text (byte {}); not a DASH MPD",
            e.valid_up_to()
        ))
    })?;
    if !text.contains("<MPD") {
        let first: String = text.trim_start().chars().take(40).collect();
        return Err(err(format!(
            "no <MPD> element (starts with {first:?}); not a DASH MPD"
        )));
    }
    dash_mpd::parse(text).map_err(|e| {
        let msg: String = e.to_string().chars().take(200).collect();
        err(format!("not a valid DASH MPD: {}", msg.replace('\n', " ")))
    })
}

fn epoch(t: dash_mpd::XsDatetime) -> f64 {
    t.timestamp_micros() as f64 / 1e6
}

/// `video`, `audio`, `text`, `image`, or `media` when nothing says.
fn content(a: &AdaptationSet, r: &Representation) -> &'static str {
    let named = r
        .contentType
        .as_deref()
        .or(a.contentType.as_deref())
        .or(r.mimeType.as_deref())
        .or(a.mimeType.as_deref())
        .unwrap_or("");
    for kind in ["video", "audio", "text", "image"] {
        if named.starts_with(kind) {
            return kind;
        }
    }
    if named.starts_with("application/ttml") || named.starts_with("application/mp4") {
        return "text";
    }
    let codecs = r.codecs.as_deref().or(a.codecs.as_deref()).unwrap_or("");
    if ["avc", "hvc", "hev", "vp0", "vp9", "av01"]
        .iter()
        .any(|c| codecs.starts_with(c))
    {
        "video"
    } else if ["mp4a", "ac-3", "ec-3", "opus"]
        .iter()
        .any(|c| codecs.starts_with(c))
    {
        "audio"
    } else {
        "media"
    }
}

/// A Representation's identity: its `@id`, else its place.
fn rep_key(ai: usize, ri: usize, r: &Representation) -> String {
    r.id.clone().unwrap_or_else(|| format!("{ai}.{ri}"))
}

fn find_rep<'a>(p: &'a Period, key: &str) -> Option<(&'a AdaptationSet, &'a Representation)> {
    p.adaptations.iter().enumerate().find_map(|(ai, a)| {
        a.representations
            .iter()
            .enumerate()
            .find(|(ri, r)| rep_key(ai, *ri, r) == key)
            .map(|(_, r)| (a, r))
    })
}

/// One segment to be, on the presentation's time line (seconds from the Period-0 origin:
/// `availabilityStartTime` for a dynamic MPD).
#[derive(Debug)]
struct Slot {
    start: f64,
    end: f64,
    uri: Url,
    range: Option<ByteRange>,
    init: Option<InitRef>,
    new_period: bool,
    gap_before: Option<f64>,
}

struct PeriodAt<'a> {
    period: &'a Period,
    start: f64,
    end: Option<f64>,
    base: Url,
}

/// An MPD read at one instant.
struct Doc<'a> {
    periods: Vec<PeriodAt<'a>>,
    dynamic: bool,
    ast_epoch: Option<f64>,
    /// Presentation time now (dynamic), seconds since `availabilityStartTime`.
    now_p: f64,
    /// The window: segments ending before this are gone (dynamic).
    lo: f64,
}

impl<'a> Doc<'a> {
    fn new(mpd: &'a MPD, url: &Url, now: f64) -> Result<Self, ManifestError> {
        let dynamic = mpd.mpdtype.as_deref() == Some("dynamic");
        let ast_epoch = mpd.availabilityStartTime.map(epoch);
        if dynamic && ast_epoch.is_none() {
            return Err(err("a dynamic MPD without availabilityStartTime"));
        }
        if mpd.periods.is_empty() {
            return Err(err("the MPD has no Period"));
        }
        let base = join_base(url, mpd.base_url.first().map(|b| b.base.as_str()))?;
        let total = mpd.mediaPresentationDuration.map(|d| d.as_secs_f64());
        let mut periods: Vec<PeriodAt> = Vec::with_capacity(mpd.periods.len());
        for (i, p) in mpd.periods.iter().enumerate() {
            let start = match (p.start, periods.last()) {
                (Some(s), _) => s.as_secs_f64(),
                (None, None) => 0.0,
                (None, Some(prev)) => prev.end.ok_or_else(|| {
                    err(format!(
                        "Period {i} has no start, and the one before it no end"
                    ))
                })?,
            };
            if let Some(prev) = periods.last_mut() {
                prev.end = Some(prev.end.map_or(start, |e| e.min(start)));
            }
            let end = p.duration.map(|d| start + d.as_secs_f64());
            let pbase = join_base(&base, p.BaseURL.first().map(|b| b.base.as_str()))?;
            periods.push(PeriodAt {
                period: p,
                start,
                end,
                base: pbase,
            });
        }
        if let (Some(last), Some(total)) = (periods.last_mut(), total) {
            last.end = Some(last.end.map_or(total, |e| e.min(total)));
        }
        let now_p = match (dynamic, ast_epoch) {
            (true, Some(ast)) => now - ast,
            _ => f64::INFINITY,
        };
        let lo = if dynamic {
            let depth = mpd
                .timeShiftBufferDepth
                .map(|d| d.as_secs_f64())
                .unwrap_or(LOOKBACK_S);
            now_p - depth
        } else {
            f64::NEG_INFINITY
        };
        Ok(Doc {
            periods,
            dynamic,
            ast_epoch,
            now_p,
            lo,
        })
    }

    /// The Period playing now (the last one begun); the first of an on-demand MPD.
    fn current(&self) -> usize {
        if !self.dynamic {
            return 0;
        }
        self.periods
            .iter()
            .rposition(|p| p.start <= self.now_p)
            .unwrap_or(0)
    }

    /// The segments of `r` in Period `pi` within the window, appended to `out`.
    fn slots(
        &self,
        pi: usize,
        a: &AdaptationSet,
        r: &Representation,
        out: &mut Vec<Slot>,
    ) -> Result<(), ManifestError> {
        let p = &self.periods[pi];
        let base = join_base(&p.base, a.BaseURL.first().map(|b| b.base.as_str()))?;
        let base = join_base(&base, r.BaseURL.first().map(|b| b.base.as_str()))?;
        let id = r.id.clone().unwrap_or_default();
        let bandwidth = r.bandwidth.unwrap_or(0);
        let tmpl = merged_template([
            p.period.SegmentTemplate.as_ref(),
            a.SegmentTemplate.as_ref(),
            r.SegmentTemplate.as_ref(),
        ]);
        let list = r
            .SegmentList
            .as_ref()
            .or(a.SegmentList.as_ref())
            .or(p.period.SegmentList.as_ref());
        let addr = match (tmpl, list) {
            (Some(t), _) => Addressing::Template(Box::new(t)),
            (None, Some(l)) => Addressing::List(l),
            (None, None) => {
                return Err(err(format!(
                    "Representation {id:?}: only SegmentTemplate and SegmentList are monitored \
                     (SegmentBase, one indexed file per Representation, is not)"
                )))
            }
        };
        let (timescale, pto, duration, timeline, start_number, ato) = match &addr {
            Addressing::Template(t) => (
                t.timescale.unwrap_or(1),
                t.presentationTimeOffset.unwrap_or(0),
                t.duration,
                t.SegmentTimeline.as_ref(),
                t.startNumber.unwrap_or(1),
                t.availabilityTimeOffset.unwrap_or(0.0),
            ),
            Addressing::List(l) => (
                l.timescale.unwrap_or(1),
                0,
                l.duration.map(|d| d as f64),
                l.SegmentTimeline.as_ref(),
                1,
                0.0,
            ),
        };
        if timescale == 0 {
            return Err(err(format!("Representation {id:?}: timescale 0")));
        }
        let ts = timescale as f64;
        let ato = if ato.is_finite() { ato.max(0.0) } else { 0.0 };
        let element = |i: Option<&dash_mpd::Initialization>| {
            i.and_then(|i| i.sourceURL.as_deref().map(|u| (u, i.range.as_deref())))
                .map(|(u, rg)| {
                    Ok::<_, ManifestError>(InitRef {
                        uri: join(&base, u)?,
                        range: rg.and_then(range),
                    })
                })
                .transpose()
        };
        let init = match &addr {
            Addressing::Template(t) => match &t.initialization {
                Some(i) => Some(InitRef {
                    uri: join(&base, &substitute(i, &id, bandwidth, None, None)?)?,
                    range: None,
                }),
                None => element(t.Initialization.as_ref())?,
            },
            Addressing::List(l) => element(l.Initialization.as_ref())?,
        };
        // Presentation time of a media-time tick, and the window in ticks.
        let pres = |tick: f64| p.start + (tick - pto as f64) / ts;
        let tick = |pres_t: f64| (pres_t - p.start) * ts + pto as f64;
        let end_tick = p.end.map(tick);
        let computed = timeline.is_none();
        let early = if computed {
            -AVAILABILITY_GRACE_S
        } else {
            LISTED_EARLY_S
        };
        let hi_tick = tick(self.now_p + early + ato);
        let lo_tick = tick(self.lo);
        // (start tick, duration ticks, count, first number, explicit start)
        let mut runs: Vec<(f64, f64, f64, u64, bool)> = Vec::new();
        match (timeline, duration) {
            (Some(tl), _) => {
                let mut t_next = 0.0;
                let mut number = start_number;
                for (i, s) in tl.segments.iter().enumerate() {
                    if s.d == 0 {
                        return Err(err(format!(
                            "Representation {id:?}: a SegmentTimeline S with d=\"0\""
                        )));
                    }
                    let (t, explicit) = match s.t {
                        Some(t) => (t as f64, i > 0),
                        None => (t_next, false),
                    };
                    let d = s.d as f64;
                    let r = s.r.unwrap_or(0);
                    let count = if r >= 0 {
                        r as f64 + 1.0
                    } else {
                        let until = tl
                            .segments
                            .get(i + 1)
                            .and_then(|n| n.t.map(|t| t as f64))
                            .or(end_tick)
                            .unwrap_or(hi_tick.max(t));
                        if !until.is_finite() {
                            return Err(err(format!(
                                "Representation {id:?}: an open-ended S (r=\"-1\") in a Period \
                                 without an end"
                            )));
                        }
                        ((until - t) / d).ceil().max(0.0)
                    };
                    if let Some(n) = s.n {
                        number = n;
                    }
                    runs.push((t, d, count, number, explicit));
                    t_next = t + count * d;
                    number = number.saturating_add(count.min(1e15) as u64);
                }
            }
            (None, Some(d)) if d > 0.0 && d.is_finite() => {
                let count = match end_tick {
                    Some(e) => ((e - pto as f64) / d).ceil().max(0.0),
                    None if self.dynamic => f64::INFINITY,
                    None => {
                        return Err(err(format!(
                            "Representation {id:?}: an on-demand Period without a duration"
                        )))
                    }
                };
                runs.push((pto as f64, d, count, start_number, false));
            }
            (None, _) => match &addr {
                Addressing::List(l) if !l.segment_urls.is_empty() => {
                    return Err(err(format!(
                        "Representation {id:?}: a SegmentList without duration or timeline"
                    )))
                }
                _ => {
                    return Err(err(format!(
                        "Representation {id:?}: a SegmentTemplate with neither @duration nor \
                         SegmentTimeline"
                    )))
                }
            },
        }
        let first_of_period = out.len();
        let mut prev_end: Option<f64> = None;
        let mut index_base = 0.0f64;
        for (t, d, count, number, explicit) in runs {
            let gap = match (explicit, prev_end) {
                (true, Some(e)) => Some((t - e) / ts),
                _ => None,
            };
            // Segment j: [t + j d, t + (j+1) d). Keep those ending after the window's start and
            // available by now, that start before the Period ends.
            let mut j_lo = (((lo_tick - t) / d - 1.0).floor() + 1.0).max(0.0);
            let mut j_hi = ((hi_tick - t) / d - 1.0).floor().min(count - 1.0);
            if let Some(e) = end_tick {
                j_hi = j_hi.min(((e - t) / d).ceil() - 1.0);
            }
            if j_hi - j_lo + 1.0 > MAX_SEGMENTS as f64 {
                if !self.dynamic {
                    return Err(err(format!(
                        "more than {MAX_SEGMENTS} segments in an on-demand MPD"
                    )));
                }
                j_lo = j_hi - (MAX_SEGMENTS as f64 - 1.0);
            }
            let mut j = j_lo;
            while j <= j_hi {
                let s_tick = t + j * d;
                let n = number.saturating_add(j as u64);
                let (uri, seg_range) = match &addr {
                    Addressing::Template(tm) => {
                        let media = tm.media.as_deref().ok_or_else(|| {
                            err(format!(
                                "Representation {id:?}: a SegmentTemplate without @media"
                            ))
                        })?;
                        let rel = substitute(
                            media,
                            &id,
                            bandwidth,
                            Some(n),
                            Some(s_tick.round() as u64),
                        )?;
                        (join(&base, &rel)?, None)
                    }
                    Addressing::List(l) => {
                        let k = (index_base + j) as usize;
                        let Some(u) = l.segment_urls.get(k) else {
                            break;
                        };
                        let uri = match u.media.as_deref() {
                            Some(m) => join(&base, m)?,
                            None => base.clone(),
                        };
                        (uri, u.mediaRange.as_deref().and_then(range))
                    }
                };
                out.push(Slot {
                    start: pres(s_tick),
                    end: pres(s_tick + d),
                    uri,
                    range: seg_range,
                    init: init.clone(),
                    new_period: false,
                    gap_before: if j == 0.0 {
                        gap.filter(|g| g.abs() > GAP_TOLERANCE_S)
                    } else {
                        None
                    },
                });
                j += 1.0;
            }
            prev_end = Some(t + count * d);
            index_base += count;
        }
        // A new Period's first segment: timestamps and the initialisation may change there.
        if pi > 0 {
            if let Some(first) = out.get_mut(first_of_period) {
                first.new_period = (first.start - p.start).abs() < 1e-6;
            }
        }
        Ok(())
    }

    /// The SCTE 35 cues of the EventStreams, at their presentation times.
    fn cues(&self) -> Vec<(f64, HlsCue)> {
        let mut out = Vec::new();
        for p in &self.periods {
            for es in &p.period.event_streams {
                if !es.schemeIdUri.starts_with("urn:scte:scte35:") {
                    continue;
                }
                let ts = es.timescale.unwrap_or(1).max(1) as f64;
                let pto = es.presentationTimeOffset.unwrap_or(0) as f64;
                for ev in &es.event {
                    let at = p.start + (ev.presentationTime.unwrap_or(0) as f64 - pto) / ts;
                    let duration = ev.duration.map(|d| d as f64 / ts);
                    let section = ev
                        .signal
                        .iter()
                        .filter_map(|s| s.content.as_ref())
                        .map(|b| b.content.trim())
                        .chain(ev.content.as_deref().map(str::trim))
                        .find_map(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok());
                    let xml_out = ev
                        .signal
                        .iter()
                        .filter_map(|s| s.splice_info_section.as_ref())
                        .chain(&ev.splice_info_section)
                        .find_map(|s| s.splice_insert.as_ref())
                        .map(|i| i.out_of_network_indicator.unwrap_or(false));
                    let bin_out = section.as_deref().and_then(|b| {
                        let info = avmon_transport::scte35::parse(b).ok()?;
                        match info.command {
                            avmon_transport::scte35::Command::Insert(i) => Some(i.out_of_network),
                            _ => info.segmentation.first().map(|s| s.starts()),
                        }
                    });
                    out.push((
                        at,
                        HlsCue {
                            tag: "EventStream",
                            out: bin_out.or(xml_out).unwrap_or(duration.is_some()),
                            duration,
                            id: ev.id.clone(),
                            scte35: section,
                        },
                    ));
                }
            }
        }
        out
    }
}

enum Addressing<'a> {
    Template(Box<SegmentTemplate>),
    List(&'a SegmentList),
}

/// The effective SegmentTemplate of a Representation: attribute by attribute, the lowest level
/// that has it.
fn merged_template(levels: [Option<&SegmentTemplate>; 3]) -> Option<SegmentTemplate> {
    let mut out: Option<SegmentTemplate> = None;
    for t in levels.into_iter().flatten() {
        let o = out.get_or_insert_with(SegmentTemplate::default);
        macro_rules! take {
            ($($f:ident),*) => { $( if t.$f.is_some() { o.$f = t.$f.clone(); } )* };
        }
        take!(
            media,
            initialization,
            Initialization,
            startNumber,
            duration,
            timescale,
            presentationTimeOffset,
            availabilityTimeOffset,
            SegmentTimeline
        );
    }
    out
}

fn join(base: &Url, rel: &str) -> Result<Url, ManifestError> {
    base.join(rel.trim())
        .map_err(|e| err(format!("bad URL {rel:?}: {e}")))
}

fn join_base(base: &Url, rel: Option<&str>) -> Result<Url, ManifestError> {
    match rel.map(str::trim).filter(|r| !r.is_empty()) {
        Some(r) => join(base, r),
        None => Ok(base.clone()),
    }
}

/// `first-last` (bytes, inclusive), as `@mediaRange` and `@range` write it.
fn range(s: &str) -> Option<ByteRange> {
    let (a, b) = s.trim().split_once('-')?;
    let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
    (b >= a).then(|| ByteRange {
        offset: a,
        length: b - a + 1,
    })
}

/// A SegmentTemplate string with its identifiers replaced (ISO/IEC 23009-1, 5.3.9.4.4).
fn substitute(
    tmpl: &str,
    id: &str,
    bandwidth: u64,
    number: Option<u64>,
    time: Option<u64>,
) -> Result<String, ManifestError> {
    let mut out = String::with_capacity(tmpl.len() + 16);
    let mut rest = tmpl;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let j = after
            .find('$')
            .ok_or_else(|| err(format!("template {tmpl:?}: an unclosed $")))?;
        let ident = &after[..j];
        rest = &after[j + 1..];
        if ident.is_empty() {
            out.push('$');
            continue;
        }
        let (name, width) = match ident.split_once('%') {
            Some((n, f)) => {
                let w = f
                    .strip_prefix('0')
                    .and_then(|f| f.strip_suffix('d'))
                    .and_then(|w| w.parse::<usize>().ok())
                    .filter(|w| *w <= 32)
                    .ok_or_else(|| err(format!("template {tmpl:?}: bad format {f:?}")))?;
                (n, w)
            }
            None => (ident, 0),
        };
        let value = match name {
            "RepresentationID" => {
                out.push_str(id);
                continue;
            }
            "Bandwidth" => bandwidth,
            "Number" => number.ok_or_else(|| err(format!("template {tmpl:?}: $Number$ here")))?,
            "Time" => time.ok_or_else(|| err(format!("template {tmpl:?}: $Time$ here")))?,
            other => return Err(err(format!("template {tmpl:?}: unknown ${other}$"))),
        };
        out.push_str(&format!("{value:0width$}"));
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    const AST: f64 = 1_700_000_000.0;

    /// FFmpeg's dash muxer, live: one video and one audio Representation, a SegmentTimeline.
    fn live_mpd(start_number: u64, t: u64, r: u64, publish: &str) -> String {
        format!(
            r#"<?xml version="1.0" encoding="utf-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="urn:mpeg:dash:profile:isoff-live:2011"
  type="dynamic" minimumUpdatePeriod="PT1S" availabilityStartTime="2023-11-14T22:13:20Z"
  publishTime="{publish}" timeShiftBufferDepth="PT5.0S" maxSegmentDuration="PT1.0S">
 <Period id="0" start="PT0.0S">
  <AdaptationSet id="1" contentType="audio">
   <Representation id="1" mimeType="audio/mp4" codecs="mp4a.40.2" bandwidth="64000">
    <SegmentTemplate timescale="48000" initialization="init-stream$RepresentationID$.m4s"
      media="chunk-stream$RepresentationID$-$Number%05d$.m4s" startNumber="{start_number}">
     <SegmentTimeline><S t="{ta}" d="48000" r="{r}" /></SegmentTimeline>
    </SegmentTemplate>
   </Representation>
  </AdaptationSet>
  <AdaptationSet id="0" contentType="video" maxWidth="320" maxHeight="240">
   <Representation id="0" mimeType="video/mp4" codecs="avc1.f4000d" bandwidth="207880" width="320" height="240">
    <SegmentTemplate timescale="12800" initialization="init-stream$RepresentationID$.m4s"
      media="chunk-stream$RepresentationID$-$Number%05d$.m4s" startNumber="{start_number}">
     <SegmentTimeline><S t="{t}" d="12800" r="{r}" /></SegmentTimeline>
    </SegmentTemplate>
   </Representation>
  </AdaptationSet>
 </Period>
</MPD>"#,
            ta = t / 12800 * 48000,
        )
    }

    fn window(d: &Dash, mpd: &str, id: &str) -> Result<MediaWindow, ManifestError> {
        let v = Variant {
            index: 0,
            uri: url("http://o/live/live.mpd"),
            bandwidth: 0,
            name: id.into(),
            resolution: None,
            id: Some(id.into()),
            captions: false,
        };
        d.parse_media(mpd.as_bytes(), &url("http://o/live/live.mpd"), &v)
    }

    fn at(t: f64) -> Dash {
        Dash::with_clock(move || AST + t)
    }

    #[test]
    fn representations_are_variants_video_first() {
        let d = at(5.0);
        let m = d
            .parse_top(
                live_mpd(1, 0, 4, "2023-11-14T22:13:25Z").as_bytes(),
                &url("http://o/live/live.mpd"),
            )
            .unwrap();
        let Manifest::Variants(v) = m else {
            panic!("not variants")
        };
        let names: Vec<_> = v
            .iter()
            .map(|v| (v.index, v.name.as_str(), v.bandwidth))
            .collect();
        assert_eq!(names, [(0, "video/0", 207_880), (1, "audio/1", 64_000)]);
        assert_eq!(v[0].resolution.as_deref(), Some("320x240"));
        assert_eq!(v[0].id.as_deref(), Some("0"));
    }

    #[test]
    fn a_live_timeline_gives_its_available_segments_with_urls_and_init() {
        // Five 1 s segments listed; at 4.5 s after availabilityStartTime the fifth (4-5 s) is
        // listed and 0.5 s from available: taken (listed early), none beyond.
        let d = at(4.5);
        let w = window(&d, &live_mpd(1, 0, 4, "2023-11-14T22:13:25Z"), "0").unwrap();
        assert!(!w.ended);
        assert_eq!(w.target_duration, 1.0);
        let uris: Vec<_> = w.segments.iter().map(|s| s.uri.path().to_owned()).collect();
        assert_eq!(
            uris,
            (1..=5)
                .map(|n| format!("/live/chunk-stream0-{n:05}.m4s"))
                .collect::<Vec<_>>()
        );
        assert!(w.segments.iter().all(|s| (s.duration - 1.0).abs() < 1e-9));
        let init = w.segments[0].init.as_ref().unwrap();
        assert_eq!(init.uri.as_str(), "http://o/live/init-stream0.m4s");
        let doc = w.doc.unwrap();
        assert_eq!(doc.availability_start, Some(AST));
        assert_eq!(doc.update_period, Some(1.0));
        assert_eq!(doc.publish, Some(AST + 5.0));

        // At 2.2 s, segments ending after 3.2 s are not yet available.
        let d = at(2.2);
        let w = window(&d, &live_mpd(1, 0, 4, "2023-11-14T22:13:25Z"), "0").unwrap();
        assert_eq!(w.segments.len(), 3, "{:?}", w.segments);
    }

    #[test]
    fn sequence_numbers_follow_segments_across_reloads_and_count_what_left() {
        let d = at(5.0);
        let w1 = window(&d, &live_mpd(1, 0, 4, "2023-11-14T22:13:25Z"), "0").unwrap();
        let s1: Vec<u64> = w1.segments.iter().map(|s| s.sequence).collect();
        assert_eq!(s1, [0, 1, 2, 3, 4]);
        // The window slid by two: the same segments keep their numbers, two new follow.
        let d2 = Dash {
            now: Arc::new(|| AST + 7.0),
            known: d.known.clone(),
        };
        let w2 = window(&d2, &live_mpd(3, 2 * 12800, 4, "2023-11-14T22:13:27Z"), "0").unwrap();
        let s2: Vec<u64> = w2.segments.iter().map(|s| s.sequence).collect();
        assert_eq!(s2, [2, 3, 4, 5, 6]);
        // Much later, nothing overlaps: the segments in between are counted as gone.
        let d3 = Dash {
            now: Arc::new(|| AST + 30.0),
            known: d.known.clone(),
        };
        let w3 = window(
            &d3,
            &live_mpd(26, 25 * 12800, 4, "2023-11-14T22:13:50Z"),
            "0",
        )
        .unwrap();
        assert_eq!(w3.first_sequence, 25);
        // A timeline rewritten under the last one (segments at other times): a renumbering.
        let d4 = Dash {
            now: Arc::new(|| AST + 31.0),
            known: d.known.clone(),
        };
        let w4 = window(&d4, &live_mpd(1, 288_000, 8, "2023-11-14T22:13:51Z"), "0").unwrap();
        assert_eq!(w4.first_sequence, 29 + RENUMBER);
    }

    #[test]
    fn a_template_with_duration_is_computed_from_the_clock() {
        let mpd = r#"<MPD type="dynamic" availabilityStartTime="2023-11-14T22:13:20Z"
          timeShiftBufferDepth="PT6S"><BaseURL>media/</BaseURL>
          <Period start="PT0S"><AdaptationSet mimeType="video/mp4">
          <SegmentTemplate timescale="90000" duration="180000" startNumber="10"
            media="$RepresentationID$/$Bandwidth$/seg-$Number$.mp4" initialization="$RepresentationID$/init.mp4"/>
          <Representation id="hd" bandwidth="3000000"/></AdaptationSet></Period></MPD>"#;
        // 101 s in: segments of 2 s; the last available for a second ends at 100 s (number
        // 10 + 49); the next, ending at 102 s, is not yet.
        let w = window(&at(101.0), mpd, "hd").unwrap();
        let last = w.segments.last().unwrap();
        assert_eq!(
            last.uri.as_str(),
            "http://o/live/media/hd/3000000/seg-59.mp4"
        );
        // The window reaches back 6 s (to 95 s): segments ending at 96, 98 and 100 s.
        assert_eq!(w.segments.len(), 3, "{:?}", w.segments);
        assert_eq!(w.target_duration, 2.0);
        assert_eq!(
            w.segments[0].init.as_ref().unwrap().uri.as_str(),
            "http://o/live/media/hd/init.mp4"
        );
    }

    #[test]
    fn time_templates_gaps_overlaps_and_open_repeats() {
        let mpd = r#"<MPD type="static" mediaPresentationDuration="PT20S">
          <Period><AdaptationSet contentType="audio"><Representation id="a" bandwidth="1">
          <SegmentTemplate timescale="1000" media="a-$Time$.m4s">
          <SegmentTimeline><S t="0" d="2000" r="1"/><S t="5000" d="2000"/><S t="6500" d="1500" r="-1"/>
          </SegmentTimeline></SegmentTemplate></Representation></AdaptationSet></Period></MPD>"#;
        let w = window(&at(0.0), mpd, "a").unwrap();
        assert!(w.ended);
        let names: Vec<_> = w
            .segments
            .iter()
            .map(|s| s.uri.path().trim_start_matches("/live/").to_owned())
            .collect();
        // r=-1 repeats to the end of the presentation (20 s): 6.5, 8, ..., 18.5.
        assert_eq!(
            names[..5],
            [
                "a-0.m4s",
                "a-2000.m4s",
                "a-5000.m4s",
                "a-6500.m4s",
                "a-8000.m4s"
            ]
        );
        assert_eq!(names.last().unwrap(), "a-18500.m4s");
        let gaps: Vec<_> = w.segments.iter().map(|s| s.gap_before_s).collect();
        assert_eq!(gaps[2], Some(1.0), "4 s to 5 s is a gap");
        assert_eq!(gaps[3], Some(-0.5), "6.5 s inside 5-7 s is an overlap");
        assert!(gaps
            .iter()
            .enumerate()
            .all(|(i, g)| i == 2 || i == 3 || g.is_none()));
    }

    #[test]
    fn periods_are_followed_and_mark_a_discontinuity() {
        let mpd = r#"<MPD type="static" mediaPresentationDuration="PT8S">
          <Period id="p1" duration="PT4S"><AdaptationSet contentType="video">
            <SegmentTemplate timescale="1" duration="2" media="p1-$Number$.m4s" initialization="p1-init.m4s"/>
            <Representation id="v" bandwidth="1"/></AdaptationSet></Period>
          <Period id="p2"><AdaptationSet contentType="video">
            <SegmentTemplate timescale="1" duration="2" media="p2-$Number$.m4s" initialization="p2-init.m4s"/>
            <Representation id="v" bandwidth="1"/></AdaptationSet></Period></MPD>"#;
        let w = window(&at(0.0), mpd, "v").unwrap();
        let s: Vec<_> = w
            .segments
            .iter()
            .map(|s| {
                (
                    s.uri.path().trim_start_matches("/live/").to_owned(),
                    s.discontinuity,
                    s.sequence,
                )
            })
            .collect();
        assert_eq!(
            s,
            [
                ("p1-1.m4s".to_owned(), false, 0),
                ("p1-2.m4s".to_owned(), false, 1),
                ("p2-1.m4s".to_owned(), true, 2),
                ("p2-2.m4s".to_owned(), false, 3)
            ]
        );
        assert_eq!(
            w.segments[2].init.as_ref().unwrap().uri.path(),
            "/live/p2-init.m4s"
        );
    }

    #[test]
    fn scte35_event_streams_are_cues_on_their_segment() {
        let section =
            avmon_transport::scte35::write::splice_insert(7, true, Some(900_000), Some(2_700_000));
        let b64 = base64::engine::general_purpose::STANDARD.encode(&section);
        let mpd = r#"<MPD type="static" mediaPresentationDuration="PT10S">
          <Period><EventStream schemeIdUri="urn:scte:scte35:2014:xml+bin" timescale="10">
            <Event presentationTime="45" duration="300" id="7"><Signal><Binary>B64</Binary></Signal></Event>
          </EventStream>
          <AdaptationSet contentType="video"><SegmentTemplate duration="2" media="$Number$.ts"/>
          <Representation id="v" bandwidth="1"/></AdaptationSet></Period></MPD>"#
            .replace("B64", &b64);
        let w = window(&at(0.0), &mpd, "v").unwrap();
        let cued: Vec<_> = w.segments.iter().map(|s| s.cue.is_some()).collect();
        assert_eq!(
            cued,
            [false, false, true, false, false],
            "4.5 s is in the third segment"
        );
        let c = w.segments[2].cue.as_ref().unwrap();
        assert_eq!(
            (c.tag, c.out, c.duration, c.id.as_deref()),
            ("EventStream", true, Some(30.0), Some("7"))
        );
        assert_eq!(c.scte35.as_deref(), Some(section.as_slice()));
    }

    #[test]
    fn hostile_and_unsupported_mpds_are_refused_with_a_reason() {
        let d = at(0.0);
        let e = |s: &str| window(&d, s, "v").unwrap_err().0;
        assert!(e("<html>oops</html>").contains("not a DASH MPD"));
        assert!(e("\u{feff}<MPD").contains("not a valid DASH MPD"));
        let base = r#"<MPD type="static" mediaPresentationDuration="PT10S"><Period><AdaptationSet>
            <Representation id="v"><BaseURL>v.mp4</BaseURL><SegmentBase indexRange="0-99"/></Representation>
            </AdaptationSet></Period></MPD>"#;
        assert!(e(base).contains("SegmentBase"), "{}", e(base));
        let huge = r#"<MPD type="static" mediaPresentationDuration="P999999D"><Period><AdaptationSet>
            <SegmentTemplate duration="1" media="$Number$.m4s"/><Representation id="v"/>
            </AdaptationSet></Period></MPD>"#;
        assert!(e(huge).contains("more than"), "{}", e(huge));
        let zero = r#"<MPD type="static" mediaPresentationDuration="PT10S"><Period><AdaptationSet>
            <SegmentTemplate media="$Number$.m4s"><SegmentTimeline><S d="0" r="-1"/></SegmentTimeline>
            </SegmentTemplate><Representation id="v"/></AdaptationSet></Period></MPD>"#;
        assert!(e(zero).contains("d=\"0\""), "{}", e(zero));
        assert!(e(&zero.replace("id=\"v\"", "id=\"w\"")).contains("no longer has"));
        // A live MPD with a repeat of 10^12: only the window is expanded.
        let big = r#"<MPD type="dynamic" availabilityStartTime="2023-11-14T22:13:20Z"><Period>
            <AdaptationSet><SegmentTemplate media="$Number$.m4s"><SegmentTimeline>
            <S t="0" d="1" r="1000000000000"/></SegmentTimeline></SegmentTemplate>
            <Representation id="v"/></AdaptationSet></Period></MPD>"#;
        let w = window(&at(1000.0), big, "v").unwrap();
        assert_eq!(w.segments.len(), LOOKBACK_S as usize + 1);
    }

    #[test]
    fn template_identifiers() {
        assert_eq!(
            substitute(
                "$RepresentationID$-$Number%05d$-$Time$-$$-$Bandwidth$",
                "v1",
                5,
                Some(42),
                Some(7)
            )
            .unwrap(),
            "v1-00042-7-$-5"
        );
        assert!(substitute("$Nope$", "", 0, None, None).is_err());
        assert!(substitute("$Number", "", 0, Some(1), None).is_err());
        assert!(substitute("$Number%5x$", "", 0, Some(1), None).is_err());
    }
}
