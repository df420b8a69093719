//! At the `keyframes` tier, the video's inter-coded pictures are blanked out of the transport
//! stream before FFmpeg's demuxer sees it, so that it neither gathers them into packets nor
//! runs its parser over them (on a 5 Mbit/s stream that was most of the tier's cost above
//! `transport`).
//!
//! Each PES packet of the video PID is judged by its first TS packet: it starts a keyframe
//! when the adaptation field says random access, or when the elementary stream there begins a
//! picture that can start decoding (H.264: an IDR slice, a sequence parameter set or a
//! recovery-point SEI; HEVC: an IRAP picture or a parameter set; MPEG-2: a sequence or GOP
//! header, or an I picture). Anything it cannot judge is kept. For the others:
//! - its first TS packet is kept, so that the demuxer still hands over one (short) packet per
//!   picture: the parser finds where each keyframe ends at once, rather than at the next
//!   keyframe, and the packet clock keeps its pace. A length in its PES header is cut to what
//!   is kept;
//! - the rest become null packets (PID 0x1FFF) in place: byte positions do not move, so the
//!   demuxer's packet positions still match the transport analysis, which saw the bytes first;
//! - the continuity counters of the video PID's packets kept are lowered by the number
//!   blanked, so that the demuxer sees no gap of ours, while a real gap still shows;
//! - its byte position and whole size are remembered ([`KeyFilter::blanked`]): the demuxer's
//!   packet for it is known by its position and PTS, so that it is never decoded, whatever the
//!   tier is by then, and what the skipped pictures' sizes say about change between keyframes
//!   is not lost.
//!
//! Only whole 188-byte packets are judged: the I/O layer holds a packet split over two reads
//! back until it is whole ([`crate::ingest`]).

use std::collections::VecDeque;

/// A TS packet.
pub(crate) const TS: usize = 188;
const SYNC: u8 = 0x47;
const NULL_PID: u16 = 0x1fff;
/// Sizes of skipped pictures remembered: a few seconds' worth at any frame rate.
const SIZES_KEPT: usize = 512;

/// The video codecs whose keyframes can be told from the start of a PES packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Es {
    H264,
    Hevc,
    Mpeg2,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct KeyFilter {
    pid: u16,
    es: Es,
    /// Blanking; when not (the tier went up), the pictures already blanked are still known,
    /// so that none of them reaches the decoder.
    pub(crate) active: bool,
    /// The PES packet in progress on `pid` is blanked after its first TS packet.
    dropping: bool,
    /// Payload-carrying packets blanked, modulo 16.
    shift: u8,
    /// Continuity counter of the last payload-carrying packet seen on `pid` (duplicates are
    /// sent with the same counter and do not advance it).
    last_cc: Option<u8>,
    /// The PES packet in progress is being blanked and its size counted in `sizes`' last.
    counting: bool,
    /// Blanked PES packets' byte position, PTS and payload size (so far, for the one in
    /// progress), oldest first.
    sizes: VecDeque<(i64, i64, usize)>,
    /// PES packets kept whole and blanked, counted as they begin.
    pub(crate) kept: u64,
    pub(crate) blanked: u64,
}

impl KeyFilter {
    pub(crate) fn new(pid: u16, es: Es) -> Self {
        KeyFilter {
            pid,
            es,
            active: true,
            dropping: false,
            shift: 0,
            last_cc: None,
            counting: false,
            sizes: VecDeque::new(),
            kept: 0,
            blanked: 0,
        }
    }

    pub(crate) fn pid(&self) -> u16 {
        self.pid
    }

    /// What follows does not continue what came before (the source was reopened, or the
    /// filter resumes): no PES packet, counter or gap carries over. The pictures blanked stay
    /// known (their positions are not met again).
    pub(crate) fn restart(&mut self) {
        self.dropping = false;
        self.shift = 0;
        self.last_cc = None;
        self.counting = false;
    }

