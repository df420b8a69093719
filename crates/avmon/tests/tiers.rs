//! Fidelity tiers on real encodes: each tier on a stream with black, a freeze and lost packets
//! (what it still finds, and nothing false), a tier changed at run time through the API, and a
//! bad tier in a config.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// Synth's GOP: keyframes every 2 s (and at scene cuts).
const GOP_S: f64 = 2.0;

fn check_tier(input: &Path, tier: &str) -> Value {
    check_tier_with(input, tier, &[])
}

/// `check --tier` with more arguments.
fn check_tier_with(input: &Path, tier: &str, more: &[&str]) -> Value {
    let o = avmon()
        .args(["check", "--format", "json", "--tier", tier])
        .args(more)
        .arg(input)
        .output()
        .expect("run avmon check");
    assert!(o.status.success(), "check --tier {tier}: {}", stderr_of(&o));
    serde_json::from_slice(&o.stdout).expect("check prints JSON")
}

fn one<'a>(ev: &'a [(String, f64, f64)], kind: &str, tier: &str) -> &'a (String, f64, f64) {
    let found: Vec<_> = ev.iter().filter(|e| e.0 == kind).collect();
    assert_eq!(found.len(), 1, "{tier}: one {kind}: {ev:?}");
    found[0]
}

fn frames(r: &Value, what: &str) -> u64 {
    r["summary"][what]["frames"].as_u64().unwrap_or(0)
}

#[test]
fn each_tier_finds_what_it_can_and_nothing_false() {
    let dir = tempfile::tempdir().unwrap();
    let clean = synth(
        dir.path(),
        "clean.ts",
        30.0,
        &["black@6-10", "freeze@14-19"],
    );
    let bad = dir.path().join("damaged.ts");
    let labels = dir.path().join("labels.json");
    let o = avmon()
        .args(["damage", clean.to_str().unwrap(), bad.to_str().unwrap()])
        .args(["--drop", "22-22.2:0.3", "--seed", "1", "--labels"])
        .arg(&labels)
        .output()
        .unwrap();
    assert!(o.status.success(), "damage: {}", stderr_of(&o));
    let labels: Value = serde_json::from_slice(&std::fs::read(&labels).unwrap()).unwrap();
    let first_hit = labels["outcome"]["first_hit_s"].as_f64().unwrap();

    let full = check_tier(&bad, "full");
    for tier in ["full", "reference", "keyframes", "transport"] {
        let r = if tier == "full" {
            full.clone()
        } else {
            check_tier(&bad, tier)
        };
        assert_eq!(r["summary"]["video"]["tier"], tier);
        let ev = events(&r);
        let kinds: BTreeSet<&str> = ev.iter().map(|e| e.0.as_str()).collect();
        // The TS analyser sees every byte in every tier: the lost packets are there.
        assert!(kinds.contains("transport.cc_error"), "{tier}: {ev:?}");
        // Audio is decoded in every tier, whole.
        assert_eq!(frames(&r, "audio"), frames(&full, "audio"), "{tier}");
        let video: BTreeSet<&str> = kinds
            .iter()
            .copied()
            .filter(|k| !k.starts_with("transport."))
            .collect();
        match tier {
            "full" | "reference" => {
                assert_eq!(
                    video,
                    BTreeSet::from(["video.black", "video.corruption", "video.freeze"]),
                    "{tier}: {ev:?}"
                );
                let b = one(&ev, "video.black", tier);
                assert_near("black start", b.1, 6.0, 0.5);
                assert_near("black end", b.2, 10.0, 0.5);
                let f = one(&ev, "video.freeze", tier);
                assert_near("freeze start", f.1, 14.0, 0.5);
                assert_near("freeze end", f.2, 19.0, 0.5);
                let c = one(&ev, "video.corruption", tier);
                assert_near("corruption onset", c.1, first_hit, 0.5);
            }
            "keyframes" => {
                // Found at keyframe granularity; the lost packets fell outside keyframes
                // here, so nothing else (no video.loss between keyframes).
                let b = one(&ev, "video.black", tier);
                assert_near("black start", b.1, 6.0, GOP_S + 0.1);
                assert_near("black end", b.2, 10.0, GOP_S + 0.1);
                let f = one(&ev, "video.freeze", tier);
                assert_near("freeze start", f.1, 14.0, GOP_S + 0.1);
                assert_near("freeze end", f.2, 19.0, GOP_S + 0.1);
                assert!(
                    video
                        .iter()
                        .all(|k| matches!(*k, "video.black" | "video.freeze" | "video.corruption")),
                    "{tier}: {ev:?}"
                );
                assert!(
                    frames(&r, "video") * 10 <= frames(&full, "video"),
                    "keyframes decodes at most a tenth of the frames: {} of {}",
                    frames(&r, "video"),
                    frames(&full, "video")
                );
            }
            _ => {
                assert!(video.is_empty(), "transport: no video verdicts: {ev:?}");
                assert_eq!(frames(&r, "video"), 0);
            }
        }
        if tier == "reference" {
            let (n, all) = (frames(&r, "video"), frames(&full, "video"));
            assert!(n < all * 3 / 4, "reference skips frames: {n} of {all}");
        }
    }
}

