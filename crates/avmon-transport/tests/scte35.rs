//! avmon's SCTE 35 reader against an independent one: `threefive` (PyPI, which `./dev`
//! installs into `target/pydeps`) decodes the same sections: the specification's own examples,
//! and random cues this test writes bit by bit. Damaged and cut sections are refused, never a
//! panic.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use avmon_transport::psi::crc32_mpeg2;
use avmon_transport::scte35::{self, write, Command as Cmd, Scte35Error, SpliceInfo};
use avmon_transport::{Analyzer, Clock};
use serde_json::Value;

/// SCTE 35 (2022) §14's sample messages: a time_signal with a placement opportunity start and
/// end, a splice_insert, and a time_signal with several descriptors.
const SAMPLES: &[&str] = &[
    "FC302F000000000000FFFFF014054800008F7FEFFE7369C02EFE0052CCF500000000000A0008435545490000013562DBA30A",
    "FC3034000000000000FFFFF00506FE72BD0050001E021C435545494800008E7FCF0001A599B00808000000002CA0A18A3402009AC9D17E",
    "FC3061000000000000FFFFF00506FEA8CD44ED004B021743554549480000AD7F9F0808000000002CB2D79D350200021743554549480000267F9F0808000000002CB2D79D110000021743554549480000277F9F0808000000002CB2D7B31000008A18869F",
];

fn pydeps() -> PathBuf {
    let dir = std::env::var_os("AVMON_PYDEPS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/pydeps"),
        PathBuf::from,
    );
    assert!(
        dir.join("threefive").is_dir(),
        "threefive is not in {}: run ./dev test, which installs it",
        dir.display()
    );
    dir
}

/// What threefive reads in each section (hex), as the fields this test compares.
fn threefive(sections: &[Vec<u8>]) -> Vec<Value> {
    let script = r#"
import json, sys, threefive
out = []
for h in json.load(sys.stdin):
    c = threefive.Cue(bytes.fromhex(h))
    c.decode()
    g = c.get()
    s, cmd = g["info_section"], g["command"]
    segs = [d for d in g["descriptors"] if d.get("tag") == 2]
    out.append({
        "adj": s["pts_adjustment"], "tier": int(s["tier"], 16), "type": cmd["command_type"],
        "pts": cmd.get("pts_time"), "event": cmd.get("splice_event_id"),
        "cancel": cmd.get("splice_event_cancel_indicator"),
        "out": cmd.get("out_of_network_indicator"), "immediate": cmd.get("splice_immediate_flag"),
        "duration": cmd.get("break_duration"), "auto": cmd.get("break_auto_return"),
        "upi": cmd.get("unique_program_id"), "avail": cmd.get("avail_num"),
        "avails": cmd.get("avails_expected"),
        "segs": [{"event": int(d["segmentation_event_id"], 16),
                  "cancel": d["segmentation_event_cancel_indicator"],
                  "type": d.get("segmentation_type_id"), "duration": d.get("segmentation_duration"),
                  "upid_type": d.get("segmentation_upid_type"),
                  "upid_len": d.get("segmentation_upid_length"),
                  "num": d.get("segment_num"), "expected": d.get("segments_expected")}
                 for d in segs],
    })
json.dump(out, sys.stdout)
"#;
    let hex: Vec<String> = sections
        .iter()
        .map(|s| s.iter().map(|b| format!("{b:02X}")).collect())
        .collect();
    let mut child = Command::new("python3")
        .args(["-c", script])
        .env("PYTHONPATH", pydeps())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&hex).unwrap().as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn secs(ticks: u64) -> f64 {
    (ticks as f64 / 90_000.0 * 1e6).round() / 1e6
}

fn near(a: f64, b: f64) -> bool {
    (a - b).abs() < 2e-6
}

