//! `audio.dropout`: a short gap or discontinuity in otherwise continuous audio.
//!
//! Three causes, each an instant event (`Begin` at its onset, `End` at its end, no minimum
//! duration):
//!
//! - **`timestamp_gap`**: a buffer starts more than `min_gap_ms` (10 ms) after the previous one
//!   ended, and less than `max_gap_ms` (2000 ms, where `audio.loss` takes over) after it. The event
//!   spans the missing time.
//! - **`zeros`**: every channel is exactly digital zero (|x| < 1e-7) for `min_gap_ms` to
//!   `max_zeros_ms` (500 ms), right after audio whose level (loudest channel, ~50 ms average) was
//!   above `loud_db` (−50 dBFS). Longer runs of zeros are silence (`audio.silence`), and a quiet
//!   fade to zero is not a dropout. The event spans the zeros, exact to a millisecond.
//! - **`click`**: a sample-to-sample jump of at least `min_jump` (0.05 of full scale) that is at
//!   least `click_ratio` (8) times the largest jump of that channel 2–4 ms before *and* after it,
//!   inside sound (not after near-silence: an attack after silence is an onset, not a click). Both
//!   sides count, so a drum hit or a plucked note, whose slopes stay steep after the attack, is not
//!   a click; a lossy codec spreads a click over a few samples, so the 1 ms around it are left out
//!   of the comparison. The event spans the millisecond of the jump.
//!
//! The audio is looked at in 1 ms blocks (largest magnitude and largest jump per channel, kept in
//! vector lanes), so click and zero-run times are exact to a millisecond; a click
//! is decided 4 ms after it.
//!
//! Occurrences less than `merge_ms` (500 ms) apart are merged into one event (a rectangular pulse
//! makes two jumps; a failing link makes a burst of them), reported once no other follows within
//! `merge_ms`. Details: `cause` (of the first occurrence), `count` (occurrences merged),
//! `duration_ms` (of the event), and for clicks `jump` (the largest, full scale = 1) and `channel`.

use avmon_core::{kinds, AudioBuffer, Detector, Finding, Findings, Severity, MAX_AUDIO_CHANNELS};
use serde::{Deserialize, Serialize};

use crate::check;
use crate::episode::put;
use crate::windows::power_peak;

/// Settings of the dropout detector.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DropoutConfig {
    /// Run this detector.
    pub enabled: bool,
    /// Severity of the findings (and so of the alerts).
    pub severity: Severity,
    /// Shortest timestamp gap or zero run reported, in milliseconds.
    pub min_gap_ms: f64,
    /// Longest timestamp gap reported, in milliseconds (longer: `audio.loss`).
    pub max_gap_ms: f64,
    /// Longest run of digital zeros reported, in milliseconds (longer: silence).
    pub max_zeros_ms: f64,
    /// Level (dBFS RMS, loudest channel) the audio must have had before a run of zeros.
    pub loud_db: f64,
    /// Smallest sample-to-sample jump that may be a click (full scale = 1).
    pub min_jump: f64,
    /// A click's jump is at least this many times the channel's jumps around it.
    pub click_ratio: f64,
    /// Occurrences closer than this (milliseconds) make one event.
    pub merge_ms: f64,
}

impl Default for DropoutConfig {
    fn default() -> Self {
        DropoutConfig {
            enabled: true,
            severity: Severity::Minor,
            min_gap_ms: 10.0,
            max_gap_ms: 2000.0,
            max_zeros_ms: 500.0,
            loud_db: -50.0,
            min_jump: 0.05,
            click_ratio: 8.0,
            merge_ms: 500.0,
        }
    }
}