/// A still picture that flashes between keyframes (the sync test signal: grey, a white flash
/// each second, keyframes every 2 s on grey) looks frozen from its keyframes alone; the sizes of
/// the packets not decoded in between show the change.
#[test]
fn keyframes_do_not_call_a_picture_frozen_that_changed_between_them() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("sync.ts");
    let o = avmon()
        .args([
            "synth",
            f.to_str().unwrap(),
            "--content",
            "sync",
            "--duration",
            "12",
        ])
        .args(["--width", "640", "--height", "360"])
        .output()
        .unwrap();
    assert!(o.status.success(), "synth: {}", stderr_of(&o));
    let r = check_tier(&f, "keyframes");
    assert_eq!(
        events(&r),
        vec![],
        "nothing: the picture changes every second"
    );
    assert!(frames(&r, "video") <= 8, "{}", frames(&r, "video"));
}

/// `--keyframe-interval 6` on a 2 s GOP: one keyframe in three is decoded, and black and a
/// freeze are still found, at that spacing (the keyframes skipped in a freeze do not count as
/// change: they are large by nature, not because the picture moved).
#[test]
fn a_keyframe_interval_finds_black_and_freeze_at_its_spacing() {
    const EVERY: f64 = 6.0;
    let dir = tempfile::tempdir().unwrap();
    let f = synth(dir.path(), "t.ts", 40.0, &["black@10-26", "freeze@28-39"]);
    let r = check_tier_with(
        &f,
        "keyframes",
        &["--keyframe-interval", &EVERY.to_string()],
    );
    let all = check_tier(&f, "keyframes");
    let (n, every_key) = (frames(&r, "video"), frames(&all, "video"));
    assert!(
        n * 2 < every_key && n >= 40 / EVERY as u64,
        "{n} keyframes decoded of {every_key}"
    );
    let ev = events(&r);
    let black = one(&ev, "video.black", "keyframes every 6 s");
    assert!((10.0..=10.0 + EVERY + 0.1).contains(&black.1), "{black:?}");
    assert!(
        (26.0 - EVERY..=26.0 + EVERY).contains(&black.2),
        "{black:?}"
    );
    let freeze = one(&ev, "video.freeze", "keyframes every 6 s");
    assert!(
        (28.0..=28.0 + EVERY + 0.1).contains(&freeze.1),
        "{freeze:?}"
    );
    assert!(
        ev.iter()
            .filter(|e| e.0.starts_with("video."))
            .all(|e| e.0 == "video.black" || e.0 == "video.freeze"),
        "{ev:?}"
    );
}

#[test]
fn a_bad_tier_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    for (setting, message) in [
        ("tier = \"half\"", "streams[0].tier: unknown tier \"half\""),
        (
            "keyframe_interval_s = 11",
            "streams[0].keyframe_interval_s: must be between 0 and 10 (got 11)",
        ),
    ] {
        let err = refused_run(
            dir.path(),
            &format!("[[streams]]\nid = \"a\"\nurl = \"udp://127.0.0.1:5000\"\n{setting}\n"),
        );
        assert!(err.contains(message), "{err}");
    }
    let o = avmon()
        .args(["check", "x.ts", "--tier", "half"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr_of(&o).contains("unknown tier"), "{}", stderr_of(&o));

    let o = avmon()
        .args([
            "check",
            "x.ts",
            "--tier",
            "keyframes",
            "--keyframe-interval=-1",
        ])
        .output()
        .unwrap();
    assert_clean_failure(
        &o,
        "--keyframe-interval: must be between 0 and 10 seconds (got -1)",
    );
}

