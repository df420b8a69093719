//! `avmon damage IN.ts OUT.ts`: inject transport damage into an MPEG-TS file, deterministically,
//! and say exactly what was hit, so a corpus can be labelled with the true onset of each defect.
//!
//! ```text
//! avmon damage in.ts out.ts --drop 8-8.2:0.3 --flip 14-14.1 --seed 7 --labels out.json
//! ```
//!
//! A damage spec is `[PID@]RANGE[:RATE]`:
//! - `RANGE` is `START-END` in media seconds (`8-8.2`), or `#FIRST-LAST` in TS packet indices of
//!   the file (`#1200-1300`, inclusive, counting every packet from 0).
//! - `RATE` (0–1, default 1) is the probability that each candidate packet in the range is hit.
//! - `PID` (decimal or `0x…`) picks the PID to damage; without it, the video PID (the first video
//!   stream of the first PMT).
//!
//! `--drop` removes packets (as a lossy network does: the continuity counter then skips);
//! `--flip` inverts `--flip-bits` random bits of each hit packet's elementary-stream payload (the
//! TS header, adaptation field and PES header are left intact, so the damage reaches the decoder).
//! A packet hit by both is dropped. The same input, specs and `--seed` give the same output.
//!
//! **Media time** of a packet is the PTS of the PES it belongs to, minus the smallest first PTS of
//! any PES stream of the file (what FFmpeg, and so `avmon check`, takes as the input's start),
//! over 90 kHz. With B-frames a damaged reference can also spoil pictures *displayed* up to a few
//! frames before its own PTS; `first_hit_s` is the PTS of the first hit packet.
//!
//! Every hit is printed on stdout (`drop packet 1234 pid 256 t 8.040`), or written as JSON with
//! `--labels FILE` (`hits[]` with `packet`, `pid`, `action`, `t`; `first_hit_s`, `last_hit_s`,
//! `video_pid`, `dropped`, `flipped`).

use std::str::FromStr;

use avmon_transport::packet::{pes_start, Header, PesStart, PACKET};
use avmon_transport::psi::{self, LongHeader};
use serde::Serialize;

const TS: usize = PACKET;
const SYNC: u8 = 0x47;
/// PTS ticks per second.
const PTS_HZ: f64 = 90_000.0;

/// What a spec does to the packets it hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Drop,
    Flip,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Drop => "drop",
            Action::Flip => "flip",
        }
    }
}

/// Where a spec applies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Range {
    /// Media seconds, `[start, end)`.
    Time(f64, f64),
    /// TS packet indices, inclusive.
    Packets(u64, u64),
}

/// One `[PID@]RANGE[:RATE]` spec.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spec {
    pub pid: Option<u16>,
    pub range: Range,
    pub rate: f64,
}

impl FromStr for Spec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| {
            format!("bad damage spec {s:?}: {why} (expected [PID@]START-END[:RATE] in seconds, or [PID@]#FIRST-LAST[:RATE] in packets)")
        };
        let (pid, rest) = match s.split_once('@') {
            Some((p, rest)) => {
                let p = p.trim();
                let v = match p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
                    Some(hex) => u16::from_str_radix(hex, 16),
                    None => p.parse(),
                }
                .map_err(|_| bad("PID is not a number"))?;
                if v > 0x1FFE {
                    return Err(bad("PID must be below 0x1FFF"));
                }
                (Some(v), rest)
            }
            None => (None, s),
        };
        let (range, rate) = match rest.split_once(':') {
            Some((r, rate)) => {
                let rate: f64 = rate
                    .trim()
                    .parse()
                    .map_err(|_| bad("RATE is not a number"))?;
                if !(rate > 0.0 && rate <= 1.0) {
                    return Err(bad("RATE must be in (0, 1]"));
                }
                (r, rate)
            }
            None => (rest, 1.0),
        };
        let range = range.trim();
        let range = if let Some(p) = range.strip_prefix('#') {
            let (a, b) = p
                .split_once('-')
                .ok_or_else(|| bad("no '-' in the range"))?;
            let a: u64 = a
                .trim()
                .parse()
                .map_err(|_| bad("FIRST is not a packet index"))?;
            let b: u64 = b
                .trim()
                .parse()
                .map_err(|_| bad("LAST is not a packet index"))?;
            if b < a {
                return Err(bad("LAST is before FIRST"));
            }
            Range::Packets(a, b)
        } else {
            let (a, b) = range
                .split_once('-')
                .ok_or_else(|| bad("no '-' in the range"))?;
            let a: f64 = a.trim().parse().map_err(|_| bad("START is not a number"))?;
            let b: f64 = b.trim().parse().map_err(|_| bad("END is not a number"))?;
            if !(a >= 0.0 && b > a && b.is_finite()) {
                return Err(bad("need 0 <= START < END"));
            }
            Range::Time(a, b)
        };
        Ok(Spec { pid, range, rate })
    }
}

