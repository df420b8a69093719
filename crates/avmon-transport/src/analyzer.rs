//! The analyser: bytes in, TR 101 290 counters and events out.
//!
//! Each check below cites its row of ETSI TR 101 290 §5.2 (Table 5.0a, priority 1: 1.1–1.6;
//! Table 5.0b, priority 2: 2.1–2.6) and, where the TR leaves it to the systems layer, the
//! clause of ISO/IEC 13818-1 it follows.

use serde::Deserialize;

use crate::clock::{StreamClock, MAX_BELIEVED_STEP_S};
use crate::packet::{pcr_diff, pes_start, Header, PesStart, NULL_PID, PACKET, PCR_HZ, PCR_WRAP};
use crate::psi::{self, Assembler, Es, LongHeader};
use crate::report::{Counters, Edge, Event, Indicator};
use crate::sync::{Frame, Framer};

/// Times compared with a limit may exceed it by this much (a microsecond): the stream clock is a
/// sum of many PCR steps, and a 40 ms interval must not become 40.000000001 ms.
const SLACK_S: f64 = 1e-6;

/// What the user can set; the defaults are TR 101 290's values.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// 1.3.a: the longest gap between PAT sections, seconds.
    pub pat_interval_s: f64,
    /// 1.5.a: the longest gap between PMT sections on each program_map_PID, seconds.
    pub pmt_interval_s: f64,
    /// 1.6: how long a PID a PMT refers to may be absent ("a user specified period"), seconds.
    pub pid_absence_s: f64,
    /// 2.3a: the longest interval between two PCRs of a PID, seconds. TR 101 290 says 40 ms
    /// (DVB's own requirement, TS 101 154; ISO/IEC 13818-1 allows 100 ms).
    pub pcr_interval_s: f64,
    /// 2.3b: the largest step between two consecutive PCR values without a
    /// `discontinuity_indicator`, seconds.
    pub pcr_jump_s: f64,
    /// 2.5: the longest interval between two PTS of an audio or video PID, seconds.
    pub pts_interval_s: f64,
    /// 2.4: how far a PCR may be from where the transport rate puts it, seconds (±500 ns).
    pub pcr_accuracy_s: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            pat_interval_s: 0.5,
            pmt_interval_s: 0.5,
            pid_absence_s: 5.0,
            pcr_interval_s: 0.040,
            pcr_jump_s: 0.100,
            pts_interval_s: 0.700,
            pcr_accuracy_s: 500e-9,
        }
    }
}

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{field}: must be a positive number of seconds, got {value}")]
pub struct SettingsError {
    pub field: &'static str,
    pub value: f64,
}

impl Settings {
    pub fn validate(&self) -> Result<(), SettingsError> {
        for (field, value) in [
            ("pat_interval_s", self.pat_interval_s),
            ("pmt_interval_s", self.pmt_interval_s),
            ("pid_absence_s", self.pid_absence_s),
            ("pcr_interval_s", self.pcr_interval_s),
            ("pcr_jump_s", self.pcr_jump_s),
            ("pts_interval_s", self.pts_interval_s),
            ("pcr_accuracy_s", self.pcr_accuracy_s),
        ] {
            if !(value > 0.0 && value.is_finite()) {
                return Err(SettingsError { field, value });
            }
        }
        Ok(())
    }
}

/// Which clock measures intervals and absences.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Clock {
    /// The stream's own PCR ([`crate::clock`]): for files and recordings, which have no arrival
    /// time. Nothing times out before the first PCR.
    Stream,
    /// Monotonic seconds at which these bytes arrived: for live inputs (pass a wall clock).
    /// Once a PCR has started the stream's clock, packets are timed by it, placed on this clock
    /// (so a burst read late on a busy host is not taken for a late delivery), and this clock
    /// takes over only when the stream's runs more than [`LIVE_LAG_S`] behind it (a delivery
    /// that stalled) or ahead of it.
    Arrival(f64),
}

/// An absence watch: a PAT, a PMT, a referenced PID, a PID's PCR, an audio or video PID's PTS.
/// It fires once per gap, when the gap grows longer than its limit (an [`Edge::Begin`]), and the
/// next occurrence ends the gap (an [`Edge::End`]) and re-arms it.
#[derive(Clone, Copy, Debug)]
struct Watch {
    /// When it last occurred, on the analyser's clock and in media time.
    last: f64,
    last_media: Option<f64>,
    /// Where the gap it reported (a `Begin`) began, while it waits for its `End`.
    onset: Option<Onset>,
}

/// Where a reported absence began, on the analyser's clock and in media time.
#[derive(Clone, Copy, Debug)]
struct Onset {
    time: f64,
    media: Option<f64>,
}

/// How far a live input's arrival clock may run ahead of the stream's own before it takes
/// over: delays of the reader up to this are not delivery faults (see [`Clock::Arrival`]).
pub const LIVE_LAG_S: f64 = 1.0;

/// Jitter in the arrival of PCR packets that 2.3a tolerates (see [`Analyzer`]'s PCR check).
const ARRIVAL_JITTER_S: f64 = 0.1;

impl Watch {
    fn new(now: f64, media: Option<f64>) -> Watch {
        Watch {
            last: now,
            last_media: media,
            onset: None,
        }
    }

    /// When it fires, given its limit and the grace the clock is allowed on top of it.
    fn deadline(&self, limit: f64, grace: f64) -> f64 {
        if self.onset.is_some() {
            f64::INFINITY
        } else {
            self.last + limit + grace + SLACK_S
        }
    }
}

/// What is watched for absence: the TR 101 290 rows judged on "X does not occur for more than
/// a limit".
#[derive(Clone, Copy, Debug, PartialEq)]
enum Absence {
    /// 1.3.a: PAT sections, on PID 0.
    Pat,
    /// 1.5.a: PMT sections, on each program_map_PID.
    Pmt,
    /// 1.6: a PID a PMT refers to.
    Pid,
    /// 2.3a: a PID's PCRs.
    Pcr,
    /// 2.5: an audio or video PID's PTS.
    Pts,
}

