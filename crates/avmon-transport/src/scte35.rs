//! SCTE 35 (2022) splice information sections: the cues that mark ad breaks and programme
//! boundaries in a transport stream, on the PIDs a PMT lists with `stream_type` 0x86.
//!
//! [`parse`] reads one whole `splice_info_section` (§9.6): its command (§9.7: `splice_null`,
//! `splice_insert`, `time_signal`; others are named, not read) and its segmentation descriptors
//! (§10.3.3, identifier `CUEI`), after checking its CRC. Times are 90 kHz PTS values with the
//! section's `pts_adjustment` already added (modulo 2^33), as a receiver applies it. Encrypted
//! sections (§11) are reported as such: the cue is there, its content is not readable.
//!
//! Nothing in a section can make it panic, and it keeps nothing: each call stands alone.

use crate::psi::crc32_mpeg2;

/// The table_id of a splice_info_section.
pub const TABLE_ID: u8 = 0xFC;

/// The PMT stream_type of an SCTE 35 PID.
pub const STREAM_TYPE: u8 = 0x86;

const PTS_WRAP: u64 = 1 << 33;

/// What a splice_info_section says.
#[derive(Clone, Debug, PartialEq)]
pub struct SpliceInfo {
    /// The PTS adjustment the section carried (already added to its times).
    pub pts_adjustment: u64,
    /// Authorization tier (0xFFF: none).
    pub tier: u16,
    pub command: Command,
    /// Segmentation descriptors, in order.
    pub segmentation: Vec<Segmentation>,
}

/// The section's splice command.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// `splice_null` (0x00): a heartbeat, or a carrier of descriptors.
    Null,
    /// `splice_insert` (0x05): an avail begins (`out_of_network`) or ends.
    Insert(Insert),
    /// `time_signal` (0x06): a time, its meaning in the segmentation descriptors.
    TimeSignal {
        /// The splice time, if specified.
        pts: Option<u64>,
    },
    /// Another command (`splice_schedule` 0x04, `bandwidth_reservation` 0x07,
    /// `private_command` 0xFF, ...), by its type.
    Other(u8),
}

impl Command {
    /// The command's name in SCTE 35.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Null => "splice_null",
            Command::Insert(_) => "splice_insert",
            Command::TimeSignal { .. } => "time_signal",
            Command::Other(0x04) => "splice_schedule",
            Command::Other(0x07) => "bandwidth_reservation",
            Command::Other(0xFF) => "private_command",
            Command::Other(_) => "reserved",
        }
    }
}

/// A `splice_insert` command (§9.7.3).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Insert {
    pub event_id: u32,
    /// The event announced before is cancelled (nothing else is then given).
    pub cancel: bool,
    /// Leaving the network feed (an avail begins); false: returning to it.
    pub out_of_network: bool,
    /// At once, not at a time.
    pub immediate: bool,
    /// The splice time (program splice mode, not immediate), if specified.
    pub pts: Option<u64>,
    /// The break's duration in 90 kHz ticks, and whether the splice back is automatic.
    pub duration: Option<(u64, bool)>,
    pub unique_program_id: u16,
    pub avail_num: u8,
    pub avails_expected: u8,
}

/// A `segmentation_descriptor` (§10.3.3).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Segmentation {
    pub event_id: u32,
    pub cancel: bool,
    /// `segmentation_type_id` (Table 23): 0x34 provider placement opportunity start, 0x35 its
    /// end, 0x30/0x31 provider advertisement start/end, 0x10/0x11 programme start/end, ...
    pub type_id: u8,
    /// The segment's duration in 90 kHz ticks, if given.
    pub duration: Option<u64>,
    /// `segmentation_upid_type` (Table 22) and its bytes.
    pub upid_type: u8,
    pub upid: Vec<u8>,
    pub segment_num: u8,
    pub segments_expected: u8,
}