impl DropoutConfig {
    /// Push one message per invalid setting, prefixed with `path`.
    pub fn validate(&self, path: &str, errors: &mut Vec<String>) {
        check::within(path, "min_gap_ms", self.min_gap_ms, 1.0, 1000.0, errors);
        check::within(path, "max_gap_ms", self.max_gap_ms, 1.0, 60_000.0, errors);
        if self.max_gap_ms <= self.min_gap_ms {
            errors.push(format!(
                "{path}.max_gap_ms: must be above min_gap_ms = {} (got {})",
                self.min_gap_ms, self.max_gap_ms
            ));
        }
        check::within(
            path,
            "max_zeros_ms",
            self.max_zeros_ms,
            1.0,
            10_000.0,
            errors,
        );
        check::within(path, "loud_db", self.loud_db, -120.0, 0.0, errors);
        check::within(path, "min_jump", self.min_jump, 0.001, 2.0, errors);
        check::within(path, "click_ratio", self.click_ratio, 2.0, 1000.0, errors);
        check::within(path, "merge_ms", self.merge_ms, 0.0, 60_000.0, errors);
    }
}

/// A sample this small is digital zero.
const ZERO: f32 = 1e-7;
/// Blocks of context on each side of a click candidate (2–4 ms), and the candidate's offset from
/// the newest block.
const CONTEXT: usize = 4;
const RING: usize = 2 * CONTEXT + 1;
/// Peak level below which the audio before a jump counts as near-silence (−60 dBFS).
const QUIET_PEAK: f32 = 0.001;

#[derive(Clone, Copy, Debug)]
struct Block {
    t: f64,
    /// Per channel: largest |x| and largest |x[i] − x[i−1]|.
    peak: [f32; MAX_AUDIO_CHANNELS],
    jump: [f32; MAX_AUDIO_CHANNELS],
}

impl Block {
    const EMPTY: Block = Block {
        t: 0.0,
        peak: [0.0; MAX_AUDIO_CHANNELS],
        jump: [0.0; MAX_AUDIO_CHANNELS],
    };
}

/// An event being merged.
#[derive(Clone, Debug)]
struct Pending {
    start: f64,
    end: f64,
    cause: &'static str,
    count: u64,
    jump: f32,
    channel: usize,
}

/// The dropout detector's state.
pub struct DropoutDetector {
    severity: Severity,
    min_gap: f64,
    max_gap: f64,
    max_zeros: f64,
    loud_power: f64,
    min_jump: f32,
    ratio: f32,
    merge: f64,
    sample_rate: u32,
    channels: usize,
    block_len: usize,
    expected_t: f64,
    /// The block in progress: filled samples, sums.
    filled: usize,
    cur: Block,
    sum_sq: [f64; MAX_AUDIO_CHANNELS],
    /// Last sample of each channel (for the jump into the next buffer).
    last: [f32; MAX_AUDIO_CHANNELS],
    have_last: bool,
    /// The last blocks, oldest first at `ring_next`; how many are valid.
    ring: [Block; RING],
    ring_next: usize,
    ring_valid: usize,
    /// Loudest channel's mean square, averaged over ~50 ms.
    level: f64,
    /// A run of zero blocks in progress: its start, and the level before it.
    zeros_since: Option<(f64, f64)>,
    pending: Option<Pending>,
    /// A reset happened: the pending event goes out at the next call, whatever its time.
    flush_all: bool,
    period_events: u64,
}

impl DropoutDetector {
    pub fn new(cfg: &DropoutConfig) -> Self {
        DropoutDetector {
            severity: cfg.severity,
            min_gap: cfg.min_gap_ms / 1000.0,
            max_gap: cfg.max_gap_ms / 1000.0,
            max_zeros: cfg.max_zeros_ms / 1000.0,
            loud_power: 10f64.powf(cfg.loud_db / 10.0),
            min_jump: cfg.min_jump as f32,
            ratio: cfg.click_ratio as f32,
            merge: cfg.merge_ms / 1000.0,
            sample_rate: 0,
            channels: 0,
            block_len: 1,
            expected_t: f64::NAN,
            filled: 0,
            cur: Block::EMPTY,
            sum_sq: [0.0; MAX_AUDIO_CHANNELS],
            last: [0.0; MAX_AUDIO_CHANNELS],
            have_last: false,
            ring: [Block::EMPTY; RING],
            ring_next: 0,
            ring_valid: 0,
            level: 0.0,
            zeros_since: None,
            pending: None,
            flush_all: false,
            period_events: 0,
        }
    }

    /// Forget the audio's continuity (format change, gap, reconnect).
    fn restart(&mut self) {
        self.filled = 0;
        self.have_last = false;
        self.ring_valid = 0;
        self.level = 0.0;
        self.zeros_since = None;
    }

