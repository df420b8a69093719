//! The media clock: stream timestamps to seconds from the input's first timestamp.

/// Maps stream timestamps (in microseconds) to media time, continuing across reconnects and
/// timestamp resets so one live stream keeps one time line.
#[derive(Debug, Clone, Default)]
pub struct MediaClock {
    /// Timestamp (µs) that maps to `offset`; `None` until the first timestamp of a connection.
    origin: Option<i64>,
    offset: f64,
    /// The latest media time seen.
    latest: f64,
    seen_any: bool,
    /// Each elementary stream's latest timestamp (µs), to tell a reset from muxer interleaving:
    /// after a gap, one stream's packets may come seconds ahead of another's, which is normal.
    per_stream: Vec<Option<i64>>,
    /// The largest timestamp (µs) seen under the current origin.
    last_raw: Option<i64>,
    /// Set by [`MediaClock::reconnect`]: the wall-clock gap, until the new connection's first
    /// timestamp decides whether its time line continues the old one.
    pending_gap: Option<f64>,
}

/// A backwards jump of one stream's own timestamps larger than this, or a forward jump larger
/// than [`MAX_FORWARD_JUMP_S`], is a timestamp reset (encoder restart, wrap), not a gap.
const MAX_BACKWARD_JUMP_S: f64 = 1.0;
const MAX_FORWARD_JUMP_S: f64 = 300.0;

