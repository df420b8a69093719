//! One 188-byte transport packet's header and adaptation field (ISO/IEC 13818-1 §2.4.3.2,
//! §2.4.3.4), read without trusting any length in it: a field that points outside the packet
//! makes the packet "no payload, no adaptation fields", never an out-of-bounds read.

/// Bytes in a transport packet. 204-byte (Reed–Solomon) and 192-byte (M2TS) framings are not
/// read: the sources avmon ingests (files, UDP/RTP, SRT, HLS segments) carry 188.
pub const PACKET: usize = 188;
/// `sync_byte`.
pub const SYNC: u8 = 0x47;
/// Null packets: no continuity counter to check (§2.4.3.3).
pub const NULL_PID: u16 = 0x1FFF;
/// The PCR counts a 27 MHz clock.
pub const PCR_HZ: f64 = 27_000_000.0;
/// PCR values wrap at `2^33 × 300` (a 33-bit base at 90 kHz and a 9-bit extension below 300).
pub const PCR_WRAP: u64 = (1 << 33) * 300;

/// The fields of one packet the analyser uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// `transport_error_indicator`.
    pub tei: bool,
    /// `payload_unit_start_indicator`.
    pub pusi: bool,
    pub pid: u16,
    /// `transport_scrambling_control` (0 = not scrambled).
    pub scrambling: u8,
    /// `adaptation_field_control`; `0b00` is reserved and such a packet is discarded by decoders.
    pub afc: u8,
    /// `continuity_counter`.
    pub cc: u8,
    /// The adaptation field's `discontinuity_indicator`.
    pub discontinuity: bool,
    /// The PCR in 27 MHz ticks, and where its six bytes sit in the packet.
    pub pcr: Option<(u64, usize)>,
    /// Offset of the payload; `PACKET` when there is none.
    pub payload: usize,
}

impl Header {
    /// Whether the packet carries a payload (and so increments the continuity counter).
    pub fn has_payload(&self) -> bool {
        self.afc & 1 != 0
    }

    /// Parse `p`, whose first byte is the sync byte.
    pub fn parse(p: &[u8; PACKET]) -> Header {
        let afc = (p[3] >> 4) & 3;
        let mut h = Header {
            tei: p[1] & 0x80 != 0,
            pusi: p[1] & 0x40 != 0,
            pid: (u16::from(p[1] & 0x1F) << 8) | u16::from(p[2]),
            scrambling: p[3] >> 6,
            afc,
            cc: p[3] & 0x0F,
            discontinuity: false,
            pcr: None,
            payload: if afc == 1 { 4 } else { PACKET },
        };
        if afc & 2 != 0 {
            let len = usize::from(p[4]);
            // With a payload the field leaves at least one byte for it (≤ 182); without, it fills
            // the packet (183). A longer one is corrupt: nothing in it is believed.
            let max = if afc == 3 { 182 } else { 183 };
            if len > max {
                return h;
            }
            if len > 0 {
                let flags = p[5];
                h.discontinuity = flags & 0x80 != 0;
                if flags & 0x10 != 0 && len >= 7 {
                    h.pcr = Some((pcr_at(&p[6..12]), 6));
                }
            }
            if afc == 3 {
                h.payload = 5 + len;
            }
        }
        h
    }
}

/// A PCR from its six bytes: 33-bit base × 300 + 9-bit extension.
fn pcr_at(b: &[u8]) -> u64 {
    let base = (u64::from(b[0]) << 25)
        | (u64::from(b[1]) << 17)
        | (u64::from(b[2]) << 9)
        | (u64::from(b[3]) << 1)
        | u64::from(b[4] >> 7);
    let ext = (u64::from(b[4] & 1) << 8) | u64::from(b[5]);
    base * 300 + ext
}

/// `b - a` on the PCR's wrapping clock, as a signed tick count: the nearer of the two ways round.
pub fn pcr_diff(a: u64, b: u64) -> i64 {
    let d = (b % PCR_WRAP + PCR_WRAP - a % PCR_WRAP) % PCR_WRAP;
    if d > PCR_WRAP / 2 {
        d as i64 - PCR_WRAP as i64
    } else {
        d as i64
    }
}

/// `b - a` on the 33-bit 90 kHz clock of PTS values, signed, the nearer way round.
pub fn pts_diff(a: u64, b: u64) -> i64 {
    const WRAP: u64 = 1 << 33;
    let d = (b.wrapping_sub(a)) & (WRAP - 1);
    if d > WRAP / 2 {
        d as i64 - WRAP as i64
    } else {
        d as i64
    }
}

/// What the start of a PES packet says about its PTS (§2.4.3.6, §2.4.3.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PesStart {
    /// Not a PES start code: nothing to say.
    NotPes,
    /// A PES packet without a PTS (or of a stream_id without the optional header).
    NoPts,
    Pts(u64),
}

