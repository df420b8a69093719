//! Automatic degradation: when the host falls behind real time, lower the fidelity tier of the
//! lowest-priority streams first; when capacity returns, restore the highest-priority first.
//!
//! The policy is pure (no threads, no clocks of its own): the service feeds it, every tick, each
//! stream's priority, configured tier (the ceiling), current tier and lag, and applies the
//! steps it returns.
//!
//! - **Behind**: a stream whose smoothed lag is over `behind_s` and still growing (it rose over
//!   the last [`GROWTH_WINDOW_S`]), or whose socket dropped datagrams since the last tick (the
//!   kernel threw data away because avmon read too late: the lag cannot show that, the data
//!   is gone). A lag that is large but not growing is a stream catching up, or a start-up delay.
//! - **Degrade**: while any stream is behind, one step (full → reference → keyframes →
//!   transport) on the lowest-priority stream that can still go lower, at most every `step_s`
//!   (the last step must have had time to show). A lower tier anywhere frees CPU for all, since
//!   the streams share the scheduler's permits.
//! - **Restore**: after `restore_after_s` with every stream comfortably in time (lag under half
//!   of `behind_s`, no drops) and no step either way, one step up on the highest-priority
//!   degraded stream, never above its configured tier. Each restore waits as long again.
//! - **Hysteresis**: a host that falls behind again soon after a restore (within twice the hold)
//!   doubles the hold before the next restore (up to 16×), so a host at the edge does not
//!   flap; a long calm brings it back to `restore_after_s`.

use std::collections::{BTreeMap, VecDeque};

use avmon_core::Tier;

/// Over this window the lag must have risen to count as growing, seconds.
pub const GROWTH_WINDOW_S: f64 = 2.0;
/// How much it must have risen over the window to count as growing, seconds.
const GROWTH_MIN_S: f64 = 0.2;
/// Smoothing of the lag samples (exponential, weight of the newest).
const SMOOTHING: f64 = 0.5;
/// The restore hold grows to at most this multiple of `restore_after_s`.
const MAX_HOLD_FACTOR: f64 = 16.0;

#[derive(Clone, Debug, PartialEq)]
pub struct PolicyConfig {
    /// A stream is behind when its lag is over this, seconds, and growing.
    pub behind_s: f64,
    /// Sustained headroom before a tier is raised again, seconds.
    pub restore_after_s: f64,
    /// Least time between two degradation steps, seconds.
    pub step_s: f64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            behind_s: 2.0,
            restore_after_s: 30.0,
            step_s: 2.0,
        }
    }
}

/// One stream as the policy sees it at a tick.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub id: String,
    pub priority: u32,
    /// The configured tier: degradation never restores above it.
    pub ceiling: Tier,
    pub tier: Tier,
    /// Seconds behind real time, as measured now (unsmoothed).
    pub lag_s: f64,
    /// Datagrams its socket dropped in all (0 when not known).
    pub drops: u64,
    /// Whether media flows (a stream down or starting costs no CPU: not a candidate to lower).
    pub active: bool,
}

/// A tier change the service is to make.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub id: String,
    pub from: Tier,
    pub to: Tier,
    /// Why, for the log and the `monitor.degraded` alert.
    pub reason: String,
}

#[derive(Default)]
struct Track {
    smooth: Option<f64>,
    /// (time, smoothed lag) over the last growth window.
    history: VecDeque<(f64, f64)>,
    drops: Option<u64>,
}

/// The degradation policy's state across ticks.
pub struct Policy {
    cfg: PolicyConfig,
    tracks: BTreeMap<String, Track>,
    /// When the last step (either way) was made.
    last_step: Option<f64>,
    last_degrade: Option<f64>,
    last_restore: Option<f64>,
    /// Since when every stream is comfortably in time.
    calm_since: Option<f64>,
    /// Headroom needed before the next restore, seconds.
    hold_s: f64,
}

fn lower(t: Tier) -> Option<Tier> {
    match t {
        Tier::Full => Some(Tier::Reference),
        Tier::Reference => Some(Tier::Keyframes),
        Tier::Keyframes => Some(Tier::Transport),
        Tier::Transport => None,
    }
}

