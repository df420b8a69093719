//! What the analyser reports: the indicators, their counters and their events: one per
//! occurrence, and for a condition that persists (a table, a PID, a PCR or a PTS that stopped
//! coming) one where it began and one where it ended.

use serde::{Deserialize, Serialize};

/// A TR 101 290 indicator (ETSI TR 101 290 §5.2.1 priority 1, §5.2.2 priority 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Indicator {
    /// 1.1 TS_sync_loss.
    SyncLoss,
    /// 1.2 Sync_byte_error.
    SyncByteError,
    /// 1.3.a PAT_error_2.
    PatError,
    /// 1.4 Continuity_count_error.
    CcError,
    /// 1.5.a PMT_error_2.
    PmtError,
    /// 1.6 PID_error.
    PidError,
    /// 2.1 Transport_error.
    TransportError,
    /// 2.2 CRC_error.
    CrcError,
    /// 2.3a PCR_repetition_error.
    PcrRepetitionError,
    /// 2.3b PCR_discontinuity_indicator_error.
    PcrDiscontinuityError,
    /// 2.4 PCR_accuracy_error.
    PcrAccuracyError,
    /// 2.5 PTS_error.
    PtsError,
    /// 2.6 CAT_error.
    CatError,
}

impl Indicator {
    pub const ALL: [Indicator; 13] = [
        Indicator::SyncLoss,
        Indicator::SyncByteError,
        Indicator::PatError,
        Indicator::CcError,
        Indicator::PmtError,
        Indicator::PidError,
        Indicator::TransportError,
        Indicator::CrcError,
        Indicator::PcrRepetitionError,
        Indicator::PcrDiscontinuityError,
        Indicator::PcrAccuracyError,
        Indicator::PtsError,
        Indicator::CatError,
    ];

    /// The finding kind: `transport.<indicator>`.
    pub fn kind(self) -> &'static str {
        match self {
            Indicator::SyncLoss => "transport.sync_loss",
            Indicator::SyncByteError => "transport.sync_byte_error",
            Indicator::PatError => "transport.pat_error",
            Indicator::CcError => "transport.cc_error",
            Indicator::PmtError => "transport.pmt_error",
            Indicator::PidError => "transport.pid_error",
            Indicator::TransportError => "transport.transport_error",
            Indicator::CrcError => "transport.crc_error",
            Indicator::PcrRepetitionError => "transport.pcr_repetition_error",
            Indicator::PcrDiscontinuityError => "transport.pcr_discontinuity_error",
            Indicator::PcrAccuracyError => "transport.pcr_accuracy_error",
            Indicator::PtsError => "transport.pts_error",
            Indicator::CatError => "transport.cat_error",
        }
    }

    /// Whether it is judged on an absence ("X does not occur for more than a limit": 1.3.a,
    /// 1.5.a, 1.6, 2.3a, 2.5), which lasts, so that its events can be [`Edge::Begin`] and
    /// [`Edge::End`]. 1.3.a and 1.5.a also fire [`Edge::Once`], on a scrambled packet or a
    /// foreign table.
    pub fn persists(self) -> bool {
        matches!(
            self,
            Indicator::PatError
                | Indicator::PmtError
                | Indicator::PidError
                | Indicator::PcrRepetitionError
                | Indicator::PtsError
        )
    }

    /// The name and number TR 101 290 gives it.
    pub fn clause(self) -> &'static str {
        match self {
            Indicator::SyncLoss => "1.1 TS_sync_loss",
            Indicator::SyncByteError => "1.2 Sync_byte_error",
            Indicator::PatError => "1.3.a PAT_error_2",
            Indicator::CcError => "1.4 Continuity_count_error",
            Indicator::PmtError => "1.5.a PMT_error_2",
            Indicator::PidError => "1.6 PID_error",
            Indicator::TransportError => "2.1 Transport_error",
            Indicator::CrcError => "2.2 CRC_error",
            Indicator::PcrRepetitionError => "2.3a PCR_repetition_error",
            Indicator::PcrDiscontinuityError => "2.3b PCR_discontinuity_indicator_error",
            Indicator::PcrAccuracyError => "2.4 PCR_accuracy_error",
            Indicator::PtsError => "2.5 PTS_error",
            Indicator::CatError => "2.6 CAT_error",
        }
    }
}