/// What to do to a file.
#[derive(Clone, Debug)]
pub struct Options {
    pub drops: Vec<Spec>,
    pub flips: Vec<Spec>,
    pub seed: u64,
    /// Bits inverted in each flipped packet.
    pub flip_bits: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            drops: Vec::new(),
            flips: Vec::new(),
            seed: 1,
            flip_bits: 4,
        }
    }
}

/// One damaged packet.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Hit {
    /// Index of the packet in the input (from 0).
    pub packet: u64,
    pub pid: u16,
    pub action: Action,
    /// Media time (seconds) of the PES the packet belongs to; `None` before the PID's first PTS.
    pub t: Option<f64>,
}

/// What [`damage`] did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Outcome {
    pub video_pid: Option<u16>,
    pub packets: u64,
    pub dropped: u64,
    pub flipped: u64,
    pub first_hit_s: Option<f64>,
    pub last_hit_s: Option<f64>,
    pub hits: Vec<Hit>,
}

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // Spread small seeds so seed 1 and seed 2 differ from the first draw.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        p >= 1.0 || ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// The PTS of a PES that starts at `pes`, if it has one (and it lies in this packet).
fn pes_pts(pes: &[u8]) -> Option<u64> {
    match pes_start(pes) {
        PesStart::Pts(pts) if pts != u64::MAX => Some(pts),
        _ => None,
    }
}

/// The header of a packet of the input (which is checked to be whole 188-byte packets).
fn header(p: &[u8]) -> Header {
    Header::parse(p.try_into().expect("a 188-byte packet"))
}

/// Offset of the elementary-stream data after a PES header at `pes`.
fn pes_header_len(pes: &[u8]) -> usize {
    if pes.len() >= 9 && pes[..3] == [0, 0, 1] {
        (9 + usize::from(pes[8])).min(pes.len())
    } else {
        0
    }
}

/// The PSI section in a payload unit (after its pointer field), if complete in this packet.
fn section(payload: &[u8]) -> Option<&[u8]> {
    let ptr = usize::from(*payload.first()?);
    let s = payload.get(1 + ptr..)?;
    if s.len() < 3 {
        return None;
    }
    let len = usize::from(u16::from(s[1] & 0x0F) << 8 | u16::from(s[2]));
    s.get(..3 + len)
}

fn is_video_stream_type(t: u8) -> bool {
    // MPEG-1/2 video, MPEG-4 part 2, H.264, SVC/MVC, HEVC, VVC, AVS, VC-1.
    matches!(
        t,
        0x01 | 0x02 | 0x10 | 0x1B | 0x1F | 0x20 | 0x24 | 0x33 | 0x42 | 0xEA
    )
}

/// The video PID and the PES PIDs of the file's programs, from its PAT and PMTs.
#[derive(Default)]
struct Psi {
    pmt_pids: Vec<u16>,
    pes_pids: Vec<u16>,
    video_pid: Option<u16>,
}

impl Psi {
    fn take(&mut self, h: &Header, p: &[u8]) {
        if !h.pusi || h.payload >= TS {
            return;
        }
        let Some((table, body)) = section(&p[h.payload..]).and_then(LongHeader::parse) else {
            return;
        };
        if h.pid == 0 && table.table_id == 0x00 {
            for (program, pid) in psi::pat_programs(body) {
                if program != 0 && !self.pmt_pids.contains(&pid) {
                    self.pmt_pids.push(pid);
                }
            }
        } else if self.pmt_pids.contains(&h.pid) && table.table_id == 0x02 {
            for es in psi::pmt_streams(body).unwrap_or_default() {
                if !self.pes_pids.contains(&es.pid) {
                    self.pes_pids.push(es.pid);
                }
                if self.video_pid.is_none() && is_video_stream_type(es.stream_type) {
                    self.video_pid = Some(es.pid);
                }
            }
        }
    }
}

/// Follows one PID's PTS across PES starts, unwrapping the 33-bit wrap.
#[derive(Clone, Copy, Default)]
struct PtsTrack {
    last: Option<i64>,
}

