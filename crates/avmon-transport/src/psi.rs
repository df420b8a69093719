//! PSI sections: reassembly from packet payloads, CRC-32/MPEG-2, and the two tables the analyser
//! reads (PAT, PMT), per ISO/IEC 13818-1 §2.4.4.
//!
//! Every length comes from the stream, so every one is checked against what is there: a
//! malformed section is dropped whole, never read past its end.

/// The longest section (private sections: 4093 bytes after the 3-byte header).
const MAX_SECTION: usize = 4096;

/// CRC-32/MPEG-2: polynomial 0x04C11DB7, initial value all ones, not reflected, no final XOR
/// (Annex A). Over a whole section including its CRC_32 field, the result is 0.
pub fn crc32_mpeg2(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0xFFFF_FFFF, |crc, &b| {
        (crc << 8) ^ CRC_TABLE[usize::from((crc >> 24) as u8 ^ b)]
    })
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = (i as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 0x8000_0000 != 0 {
                (c << 1) ^ 0x04C1_1DB7
            } else {
                c << 1
            };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// Whether a complete section carries a CRC_32: every section with `section_syntax_indicator`
/// set, and the TOT (table_id 0x73), which has one without it (EN 300 468 §5.2.6).
pub fn has_crc(section: &[u8]) -> bool {
    section[1] & 0x80 != 0 || section[0] == 0x73
}

/// Reassembles the sections of one PID from its packets' payloads (§2.4.4.1–2.4.4.2).
#[derive(Debug, Default)]
pub struct Assembler {
    buf: Vec<u8>,
    /// Collecting a section whose start was seen.
    open: bool,
}

impl Assembler {
    /// Forget a section in progress (its packets were lost or cannot be trusted).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.open = false;
    }

    /// Take one packet's payload; call `done` with each section it completes.
    pub fn push(&mut self, payload: &[u8], pusi: bool, mut done: impl FnMut(&[u8])) {
        if !pusi {
            if self.open {
                self.append(payload, &mut done);
            }
            return;
        }
        let Some((&pointer, rest)) = payload.split_first() else {
            self.reset();
            return;
        };
        let pointer = usize::from(pointer);
        if pointer > rest.len() {
            self.reset();
            return;
        }
        let (tail, mut next) = rest.split_at(pointer);
        if self.open {
            // The end of the section begun in an earlier packet. If it does not end exactly here,
            // the section was damaged on the way and is dropped.
            self.append(tail, &mut done);
            self.reset();
        }
        // New sections start here, back to back, until stuffing (0xFF) or the payload's end.
        while let Some(&table_id) = next.first() {
            if table_id == 0xFF {
                break;
            }
            self.open = true;
            next = self.append(next, &mut done);
            if self.open {
                break;
            }
        }
    }

    /// Add `bytes` to the open section; when it completes, hand it to `done`, close it and
    /// return what is left of `bytes`.
    fn append<'a>(&mut self, bytes: &'a [u8], done: &mut impl FnMut(&[u8])) -> &'a [u8] {
        let mut bytes = bytes;
        if self.buf.len() < 3 {
            let take = (3 - self.buf.len()).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.buf.len() < 3 {
                return bytes;
            }
        }
        let total = 3 + (usize::from(self.buf[1] & 0x0F) << 8 | usize::from(self.buf[2]));
        if total > MAX_SECTION {
            self.reset();
            return &[];
        }
        let take = (total - self.buf.len()).min(bytes.len());
        self.buf.extend_from_slice(&bytes[..take]);
        if self.buf.len() == total {
            done(&self.buf);
            self.reset();
        }
        &bytes[take..]
    }
}

/// The fixed part of a long-form section (`section_syntax_indicator` = 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LongHeader {
    pub table_id: u8,
    /// table_id_extension: transport_stream_id in a PAT, program_number in a PMT.
    pub extension: u16,
    pub version: u8,
    pub current: bool,
    pub section_number: u8,
}