/// Our reading against threefive's, field by field.
fn same(ours: &SpliceInfo, theirs: &Value) -> Result<(), String> {
    let wrap = secs(1 << 33);
    let adj = theirs["adj"].as_f64().unwrap();
    let abs = |pts: &Value| pts.as_f64().map(|p| (p + adj) % wrap);
    let check = |what: &str, ok: bool| if ok { Ok(()) } else { Err(what.to_string()) };
    check("pts_adjustment", near(secs(ours.pts_adjustment), adj))?;
    check(
        "tier",
        u64::from(ours.tier) == theirs["tier"].as_u64().unwrap(),
    )?;
    match &ours.command {
        Cmd::Null => check("splice_null", theirs["type"] == 0)?,
        Cmd::TimeSignal { pts } => {
            check("time_signal", theirs["type"] == 6)?;
            check(
                "time_signal pts",
                match (pts, abs(&theirs["pts"])) {
                    (Some(p), Some(t)) => near(secs(*p), t),
                    (None, None) => true,
                    _ => false,
                },
            )?;
        }
        Cmd::Insert(i) => {
            check("splice_insert", theirs["type"] == 5)?;
            check("event id", theirs["event"] == i.event_id)?;
            check("cancel", theirs["cancel"] == i.cancel)?;
            if !i.cancel {
                check("out of network", theirs["out"] == i.out_of_network)?;
                check("immediate", theirs["immediate"] == i.immediate)?;
                check(
                    "insert pts",
                    match (i.pts, abs(&theirs["pts"])) {
                        (Some(p), Some(t)) => near(secs(p), t),
                        (None, None) => true,
                        _ => false,
                    },
                )?;
                check(
                    "break duration",
                    match (i.duration, theirs["duration"].as_f64()) {
                        (Some((d, auto)), Some(t)) => near(secs(d), t) && theirs["auto"] == auto,
                        (None, None) => true,
                        _ => false,
                    },
                )?;
                check("unique_program_id", theirs["upi"] == i.unique_program_id)?;
                check("avail_num", theirs["avail"] == i.avail_num)?;
                check("avails_expected", theirs["avails"] == i.avails_expected)?;
            }
        }
        Cmd::Other(t) => check("other command", theirs["type"] == *t)?,
    }
    let segs = theirs["segs"].as_array().unwrap();
    check(
        "segmentation descriptors",
        segs.len() == ours.segmentation.len(),
    )?;
    for (s, t) in ours.segmentation.iter().zip(segs) {
        check("segmentation event id", t["event"] == s.event_id)?;
        check("segmentation cancel", t["cancel"] == s.cancel)?;
        if s.cancel {
            continue;
        }
        check("segmentation type", t["type"] == s.type_id)?;
        check(
            "segmentation duration",
            match (s.duration, t["duration"].as_f64()) {
                (Some(d), Some(x)) => near(secs(d), x),
                (None, None) => true,
                _ => false,
            },
        )?;
        check("upid type", t["upid_type"] == s.upid_type)?;
        check("upid length", t["upid_len"] == s.upid.len())?;
        check("segment_num", t["num"] == s.segment_num)?;
        check("segments_expected", t["expected"] == s.segments_expected)?;
    }
    Ok(())
}