impl PtsTrack {
    fn update(&mut self, raw: u64) -> i64 {
        let raw = raw as i64;
        let v = match self.last {
            None => raw,
            Some(prev) => {
                const WRAP: i64 = 1 << 33;
                let base = prev - prev.rem_euclid(WRAP);
                // The candidate nearest the previous value.
                [base - WRAP + raw, base + raw, base + WRAP + raw]
                    .into_iter()
                    .min_by_key(|c| (c - prev).abs())
                    .unwrap_or(raw)
            }
        };
        self.last = Some(v);
        v
    }
}

/// Damage `input` (a whole MPEG-TS file) as `opts` says; returns the damaged file and the hits.
pub fn damage(input: &[u8], opts: &Options) -> Result<(Vec<u8>, Outcome), String> {
    if input.is_empty() || !input.chunks_exact(TS).remainder().is_empty() {
        return Err(format!(
            "not an MPEG-TS file of 188-byte packets ({} bytes)",
            input.len()
        ));
    }
    if let Some(i) = input.chunks_exact(TS).position(|p| p[0] != SYNC) {
        return Err(format!("not an MPEG-TS file: packet {i} has no sync byte"));
    }

    // Pass 1: programs, the video PID and the origin of media time.
    let mut psi = Psi::default();
    let mut first_pts: Vec<(u16, i64)> = Vec::new();
    for p in input.chunks_exact(TS) {
        let h = header(p);
        psi.take(&h, p);
        if h.pusi && h.payload < TS && psi.pes_pids.contains(&h.pid) {
            if let Some(pts) = pes_pts(&p[h.payload..]) {
                if !first_pts.iter().any(|(pid, _)| *pid == h.pid) {
                    first_pts.push((h.pid, pts as i64));
                }
            }
        }
    }
    let origin = first_pts.iter().map(|(_, t)| *t).min();
    let default_pid = psi.video_pid;
    let specs: Vec<(Action, Spec)> = opts
        .drops
        .iter()
        .map(|s| (Action::Drop, *s))
        .chain(opts.flips.iter().map(|s| (Action::Flip, *s)))
        .collect();
    if specs.iter().any(|(_, s)| s.pid.is_none()) && default_pid.is_none() {
        return Err("no video stream found in the PMT: give the PID as PID@RANGE".into());
    }

    // Pass 2: apply.
    let mut rng = Rng::new(opts.seed);
    let mut tracks: Vec<(u16, PtsTrack)> = Vec::new();
    let mut out = Vec::with_capacity(input.len());
    let mut outcome = Outcome {
        video_pid: default_pid,
        ..Outcome::default()
    };
    for (i, p) in input.chunks_exact(TS).enumerate() {
        let i = i as u64;
        let h = header(p);
        let mut es_start = h.payload;
        if h.pusi && h.payload < TS {
            let pes = &p[h.payload..];
            if let Some(raw) = pes_pts(pes) {
                let track = match tracks.iter().position(|(pid, _)| *pid == h.pid) {
                    Some(k) => &mut tracks[k].1,
                    None => {
                        tracks.push((h.pid, PtsTrack::default()));
                        &mut tracks.last_mut().expect("just pushed").1
                    }
                };
                track.update(raw);
            }
            es_start += pes_header_len(pes);
        }
        let t = match (
            tracks
                .iter()
                .find(|(pid, _)| *pid == h.pid)
                .and_then(|(_, tr)| tr.last),
            origin,
        ) {
            (Some(pts), Some(o)) => Some((pts - o) as f64 / PTS_HZ),
            _ => None,
        };
        let mut action = None;
        for (a, s) in &specs {
            if s.pid.or(default_pid) != Some(h.pid) {
                continue;
            }
            let inside = match s.range {
                Range::Packets(first, last) => (first..=last).contains(&i),
                Range::Time(start, end) => t.is_some_and(|t| t >= start && t < end),
            };
            // Draw for every candidate, so one spec's draws do not depend on another's outcome.
            if inside && rng.chance(s.rate) && action != Some(Action::Drop) {
                action = Some(*a);
            }
        }
        if action == Some(Action::Flip) && es_start >= TS {
            action = None; // nothing of the elementary stream in this packet
        }
        match action {
            Some(Action::Drop) => outcome.dropped += 1,
            Some(Action::Flip) => {
                let start = out.len();
                out.extend_from_slice(p);
                let es = &mut out[start + es_start..start + TS];
                for _ in 0..opts.flip_bits.max(1) {
                    let bit = rng.below(es.len() * 8);
                    es[bit / 8] ^= 1 << (bit % 8);
                }
                outcome.flipped += 1;
            }
            None => out.extend_from_slice(p),
        }
        if let Some(action) = action {
            if let Some(t) = t {
                outcome.first_hit_s = Some(outcome.first_hit_s.map_or(t, |f: f64| f.min(t)));
                outcome.last_hit_s = Some(outcome.last_hit_s.map_or(t, |l: f64| l.max(t)));
            }
            outcome.hits.push(Hit {
                packet: i,
                pid: h.pid,
                action,
                t: t.map(|t| (t * 1e6).round() / 1e6),
            });
        }
        outcome.packets += 1;
    }
    Ok((out, outcome))
}