impl Absence {
    fn indicator(self) -> Indicator {
        match self {
            Absence::Pat => Indicator::PatError,
            Absence::Pmt => Indicator::PmtError,
            Absence::Pid => Indicator::PidError,
            Absence::Pcr => Indicator::PcrRepetitionError,
            Absence::Pts => Indicator::PtsError,
        }
    }

    /// Its limit, and the grace the analyser's clock is allowed on top of it before the
    /// absence is noticed without the next occurrence (2.3a's arrival jitter).
    fn limit(self, s: &Settings) -> (f64, f64) {
        match self {
            Absence::Pat => (s.pat_interval_s, 0.0),
            Absence::Pmt => (s.pmt_interval_s, 0.0),
            Absence::Pid => (s.pid_absence_s, 0.0),
            Absence::Pcr => (s.pcr_interval_s, ARRIVAL_JITTER_S),
            Absence::Pts => (s.pts_interval_s, 0.0),
        }
    }
}

/// Everything kept per PID. A stream can use at most 8191 PIDs, so this is bounded.
struct PidState {
    pid: u16,
    /// 1.4: the last continuity_counter, `None` until the first packet (or after a resync).
    cc: Option<u8>,
    last_had_payload: bool,
    /// The last packet was already repeated once.
    dup_seen: bool,
    /// Packets the last continuity break skipped (see [`Analyzer::lost_packets`]).
    gap: u64,
    /// The last packet with a payload, to recognise its duplicate.
    last: [u8; PACKET],
    /// 2.3: the last PCR's value, and its watch (2.3a).
    pcr: Option<u64>,
    pcr_watch: Option<Watch>,
    /// 2.5: when the last PTS came.
    pts: Option<Watch>,
    first_pts_seen: bool,
    /// Section reassembly, for the PIDs whose sections are read or CRC-checked.
    psi: Option<Box<Assembler>>,
    /// 1.5.a: set while the PAT names this PID as a program_map_PID.
    pmt: Option<Watch>,
    /// 1.6: set while a PMT names this PID as an elementary stream.
    es: Option<Watch>,
    /// An audio or video elementary stream, whose PTS repetition 2.5 checks.
    av: bool,
    /// A PMT lists it as SCTE 35 (stream_type 0x86): its sections are cues.
    scte35: bool,
    /// 2.6: this PID's scrambled packets were counted as arriving without a CAT.
    scrambled_told: bool,
    /// 2.4: its last PCRs, to judge the next one's accuracy.
    fit: PcrFit,
}

/// PCRs a PID's accuracy (2.4) is judged on: the next is compared with the line through these.
const PCR_FIT: usize = 8;

/// How long a PCR found inaccurate (2.4) waits before it is counted, seconds: a packet lost just
/// before it shifts the byte positions, and the loss shows only at its PID's next packet (a
/// PAT's, up to half a second later). A break found meanwhile withdraws the verdict.
const ACCURACY_WAIT_S: f64 = 1.0;

/// 2.4 verdicts waiting at most: more than a second of PCRs on many PIDs, all inaccurate.
const MAX_INACCURATE_WAITING: usize = 512;

/// 2.4 PCR_accuracy_error: "PCR accuracy of selected programme is not within ±500 ns". A PCR's
/// inaccuracy is how far its value is from where the transport rate puts it (TR 101 290
/// §5.3.2, PCR_AC): from its byte position in the stream. The rate is the line through the
/// PID's last [`PCR_FIT`] PCRs (PCR value against byte offset), and it is judged only while
/// those lie on their line within the limit themselves: on a constant-rate stream, where the
/// measure means something. A variable-rate stream (FFmpeg's default, without `-muxrate`) is
/// not judged, nor the PCRs after a discontinuity, a PCR jump, a lost or damaged packet or a
/// loss of sync, until the line is whole again. An inaccurate PCR is counted once: it then
/// keeps the line from being judged until it has left it.
#[derive(Clone, Copy, Debug, Default)]
struct PcrFit {
    /// The first PCR of the line, which the others are counted from (ticks of 27 MHz).
    base: u64,
    /// `(byte offset, PCR − base)` of the PCRs kept, oldest first.
    points: [(f64, f64); PCR_FIT],
    n: usize,
    /// The analyser's count of breaks (losses, damage, resyncs) when the line began.
    breaks: u64,
}

impl PcrFit {
    fn restart(&mut self, pcr: u64, offset: u64, breaks: u64) {
        *self = PcrFit {
            base: pcr,
            breaks,
            ..PcrFit::default()
        };
        self.push(offset as f64, 0.0);
    }

    fn push(&mut self, x: f64, y: f64) {
        if self.n == PCR_FIT {
            self.points.copy_within(1.., 0);
            self.n -= 1;
        }
        self.points[self.n] = (x, y);
        self.n += 1;
    }

    /// How far `(x, y)` is from the line through the points kept, in ticks, when they lie on
    /// it within `tol` ticks; `None` while they are too few or off their own line.
    fn deviation(&self, x: f64, y: f64, tol: f64) -> Option<f64> {
        if self.n < PCR_FIT {
            return None;
        }
        let pts = &self.points[..self.n];
        let (x0, y0) = pts[0];
        let n = self.n as f64;
        let mx = pts.iter().map(|p| p.0 - x0).sum::<f64>() / n;
        let my = pts.iter().map(|p| p.1 - y0).sum::<f64>() / n;
        let sxx: f64 = pts.iter().map(|p| (p.0 - x0 - mx).powi(2)).sum();
        if sxx <= 0.0 {
            return None;
        }
        let sxy: f64 = pts.iter().map(|p| (p.0 - x0 - mx) * (p.1 - y0 - my)).sum();
        let slope = sxy / sxx;
        let at = |x: f64| y0 + my + slope * (x - x0 - mx);
        let worst = pts
            .iter()
            .map(|p| (p.1 - at(p.0)).abs())
            .fold(0.0, f64::max);
        (worst <= tol).then(|| y - at(x))
    }
}

