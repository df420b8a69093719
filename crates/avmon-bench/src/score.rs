//! Scoring detections against labels: precision, recall and onset error per kind.
//!
//! A *truth* is a labelled defect (kind, start, end) in one corpus item; a *detection* is an
//! event a monitor reported (kind, start, end). A detection **matches** a truth of the same kind
//! when their intervals overlap, with `slack` seconds of tolerance on either side (an instant
//! defect such as a click is labelled as a short interval).
//!
//! - **Recall** of a kind: the share of its truths matched by at least one detection.
//! - **Precision**: the share of detections that match a truth. A detection of a kind the item
//!   lists as *incidental* (a side effect the recipe causes, e.g. a hot gain step that also
//!   clips) is neither right nor wrong and is not counted.
//! - **Onset error** of a matched truth: |start of the earliest matching detection − truth
//!   start|. Reported as the median and the worst over all matched truths.

use std::collections::BTreeMap;

use serde::Serialize;

/// A labelled or reported defect.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Span {
    pub kind: String,
    pub start: f64,
    pub end: f64,
}

impl Span {
    pub fn new(kind: &str, start: f64, end: f64) -> Self {
        Span {
            kind: kind.to_string(),
            start,
            end,
        }
    }

    pub fn matches(&self, other: &Span, slack: f64) -> bool {
        self.kind == other.kind
            && self.start <= other.end + slack
            && self.end + slack >= other.start
    }
}

/// Running counts for one kind.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Tally {
    /// Labelled defects.
    pub truths: usize,
    /// Labelled defects found.
    pub found: usize,
    /// Detections counted (incidental ones left out).
    pub detections: usize,
    /// Detections that match a label.
    pub correct: usize,
    /// Onset error of each found defect, seconds.
    pub onset_errors: Vec<f64>,
    /// Items where a label was missed or a detection was wrong, for looking into.
    pub misses: Vec<String>,
    pub false_alarms: Vec<String>,
}

impl Tally {
    /// `None` when there was nothing to measure.
    pub fn precision(&self) -> Option<f64> {
        (self.detections > 0).then(|| self.correct as f64 / self.detections as f64)
    }

    pub fn recall(&self) -> Option<f64> {
        (self.truths > 0).then(|| self.found as f64 / self.truths as f64)
    }

    pub fn median_onset_error(&self) -> Option<f64> {
        median(&self.onset_errors)
    }

    pub fn worst_onset_error(&self) -> Option<f64> {
        self.onset_errors.iter().copied().reduce(f64::max)
    }
}

/// Tallies per kind.
pub type Scores = BTreeMap<String, Tally>;

/// Score one item's detections against its truths, adding to `scores`. Kinds in `incidental`
/// are not counted as false alarms in this item; `item` names it in the miss lists.
pub fn score_item(
    item: &str,
    truths: &[Span],
    incidental: &[String],
    detections: &[Span],
    slack: f64,
    scores: &mut Scores,
) {
    for t in truths {
        let tally = scores.entry(t.kind.clone()).or_default();
        tally.truths += 1;
        let first = detections
            .iter()
            .filter(|d| d.matches(t, slack))
            .map(|d| d.start)
            .reduce(f64::min);
        match first {
            Some(start) => {
                tally.found += 1;
                tally.onset_errors.push((start - t.start).abs());
            }
            None => tally.misses.push(format!("{item} @{:.2}", t.start)),
        }
    }
    for d in detections {
        let labelled = truths.iter().any(|t| t.matches(d, slack));
        if !labelled && incidental.contains(&d.kind) {
            continue;
        }
        let tally = scores.entry(d.kind.clone()).or_default();
        tally.detections += 1;
        if labelled {
            tally.correct += 1;
        } else {
            tally
                .false_alarms
                .push(format!("{item} @{:.2}-{:.2}", d.start, d.end));
        }
    }
}

pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(kind: &str, a: f64, b: f64) -> Span {
        Span::new(kind, a, b)
    }

    #[test]
    fn a_found_defect_counts_once_with_its_onset_error() {
        let mut scores = Scores::new();
        let truths = [s("video.black", 8.0, 12.0)];
        // Two detections of the same defect (a split event): both match, the earliest sets
        // the onset error.
        let dets = [s("video.black", 8.3, 10.0), s("video.black", 10.5, 12.0)];
        score_item("a", &truths, &[], &dets, 0.5, &mut scores);
        let t = &scores["video.black"];
        assert_eq!((t.truths, t.found, t.detections, t.correct), (1, 1, 2, 2));
        assert!((t.onset_errors[0] - 0.3).abs() < 1e-9);
        assert_eq!(t.precision(), Some(1.0));
        assert_eq!(t.recall(), Some(1.0));
    }

    #[test]
    fn misses_and_false_alarms() {
        let mut scores = Scores::new();
        let truths = [s("video.freeze", 8.0, 12.0), s("audio.silence", 20.0, 24.0)];
        let dets = [
            s("video.freeze", 30.0, 33.0),  // wrong place
            s("audio.silence", 19.8, 24.0), // right
            s("source.down", 1.0, 2.0),     // nothing labelled
        ];
        score_item("b", &truths, &[], &dets, 0.5, &mut scores);
        let f = &scores["video.freeze"];
        assert_eq!((f.truths, f.found, f.detections, f.correct), (1, 0, 1, 0));
        assert_eq!(f.misses, ["b @8.00"]);
        assert_eq!(f.false_alarms.len(), 1);
        let d = &scores["source.down"];
        assert_eq!((d.truths, d.detections, d.correct), (0, 1, 0));
        assert_eq!(d.recall(), None);
        assert_eq!(d.precision(), Some(0.0));
    }

    #[test]
    fn slack_lets_instant_defects_match_and_incidental_kinds_are_not_counted() {
        let mut scores = Scores::new();
        let truths = [s("audio.dropout", 10.0, 10.02)];
        let dets = [
            s("audio.dropout", 10.3, 10.3),
            s("audio.clipping", 4.0, 6.0),
            s("audio.loudness", 4.0, 6.0),
        ];
        let incidental = ["audio.loudness".to_string()];
        score_item("c", &truths, &incidental, &dets, 0.5, &mut scores);
        assert_eq!(scores["audio.dropout"].found, 1);
        assert!(!scores.contains_key("audio.loudness"));
        assert_eq!(scores["audio.clipping"].detections, 1);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}