    /// The whole size of the picture whose PES packet starts at byte `pos` of the input with
    /// presentation time `pts` (90 kHz), when it was blanked. Asked for every video packet, so
    /// a binary search: positions only grow.
    pub(crate) fn blanked(&self, pos: i64, pts: i64) -> Option<usize> {
        let i = self.sizes.partition_point(|s| s.0 < pos);
        self.sizes
            .get(i)
            .filter(|s| s.0 == pos && s.1 == pts)
            .map(|s| s.2)
    }

    /// Filter `buf`, whole TS packets from a packet's start at byte `pos` of the input, in
    /// place. Returns how many bytes were judged: all of them, or up to a packet that does not
    /// start with the sync byte (the caller finds the packets again; what follows is left as
    /// it was).
    pub(crate) fn packets(&mut self, buf: &mut [u8], pos: i64) -> usize {
        if !self.active {
            return buf.len();
        }
        let mut done = 0;
        for p in buf.chunks_exact_mut(TS) {
            if p[0] != SYNC {
                return done;
            }
            self.packet(p, pos + done as i64);
            done += TS;
        }
        done
    }

    fn packet(&mut self, p: &mut [u8], pos: i64) {
        let pid = (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2]);
        // A packet the link layer marked damaged is passed on as it is: its header is not to
        // be trusted.
        if pid != self.pid || p[1] & 0x80 != 0 {
            return;
        }
        let afc = (p[3] >> 4) & 3;
        let cc = p[3] & 0x0f;
        let has_payload = afc & 1 != 0;
        let start = if afc & 2 != 0 {
            5 + usize::from(p[4])
        } else {
            4
        };
        if start > TS {
            return;
        }
        let duplicate = has_payload && self.last_cc == Some(cc);
        if has_payload {
            self.last_cc = Some(cc);
        }
        if p[1] & 0x40 != 0 && has_payload {
            let rai = afc & 2 != 0 && p[4] > 0 && p[5] & 0x40 != 0;
            let (keep, pts) = judge(self.es, &p[start..]);
            self.dropping = !(rai || keep);
            self.counting = false;
            if self.dropping {
                self.blanked += 1;
                if let Some(pts) = pts {
                    if self.sizes.len() == SIZES_KEPT {
                        self.sizes.pop_front();
                    }
                    self.sizes.push_back((pos, pts, TS - start));
                    self.counting = true;
                }
                cut_pes_length(&mut p[start..]);
            } else {
                self.kept += 1;
            }
        } else if has_payload && self.dropping {
            if let Some(last) = self.sizes.back_mut().filter(|_| self.counting) {
                last.2 += TS - start;
            }
            if !duplicate {
                self.shift = (self.shift + 1) & 0x0f;
            }
            p[1] = (NULL_PID >> 8) as u8;
            p[2] = NULL_PID as u8;
            return;
        }
        p[3] = (p[3] & 0xf0) | (cc.wrapping_sub(self.shift) & 0x0f);
    }
}

/// Where the elementary stream starts in a PES packet's first bytes, and its PTS.
fn pes_header(d: &[u8]) -> Option<(usize, Option<i64>)> {
    // A video stream id: its header has the optional fields.
    if d.len() < 9 || d[..3] != [0, 0, 1] || d[3] & 0xf0 != 0xe0 {
        return None;
    }
    let es = 9 + usize::from(d[8]);
    let pts = (d[7] & 0x80 != 0 && d.len() >= 14).then(|| {
        (i64::from(d[9] >> 1 & 7) << 30)
            | (i64::from(d[10]) << 22)
            | (i64::from(d[11] >> 1) << 15)
            | (i64::from(d[12]) << 7)
            | i64::from(d[13] >> 1)
    });
    Some((es.min(d.len()), pts))
}

/// A kept first packet stands for the whole PES packet: a length given in its header would
/// make the demuxer call it damaged, so it says what is kept instead (0, unbounded, stays).
fn cut_pes_length(d: &mut [u8]) {
    if d.len() >= 6 && d[..3] == [0, 0, 1] && (d[4] != 0 || d[5] != 0) {
        let len = (d.len() - 6) as u16;
        d[4..6].copy_from_slice(&len.to_be_bytes());
    }
}

