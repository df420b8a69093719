//! The degradation thread: every 0.5 s each stream's lag and CPU use go into the policy
//! ([`crate::degrade`]), whose steps lower or restore tiers; streams it cannot help get
//! `monitor.behind`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::config::ServiceConfig;
use crate::degrade::{Policy, PolicyConfig, Sample};
use crate::registry::Service;

/// A stream's `monitor.behind` is cleared after this long without being behind, seconds.
pub(crate) const BEHIND_CLEAR_S: u64 = 10;

/// A stream gets `monitor.behind` once it has been behind this long, seconds: a start, a
/// take-over or a burst that it catches up from within seconds is not worth a page (on a
/// loaded host, thousands of them were).
pub(crate) const BEHIND_RAISE_S: u64 = 10;

/// Ticks saying "behind" this close together count as one spell, seconds (the policy's verdict
/// flickers while a stream's lag hovers near `behind_s`).
const BEHIND_SPELL_GAP_S: u64 = 5;

/// Every 0.5 s: each stream's lag and CPU use into the policy ([`crate::degrade`]), its steps
/// applied when `auto_degrade` is on. Streams behind real time that the policy cannot help
/// (nothing left to lower, or `auto_degrade` off) get `monitor.behind`: the host never falls
/// behind silently.
pub(crate) fn degrade_thread(service: &Service, cfg: &ServiceConfig, stop: &AtomicBool) {
    let mut policy = Policy::new(PolicyConfig {
        behind_s: cfg.behind_s,
        restore_after_s: cfg.restore_after_s,
        capacity: service.sched.permits() as f64,
        ..PolicyConfig::default()
    });
    let start = Instant::now();
    let mut last_warning: Option<Instant> = None;
    // Streams with `monitor.behind` open, and when they were last behind.
    let mut stranded: BTreeMap<String, Instant> = BTreeMap::new();
    // Streams behind without it yet: since when, and when last seen behind.
    let mut spells: BTreeMap<String, (Instant, Instant)> = BTreeMap::new();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(500));
        let streams = service.shared_streams();
        let samples: Vec<Sample> = streams
            .iter()
            .map(|s| {
                let live = s.live.lock().unwrap_or_else(|e| e.into_inner());
                Sample {
                    id: s.cfg.id.clone(),
                    priority: s.priority.load(Ordering::Relaxed),
                    ceiling: s.ceiling.get(),
                    tier: s.tier.get(),
                    lag_s: live.lag_s,
                    drops: s.cpu.input_drops(),
                    packets: live.counters.packets,
                    busy_s: s.cpu.busy_s(),
                    active: live.connected && !live.down && live.counters.packets > 0,
                }
            })
            .collect();
        let decision = policy.tick(start.elapsed().as_secs_f64(), &samples);
        for s in &streams {
            if let (Some(lag), Ok(mut live)) = (policy.lag_s(&s.cfg.id), s.live.lock()) {
                live.lag_smooth_s = lag;
            }
        }
        // monitor.behind: raised on the streams behind while nothing can be done for them.
        let helpless = decision.exhausted || !cfg.auto_degrade;
        let now = Instant::now();
        for (id, reason) in &decision.behind {
            if let Some(at) = stranded.get_mut(id) {
                *at = now;
                continue;
            }
            if !helpless {
                continue;
            }
            let spell = spells.entry(id.clone()).or_insert((now, now));
            spell.1 = now;
            if now.duration_since(spell.0).as_secs() >= BEHIND_RAISE_S {
                spells.remove(id);
                let Some(shared) = streams.iter().find(|s| &s.cfg.id == id) else {
                    continue;
                };
                let why = if cfg.auto_degrade {
                    format!("{reason}; every stream is at its lowest tier: the host needs more CPU")
                } else {
                    format!("{reason}; auto_degrade is off")
                };
                tracing::warn!(stream = %id, reason = %why, "behind real time");
                if let Ok(mut r) = shared.behind_reason.lock() {
                    *r = why;
                }
                shared.behind.store(true, Ordering::Relaxed);
                stranded.insert(id.clone(), now);
            }
        }
        spells.retain(|_, (_, last)| now.duration_since(*last).as_secs() < BEHIND_SPELL_GAP_S);
        stranded.retain(|id, at| {
            let shared = streams.iter().find(|s| &s.cfg.id == id);
            let keep = shared.is_some() && now.duration_since(*at).as_secs() < BEHIND_CLEAR_S;
            if !keep {
                if let Some(s) = shared {
                    s.behind.store(false, Ordering::Relaxed);
                }
            }
            keep
        });
        for step in decision.steps {
            if !cfg.auto_degrade {
                if step.to > step.from && last_warning.is_none_or(|t| t.elapsed().as_secs() >= 10) {
                    last_warning = Some(Instant::now());
                    tracing::warn!(reason = %step.reason, "the host is behind real time (auto_degrade is off)");
                }
                continue;
            }
            let Some(shared) = streams.iter().find(|s| s.cfg.id == step.id) else {
                continue;
            };
            if shared.tier.get() != step.from {
                continue; // changed meanwhile (PATCH): the next tick sees it
            }
            if let Ok(mut r) = shared.degrade_reason.lock() {
                r.clone_from(&step.reason);
            }
            if step.to > step.from {
                tracing::warn!(stream = %step.id, from = %step.from, to = %step.to, reason = %step.reason, "tier lowered");
            } else {
                tracing::info!(stream = %step.id, from = %step.from, to = %step.to, reason = %step.reason, "tier restored");
            }
            // The decode thread applies it at its next packet, and raises, updates or clears
            // monitor.degraded.
            shared.tier.set(step.to);
        }
    }
}
