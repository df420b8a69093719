//! Automatic degradation: when the host falls behind real time, lower the fidelity tier of the
//! lowest-priority streams first; when capacity returns, restore the highest-priority first.
//!
//! The policy is pure (no threads, no clocks of its own): the service feeds it, every tick, each
//! stream's priority, configured tier (the ceiling), current tier, lag, and the CPU time it held
//! a permit for, and applies the steps it returns.
//!
//! - **Behind**: a stream whose smoothed lag is over `behind_s` and still growing (it rose over
//!   the last [`GROWTH_WINDOW_S`]), or whose socket dropped datagrams since the last tick (the
//!   kernel threw data away because avmon read too late: the lag cannot show that, the data
//!   is gone). A lag that is large but not growing is a stream catching up, or a start-up delay.
//! - **How much to shed**: each stream's CPU use over the window is what its permit was held
//!   for; a stream that falls behind would need that much more to keep up (scaled by the lag's
//!   growth per second, or the share of its datagrams lost). The excess of that demand over
//!   [`TARGET_LOAD`] of the permits is what one degradation step sheds, using each tier's
//!   measured [`relative_cost`]: so a host far over capacity converges in one or two steps, not
//!   one stream per step.
//! - **Degrade**: while any stream is behind, lower streams one tier at a time (full →
//!   reference → keyframes → transport), the lowest priority first and equals evenly, until the
//!   excess is shed (one step when CPU use is not known yet), at most every `step_s` (the last
//!   step must have had time to show). A lower tier anywhere frees CPU for all, since the
//!   streams share the scheduler's permits. When nothing is left to lower, the decision says so
//!   (`exhausted`): the service then raises `monitor.behind` on the streams behind.
//! - **Restore**: after `restore_after_s` with every stream comfortably in time (lag under half
//!   of `behind_s`, no drops) and no step either way, one step up on the highest-priority
//!   degraded stream, never above its configured tier, and on the next ones too, as long as
//!   the estimated demand stays under [`RESTORE_LOAD`] (when CPU use is not known, one step:
//!   a probe). Each restore waits as long again.
//! - **Hysteresis**: a host that falls behind again soon after a restore (within twice the hold)
//!   doubles the hold before the next restore (up to 16×), so a host at the edge does not
//!   flap; a long calm brings it back to `restore_after_s`.

use std::collections::{BTreeMap, VecDeque};

use avmon_core::Tier;

/// Over this window the lag must have risen to count as growing, and CPU use is measured,
/// seconds.
pub const GROWTH_WINDOW_S: f64 = 2.0;
/// How much it must have risen over the window to count as growing, seconds.
const GROWTH_MIN_S: f64 = 0.2;
/// Smoothing of the lag samples (exponential, weight of the newest).
const SMOOTHING: f64 = 0.5;
/// The restore hold grows to at most this multiple of `restore_after_s`.
const MAX_HOLD_FACTOR: f64 = 16.0;
/// Degradation sheds load until the estimated demand fits in this share of the permits.
const TARGET_LOAD: f64 = 0.85;
/// Restores are made while the estimated demand after them stays under this share.
const RESTORE_LOAD: f64 = 0.7;
/// TS packets in a datagram (1316-byte payloads), to weigh socket drops against packets read.
const PACKETS_PER_DATAGRAM: f64 = 7.0;
/// The most a step believes a stream falls short by: its demand is taken as at most twice its
/// use. Early lags (start-up, a burst) overstate the shortfall; a host further over capacity is
/// caught up with by the next steps, 2 s apart.
const MAX_SLOWDOWN: f64 = 0.5;
/// A stream's known CPU use needs this much history, seconds.
const MIN_RATE_WINDOW_S: f64 = 1.0;

