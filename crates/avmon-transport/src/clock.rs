//! The stream's own clock: seconds since its first PCR, for inputs that have no arrival time of
//! their own (a file), and for media times in every case.
//!
//! A PCR is, by definition, the time its byte should arrive at the decoder (ISO/IEC 13818-1
//! §2.4.2.2), so the PCRs of one PID are a clock. The first PID that carries a PCR drives it.
//!
//! Between two PCRs, time is estimated from the bytes, two ways:
//! - at the rate the last two PCRs measured, but by no more than the interval between them: in
//!   a variable-rate stream a key frame's burst of packets would otherwise carry the clock far
//!   past the next PCR (FFmpeg's muxer, without `-muxrate`, sends ten times the bytes in one PCR
//!   interval as in the one before);
//! - at the stream's average rate, once more bytes than [`BURST_INTERVALS`] times the largest
//!   believed PCR interval's have come without a PCR: when the PCR itself stops coming while
//!   other packets flow, time still passes. Below that it is a burst like those seen before (a
//!   key frame: a 1080p I-frame of fine detail from `avmon synth` is several seconds of the
//!   average rate, sent within one 40 ms PCR interval; a fixed allowance of 0.25 s, then 1 s,
//!   raised PAT, PMT and PTS errors on intact files).
//!
//! The clock takes the later of the two. With PCRs at a steady interval, as every muxer sends
//! them, it never runs past the next PCR.
//!
//! It believes a PCR that steps forward by up to [`MAX_BELIEVED_STEP_S`]: packets lost on the
//! way really took that long. A step backwards, a longer one, or one announced by the
//! `discontinuity_indicator` starts a new time base, which the clock bridges with the byte
//! estimate, so it does not jump.
//!
//! The clock also maps PTS values (on the PCR's 90 kHz base) to clock time, so an event's media
//! time can be given from the first PTS, as FFmpeg (and so the rest of avmon) counts it.

use crate::packet::{pcr_diff, pts_diff, PCR_HZ};

/// The longest forward PCR step believed to be elapsed time (see the module doc).
pub const MAX_BELIEVED_STEP_S: f64 = 2.0;

/// How many times the largest PCR interval's bytes may come without a PCR before the clock
/// runs at the stream's average rate (see the module doc). The price: when the PCR itself
/// stops, absences are timed late by about that many of the stream's largest bursts.
pub const BURST_INTERVALS: u64 = 2;

#[derive(Clone, Copy, Debug)]
struct Anchor {
    /// 27 MHz.
    pcr: u64,
    /// Byte offset of the packet that carried it.
    offset: u64,
    /// Clock time of that packet, seconds.
    t: f64,
}

#[derive(Debug, Default)]
pub struct StreamClock {
    pid: Option<u16>,
    last: Option<Anchor>,
    /// Bytes per second between the last two believed PCRs, and the seconds between them.
    rate: Option<(f64, f64)>,
    /// Bytes and seconds of all believed PCR steps: the stream's average rate.
    span: (u64, f64),
    /// The most bytes between two believed PCRs.
    burst: u64,
    /// Raw first PTS values seen before the clock started, to place once it does.
    early_pts: Vec<u64>,
    /// Clock time of the earliest first PTS of any PID.
    origin: Option<f64>,
}

impl StreamClock {
    /// Whether a PCR has started the clock.
    pub fn started(&self) -> bool {
        self.last.is_some()
    }

    /// Take a PCR of `pid` carried by the packet at byte `offset`.
    pub fn on_pcr(&mut self, pid: u16, pcr: u64, offset: u64, discontinuity: bool) {
        let Some(a) = self.last else {
            self.pid = Some(pid);
            self.last = Some(Anchor {
                pcr,
                offset,
                t: 0.0,
            });
            for pts in std::mem::take(&mut self.early_pts) {
                self.first_pts(pts);
            }
            return;
        };
        if self.pid != Some(pid) {
            return;
        }
        let step = pcr_diff(a.pcr, pcr) as f64 / PCR_HZ;
        let t = if !discontinuity && (0.0..=MAX_BELIEVED_STEP_S).contains(&step) {
            if step > 0.0 && offset > a.offset {
                self.rate = Some(((offset - a.offset) as f64 / step, step));
                self.span.0 += offset - a.offset;
                self.span.1 += step;
                self.burst = self.burst.max(offset - a.offset);
            }
            a.t + step
        } else {
            self.at(offset)
        };
        self.last = Some(Anchor { pcr, offset, t });
    }