/// How often each indicator fired. The field names are the `summary.transport.*` contract.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub sync_losses: u64,
    pub sync_byte_errors: u64,
    pub pat_errors: u64,
    pub cc_errors: u64,
    pub pmt_errors: u64,
    pub pid_errors: u64,
    pub transport_errors: u64,
    pub crc_errors: u64,
    pub pcr_repetition_errors: u64,
    pub pcr_discontinuity_errors: u64,
    #[serde(default)]
    pub pcr_accuracy_errors: u64,
    pub pts_errors: u64,
    #[serde(default)]
    pub cat_errors: u64,
}

impl Counters {
    pub fn get(&self, i: Indicator) -> u64 {
        *self.field(i)
    }

    /// Add `other`'s counts (e.g. an earlier connection's) to these.
    pub fn add(&mut self, other: &Counters) {
        for i in Indicator::ALL {
            *self.field_mut(i) += other.get(i);
        }
    }

    pub(crate) fn bump(&mut self, i: Indicator) {
        *self.field_mut(i) += 1;
    }

    /// All indicators together.
    pub fn total(&self) -> u64 {
        Indicator::ALL.iter().map(|&i| self.get(i)).sum()
    }

    /// `(name, count)` in the order of the fields, for reports.
    pub fn named(&self) -> [(&'static str, u64); 13] {
        [
            ("sync_losses", self.sync_losses),
            ("sync_byte_errors", self.sync_byte_errors),
            ("pat_errors", self.pat_errors),
            ("cc_errors", self.cc_errors),
            ("pmt_errors", self.pmt_errors),
            ("pid_errors", self.pid_errors),
            ("transport_errors", self.transport_errors),
            ("crc_errors", self.crc_errors),
            ("pcr_repetition_errors", self.pcr_repetition_errors),
            ("pcr_discontinuity_errors", self.pcr_discontinuity_errors),
            ("pcr_accuracy_errors", self.pcr_accuracy_errors),
            ("pts_errors", self.pts_errors),
            ("cat_errors", self.cat_errors),
        ]
    }

    fn field(&self, i: Indicator) -> &u64 {
        match i {
            Indicator::SyncLoss => &self.sync_losses,
            Indicator::SyncByteError => &self.sync_byte_errors,
            Indicator::PatError => &self.pat_errors,
            Indicator::CcError => &self.cc_errors,
            Indicator::PmtError => &self.pmt_errors,
            Indicator::PidError => &self.pid_errors,
            Indicator::TransportError => &self.transport_errors,
            Indicator::CrcError => &self.crc_errors,
            Indicator::PcrRepetitionError => &self.pcr_repetition_errors,
            Indicator::PcrDiscontinuityError => &self.pcr_discontinuity_errors,
            Indicator::PcrAccuracyError => &self.pcr_accuracy_errors,
            Indicator::PtsError => &self.pts_errors,
            Indicator::CatError => &self.cat_errors,
        }
    }

    fn field_mut(&mut self, i: Indicator) -> &mut u64 {
        match i {
            Indicator::SyncLoss => &mut self.sync_losses,
            Indicator::SyncByteError => &mut self.sync_byte_errors,
            Indicator::PatError => &mut self.pat_errors,
            Indicator::CcError => &mut self.cc_errors,
            Indicator::PmtError => &mut self.pmt_errors,
            Indicator::PidError => &mut self.pid_errors,
            Indicator::TransportError => &mut self.transport_errors,
            Indicator::CrcError => &mut self.crc_errors,
            Indicator::PcrRepetitionError => &mut self.pcr_repetition_errors,
            Indicator::PcrDiscontinuityError => &mut self.pcr_discontinuity_errors,
            Indicator::PcrAccuracyError => &mut self.pcr_accuracy_errors,
            Indicator::PtsError => &mut self.pts_errors,
            Indicator::CatError => &mut self.cat_errors,
        }
    }
}

/// What an [`Event`] says about its indicator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Edge {
    /// One occurrence, at one place: a lost run of packets, a bad section, a PCR step. Counted
    /// once.
    Once,
    /// An absence ([`Indicator::persists`]) began: a PAT, a PMT, a referenced PID, a PID's PCR
    /// or an audio or video PID's PTS has not occurred for longer than its limit. Counted once,
    /// as the analyser notices it; the event's times are its onset: when it last occurred plus
    /// the limit (no later than where it was noticed: on the arrival clock a pause in delivery
    /// does not move media time on).
    Begin,
    /// The absence the last `Begin` of the same indicator and PID began is over: it occurred
    /// again (the event's place and times are that occurrence's), is no longer required (a new
    /// PAT or PMT dropped it), or can no longer be judged (sync lost, or the input ended:
    /// [`crate::Analyzer::finish`]). Not counted. Every `Begin` gets its `End` in the same
    /// analyser, with times no earlier than its own, and no second `Begin` of an indicator and
    /// PID comes before it.
    End,
}