impl Segmentation {
    /// Whether its type starts a segment (the odd type ids end one, 0x10 and up).
    pub fn starts(&self) -> bool {
        self.type_id >= 0x10 && self.type_id % 2 == 0
    }
}

/// Why a section could not be read.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Scte35Error {
    #[error("not a splice_info_section (table_id {0:#04x})")]
    NotSplice(u8),
    #[error("truncated: {0}")]
    Truncated(&'static str),
    #[error("CRC_32 mismatch")]
    Crc,
    #[error("encrypted (algorithm {0}): its command cannot be read")]
    Encrypted(u8),
}

/// Read a whole splice_info_section (from its table_id to its CRC_32).
pub fn parse(section: &[u8]) -> Result<SpliceInfo, Scte35Error> {
    let mut r = Bits::new(section);
    let table_id = r.u(8, "table_id")? as u8;
    if table_id != TABLE_ID {
        return Err(Scte35Error::NotSplice(table_id));
    }
    r.u(4, "flags")?;
    let len = r.u(12, "section_length")? as usize;
    let total = 3 + len;
    if section.len() < total || len < 15 {
        return Err(Scte35Error::Truncated("section_length"));
    }
    let section = &section[..total];
    if crc32_mpeg2(section) != 0 {
        return Err(Scte35Error::Crc);
    }
    let mut r = Bits::new(&section[3..total - 4]);
    r.u(8, "protocol_version")?;
    let encrypted = r.u(1, "encrypted_packet")? == 1;
    let algorithm = r.u(6, "encryption_algorithm")? as u8;
    let pts_adjustment = r.u(33, "pts_adjustment")?;
    if encrypted {
        return Err(Scte35Error::Encrypted(algorithm));
    }
    r.u(8, "cw_index")?;
    let tier = r.u(12, "tier")? as u16;
    let command_len = r.u(12, "splice_command_length")? as usize;
    let command_type = r.u(8, "splice_command_type")? as u8;
    let adjust = |pts: u64| (pts + pts_adjustment) % PTS_WRAP;
    let start = r.byte();
    let command = match command_type {
        0x00 => Command::Null,
        0x05 => Command::Insert(insert(&mut r, &adjust)?),
        0x06 => Command::TimeSignal {
            pts: splice_time(&mut r)?.map(adjust),
        },
        other => {
            // 0xFFF: the length is not given (legacy); only the known commands can be skipped.
            if command_len == 0xFFF {
                return Ok(SpliceInfo {
                    pts_adjustment,
                    tier,
                    command: Command::Other(other),
                    segmentation: Vec::new(),
                });
            }
            r.skip(command_len, "splice_command")?;
            Command::Other(other)
        }
    };
    if command_len != 0xFFF && r.byte() != start + command_len {
        // The command is longer than what was read (fields this reader does not know): skip.
        let read = r.byte() - start;
        if read > command_len {
            return Err(Scte35Error::Truncated("splice_command_length"));
        }
        r.skip(command_len - read, "splice_command")?;
    }
    let loop_len = r.u(16, "descriptor_loop_length")? as usize;
    let descriptors = r.take(loop_len, "descriptors")?;
    let mut segmentation = Vec::new();
    let mut d = descriptors;
    while d.len() >= 2 {
        let (tag, len) = (d[0], usize::from(d[1]));
        let body = d
            .get(2..2 + len)
            .ok_or(Scte35Error::Truncated("splice_descriptor"))?;
        // The identifier is "CUEI" for SCTE's own descriptors.
        if tag == 0x02 && body.len() >= 4 && &body[..4] == b"CUEI" {
            segmentation.push(segmentation_descriptor(&body[4..])?);
        }
        d = &d[2 + len..];
    }
    Ok(SpliceInfo {
        pts_adjustment,
        tier,
        command,
        segmentation,
    })
}