    /// Clock time of the byte at `offset` (0 before the first PCR).
    pub fn at(&self, offset: u64) -> f64 {
        let Some(a) = self.last else {
            return 0.0;
        };
        let bytes = offset.saturating_sub(a.offset) as f64;
        let recent = self
            .rate
            .map_or(0.0, |(rate, step)| (bytes / rate).min(step));
        let raw = offset.saturating_sub(a.offset);
        let average = if self.span.1 > 0.0 && raw > BURST_INTERVALS * self.burst {
            bytes * self.span.1 / self.span.0 as f64
        } else {
            0.0
        };
        a.t + recent.max(average)
    }

    /// Take the first PTS of a PID; the earliest of these is media time 0.
    pub fn first_pts(&mut self, pts: u64) {
        let Some(a) = self.last else {
            self.early_pts.push(pts);
            return;
        };
        let t = a.t + pts_diff(a.pcr / 300, pts) as f64 / 90_000.0;
        self.origin = Some(self.origin.map_or(t, |o: f64| o.min(t)));
    }

    /// Media time of a 90 kHz PTS value (a splice time), placed by the last believed PCR: may
    /// be before or after now, or negative.
    pub fn media_of_pts(&self, pts: u64) -> Option<f64> {
        let a = self.last?;
        let t = a.t + pts_diff(a.pcr / 300, pts) as f64 / 90_000.0;
        Some(t - self.origin.unwrap_or(0.0))
    }

    /// Media time of clock time `t`: seconds from the first PTS (never negative: bytes arrive
    /// before the pictures they carry are shown), or from the first PCR before any PTS.
    pub fn media(&self, t: f64) -> Option<f64> {
        self.started()
            .then(|| (t - self.origin.unwrap_or(0.0)).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 27_000;

    #[test]
    fn follows_the_pcr_and_interpolates_by_bytes() {
        let mut c = StreamClock::default();
        assert_eq!(c.at(5000), 0.0);
        c.on_pcr(0x100, 1_000 * MS, 0, false);
        c.on_pcr(0x101, 9_999 * MS, 100, false); // another PID: not the clock
        c.on_pcr(0x100, 1_040 * MS, 1880, false);
        assert!((c.at(1880) - 0.040).abs() < 1e-9);
        assert!((c.at(1880 + 940) - 0.060).abs() < 1e-9, "{}", c.at(2820));
        // A burst of bytes, up to BURST_INTERVALS of the largest interval seen, does not carry
        // it past one more interval...
        let burst = 1880 + BURST_INTERVALS * 1880;
        assert!((c.at(burst) - 0.080).abs() < 1e-9, "{}", c.at(burst));
        // ... beyond that the PCR is missing, and time passes at the average rate.
        let secs = 5.0;
        let t = c.at(1880 + (secs * 47_000.0) as u64);
        assert!((t - (0.040 + secs)).abs() < 1e-9, "{t}");
        // A step of 1 s (packets lost) is time that passed.
        c.on_pcr(0x100, 2_040 * MS, 3760, false);
        assert!((c.at(3760) - 1.040).abs() < 1e-9);
    }

    #[test]
    fn bridges_a_new_time_base() {
        let mut c = StreamClock::default();
        c.on_pcr(0x100, 50 * MS, 0, false);
        c.on_pcr(0x100, 90 * MS, 1880, false); // 47 000 bytes/s
                                               // Backwards, far forward, announced: each time the clock carries on from where it was.
        for (pcr, di) in [(10 * MS, false), (900_000 * MS, false), (5 * MS, true)] {
            let before = c.at(3760);
            c.on_pcr(0x100, pcr, 3760, di);
            assert!((c.at(3760) - before).abs() < 1e-9, "{pcr} {di}");
        }
        assert!((c.at(3760) - 0.080).abs() < 1e-9);
        // Across the PCR wrap, forward is forward.
        let mut c = StreamClock::default();
        c.on_pcr(1, crate::packet::PCR_WRAP - 20 * MS, 0, false);
        c.on_pcr(1, 20 * MS, 188, false);
        assert!((c.at(188) - 0.040).abs() < 1e-9);
    }

    #[test]
    fn media_time_counts_from_the_earliest_first_pts() {
        let mut c = StreamClock::default();
        assert_eq!(c.media(1.0), None);
        c.first_pts(100_000); // audio, before any PCR: placed when the clock starts
        c.on_pcr(0x100, 90_000 * 300, 0, false); // PCR = 1.0 s
        c.first_pts(153_000); // video at 1.7 s
        assert_eq!(c.media(0.05), Some(0.0), "before the first PTS");
        // Audio's first PTS (1.111 s) is the origin: clock 0.111.
        assert!((c.media(1.0).unwrap() - (1.0 - 10_000.0 / 90_000.0)).abs() < 1e-9);
    }
}