impl LongHeader {
    /// The header and the body between it and the CRC, if `s` is a long-form section.
    pub fn parse(s: &[u8]) -> Option<(LongHeader, &[u8])> {
        if s.len() < 12 || s[1] & 0x80 == 0 {
            return None;
        }
        Some((
            LongHeader {
                table_id: s[0],
                extension: u16::from_be_bytes([s[3], s[4]]),
                version: (s[5] >> 1) & 0x1F,
                current: s[5] & 1 != 0,
                section_number: s[6],
            },
            &s[8..s.len() - 4],
        ))
    }
}

/// `(program_number, PID)` pairs of a PAT section's body; program 0 names the network PID.
pub fn pat_programs(body: &[u8]) -> impl Iterator<Item = (u16, u16)> + '_ {
    body.chunks_exact(4).map(|e| {
        (
            u16::from_be_bytes([e[0], e[1]]),
            u16::from_be_bytes([e[2] & 0x1F, e[3]]),
        )
    })
}

/// One elementary stream of a PMT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Es {
    pub pid: u16,
    pub stream_type: u8,
    /// Audio or video, whose PTS repeats (TR 101 290 2.5 is about these; subtitles and data
    /// streams send PTS only when they have something to show).
    pub av: bool,
}

/// The elementary streams of a PMT section's body (§2.4.4.8); `None` if the loop overruns it.
pub fn pmt_streams(body: &[u8]) -> Option<Vec<Es>> {
    let info_len = usize::from(u16::from_be_bytes([*body.get(2)? & 0x0F, *body.get(3)?]));
    let mut rest = body.get(4 + info_len..)?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let head = rest.get(..5)?;
        let stream_type = head[0];
        let pid = u16::from_be_bytes([head[1] & 0x1F, head[2]]);
        let es_len = usize::from(u16::from_be_bytes([head[3] & 0x0F, head[4]]));
        let descriptors = rest.get(5..5 + es_len)?;
        out.push(Es {
            pid,
            stream_type,
            av: is_av(stream_type, descriptors),
        });
        rest = &rest[5 + es_len..];
    }
    Some(out)
}

/// Audio and video stream types (H.222.0 Table 2-34, ATSC A/52), and private PES (0x06) that a
/// DVB audio descriptor marks as audio (EN 300 468: AC-3 0x6A, E-AC-3 0x7A, DTS 0x7B, AAC 0x7C).
fn is_av(stream_type: u8, descriptors: &[u8]) -> bool {
    match stream_type {
        0x01 | 0x02 | 0x03 | 0x04 | 0x0F | 0x10 | 0x11 | 0x1B | 0x1C | 0x1F | 0x20 | 0x24
        | 0x2D | 0x2E | 0x33 | 0x42 | 0x81 | 0x87 | 0xEA => true,
        0x06 => {
            let mut d = descriptors;
            while d.len() >= 2 {
                if matches!(d[0], 0x6A | 0x7A | 0x7B | 0x7C) {
                    return true;
                }
                d = d.get(2 + usize::from(d[1])..).unwrap_or(&[]);
            }
            false
        }
        _ => false,
    }
}