fn unhex(h: &str) -> Vec<u8> {
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn the_specifications_examples_read_as_threefive_reads_them() {
    let sections: Vec<Vec<u8>> = SAMPLES.iter().map(|h| unhex(h)).collect();
    let theirs = threefive(&sections);
    for (i, (s, t)) in sections.iter().zip(&theirs).enumerate() {
        let ours = scte35::parse(s).unwrap_or_else(|e| panic!("sample {i}: {e}"));
        same(&ours, t).unwrap_or_else(|what| panic!("sample {i}: {what}: {ours:?} vs {t}"));
    }
    // What the first two say, in words: an avail of 60.29 s leaving the network at 21514.56 s;
    // a provider placement opportunity (0x34) of 307 s.
    let Cmd::Insert(i) = scte35::parse(&sections[0]).unwrap().command else {
        panic!("a splice_insert")
    };
    assert!(i.out_of_network && !i.immediate);
    assert_eq!(secs(i.pts.unwrap()), 21514.559089);
    assert_eq!(secs(i.duration.unwrap().0), 60.293567);
    let s = scte35::parse(&sections[1]).unwrap();
    assert_eq!(s.segmentation[0].type_id, 0x34);
    assert!(s.segmentation[0].starts());
    assert_eq!(secs(s.segmentation[0].duration.unwrap()), 307.0);
}

/// A bit writer for the random cues.
#[derive(Default)]
struct Writer(scte35::write::Bits);

impl std::ops::Deref for Writer {
    type Target = scte35::write::Bits;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Writer {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Writer {
    fn splice_time(&mut self, pts: Option<u64>) {
        match pts {
            Some(p) => {
                self.put(1, 1);
                self.put(6, 0x3F);
                self.put(33, p);
            }
            None => {
                self.put(1, 0);
                self.put(7, 0x7F);
            }
        }
    }
}

/// A random cue, written bit by bit as SCTE 35 lays it out.
fn random_cue(rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut cmd = Writer::default();
    let kind = [0u8, 5, 6][rng.usize(..3)];
    match kind {
        5 => {
            cmd.put(32, u64::from(rng.u32(..)));
            let cancel = rng.u8(..8) == 0;
            cmd.put(1, u64::from(cancel));
            cmd.put(7, 0x7F);
            if !cancel {
                let immediate = rng.bool();
                let has_duration = rng.bool();
                cmd.put(1, u64::from(rng.bool()));
                cmd.put(1, 1); // program splice
                cmd.put(1, u64::from(has_duration));
                cmd.put(1, u64::from(immediate));
                cmd.put(4, 0xF);
                if !immediate {
                    cmd.splice_time(rng.bool().then(|| rng.u64(..1 << 33)));
                }
                if has_duration {
                    cmd.put(1, u64::from(rng.bool()));
                    cmd.put(6, 0x3F);
                    cmd.put(33, rng.u64(..1 << 33));
                }
                cmd.put(16, u64::from(rng.u16(..)));
                cmd.put(8, u64::from(rng.u8(..)));
                cmd.put(8, u64::from(rng.u8(..)));
            }
        }
        6 => cmd.splice_time(rng.bool().then(|| rng.u64(..1 << 33))),
        _ => {}
    }
    let mut desc = Writer::default();
    for _ in 0..rng.usize(..3) {
        let mut d = Writer::default();
        d.put(32, 0x4355_4549); // CUEI
        d.put(32, u64::from(rng.u32(..)));
        let cancel = rng.u8(..8) == 0;
        d.put(1, u64::from(cancel));
        d.put(7, 0x7F);
        if !cancel {
            let has_duration = rng.bool();
            d.put(1, 1); // program segmentation
            d.put(1, u64::from(has_duration));
            d.put(1, 1); // delivery not restricted
            d.put(5, 0x1F);
            if has_duration {
                d.put(40, rng.u64(..1 << 40));
            }
            if rng.bool() {
                d.put(8, 0x08); // a Turner Identifier: 8 bytes
                d.put(8, 8);
                d.put(64, rng.u64(..));
            } else {
                d.put(8, 0x00);
                d.put(8, 0);
            }
            let types = [0x10u8, 0x11, 0x22, 0x23, 0x30, 0x31, 0x34, 0x35, 0x36, 0x37];
            let t = types[rng.usize(..types.len())];
            d.put(8, u64::from(t));
            d.put(8, u64::from(rng.u8(..)));
            d.put(8, u64::from(rng.u8(..)));
            if matches!(t, 0x34 | 0x36) {
                d.put(8, u64::from(rng.u8(..)));
                d.put(8, u64::from(rng.u8(..)));
            }
        }
        desc.put(8, 0x02);
        desc.put(8, d.bytes.len() as u64);
        desc.append(&d.bytes);
    }
    let mut body = Writer::default();
    body.put(8, 0); // protocol_version
    body.put(1, 0); // not encrypted
    body.put(6, 0);
    body.put(33, rng.u64(..1 << 33));
    body.put(8, 0xFF);
    body.put(12, u64::from(rng.u16(..0x1000)));
    body.put(12, cmd.bytes.len() as u64);
    body.put(8, u64::from(kind));
    body.append(&cmd.bytes);
    body.put(16, desc.bytes.len() as u64);
    body.append(&desc.bytes);
    let len = body.bytes.len() + 4;
    let mut s = vec![0xFC, 0x30 | (len >> 8) as u8, len as u8];
    s.extend(&body.bytes);
    let crc = crc32_mpeg2(&s);
    s.extend(crc.to_be_bytes());
    s
}

#[test]
fn random_cues_read_as_threefive_reads_them() {
    let mut rng = fastrand::Rng::with_seed(35);
    let sections: Vec<Vec<u8>> = (0..400).map(|_| random_cue(&mut rng)).collect();
    let theirs = threefive(&sections);
    let mut kinds = [0; 3];
    for (i, (s, t)) in sections.iter().zip(&theirs).enumerate() {
        let ours = scte35::parse(s).unwrap_or_else(|e| panic!("cue {i}: {e}"));
        same(&ours, t).unwrap_or_else(|what| panic!("cue {i}: {what}: {ours:?} vs {t}"));
        kinds[match ours.command {
            Cmd::Null => 0,
            Cmd::Insert(_) => 1,
            _ => 2,
        }] += 1;
    }
    assert!(
        kinds.iter().all(|&n| n > 50),
        "every command drawn: {kinds:?}"
    );
}

#[test]
fn damaged_and_cut_sections_are_refused() {
    let mut rng = fastrand::Rng::with_seed(36);
    for _ in 0..300 {
        let s = random_cue(&mut rng);
        let mut bad = s.clone();
        let at = rng.usize(3..bad.len());
        bad[at] ^= 1 << rng.u8(..8);
        assert_eq!(scte35::parse(&bad), Err(Scte35Error::Crc));
        let cut = &s[..rng.usize(..s.len())];
        assert!(scte35::parse(cut).is_err());
        let mut other = s.clone();
        other[0] = 0x02;
        assert_eq!(scte35::parse(&other), Err(Scte35Error::NotSplice(0x02)));
    }
    // Garbage of every length: an error or a reading, never a panic.
    for n in 0..2000 {
        let junk: Vec<u8> = (0..n % 300).map(|_| rng.u8(..)).collect();
        let _ = scte35::parse(&junk);
    }
}

/// Cues written into a real stream (FFmpeg's, at a constant rate) are found where they were
/// sent, with their splice times on the media timeline; the stream stays clean by TR 101 290;
/// and threefive finds the same cues in the same bytes.
#[test]
fn cues_in_a_stream_are_found_where_they_were_sent() {
    let ts = common::cbr();
    let first = write::first_pts(ts).expect("PTS in FFmpeg's stream");
    let at = |s: f64| first + (s * 90_000.0) as u64;
    // An avail announced at 2 s for 4 s, 3 s long; the return announced at 6.5 s for 7 s.
    let cues = vec![
        (
            at(2.0),
            write::splice_insert(7, true, Some(at(4.0)), Some(270_000)),
        ),
        (at(6.5), write::splice_insert(7, false, Some(at(7.0)), None)),
    ];
    let with = write::inject(ts, 0x1F0, &cues).unwrap();
    assert_eq!(with.len(), ts.len(), "two null packets' places taken");

    let mut a = Analyzer::new();
    let mut events = Vec::new();
    for chunk in with.chunks(1316) {
        a.feed(chunk, Clock::Stream, &mut events);
    }
    a.finish(&mut events);
    assert!(
        events.is_empty(),
        "no TR 101 290 error: {:?}",
        common::kinds(&events)
    );
    let found = a.take_cues();
    assert_eq!(found.len(), 2, "{found:?}");
    for (c, (sent, splice)) in found.iter().zip([(2.0, 4.0), (6.5, 7.0)]) {
        assert_eq!(c.pid, 0x1F0);
        let info = c.info.as_ref().expect("read");
        let Cmd::Insert(i) = &info.command else {
            panic!("a splice_insert: {info:?}")
        };
        assert_eq!(i.event_id, 7);
        // Sent just before the first picture or audio frame at or after its time.
        let media = c.media_s.unwrap();
        assert!(media >= sent - 0.7 && media <= sent + 0.1, "{c:?}");
        assert!(
            (c.splice_media_s.unwrap() - splice).abs() < 0.01,
            "the splice time on the media timeline: {c:?}"
        );
    }
    let Cmd::Insert(out) = &found[0].info.as_ref().unwrap().command else {
        unreachable!()
    };
    assert!(out.out_of_network && out.duration == Some((270_000, true)));

    // threefive, reading the whole stream, finds the same two, at the same splice times.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cues.ts");
    std::fs::write(&path, &with).unwrap();
    let script = r#"
import json, sys, threefive
found = []
threefive.Stream(sys.argv[1]).decode(func=lambda c: found.append(c.command.pts_time))
print(json.dumps(found))
"#;
    let o = Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .env("PYTHONPATH", pydeps())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let theirs: Vec<f64> = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let ours: Vec<f64> = [4.0, 7.0].iter().map(|&s| secs(at(s))).collect();
    assert_eq!(theirs.len(), 2, "{stdout}");
    for (t, o) in theirs.iter().zip(&ours) {
        assert!(near(*t, *o), "threefive {theirs:?}, sent {ours:?}");
    }
}