/// Whether a PES packet that begins with `d` (its first TS packet's payload) may start a
/// keyframe: true when the elementary stream's first pictures say so, or cannot be judged
/// from these bytes. And its PTS.
fn judge(es: Es, d: &[u8]) -> (bool, Option<i64>) {
    let Some((at, pts)) = pes_header(d) else {
        return (true, None);
    };
    let d = &d[at..];
    let mut i = 0;
    while let Some(off) = start_code(&d[i..]) {
        let n = i + off + 3;
        let Some(&b) = d.get(n) else { break };
        let verdict = match es {
            Es::H264 => match b & 0x1f {
                5 | 7 => Some(true),
                1 => Some(false),
                6 if sei_recovery_point(&d[n + 1..]) => Some(true),
                _ => None,
            },
            Es::Hevc => match (b >> 1) & 0x3f {
                16..=23 | 32..=34 => Some(true),
                0..=9 => Some(false),
                _ => None,
            },
            Es::Mpeg2 => match b {
                0xb3 | 0xb8 => Some(true),
                // A picture header: its coding type, 1 for I.
                0x00 => d.get(n + 2).map(|&c| (c >> 3) & 7 == 1),
                _ => None,
            },
        };
        if let Some(v) = verdict {
            return (v, pts);
        }
        i = n + 1;
    }
    (true, pts)
}

/// Offset of the next `00 00 01` in `d`.
fn start_code(d: &[u8]) -> Option<usize> {
    d.windows(3).position(|w| w == [0, 0, 1])
}

/// Whether an H.264 SEI NAL unit's payload (after its header byte) holds a recovery point
/// (payload type 6) among the messages that fit in `d`.
fn sei_recovery_point(d: &[u8]) -> bool {
    let mut i = 0;
    let read = |i: &mut usize| -> Option<usize> {
        let mut v = 0usize;
        loop {
            let b = *d.get(*i)?;
            *i += 1;
            v += usize::from(b);
            if b != 0xff {
                return Some(v);
            }
        }
    };
    while i < d.len() && d[i] != 0x80 {
        let (Some(kind), Some(size)) = (read(&mut i), read(&mut i)) else {
            return false;
        };
        if kind == 6 {
            return true;
        }
        i += size;
    }
    false
}

/// Where the packets start in `d`: the first sync byte followed by sync bytes 188 and 376 bytes
/// on (as far as `d` goes).
pub(crate) fn find_sync(d: &[u8]) -> Option<usize> {
    (0..d.len().min(TS)).find(|&i| {
        d[i] == SYNC
            && d.get(i + TS).is_none_or(|&b| b == SYNC)
            && d.get(i + 2 * TS).is_none_or(|&b| b == SYNC)
    })
}

