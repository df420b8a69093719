//! RFC 4445's Media Delivery Index: how a network delivers a stream, apart from what the stream
//! itself carries.
//!
//! - **Delay factor (DF)**, per interval: how much buffering it takes to absorb the arrival
//!   jitter. A virtual buffer fills with each packet's bytes on arrival and drains at the
//!   stream's rate; DF is the buffer's swing, `(max VB - min VB) / rate`, in seconds. Packets
//!   that arrive evenly give one packet's time (a 1316-byte datagram at 5 Mbit/s: 2.1 ms);
//!   a burst after a 200 ms pause gives about 200 ms.
//! - **Media loss rate (MLR)**: media packets (TS packets) lost per second over the interval,
//!   as the caller counts them (continuity-counter gaps, RTP sequence gaps).
//!
//! The drain rate is the stream's mean over the last [`RATE_WINDOW`] intervals, standing for
//! the nominal rate RFC 4445 drains at (probes are told it; avmon is not). An interval's own
//! mean would not do: a burst that lands on an interval's edge would count in the rate of the
//! interval it does not belong to. The index is meant for streams sent at a constant rate; a
//! variable-rate stream's swings count as delay. Arrival
//! times are the kernel's receive times of the datagrams, so they do not move with a busy host.
//! An interval across a gap of over [`MAX_GAP_S`] (an outage: `source.down`'s business) or a
//! clock step back is not measured.

/// The interval each figure is measured over, seconds (RFC 4445 suggests 1 s).
pub const INTERVAL_S: f64 = 1.0;

/// Arrivals further apart than this end measuring: the next interval starts afresh.
pub const MAX_GAP_S: f64 = 5.0;

/// Intervals the drain rate is the mean of.
pub const RATE_WINDOW: usize = 10;

/// One interval's figures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mdi {
    /// The delay factor, seconds.
    pub df_s: f64,
    /// Media packets lost per second.
    pub mlr: f64,
    /// The interval's mean rate, bits per second.
    pub rate_bps: f64,
}

/// Measures [`Mdi`] over consecutive intervals of arrivals.
#[derive(Default)]
pub struct MdiMeter {
    /// (arrival time, payload bytes) of the interval so far.
    arrivals: Vec<(f64, u32)>,
    lost: u64,
    /// (bytes, seconds) of the last intervals, for the drain rate.
    history: std::collections::VecDeque<(f64, f64)>,
}

impl MdiMeter {
    pub fn new() -> Self {
        MdiMeter::default()
    }

    /// `lost` media packets were found missing (counted in the interval now open).
    pub fn lost(&mut self, lost: u64) {
        self.lost += lost;
    }

    /// A datagram of `bytes` media bytes arrived at `t` seconds (any origin, but one clock):
    /// the figures of the interval it closes, if it closes one.
    pub fn arrival(&mut self, t: f64, bytes: usize) -> Option<Mdi> {
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        let Some(&(t0, _)) = self.arrivals.first() else {
            self.arrivals.push((t, bytes));
            return None;
        };
        let last = self.arrivals.last().map_or(t0, |a| a.0);
        if !(t >= last && t - last <= MAX_GAP_S) {
            // An outage, or the clock stepped: start again here.
            self.arrivals.clear();
            self.history.clear();
            self.lost = 0;
            self.arrivals.push((t, bytes));
            return None;
        }
        let mdi = (t - t0 >= INTERVAL_S).then(|| self.close(t));
        if mdi.is_some() {
            self.arrivals.clear();
            self.lost = 0;
        }
        self.arrivals.push((t, bytes));
        mdi
    }

