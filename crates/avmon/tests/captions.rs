//! Closed captions in `avmon check`: `avmon synth --captions` puts CEA-608 and CEA-708 text in
//! the pictures (FFmpeg's own caption decoder reads it back); a stretch without caption data is
//! `captions.missing` when captions are expected, and an HLS variant that declares captions
//! (`CLOSED-CAPTIONS`) without carrying them raises it with no configuration.

mod common;

#[path = "../../avmon-hls/tests/common/mod.rs"]
mod origin;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

fn synth(dir: &Path, name: &str, seconds: u32, extra: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let o = avmon()
        .arg("synth")
        .arg(&path)
        .args([
            "--duration",
            &seconds.to_string(),
            "--width",
            "320",
            "--height",
            "180",
        ])
        .args(["--preset", "ultrafast"])
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    path
}

/// A detectors file: captions judged over a `window_s` window, `expect`ed or not.
fn detectors(dir: &Path, expect: bool, window_s: f64) -> PathBuf {
    let path = dir.join(format!("captions-{expect}.toml"));
    std::fs::write(
        &path,
        format!("[captions]\nexpect = {expect}\nwindow_s = {window_s}\n"),
    )
    .unwrap();
    path
}

fn missing(r: &Value) -> Vec<(f64, f64)> {
    r["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "captions.missing")
        .map(|e| (e["start_s"].as_f64().unwrap(), e["end_s"].as_f64().unwrap()))
        .collect()
}

#[test]
fn captions_are_read_and_a_stretch_without_them_is_missing_when_expected() {
    let dir = tempfile::tempdir().unwrap();
    let ts = synth(
        dir.path(),
        "cc.ts",
        24,
        &["--captions", "--defect", "nocaptions@6-17"],
    );
    // FFmpeg's CEA-608 decoder reads the same text from the same file.
    let srt = dir.path().join("cc.srt");
    let ok = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg(format!("movie={}[out0+subcc]", ts.display()))
        .args(["-map", "0:s", "-c:s", "srt"])
        .arg(&srt)
        .status()
        .unwrap();
    assert!(ok.success());
    let srt = std::fs::read_to_string(&srt).unwrap();
    for line in ["AVMON 0.0", "AVMON 4.0", "AVMON 17.0"] {
        assert!(srt.contains(line), "{line:?} not in {srt}");
    }
    assert!(!srt.contains("AVMON 8.0"), "captions in the gap: {srt}");

    // Not expected: read and counted, nothing raised.
    let r = check_with(&ts, None);
    let s = &r["summary"]["captions"];
    assert_eq!(s["services"], 2.0, "{s:#}");
    assert!(
        s["cc1"].as_f64().unwrap() > 20.0 && s["708_1"] == s["cc1"],
        "{s:#}"
    );
    assert_eq!(missing(&r), []);

    // Expected, 5 s window: missing from the last text before the gap (the line at 4 s) to
    // the first after it (the line at 17 s).
    let r = check_with(&ts, Some(&detectors(dir.path(), true, 5.0)));
    let m = missing(&r);
    assert_eq!(m.len(), 1, "{:#?}", r["events"]);
    assert_near("missing from", m[0].0, 4.0, 0.4);
    assert_near("missing to", m[0].1, 17.0, 0.4);

    // A stream without captions, expected: missing from the start to the end.
    let bare = synth(dir.path(), "bare.ts", 12, &[]);
    let r = check_with(&bare, Some(&detectors(dir.path(), true, 5.0)));
    let m = missing(&r);
    assert_eq!(m.len(), 1, "{:#?}", r["events"]);
    assert_near("missing from", m[0].0, 0.0, 0.05);
    assert_near("missing to", m[0].1, 12.0, 0.1);
    assert_eq!(r["summary"]["captions"]["services"], 0.0);
    // Not expected: nothing, and no captions summary.
    let r = check_with(&bare, None);
    assert_eq!(missing(&r), []);
    assert!(r["summary"]["captions"].is_null(), "{:#}", r["summary"]);
}

#[test]
fn an_hls_variant_declaring_captions_it_does_not_carry_raises_captions_missing() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = origin::Nginx::start("");
    // One rendition without captions, one with (the synthetic stream, segmented as it is).
    origin::write_vod(&nginx.root, "bare.m3u8", "bare%03d.ts", 8, &[]);
    let cc = synth(dir.path(), "cc.ts", 8, &["--captions"]);
    let ok = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
        .arg(&cc)
        .args([
            "-c",
            "copy",
            "-f",
            "hls",
            "-hls_time",
            "2",
            "-hls_list_size",
            "0",
        ])
        .args(["-hls_playlist_type", "vod", "-hls_segment_filename"])
        .arg(nginx.root.join("cc%03d.ts"))
        .arg(nginx.root.join("cc.m3u8"))
        .status()
        .unwrap();
    assert!(ok.success());
    let master = |media: &str, group: &str| {
        format!(
            "#EXTM3U\n#EXT-X-MEDIA:TYPE=CLOSED-CAPTIONS,GROUP-ID=\"cc\",NAME=\"English\",\
             INSTREAM-ID=\"CC1\"\n#EXT-X-STREAM-INF:BANDWIDTH=900000,CLOSED-CAPTIONS={group}\n\
             {media}\n"
        )
    };
    let window = detectors(dir.path(), false, 3.0);
    let run = |name: &str, media: &str, group: &str| {
        std::fs::write(nginx.root.join(name), master(media, group)).unwrap();
        check_with(nginx.url(name), Some(&window))
    };

    // Declared, not carried: raised from the start, saying it was declared.
    let r = run("declared.m3u8", "bare.m3u8", "\"cc\"");
    let events: Vec<&Value> = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "captions.missing")
        .collect();
    assert_eq!(events.len(), 1, "{:#?}", r["events"]);
    assert_eq!(events[0]["details"]["declared"], true);
    assert_near(
        "missing from",
        events[0]["start_s"].as_f64().unwrap(),
        0.0,
        0.1,
    );
    // Declared and carried, or not declared: nothing.
    assert_eq!(missing(&run("carried.m3u8", "cc.m3u8", "\"cc\"")), []);
    assert_eq!(missing(&run("none.m3u8", "bare.m3u8", "NONE")), []);
}