/// The filter on arbitrary bytes, for `fuzz/` (built with `--cfg fuzzing`). The first bytes
/// pick the codec, the PID, the read size and when the source restarts; the rest is fed as
/// ingest feeds it, whole packets from a found sync. Asserts what the module promises:
/// - packets of other PIDs, and packets flagged damaged, are not touched;
/// - a packet of the PID keeps its sync byte and either becomes a null packet with the rest
///   of its bytes as they were, or keeps its PID and changes at most its continuity counter
///   and its PES length;
/// - a read stops only at a packet without the sync byte, and leaves what follows as it was;
/// - the counts only grow, and the blanked pictures' positions stay in order (the lookup is a
///   binary search) and bounded in number.
#[cfg(fuzzing)]
pub fn fuzz(data: &[u8]) {
    let [sel, pid, read, rest @ ..] = data else {
        return;
    };
    let es = [Es::H264, Es::Hevc, Es::Mpeg2][usize::from(*sel % 3)];
    let pid = 0x100 | u16::from(*pid & 3);
    let read = (usize::from(*read % 8) + 1) * TS;
    let mut f = KeyFilter::new(pid, es);
    let mut buf = rest.to_vec();
    let mut at = 0;
    let mut reads = 0u32;
    while at < buf.len() {
        let Some(off) = find_sync(&buf[at..]) else {
            at += TS;
            continue;
        };
        at += off;
        let whole = (buf.len() - at).min(read) / TS * TS;
        if whole == 0 {
            break;
        }
        let before = buf[at..at + whole].to_vec();
        let (kept, blanked) = (f.kept, f.blanked);
        let n = f.packets(&mut buf[at..at + whole], at as i64);
        assert!(
            n % TS == 0 && n >= TS && n <= whole,
            "judged {n} of {whole}"
        );
        assert_eq!(
            buf[at + n..at + whole],
            before[n..],
            "bytes after the stop changed"
        );
        for (a, b) in before[..n].chunks(TS).zip(buf[at..at + n].chunks(TS)) {
            let a_pid = (u16::from(a[1] & 0x1f) << 8) | u16::from(a[2]);
            if a_pid != pid || a[1] & 0x80 != 0 || a == b {
                assert_eq!(a, b, "a packet not the filter's was changed");
                continue;
            }
            let b_pid = (u16::from(b[1] & 0x1f) << 8) | u16::from(b[2]);
            assert_eq!(b[0], SYNC);
            if b_pid == NULL_PID {
                assert_eq!(a[3..], b[3..], "a null packet's payload changed");
                continue;
            }
            assert_eq!(
                (&a[1..3], a[3] & 0xf0),
                (&b[1..3], b[3] & 0xf0),
                "header changed"
            );
            let start = if a[3] & 0x20 != 0 {
                5 + usize::from(a[4])
            } else {
                4
            };
            for i in (4..TS).filter(|&i| i != start + 4 && i != start + 5) {
                assert_eq!(a[i], b[i], "byte {i} changed");
            }
        }
        assert!(f.kept >= kept && f.blanked >= blanked);
        assert!(f.sizes.len() <= SIZES_KEPT);
        assert!(f
            .sizes
            .iter()
            .zip(f.sizes.iter().skip(1))
            .all(|(x, y)| x.0 < y.0));
        for &(pos, pts, size) in &f.sizes {
            assert_eq!(f.blanked(pos, pts), Some(size));
        }
        at += n;
        reads += 1;
        if sel >> 2 != 0 && reads % u32::from(sel >> 2) == 0 {
            f.restart();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TS packet on `pid` with continuity counter `cc`, a payload start when `pes` is some
    /// (the PES packet's first ES bytes, with a PTS), and the random-access flag when `rai`.
    fn ts(pid: u16, cc: u8, pes: Option<(&[u8], i64)>, rai: bool) -> Vec<u8> {
        let mut p = vec![SYNC, (pid >> 8) as u8, pid as u8, 0x10 | cc];
        if pes.is_some() {
            p[1] |= 0x40;
        }
        if rai {
            p[3] |= 0x20;
            p.extend_from_slice(&[1, 0x40]);
        }
        if let Some((es, pts)) = pes {
            p.extend_from_slice(&[0, 0, 1, 0xe0, 0, 0, 0x80, 0x80, 5]);
            p.extend_from_slice(&[
                0x21 | ((pts >> 29) & 0x0e) as u8,
                (pts >> 22) as u8,
                0x01 | ((pts >> 14) & 0xfe) as u8,
                (pts >> 7) as u8,
                0x01 | ((pts << 1) & 0xfe) as u8,
            ]);
            p.extend_from_slice(es);
        }
        p.resize(TS, 0xab);
        p
    }

    const IDR: &[u8] = &[
        0, 0, 0, 1, 9, 0xf0, 0, 0, 0, 1, 0x67, 0x42, 0, 0, 1, 0x65, 0x88,
    ];
    const P: &[u8] = &[0, 0, 0, 1, 9, 0x30, 0, 0, 1, 0x41, 0x9a];

    fn header(p: &[u8]) -> (u16, u8) {
        ((u16::from(p[1] & 0x1f) << 8) | u16::from(p[2]), p[3] & 0x0f)
    }

    /// The continuity counters of `pid`'s packets in `bytes`.
    fn counters(bytes: &[u8], pid: u16) -> Vec<u8> {
        bytes
            .chunks(TS)
            .map(header)
            .filter(|h| h.0 == pid)
            .map(|h| h.1)
            .collect()
    }

    #[test]
    fn inter_pictures_are_blanked_after_their_first_packet_and_counters_close_up() {
        let mut f = KeyFilter::new(0x100, Es::H264);
        let mut cc = 0u8;
        let mut next = || {
            let c = cc;
            cc = (cc + 1) & 0x0f;
            c
        };
        // A keyframe of 3 packets, two P pictures of 4, a keyframe of 2; audio in between.
        let mut stream = vec![
            ts(0x100, next(), Some((IDR, 0)), false),
            ts(0x100, next(), None, false),
            ts(0x101, 7, Some((&[0xff, 0xf1], 0)), false),
            ts(0x100, next(), None, false),
        ];
        for pts in [3600, 7200] {
            stream.push(ts(0x100, next(), Some((P, pts)), false));
            for _ in 0..3 {
                stream.push(ts(0x100, next(), None, false));
            }
        }
        stream.push(ts(0x100, next(), Some((IDR, 10800)), false));
        stream.push(ts(0x100, next(), None, false));
        let mut bytes = stream.concat();
        let original = bytes.clone();
        assert_eq!(f.packets(&mut bytes, 1000), bytes.len());
        assert_eq!(bytes.len(), original.len());
        let out: Vec<(u16, u8)> = bytes.chunks(TS).map(header).collect();
        // Kept: 3 of the keyframe, 1 of each P picture, 2 of the last keyframe; their
        // counters run on without a gap.
        assert_eq!(counters(&bytes, 0x100), (0..7).collect::<Vec<u8>>());
        assert_eq!(out.iter().filter(|h| h.0 == NULL_PID).count(), 6);
        // The audio packet is untouched, and every kept video packet's payload too.
        assert_eq!(bytes[2 * TS..3 * TS], original[2 * TS..3 * TS]);
        for (a, b) in bytes.chunks(TS).zip(original.chunks(TS)) {
            assert!(header(a).0 == NULL_PID || a[4..] == b[4..]);
        }
        // The skipped pictures' whole sizes, by position and PTS.
        let at = |i: usize| 1000 + (i * TS) as i64;
        assert_eq!(f.blanked(at(4), 3600), Some(4 * (TS - 4)));
        assert_eq!(f.blanked(at(8), 7200), Some(4 * (TS - 4)));
        assert_eq!(f.blanked(at(8), 3600), None);
        assert_eq!(f.blanked(at(0), 0), None);
        assert_eq!((f.kept, f.blanked), (2, 2));
    }

    #[test]
    fn random_access_flag_keeps_a_picture_the_bytes_do_not_show() {
        let mut f = KeyFilter::new(0x100, Es::H264);
        let mut bytes = [
            ts(0x100, 0, Some((P, 0)), true),
            ts(0x100, 1, None, false),
            ts(0x100, 2, Some((P, 3600)), false),
            ts(0x100, 3, None, false),
        ]
        .concat();
        f.packets(&mut bytes, 0);
        let pids: Vec<u16> = bytes.chunks(TS).map(|p| header(p).0).collect();
        assert_eq!(pids, [0x100, 0x100, 0x100, NULL_PID]);
    }

    #[test]
    fn a_real_gap_still_shows_after_the_counters_are_closed_up() {
        let mut f = KeyFilter::new(0x100, Es::H264);
        let mut bytes = [
            ts(0x100, 0, Some((P, 0)), false),
            ts(0x100, 1, None, false),
            ts(0x100, 2, None, false),
            // packet 3 lost
            ts(0x100, 4, Some((IDR, 3600)), false),
        ]
        .concat();
        f.packets(&mut bytes, 0);
        assert_eq!(counters(&bytes, 0x100), [0, 2]);
    }

    #[test]
    fn keyframes_are_told_for_each_codec() {
        let h264 = |es: &[u8]| judge(Es::H264, &ts(1, 0, Some((es, 90)), false)[4..]);
        assert_eq!(h264(IDR), (true, Some(90)));
        assert!(!h264(P).0);
        // A recovery-point SEI before a non-IDR slice (open GOP).
        assert!(h264(&[0, 0, 1, 9, 0x10, 0, 0, 1, 6, 6, 1, 0xc4, 0x80, 0, 0, 1, 0x41]).0);
        // A picture-timing SEI does not make it a keyframe.
        assert!(!h264(&[0, 0, 1, 6, 1, 1, 0x00, 0x80, 0, 0, 1, 0x41]).0);
        // Nothing to judge by: kept.
        assert!(h264(&[0, 0, 1, 9, 0x10]).0);
        let hevc = |es: &[u8]| judge(Es::Hevc, &ts(1, 0, Some((es, 0)), false)[4..]).0;
        assert!(hevc(&[0, 0, 1, 0x46, 1, 0x50, 0, 0, 1, 0x40, 1])); // AUD, VPS
        assert!(hevc(&[0, 0, 1, 0x26, 1, 0xaf])); // IDR_W_RADL
        assert!(!hevc(&[0, 0, 1, 0x46, 1, 0x50, 0, 0, 1, 0x02, 1])); // AUD, TRAIL_R
        let mpeg2 = |es: &[u8]| judge(Es::Mpeg2, &ts(1, 0, Some((es, 0)), false)[4..]).0;
        assert!(mpeg2(&[0, 0, 1, 0xb3, 0x2d, 0]));
        assert!(mpeg2(&[0, 0, 1, 0x00, 0x00, 0x0f, 0xff])); // I picture
        assert!(!mpeg2(&[0, 0, 1, 0x00, 0x00, 0x17, 0xff])); // P picture
        let not_a_pes_start = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        assert!(judge(Es::H264, &not_a_pes_start).0, "kept");
    }

    #[test]
    fn a_restart_forgets_the_picture_in_progress_but_not_what_was_blanked() {
        let mut f = KeyFilter::new(0x100, Es::H264);
        let mut before = [
            ts(0x100, 0, Some((P, 0)), false),
            ts(0x100, 1, None, false),
            ts(0x100, 2, None, false),
        ]
        .concat();
        f.packets(&mut before, 0);
        f.restart();
        // A new stream's continuation packets: not blanked, counters untouched.
        let mut after = [ts(0x100, 9, None, false), ts(0x100, 10, None, false)].concat();
        let original = after.clone();
        f.packets(&mut after, 3 * TS as i64);
        assert_eq!(after, original);
        assert_eq!(f.blanked(0, 0), Some(3 * (TS - 4)));
        assert_eq!((f.kept, f.blanked), (0, 1));
    }

    #[test]
    fn a_pes_length_is_cut_to_the_packet_kept() {
        let mut p = ts(0x100, 0, Some((P, 0)), false);
        p[8..10].copy_from_slice(&5000u16.to_be_bytes());
        let mut f = KeyFilter::new(0x100, Es::H264);
        f.packets(&mut p, 0);
        assert_eq!(u16::from_be_bytes([p[8], p[9]]) as usize, TS - 4 - 6);
    }

    #[test]
    fn lost_sync_stops_the_filter_where_it_is_lost() {
        let mut f = KeyFilter::new(0x100, Es::H264);
        let mut bytes = [ts(0x100, 0, Some((P, 0)), false), ts(0x100, 1, None, false)].concat();
        bytes[TS] = 0;
        let before = bytes.clone();
        assert_eq!(f.packets(&mut bytes, 0), TS);
        assert_eq!(bytes[TS..], before[TS..]);
        let mut shifted = vec![0u8; 5];
        shifted.extend_from_slice(&ts(1, 0, None, false));
        shifted.extend_from_slice(&ts(1, 1, None, false));
        assert_eq!(find_sync(&shifted), Some(5));
        assert_eq!(find_sync(&[1, 2, 3]), None);
    }
}