    /// The figures of the arrivals so far, the next interval starting at `end`.
    fn close(&mut self, end: f64) -> Mdi {
        let t0 = self.arrivals[0].0;
        let span = end - t0;
        let total: f64 = self.arrivals.iter().map(|a| f64::from(a.1)).sum();
        let own_rate = total / span;
        if self.history.len() == RATE_WINDOW {
            self.history.pop_front();
        }
        self.history.push_back((total, span));
        let (bytes, secs) = self
            .history
            .iter()
            .fold((0.0, 0.0), |(b, s), h| (b + h.0, s + h.1));
        let rate = bytes / secs;
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        let mut received = 0.0;
        for &(t, b) in &self.arrivals {
            let drained = rate * (t - t0);
            // Just before the packet lands, and just after.
            lo = lo.min(received - drained);
            received += f64::from(b);
            hi = hi.max(received - drained);
        }
        Mdi {
            df_s: if rate > 0.0 { (hi - lo) / rate } else { 0.0 },
            mlr: self.lost as f64 / span,
            rate_bps: own_rate * 8.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Datagrams of `bytes` every `every` seconds from `from` for `secs`, except in `pauses`
    /// (start, length), whose datagrams arrive at the pause's end at once.
    fn arrivals(from: f64, secs: f64, every: f64, pauses: &[(f64, f64)]) -> Vec<f64> {
        let n = (secs / every).round() as usize;
        (0..n)
            .map(|i| {
                let t = from + i as f64 * every;
                pauses
                    .iter()
                    .find(|(s, l)| t >= *s && t < s + l)
                    .map_or(t, |(s, l)| s + l)
            })
            .collect()
    }

    fn measure(times: &[f64], bytes: usize) -> Vec<Mdi> {
        let mut m = MdiMeter::new();
        times.iter().filter_map(|&t| m.arrival(t, bytes)).collect()
    }

    #[test]
    fn an_even_stream_needs_one_packet_of_buffer() {
        // 1316-byte datagrams, 475 a second: 5 Mbit/s.
        let every = 1.0 / 475.0;
        let got = measure(&arrivals(100.0, 5.0, every, &[]), 1316);
        assert_eq!(got.len(), 4, "{got:?}");
        for m in got {
            assert!((m.df_s - every).abs() < every * 0.05, "{m:?}");
            assert!(
                (m.rate_bps - 1316.0 * 8.0 * 475.0).abs() < 1316.0 * 8.0 * 5.0,
                "{m:?}"
            );
            assert_eq!(m.mlr, 0.0);
        }
    }

    #[test]
    fn a_pause_then_a_burst_needs_the_pause_in_buffer() {
        let every = 1.0 / 475.0;
        for pause in [0.05, 0.2, 0.4] {
            let got = measure(&arrivals(0.0, 4.0, every, &[(1.3, pause)]), 1316);
            let worst = got.iter().map(|m| m.df_s).fold(0.0, f64::max);
            assert!(
                (worst - pause).abs() < pause * 0.15 + every,
                "a {pause} s pause: DF {worst} s ({got:?})"
            );
            // The intervals away from it stay even.
            assert!(
                got[0].df_s < 2.0 * every && got[2].df_s < 2.0 * every,
                "{got:?}"
            );
        }
    }

    #[test]
    fn pauses_over_and_over_need_the_pause_wherever_the_intervals_fall() {
        let every = 1.0 / 142.5;
        for offset in [0.0, 0.1, 0.2999, 0.3, 0.3001, 0.7] {
            // A 300 ms pause every 1.3 s, so pauses fall on every phase of the intervals.
            let pauses: Vec<(f64, f64)> = (0..10)
                .map(|k| (offset + 1.3 * f64::from(k), 0.3))
                .collect();
            let got = measure(&arrivals(offset, 12.0, every, &pauses), 1316);
            for m in &got[2..] {
                assert!(
                    (m.df_s - 0.3).abs() < 0.05 + 2.0 * every,
                    "pauses from {offset} s: {got:?}"
                );
            }
        }
    }

    #[test]
    fn losses_are_counted_per_second_of_their_interval() {
        let mut m = MdiMeter::new();
        let mut got = Vec::new();
        for i in 0..300 {
            let t = f64::from(i) * 0.01;
            if i == 50 {
                m.lost(7);
            }
            got.extend(m.arrival(t, 1316));
        }
        assert!((got[0].mlr - 7.0).abs() < 0.1, "{got:?}");
        assert_eq!(got[1].mlr, 0.0);
    }

    #[test]
    fn an_outage_or_a_step_back_is_not_measured() {
        let mut m = MdiMeter::new();
        let mut got = Vec::new();
        for t in arrivals(0.0, 0.9, 0.01, &[]) {
            got.extend(m.arrival(t, 1316));
        }
        // 10 s without data, then a clock step back: neither makes an interval.
        for t in arrivals(10.9, 0.9, 0.01, &[])
            .into_iter()
            .chain(arrivals(5.0, 0.9, 0.01, &[]))
        {
            got.extend(m.arrival(t, 1316));
        }
        assert!(got.is_empty(), "{got:?}");
    }
}