impl Edge {
    /// Whether the event is one count of its indicator (every event but an [`Edge::End`]).
    pub fn counts(self) -> bool {
        self != Edge::End
    }
}

/// One occurrence of an indicator, or where an absence began or ended ([`Edge`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Event {
    pub indicator: Indicator,
    pub edge: Edge,
    /// The PID it concerns; `None` for the sync indicators.
    pub pid: Option<u16>,
    /// Index of the 188-byte slot where it was seen, counting from the first packet found (for
    /// a file that starts on a packet boundary: the packet's index in the file). For a
    /// [`Edge::Begin`], where the absence was noticed: the first slot past its limit (or, for a
    /// PCR or PTS interval judged by the next one's value, that next one's).
    pub packet: u64,
    /// Byte offset of that slot in the bytes fed.
    pub offset: u64,
    /// When, on the analyser's clock ([`crate::Clock`]), in seconds; for a [`Edge::Begin`] the
    /// onset (see there), which is earlier than `packet`.
    pub time_s: f64,
    /// Where in the media: seconds from the first PTS, on the stream's PCR clock; `None` before
    /// the stream has shown a PCR. For a [`Edge::Begin`], the onset.
    pub media_s: Option<f64>,
}

/// An SCTE 35 splice_info_section found on a PID a PMT lists with stream_type 0x86.
#[derive(Clone, Debug, PartialEq)]
pub struct Cue {
    pub pid: u16,
    /// Index of the slot of the packet that completed the section.
    pub packet: u64,
    /// When it came, on the analyser's clock ([`crate::Clock`]), seconds.
    pub time_s: f64,
    /// Where in the media it came: seconds from the first PTS, on the PCR clock.
    pub media_s: Option<f64>,
    /// Where in the media its splice time lies (a `splice_insert` or `time_signal` with a time),
    /// on the same clock: `splice_media_s - media_s` is the cue's preroll.
    pub splice_media_s: Option<f64>,
    /// What it says, or why it could not be read.
    pub info: Result<crate::scte35::SpliceInfo, crate::scte35::Scte35Error>,
}

/// The absences open in a sequence of [`Event`]s, to read each as a span: its `Begin` with its
/// `End` ("the PAT was missing from 5.8 s to 7.3 s"). It holds at most one absence per
/// indicator and PID, as the analyser opens no more.
#[derive(Clone, Debug, Default)]
pub struct Absences {
    open: Vec<Event>,
}

