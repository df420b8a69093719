//! `avmon check` on real encodes from `avmon synth`: the exact kinds and times (±0.5 s) of
//! injected defects, and the JSON contract.

mod common;

use common::*;

const TOL: f64 = 0.5;

#[test]
fn freeze_after_a_real_encode_is_found_with_onset_and_end() {
    let dir = tempfile::tempdir().unwrap();
    let f = synth(dir.path(), "freeze.ts", 20.0, &["freeze@8-12"]);
    let r = check_json(&f);
    let ev = events(&r);
    assert_eq!(ev.len(), 1, "exactly one event: {ev:?}");
    let (kind, start, end) = &ev[0];
    assert_eq!(kind, "video.freeze");
    assert_near("freeze start", *start, 8.0, TOL);
    assert_near("freeze end", *end, 12.0, TOL);
    assert_eq!(r["events"][0]["severity"], "major");
}

#[test]
fn black_is_reported_once_as_black_not_as_freeze() {
    let dir = tempfile::tempdir().unwrap();
    let f = synth(dir.path(), "black.ts", 16.0, &["black@5-9"]);
    let ev = events(&check_json(&f));
    assert_eq!(
        ev.len(),
        1,
        "only the black event, no freeze alongside: {ev:?}"
    );
    assert_eq!(ev[0].0, "video.black");
    assert_near("black start", ev[0].1, 5.0, TOL);
    assert_near("black end", ev[0].2, 9.0, TOL);
}

#[test]
fn silence_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let f = synth(dir.path(), "silence.ts", 16.0, &["silence@6-10"]);
    let ev = events(&check_json(&f));
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].0, "audio.silence");
    assert_near("silence start", ev[0].1, 6.0, TOL);
    assert_near("silence end", ev[0].2, 10.0, TOL);
}

#[test]
fn a_clean_stream_has_no_events_and_a_full_summary() {
    let dir = tempfile::tempdir().unwrap();
    let f = synth(dir.path(), "clean.ts", 12.0, &[]);
    let r = check_json(&f);
    assert_eq!(events(&r), vec![], "a clean stream has no events");
    assert_eq!(r["input"], f.to_str().unwrap());
    assert_near("duration", r["duration_s"].as_f64().unwrap(), 12.0, 0.1);
    let v = &r["summary"]["video"];
    assert_eq!(v["codec"], "h264");
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(640), Some(360))
    );
    assert_eq!(v["fps"].as_f64(), Some(25.0));
    assert_eq!(v["frames"].as_u64(), Some(300), "12 s at 25 fps");
    assert_eq!(v["decode_errors"].as_u64(), Some(0));
    let a = &r["summary"]["audio"];
    assert_eq!(a["codec"], "aac");
    assert_eq!(a["channels"].as_u64(), Some(2));
    assert_eq!(a["sample_rate"].as_u64(), Some(48_000));
}

#[test]
fn several_defects_in_one_stream_and_an_open_event_ends_at_the_input_end() {
    let dir = tempfile::tempdir().unwrap();
    // The silence runs past the end of the input: its event ends where the input ends.
    let f = synth(
        dir.path(),
        "multi.ts",
        18.0,
        &["black@2-5", "freeze@8-11", "silence@14-30"],
    );
    let r = check_json(&f);
    let ev = events(&r);
    let kinds: Vec<&str> = ev.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        kinds,
        ["video.black", "video.freeze", "audio.silence"],
        "{ev:?}"
    );
    assert_near("black start", ev[0].1, 2.0, TOL);
    assert_near("freeze start", ev[1].1, 8.0, TOL);
    assert_near("freeze end", ev[1].2, 11.0, TOL);
    assert_near("silence start", ev[2].1, 14.0, TOL);
    let duration = r["duration_s"].as_f64().unwrap();
    assert_near(
        "open silence ends at the input end",
        ev[2].2,
        duration,
        0.05,
    );
}

#[test]
fn a_dropout_in_a_recording_is_a_source_outage() {
    let dir = tempfile::tempdir().unwrap();
    let f = synth(dir.path(), "dropout.ts", 16.0, &["dropout@6-11"]);
    let ev = events(&check_json(&f));
    let down: Vec<_> = ev.iter().filter(|e| e.0 == "source.down").collect();
    assert_eq!(down.len(), 1, "{ev:?}");
    assert_near("outage start", down[0].1, 6.0, TOL);
    assert_near("outage end", down[0].2, 11.0, TOL);
}

