//! Retention: what the store keeps, and for how long.
//!
//! Metrics are downsampled with age, so that a host's disk use is bounded and known:
//!
//! | age | kept as |
//! |---|---|
//! | under [`Retention::metrics_raw`] (1 day) | every sample, as written |
//! | under [`Retention::metrics_minute`] (7 days) | 1-minute aggregates |
//! | under [`Retention::metrics_hour`] (400 days) | 1-hour aggregates |
//! | older | nothing |
//!
//! An aggregate keeps, per value name, the count, sum and maximum of the samples in its
//! bucket and their largest media time, so a 1-hour aggregate folded from 1-minute ones is
//! exactly the one the raw samples would have made. [`crate::Store::metrics_range`] reads an
//! aggregate as one sample at its bucket's start, each value read as [`reading`] says: a chart
//! over a year reads the same names with the same meaning, only sparser.
//!
//! Alerts cleared longer ago than [`Retention::alerts`] are deleted with their acknowledgements
//! and notifications; an alert still raised, or with a notification still pending, is never
//! deleted. A cluster's monitoring gaps are kept as long. The delivery attempt log is kept for [`Retention::attempts`].
//!
//! [`prune`] does it all in transactions of at most [`Retention::batch_rows`] rows, and calls
//! its `pace` between them: the service sleeps there, so the writer thread (and, on SQLite, the
//! one connection it shares with pruning) is never held for long. Several nodes sharing one
//! PostgreSQL database may prune at once: folding is serialised by an advisory lock, and the
//! deletions are idempotent.

use std::time::Duration;

use avmon_core::WallTime;

use crate::{Store, StoreError};

/// The resolutions of aggregated metrics, in seconds.
pub const MINUTE_S: u32 = 60;
pub const HOUR_S: u32 = 3600;

/// How long the store keeps what it holds. `None`: forever.
#[derive(Clone, Debug, PartialEq)]
pub struct Retention {
    /// Raw metrics samples older than this are folded into 1-minute aggregates.
    pub metrics_raw: Duration,
    /// 1-minute aggregates older than this are folded into 1-hour aggregates.
    pub metrics_minute: Duration,
    /// 1-hour aggregates older than this are deleted.
    pub metrics_hour: Option<Duration>,
    /// Alerts cleared longer ago than this are deleted, with their acknowledgements and outbox
    /// rows.
    pub alerts: Option<Duration>,
    /// Logged delivery attempts older than this are deleted.
    pub attempts: Option<Duration>,
    /// The most rows one transaction folds or deletes.
    pub batch_rows: usize,
}

impl Default for Retention {
    fn default() -> Self {
        const DAY: u64 = 86_400;
        Retention {
            metrics_raw: Duration::from_secs(DAY),
            metrics_minute: Duration::from_secs(7 * DAY),
            metrics_hour: Some(Duration::from_secs(400 * DAY)),
            alerts: Some(Duration::from_secs(400 * DAY)),
            attempts: Some(Duration::from_secs(30 * DAY)),
            batch_rows: 2000,
        }
    }
}

impl Retention {
    /// What is wrong with the policy, if anything.
    pub fn problem(&self) -> Option<String> {
        if self.metrics_raw < Duration::from_secs(u64::from(MINUTE_S)) {
            return Some("metrics_raw must be at least 1 minute".into());
        }
        if self.metrics_minute < self.metrics_raw {
            return Some("metrics_minute must be at least metrics_raw".into());
        }
        if self
            .metrics_hour
            .is_some_and(|h| h < self.metrics_minute + Duration::from_secs(u64::from(HOUR_S)))
        {
            return Some("metrics_hour must be at least metrics_minute plus an hour".into());
        }
        if self.batch_rows == 0 {
            return Some("batch_rows must be at least 1".into());
        }
        None
    }
}

/// What one [`prune`] did, in rows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Raw metrics values folded into 1-minute aggregates.
    pub raw_folded: u64,
    /// 1-minute aggregates folded into 1-hour aggregates.
    pub minutes_folded: u64,
    /// 1-hour aggregates deleted.
    pub hours_deleted: u64,
    /// Cleared alerts deleted.
    pub alerts_deleted: u64,
    /// Other events deleted (a cluster's monitoring gaps), kept as long as alerts.
    pub events_deleted: u64,
    /// Logged delivery attempts deleted.
    pub attempts_deleted: u64,
    /// Transactions it took.
    pub transactions: u64,
    /// Whether `pace` stopped it before it was done.
    pub interrupted: bool,
}

impl Pruned {
    /// Every row folded or deleted.
    pub fn rows(&self) -> u64 {
        self.raw_folded
            + self.minutes_folded
            + self.hours_deleted
            + self.alerts_deleted
            + self.events_deleted
            + self.attempts_deleted
    }
}

