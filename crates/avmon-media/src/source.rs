//! Keep a live source going: reconnect with capped exponential backoff, and report the source
//! going down and coming back, once each.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use avmon_core::{AudioBuffer, MediaInfo, VideoFrame};

use crate::{EndReason, FrameSink, Input, MediaClock, OpenOptions};

/// Reconnect delays: `initial`, doubling up to `max`; back to `initial` once data flowed.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(10),
        }
    }
}

/// What a supervised source reports besides frames.
pub trait SourceEvents: FrameSink {
    /// A connection was opened; `reconnect` is false for the first one.
    fn on_connected(&mut self, info: &MediaInfo, reconnect: bool);
    /// The source is down: it could not be opened, or delivered nothing for `io_timeout`, or
    /// closed. Called once per outage, at its start.
    fn on_down(&mut self, reason: &str);
    /// Data flows again after an outage of `outage` wall time, at media time `t` (on the
    /// continuing clock).
    fn on_up(&mut self, t: f64, outage: Duration);
    /// About to wait `delay` before the next attempt (for status reporting).
    fn on_retry(&mut self, _delay: Duration) {}
}

/// Passes frames through and notices the first data after an outage.
struct Watch<'a> {
    inner: &'a mut dyn SourceEvents,
    down: &'a mut bool,
    got_data: bool,
    last_data: &'a mut Instant,
}

impl Watch<'_> {
    fn data(&mut self, t: f64) {
        self.got_data = true;
        let outage = self.last_data.elapsed();
        *self.last_data = Instant::now();
        if *self.down {
            *self.down = false;
            self.inner.on_up(t, outage);
        }
    }
}

impl FrameSink for Watch<'_> {
    fn on_packet(&mut self, t: f64, bytes: usize) {
        self.data(t);
        self.inner.on_packet(t, bytes);
    }
    fn on_video(&mut self, frame: &VideoFrame<'_>) {
        self.inner.on_video(frame);
    }
    fn on_audio(&mut self, buf: &AudioBuffer<'_>) {
        self.inner.on_audio(buf);
    }
    fn on_decode_error(&mut self, t: f64, video: bool) {
        self.inner.on_decode_error(t, video);
    }
    fn on_streams_changed(&mut self, info: &MediaInfo) {
        self.inner.on_streams_changed(info);
    }
    fn on_tier(&mut self, tier: avmon_core::Tier) {
        self.inner.on_tier(tier);
    }
}

/// Sleep up to `d`, waking early when `stop` is set.
fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let until = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= until {
            break;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}

/// Monitor `url` until `stop` is set, reconnecting as needed. Returns when stopped.
pub fn run_source(
    url: &str,
    opts: &OpenOptions,
    backoff: Backoff,
    stop: Arc<AtomicBool>,
    clock: &mut MediaClock,
    events: &mut dyn SourceEvents,
) {
    let open_stop = stop.clone();
    let mut open = || Input::open(url, opts, open_stop.clone());
    run_input(url, &mut open, opts, backoff, stop, clock, events);
}

/// [`run_source`] for an input the caller opens: `open` makes each connection (e.g.
/// [`Input::open_source`] over an HLS monitor's segments), with `opts`; `label` names the input
/// in logs.
pub fn run_input(
    label: &str,
    open: &mut dyn FnMut() -> Result<Input, crate::MediaError>,
    opts: &OpenOptions,
    backoff: Backoff,
    stop: Arc<AtomicBool>,
    clock: &mut MediaClock,
    events: &mut dyn SourceEvents,
) {
    let mut down = false;
    let mut delay = backoff.initial;
    let mut connected_before = false;
    let mut last_data = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let reason = match open() {
            Err(e) => e.to_string(),
            Ok(mut input) => {
                if connected_before {
                    clock.reconnect(last_data.elapsed().as_secs_f64());
                }
                events.on_connected(input.info(), connected_before);
                connected_before = true;
                let mut watch = Watch {
                    inner: events,
                    down: &mut down,
                    got_data: false,
                    last_data: &mut last_data,
                };
                let result = input.run(clock, &mut watch);
                if watch.got_data {
                    delay = backoff.initial;
                }
                match result {
                    Ok(EndReason::Stopped) => return,
                    Ok(EndReason::TimedOut) => {
                        // When a read times out the TS demuxer flushes the PES packets it held
                        // back, which look like fresh data; by definition the last real data
                        // came io_timeout ago.
                        if let Some(t) = Instant::now().checked_sub(opts.io_timeout) {
                            last_data = last_data.min(t);
                        }
                        format!("no data for {:.1} s", opts.io_timeout.as_secs_f64())
                    }
                    Ok(EndReason::Eof) => "the source closed the stream".to_string(),
                    Err(e) => e.to_string(),
                }
            }
        };
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if !down {
            down = true;
            events.on_down(&reason);
        }
        tracing::debug!(url = label, %reason, ?delay, "source down; retrying");
        events.on_retry(delay);
        sleep_unless_stopped(delay, &stop);
        delay = (delay * 2).min(backoff.max);
    }
}