    /// Something happened over `[start, end)`.
    fn occurred(
        &mut self,
        start: f64,
        end: f64,
        cause: &'static str,
        jump: f32,
        channel: usize,
        out: &mut Findings,
    ) {
        if let Some(p) = &mut self.pending {
            if start - p.end <= self.merge {
                p.end = p.end.max(end);
                p.count += 1;
                if jump > p.jump {
                    p.jump = jump;
                    p.channel = channel;
                }
                return;
            }
        }
        self.emit(out);
        self.pending = Some(Pending {
            start,
            end,
            cause,
            count: 1,
            jump,
            channel,
        });
    }

    fn emit(&mut self, out: &mut Findings) {
        let Some(p) = self.pending.take() else { return };
        self.period_events += 1;
        let mut d = avmon_core::Details::new();
        d.insert("cause".into(), p.cause.into());
        d.insert("count".into(), p.count.into());
        put(&mut d, "duration_ms", (p.end - p.start) * 1000.0);
        if p.jump > 0.0 {
            put(&mut d, "jump", f64::from(p.jump));
            d.insert("channel".into(), p.channel.into());
        }
        out.push(Finding::begin(
            kinds::AUDIO_DROPOUT,
            self.severity,
            p.start,
            d.clone(),
        ));
        out.push(Finding::end(kinds::AUDIO_DROPOUT, self.severity, p.end, d));
    }

    /// Emit the pending event once nothing can merge into it any more (media time `now`).
    fn settle(&mut self, now: f64, out: &mut Findings) {
        let due = self.flush_all
            || self
                .pending
                .as_ref()
                .is_some_and(|p| now - p.end > self.merge);
        self.flush_all = false;
        if due {
            self.emit(out);
        }
    }

    fn finish_block(&mut self, out: &mut Findings) {
        let ch = self.channels;
        let block_s = self.filled as f64 / f64::from(self.sample_rate);
        let block = self.cur;
        let power = self.sum_sq[..ch]
            .iter()
            .fold(0.0f64, |m, &s| m.max(s / self.filled as f64));
        self.filled = 0;
        self.sum_sq = [0.0; MAX_AUDIO_CHANNELS];

        // Zeros.
        let zero = block.peak[..ch].iter().all(|&p| p < ZERO);
        match (zero, self.zeros_since) {
            (true, None) => self.zeros_since = Some((block.t, self.level)),
            (false, Some((since, level))) => {
                self.zeros_since = None;
                let len = block.t - since;
                if level >= self.loud_power
                    && len >= self.min_gap - 1e-9
                    && len <= self.max_zeros + 1e-9
                {
                    self.occurred(since, block.t, "zeros", 0.0, 0, out);
                }
            }
            _ => {}
        }
        // ~50 ms exponential average of the loudest channel's power (not updated by zeros, so
        // the level before a run is kept).
        if !zero {
            let a = (block_s / 0.05).min(1.0);
            self.level += a * (power - self.level);
        }

        // Clicks: the middle block of the ring against 2–4 ms either side.
        self.ring[self.ring_next] = block;
        self.ring_next = (self.ring_next + 1) % RING;
        self.ring_valid = (self.ring_valid + 1).min(RING);
        if self.ring_valid < RING {
            return;
        }
        let at = |k: usize| &self.ring[(self.ring_next + k) % RING];
        let mid = at(CONTEXT);
        for c in 0..ch {
            let j = mid.jump[c];
            if j < self.min_jump {
                continue;
            }
            let mut before_peak = 0.0f32;
            let mut context = 0.0f32;
            for k in (0..CONTEXT - 1).chain(CONTEXT + 2..RING) {
                context = context.max(at(k).jump[c]);
                if k < CONTEXT {
                    before_peak = before_peak.max(at(k).peak[c]);
                }
            }
            if before_peak >= QUIET_PEAK && j >= self.ratio * context {
                let t = mid.t;
                self.occurred(t, t + block_s, "click", j, c, out);
                break;
            }
        }
    }
}

