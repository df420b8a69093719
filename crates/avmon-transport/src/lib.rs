//! avmon's MPEG transport-stream analyser: ETSI TR 101 290 (V1.2.1 §5.2) priority 1 and 2
//! indicators, counted exactly, over a byte stream.
//!
//! ```
//! use avmon_transport::{Analyzer, Clock};
//!
//! let mut analyzer = Analyzer::new();
//! let mut events = Vec::new();
//! # let chunks: Vec<Vec<u8>> = Vec::new();
//! for chunk in chunks {
//!     analyzer.feed(&chunk, Clock::Stream, &mut events); // a live input: Clock::Arrival(secs)
//! }
//! analyzer.finish(&mut events); // the input ended: what is still missing ends here
//! assert_eq!(analyzer.counters().cc_errors, 0);
//! ```
//!
//! **Contract.** [`Analyzer::feed`] takes the stream's bytes in chunks of any size, split
//! anywhere (a file read, a UDP datagram, an HLS segment, an SRT message): packets split across
//! chunks are put together, and sync is found and lost from the bytes themselves. It keeps at
//! most five packets of its input, and per PID a fixed amount of state (at most 8191 PIDs), so
//! hostile input cannot make it grow without bound; nothing in the input can make it panic. It
//! does no I/O and owns no clock, so any ingest can feed it, and a test can feed it a file.
//!
//! **Output.** [`Counters`] (`sync_losses`, `sync_byte_errors`, `pat_errors`, `cc_errors`,
//! `pmt_errors`, `pid_errors`, `transport_errors`, `crc_errors`, `pcr_repetition_errors`,
//! `pcr_discontinuity_errors`, `pcr_accuracy_errors`, `pts_errors`, `cat_errors`) and
//! [`Event`]s, each with its PID, packet index,
//! byte offset, time and media time, for the caller to turn into findings of kind
//! `transport.<indicator>` ([`Indicator::kind`]). An occurrence at one place (a continuity
//! break, a bad section, a PCR step) is one [`Edge::Once`] event; the caller merges a burst of
//! them. An indicator that persists ([`Indicator::persists`]: a PAT, a PMT, a referenced PID, a
//! PID's PCR or an audio or video PID's PTS that does not come for longer than its limit) is
//! reported for as long as it lasts: an [`Edge::Begin`] as soon as the limit passes, with the
//! onset's times (when it last came plus the limit), and an [`Edge::End`] where it comes again,
//! or where it stops being required, sync is lost or the input ends ([`Analyzer::finish`]);
//! [`Absences`] pairs them.
//! So a PAT last seen at 5.3 s and seen again at 7.3 s is a `Begin` at 5.8 s and an `End` at
//! 7.3 s: one count of `pat_errors`, read as "the PAT was missing from 5.8 s to 7.3 s". Each
//! event but an `End` is one count of its indicator ([`Edge::counts`]).
//!
//! **Time.** Absences (PAT, PMT, PID) and intervals (PCR, PTS) are measured on a clock the
//! caller picks per call: [`Clock::Arrival`], the time the bytes arrived (live inputs pass a
//! monotonic wall clock), or [`Clock::Stream`], the stream's own PCR (a file has no arrival
//! time; the PCR is, by definition, when each byte was meant to arrive). Media times always
//! come from the PCR, counted from the first PTS as the rest of avmon counts them.
//!
//! **Counting.** Each indicator counts occurrences as its TR 101 290 row defines them: 1.4 one
//! per break in a PID's continuity counter (so a run of lost packets is one error), 1.3.a, 1.5.a
//! and 1.6 one per gap longer than the limit, 2.3a and 2.5 one per too-long interval, 1.2, 2.1
//! and 2.2 one per packet or section. An absence is counted when it is noticed (its `Begin`),
//! so one the end of the input cuts short counts once it has passed its limit. Each check's documentation cites its row. What the TR
//! leaves to interpretation is decided in `docs/transport.md`.
//!
//! The parser is this crate's own, not `mpeg2ts-reader` or `dvb-conformance`; the evaluation
//! of both is in `docs/transport.md`.

mod analyzer;
pub mod clock;
pub mod mdi;
pub mod packet;
pub mod psi;
mod report;
pub mod scte35;
pub mod sync;

pub use analyzer::{Analyzer, Clock, Settings, SettingsError, LIVE_LAG_S, MAX_CUES};
pub use report::{Absences, Counters, Cue, Edge, Event, Indicator};