/// Apply `policy` as of `now`: fold and delete until nothing is due, calling `pace` after every
/// transaction; when `pace` returns false, stop there (the rest is done next time).
pub fn prune(
    store: &dyn Store,
    policy: &Retention,
    now: WallTime,
    pace: &mut dyn FnMut() -> bool,
) -> Result<Pruned, StoreError> {
    if let Some(p) = policy.problem() {
        return Err(StoreError::Invalid(format!("retention: {p}")));
    }
    let mut done = Pruned::default();
    let batch = policy.batch_rows;
    // Whole buckets only: a bucket still receiving samples is never folded.
    let raw_before = align_down(ago(now, policy.metrics_raw), MINUTE_S);
    let minute_before = align_down(ago(now, policy.metrics_minute), HOUR_S);

    // `step` runs one transaction and says how many rows it touched; repeat it until it touches
    // none, or `pace` says stop.
    let mut drain = |done: &mut Pruned,
                     count: fn(&mut Pruned) -> &mut u64,
                     step: &mut dyn FnMut() -> Result<u64, StoreError>|
     -> Result<bool, StoreError> {
        loop {
            let n = step()?;
            done.transactions += 1;
            *count(done) += n;
            if n == 0 {
                return Ok(true);
            }
            if !pace() {
                done.interrupted = true;
                return Ok(false);
            }
        }
    };
    let hour_before = policy.metrics_hour.map(|keep| ago(now, keep));
    for stream in store.metrics_streams()? {
        if !drain(&mut done, |d| &mut d.raw_folded, &mut || {
            store.fold_metrics(&stream, 0, MINUTE_S, raw_before, batch)
        })? {
            return Ok(done);
        }
        if !drain(&mut done, |d| &mut d.minutes_folded, &mut || {
            store.fold_metrics(&stream, MINUTE_S, HOUR_S, minute_before, batch)
        })? {
            return Ok(done);
        }
        if let Some(before) = hour_before {
            if !drain(&mut done, |d| &mut d.hours_deleted, &mut || {
                store.delete_aggregates(&stream, HOUR_S, before, batch)
            })? {
                return Ok(done);
            }
        }
    }
    if let Some(keep) = policy.alerts {
        let before = ago(now, keep);
        // An alert takes a few rows with its acknowledgement and notifications.
        let max = (batch / 4).max(1);
        if !drain(&mut done, |d| &mut d.alerts_deleted, &mut || {
            store.delete_cleared_alerts(before, max)
        })? {
            return Ok(done);
        }
        if !drain(&mut done, |d| &mut d.events_deleted, &mut || {
            store.delete_events(before, batch)
        })? {
            return Ok(done);
        }
    }
    if let Some(keep) = policy.attempts {
        let before = ago(now, keep);
        drain(&mut done, |d| &mut d.attempts_deleted, &mut || {
            store.delete_attempts(before, batch)
        })?;
    }
    Ok(done)
}

/// How an aggregate reads back under a value's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reading {
    /// Counts of what happened in a period: the bucket's total, as a sample covering the whole
    /// bucket would count it (a rate derived from the gap between samples stays right).
    Sum,
    /// A period's largest level: the bucket's largest.
    Max,
    /// Ratios, levels and offsets: the mean over the bucket's samples.
    Mean,
}

/// The counts avmon's streams report per period (`bytes`, frames, errors, events); an HLS
/// variant's values are named `hls.{index}.{name}`.
pub const COUNTS: &[&str] = &[
    "bytes",
    "frames_video",
    "frames_audio",
    "decode_errors",
    "dropouts",
    "clipped_runs",
    "segments",
    "segment_errors",
];

/// The levels reported as a period's maximum, besides every name ending in `_max`.
pub const MAXIMA: &[&str] = &[
    "audio_peak_db",
    "true_peak_dbtp",
    "sample_peak_dbfs",
    "loudness_momentary_lufs",
];

/// How the value `name` reads back from an aggregate.
pub fn reading(name: &str) -> Reading {
    let base = name.rsplit('.').next().unwrap_or(name);
    if COUNTS.contains(&base) {
        Reading::Sum
    } else if base.ends_with("_max") || MAXIMA.contains(&base) {
        Reading::Max
    } else {
        Reading::Mean
    }
}

fn ago(now: WallTime, d: Duration) -> WallTime {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
}

/// `t` rounded down to a multiple of `span_s` seconds since the epoch.
pub fn align_down(t: WallTime, span_s: u32) -> WallTime {
    let span = i64::from(span_s) * 1000;
    let ms = t.timestamp_millis();
    chrono::DateTime::from_timestamp_millis(ms - ms.rem_euclid(span)).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn buckets_start_on_whole_minutes_and_hours() {
        let t = chrono::Utc
            .with_ymd_and_hms(2026, 1, 2, 3, 4, 5)
            .unwrap()
            .checked_add_signed(chrono::Duration::milliseconds(678))
            .unwrap();
        let m = chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 0).unwrap();
        let h = chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 0, 0).unwrap();
        assert_eq!(align_down(t, MINUTE_S), m);
        assert_eq!(align_down(t, HOUR_S), h);
        assert_eq!(align_down(h, HOUR_S), h);
    }

    #[test]
    fn counts_add_up_maxima_stay_and_levels_average() {
        assert_eq!(reading("bytes"), Reading::Sum);
        assert_eq!(reading("hls.2.segment_errors"), Reading::Sum);
        assert_eq!(reading("blockiness_max"), Reading::Max);
        assert_eq!(reading("hls.0.download_s_max"), Reading::Max);
        assert_eq!(reading("true_peak_dbtp"), Reading::Max);
        assert_eq!(reading("black_ratio"), Reading::Mean);
        assert_eq!(reading("hls.0.bitrate_bps"), Reading::Mean);
    }

    #[test]
    fn policies_that_cannot_work_are_refused() {
        assert_eq!(Retention::default().problem(), None);
        let bad = |f: fn(&mut Retention)| {
            let mut r = Retention::default();
            f(&mut r);
            r.problem().expect("refused")
        };
        assert!(bad(|r| r.metrics_raw = Duration::from_secs(10)).contains("metrics_raw"));
        assert!(bad(|r| r.metrics_minute = Duration::from_secs(3600)).contains("metrics_minute"));
        assert!(bad(|r| r.metrics_hour = Some(r.metrics_minute)).contains("metrics_hour"));
        assert!(bad(|r| r.batch_rows = 0).contains("batch_rows"));
    }
}
