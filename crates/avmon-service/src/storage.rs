//! `monitor.storage`: an alert about avmon itself while the disk does not take what it writes
//! (the store's database, or evidence), raised on the `_avmon` stream id.
//!
//! The hub looks every second. Raised when
//! - a disk holding the store's database or the evidence has less free than
//!   [`min_free`](reserve) (`[store] min_free`, at most a twentieth of the disk): it is full, or
//!   about to be, before any write is refused;
//! - the store keeps writes waiting in memory ([`SpillStore`]);
//! - evidence waits or was dropped ([`Evidence::refused`]).
//!
//! Updated when what waits grows tenfold; cleared once everything that waited is written and
//! each disk has half as much again free. Evidence never takes the disk below twice that
//! reserve: it is deleted first (see [`crate::evidence`]), so avmon's own evidence does not
//! raise it. When another writer (the database) takes a disk below the reserve, evidence on
//! that disk is deleted first, back to twice the reserve, and the alert is raised only if that
//! is not enough. Its media times are seconds since the service started.

use std::path::{Path, PathBuf};
use std::time::Instant;

use avmon_core::{Alert, AlertEvent, AlertState, Details, Severity, StreamId, Transition};
use avmon_store::spill::SpillStore;
use avmon_store::{AlertQuery, Store};
use chrono::Utc;
use serde_json::json;

use crate::evidence::Evidence;

/// The stream id avmon's alerts about itself are raised on; in a cluster, `_avmon.NODE`.
pub const SELF_STREAM: &str = "_avmon";

/// The stream id of a node's alerts about itself (`node`: its cluster name, if any).
pub fn self_stream(node: Option<&str>) -> StreamId {
    match node {
        Some(n) => StreamId(format!("{SELF_STREAM}.{n}")),
        None => StreamId(SELF_STREAM.into()),
    }
}

/// Bytes free for an unprivileged writer, and the size, of the file system holding `path`.
pub fn free_space(path: &Path) -> Option<(u64, u64)> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some((
        st.f_bavail.saturating_mul(st.f_frsize),
        st.f_blocks.saturating_mul(st.f_frsize),
    ))
}

/// The space kept free on a disk of `size` bytes: `min_free`, but at most a twentieth of the
/// disk.
pub fn reserve(min_free: u64, size: u64) -> u64 {
    min_free.min(size / 20)
}

/// The alert's kind.
pub const KIND: &str = "monitor.storage";

/// Watches the store and evidence for writes the disk refused.
pub(crate) struct StorageWatch {
    start: Instant,
    stream: StreamId,
    open: Option<Alert>,
    /// What waited when the alert was last raised or updated.
    told: usize,
    /// The directories watched for free space, and whether each was short of it at the last look.
    disks: Vec<(PathBuf, bool)>,
    min_free: u64,
}

impl StorageWatch {
    /// A watch that takes over a `monitor.storage` alert the store holds as still raised (left
    /// by a process that was killed): cleared at the first look if the disk takes writes now.
    /// `disks`: the directories holding the store's database and the evidence.
    pub(crate) fn new(
        store: &dyn Store,
        stream: StreamId,
        disks: Vec<PathBuf>,
        min_free: u64,
    ) -> Self {
        let q = AlertQuery {
            stream: Some(stream.clone()),
            active_only: true,
            kinds: vec![KIND.into()],
            ..AlertQuery::default()
        };
        let open = store.alerts(&q).ok().and_then(|a| a.into_iter().next());
        let mut unique: Vec<PathBuf> = Vec::new();
        for d in disks {
            if !unique.contains(&d) {
                unique.push(d);
            }
        }
        StorageWatch {
            start: Instant::now(),
            stream,
            open,
            told: 0,
            disks: unique.into_iter().map(|d| (d, false)).collect(),
            min_free,
        }
    }

    /// Look again: the transition to hand on, if any.
    pub(crate) fn tick(
        &mut self,
        spill: Option<&SpillStore>,
        evidence: Option<&Evidence>,
    ) -> Option<AlertEvent> {
        let spilled = spill.and_then(SpillStore::spilled);
        let refused = evidence.and_then(Evidence::refused);
        let media_t = self.start.elapsed().as_secs_f64();
        let mut details = Details::new();
        let mut waiting = 0;
        let mut reasons = Vec::new();
        if let Some(s) = &spilled {
            reasons.push(s.error.clone());
            waiting += s.alerts + s.notifications + s.samples;
            details.insert(
                "store".into(),
                json!({
                    "error": s.error,
                    "since": s.since,
                    "alerts_waiting": s.alerts,
                    "notifications_waiting": s.notifications,
                    "samples_waiting": s.samples,
                    "samples_dropped": s.dropped_samples,
                }),
            );
        }
        let mut short = Vec::new();
        for (dir, was_short) in &mut self.disks {
            let Some((mut free, size)) = free_space(dir) else {
                continue;
            };
            let keep = reserve(self.min_free, size);
            // Another writer (the database) took the disk below the reserve: evidence on it
            // gives way first, back to twice the reserve, before anyone is told.
            if free < keep {
                if let Some(ev) = evidence.filter(|e| e.shares_disk(dir)) {
                    if ev.make_room(2 * keep - free).0 > 0 {
                        free = free_space(dir).map_or(free, |(f, _)| f);
                    }
                }
            }
            // Half as much again to clear: a disk at the edge does not raise and clear by turns.
            *was_short = free < keep || (*was_short && free < keep + keep / 2);
            if *was_short {
                reasons.push(format!(
                    "{} has {:.1} MiB free, under the {:.1} MiB kept free",
                    dir.display(),
                    mib(free),
                    mib(keep)
                ));
                short.push(json!({
                    "dir": dir.display().to_string(),
                    "free_bytes": free,
                    "size_bytes": size,
                    "min_free_bytes": keep,
                }));
            }
        }
        if !short.is_empty() {
            details.insert("disks".into(), json!(short));
        }
        if let Some((error, files, dropped)) = &refused {
            reasons.push(error.clone());
            waiting += files;
            details.insert(
                "evidence".into(),
                json!({"error": error, "files_waiting": files, "files_dropped": dropped}),
            );
        }
        match (&mut self.open, reasons.is_empty()) {
            (None, true) => None,
            (None, false) => {
                details.insert("reason".into(), json!(reasons.join("; ")));
                let now = Utc::now();
                let alert = Alert {
                    id: avmon_alert::new_id(now),
                    stream_id: self.stream.clone(),
                    kind: KIND.into(),
                    severity: Severity::Critical,
                    state: AlertState::Raised,
                    start_s: media_t,
                    end_s: None,
                    raised_at: now,
                    cleared_at: None,
                    details,
                };
                tracing::error!(reason = %reasons.join("; "), "{KIND} raised");
                self.told = waiting;
                self.open = Some(alert.clone());
                Some(AlertEvent {
                    transition: Transition::Raised,
                    alert,
                })
            }
            (Some(alert), false) => {
                if waiting < self.told.max(1) * 10 {
                    return None;
                }
                details.insert("reason".into(), json!(reasons.join("; ")));
                self.told = waiting;
                alert.details = details;
                Some(AlertEvent {
                    transition: Transition::Updated,
                    alert: alert.clone(),
                })
            }
            (Some(_), true) => {
                let mut alert = self.open.take()?;
                alert.state = AlertState::Cleared;
                alert.end_s = Some(media_t.max(alert.start_s));
                alert.cleared_at = Some(Utc::now());
                tracing::warn!("{KIND} cleared: the disks have room, and what waited is written");
                Some(AlertEvent {
                    transition: Transition::Cleared,
                    alert,
                })
            }
        }
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}
