//! What the analyser reports: the indicators, their counters and one event per occurrence.

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
    /// 2.5 PTS_error.
    PtsError,
}

impl Indicator {
    pub const ALL: [Indicator; 11] = [
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
        Indicator::PtsError,
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
            Indicator::PtsError => "transport.pts_error",
        }
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
            Indicator::PtsError => "2.5 PTS_error",
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
    pub pts_errors: u64,
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
    pub fn named(&self) -> [(&'static str, u64); 11] {
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
            ("pts_errors", self.pts_errors),
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
            Indicator::PtsError => &self.pts_errors,
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
            Indicator::PtsError => &mut self.pts_errors,
        }
    }
}

/// One occurrence of an indicator.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Event {
    pub indicator: Indicator,
    /// The PID it concerns; `None` for the sync indicators.
    pub pid: Option<u16>,
    /// Index of the 188-byte slot where it was seen, counting from the first packet found (for
    /// a file that starts on a packet boundary: the packet's index in the file).
    pub packet: u64,
    /// Byte offset of that slot in the bytes fed.
    pub offset: u64,
    /// When, on the analyser's clock ([`crate::Clock`]), in seconds.
    pub time_s: f64,
    /// Where in the media: seconds from the first PTS, on the stream's PCR clock; `None` before
    /// the stream has shown a PCR.
    pub media_s: Option<f64>,
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
        assert_eq!(c.total(), (1..=11).sum::<u64>());
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
}