/// Frames decoded over `secs` of wall time, per second: (video, audio). Status is published
/// every 200 ms and a loaded machine delays the stream, so the asserted rates keep a wide margin
/// (the tiers differ by far more: 0.5 against 25 video frames a second).
fn rates(stream: &dyn Fn() -> Value, secs: f64) -> (f64, f64) {
    let a = stream();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let b = stream();
    let d = |k: &str| (b[k].as_u64().unwrap() - a[k].as_u64().unwrap()) as f64 / secs;
    (d("frames_video"), d("frames_audio"))
}

#[test]
fn tier_changes_at_run_time_through_the_api_without_reconnecting() {
    let dir = tempfile::tempdir().unwrap();
    let udp = free_udp_port();
    let (_service, http, base) = start_service(
        dir.path(),
        &format!(
            "[[streams]]\nid = \"s\"\nurl = \"udp://127.0.0.1:{udp}\"\ntier = \"keyframes\"\n"
        ),
    );
    let get = |url: &str| -> Option<Value> { http.get(url).send().ok()?.json().ok() };
    // 34 s of live stream, black at 12–17 s (while the tier is full).
    let _synth = Killed(
        avmon()
            .args([
                "synth",
                &format!("udp://127.0.0.1:{udp}"),
                "--duration",
                "34",
            ])
            .args(["--width", "320", "--height", "180", "--preset", "ultrafast"])
            .args(["--defect", "black@12-17"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("{base}/api/streams/s");
    let stream = || get(&url).unwrap_or_default();
    assert_eq!(
        stream()["tier"],
        "keyframes",
        "the configured tier is shown"
    );
    wait_for("frames", Duration::from_secs(15), || {
        (stream()["frames_audio"].as_u64()? > 50).then_some(())
    });
    let (video, audio) = rates(&stream, 3.0);
    assert!(
        video <= 2.0,
        "keyframes: about one frame per 2 s ({video}/s)"
    );
    assert!(audio > 20.0, "audio keeps being decoded, ~47/s ({audio}/s)");

    let patch = |body: &str| {
        http.patch(&url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap()
    };
    let r = patch(r#"{"tier": "full"}"#);
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().unwrap()["tier"], "full");
    std::thread::sleep(Duration::from_secs(3)); // to the next keyframe, at most 2 s
    let (video, _) = rates(&stream, 2.0);
    assert!(video > 12.0, "full: every frame, 25/s ({video}/s)");
    // The black at 12–17 s is found at full fidelity.
    wait_for("video.black raised", Duration::from_secs(20), || {
        let s = stream();
        s["active_alerts"]
            .as_array()?
            .iter()
            .any(|a| a["kind"] == "video.black")
            .then_some(())
    });

    let r = patch(r#"{"tier": "transport"}"#);
    assert_eq!(r.status(), 200);
    std::thread::sleep(Duration::from_secs(1));
    let (video, audio) = rates(&stream, 5.0);
    assert_eq!(video, 0.0, "transport: no video decoded");
    assert!(audio > 20.0, "audio still decoded, ~47/s ({audio}/s)");
    let r = patch(r#"{"tier": "sometimes"}"#);
    assert_eq!(r.status(), 400);

    let s = stream();
    assert_eq!(s["tier"], "transport");
    assert_eq!(s["reconnects"], 0, "a tier change does not reconnect: {s}");
    let alerts = get(&format!("{base}/api/alerts?stream=s")).unwrap();
    let kinds: Vec<&str> = alerts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert!(
        // Nor any transport alarm: the stream is healthy, however late a loaded host reads it.
        kinds.iter().all(|k| *k == "video.black"),
        "nothing false across the tier changes (no video.loss in keyframes or transport): {kinds:?}"
    );
}