fn higher(t: Tier) -> Option<Tier> {
    match t {
        Tier::Full => None,
        Tier::Reference => Some(Tier::Full),
        Tier::Keyframes => Some(Tier::Reference),
        Tier::Transport => Some(Tier::Keyframes),
    }
}

impl Policy {
    pub fn new(cfg: PolicyConfig) -> Self {
        Policy {
            hold_s: cfg.restore_after_s,
            cfg,
            tracks: BTreeMap::new(),
            last_step: None,
            last_degrade: None,
            last_restore: None,
            calm_since: None,
        }
    }

    /// The smoothed lag of a stream, as of the last tick.
    pub fn lag_s(&self, id: &str) -> Option<f64> {
        self.tracks.get(id).and_then(|t| t.smooth)
    }

    /// One tick at time `now` (seconds, any origin, increasing): at most one step.
    pub fn tick(&mut self, now: f64, streams: &[Sample]) -> Option<Step> {
        self.tracks
            .retain(|id, _| streams.iter().any(|s| &s.id == id));
        let mut behind: Option<(String, String)> = None;
        let mut calm = true;
        for s in streams {
            let t = self.tracks.entry(s.id.clone()).or_default();
            let lag = s.lag_s.max(0.0);
            let smooth = match t.smooth {
                Some(prev) => prev + SMOOTHING * (lag - prev),
                None => lag,
            };
            t.smooth = Some(smooth);
            while t
                .history
                .front()
                .is_some_and(|&(at, _)| at < now - GROWTH_WINDOW_S)
            {
                t.history.pop_front();
            }
            let oldest = t.history.front().map(|&(_, l)| l);
            t.history.push_back((now, smooth));
            let new_drops = match t.drops.replace(s.drops) {
                Some(before) => s.drops.saturating_sub(before),
                None => 0,
            };
            if !s.active {
                continue;
            }
            let growing = oldest.is_some_and(|o| smooth > o + GROWTH_MIN_S);
            if behind.is_none() {
                if smooth > self.cfg.behind_s && growing {
                    behind = Some((
                        s.id.clone(),
                        format!("{} is {:.1} s behind real time and slipping", s.id, smooth),
                    ));
                } else if new_drops > 0 {
                    behind = Some((
                        s.id.clone(),
                        format!(
                            "{} lost {new_drops} datagrams: its input was read too late",
                            s.id
                        ),
                    ));
                }
            }
            if smooth >= self.cfg.behind_s / 2.0 || new_drops > 0 {
                calm = false;
            }
        }
        let since_step = self.last_step.map_or(f64::INFINITY, |t| now - t);
        if let Some((_, reason)) = behind {
            self.calm_since = None;
            if since_step < self.cfg.step_s {
                return None;
            }
            // The lowest priority first; among equals, the most expensive tier first, so
            // equals are lowered evenly.
            let victim = streams
                .iter()
                .filter(|s| s.active && lower(s.tier).is_some())
                .min_by_key(|s| (s.priority, s.tier, &s.id))?;
            if self
                .last_restore
                .is_some_and(|r| now - r < 2.0 * self.hold_s)
            {
                self.hold_s = (self.hold_s * 2.0).min(self.cfg.restore_after_s * MAX_HOLD_FACTOR);
            }
            self.last_step = Some(now);
            self.last_degrade = Some(now);
            return Some(Step {
                id: victim.id.clone(),
                from: victim.tier,
                to: lower(victim.tier)?,
                reason,
            });
        }
        if !calm {
            self.calm_since = None;
            return None;
        }
        let calm_since = *self.calm_since.get_or_insert(now);
        if now - calm_since < self.hold_s || since_step < self.hold_s {
            return None;
        }
        // The highest priority first; among equals, the most degraded first.
        let lucky = streams
            .iter()
            .filter(|s| s.tier > s.ceiling)
            .max_by_key(|s| (s.priority, s.tier, std::cmp::Reverse(&s.id)))?;
        if self
            .last_degrade
            .is_none_or(|d| now - d > 10.0 * self.cfg.restore_after_s)
        {
            self.hold_s = self.cfg.restore_after_s;
        }
        self.last_step = Some(now);
        self.last_restore = Some(now);
        let to = higher(lucky.tier)?.max(lucky.ceiling);
        Some(Step {
            id: lucky.id.clone(),
            from: lucky.tier,
            to,
            reason: format!(
                "capacity returned: every stream within {:.1} s of real time for {:.0} s",
                self.cfg.behind_s / 2.0,
                now - calm_since
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PolicyConfig {
        PolicyConfig {
            behind_s: 2.0,
            restore_after_s: 10.0,
            step_s: 2.0,
        }
    }

    fn s(id: &str, priority: u32, ceiling: Tier, tier: Tier, lag_s: f64) -> Sample {
        Sample {
            id: id.into(),
            priority,
            ceiling,
            tier,
            lag_s,
            drops: 0,
            active: true,
        }
    }

    /// Drive the policy every 0.5 s from `t0` to `t1`, applying its steps to `streams`, whose
    /// lags `lag(t, streams)` gives; the steps made.
    fn run(
        p: &mut Policy,
        streams: &mut [Sample],
        t0: f64,
        t1: f64,
        lag: &dyn Fn(f64, &[Sample]) -> Vec<f64>,
    ) -> Vec<Step> {
        let mut steps = Vec::new();
        let mut t = t0;
        while t < t1 {
            let lags = lag(t, streams);
            for (s, l) in streams.iter_mut().zip(lags) {
                s.lag_s = l;
            }
            if let Some(step) = p.tick(t, streams) {
                let s = streams.iter_mut().find(|s| s.id == step.id).unwrap();
                assert_eq!(s.tier, step.from);
                s.tier = step.to;
                steps.push(step);
            }
            t += 0.5;
        }
        steps
    }

    fn tiers(streams: &[Sample]) -> Vec<Tier> {
        streams.iter().map(|s| s.tier).collect()
    }

    #[test]
    fn lowest_priority_first_one_step_at_a_time_then_restored_highest_first() {
        use Tier::*;
        let mut p = Policy::new(cfg());
        let mut st = vec![
            s("hi", 200, Full, Full, 0.0),
            s("lo", 10, Full, Full, 0.0),
            s("mid", 50, Full, Full, 0.0),
        ];
        // Overloaded: the lag grows 1 s per second until two steps were taken.
        let slipping = |t: f64, st: &[Sample]| {
            let degraded: u8 = st.iter().map(|s| s.tier as u8 - s.ceiling as u8).sum();
            // Then in time, but not comfortably (under behind_s, over half of it).
            let l = if degraded < 2 { t } else { 1.5 };
            vec![l; st.len()]
        };
        let steps = run(&mut p, &mut st, 0.0, 10.0, &slipping);
        let order: Vec<(&str, Tier)> = steps.iter().map(|s| (s.id.as_str(), s.to)).collect();
        assert_eq!(order, vec![("lo", Reference), ("lo", Keyframes)]);
        assert!(steps[0].reason.contains("behind real time"), "{steps:?}");
        // Spaced by step_s at least.
        assert_eq!(tiers(&st), vec![Full, Keyframes, Full]);

        // Comfortable from now on: nothing for restore_after_s, then one step each 10 s.
        let calm = |_: f64, st: &[Sample]| vec![0.2; st.len()];
        let steps = run(&mut p, &mut st, 10.0, 19.0, &calm);
        assert!(steps.is_empty(), "held: {steps:?}");
        let steps = run(&mut p, &mut st, 19.0, 41.0, &calm);
        let order: Vec<(&str, Tier)> = steps.iter().map(|s| (s.id.as_str(), s.to)).collect();
        assert_eq!(order, vec![("lo", Reference), ("lo", Full)]);
        assert!(steps[0].reason.contains("capacity returned"));
        let steps = run(&mut p, &mut st, 41.0, 80.0, &calm);
        assert!(steps.is_empty(), "nothing above the ceiling: {steps:?}");
    }

    #[test]
    fn equal_priorities_are_lowered_evenly_and_the_high_one_keeps_full() {
        use Tier::*;
        let mut p = Policy::new(cfg());
        let mut st = vec![
            s("a", 100, Full, Full, 0.0),
            s("b", 100, Full, Full, 0.0),
            s("hi", 200, Full, Full, 0.0),
        ];
        let always = |t: f64, st: &[Sample]| vec![t; st.len()];
        let steps = run(&mut p, &mut st, 0.0, 30.0, &always);
        assert_eq!(steps.len(), 9, "every tier down to transport: {steps:?}");
        let ids: Vec<&str> = steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(&ids[..6], ["a", "b", "a", "b", "a", "b"]);
        assert_eq!(&ids[6..], ["hi", "hi", "hi"], "the high one last");
        assert_eq!(tiers(&st), vec![Transport; 3]);
        assert!(
            run(&mut p, &mut st, 30.0, 40.0, &always).is_empty(),
            "nothing lower to go"
        );
    }

    #[test]
    fn a_lag_that_does_not_grow_is_not_behind_and_drops_are() {
        use Tier::*;
        let mut p = Policy::new(cfg());
        let mut st = vec![s("a", 1, Full, Full, 0.0), s("b", 2, Full, Full, 0.0)];
        // A constant 5 s lag (start-up delay, or catching up): no step.
        let constant = |_: f64, st: &[Sample]| vec![5.0; st.len()];
        assert!(run(&mut p, &mut st, 0.0, 10.0, &constant).is_empty());
        // Drops on b's socket: behind though its lag is small; a (lower priority) goes first.
        st[1].drops = 6;
        let small = |_: f64, st: &[Sample]| vec![0.1; st.len()];
        let steps = run(&mut p, &mut st, 10.0, 10.5, &small);
        assert_eq!(steps.len(), 1, "{steps:?}");
        assert_eq!((steps[0].id.as_str(), steps[0].to), ("a", Reference));
        assert!(
            steps[0].reason.contains("lost 6 datagrams"),
            "{}",
            steps[0].reason
        );
    }

    #[test]
    fn the_ceiling_is_respected_and_inactive_streams_are_not_lowered() {
        use Tier::*;
        let mut p = Policy::new(cfg());
        let mut st = vec![
            s("down", 1, Full, Full, 0.0),
            s("kf", 5, Keyframes, Transport, 0.0),
            s("x", 50, Reference, Reference, 0.0),
        ];
        st[0].active = false;
        let slipping = |t: f64, st: &[Sample]| vec![t.min(4.0); st.len()];
        let steps = run(&mut p, &mut st, 0.0, 4.0, &slipping);
        assert_eq!(
            steps
                .iter()
                .map(|s| (s.id.as_str(), s.to))
                .collect::<Vec<_>>(),
            vec![("x", Keyframes)],
            "not the one that is down, nor the one at transport already"
        );
        let calm = |_: f64, st: &[Sample]| vec![0.0; st.len()];
        let steps = run(&mut p, &mut st, 4.0, 60.0, &calm);
        assert_eq!(
            steps
                .iter()
                .map(|s| (s.id.as_str(), s.to))
                .collect::<Vec<_>>(),
            vec![("x", Reference), ("kf", Keyframes)],
            "highest priority first, each to its own ceiling"
        );
    }

    #[test]
    fn falling_behind_soon_after_a_restore_doubles_the_hold() {
        use Tier::*;
        let mut p = Policy::new(cfg());
        let mut st = vec![s("a", 1, Full, Full, 0.0)];
        // At the edge: full is too much, reference is enough.
        let edge = |t: f64, st: &[Sample]| vec![if st[0].tier == Full { t % 1000.0 } else { 0.0 }];
        let mut restores = Vec::new();
        let mut t = 0.0;
        let mut base = 0.0;
        while t < 200.0 {
            let lag = |tt: f64, st: &[Sample]| edge(tt - base, st);
            for step in run(&mut p, &mut st, t, t + 0.5, &lag) {
                if step.to == Full {
                    restores.push(t);
                    base = t;
                }
            }
            t += 0.5;
        }
        assert!(restores.len() >= 3, "{restores:?}");
        let gaps: Vec<f64> = restores.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            gaps.windows(2).all(|g| g[1] > g[0] * 1.5),
            "each restore waits about twice as long: {gaps:?}"
        );
    }
}