impl PidState {
    fn new(pid: u16) -> PidState {
        PidState {
            pid,
            cc: None,
            last_had_payload: false,
            dup_seen: false,
            gap: 1,
            last: [0; PACKET],
            pcr: None,
            pcr_watch: None,
            pts: None,
            first_pts_seen: false,
            // CRC_error (2.2) covers PAT, CAT, NIT, SDT/BAT, EIT and TOT: their PIDs are fixed.
            psi: matches!(pid, 0x00 | 0x01 | 0x10 | 0x11 | 0x12 | 0x14).then(Box::default),
            pmt: None,
            es: None,
            av: false,
            scte35: false,
            scrambled_told: false,
            fit: PcrFit::default(),
        }
    }
}

/// What 1.4 makes of a packet.
enum Continuity {
    Ok,
    Error,
    /// The one repeat ISO/IEC 13818-1 §2.4.3.3 allows: not an error, and not new data.
    Duplicate,
}

/// The PAT as last received.
#[derive(Default)]
struct Pat {
    watch: Option<Watch>,
    version: Option<u8>,
    /// `(section_number, [(program_number, PID)])` of the current version.
    sections: Vec<(u8, Vec<(u16, u16)>)>,
    /// The program_map_PIDs it names.
    pmt_pids: Vec<u16>,
}

impl Pat {
    fn entries(&self) -> impl Iterator<Item = (u16, u16)> + '_ {
        self.sections.iter().flat_map(|(_, e)| e.iter().copied())
    }
}

/// The most programs followed. Real multiplexes carry tens; the cap keeps a hostile PAT (up to
/// 64 768 programs) from holding megabytes of PMTs.
const MAX_PROGRAMS: usize = 1024;

/// SCTE 35 cues held until taken: a cue comes every few seconds at most, so this is minutes'
/// worth even for a caller that takes them rarely.
pub const MAX_CUES: usize = 1000;

/// A program's PMT as last received.
struct Program {
    pmt_pid: u16,
    number: u16,
    /// The section's CRC_32: a new one means a changed PMT.
    crc: [u8; 4],
    streams: Vec<Es>,
}

/// Counts TR 101 290 priority 1 and 2 indicators on a transport stream fed in chunks of any
/// size; see the crate documentation.
pub struct Analyzer {
    settings: Settings,
    framer: Framer,
    /// Bytes not yet framed (less than five packets), and the stream offset of the first.
    carry: Vec<u8>,
    carry_offset: u64,
    state: State,
}

/// The part of the analyser the framer's output drives.
struct State {
    settings: Settings,
    counters: Counters,
    /// 188-byte slots framed (packets and slots without a sync byte).
    slots: u64,
    /// PID → index + 1 in `pids` (0: not seen).
    slot_of: Box<[u16]>,
    pids: Vec<PidState>,
    clock: StreamClock,
    arrival: Option<f64>,
    /// A live input's arrival time less the stream's clock, where the two were last placed.
    live_base: Option<f64>,
    /// The current packet: its offset, slot index and time.
    offset: u64,
    slot: u64,
    now: f64,
    pat: Pat,
    programs: Vec<Program>,
    /// 2.6: a CAT (a section with table_id 0x01 on PID 0x0001, its CRC correct) was received.
    cat_seen: bool,
    /// Losses, damage and resyncs so far: a PCR line (2.4) across one cannot be judged.
    breaks: u64,
    /// Packets the continuity counters say are missing (each break's gap, modulo 16).
    lost: u64,
    /// SCTE 35 cues found, until taken ([`Analyzer::take_cues`]); at most [`MAX_CUES`].
    cues: Vec<crate::Cue>,
    /// 2.4 verdicts waiting [`ACCURACY_WAIT_S`], with the breaks counted when they were made.
    inaccurate: std::collections::VecDeque<(Event, u64)>,
    /// No watch can fire before this time (a lower bound, so scans stay rare).
    next_deadline: f64,
    /// Sync was (re)acquired: watches restart from the next packet.
    resync: bool,
}

impl Analyzer {
    /// An analyser with TR 101 290's default thresholds.
    pub fn new() -> Analyzer {
        Self::with_settings(Settings::default()).expect("the defaults are valid")
    }

