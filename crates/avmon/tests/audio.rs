//! The audio detectors on real AAC encodes from `avmon synth`: loudness steps, clipping, a dead
//! channel, zero gaps and clicks are found where they were injected; clean stereo and 5.1 controls
//! give no events; the integrated loudness agrees with FFmpeg's own `ebur128` filter.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

/// `avmon synth` at a small picture size (the audio is what matters here).
fn synth_audio(dir: &Path, name: &str, duration: f64, channels: u32, defects: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let mut cmd = avmon();
    cmd.args(["synth", out.to_str().unwrap()])
        .args(["--duration", &duration.to_string()])
        .args(["--width", "320", "--height", "180"])
        .args(["--channels", &channels.to_string()]);
    for d in defects {
        cmd.args(["--defect", d]);
    }
    let o = cmd.output().expect("run avmon synth");
    assert!(o.status.success(), "synth failed: {}", stderr_of(&o));
    out
}

fn start_end(e: &Value) -> (f64, f64) {
    (e["start_s"].as_f64().unwrap(), e["end_s"].as_f64().unwrap())
}

/// Integrated loudness of `f` by FFmpeg's `ebur128` filter (its running value at the last frame,
/// printed to 3 decimals).
fn ffmpeg_integrated(f: &Path) -> f64 {
    let o = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats", "-i"])
        .arg(f)
        .args([
            "-af",
            "ebur128=metadata=1,ametadata=print:key=lavfi.r128.I:file=-",
            "-f",
            "null",
            "-",
        ])
        .output()
        .expect("run ffmpeg");
    assert!(o.status.success(), "ffmpeg: {}", stderr_of(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("lavfi.r128.I="))
        .and_then(|v| v.trim().parse().ok())
        .expect("ffmpeg printed an integrated loudness")
}

#[test]
fn each_audio_defect_is_found_where_it_was_injected() {
    let dir = tempfile::tempdir().unwrap();
    let f = synth_audio(
        dir.path(),
        "faults.ts",
        // S needs ~2.5 s after the step down to come back inside the window.
        42.0,
        2,
        &[
            "clip@5-7",
            "gap@10-10.1",
            "click@14-14.005",
            "deadch:1@17-22",
            "gain:+12@24-38",
        ],
    );
    let r = check_json(&f);
    let all = events(&r);

    let clip = of_kind(&r, "audio.clipping");
    assert_eq!(clip.len(), 1, "{all:?}");
    let (s, e) = start_end(clip[0]);
    assert_near("clipping start", s, 5.0, 0.5);
    assert_near("clipping end", e, 7.0, 0.5);
    assert!(clip[0]["details"]["clipped_runs"].as_u64().unwrap() > 0);

    let drop = of_kind(&r, "audio.dropout");
    assert_eq!(drop.len(), 2, "{all:?}");
    let (s, e) = start_end(drop[0]);
    assert_eq!(drop[0]["details"]["cause"], "zeros");
    assert_near("gap start", s, 10.0, 0.1);
    assert_near("gap end", e, 10.1, 0.1);
    let (s, _) = start_end(drop[1]);
    assert_eq!(drop[1]["details"]["cause"], "click");
    assert_near("click", s, 14.0, 0.1);

    let dead = of_kind(&r, "audio.channel_silence");
    assert_eq!(dead.len(), 1, "{all:?}");
    let (s, e) = start_end(dead[0]);
    assert_near("dead channel start", s, 17.0, 0.5);
    assert_near("dead channel end", e, 22.0, 0.5);
    assert_eq!(dead[0]["details"]["channels"], serde_json::json!([1]));
    assert_eq!(dead[0]["details"]["speakers"], serde_json::json!(["FR"]));

    let loud = of_kind(&r, "audio.loudness");
    assert_eq!(loud.len(), 1, "{all:?}");
    let (s, e) = start_end(loud[0]);
    assert_near("loudness step up", s, 24.0, 0.5);
    assert_near("loudness step down", e, 38.0, 0.5);
    assert_eq!(loud[0]["details"]["direction"], "too_loud");

    assert_eq!(all.len(), 5, "nothing else: {all:?}");
}

#[test]
fn clean_stereo_and_surround_controls_have_no_events_and_match_ffmpeg_loudness() {
    let dir = tempfile::tempdir().unwrap();
    for channels in [2, 6] {
        let f = synth_audio(
            dir.path(),
            &format!("clean{channels}.ts"),
            20.0,
            channels,
            &[],
        );
        let r = check_json(&f);
        assert_eq!(events(&r), vec![], "{channels} channels: no events");
        let a = &r["summary"]["audio"];
        assert_eq!(a["channels"], channels);
        let ours = a["integrated_lufs"].as_f64().expect("integrated_lufs");
        assert_near(
            &format!("{channels} channels: integrated vs ffmpeg ebur128"),
            ours,
            ffmpeg_integrated(&f),
            0.1,
        );
        // The synthetic programme sits near R128's target.
        assert_near("integrated", ours, -23.0, 3.5);
        assert!(a["true_peak_dbtp"].as_f64().expect("true_peak_dbtp") < 0.0);
        assert!(a["loudness_range_lu"].as_f64().unwrap() < 1.0);
    }
}

#[test]
fn an_empty_lfe_is_not_a_dead_channel_but_an_empty_centre_is() {
    let dir = tempfile::tempdir().unwrap();
    let f = synth_audio(
        dir.path(),
        "surround.ts",
        16.0,
        6,
        &["deadch:3@2-14", "deadch:2@5-10"],
    );
    let r = check_json(&f);
    let dead = of_kind(&r, "audio.channel_silence");
    assert_eq!(dead.len(), 1, "{:?}", events(&r));
    let (s, e) = start_end(dead[0]);
    assert_near("centre start", s, 5.0, 0.5);
    assert_near("centre end", e, 10.0, 0.5);
    assert_eq!(dead[0]["details"]["channels"], serde_json::json!([2]));
    assert_eq!(dead[0]["details"]["speakers"], serde_json::json!(["FC"]));
}

#[test]
fn bad_audio_defects_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (defect, says) in [
        ("deadch:2@1-2", "beyond the 2 generated"),
        ("gain:loud@1-2", "expected KIND[:PARAM]@START-END"),
        ("black:3@1-2", "takes no :PARAM"),
    ] {
        let o = avmon()
            .args(["synth", dir.path().join("x.ts").to_str().unwrap()])
            .args(["--duration", "2", "--defect", defect])
            .output()
            .unwrap();
        assert!(!o.status.success(), "{defect}");
        assert!(stderr_of(&o).contains(says), "{defect}: {}", stderr_of(&o));
    }
}