fn insert(r: &mut Bits<'_>, adjust: &dyn Fn(u64) -> u64) -> Result<Insert, Scte35Error> {
    let mut i = Insert {
        event_id: r.u(32, "splice_event_id")? as u32,
        cancel: r.u(1, "splice_event_cancel_indicator")? == 1,
        ..Insert::default()
    };
    r.u(7, "reserved")?;
    if i.cancel {
        return Ok(i);
    }
    i.out_of_network = r.u(1, "out_of_network_indicator")? == 1;
    let program = r.u(1, "program_splice_flag")? == 1;
    let has_duration = r.u(1, "duration_flag")? == 1;
    i.immediate = r.u(1, "splice_immediate_flag")? == 1;
    r.u(4, "reserved")?;
    if program && !i.immediate {
        i.pts = splice_time(r)?.map(adjust);
    }
    if !program {
        let n = r.u(8, "component_count")?;
        for _ in 0..n {
            r.u(8, "component_tag")?;
            if !i.immediate {
                // The first component's time stands for the splice's.
                let t = splice_time(r)?.map(adjust);
                i.pts = i.pts.or(t);
            }
        }
    }
    if has_duration {
        let auto_return = r.u(1, "auto_return")? == 1;
        r.u(6, "reserved")?;
        i.duration = Some((r.u(33, "duration")?, auto_return));
    }
    i.unique_program_id = r.u(16, "unique_program_id")? as u16;
    i.avail_num = r.u(8, "avail_num")? as u8;
    i.avails_expected = r.u(8, "avails_expected")? as u8;
    Ok(i)
}

/// `splice_time()` (§9.8.1): a PTS if specified.
fn splice_time(r: &mut Bits<'_>) -> Result<Option<u64>, Scte35Error> {
    if r.u(1, "time_specified_flag")? == 1 {
        r.u(6, "reserved")?;
        Ok(Some(r.u(33, "pts_time")?))
    } else {
        r.u(7, "reserved")?;
        Ok(None)
    }
}

fn segmentation_descriptor(body: &[u8]) -> Result<Segmentation, Scte35Error> {
    let mut r = Bits::new(body);
    let mut s = Segmentation {
        event_id: r.u(32, "segmentation_event_id")? as u32,
        cancel: r.u(1, "segmentation_event_cancel_indicator")? == 1,
        ..Segmentation::default()
    };
    r.u(7, "reserved")?;
    if s.cancel {
        return Ok(s);
    }
    let program = r.u(1, "program_segmentation_flag")? == 1;
    let has_duration = r.u(1, "segmentation_duration_flag")? == 1;
    r.u(6, "delivery restrictions")?;
    if !program {
        let n = r.u(8, "component_count")?;
        r.skip(6 * n as usize, "components")?;
    }
    if has_duration {
        s.duration = Some(r.u(40, "segmentation_duration")?);
    }
    s.upid_type = r.u(8, "segmentation_upid_type")? as u8;
    let upid_len = r.u(8, "segmentation_upid_length")? as usize;
    s.upid = r.take(upid_len, "segmentation_upid")?.to_vec();
    s.type_id = r.u(8, "segmentation_type_id")? as u8;
    s.segment_num = r.u(8, "segment_num")? as u8;
    s.segments_expected = r.u(8, "segments_expected")? as u8;
    Ok(s)
}

/// A big-endian bit reader over a byte slice.
struct Bits<'a> {
    data: &'a [u8],
    bit: usize,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Bits { data, bit: 0 }
    }

    fn u(&mut self, n: usize, what: &'static str) -> Result<u64, Scte35Error> {
        if self.bit + n > self.data.len() * 8 {
            return Err(Scte35Error::Truncated(what));
        }
        let mut v = 0u64;
        for _ in 0..n {
            let b = (self.data[self.bit / 8] >> (7 - self.bit % 8)) & 1;
            v = v << 1 | u64::from(b);
            self.bit += 1;
        }
        Ok(v)
    }

    /// The byte position (the reader is at a byte boundary where this is asked).
    fn byte(&self) -> usize {
        self.bit.div_ceil(8)
    }

    fn skip(&mut self, bytes: usize, what: &'static str) -> Result<(), Scte35Error> {
        self.take(bytes, what).map(|_| ())
    }

    fn take(&mut self, bytes: usize, what: &'static str) -> Result<&'a [u8], Scte35Error> {
        let at = self.byte();
        let out = self
            .data
            .get(at..at + bytes)
            .ok_or(Scte35Error::Truncated(what))?;
        self.bit = (at + bytes) * 8;
        Ok(out)
    }
}