/// Largest jump between consecutive samples of `seg`, `prev` being the sample before it; in lanes,
/// as [`power_peak`] (a maximum is exact in any order).
fn max_step(seg: &[f32], prev: f32) -> f32 {
    const LANES: usize = 8;
    let Some(&first) = seg.first() else {
        return 0.0;
    };
    let (after, before) = (&seg[1..], &seg[..seg.len() - 1]);
    let (a, b) = (after.chunks_exact(LANES), before.chunks_exact(LANES));
    let tail = a
        .remainder()
        .iter()
        .zip(b.remainder())
        .fold((first - prev).abs(), |m, (x, y)| m.max((x - y).abs()));
    let mut lanes = [0.0f32; LANES];
    for (x, y) in a.zip(b) {
        let (x, y): (&[f32; LANES], &[f32; LANES]) = (
            x.try_into().expect("a chunk"),
            y.try_into().expect("a chunk"),
        );
        for i in 0..LANES {
            lanes[i] = lanes[i].max((x[i] - y[i]).abs());
        }
    }
    lanes.iter().fold(tail, |m, &v| m.max(v))
}

impl Detector for DropoutDetector {
    fn kind(&self) -> &'static str {
        kinds::AUDIO_DROPOUT
    }

    fn on_audio(&mut self, buf: &AudioBuffer<'_>, out: &mut Findings) {
        self.settle(buf.t, out);
        let channels = buf.channels().min(MAX_AUDIO_CHANNELS);
        if buf.sample_rate == 0 || channels == 0 {
            return;
        }
        let rate = f64::from(buf.sample_rate);
        if buf.sample_rate != self.sample_rate || channels != self.channels {
            self.sample_rate = buf.sample_rate;
            self.channels = channels;
            self.block_len = ((rate / 1000.0).round() as usize).max(1);
            self.restart();
        } else {
            let gap = buf.t - self.expected_t;
            if gap > self.min_gap && gap < self.max_gap {
                let start = self.expected_t;
                self.occurred(start, buf.t, "timestamp_gap", 0.0, 0, out);
            }
            if gap.abs() > self.block_len as f64 / rate {
                self.restart();
            }
        }
        let planes = &buf.planes[..channels];
        let samples = planes.iter().map(|p| p.len()).min().unwrap_or(0);
        if samples == 0 {
            return;
        }
        self.expected_t = buf.t + samples as f64 / rate;
        if !self.have_last {
            for (l, p) in self.last.iter_mut().zip(planes) {
                *l = p[0];
            }
            self.have_last = true;
        }

        let mut pos = 0;
        while pos < samples {
            if self.filled == 0 {
                self.cur.t = buf.t + pos as f64 / rate;
                self.cur.peak = [0.0; MAX_AUDIO_CHANNELS];
                self.cur.jump = [0.0; MAX_AUDIO_CHANNELS];
            }
            let take = (self.block_len - self.filled).min(samples - pos);
            for (c, plane) in planes.iter().enumerate() {
                let seg = &plane[pos..pos + take];
                let (sq, peak) = power_peak(seg);
                let jump = max_step(seg, self.last[c]);
                self.cur.peak[c] = self.cur.peak[c].max(peak);
                self.cur.jump[c] = self.cur.jump[c].max(jump);
                self.sum_sq[c] += f64::from(sq);
                self.last[c] = seg[take - 1];
            }
            self.filled += take;
            pos += take;
            if self.filled == self.block_len {
                self.finish_block(out);
            }
        }
    }

    fn on_tick(&mut self, now: f64, out: &mut Findings) {
        self.settle(now, out);
    }

    fn take_metrics(&mut self, put: &mut dyn FnMut(&'static str, f64)) {
        if self.sample_rate > 0 {
            put("dropouts", std::mem::take(&mut self.period_events) as f64);
        }
    }

    fn reset(&mut self) {
        self.restart();
        self.sample_rate = 0;
        self.expected_t = f64::NAN;
        self.flush_all = self.pending.is_some();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use avmon_core::FindingEdge::{Begin, End};

    fn tone(n: usize, amp: f32, hz: f32) -> Vec<f32> {
        (0..n)
            .map(|i| amp * (i as f32 * hz * std::f32::consts::TAU / SR as f32).sin())
            .collect()
    }

    /// Music-like content: two tones plus noise, with level steps, and drum-like bursts (a noise
    /// burst with an abrupt attack and an exponential decay) after near-silence.
    fn music(seconds: f64, rng: &mut Rng) -> Vec<f32> {
        let n = secs(seconds);
        let mut v: Vec<f32> = (0..n)
            .map(|i| {
                let t = i as f32 / SR as f32;
                let gain = if (t as usize) % 2 == 0 { 1.0 } else { 0.25 };
                gain * (0.2 * (t * 330.0 * std::f32::consts::TAU).sin()
                    + 0.1 * (t * 2_500.0 * std::f32::consts::TAU).sin()
                    + 0.05 * rng.signed())
            })
            .collect();
        // Drum hits: 50 ms of near-silence, then an attack.
        for k in 1..(seconds as usize) {
            let s = secs(k as f64 + 0.5);
            v[s - secs(0.05)..s].iter_mut().for_each(|x| *x *= 0.001);
            for i in 0..secs(0.2) {
                v[s + i] += 0.8 * (-(i as f32) / 1500.0).exp() * rng.signed();
            }
        }
        v
    }

    fn one_event(seen: &[Seen], cause: &str, start: f64, end: f64, tol: f64) {
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!((seen[0].f.edge, seen[1].f.edge), (Begin, End));
        assert_eq!(seen[0].f.details["cause"], cause);
        assert!((seen[0].f.t - start).abs() <= tol, "start {}", seen[0].f.t);
        assert!((seen[1].f.t - end).abs() <= tol, "end {}", seen[1].f.t);
    }

    #[test]
    fn a_run_of_zeros_inside_sound() {
        let mut ch = tone(secs(3.0), 0.3, 440.0);
        ch[secs(1.0)..secs(1.1)].fill(0.0);
        for sizes in [&[1024][..], &[1000, 7, 333, 4097]] {
            let mut d = DropoutDetector::new(&DropoutConfig::default());
            let seen = run_audio(&mut d, &[ch.clone(), ch.clone()], SR, sizes);
            one_event(&seen, "zeros", 1.0, 1.1, 0.0011);
            assert_eq!(seen[0].f.details["count"], 1);
        }
    }

    #[test]
    fn long_silence_quiet_fades_and_zeros_on_one_channel_are_not_dropouts() {
        let mut a = tone(secs(4.0), 0.3, 440.0);
        a[secs(1.0)..secs(2.0)].fill(0.0); // 1 s: silence, not a dropout
        let mut b = tone(secs(4.0), 0.002, 440.0);
        b[secs(1.0)..secs(1.1)].fill(0.0); // after −57 dBFS audio
        let mut c = tone(secs(4.0), 0.3, 440.0);
        c[secs(1.0)..secs(1.1)].fill(0.0);
        for chans in [
            vec![a.clone(), a],
            vec![b.clone(), b],
            vec![c, tone(secs(4.0), 0.3, 440.0)],
        ] {
            let mut d = DropoutDetector::new(&DropoutConfig::default());
            assert!(run_audio(&mut d, &chans, SR, &[1024]).is_empty());
        }
    }

    #[test]
    fn a_click_in_a_tone_is_found_and_both_edges_merge() {
        let mut ch = tone(secs(3.0), 0.1, 880.0);
        for x in &mut ch[secs(1.5)..secs(1.505)] {
            *x += 0.5;
        }
        let mut d = DropoutDetector::new(&DropoutConfig::default());
        let seen = run_audio(&mut d, &[ch.clone(), ch], SR, &[1024]);
        one_event(&seen, "click", 1.5, 1.506, 0.0011);
        assert_eq!(seen[0].f.details["count"], 2);
        let jump = seen[0].f.details["jump"].as_f64().unwrap();
        assert!((jump - 0.5).abs() < 0.02, "{jump}");
    }

    #[test]
    fn music_like_content_with_steps_and_attacks_has_no_false_clicks() {
        let mut rng = Rng::new(11);
        let ch = [music(10.0, &mut rng), music(10.0, &mut rng)];
        let mut d = DropoutDetector::new(&DropoutConfig::default());
        let seen = run_audio(&mut d, &ch, SR, &[1024]);
        assert!(seen.is_empty(), "{seen:?}");
        // Loud white noise, its level stepping up and down.
        let noise: Vec<f32> = (0..secs(6.0))
            .map(|i| if (i / SR as usize) % 2 == 0 { 0.9 } else { 0.05 } * rng.signed())
            .collect();
        let mut d = DropoutDetector::new(&DropoutConfig::default());
        assert!(run_audio(&mut d, &[noise], SR, &[1024]).is_empty());
        // A click in that music (in a softer passage: it must stand out from the noise's own
        // sample-to-sample jumps by click_ratio) is still found.
        let mut m = music(5.0, &mut rng);
        m[secs(3.2)] += 0.6;
        let mut d = DropoutDetector::new(&DropoutConfig::default());
        let seen = run_audio(&mut d, &[m], SR, &[1024]);
        one_event(&seen, "click", 3.2, 3.201, 0.0011);
    }

    #[test]
    fn a_timestamp_gap_spans_the_missing_time() {
        // 375 Hz: exactly 8 cycles per 1024-sample buffer, so the repeated buffer joins smoothly.
        let tone_buf = tone(1024, 0.3, 375.0);
        let planes: [&[f32]; 1] = [&tone_buf];
        let mut d = DropoutDetector::new(&DropoutConfig::default());
        let mut out = Vec::new();
        let dur = 1024.0 / f64::from(SR);
        let mut t = 0.0;
        for i in 0..200 {
            if i == 50 {
                t += 0.08; // 80 ms missing
            }
            if i == 120 {
                t += 3.0; // audio.loss territory
            }
            d.on_audio(
                &AudioBuffer {
                    t,
                    sample_rate: SR,
                    planes: &planes,
                    layout: 0,
                },
                &mut out,
            );
            t += dur;
        }
        d.on_tick(t + 1.0, &mut out);
        assert_eq!(out.len(), 2, "only the 80 ms gap: {out:?}");
        assert_eq!(out[0].details["cause"], "timestamp_gap");
        assert_t(out[0].t, 50.0 * dur);
        assert_t(out[1].t, 50.0 * dur + 0.08);
    }

    #[test]
    fn pending_event_goes_out_after_a_reset() {
        let mut ch = tone(secs(2.0), 0.3, 440.0);
        ch[secs(1.9)..secs(1.95)].fill(0.0);
        let mut d = DropoutDetector::new(&DropoutConfig::default());
        let seen = run_audio(&mut d, &[ch], SR, &[1024]);
        assert!(seen.is_empty(), "not settled yet");
        d.reset();
        let mut out = Vec::new();
        d.on_tick(0.0, &mut out);
        assert_eq!(out.len(), 2);
        let mut m = Vec::new();
        d.take_metrics(&mut |k, v| m.push((k, v)));
        assert_eq!(m, []); // no format after the reset
    }

    #[test]
    fn validate_names_each_bad_field() {
        let cfg = DropoutConfig {
            min_gap_ms: 0.0,
            max_gap_ms: 0.5,
            click_ratio: 1.0,
            ..DropoutConfig::default()
        };
        let mut errors = Vec::new();
        cfg.validate("dropout", &mut errors);
        assert_eq!(
            errors,
            [
                "dropout.min_gap_ms: must be between 1 and 1000 (got 0)",
                "dropout.max_gap_ms: must be between 1 and 60000 (got 0.5)",
                "dropout.click_ratio: must be between 2 and 1000 (got 1)",
            ]
        );
    }

    #[test]
    fn max_step_is_the_largest_jump_from_the_sample_before() {
        let mut rng = Rng::new(5);
        for len in 0..40 {
            let seg: Vec<f32> = (0..len).map(|_| rng.signed()).collect();
            let prev = rng.signed();
            let plain = (0..len).fold(0.0f32, |m, i| {
                let before = if i == 0 { prev } else { seg[i - 1] };
                m.max((seg[i] - before).abs())
            });
            assert_eq!(max_step(&seg, prev), plain, "{len} samples");
        }
    }
}