/// A tier's CPU cost relative to `full`, as `bench/tiers.sh` measured it on 720p25 H.264 + AAC
/// (docs/cost.md): what lowering or raising a stream is expected to save or cost.
pub fn relative_cost(t: Tier) -> f64 {
    match t {
        Tier::Full => 1.0,
        Tier::Reference => 0.72,
        Tier::Keyframes => 0.22,
        Tier::Transport => 0.09,
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct PolicyConfig {
    /// A stream is behind when its lag is over this, seconds, and growing.
    pub behind_s: f64,
    /// Sustained headroom before a tier is raised again, seconds.
    pub restore_after_s: f64,
    /// Least time between two degradation steps, seconds.
    pub step_s: f64,
    /// The CPU permits the streams share (`[service] workers`).
    pub capacity: f64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            behind_s: 2.0,
            restore_after_s: 30.0,
            step_s: 2.0,
            capacity: 1.0,
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
    /// TS packets it read in all.
    pub packets: u64,
    /// Seconds it held a CPU permit in all ([`avmon_core::sched::Slot::busy_s`]; 0 when not
    /// known).
    pub busy_s: f64,
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

/// What one tick decided.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    /// Tier changes to make now (at most one per stream; it may skip tiers).
    pub steps: Vec<Step>,
    /// The streams behind real time now, and why.
    pub behind: Vec<(String, String)>,
    /// Streams are behind and none can be lowered further: more capacity is needed.
    pub exhausted: bool,
}

#[derive(Clone, Copy)]
struct Point {
    at: f64,
    lag: f64,
    busy: f64,
    packets: u64,
    drops: u64,
}

#[derive(Default)]
struct Track {
    smooth: Option<f64>,
    /// The last growth window's samples.
    history: VecDeque<Point>,
}

/// One stream's figures at a tick.
struct View {
    behind: Option<String>,
    calm: bool,
    /// CPU permits it used over the window; `None` until known.
    rate: Option<f64>,
    /// What it would use if it kept up: `rate` scaled up by how much it falls behind (the lag
    /// growing, or datagrams lost).
    demand: Option<f64>,
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

/// Record `step` in `steps`, merging it with an earlier one for the same stream.
fn push_step(steps: &mut Vec<Step>, step: Step) {
    match steps.iter_mut().find(|s| s.id == step.id) {
        Some(s) => s.to = step.to,
        None => steps.push(step),
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

    /// Update a stream's track with its sample and read its figures.
    fn observe(&mut self, now: f64, s: &Sample) -> View {
        let t = self.tracks.entry(s.id.clone()).or_default();
        let lag = s.lag_s.max(0.0);
        let smooth = match t.smooth {
            Some(prev) => prev + SMOOTHING * (lag - prev),
            None => lag,
        };
        t.smooth = Some(smooth);
        // Drops since the last tick (none counted on a stream's first).
        let new_drops = t
            .history
            .back()
            .map_or(0, |p| s.drops.saturating_sub(p.drops));
        while t
            .history
            .front()
            .is_some_and(|p| p.at < now - GROWTH_WINDOW_S)
        {
            t.history.pop_front();
        }
        let oldest = t.history.front().copied();
        t.history.push_back(Point {
            at: now,
            lag: smooth,
            busy: s.busy_s,
            packets: s.packets,
            drops: s.drops,
        });
        let growing = oldest.is_some_and(|o| smooth > o.lag + GROWTH_MIN_S);
        let behind = if !s.active {
            None
        } else if smooth > self.cfg.behind_s && growing {
            Some(format!(
                "{} is {:.1} s behind real time and slipping",
                s.id, smooth
            ))
        } else if new_drops > 0 {
            Some(format!(
                "{} lost {new_drops} datagrams: its input was read too late",
                s.id
            ))
        } else {
            None
        };
        let calm = !s.active || (smooth < self.cfg.behind_s / 2.0 && new_drops == 0);
        let (mut rate, mut demand) = (None, None);
        if let Some(o) = oldest.filter(|o| now - o.at >= MIN_RATE_WINDOW_S && s.busy_s > 0.0) {
            let dt = now - o.at;
            let r = ((s.busy_s - o.busy) / dt).max(0.0);
            // Media time lost per wall second: the lag's growth, or the share of the input
            // the socket threw away.
            let growth = ((smooth - o.lag) / dt).max(0.0);
            let dropped = s.drops.saturating_sub(o.drops) as f64 * PACKETS_PER_DATAGRAM;
            let read = s.packets.saturating_sub(o.packets) as f64;
            let lost = if dropped > 0.0 {
                dropped / (dropped + read)
            } else {
                0.0
            };
            let slowdown = growth.max(lost).min(MAX_SLOWDOWN);
            rate = Some(r);
            demand = Some(if s.active && (behind.is_some() || slowdown > 0.0) {
                r / (1.0 - slowdown)
            } else {
                r
            });
        }
        View {
            behind,
            calm,
            rate,
            demand,
        }
    }

    /// One tick at time `now` (seconds, any origin, increasing).
    ///
    /// While any stream is behind, and the last step has had `step_s` to show: when every
    /// active stream's CPU use is known, lower streams (lowest priority first, one tier at a
    /// time, evenly among equals) until the estimated demand fits in [`TARGET_LOAD`] of the
    /// permits, in one go; otherwise one step. After the hold with every stream in time,
    /// restore the highest-priority streams while the estimated demand stays under
    /// [`RESTORE_LOAD`] (one step when CPU use is not known).
    pub fn tick(&mut self, now: f64, streams: &[Sample]) -> Decision {
        self.tracks
            .retain(|id, _| streams.iter().any(|s| &s.id == id));
        let views: Vec<View> = streams.iter().map(|s| self.observe(now, s)).collect();
        let behind: Vec<(String, String)> = streams
            .iter()
            .zip(&views)
            .filter_map(|(s, v)| v.behind.clone().map(|r| (s.id.clone(), r)))
            .collect();
        let calm = views.iter().all(|v| v.calm);
        // Estimated demand per stream, when known for every active one.
        let demand: Option<Vec<f64>> = streams
            .iter()
            .zip(&views)
            .map(|(s, v)| {
                if s.active {
                    v.demand
                } else {
                    Some(v.rate.unwrap_or(0.0))
                }
            })
            .collect::<Option<Vec<f64>>>()
            .filter(|d| d.iter().sum::<f64>() > 0.0);
        let mut decision = Decision {
            behind,
            ..Decision::default()
        };
        let since_step = self.last_step.map_or(f64::INFINITY, |t| now - t);
        if let Some((_, reason)) = decision.behind.first().cloned() {
            self.calm_since = None;
            let lowerable = |s: &Sample| s.active && lower(s.tier).is_some();
            if !streams.iter().any(lowerable) {
                decision.exhausted = true;
                return decision;
            }
            if since_step < self.cfg.step_s {
                return decision;
            }
            let mut tiers: Vec<Tier> = streams.iter().map(|s| s.tier).collect();
            let mut cost = demand.clone().unwrap_or_default();
            let mut excess = demand.as_ref().map_or(0.0, |d| {
                d.iter().sum::<f64>() - TARGET_LOAD * self.cfg.capacity
            });
            // The lowest priority first; among equals, the most expensive tier first, so
            // equals are lowered evenly.
            while let Some(i) = (0..streams.len())
                .filter(|&i| streams[i].active && lower(tiers[i]).is_some())
                .min_by_key(|&i| (streams[i].priority, tiers[i], &streams[i].id))
            {
                let (from, to) = (tiers[i], lower(tiers[i]).unwrap_or(tiers[i]));
                push_step(
                    &mut decision.steps,
                    Step {
                        id: streams[i].id.clone(),
                        from: streams[i].tier,
                        to,
                        reason: reason.clone(),
                    },
                );
                tiers[i] = to;
                if let Some(c) = cost.get_mut(i) {
                    let saved = *c * (1.0 - relative_cost(to) / relative_cost(from));
                    *c -= saved;
                    excess -= saved;
                }
                if excess <= 0.0 {
                    break;
                }
            }
            if self
                .last_restore
                .is_some_and(|r| now - r < 2.0 * self.hold_s)
            {
                self.hold_s = (self.hold_s * 2.0).min(self.cfg.restore_after_s * MAX_HOLD_FACTOR);
            }
            self.last_step = Some(now);
            self.last_degrade = Some(now);
            return decision;
        }
        if !calm {
            self.calm_since = None;
            return decision;
        }
        let calm_since = *self.calm_since.get_or_insert(now);
        if now - calm_since < self.hold_s || since_step < self.hold_s {
            return decision;
        }
        // The highest priority first; among equals, the most degraded first.
        let mut order: Vec<usize> = (0..streams.len())
            .filter(|&i| streams[i].tier > streams[i].ceiling)
            .collect();
        order.sort_by_key(|&i| {
            (
                std::cmp::Reverse(streams[i].priority),
                std::cmp::Reverse(streams[i].tier),
                &streams[i].id,
            )
        });
        let mut load = demand.as_ref().map(|d| d.iter().sum::<f64>());
        let reason = format!(
            "capacity returned: every stream within {:.1} s of real time for {:.0} s",
            self.cfg.behind_s / 2.0,
            now - calm_since
        );
        for i in order {
            let s = &streams[i];
            let Some(to) = higher(s.tier).map(|t| t.max(s.ceiling)) else {
                continue;
            };
            if let (Some(l), Some(d)) = (load.as_mut(), demand.as_ref()) {
                let more = d[i] * (relative_cost(to) / relative_cost(s.tier) - 1.0);
                // Known CPU use is trusted: no restore the headroom cannot take.
                if *l + more > RESTORE_LOAD * self.cfg.capacity {
                    break;
                }
                *l += more;
            }
            decision.steps.push(Step {
                id: s.id.clone(),
                from: s.tier,
                to,
                reason: reason.clone(),
            });
            if load.is_none() {
                break;
            }
        }
        if decision.steps.is_empty() {
            return decision;
        }
        if self
            .last_degrade
            .is_none_or(|d| now - d > 10.0 * self.cfg.restore_after_s)
        {
            self.hold_s = self.cfg.restore_after_s;
        }
        self.last_step = Some(now);
        self.last_restore = Some(now);
        decision
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
            capacity: 1.0,
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
            packets: 0,
            busy_s: 0.0,
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
            for step in p.tick(t, streams).steps {
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

    /// A host of `capacity` permits and streams that need `base[i]` of a permit at `full`,
    /// at tiers whose true costs differ from [`relative_cost`]'s estimates. Over capacity,
    /// each stream gets a proportional share and its lag grows by what it misses; the policy
    /// ticks every 0.5 s.
    struct Host {
        capacity: f64,
        base: Vec<f64>,
        streams: Vec<Sample>,
        t: f64,
        /// CPU use not reported (as before the scheduler counted it).
        blind: bool,
    }

    fn true_cost(t: Tier) -> f64 {
        match t {
            Tier::Full => 1.0,
            Tier::Reference => 0.8,
            Tier::Keyframes => 0.3,
            Tier::Transport => 0.12,
        }
    }

    impl Host {
        fn new(capacity: f64, base: &[f64]) -> Self {
            let streams = (0..base.len())
                .map(|i| {
                    let mut x = s(&format!("s{i:02}"), 100, Tier::Full, Tier::Full, 0.0);
                    x.busy_s = 1e-6;
                    x
                })
                .collect();
            Host {
                capacity,
                base: base.to_vec(),
                streams,
                t: 0.0,
                blind: false,
            }
        }

        fn demand(&self) -> f64 {
            (self.streams.iter().zip(&self.base))
                .map(|(s, b)| b * true_cost(s.tier))
                .sum()
        }

        /// Run for `secs`.
        fn run(&mut self, p: &mut Policy, secs: f64) -> Outcome {
            let mut o = Outcome::default();
            let end = self.t + secs;
            while self.t < end {
                let d = self.demand();
                let share = (self.capacity / d).min(1.0);
                for (x, b) in self.streams.iter_mut().zip(&self.base) {
                    let got = b * true_cost(x.tier) * share;
                    if !self.blind {
                        x.busy_s += got * 0.5;
                    }
                    x.packets += 100;
                    x.lag_s = if share < 1.0 {
                        x.lag_s + 0.5 * (1.0 - share)
                    } else {
                        (x.lag_s - 0.5).max(0.0)
                    };
                }
                let dec = p.tick(self.t, &self.streams);
                if !dec.behind.is_empty() {
                    o.last_behind = Some(self.t);
                }
                o.exhausted += usize::from(dec.exhausted);
                o.most_at_once = o.most_at_once.max(dec.steps.len());
                for step in dec.steps {
                    let x = self.streams.iter_mut().find(|x| x.id == step.id).unwrap();
                    assert_eq!(x.tier, step.from);
                    x.tier = step.to;
                    o.steps += 1;
                }
                self.t += 0.5;
            }
            o
        }
    }

    #[derive(Default)]
    struct Outcome {
        /// The last tick any stream was behind at.
        last_behind: Option<f64>,
        /// Ticks that said nothing was left to lower.
        exhausted: usize,
        steps: usize,
        /// The most steps one tick made.
        most_at_once: usize,
    }

    #[test]
    fn a_host_far_over_capacity_sheds_what_it_measures_in_a_few_steps_not_one_per_stream() {
        // 16 streams needing 0.3 of a permit each on 1 permit: 4.8 times over.
        let mut host = Host::new(1.0, &[0.3; 16]);
        let mut p = Policy::new(cfg());
        let o = host.run(&mut p, 120.0);
        let settled = o.last_behind.expect("it was behind at first");
        assert!(settled < 15.0, "in time after {settled} s");
        assert_eq!(o.exhausted, 0);
        assert!(o.most_at_once >= 8, "{}", o.most_at_once);
        let d = host.demand();
        assert!(d <= 1.0, "fits: {d}");
        assert!(d > 0.5, "not shed far beyond the need: {d}");

        // The same host when CPU use is unknown: one stream per step_s, much slower.
        let mut blind = Host::new(1.0, &[0.3; 16]);
        blind.blind = true;
        for x in &mut blind.streams {
            x.busy_s = 0.0;
        }
        let mut p = Policy::new(cfg());
        let blind_settled = blind.run(&mut p, 120.0).last_behind.unwrap();
        assert!(
            blind_settled > 2.0 * settled,
            "{blind_settled} s against {settled} s"
        );
    }

    #[test]
    fn when_nothing_is_left_to_lower_the_decision_says_so_and_names_the_streams_behind() {
        // Even at transport, 4 streams of 4 permits each at full need about 1.9 permits of 1.
        let mut host = Host::new(1.0, &[4.0; 4]);
        let mut p = Policy::new(cfg());
        let o = host.run(&mut p, 60.0);
        assert!(host.streams.iter().all(|x| x.tier == Tier::Transport));
        assert!(o.exhausted > 10, "{}", o.exhausted);
        assert!(o.last_behind.is_some_and(|t| t > 55.0));
        let dec = p.tick(host.t, &host.streams);
        assert!(dec.exhausted && dec.steps.is_empty());
        assert_eq!(dec.behind.len(), 4, "{:?}", dec.behind);
    }

    #[test]
    fn when_capacity_returns_several_streams_are_restored_at_once_within_the_headroom() {
        let mut host = Host::new(2.0, &[0.5; 8]);
        let mut p = Policy::new(cfg());
        host.run(&mut p, 30.0);
        let lowered = host.streams.iter().filter(|x| x.tier > Tier::Full).count();
        assert!(lowered >= 4, "{lowered}");
        // The load falls to a tenth: room for everything at full.
        host.base = vec![0.05; 8];
        let o = host.run(&mut p, 60.0);
        assert!(host.streams.iter().all(|x| x.tier == Tier::Full));
        assert!(o.most_at_once >= 4, "{} at once", o.most_at_once);
        assert!(o.last_behind.is_none());
        assert!(host.demand() <= 0.7 * 2.0);
    }
}
