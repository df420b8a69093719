//! `av.sync` on real encodes: `avmon synth --content sync --av-offset X` (H.264 + AAC in
//! MPEG-TS) measured by the flash-and-beep method, and audio timestamps that jump against video
//! for the timestamp method.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// A flash-and-beep stream with its audio content delayed by `offset_ms`.
fn sync_stream(dir: &Path, offset_ms: f64, fps: u32, rate_args: &[&str]) -> PathBuf {
    let out = dir.join(format!("sync_{offset_ms}_{fps}.ts"));
    let o = avmon()
        .args(["synth", out.to_str().unwrap(), "--duration", "12"])
        .args(["--size", "640x360", "--content", "sync"])
        .args(["--fps", &fps.to_string()])
        .args(["--av-offset", &offset_ms.to_string()])
        .args(rate_args)
        .output()
        .expect("run avmon synth");
    assert!(o.status.success(), "synth failed: {}", stderr_of(&o));
    out
}

fn av_sync_events(r: &Value) -> Vec<Value> {
    r["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "av.sync")
        .cloned()
        .collect()
}

#[test]
fn flash_and_beep_offsets_are_measured_within_5_ms_and_judged_by_bt1359() {
    let dir = tempfile::tempdir().unwrap();
    for (offset, fps, raised) in [
        (0.0, 25, false),
        (80.0, 25, false),
        (200.0, 25, true),
        (-100.0, 25, true),
        (40.0, 30, false),
        (-60.0, 50, true),
    ] {
        let f = sync_stream(dir.path(), offset, fps, &[]);
        let r = check_json(&f);
        let what = format!("--av-offset {offset} at {fps} fps");
        let s = &r["summary"]["av_sync"];
        let got = s["offset_ms"]
            .as_f64()
            .unwrap_or_else(|| panic!("{what}: no offset in {s}"));
        assert_near(&what, got, offset, 5.0);
        assert!(s["pairs"].as_f64().unwrap() >= 10.0, "{what}: {s}");
        let ev = av_sync_events(&r);
        if raised {
            assert_eq!(ev.len(), 1, "{what}: {ev:?}");
            assert_eq!(ev[0]["details"]["method"], "content", "{what}");
            // Onset: the first flash (1 s of content; the media clock starts at the first
            // timestamp of either stream, the AAC priming's 21 ms before the video).
            assert_near(&what, ev[0]["start_s"].as_f64().unwrap(), 1.0, 0.05);
        } else {
            assert!(ev.is_empty(), "{what}: {ev:?}");
        }
    }
}

#[test]
fn programme_content_without_flashes_measures_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let f = synth(dir.path(), "pan.ts", 10.0, &[]);
    let r = check_json(&f);
    assert!(
        r["summary"]["av_sync"]["offset_ms"].is_null(),
        "{}",
        r["summary"]
    );
    assert!(av_sync_events(&r).is_empty());
}

/// Add `shift_90k` to the PTS/DTS of every audio PES (stream ids 0xC0–0xDF) whose PTS is at
/// least `from_s` after the first audio PTS, in place: the packets keep their order, as when an
/// encoder's audio timestamps jump while it keeps muxing audio with the matching video.
fn shift_audio_pts(ts: &mut [u8], from_s: f64, shift_90k: i64) -> usize {
    fn read(b: &[u8]) -> i64 {
        (i64::from(b[0] >> 1 & 7) << 30)
            | (i64::from(b[1]) << 22)
            | (i64::from(b[2] >> 1) << 15)
            | (i64::from(b[3]) << 7)
            | i64::from(b[4] >> 1)
    }
    fn write(b: &mut [u8], v: i64) {
        let v = v & ((1 << 33) - 1);
        b[0] = (b[0] & 0xF0) | ((v >> 29) as u8 & 0x0E) | 1;
        b[1] = (v >> 22) as u8;
        b[2] = ((v >> 14) as u8 & 0xFE) | 1;
        b[3] = (v >> 7) as u8;
        b[4] = ((v << 1) as u8 & 0xFE) | 1;
    }
    let mut first: Option<i64> = None;
    let mut shifted = 0;
    for p in ts.chunks_exact_mut(188) {
        assert_eq!(p[0], 0x47, "TS sync byte");
        if p[1] & 0x40 == 0 {
            continue; // not the start of a PES
        }
        let afc = p[3] >> 4 & 3;
        let start = match afc {
            1 => 4,
            3 => 5 + usize::from(p[4]),
            _ => continue,
        };
        if start + 19 > 188 {
            continue;
        }
        let pes = &mut p[start..];
        if pes[..3] != [0, 0, 1] || !(0xC0..=0xDF).contains(&pes[3]) || pes[7] >> 6 < 2 {
            continue;
        }
        let pts = read(&pes[9..14]);
        let first = *first.get_or_insert(pts);
        if (pts - first) as f64 / 90_000.0 < from_s {
            continue;
        }
        write(&mut pes[9..14], pts + shift_90k);
        if pes[7] >> 6 == 3 {
            let dts = read(&pes[14..19]);
            write(&mut pes[14..19], dts + shift_90k);
        }
        shifted += 1;
    }
    shifted
}

