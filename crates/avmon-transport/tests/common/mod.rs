//! Helpers for the integration tests: transport streams made by the real FFmpeg CLI, packet
//! surgery on them, and FFmpeg's own continuity check run on the same bytes.

#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use avmon_transport::packet::{pes_start, Header, PesStart};
use avmon_transport::{Absences, Analyzer, Clock, Counters, Event, Indicator, Settings};

pub const P: usize = 188;
/// The PIDs FFmpeg's muxer uses.
pub const PAT: u16 = 0;
pub const SDT: u16 = 0x11;
pub const PMT: u16 = 0x1000;
pub const VIDEO: u16 = 0x100;
pub const AUDIO: u16 = 0x101;
pub const NULL: u16 = 0x1FFF;

/// A TS made by `ffmpeg`: `secs` of 320x180 H.264 at 25 fps (a key frame a second) and AAC,
/// with `extra` muxer options.
pub fn ffmpeg_ts(secs: f64, extra: &[&str]) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &secs.to_string()])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
            "-b:v",
            "800k",
        ])
        .args(["-c:a", "aac", "-b:a", "96k"])
        .args(extra)
        .args(["-f", "mpegts", "pipe:1"])
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success() && !out.stdout.is_empty(),
        "ffmpeg failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// 10 s at a constant 2 Mbit/s (`-muxrate`, null packets filling the gaps), as broadcast sends
/// it: a PCR every ~20 ms, PAT and PMT every 100 ms. Made once per test binary.
pub fn cbr() -> &'static [u8] {
    static TS: OnceLock<Vec<u8>> = OnceLock::new();
    TS.get_or_init(|| ffmpeg_ts(10.0, &["-muxrate", "2000000"]))
}

/// 6 s at a variable rate with a PCR with every frame (`-pcr_period 20`): one each 40 ms.
pub fn vbr() -> &'static [u8] {
    static TS: OnceLock<Vec<u8>> = OnceLock::new();
    TS.get_or_init(|| ffmpeg_ts(6.0, &["-pcr_period", "20"]))
}

/// Analyse `ts` on its own clock, fed in chunks of 1316 bytes (a UDP datagram of 7 packets).
pub fn analyse(ts: &[u8]) -> (Counters, Vec<Event>) {
    analyse_with(ts, Settings::default(), 1316)
}

/// Analyse `ts` fed in chunks of `chunk` bytes, to its end ([`Analyzer::finish`]); the events
/// are checked against the counters and each other ([`check_events`]).
pub fn analyse_with(ts: &[u8], settings: Settings, chunk: usize) -> (Counters, Vec<Event>) {
    let mut a = Analyzer::with_settings(settings).expect("valid settings");
    let mut events = Vec::new();
    for c in ts.chunks(chunk) {
        a.feed(c, Clock::Stream, &mut events);
    }
    a.finish(&mut events);
    check_events(&events, a.counters());
    (*a.counters(), events)
}

/// What every analysis's events must be: each but an `End` is one count of its indicator; the
/// absences keep [`Edge`]'s contract ([`Absences`]); and all have ended (the analysis was
/// finished).
pub fn check_events(events: &[Event], counters: &Counters) {
    for i in Indicator::ALL {
        let n = events
            .iter()
            .filter(|e| e.indicator == i && e.edge.counts())
            .count() as u64;
        assert_eq!(n, counters.get(i), "{i:?}: events and counter differ");
    }
    spans(events);
}

/// Each absence in `events` as `(begin, end)`, in the order they ended; all must have.
pub fn spans(events: &[Event]) -> Vec<(Event, Event)> {
    let mut absences = Absences::default();
    let spans = events
        .iter()
        .filter_map(|e| absences.take(e).unwrap_or_else(|err| panic!("{err}")))
        .collect();
    assert!(
        absences.open().is_empty(),
        "not ended: {:?}",
        absences.open()
    );
    spans
}

/// Each absence of `indicator` as `(begin, end)`, in the order they ended.
pub fn spans_of(events: &[Event], indicator: Indicator) -> Vec<(Event, Event)> {
    spans(events)
        .into_iter()
        .filter(|(b, _)| b.indicator == indicator)
        .collect()
}

/// Where the stream's media time starts on its PCR clock (as [`pcr_times`] counts it): the
/// earliest first PTS of any PID, as FFmpeg (and so avmon) counts media time from it. A
/// packet's media time is `pcr_times(ts)[i] - media_origin(ts)`.
pub fn media_origin(ts: &[u8]) -> f64 {
    let first_pcr = packets(ts).find_map(pcr).expect("a PCR");
    let mut seen = std::collections::HashSet::new();
    packets(ts)
        .filter_map(|p| {
            let p: &[u8; P] = p.try_into().unwrap();
            let h = Header::parse(p);
            if !h.pusi || h.payload >= P || !seen.insert(h.pid) {
                return None;
            }
            match pes_start(&p[h.payload..]) {
                PesStart::Pts(pts) => Some((pts as f64 * 300.0 - first_pcr as f64) / 27e6),
                _ => None,
            }
        })
        .fold(f64::INFINITY, f64::min)
}