impl Absences {
    /// Take the next event: for an [`Edge::End`], the absence it ends, `(begin, end)`. An event
    /// that breaks [`Edge`]'s contract is an error, saying how: a `Begin` of an indicator that
    /// does not persist or of an absence already open, an `End` of none open, or one earlier
    /// than its `Begin`.
    pub fn take(&mut self, e: &Event) -> Result<Option<(Event, Event)>, String> {
        let same = |b: &Event| b.indicator == e.indicator && b.pid == e.pid;
        match e.edge {
            Edge::Once => Ok(None),
            Edge::Begin if !e.indicator.persists() => Err(format!("does not persist: {e:?}")),
            Edge::Begin if self.open.iter().any(same) => Err(format!("begun twice: {e:?}")),
            Edge::Begin => {
                self.open.push(*e);
                Ok(None)
            }
            Edge::End => {
                let k = self
                    .open
                    .iter()
                    .position(same)
                    .ok_or_else(|| format!("ends no absence: {e:?}"))?;
                if e.time_s < self.open[k].time_s {
                    return Err(format!("ends before it began: {:?} {e:?}", self.open[k]));
                }
                Ok(Some((self.open.swap_remove(k), *e)))
            }
        }
    }

    /// The absences begun and not ended, by their `Begin`.
    pub fn open(&self) -> &[Event] {
        &self.open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_names_agree() {
        let mut c = Counters::default();
        for (n, i) in Indicator::ALL.into_iter().enumerate() {
            for _ in 0..=n {
                c.bump(i);
            }
        }
        assert_eq!(c.total(), (1..=13).sum::<u64>());
        let json = serde_json::to_value(c).unwrap();
        for (n, (name, count)) in c.named().into_iter().enumerate() {
            assert_eq!(count, n as u64 + 1);
            assert_eq!(json[name], count, "{name}");
            let i = Indicator::ALL[n];
            assert_eq!(c.get(i), count);
            // The kind is the counter's indicator, as the issue names them.
            let stem = i.kind().strip_prefix("transport.").unwrap();
            assert_eq!(serde_json::to_value(i).unwrap(), stem);
        }
        assert_eq!(Indicator::CcError.kind(), "transport.cc_error");
    }

    #[test]
    fn the_absences_persist_and_only_ends_do_not_count() {
        let persist: Vec<&str> = Indicator::ALL
            .into_iter()
            .filter(|i| i.persists())
            .map(|i| i.kind())
            .collect();
        assert_eq!(
            persist,
            [
                "transport.pat_error",
                "transport.pmt_error",
                "transport.pid_error",
                "transport.pcr_repetition_error",
                "transport.pts_error"
            ]
        );
        assert!(Edge::Once.counts() && Edge::Begin.counts() && !Edge::End.counts());
        assert_eq!(serde_json::to_value(Edge::Begin).unwrap(), "begin");
    }

    #[test]
    fn absences_pair_each_begin_with_its_end_and_say_what_breaks_the_contract() {
        let at = |indicator, edge, pid, time_s| Event {
            indicator,
            edge,
            pid: Some(pid),
            packet: 0,
            offset: 0,
            time_s,
            media_s: None,
        };
        let (pat, pid) = (Indicator::PatError, Indicator::PidError);
        let mut a = Absences::default();
        let begin = at(pat, Edge::Begin, 0, 5.8);
        assert_eq!(a.take(&begin), Ok(None));
        assert_eq!(a.take(&at(pid, Edge::Begin, 0x100, 6.0)), Ok(None));
        assert_eq!(a.take(&at(pat, Edge::Once, 0, 6.5)), Ok(None));
        let broken = [
            (at(pat, Edge::Begin, 0, 6.0), "begun twice"),
            (
                at(Indicator::CcError, Edge::Begin, 0, 6.0),
                "does not persist",
            ),
            (at(pid, Edge::End, 0x101, 6.0), "ends no absence"),
            (at(pat, Edge::End, 0, 5.0), "ends before it began"),
        ];
        for (e, why) in broken {
            assert!(a.take(&e).unwrap_err().starts_with(why), "{why}");
        }
        let end = at(pat, Edge::End, 0, 7.3);
        assert_eq!(a.take(&end), Ok(Some((begin, end))));
        assert_eq!(a.open().len(), 1);
        assert_eq!(a.open()[0].indicator, pid);
    }
}