#[test]
fn fail_on_sets_the_exit_status_and_text_format_reads_well() {
    let dir = tempfile::tempdir().unwrap();
    let f = synth(dir.path(), "f.ts", 10.0, &["black@2-6"]);
    let path = f.to_str().unwrap();
    let o = avmon()
        .args(["check", path, "--fail-on", "major"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr_of(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("video.black"), "{text}");
    let o = avmon()
        .args(["check", path, "--fail-on", "critical"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "a major defect does not fail --fail-on critical"
    );
    let o = avmon().args(["check", path]).output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "defects found is still a completed analysis"
    );
}

#[test]
fn duration_limits_the_analysis() {
    let dir = tempfile::tempdir().unwrap();
    let f = synth(dir.path(), "long.ts", 12.0, &["black@8-11"]);
    let o = avmon()
        .args([
            "check",
            "--format",
            "json",
            "--duration",
            "5",
            f.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_near(
        "analysed duration",
        r["duration_s"].as_f64().unwrap(),
        5.0,
        0.1,
    );
    assert_eq!(events(&r), vec![], "the black at 8 s is beyond --duration");
}

/// Each packet's PID and time on the stream's PCR clock (seconds from the first PCR; the last
/// PCR before it), and where media time starts on that clock: the earliest first PTS, as avmon
/// (and FFmpeg) count media time from it.
fn pcr_clock(ts: &[u8]) -> (Vec<(u16, f64)>, f64) {
    use avmon_transport::packet::{pes_start, Header, PesStart};
    let mut first_pcr = None;
    let mut now = 0.0;
    let mut first_pts = std::collections::HashMap::new();
    let packets = ts
        .chunks_exact(188)
        .map(|p| {
            let h = Header::parse(p.try_into().unwrap());
            if let Some((pcr, _)) = h.pcr {
                now = (pcr - *first_pcr.get_or_insert(pcr)) as f64 / 27e6;
            }
            if h.pusi && h.payload < 188 {
                if let PesStart::Pts(pts) = pes_start(&p[h.payload..]) {
                    first_pts.entry(h.pid).or_insert(pts);
                }
            }
            (h.pid, now)
        })
        .collect();
    let first_pcr = first_pcr.expect("a PCR") as f64;
    let origin = first_pts
        .values()
        .map(|&pts| (pts as f64 * 300.0 - first_pcr) / 27e6)
        .fold(f64::INFINITY, f64::min);
    (packets, origin)
}

#[test]
fn a_pat_missing_for_seconds_is_one_event_from_its_onset_to_its_return_or_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let clean = synth(dir.path(), "clean.ts", 8.0, &[]);
    let bytes = std::fs::read(&clean).unwrap();
    let (packets, origin) = pcr_clock(&bytes);
    let pats: Vec<usize> = (0..packets.len()).filter(|&i| packets[i].0 == 0).collect();
    let media = |i: usize| packets[i].1 - origin;
    // The PAT packets from 3 to 5 s dropped; then those from 5 s to the end.
    for (name, from, to) in [("gap.ts", 3.0, 5.0), ("to-end.ts", 5.0, 99.0)] {
        let gone: Vec<usize> = pats
            .iter()
            .copied()
            .filter(|&i| (from..to).contains(&packets[i].1))
            .collect();
        let (first, last) = (gone[0], *gone.last().unwrap());
        let bad = dir.path().join(name);
        let o = avmon()
            .args(["damage", clean.to_str().unwrap(), bad.to_str().unwrap()])
            .args(["--drop", &format!("0@#{first}-{last}")])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr_of(&o));
        let r = check_json(&bad);
        assert_eq!(r["summary"]["transport"]["pat_errors"], 1, "{name}");
        let pat: Vec<&serde_json::Value> = r["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "transport.pat_error")
            .collect();
        assert_eq!(
            pat.len(),
            1,
            "{name}: one event, not an instant per error: {pat:?}"
        );
        let (start, end) = (
            pat[0]["start_s"].as_f64().unwrap(),
            pat[0]["end_s"].as_f64().unwrap(),
        );
        assert_eq!(pat[0]["details"]["count"], 1, "{name}");
        // From the last PAT before the gap plus TR 101 290's 0.5 s to the next PAT, or to the
        // end of the input.
        let before = pats[pats.partition_point(|&i| i < first) - 1];
        assert_near("PAT missing from", start, media(before) + 0.5, 0.05);
        match pats.iter().find(|&&i| i > last) {
            Some(&back) => assert_near("PAT back at", end, media(back), 0.05),
            None => assert_eq!(end, r["duration_s"].as_f64().unwrap(), "{name}"),
        }
        assert!(end - start > 1.0, "{name}: {start}-{end}");
    }
}

#[test]
fn a_ts_file_gets_tr_101_290_counts_and_each_lost_packet_is_one_cc_error() {
    let dir = tempfile::tempdir().unwrap();
    let clean = synth(dir.path(), "clean.ts", 8.0, &[]);
    let r = check_json(&clean);
    let t = r["summary"]["transport"]
        .as_object()
        .expect("summary.transport");
    for name in [
        "sync_losses",
        "sync_byte_errors",
        "pat_errors",
        "cc_errors",
        "pmt_errors",
        "pid_errors",
        "transport_errors",
        "crc_errors",
        "pcr_repetition_errors",
        "pcr_discontinuity_errors",
        "pcr_accuracy_errors",
        "pts_errors",
        "cat_errors",
    ] {
        assert_eq!(t[name].as_u64(), Some(0), "{name} of a clean file");
    }
    assert_eq!(t.len(), 13);
    assert_eq!(events(&r), vec![], "no transport event on a clean file");

    // Five video and audio packets with a payload and no adaptation field (so no PCR: only
    // the continuity counter can tell they are gone), dropped by index.
    let bytes = std::fs::read(&clean).unwrap();
    let plain: Vec<(usize, u16)> = bytes
        .chunks_exact(188)
        .enumerate()
        .filter_map(|(i, p)| {
            let pid = (u16::from(p[1] & 0x1F) << 8) | u16::from(p[2]);
            (p[3] >> 4 & 3 == 1 && (pid == 0x100 || pid == 0x101)).then_some((i, pid))
        })
        .collect();
    let bad = dir.path().join("bad.ts");
    let mut cmd = avmon();
    cmd.args(["damage", clean.to_str().unwrap(), bad.to_str().unwrap()]);
    for k in 1..=5 {
        let (i, pid) = plain[k * plain.len() / 6];
        cmd.args(["--drop", &format!("{pid}@#{i}-{i}")]);
    }
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    let r = check_json(&bad);
    let t = &r["summary"]["transport"];
    assert_eq!(t["cc_errors"].as_u64(), Some(5), "{t}");
    let others: u64 = t
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "cc_errors")
        .map(|(_, v)| v.as_u64().unwrap())
        .sum();
    assert_eq!(others, 0, "{t}");
    // The losses are more than a second apart: one `transport.cc_error` event each, in order,
    // inside the file (the lost video packets also damage pictures: `video.corruption`).
    let ev: Vec<_> = events(&r)
        .into_iter()
        .filter(|e| e.0.starts_with("transport."))
        .collect();
    assert_eq!(ev.len(), 5, "{ev:?}");
    assert!(ev.iter().all(|e| e.0 == "transport.cc_error"), "{ev:?}");
    assert!(ev.windows(2).all(|w| w[0].1 < w[1].1), "{ev:?}");
    assert!(ev.iter().all(|e| (0.0..8.0).contains(&e.1)), "{ev:?}");
    let text = avmon()
        .args(["check", bad.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("transport (TR 101 290): cc_errors 5"),
        "{text}"
    );

    // Damage at the very start does not hide a transport stream: every 997th byte flipped
    // (the first sync byte among them), or a kilobyte of garbage before the first packet.
    let mut flipped = bytes.clone();
    for i in (0..flipped.len()).step_by(997) {
        flipped[i] ^= 0xFF;
    }
    let mut garbage: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 256) as u8).collect();
    garbage.extend(&bytes);
    let summary = |name: &str, data: Vec<u8>| {
        let path = dir.path().join(name);
        std::fs::write(&path, data).unwrap();
        let t = check_json(&path)["summary"]["transport"].clone();
        assert!(t.is_object(), "{name} is analysed as TS: {t}");
        t
    };
    let t = summary("flipped.ts", flipped);
    assert!(
        t["sync_byte_errors"].as_u64() > Some(0),
        "the damage is counted: {t}"
    );
    // Before the first sync there is no sync to lose: the stream after it is clean.
    let t = summary("garbage.ts", garbage);
    let counts = t.as_object().unwrap().values();
    assert!(counts.into_iter().all(|v| v == 0), "{t}");

    // Not a transport stream: no transport summary.
    let mp4 = dir.path().join("clip.mp4");
    let o = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-f", "lavfi"])
        .args([
            "-i",
            "testsrc2=size=160x90:rate=25",
            "-t",
            "1",
            "-c:v",
            "libx264",
        ])
        .arg(&mp4)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert!(check_json(&mp4)["summary"]["transport"].is_null());
}