/// Read the PTS of a PES packet starting at `pes` (the payload of a packet with
/// `payload_unit_start_indicator`).
pub fn pes_start(pes: &[u8]) -> PesStart {
    if pes.len() < 9 || pes[..3] != [0, 0, 1] {
        return PesStart::NotPes;
    }
    // stream_ids without the optional PES header (Table 2-22): program_stream_map, padding,
    // private_stream_2, ECM, EMM, program_stream_directory, DSM-CC, H.222.1 type E.
    if matches!(
        pes[3],
        0xBC | 0xBE | 0xBF | 0xF0 | 0xF1 | 0xF2 | 0xF8 | 0xFF
    ) {
        return PesStart::NoPts;
    }
    if pes[6] >> 6 != 0b10 || pes[7] & 0x80 == 0 {
        return PesStart::NoPts;
    }
    let Some(b) = pes.get(9..14) else {
        // The flags say there is a PTS, but it lies in the next packet (a PES header split by a
        // huge adaptation field): present, value unread.
        return PesStart::Pts(u64::MAX);
    };
    PesStart::Pts(
        (u64::from(b[0] >> 1 & 7) << 30)
            | (u64::from(b[1]) << 22)
            | (u64::from(b[2] >> 1) << 15)
            | (u64::from(b[3]) << 7)
            | u64::from(b[4] >> 1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(b1: u8, b2: u8, b3: u8) -> [u8; PACKET] {
        let mut p = [0xFF; PACKET];
        p[0] = SYNC;
        p[1] = b1;
        p[2] = b2;
        p[3] = b3;
        p
    }

    #[test]
    fn header_fields() {
        let h = Header::parse(&packet(0xC1, 0x00, 0x9A));
        assert!(h.tei && h.pusi);
        assert_eq!((h.pid, h.scrambling, h.afc, h.cc), (0x100, 2, 1, 10));
        assert_eq!(h.payload, 4);
        assert!(h.has_payload() && !h.discontinuity && h.pcr.is_none());
    }

    #[test]
    fn adaptation_field_with_pcr_and_discontinuity() {
        let mut p = packet(0x01, 0x00, 0x30);
        p[4] = 7;
        p[5] = 0x90;
        // base = 2^32 + 3, extension = 299.
        p[6..12].copy_from_slice(&[0x80, 0, 0, 0x01, 0x81, 0x2B]);
        let h = Header::parse(&p);
        assert!(h.discontinuity);
        assert_eq!(h.pcr, Some((((1u64 << 32) + 3) * 300 + 299, 6)));
        assert_eq!(h.payload, 12);
    }

    #[test]
    fn a_corrupt_adaptation_length_is_not_believed() {
        let mut p = packet(0x01, 0x00, 0x30);
        p[4] = 183; // leaves no room for the payload afc = 3 promises
        p[5] = 0x90;
        let h = Header::parse(&p);
        assert_eq!(h.payload, PACKET);
        assert!(!h.discontinuity && h.pcr.is_none());
        // Adaptation only, filling the packet: fine, and no payload.
        let mut p = packet(0x01, 0x00, 0x20);
        p[4] = 183;
        p[5] = 0x80;
        let h = Header::parse(&p);
        assert!(h.discontinuity && !h.has_payload());
    }

    #[test]
    fn clock_differences_take_the_short_way_round() {
        assert_eq!(pcr_diff(PCR_WRAP - 10, 5), 15);
        assert_eq!(pcr_diff(5, PCR_WRAP - 10), -15);
        assert_eq!(pcr_diff(100, 40), -60);
        assert_eq!(pts_diff((1 << 33) - 1, 1), 2);
        assert_eq!(pts_diff(1, (1 << 33) - 1), -2);
    }

    #[test]
    fn pes_pts() {
        let pts: u64 = (1 << 32) + 12345;
        let mut pes = vec![0, 0, 1, 0xE0, 0, 0, 0x80, 0x80, 5];
        pes.extend([
            0x21 | ((pts >> 29) & 0x0E) as u8,
            (pts >> 22) as u8,
            0x01 | ((pts >> 14) & 0xFE) as u8,
            (pts >> 7) as u8,
            0x01 | ((pts << 1) & 0xFE) as u8,
        ]);
        assert_eq!(pes_start(&pes), PesStart::Pts(pts));
        assert_eq!(pes_start(&pes[..10]), PesStart::Pts(u64::MAX));
        pes[7] = 0;
        assert_eq!(pes_start(&pes), PesStart::NoPts);
        pes[3] = 0xBE;
        assert_eq!(pes_start(&pes), PesStart::NoPts);
        assert_eq!(pes_start(&[0, 0, 2, 0xE0, 0, 0, 0, 0, 0]), PesStart::NotPes);
        assert_eq!(pes_start(&[0, 0, 1]), PesStart::NotPes);
    }
}