impl MediaClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// A clock for a stream that another process watched until media time `latest`, `gap_s`
    /// seconds ago (a stream moved to this node of a cluster): the first connection's first
    /// timestamp, whatever it is, maps to `latest + gap_s`, as after a
    /// [`reconnect`](Self::reconnect) whose timestamps restarted, and the time line goes on from
    /// there as usual (reconnects, resets). [`latest`](Self::latest) is `latest` until then, and
    /// never goes below it.
    pub fn resume(latest: f64, gap_s: f64) -> MediaClock {
        // With no `last_raw` the first timestamp cannot continue the old time line, so
        // `set_origin` maps it to `latest + gap`. `seen_any` stays false until then: the
        // first timestamp is no forward jump, however long the gap.
        MediaClock {
            latest: latest.max(0.0),
            pending_gap: Some(gap_s.max(0.0)),
            ..MediaClock::default()
        }
    }

    /// The latest media time seen (0 before any, or where a [`resume`](Self::resume)d clock
    /// resumes).
    pub fn latest(&self) -> f64 {
        self.latest
    }

    pub fn seen_any(&self) -> bool {
        self.seen_any
    }

    /// Start a new connection after `gap_s` seconds without data. When its timestamps continue
    /// the old ones (a source that paused, whose encoder kept its clock), the stream's own time
    /// line is kept; when they restarted, its first timestamp maps to `latest + gap_s`.
    pub fn reconnect(&mut self, gap_s: f64) {
        if self.seen_any {
            self.pending_gap = Some(gap_s.max(0.0));
            self.per_stream.clear();
        }
    }

    /// The first timestamp of a connection (the input's start time): sets the origin of the
    /// first connection, and decides continuity after a reconnect.
    pub fn set_origin(&mut self, ts_us: i64) {
        if let Some(gap) = self.pending_gap.take() {
            // Continuous: from a little before the last timestamp (a resuming muxer may resend
            // what it held back) to well after the last timestamp plus the outage.
            let continuous = self.last_raw.is_some_and(|last| {
                ts_us >= last - 2_000_000 && ts_us <= last + ((gap + 30.0) * 1e6) as i64
            });
            if !continuous {
                self.origin = Some(ts_us);
                self.offset = self.latest + gap;
                self.last_raw = Some(ts_us);
            }
            tracing::debug!(
                ts_us,
                continuous,
                offset = self.offset,
                "media clock: reconnected"
            );
            return;
        }
        if self.origin.is_none() {
            self.origin = Some(ts_us);
        }
    }

    /// Media time of `ts_us` on elementary stream `stream`, advancing the clock. Resets are
    /// absorbed: the time line continues.
    pub fn map(&mut self, stream: usize, ts_us: i64) -> f64 {
        if self.pending_gap.is_some() || self.origin.is_none() {
            self.set_origin(ts_us);
        }
        let origin = self.origin.unwrap_or(ts_us);
        let mut t = (ts_us - origin) as f64 / 1e6 + self.offset;
        if self.per_stream.len() <= stream {
            self.per_stream.resize(stream + 1, None);
        }
        let back = self.per_stream[stream]
            .is_some_and(|prev| ((prev - ts_us) as f64 / 1e6) > MAX_BACKWARD_JUMP_S);
        if self.seen_any && (back || t > self.latest + MAX_FORWARD_JUMP_S) {
            tracing::debug!(
                stream,
                ts_us,
                t,
                latest = self.latest,
                "media clock: timestamp reset"
            );
            self.origin = Some(ts_us);
            self.offset = self.latest;
            self.per_stream.iter_mut().for_each(|p| *p = None);
            self.last_raw = None;
            t = self.latest;
        }
        self.per_stream[stream] = Some(ts_us);
        self.last_raw = Some(self.last_raw.map_or(ts_us, |l| l.max(ts_us)));
        // (A fresh clock's `latest` is 0, so `t.max(0)` is all a first timestamp needs; a
        // resumed one's must not go back.)
        if t > self.latest {
            self.latest = t;
        }
        self.seen_any = true;
        t.max(0.0)
    }

    /// The decoder moved from elementary stream `from` to `to` (the source moved its PIDs):
    /// `to`'s timestamps continue `from`'s, so a jump between the two (a new encoder whose clock
    /// restarted) is absorbed like a jump within one stream, and the time line continues.
    pub fn follow(&mut self, from: usize, to: usize) {
        let prev = self.per_stream.get(from).copied().flatten();
        if self.per_stream.len() <= to {
            self.per_stream.resize(to + 1, None);
        }
        self.per_stream[to] = prev;
    }

    /// Media time of `ts_us` without advancing the clock (for frames, whose presentation order
    /// differs from packet order).
    pub fn peek(&self, ts_us: i64) -> Option<f64> {
        self.origin
            .map(|o| ((ts_us - o) as f64 / 1e6 + self.offset).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_origin_and_continues_across_reconnects_and_resets() {
        let mut c = MediaClock::new();
        c.set_origin(1_400_000);
        assert_eq!(c.map(0, 1_400_000), 0.0);
        assert_eq!(c.map(0, 3_400_000), 2.0);
        // A 4 s gap inside a connection is a real gap.
        assert_eq!(c.map(0, 7_400_000), 6.0);
        // Another stream's packets lagging seconds behind (muxer interleaving) are no reset.
        assert_eq!(c.map(1, 3_500_000), 2.1);
        assert_eq!(c.map(1, 7_420_000), 6.02);
        // A reset (timestamps restart) continues the time line.
        assert_eq!(c.map(0, 100_000), 6.02);
        assert_eq!(c.map(0, 1_100_000), 7.02);
        // A reconnect after 3 s of silence, the encoder's timestamps restarted.
        c.reconnect(3.0);
        assert_eq!(c.map(0, 50_000_000), 10.02);
        assert_eq!(c.peek(50_500_000), Some(10.52));
    }

    #[test]
    fn a_reconnect_keeps_a_continuing_time_line() {
        let mut c = MediaClock::new();
        c.set_origin(1_000_000);
        assert_eq!(c.map(0, 5_000_000), 4.0);
        // The source paused for 5 s; its encoder kept its clock and first resends a held-back
        // packet from just before the pause.
        c.reconnect(5.0);
        c.set_origin(4_980_000);
        assert_eq!(c.map(1, 4_980_000), 3.98);
        assert_eq!(c.map(0, 10_000_000), 9.0);
        assert_eq!(c.map(1, 10_010_000), 9.01);
    }

    #[test]
    fn a_resumed_clock_continues_another_process_time_line() {
        let mut c = MediaClock::resume(120.5, 8.0);
        assert_eq!(c.latest(), 120.5);
        assert!(!c.seen_any());
        assert_eq!(c.peek(1_000_000), None);
        // Before the first timestamp, a reconnect (the first connection failed) changes nothing.
        c.reconnect(3.0);
        // The first timestamp continues the old time line after the gap, whatever its value.
        c.set_origin(7_000_000_000);
        assert_eq!(c.map(0, 7_000_000_000), 128.5);
        assert_eq!(c.map(1, 7_000_400_000), 128.9);
        assert_eq!(c.map(0, 7_002_000_000), 130.5);
        assert_eq!(c.latest(), 130.5);
        assert_eq!(c.peek(7_002_500_000), Some(131.0));
        // From then on, as usual: a reset continues the time line…
        assert_eq!(c.map(0, 500_000), 130.5);
        assert_eq!(c.map(0, 1_500_000), 131.5);
        // …and so does a reconnect whose timestamps restarted.
        c.reconnect(2.0);
        assert_eq!(c.map(0, 90_000_000), 133.5);
    }

    #[test]
    fn a_resumed_clock_maps_its_first_packet_without_an_origin_and_over_a_long_gap() {
        // No input start time: the first packet sets the origin. A gap longer than a forward
        // jump is still the gap, not a timestamp reset.
        let gap = MAX_FORWARD_JUMP_S + 60.0;
        let mut c = MediaClock::resume(40.0, gap);
        assert_eq!(c.map(0, 3_000_000), 40.0 + gap);
        assert_eq!(c.map(0, 4_000_000), 41.0 + gap);
        // A packet from before the origin does not pull `latest` below the resume point.
        let mut c = MediaClock::resume(40.0, 0.0);
        c.set_origin(10_000_000);
        assert_eq!(c.map(0, 9_900_000), 39.9);
        assert_eq!(c.latest(), 40.0);
        assert_eq!(c.map(0, 10_100_000), 40.1);
        assert_eq!(c.latest(), 40.1);
    }

    #[test]
    fn a_followed_stream_continues_the_time_line() {
        let mut c = MediaClock::new();
        c.set_origin(1_000_000);
        assert_eq!(c.map(0, 9_000_000), 8.0);
        // The source moved to new PIDs with a new encoder whose clock restarted: stream 3
        // continues stream 0's time line instead of going back to its start.
        c.follow(0, 3);
        assert_eq!(c.map(3, 1_000_000), 8.0);
        assert_eq!(c.map(3, 2_000_000), 9.0);
        // Moved again, with the clock carried on: nothing to absorb.
        c.follow(3, 4);
        assert_eq!(c.map(4, 2_040_000), 9.04);
    }
}
