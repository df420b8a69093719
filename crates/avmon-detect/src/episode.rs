//! The life of one defect, shared by the detectors that measure a condition frame by frame or
//! window by window (black, freeze, silence).
//!
//! A detector classifies each stretch of media as affected (`bad(start, end)`) or not
//! (`good(t)`). The episode remembers the *onset* (the start of the first affected stretch), emits
//! [`FindingEdge::Begin`](avmon_core::FindingEdge) with that onset once the affected run covers
//! `min_duration`, and [`FindingEdge::End`](avmon_core::FindingEdge) at the first unaffected time.
//!
//! A [`reset`](Episode::reset) (reconnect) while a defect is open cannot emit anything (the trait's
//! `reset` has no output), yet the alert engine must hear that the defect ended, or its alert stays
//! raised forever. So the episode keeps the end of the last affected stretch and emits the `End`
//! (with `"reset": true`) at the detector's next call, on the old connection's clock.

use avmon_core::{round_ms, Details, Finding, Findings, Severity};

/// Slack for comparing media times built from frame counts (49/25 + 0.04 is not exactly 2.0).
pub(crate) const TIME_EPS: f64 = 1e-6;

/// Insert a measured value, rounded to 4 decimals (JSON shows `0.9812`, not `0.981234567`).
pub(crate) fn put(d: &mut Details, key: &str, v: f64) {
    d.insert(key.to_owned(), ((v * 1e4).round() / 1e4).into());
}

#[derive(Clone, Debug)]
pub(crate) struct Episode {
    kind: &'static str,
    severity: Severity,
    min_duration: f64,
    /// Start of the current affected run, if any.
    onset: Option<f64>,
    /// End of the last affected stretch seen.
    last_bad_end: f64,
    /// A Begin was emitted and its End was not.
    open: bool,
    /// A Begin was emitted before a reset: End owed at `last_bad_end`.
    orphan: bool,
}

impl Episode {
    pub fn new(kind: &'static str, severity: Severity, min_duration: f64) -> Self {
        Episode {
            kind,
            severity,
            min_duration,
            onset: None,
            last_bad_end: 0.0,
            open: false,
            orphan: false,
        }
    }

    /// Whether an affected run is under way (open or still shorter than `min_duration`).
    pub fn in_run(&self) -> bool {
        self.onset.is_some()
    }

    /// The media over `[start, end)` is affected. `details` fills the Begin's details (called only
    /// when a Begin is emitted). A detector that accumulates per-run values checks
    /// [`in_run`](Self::in_run) first to know whether this stretch starts a new run.
    pub fn bad(
        &mut self,
        start: f64,
        end: f64,
        out: &mut Findings,
        details: impl FnOnce(&mut Details),
    ) {
        self.flush(out);
        let onset = *self.onset.get_or_insert(start);
        self.last_bad_end = end.max(start);
        if !self.open && self.last_bad_end - onset >= self.min_duration - TIME_EPS {
            self.open = true;
            let mut d = Details::new();
            details(&mut d);
            out.push(Finding::begin(self.kind, self.severity, onset, d));
        }
    }

    /// The media from `t` on is not affected: ends the run; emits End at `t` if a Begin was
    /// emitted. `details` fills the End's details (`duration_s` is added here).
    pub fn good(&mut self, t: f64, out: &mut Findings, details: impl FnOnce(&mut Details)) {
        self.flush(out);
        if let Some(onset) = self.onset.take() {
            if self.open {
                self.open = false;
                let mut d = Details::new();
                details(&mut d);
                d.insert("duration_s".into(), round_ms((t - onset).max(0.0)).into());
                out.push(Finding::end(self.kind, self.severity, t, d));
            }
        }
    }

    /// Emit an End owed since a reset. Call at the top of every detector entry point.
    pub fn flush(&mut self, out: &mut Findings) {
        if self.orphan {
            self.orphan = false;
            let mut d = Details::new();
            d.insert("reset".into(), true.into());
            out.push(Finding::end(self.kind, self.severity, self.last_bad_end, d));
        }
    }

    /// Forget the run (reconnect). An open defect's End is owed: see the module docs.
    pub fn reset(&mut self) {
        self.orphan |= self.open;
        self.open = false;
        self.onset = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use avmon_core::FindingEdge;

    #[test]
    fn begin_at_onset_once_min_duration_is_covered_end_at_first_good_time() {
        let mut e = Episode::new("x", Severity::Major, 1.0);
        let mut out = Vec::new();
        for i in 0..30 {
            let t = 0.5 + i as f64 / 25.0;
            e.bad(t, t + 0.04, &mut out, |_| {});
            assert_eq!(out.len(), usize::from(i >= 24), "frame {i}");
        }
        assert_eq!(out[0].t, 0.5);
        assert_eq!(out[0].edge, FindingEdge::Begin);
        e.good(1.7, &mut out, |_| {});
        assert_eq!(out[1].edge, FindingEdge::End);
        assert_eq!(out[1].t, 1.7);
        assert_eq!(out[1].details["duration_s"], 1.2);
        e.good(1.74, &mut out, |_| {});
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn reset_while_open_owes_an_end_on_the_old_clock() {
        let mut e = Episode::new("x", Severity::Major, 0.1);
        let mut out = Vec::new();
        e.bad(5.0, 5.2, &mut out, |_| {});
        e.reset();
        e.reset();
        e.good(0.0, &mut out, |_| {});
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].edge, FindingEdge::End);
        assert_eq!(out[1].t, 5.2);
        assert_eq!(out[1].details["reset"], true);
        // A reset with nothing open owes nothing.
        e.reset();
        e.good(1.0, &mut out, |_| {});
        assert_eq!(out.len(), 2);
    }
}