/// Writing cues: the sections, and a stream that carries them (for test streams and
/// `avmon synth`).
pub mod write {
    use crate::packet::{pes_start, Header, PesStart, PACKET};
    use crate::psi::crc32_mpeg2;

    /// A `splice_insert` section: leaving the network (`out`) or returning to it, at 90 kHz
    /// `pts` (or at once when `None`), a break of `duration` ticks (auto return) when given.
    pub fn splice_insert(
        event_id: u32,
        out: bool,
        pts: Option<u64>,
        duration: Option<u64>,
    ) -> Vec<u8> {
        let mut c = Bits::default();
        c.put(32, u64::from(event_id));
        c.put(1, 0); // not cancelled
        c.put(7, 0x7F);
        c.put(1, u64::from(out));
        c.put(1, 1); // program splice
        c.put(1, u64::from(duration.is_some()));
        c.put(1, u64::from(pts.is_none())); // immediate
        c.put(4, 0xF);
        if let Some(p) = pts {
            c.put(1, 1);
            c.put(6, 0x3F);
            c.put(33, p & ((1 << 33) - 1));
        }
        if let Some(d) = duration {
            c.put(1, 1); // auto return
            c.put(6, 0x3F);
            c.put(33, d & ((1 << 33) - 1));
        }
        c.put(16, 1); // unique_program_id
        c.put(8, 0);
        c.put(8, 0);
        section(0x05, &c.bytes)
    }

    /// A splice_info_section around a command (no descriptors, no PTS adjustment).
    fn section(command_type: u8, command: &[u8]) -> Vec<u8> {
        let mut b = Bits::default();
        b.put(8, 0); // protocol_version
        b.put(1, 0); // not encrypted
        b.put(6, 0);
        b.put(33, 0); // pts_adjustment
        b.put(8, 0xFF); // cw_index
        b.put(12, 0xFFF); // tier
        b.put(12, command.len() as u64);
        b.put(8, u64::from(command_type));
        b.bytes.extend(command);
        b.bytes.extend([0, 0]); // descriptor_loop_length
        let len = b.bytes.len() + 4;
        let mut s = vec![super::TABLE_ID, 0x30 | (len >> 8) as u8, len as u8];
        s.extend(&b.bytes);
        let crc = crc32_mpeg2(&s);
        s.extend(crc.to_be_bytes());
        s
    }

    /// A most-significant-bit-first writer, as the section syntax is written.
    #[derive(Default)]
    pub struct Bits {
        pub bytes: Vec<u8>,
        bits: usize,
    }

    impl Bits {
        /// Append whole bytes (the writer being at a byte boundary).
        pub fn append(&mut self, bytes: &[u8]) {
            self.bytes.extend_from_slice(bytes);
            self.bits = self.bytes.len() * 8;
        }

        /// Append the low `n` bits of `v`.
        pub fn put(&mut self, n: usize, v: u64) {
            for k in (0..n).rev() {
                if self.bits % 8 == 0 {
                    self.bytes.push(0);
                }
                let last = self.bytes.len() - 1;
                self.bytes[last] |= (((v >> k) & 1) as u8) << (7 - self.bits % 8);
                self.bits += 1;
            }
        }
    }