/// The hits as text, one line each.
pub fn hit_lines(outcome: &Outcome) -> String {
    let mut s = String::new();
    for h in &outcome.hits {
        let t = h.t.map_or("-".to_string(), |t| format!("{t:.3}"));
        s += &format!(
            "{} packet {} pid {} t {t}\n",
            h.action.as_str(),
            h.packet,
            h.pid
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIDEO: u16 = 0x100;
    const AUDIO: u16 = 0x101;

    fn packet(pid: u16, pusi: bool, cc: u8, payload: &[u8]) -> [u8; TS] {
        let mut p = [0xFFu8; TS];
        p[0] = SYNC;
        p[1] = (u8::from(pusi) << 6) | (pid >> 8) as u8;
        p[2] = pid as u8;
        p[3] = 0x10 | (cc & 0x0F);
        p[4..4 + payload.len()].copy_from_slice(payload);
        p
    }

    fn pat() -> [u8; TS] {
        // pointer, table 0, len 13, tsid 1, version, sec 0/0, program 1 -> PMT 0x1000, CRC.
        packet(
            0,
            true,
            0,
            &[
                0, 0x00, 0xB0, 13, 0, 1, 0xC1, 0, 0, 0, 1, 0xF0, 0x00, 0, 0, 0, 0,
            ],
        )
    }

    fn pmt() -> [u8; TS] {
        let mut s = vec![0, 0x02, 0xB0, 23, 0, 1, 0xC1, 0, 0, 0xE1, 0x00, 0xF0, 0x00];
        s.extend([0x0F, 0xE1, 0x01, 0xF0, 0x00]); // AAC first: the video is found by type
        s.extend([0x1B, 0xE1, 0x00, 0xF0, 0x00]);
        s.extend([0, 0, 0, 0]);
        packet(0x1000, true, 0, &s)
    }

    fn pes_start(pid: u16, pts: u64) -> [u8; TS] {
        let ts = [
            0x21 | ((pts >> 29) & 0x0E) as u8,
            (pts >> 22) as u8,
            0x01 | ((pts >> 14) & 0xFE) as u8,
            (pts >> 7) as u8,
            0x01 | ((pts << 1) & 0xFE) as u8,
        ];
        let mut h = vec![0, 0, 1, 0xE0, 0, 0, 0x80, 0x80, 5];
        h.extend(ts);
        h.extend([0xAA; 8]);
        packet(pid, true, 0, &h)
    }

    /// A file: PAT, PMT, audio PES at PTS 0.9 s, then 10 video frames of 3 packets at 25 fps
    /// from PTS 1.0 s (media time = 0.1 s + n/25).
    fn file() -> Vec<u8> {
        let mut f = Vec::new();
        f.extend(pat());
        f.extend(pmt());
        f.extend(pes_start(AUDIO, 81_000));
        for n in 0..10u64 {
            f.extend(pes_start(VIDEO, 90_000 + n * 3600));
            f.extend(packet(VIDEO, false, 1, &[0x55; 20]));
            f.extend(packet(VIDEO, false, 2, &[0x55; 20]));
        }
        f
    }

    #[test]
    fn specs_parse_and_bad_ones_say_why() {
        assert_eq!(
            "8-8.2".parse::<Spec>().unwrap(),
            Spec {
                pid: None,
                range: Range::Time(8.0, 8.2),
                rate: 1.0
            }
        );
        assert_eq!(
            "0x100@#10-20:0.5".parse::<Spec>().unwrap(),
            Spec {
                pid: Some(256),
                range: Range::Packets(10, 20),
                rate: 0.5
            }
        );
        assert_eq!("256@1-2".parse::<Spec>().unwrap().pid, Some(256));
        for (bad, why) in [
            ("8", "no '-'"),
            ("8-7", "START < END"),
            ("8-9:0", "RATE must be in (0, 1]"),
            ("8-9:x", "RATE is not a number"),
            ("zz@8-9", "PID is not a number"),
            ("#5-1", "LAST is before FIRST"),
        ] {
            let e = bad.parse::<Spec>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn drops_exactly_the_video_packets_in_the_time_range() {
        let input = file();
        let opts = Options {
            drops: vec!["0.18-0.26".parse().unwrap()],
            ..Options::default()
        };
        let (out, o) = damage(&input, &opts).unwrap();
        assert_eq!(o.video_pid, Some(VIDEO));
        // Frames at media 0.18 and 0.22 (n = 2, 3): 3 packets each.
        assert_eq!(o.dropped, 6);
        assert_eq!(out.len(), input.len() - 6 * TS);
        assert_eq!(o.hits[0].packet, 3 + 2 * 3);
        assert!(o
            .hits
            .iter()
            .all(|h| h.pid == VIDEO && h.action == Action::Drop));
        assert!((o.first_hit_s.unwrap() - 0.18).abs() < 1e-9, "{o:?}");
        assert!((o.last_hit_s.unwrap() - 0.22).abs() < 1e-9, "{o:?}");
        // Everything else is untouched, in order.
        let kept: Vec<&[u8]> = input
            .chunks_exact(TS)
            .enumerate()
            .filter(|(i, _)| !o.hits.iter().any(|h| h.packet == *i as u64))
            .map(|(_, p)| p)
            .collect();
        assert_eq!(kept.concat(), out);
    }

    #[test]
    fn flips_touch_only_the_elementary_stream_and_are_deterministic() {
        let input = file();
        let opts = Options {
            flips: vec!["#0-1000".parse().unwrap()],
            flip_bits: 3,
            ..Options::default()
        };
        let (out, o) = damage(&input, &opts).unwrap();
        assert_eq!(out.len(), input.len());
        assert_eq!(o.flipped, 30, "every video packet has ES bytes");
        for (i, (a, b)) in input.chunks_exact(TS).zip(out.chunks_exact(TS)).enumerate() {
            let diff: u32 = a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum();
            let hit = o.hits.iter().any(|h| h.packet == i as u64);
            assert!(diff <= 3 && (diff > 0) == hit, "packet {i}: {diff} bits");
            // TS header, and PES header (9 + 5 bytes) where the packet starts a PES, intact.
            let kept = if a[1] & 0x40 != 0 { 18 } else { 4 };
            assert_eq!(a[..kept], b[..kept], "packet {i}");
        }
        let (again, _) = damage(&input, &opts).unwrap();
        assert_eq!(out, again, "same seed, same damage");
        let (other, _) = damage(&input, &Options { seed: 2, ..opts }).unwrap();
        assert_ne!(out, other, "another seed, other bits");
    }

    #[test]
    fn rate_hits_a_seeded_fraction() {
        let mut input = Vec::new();
        input.extend(pat());
        input.extend(pmt());
        input.extend(pes_start(VIDEO, 0));
        for _ in 0..4000 {
            input.extend(packet(VIDEO, false, 0, &[0x55; 10]));
        }
        let opts = Options {
            drops: vec!["0-1:0.25".parse().unwrap()],
            ..Options::default()
        };
        let (_, o) = damage(&input, &opts).unwrap();
        assert!((900..1100).contains(&o.dropped), "{}", o.dropped);
    }

    #[test]
    fn explicit_pid_and_packet_ranges() {
        let input = file();
        let opts = Options {
            drops: vec![format!("{AUDIO}@#0-100").parse().unwrap()],
            ..Options::default()
        };
        let (_, o) = damage(&input, &opts).unwrap();
        assert_eq!(o.dropped, 1);
        assert_eq!(o.hits[0].packet, 2);
        assert_eq!(
            o.hits[0].t,
            Some(0.0),
            "audio starts first: it is the origin"
        );
    }

    #[test]
    fn rejects_what_is_not_ts() {
        assert!(damage(&[0u8; 100], &Options::default())
            .unwrap_err()
            .contains("188-byte"));
        let mut f = file();
        f[TS * 2] = 0;
        assert!(damage(&f, &Options::default())
            .unwrap_err()
            .contains("packet 2 has no sync byte"));
        // No PMT: a spec without PID has nothing to aim at.
        let f: Vec<u8> = file()[2 * TS..].to_vec();
        let opts = Options {
            drops: vec!["0-1".parse().unwrap()],
            ..Options::default()
        };
        assert!(damage(&f, &opts).unwrap_err().contains("no video stream"));
    }

    #[test]
    fn pts_wrap_is_unwrapped() {
        let mut tr = PtsTrack::default();
        let near = (1u64 << 33) - 900;
        assert_eq!(tr.update(near), near as i64);
        assert_eq!(tr.update(2700), (1i64 << 33) + 2700);
    }
}