    pub fn with_settings(settings: Settings) -> Result<Analyzer, SettingsError> {
        settings.validate()?;
        Ok(Analyzer {
            settings,
            framer: Framer::default(),
            carry: Vec::new(),
            carry_offset: 0,
            state: State {
                settings,
                counters: Counters::default(),
                slots: 0,
                slot_of: vec![0; 8192].into_boxed_slice(),
                pids: Vec::new(),
                clock: StreamClock::default(),
                arrival: None,
                live_base: None,
                offset: 0,
                slot: 0,
                now: 0.0,
                pat: Pat::default(),
                programs: Vec::new(),
                cat_seen: false,
                breaks: 0,
                lost: 0,
                cues: Vec::new(),
                inaccurate: Default::default(),
                next_deadline: f64::NEG_INFINITY,
                resync: true,
            },
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Analyse the next `bytes` of the stream (any size, split anywhere), appending an event to
    /// `out` for every indicator that fires. `clock` says how time is measured; use the same kind
    /// for the whole stream.
    pub fn feed(&mut self, bytes: &[u8], clock: Clock, out: &mut Vec<Event>) {
        self.state.arrival = match clock {
            Clock::Stream => None,
            Clock::Arrival(t) => Some(t),
        };
        let state = &mut self.state;
        let mut emit = |f: Frame<'_>| state.frame(f, out);
        if self.carry.is_empty() {
            let n = self.framer.run(bytes, self.carry_offset, &mut emit);
            self.carry_offset += n as u64;
            self.carry.extend_from_slice(&bytes[n..]);
        } else {
            self.carry.extend_from_slice(bytes);
            let n = self.framer.run(&self.carry, self.carry_offset, &mut emit);
            self.carry_offset += n as u64;
            self.carry.drain(..n);
        }
    }

    /// The input ended: every absence still open (an [`Edge::Begin`] without its [`Edge::End`])
    /// ends at the last packet, with an `End` appended to `out`; the PCRs found inaccurate (2.4)
    /// that were still waiting out their second are counted, with their events. Bytes fed after this are
    /// analysed as before, and an absence that goes on is noticed again, counted from here.
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        self.state.end_all(out);
    }

    pub fn counters(&self) -> &Counters {
        &self.state.counters
    }

    /// Packets analysed so far.
    /// TS packets lost, as the continuity counters tell: each break's gap (modulo 16, so at
    /// least one and at most 15 a break).
    pub fn lost_packets(&self) -> u64 {
        self.state.lost
    }

    /// The SCTE 35 cues found since the last call, in order (at most [`MAX_CUES`] are held:
    /// a stream sending more between two calls loses the newest).
    pub fn take_cues(&mut self) -> Vec<crate::Cue> {
        std::mem::take(&mut self.state.cues)
    }

    pub fn packets(&self) -> u64 {
        self.state.slots - self.state.counters.sync_byte_errors
    }

    /// Bytes passed over while looking for sync.
    pub fn skipped_bytes(&self) -> u64 {
        self.framer.skipped
    }

    /// Whether the analyser is locked on packet boundaries.
    pub fn in_sync(&self) -> bool {
        self.framer.locked()
    }

    /// Seconds on the stream's PCR clock analysed so far (0 without PCR).
    pub fn stream_time(&self) -> f64 {
        self.state.clock.at(self.state.offset)
    }
}

impl Default for Analyzer {
    fn default() -> Self {
        Self::new()
    }
}

impl State {
    fn frame(&mut self, f: Frame<'_>, out: &mut Vec<Event>) {
        match f {
            Frame::Acquired(_) => self.resync = true,
            Frame::Packet(p, offset) => {
                self.at_slot(offset);
                self.packet(p, out);
                self.slots += 1;
            }
            // 1.2: the sync byte is not 0x47.
            Frame::SyncByteError(offset) => {
                self.at_slot(offset);
                self.raise(Indicator::SyncByteError, None, out);
                self.slots += 1;
            }
            // 1.1: two or more consecutive corrupted sync bytes.
            // Reported at the slot of the SyncByteError that completed it.
            Frame::SyncLoss(_) => {
                self.raise(Indicator::SyncLoss, None, out);
                self.lost_sync(out);
            }
        }
    }

    fn at_slot(&mut self, offset: u64) {
        self.offset = offset;
        self.slot = self.slots;
        self.now = self.time_at(offset);
    }

    /// The time of the byte at `offset`: the stream's clock, or for a live input the stream's
    /// clock placed on the arrival clock (see [`Clock::Arrival`]). Never earlier than the
    /// packet before.
    fn time_at(&mut self, offset: u64) -> f64 {
        let Some(arrival) = self.arrival else {
            return self.clock.at(offset);
        };
        if !self.clock.started() {
            return arrival.max(self.now);
        }
        let stream = self.clock.at(offset);
        let base = *self.live_base.get_or_insert(arrival - stream);
        let mut t = base + stream;
        if (t - arrival).abs() > LIVE_LAG_S {
            self.live_base = Some(arrival - stream);
            t = arrival;
        }
        t.max(self.now)
    }

    /// The current packet's media time (on the stream's clock, `now` is its time there).
    fn media(&self) -> Option<f64> {
        let t = match self.arrival {
            Some(_) => self.clock.at(self.offset),
            None => self.now,
        };
        self.clock.media(t)
    }

    fn event(&self, indicator: Indicator, edge: Edge, pid: Option<u16>) -> Event {
        Event {
            indicator,
            edge,
            pid,
            packet: self.slot,
            offset: self.offset,
            time_s: self.now,
            media_s: self.media(),
        }
    }

    /// One occurrence, here.
    fn raise(&mut self, i: Indicator, pid: Option<u16>, out: &mut Vec<Event>) {
        self.counters.bump(i);
        out.push(self.event(i, Edge::Once, pid));
    }

    /// The watch of absence `a` on the PID at index `i` (the PAT's for [`Absence::Pat`],
    /// whatever `i`).
    fn watch(&mut self, a: Absence, i: usize) -> &mut Option<Watch> {
        match a {
            Absence::Pat => &mut self.pat.watch,
            Absence::Pmt => &mut self.pids[i].pmt,
            Absence::Pid => &mut self.pids[i].es,
            Absence::Pcr => &mut self.pids[i].pcr_watch,
            Absence::Pts => &mut self.pids[i].pts,
        }
    }

    /// The PID an absence concerns: PID 0 for the PAT.
    fn pid_of(&self, a: Absence, i: usize) -> u16 {
        match a {
            Absence::Pat => 0,
            _ => self.pids[i].pid,
        }
    }

    /// The absence `a` of the PID at `i` was noticed here: it began when its watch last saw it
    /// plus the limit (no later than here, where a clock that is not the arrival's may say
    /// otherwise).
    fn begin(&mut self, a: Absence, i: usize, out: &mut Vec<Event>) {
        let (now, media) = (self.now, self.media());
        let (limit, _) = a.limit(&self.settings);
        let Some(w) = self.watch(a, i) else {
            return;
        };
        let onset = Onset {
            time: (w.last + limit).min(now),
            media: w
                .last_media
                .map(|m| (m + limit).min(media.unwrap_or(f64::INFINITY))),
        };
        w.onset = Some(onset);
        self.counters.bump(a.indicator());
        out.push(Event {
            time_s: onset.time,
            media_s: onset.media,
            ..self.event(a.indicator(), Edge::Begin, Some(self.pid_of(a, i)))
        });
    }

    /// The `End`, here, of the absence `a` of the PID at `i` that began at `onset`: never
    /// before it.
    fn ended(&self, a: Absence, i: usize, onset: Onset) -> Event {
        Event {
            time_s: self.now.max(onset.time),
            media_s: match (self.media(), onset.media) {
                (Some(m), Some(o)) => Some(m.max(o)),
                (m, o) => m.or(o),
            },
            ..self.event(a.indicator(), Edge::End, Some(self.pid_of(a, i)))
        }
    }

    /// What `a` watches on the PID at `i` occurs here: an absence it had reported ends, and the
    /// watch starts again from here.
    fn occurred(&mut self, a: Absence, i: usize, out: &mut Vec<Event>) {
        let (now, media) = (self.now, self.media());
        let (limit, grace) = a.limit(&self.settings);
        let old = self.watch(a, i).replace(Watch::new(now, media));
        if let Some(onset) = old.and_then(|w| w.onset) {
            out.push(self.ended(a, i, onset));
        }
        self.next_deadline = self.next_deadline.min(now + limit + grace + SLACK_S);
    }

    /// An absence `a` reported on the PID at `i` ends here without an occurrence (no longer
    /// required, or no longer judged); `watched`: whether to go on watching, from here.
    fn close_gap(&mut self, a: Absence, i: usize, watched: bool, out: &mut Vec<Event>) {
        let (now, media) = (self.now, self.media());
        let w = self.watch(a, i);
        let onset = w.and_then(|w| w.onset);
        if !watched {
            *w = None;
        } else if onset.is_some() {
            *w = Some(Watch::new(now, media));
        }
        if let Some(onset) = onset {
            out.push(self.ended(a, i, onset));
            self.next_deadline = f64::NEG_INFINITY;
        }
    }

    /// End every absence still open, here, and go on watching from here: nothing judged before
    /// this point carries on past it.
    fn end_all(&mut self, out: &mut Vec<Event>) {
        self.settle_accuracy(true, out);
        self.close_gap(Absence::Pat, 0, true, out);
        for i in 0..self.pids.len() {
            for a in [Absence::Pmt, Absence::Pid, Absence::Pcr, Absence::Pts] {
                self.close_gap(a, i, true, out);
            }
        }
    }

    /// "If indicator 1.1 is activated then all other indicators are invalid" (TR 101 290
    /// §5.2.1): what was lost while out of sync is the sync loss, not a continuity, PCR or PTS
    /// error, and absences open when it came end there. Every PID starts again as at the start
    /// of the stream.
    fn lost_sync(&mut self, out: &mut Vec<Event>) {
        self.breaks += 1;
        self.end_all(out);
        for st in &mut self.pids {
            st.cc = None;
            st.pcr = None;
            st.pcr_watch = None;
            st.pts = None;
            if let Some(a) = &mut st.psi {
                a.reset();
            }
        }
    }

    fn index(&mut self, pid: u16) -> usize {
        let slot = &mut self.slot_of[usize::from(pid)];
        if *slot == 0 {
            self.pids.push(PidState::new(pid));
            *slot = self.pids.len() as u16;
        }
        usize::from(*slot) - 1
    }

    fn packet(&mut self, p: &[u8; PACKET], out: &mut Vec<Event>) {
        let h = Header::parse(p);
        if let (Some((pcr, _)), false) = (h.pcr, h.tei) {
            self.clock.on_pcr(h.pid, pcr, self.offset, h.discontinuity);
            // The packet's own time, now that its PCR is known.
            self.now = self.time_at(self.offset);
        }
        if self.resync {
            self.resync = false;
            self.restart_watches(out);
        }
        // Gaps that ended by now are judged before this packet can end its own.
        self.timeouts(out);

        // 2.1: transport_error_indicator set. The header is still read (as decoders read it),
        // but nothing in the payload is believed.
        if h.tei {
            self.breaks += 1;
            self.raise(Indicator::TransportError, Some(h.pid), out);
        }
        // Null packets carry nothing to check; a reserved adaptation_field_control means the
        // decoder discards the packet (ISO/IEC 13818-1 §2.4.3.3).
        if h.pid == NULL_PID || h.afc == 0 {
            return;
        }
        let i = self.index(h.pid);

        if h.scrambling != 0 {
            // 2.6 CAT_error: "Packets with transport_scrambling_control not 00 present, but no
            // section with table_id = 0x01 (i.e. a CAT) present". Once per scrambled PID until
            // a CAT comes: a scrambled service is thousands of packets a second.
            if !self.cat_seen && !self.pids[i].scrambled_told {
                self.pids[i].scrambled_told = true;
                self.raise(Indicator::CatError, Some(h.pid), out);
            }
            // 1.3.a: Scrambling_control_field is not 00 for PID 0x0000.
            if h.pid == 0 {
                self.raise(Indicator::PatError, Some(0), out);
            // 1.5.a: ... not 00 for packets of a program_map_PID.
            } else if self.pids[i].pmt.is_some() {
                self.raise(Indicator::PmtError, Some(h.pid), out);
            }
        }

        match self.continuity(i, &h, p) {
            Continuity::Ok => {}
            Continuity::Duplicate => return,
            Continuity::Error => {
                self.breaks += 1;
                self.lost += self.pids[i].gap;
                self.raise(Indicator::CcError, Some(h.pid), out);
                if let Some(a) = &mut self.pids[i].psi {
                    a.reset();
                }
            }
        }

        // 1.6: the PID occurs.
        if self.pids[i].es.is_some() {
            self.occurred(Absence::Pid, i, out);
        }

        if !h.tei {
            if let Some((pcr, _)) = h.pcr {
                self.pcr(i, pcr, h.discontinuity, out);
            }
            if h.scrambling == 0 && h.payload < PACKET {
                let payload = &p[h.payload..];
                if self.pids[i].psi.is_some() {
                    self.sections(i, payload, h.pusi, out);
                }
                if h.pusi && self.pids[i].es.is_some() {
                    self.pes(i, payload, out);
                }
            }
        }
    }

    /// 1.4 Continuity_count_error: "Incorrect packet order; a packet occurs more than twice;
    /// lost packet". ISO/IEC 13818-1 §2.4.3.3: the counter increments with each packet that has
    /// a payload and stays put in one without; a packet may be sent twice (all bytes but the
    /// PCR the same), but not three times; after a `discontinuity_indicator` any value is
    /// allowed. One lost run of packets is one error, as the next packet takes the counter on.
    fn continuity(&mut self, i: usize, h: &Header, p: &[u8; PACKET]) -> Continuity {
        let st = &mut self.pids[i];
        let verdict = match st.cc {
            None => Continuity::Ok,
            Some(_) if h.discontinuity => Continuity::Ok,
            Some(last) if !h.has_payload() => {
                if h.cc == last {
                    Continuity::Ok
                } else {
                    Continuity::Error
                }
            }
            Some(last) if h.cc == last => {
                if st.last_had_payload && !st.dup_seen && same_but_pcr(&st.last, p, h) {
                    st.dup_seen = true;
                    return Continuity::Duplicate;
                }
                Continuity::Error
            }
            Some(last) if h.cc == (last + 1) & 0x0F => Continuity::Ok,
            Some(_) => Continuity::Error,
        };
        // How many packets a break skipped, as far as a 4-bit counter can say: at least one.
        st.gap = match st.cc {
            Some(last) if h.has_payload() && st.last_had_payload => {
                u64::from(h.cc.wrapping_sub(last).wrapping_sub(1) & 0x0F).max(1)
            }
            _ => 1,
        };
        st.cc = Some(h.cc);
        st.last_had_payload = h.has_payload();
        st.dup_seen = false;
        if h.has_payload() {
            st.last = *p;
        }
        verdict
    }

    /// 2.3a PCR_repetition_error: "Time interval between two consecutive PCR values more than
    /// 40 ms"; 2.3b PCR_discontinuity_indicator_error: "The difference between two consecutive
    /// PCR values (PCRi+1 – PCRi) is outside the range of 0...100 ms without the
    /// discontinuity_indicator set".
    ///
    /// A too-long interval is an absence of PCRs ([`Edge::Begin`] to [`Edge::End`]): noticed on
    /// the clock, less the jitter, as soon as it passes the limit on a PID a PMT refers to, and
    /// otherwise (an interval too long by value) when the next PCR comes.
    fn pcr(&mut self, i: usize, pcr: u64, discontinuity: bool, out: &mut Vec<Event>) {
        let (now, pid) = (self.now, self.pids[i].pid);
        if let (Some(last_pcr), Some(w)) = (self.pids[i].pcr, self.pids[i].pcr_watch) {
            let step = pcr_diff(last_pcr, pcr) as f64 / PCR_HZ;
            let continuous = !discontinuity && (0.0..=self.settings.pcr_jump_s).contains(&step);
            // 2.3a is judged twice: on the PCR values while they run on (the interval the
            // multiplexer put between them), and on the clock (a live input's arrival: a
            // delivery that pauses), less [`ARRIVAL_JITTER_S`] there. Arrival times carry the
            // network's and the sender's jitter, which is 2.4's business (PCR accuracy), not a
            // repetition fault: a 25 fps stream with a PCR on every picture sits at exactly
            // 40 ms by value and arrives at 40 ms ± a few.
            let believed = !discontinuity && (0.0..=MAX_BELIEVED_STEP_S).contains(&step);
            let by_value = if believed { step } else { 0.0 };
            let interval = by_value.max(now - w.last - ARRIVAL_JITTER_S);
            self.interval(Absence::Pcr, i, interval, out);
            if !continuous && !discontinuity {
                self.raise(Indicator::PcrDiscontinuityError, Some(pid), out);
            }
            self.accuracy(i, pcr, continuous, out);
        } else {
            self.occurred(Absence::Pcr, i, out);
            self.pids[i].fit.restart(pcr, self.offset, self.breaks);
        }
        self.pids[i].pcr = Some(pcr % PCR_WRAP);
    }

    /// 2.4: judge the PCR of the PID at `i` against its line ([`PcrFit`]), then keep it.
    fn accuracy(&mut self, i: usize, pcr: u64, continuous: bool, out: &mut Vec<Event>) {
        let (offset, breaks) = (self.offset, self.breaks);
        let tol = self.settings.pcr_accuracy_s * PCR_HZ;
        let fit = &mut self.pids[i].fit;
        if !continuous || fit.breaks != breaks || fit.n == 0 {
            fit.restart(pcr, offset, breaks);
            return;
        }
        let (x, y) = (offset as f64, pcr_diff(fit.base, pcr) as f64);
        let off = fit.deviation(x, y, tol);
        fit.push(x, y);
        if off.is_some_and(|d| d.abs() > tol) && self.inaccurate.len() < MAX_INACCURATE_WAITING {
            let pid = self.pids[i].pid;
            let ev = self.event(Indicator::PcrAccuracyError, Edge::Once, Some(pid));
            self.inaccurate.push_back((ev, breaks));
        }
        self.settle_accuracy(false, out);
    }

    /// Count the 2.4 verdicts that waited long enough (all of them at `end`) and no break
    /// withdrew.
    fn settle_accuracy(&mut self, end: bool, out: &mut Vec<Event>) {
        while let Some((ev, breaks)) = self.inaccurate.front().copied() {
            if !end && ev.time_s + ACCURACY_WAIT_S > self.now {
                return;
            }
            self.inaccurate.pop_front();
            if breaks == self.breaks {
                self.counters.bump(ev.indicator);
                out.push(ev);
            }
        }
    }

    /// The PCR or PTS that `a` watches on the PID at `i` comes here, `interval` seconds after
    /// the one before. The absence the watch noticed ends here; one it did not notice (an
    /// interval too long only by value) begins and ends here.
    fn interval(&mut self, a: Absence, i: usize, interval: f64, out: &mut Vec<Event>) {
        let (limit, _) = a.limit(&self.settings);
        let noticed = self.watch(a, i).is_some_and(|w| w.onset.is_some());
        if interval > limit + SLACK_S && !noticed {
            self.begin(a, i, out);
        }
        self.occurred(a, i, out);
    }

    /// 2.5 PTS_error: "PTS repetition period more than 700 ms", on audio and video PIDs. (The TR
    /// exempts still pictures, which no stream_type tells apart: raise `pts_interval_s` for
    /// such a service.) A too-long interval is an absence of PTS ([`Edge::Begin`] to
    /// [`Edge::End`]), noticed as soon as it passes the limit.
    fn pes(&mut self, i: usize, payload: &[u8], out: &mut Vec<Event>) {
        let PesStart::Pts(pts) = pes_start(payload) else {
            return;
        };
        let st = &mut self.pids[i];
        if !st.first_pts_seen && pts != u64::MAX {
            st.first_pts_seen = true;
            self.clock.first_pts(pts);
        }
        let st = &self.pids[i];
        if !st.av {
            return;
        }
        match st.pts {
            Some(w) => self.interval(Absence::Pts, i, self.now - w.last, out),
            None => self.occurred(Absence::Pts, i, out),
        }
    }

    fn sections(&mut self, i: usize, payload: &[u8], pusi: bool, out: &mut Vec<Event>) {
        let Some(mut asm) = self.pids[i].psi.take() else {
            return;
        };
        let pid = self.pids[i].pid;
        asm.push(payload, pusi, |s| self.section(pid, s, out));
        // The PAT may have dropped this PID from the PSI PIDs meanwhile; put it back anyway:
        // a spare assembler is harmless, and keeps the PID's state simple.
        self.pids[i].psi = Some(asm);
    }

    fn section(&mut self, pid: u16, s: &[u8], out: &mut Vec<Event>) {
        // 2.2 CRC_error: "CRC error occurred in CAT, PAT, PMT, NIT, EIT, BAT, SDT or TOT table".
        // A section that fails it is not used for anything else.
        if psi::has_crc(s) && psi::crc32_mpeg2(s) != 0 {
            self.raise(Indicator::CrcError, Some(pid), out);
            return;
        }
        if pid == 0 {
            // 1.3.a: "Section with table_id other than 0x00 found on PID 0x0000".
            if s[0] != 0x00 {
                self.raise(Indicator::PatError, Some(0), out);
                return;
            }
            if let Some((h, body)) = LongHeader::parse(s) {
                if h.current {
                    self.occurred(Absence::Pat, 0, out);
                    self.take_pat(h, body, out);
                }
            }
            return;
        }
        if pid == 0x0001 {
            // 2.6 CAT_error: "Section with table_id other than 0x01 (i.e. not a CAT) found on
            // PID 0x0001".
            if s[0] == 0x01 {
                self.cat_seen = true;
            } else {
                self.raise(Indicator::CatError, Some(pid), out);
            }
            return;
        }
        let i = self.index(pid);
        if self.pids[i].scte35 && s[0] == crate::scte35::TABLE_ID {
            self.cue(pid, s);
            return;
        }
        if self.pids[i].pmt.is_none() {
            return;
        }
        match s[0] {
            0x02 => {
                if let Some((h, body)) = LongHeader::parse(s) {
                    if h.current {
                        self.occurred(Absence::Pmt, i, out);
                        self.take_pmt(pid, h, body, s, out);
                    }
                }
            }
            // A program_map_PID may also carry private sections (ISO/IEC 13818-1 §2.4.4.9).
            0x40..=0xFE => {}
            // Anything else on it is not a PMT where one must be: counted under 1.5.a.
            _ => self.raise(Indicator::PmtError, Some(pid), out),
        }
    }

    /// An SCTE 35 section: read, placed on the media timeline, and kept for the caller.
    fn cue(&mut self, pid: u16, s: &[u8]) {
        if self.cues.len() >= MAX_CUES {
            return;
        }
        let info = crate::scte35::parse(s);
        let splice = info.as_ref().ok().and_then(|i| match &i.command {
            crate::scte35::Command::Insert(c) => c.pts,
            crate::scte35::Command::TimeSignal { pts } => *pts,
            _ => None,
        });
        let cue = crate::Cue {
            pid,
            packet: self.slot,
            time_s: self.now,
            media_s: self.media(),
            splice_media_s: splice.and_then(|p| self.clock.media_of_pts(p)),
            info,
        };
        self.cues.push(cue);
    }

    fn take_pat(&mut self, h: LongHeader, body: &[u8], out: &mut Vec<Event>) {
        if self.pat.version != Some(h.version) {
            self.pat.version = Some(h.version);
            self.pat.sections.clear();
        }
        let entries: Vec<(u16, u16)> = psi::pat_programs(body)
            .filter(|&(_, pid)| pid < NULL_PID)
            .collect();
        match self
            .pat
            .sections
            .iter_mut()
            .find(|(n, _)| *n == h.section_number)
        {
            Some((_, e)) if *e == entries => return,
            Some((_, e)) => *e = entries,
            None => self.pat.sections.push((h.section_number, entries)),
        }
        // Program 0 names the network PID, whose NIT 2.2 CRC-checks.
        let network: Vec<u16> = self
            .pat
            .entries()
            .filter(|&(n, _)| n == 0)
            .map(|(_, pid)| pid)
            .collect();
        for pid in network {
            let i = self.index(pid);
            self.pids[i].psi.get_or_insert_with(Box::default);
        }
        let mut pmt_pids: Vec<u16> = self
            .pat
            .entries()
            .filter(|&(n, _)| n != 0)
            .map(|(_, pid)| pid)
            .collect();
        pmt_pids.sort_unstable();
        pmt_pids.dedup();
        if pmt_pids == self.pat.pmt_pids {
            return;
        }
        let (now, media) = (self.now, self.media());
        for pid in std::mem::take(&mut self.pat.pmt_pids) {
            if pmt_pids.binary_search(&pid).is_err() {
                let i = self.index(pid);
                self.close_gap(Absence::Pmt, i, false, out);
            }
        }
        for &pid in &pmt_pids {
            let i = self.index(pid);
            let st = &mut self.pids[i];
            if st.pmt.is_none() {
                // 1.5.a's gap runs from when the PAT first names the PID.
                st.pmt = Some(Watch::new(now, media));
                st.psi.get_or_insert_with(Box::default);
            }
        }
        let pat = &self.pat;
        self.programs
            .retain(|p| pat.entries().any(|e| e == (p.number, p.pmt_pid)));
        self.pat.pmt_pids = pmt_pids;
        self.next_deadline = f64::NEG_INFINITY;
        self.refresh_streams(out);
    }

    fn take_pmt(
        &mut self,
        pid: u16,
        h: LongHeader,
        body: &[u8],
        section: &[u8],
        out: &mut Vec<Event>,
    ) {
        let number = h.extension;
        // Only programs the PAT names: a hostile stream cannot grow this list.
        if !self.pat.entries().any(|e| e == (number, pid)) {
            return;
        }
        let crc: [u8; 4] = section[section.len() - 4..].try_into().expect("4 bytes");
        let k = self
            .programs
            .iter()
            .position(|p| p.pmt_pid == pid && p.number == number);
        if k.is_some_and(|k| self.programs[k].crc == crc)
            || (k.is_none() && self.programs.len() >= MAX_PROGRAMS)
        {
            return;
        }
        let Some(streams) = psi::pmt_streams(body) else {
            return;
        };
        let program = Program {
            pmt_pid: pid,
            number,
            crc,
            streams,
        };
        match k {
            Some(k) => self.programs[k] = program,
            None => self.programs.push(program),
        }
        self.refresh_streams(out);
    }

    /// Re-derive which PIDs 1.6 watches and 2.5 checks from the current PMTs: in time linear
    /// in their streams and the PIDs seen, however many a hostile PMT names. An absence open on
    /// a PID no longer referred to ends here.
    fn refresh_streams(&mut self, out: &mut Vec<Event>) {
        const REFERENCED: u8 = 1;
        const AV: u8 = 2;
        const SCTE35: u8 = 4;
        let mut flags = vec![0u8; 8192];
        for es in self.programs.iter().flat_map(|p| p.streams.iter()) {
            flags[usize::from(es.pid)] |= REFERENCED
                | if es.av { AV } else { 0 }
                | if es.stream_type == crate::scte35::STREAM_TYPE {
                    SCTE35
                } else {
                    0
                };
        }
        for (pid, &f) in flags.iter().enumerate() {
            if f != 0 {
                self.index(pid as u16);
            }
        }
        let (now, media) = (self.now, self.media());
        for i in 0..self.pids.len() {
            let f = flags[usize::from(self.pids[i].pid)];
            let referenced = f & REFERENCED != 0;
            self.pids[i].av = f & AV != 0;
            self.pids[i].scte35 = f & SCTE35 != 0;
            if self.pids[i].scte35 {
                self.pids[i].psi.get_or_insert_with(Box::default);
            }
            if !referenced || self.pids[i].scte35 {
                // An SCTE 35 PID carries a section only when there is a cue: minutes apart, so
                // 1.6 does not watch it (whether cues come is `scte35.no_cues`' business).
                self.close_gap(Absence::Pid, i, false, out);
                self.pids[i].es = None;
                // Its PCRs are still judged, but only as each comes (see `pcr`).
                self.close_gap(Absence::Pcr, i, true, out);
            } else if self.pids[i].es.is_none() {
                // 1.6's period runs from when a PMT first names the PID.
                self.pids[i].es = Some(Watch::new(now, media));
            }
            if f & AV == 0 {
                self.close_gap(Absence::Pts, i, false, out);
            }
        }
        self.next_deadline = f64::NEG_INFINITY;
    }

    /// Sync was (re)acquired: what was open ends, and every table and PID is watched afresh.
    fn restart_watches(&mut self, out: &mut Vec<Event>) {
        self.end_all(out);
        let (now, media) = (self.now, self.media());
        self.pat.watch = Some(Watch::new(now, media));
        for st in &mut self.pids {
            for w in [&mut st.pmt, &mut st.es].into_iter().flatten() {
                *w = Watch::new(now, media);
            }
        }
        self.next_deadline = f64::NEG_INFINITY;
    }

    /// 1.3.a PAT_error_2: "Sections with table_id 0x00 do not occur at least every 0,5 s on PID
    /// 0x0000"; 1.5.a PMT_error_2: "Sections with table_id 0x02 do not occur at least every
    /// 0,5 s on each program_map_PID which is referred to in the PAT"; 1.6 PID_error:
    /// "Referred PID does not occur for a user specified period". Each fires once per gap, as
    /// an [`Edge::Begin`]; the next occurrence ends it. Only a whole, CRC-correct section
    /// counts as an occurrence of a table. The PCR (2.3a) and PTS (2.5) intervals of the PIDs
    /// a PMT refers to are watched here too, so that a PCR or PTS that stops coming is noticed
    /// when its interval passes the limit, not when (or if) the next one comes.
    fn timeouts(&mut self, out: &mut Vec<Event>) {
        if self.now <= self.next_deadline {
            return;
        }
        let (now, s) = (self.now, self.settings);
        let mut next = f64::INFINITY;
        let mut fired: Vec<(Absence, usize)> = Vec::new();
        let mut check = |w: &Option<Watch>, a: Absence, i: usize| {
            let Some(w) = w else { return };
            let (limit, grace) = a.limit(&s);
            let deadline = w.deadline(limit, grace);
            if now > deadline {
                fired.push((a, i));
            } else {
                next = next.min(deadline);
            }
        };
        check(&self.pat.watch, Absence::Pat, 0);
        for (i, st) in self.pids.iter().enumerate() {
            check(&st.pmt, Absence::Pmt, i);
            check(&st.es, Absence::Pid, i);
            if st.es.is_some() {
                check(&st.pcr_watch, Absence::Pcr, i);
                if st.av {
                    check(&st.pts, Absence::Pts, i);
                }
            }
        }
        self.next_deadline = next;
        for (a, i) in fired {
            self.begin(a, i, out);
        }
    }
}

/// Whether `b` repeats `a` (ISO/IEC 13818-1 §2.4.3.3: every byte but the PCR's).
fn same_but_pcr(a: &[u8; PACKET], b: &[u8; PACKET], h: &Header) -> bool {
    match h.pcr {
        Some((_, at)) => a[..at] == b[..at] && a[at + 6..] == b[at + 6..],
        None => a == b,
    }
}