    /// An avail to signal in a test stream (`avmon synth --cue`): `KIND@START-END` seconds of
    /// media, KIND being `avail` (a cue-out 6 s before START, a cue-in 6 s before END), `late`
    /// (the cue-out 1 s after START: its splice time already past) or `unended` (a cue-out,
    /// and no cue-in).
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub struct CueSpec {
        pub kind: CueKind,
        pub start: f64,
        pub end: f64,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum CueKind {
        Avail,
        Late,
        Unended,
    }

    /// The preroll `avail` cues are sent with, seconds: SCTE 67's 4 s and some to spare (a cue
    /// goes out with the first frame due at its time, and audio is muxed ahead).
    pub const PREROLL_S: f64 = 6.0;

    impl std::str::FromStr for CueSpec {
        type Err = String;
        fn from_str(s: &str) -> Result<Self, String> {
            let err = || {
                format!("bad cue {s:?}: expected avail|late|unended@START-END, e.g. avail@20-50")
            };
            let (kind, range) = s.split_once('@').ok_or_else(err)?;
            let kind = match kind.trim() {
                "avail" => CueKind::Avail,
                "late" => CueKind::Late,
                "unended" => CueKind::Unended,
                _ => return Err(err()),
            };
            let (a, b) = range.split_once('-').ok_or_else(err)?;
            let start: f64 = a.trim().parse().map_err(|_| err())?;
            let end: f64 = b.trim().parse().map_err(|_| err())?;
            if !(start >= 0.0 && end > start && end < 1e6) {
                return Err(format!("bad cue {s:?}: need 0 <= START < END"));
            }
            Ok(CueSpec { kind, start, end })
        }
    }

    /// The sections for `specs`, each with the 90 kHz time to send it at, for a stream whose
    /// media time 0 is `first_pts`; event ids count from 1.
    pub fn plan(first_pts: u64, specs: &[CueSpec]) -> Vec<(u64, Vec<u8>)> {
        let at = |s: f64| (first_pts + (s.max(0.0) * 90_000.0).round() as u64) & ((1 << 33) - 1);
        let mut out = Vec::new();
        for (n, c) in specs.iter().enumerate() {
            let id = n as u32 + 1;
            let duration = ((c.end - c.start) * 90_000.0).round() as u64;
            let sent = match c.kind {
                CueKind::Late => c.start + 1.0,
                _ => c.start - PREROLL_S,
            };
            out.push((
                at(sent),
                splice_insert(id, true, Some(at(c.start)), Some(duration)),
            ));
            if c.kind != CueKind::Unended {
                // After its cue-out, however late that was.
                let back = (c.end - PREROLL_S).max(sent + 1.5);
                out.push((at(back), splice_insert(id, false, Some(at(c.end)), None)));
            }
        }
        out
    }

    /// Why a stream could not take cues.
    #[derive(Debug, PartialEq, thiserror::Error)]
    pub enum InjectError {
        #[error("no PAT with a program in the stream")]
        NoProgram,
        #[error("the PMT does not fit one packet with the SCTE 35 stream added")]
        PmtTooLong,
    }

    /// The earliest PTS of any PES in `ts` (where its media time 0 lies).
    pub fn first_pts(ts: &[u8]) -> Option<u64> {
        ts.chunks_exact(PACKET)
            .filter_map(|p| {
                let p: &[u8; PACKET] = p.try_into().ok()?;
                let h = Header::parse(p);
                (h.pusi && h.payload < PACKET).then_some(())?;
                match pes_start(&p[h.payload..]) {
                    PesStart::Pts(v) if v != u64::MAX => Some(v),
                    _ => None,
                }
            })
            .take(50)
            .min()
    }

    /// `ts` (whole packets, as a muxer writes a file) with an SCTE 35 stream on `pid` added to
    /// its first program's PMT, and each section of `cues` sent in one packet just before the
    /// first PES packet whose PTS reaches the cue's 90 kHz time. A constant-rate stream (one
    /// with null packets) keeps its rate: the cue takes the place of the next null packet.
    pub fn inject(ts: &[u8], pid: u16, cues: &[(u64, Vec<u8>)]) -> Result<Vec<u8>, InjectError> {
        let packets: Vec<&[u8; PACKET]> = ts
            .chunks_exact(PACKET)
            .filter_map(|p| p.try_into().ok())
            .collect();
        let pmt_pid = packets
            .iter()
            .find_map(|p| {
                let h = Header::parse(p);
                if h.pid != 0 || !h.pusi || h.payload >= PACKET {
                    return None;
                }
                let sec = &p[h.payload + 1 + usize::from(p[h.payload])..];
                let len = usize::from(u16::from_be_bytes([sec[1] & 0x0F, sec[2]]));
                let body = sec.get(8..(3 + len).checked_sub(4)?)?;
                crate::psi::pat_programs(body)
                    .find(|&(n, _)| n != 0)
                    .map(|(_, p)| p)
            })
            .ok_or(InjectError::NoProgram)?;
        let mut cues: Vec<&(u64, Vec<u8>)> = cues.iter().collect();
        cues.sort_by_key(|c| c.0);
        let constant_rate = packets
            .iter()
            .any(|p| Header::parse(p).pid == crate::packet::NULL_PID);
        let mut next = 0;
        let mut due = 0;
        let mut cc = 0u8;
        let mut out = Vec::with_capacity(ts.len() + cues.len() * PACKET);
        for p in packets {
            let h = Header::parse(p);
            if h.pid == pmt_pid && h.pusi && h.payload < PACKET {
                out.extend(pmt_with(p, h.payload, pid)?);
                continue;
            }
            if due < cues.len() && h.pusi && h.payload < PACKET {
                if let PesStart::Pts(v) = pes_start(&p[h.payload..]) {
                    while due < cues.len()
                        && v != u64::MAX
                        && crate::packet::pts_diff(cues[due].0, v) >= 0
                    {
                        due += 1;
                    }
                }
            }
            if next < due {
                if !constant_rate {
                    while next < due {
                        out.extend(cue_packet(pid, cc, &cues[next].1));
                        cc = (cc + 1) & 0x0F;
                        next += 1;
                    }
                } else if h.pid == crate::packet::NULL_PID {
                    // The null packet's place is the cue's.
                    out.extend(cue_packet(pid, cc, &cues[next].1));
                    cc = (cc + 1) & 0x0F;
                    next += 1;
                    continue;
                }
            }
            out.extend_from_slice(p);
        }
        Ok(out)
    }

    /// A PMT packet with `(0x86, pid)` added to its elementary streams.
    fn pmt_with(p: &[u8; PACKET], payload: usize, pid: u16) -> Result<[u8; PACKET], InjectError> {
        let start = payload + 1 + usize::from(p[payload]);
        let sec = &p[start..];
        let len = usize::from(u16::from_be_bytes([sec[1] & 0x0F, sec[2]]));
        let end = 3 + len - 4; // before the CRC
        if start + end + 5 + 4 > PACKET {
            return Err(InjectError::PmtTooLong);
        }
        let mut s = sec[..end].to_vec();
        s.extend([
            super::STREAM_TYPE,
            0xE0 | (pid >> 8) as u8,
            pid as u8,
            0xF0,
            0x00,
        ]);
        let new_len = len + 5;
        s[1] = (s[1] & 0xF0) | (new_len >> 8) as u8;
        s[2] = new_len as u8;
        let crc = crc32_mpeg2(&s);
        s.extend(crc.to_be_bytes());
        let mut q = [0xFF; PACKET];
        q[..start].copy_from_slice(&p[..start]);
        q[start..start + s.len()].copy_from_slice(&s);
        Ok(q)
    }

    fn cue_packet(pid: u16, cc: u8, section: &[u8]) -> [u8; PACKET] {
        let mut q = [0xFF; PACKET];
        q[0] = 0x47;
        q[1] = 0x40 | (pid >> 8) as u8;
        q[2] = pid as u8;
        q[3] = 0x10 | cc;
        q[4] = 0; // pointer_field
        let n = section.len().min(PACKET - 5);
        q[5..5 + n].copy_from_slice(&section[..n]);
        q
    }
}