#[test]
fn audio_timestamps_jumping_against_video_raise_timestamps_divergence() {
    let dir = tempfile::tempdir().unwrap();
    let f = synth(dir.path(), "clean.ts", 20.0, &[]);
    let r = check_json(&f);
    assert!(av_sync_events(&r).is_empty(), "clean: {}", r["events"]);
    let skew = r["summary"]["av_sync"]["timestamp_skew_max_ms"]
        .as_f64()
        .unwrap();
    assert!(
        skew < 50.0,
        "a clean encode's clocks track each other: {skew} ms"
    );

    // From 10 s on, audio is stamped 300 ms late.
    let mut ts = std::fs::read(&f).unwrap();
    assert!(shift_audio_pts(&mut ts, 10.0, 27_000) > 0);
    let jumped = dir.path().join("jumped.ts");
    std::fs::write(&jumped, ts).unwrap();
    let r = check_json(&jumped);
    let ev = av_sync_events(&r);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["details"]["method"], "timestamps");
    assert_near("jump onset", ev[0]["start_s"].as_f64().unwrap(), 10.0, 1.1);
    assert_near(
        "skew",
        ev[0]["details"]["skew_ms"].as_f64().unwrap(),
        300.0,
        60.0,
    );
}

#[test]
fn a_remux_that_delays_the_audio_is_measured_on_the_test_signal() {
    // ffmpeg -itsoffset shifts the audio timestamps by 300 ms and re-interleaves the packets by
    // the new timestamps: the clocks look consistent, and only the content shows the fault.
    let dir = tempfile::tempdir().unwrap();
    let f = sync_stream(dir.path(), 0.0, 25, &[]);
    let out = dir.path().join("remuxed.ts");
    let o = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(&f)
        .args(["-itsoffset", "0.3", "-i"])
        .arg(&f)
        .args(["-map", "0:v", "-map", "1:a", "-c", "copy"])
        .arg(&out)
        .output()
        .expect("run ffmpeg");
    assert!(o.status.success(), "ffmpeg: {}", stderr_of(&o));
    // ffmpeg aligns each input's start and then offsets it: the audio moves by 300 ms plus the
    // 21.3 ms AAC priming it started with. What moved is what ffprobe's start times say.
    let moved_ms = (audio_minus_video_start(&out) - audio_minus_video_start(&f)) * 1000.0;
    assert_near("ffmpeg's shift", moved_ms, 300.0, 25.0);
    let r = check_json(&out);
    assert_near(
        "offset",
        r["summary"]["av_sync"]["offset_ms"].as_f64().unwrap(),
        moved_ms,
        5.0,
    );
    let ev = av_sync_events(&r);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["details"]["method"], "content");
}

/// Start time of the audio stream minus that of the video stream, seconds, per ffprobe.
fn audio_minus_video_start(f: &Path) -> f64 {
    let o = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,start_time",
        ])
        .args(["-of", "json"])
        .arg(f)
        .output()
        .expect("run ffprobe");
    let v: Value = serde_json::from_slice(&o.stdout).expect("ffprobe JSON");
    let start = |kind: &str| {
        v["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["codec_type"] == kind)
            .and_then(|s| s["start_time"].as_str()?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {kind} start time in {v}"))
    };
    start("audio") - start("video")
}