/// `(indicator kind, PID)` of each event, in order.
pub fn kinds(events: &[Event]) -> Vec<(&'static str, Option<u16>)> {
    events.iter().map(|e| (e.indicator.kind(), e.pid)).collect()
}

pub fn packets(ts: &[u8]) -> std::slice::ChunksExact<'_, u8> {
    ts.chunks_exact(P)
}

pub fn pid(p: &[u8]) -> u16 {
    (u16::from(p[1] & 0x1F) << 8) | u16::from(p[2])
}

pub fn pusi(p: &[u8]) -> bool {
    p[1] & 0x40 != 0
}

pub fn has_payload(p: &[u8]) -> bool {
    p[3] & 0x10 != 0
}

/// The packet's PCR in 27 MHz ticks.
pub fn pcr(p: &[u8]) -> Option<u64> {
    if p[3] & 0x20 == 0 || p[4] < 7 || p[5] & 0x10 == 0 {
        return None;
    }
    let b = &p[6..12];
    let base = (u64::from(b[0]) << 25)
        | (u64::from(b[1]) << 17)
        | (u64::from(b[2]) << 9)
        | (u64::from(b[3]) << 1)
        | u64::from(b[4] >> 7);
    Some(base * 300 + ((u64::from(b[4] & 1) << 8) | u64::from(b[5])))
}

/// The time of each packet on the stream's PCR (seconds from the first PCR; the last PCR
/// before it), to pick packets by when they are sent.
pub fn pcr_times(ts: &[u8]) -> Vec<f64> {
    let mut first = None;
    let mut now = 0.0;
    packets(ts)
        .map(|p| {
            if let Some(v) = pcr(p) {
                let f = *first.get_or_insert(v);
                now = (v - f) as f64 / 27e6;
            }
            now
        })
        .collect()
}

/// Indices of the packets `keep` selects.
pub fn indices(ts: &[u8], keep: impl Fn(usize, &[u8]) -> bool) -> Vec<usize> {
    packets(ts)
        .enumerate()
        .filter(|(i, p)| keep(*i, p))
        .map(|(i, _)| i)
        .collect()
}

/// `ts` without the packets at `drop` (sorted indices).
pub fn without(ts: &[u8], drop: &[usize]) -> Vec<u8> {
    packets(ts)
        .enumerate()
        .filter(|(i, _)| drop.binary_search(i).is_err())
        .flat_map(|(_, p)| p.iter().copied())
        .collect()
}

/// A null packet.
pub fn null_packet() -> [u8; P] {
    let mut p = [0xFF; P];
    p[..4].copy_from_slice(&[0x47, 0x1F, 0xFF, 0x10]);
    p
}

/// How many breaks dropping `drop` makes in the PIDs' packet sequences: a run of one PID's
/// consecutive packets is one break (what "exactly one error per loss" counts).
pub fn breaks(ts: &[u8], drop: &[usize]) -> usize {
    let mut last_dropped = std::collections::HashMap::new();
    let mut n = 0;
    for (i, p) in packets(ts).enumerate() {
        let dropped = drop.binary_search(&i).is_ok();
        let before = last_dropped.insert(pid(p), dropped).unwrap_or(false);
        if dropped && !before {
            n += 1;
        }
    }
    n
}

/// FFmpeg's own continuity check on `ts`: how many "Continuity check failed" lines its MPEG-TS
/// demuxer logs. Read from a pipe, so it reads every byte once (from a file it reads the
/// start twice, probing, and logs those packets twice); `repeat+` keeps two identical
/// messages in a row from being folded into "Last message repeated 1 times".
pub fn ffmpeg_cc_failures(ts: &[u8]) -> usize {
    let mut child = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-loglevel", "repeat+debug"])
        .args(["-f", "mpegts", "-i", "pipe:0", "-f", "null", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ffmpeg");
    let mut stdin = child.stdin.take().expect("stdin");
    let bytes = ts.to_vec();
    let writer = std::thread::spawn(move || {
        // FFmpeg may stop reading early on a broken stream; that is its answer, not an error.
        let _ = stdin.write_all(&bytes);
    });
    let out = child.wait_with_output().expect("ffmpeg output");
    writer.join().expect("writer");
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("Continuity check failed"))
        .count()
}

/// Counters with only the given fields set.
pub fn only(set: &[(&str, u64)]) -> Counters {
    let mut v = serde_json::to_value(Counters::default()).unwrap();
    for (k, n) in set {
        assert!(v.get(*k).is_some(), "no counter {k}");
        v[*k] = (*n).into();
    }
    serde_json::from_value(v).unwrap()
}