/// A long-form section (version 0, current, section 0 of 0) of `table_id` with
/// `table_id_extension` `extension` around `body`, with a correct CRC: for building test streams.
pub fn long_section(table_id: u8, extension: u16, body: &[u8]) -> Vec<u8> {
    let len = 5 + body.len() + 4;
    let mut s = vec![table_id, 0xB0 | (len >> 8) as u8, len as u8];
    s.extend(extension.to_be_bytes());
    s.extend([0xC1, 0, 0]);
    s.extend(body);
    let crc = crc32_mpeg2(&s);
    s.extend(crc.to_be_bytes());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(table_id: u8, extension: u16, body: &[u8]) -> Vec<u8> {
        long_section(table_id, extension, body)
    }

    fn collect(a: &mut Assembler, payload: &[u8], pusi: bool) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        a.push(payload, pusi, |s| out.push(s.to_vec()));
        out
    }

    #[test]
    fn crc_of_a_known_section() {
        // The PAT FFmpeg's muxer writes: tsid 1, program 1 -> PMT 0x1000.
        let pat = [
            0x00, 0xB0, 0x0D, 0x00, 0x01, 0xC1, 0x00, 0x00, 0x00, 0x01, 0xF0, 0x00, 0x2A, 0xB1,
            0x04, 0xB2,
        ];
        assert_eq!(crc32_mpeg2(&pat[..12]), 0x2AB1_04B2);
        assert_eq!(crc32_mpeg2(&pat), 0);
        assert_eq!(
            crc32_mpeg2(b"123456789"),
            0x0376_E6E7,
            "the catalogue check value"
        );
    }

    #[test]
    fn sections_split_and_packed() {
        let a_sec = section(0x02, 1, &[0xE1, 0x00, 0xF0, 0x00]);
        let b_sec = section(0x02, 2, &[0xE1, 0x00, 0xF0, 0x00]);
        let mut asm = Assembler::default();
        // Two sections in one payload, then stuffing.
        let mut p = vec![0];
        p.extend(&a_sec);
        p.extend(&b_sec);
        p.extend([0xFF; 10]);
        assert_eq!(
            collect(&mut asm, &p, true),
            vec![a_sec.clone(), b_sec.clone()]
        );
        // One section over three payloads, the tail ending where the next section starts.
        let (x, rest) = a_sec.split_at(2);
        let (y, z) = rest.split_at(7);
        assert!(collect(&mut asm, &[&[0u8][..], x].concat(), true).is_empty());
        assert!(collect(&mut asm, y, false).is_empty());
        let mut last = vec![z.len() as u8];
        last.extend(z);
        last.extend(&b_sec);
        assert_eq!(collect(&mut asm, &last, true), vec![a_sec.clone(), b_sec]);
    }

    #[test]
    fn a_section_cut_short_is_dropped() {
        let s = section(0x00, 1, &[0, 1, 0xF0, 0]);
        let mut asm = Assembler::default();
        assert!(collect(&mut asm, &[&[0u8][..], &s[..8]].concat(), true).is_empty());
        // The next unit starts with a pointer that says the old section ended after 2 more
        // bytes: too few, so it is dropped; the new one is whole.
        let mut p = vec![2, 0xAA, 0xBB];
        p.extend(&s);
        assert_eq!(collect(&mut asm, &p, true), vec![s.clone()]);
        // A pointer past the payload, an empty payload, a length beyond any section.
        assert!(collect(&mut asm, &[200, 1, 2], true).is_empty());
        assert!(collect(&mut asm, &[], true).is_empty());
        assert!(collect(&mut asm, &[0, 0x80, 0xBF, 0xFF, 1, 2], true).is_empty());
        assert!(collect(&mut asm, &s, false).is_empty(), "nothing open");
    }

    #[test]
    fn pat_and_pmt_bodies() {
        let s = section(0x00, 7, &[0, 0, 0xE0, 0x10, 0, 1, 0xF0, 0]);
        let (h, body) = LongHeader::parse(&s).unwrap();
        assert_eq!(
            (h.table_id, h.extension, h.version, h.current),
            (0, 7, 0, true)
        );
        assert_eq!(
            pat_programs(body).collect::<Vec<_>>(),
            vec![(0, 0x10), (1, 0x1000)]
        );

        let mut body = vec![0xE1, 0x00, 0xF0, 0x00];
        body.extend([0x1B, 0xE1, 0x00, 0xF0, 0x00]); // H.264
        body.extend([0x06, 0xE1, 0x01, 0xF0, 0x03, 0x6A, 0x01, 0x00]); // AC-3 by descriptor
        body.extend([0x06, 0xE1, 0x02, 0xF0, 0x02, 0x59, 0x00]); // subtitles
        let s = section(0x02, 1, &body);
        let (_, b) = LongHeader::parse(&s).unwrap();
        let es = pmt_streams(b).unwrap();
        assert_eq!(
            es.iter().map(|e| (e.pid, e.av)).collect::<Vec<_>>(),
            vec![(0x100, true), (0x101, true), (0x102, false)]
        );
        // An ES_info_length that runs past the section.
        body.extend([0x0F, 0xE1, 0x03, 0xF0, 0x40]);
        let s = section(0x02, 1, &body);
        assert_eq!(pmt_streams(LongHeader::parse(&s).unwrap().1), None);
        assert!(LongHeader::parse(&[0, 0x30, 1]).is_none());
    }
}
