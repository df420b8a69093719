//! Retention in the running service: `[retention]`, and the thread that applies it.
//!
//! The thread prunes once at start (catching up after downtime) and then every `interval`,
//! with [`avmon_store::retention::prune`]: transactions of at most `batch_rows` rows, with a
//! pause after each, so the hub's writes (which share SQLite's one connection) wait at most one
//! small transaction. Every node of a cluster runs it; the store makes that safe.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use avmon_store::{Retention, Store};
use serde::{Deserialize, Serialize};

use crate::evidence::Amount;

/// The pause after each pruning transaction.
const PAUSE: Duration = Duration::from_millis(10);

/// `[retention]`: how long the store keeps what it holds (durations: `"1d"`, `"12h"`, or
/// seconds; `"forever"` where allowed).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Raw metrics samples are kept this long, then folded into 1-minute aggregates.
    pub metrics_raw: Amount,
    /// 1-minute aggregates are kept this long, then folded into 1-hour aggregates.
    pub metrics_minute: Amount,
    /// 1-hour aggregates are kept this long, or `"forever"`.
    pub metrics_hour: Amount,
    /// Cleared alerts are kept this long (with their acknowledgements and notifications, and a
    /// cluster's monitoring gaps), or `"forever"`. Alerts still raised, or with a notification pending, are always kept.
    pub alerts: Amount,
    /// The notification delivery attempt log is kept this long, or `"forever"`.
    pub attempts: Amount,
    /// How often pruning runs.
    pub interval: Amount,
    /// The most rows one pruning transaction touches.
    pub batch_rows: usize,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        let text = |s: &str| Amount::Text(s.into());
        RetentionConfig {
            metrics_raw: text("1d"),
            metrics_minute: text("7d"),
            metrics_hour: text("400d"),
            alerts: text("400d"),
            attempts: text("30d"),
            interval: text("10m"),
            batch_rows: Retention::default().batch_rows,
        }
    }
}

impl RetentionConfig {
    /// The store's policy, or every problem with the section.
    pub fn policy(&self) -> Result<Retention, Vec<String>> {
        let mut errors = Vec::new();
        let mut keep = |name: &str, a: &Amount, forever: bool| -> Option<Duration> {
            if forever && matches!(a, Amount::Text(t) if t.trim().eq_ignore_ascii_case("forever")) {
                return None;
            }
            match a.seconds() {
                Ok(s) => Some(Duration::from_secs_f64(s)),
                Err(e) => {
                    let also = if forever { " or \"forever\"" } else { "" };
                    errors.push(format!("retention.{name}: {e}{also}"));
                    None
                }
            }
        };
        let raw = keep("metrics_raw", &self.metrics_raw, false);
        let minute = keep("metrics_minute", &self.metrics_minute, false);
        let policy = Retention {
            metrics_raw: raw.unwrap_or_default(),
            metrics_minute: minute.unwrap_or_default(),
            metrics_hour: keep("metrics_hour", &self.metrics_hour, true),
            alerts: keep("alerts", &self.alerts, true),
            attempts: keep("attempts", &self.attempts, true),
            batch_rows: self.batch_rows,
        };
        match keep("interval", &self.interval, false) {
            Some(i) if i < Duration::from_secs(1) => {
                errors.push("retention.interval: must be at least 1 s".into())
            }
            _ => {}
        }
        if errors.is_empty() {
            if let Some(p) = policy.problem() {
                errors.push(format!("retention: {p}"));
            }
        }
        match errors.is_empty() {
            true => Ok(policy),
            false => Err(errors),
        }
    }

    pub fn validate(&self, errors: &mut Vec<String>) {
        if let Err(e) = self.policy() {
            errors.extend(e);
        }
    }

    fn every(&self) -> Duration {
        Duration::from_secs_f64(self.interval.seconds().unwrap_or(600.0).max(1.0))
    }
}

/// Start the pruning thread; it ends soon after `stop` is set.
pub fn spawn(
    store: Arc<dyn Store>,
    cfg: &RetentionConfig,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let policy = cfg.policy().unwrap_or_default();
    let every = cfg.every();
    std::thread::Builder::new()
        .name("retention".into())
        .spawn(move || loop {
            let started = Instant::now();
            let mut pace = || {
                std::thread::sleep(PAUSE);
                !stop.load(Ordering::Relaxed)
            };
            match avmon_store::retention::prune(
                store.as_ref(),
                &policy,
                chrono::Utc::now(),
                &mut pace,
            ) {
                Ok(p) if p.rows() > 0 => tracing::info!(
                    raw_folded = p.raw_folded,
                    minutes_folded = p.minutes_folded,
                    hours_deleted = p.hours_deleted,
                    alerts_deleted = p.alerts_deleted,
                    events_deleted = p.events_deleted,
                    attempts_deleted = p.attempts_deleted,
                    transactions = p.transactions,
                    took_s = started.elapsed().as_secs_f64(),
                    "retention: pruned the store"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!("retention: pruning the store failed: {e}"),
            }
            while started.elapsed() < every {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> RetentionConfig {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn durations_with_units_and_forever() {
        let p = parse(
            r#"metrics_raw = "2d"
               metrics_hour = "forever"
               alerts = "90d"
               attempts = 3600"#,
        )
        .policy()
        .unwrap();
        assert_eq!(p.metrics_raw, Duration::from_secs(2 * 86_400));
        assert_eq!(p.metrics_minute, Duration::from_secs(7 * 86_400));
        assert_eq!(p.metrics_hour, None);
        assert_eq!(p.alerts, Some(Duration::from_secs(90 * 86_400)));
        assert_eq!(p.attempts, Some(Duration::from_secs(3600)));
        assert_eq!(
            RetentionConfig::default().policy().unwrap(),
            Retention::default()
        );
    }

    #[test]
    fn mistakes_are_named() {
        let errors = |toml: &str| parse(toml).policy().unwrap_err().join("\n");
        assert!(errors(r#"metrics_raw = "forever""#).contains("retention.metrics_raw"));
        assert!(errors(r#"alerts = "ever""#).contains("retention.alerts"));
        assert!(errors(r#"interval = "0.1s""#).contains("retention.interval"));
        let e = errors(r#"metrics_minute = "1h""#);
        assert!(
            e.contains("metrics_minute must be at least metrics_raw"),
            "{e}"
        );
    }
}
