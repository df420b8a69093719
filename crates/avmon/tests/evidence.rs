//! Evidence and live events end to end: `avmon synth` sends a stream that goes black over UDP
//! into `avmon run`; the alert's snapshot is a JPEG of the black picture at the onset, its clip
//! is transport stream that ffprobe reads and in which `avmon check` finds the black starting
//! `pre_s` in, the stream's thumbnail is its live picture, and `/api/events` carries the alert.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// What ffprobe says of `path` with `args`, as JSON; it must read it.
fn ffprobe(path: &Path, args: &[&str]) -> Value {
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-of", "json"])
        .args(args)
        .arg(path)
        .output()
        .unwrap();
    assert!(probe.status.success(), "ffprobe: {}", stderr_of(&probe));
    serde_json::from_slice(&probe.stdout).unwrap()
}

/// Width, height and mean luma (0–255) of a JPEG, decoded by FFmpeg.
fn jpeg_luma(path: &Path) -> (u32, u32, f64) {
    let v = ffprobe(path, &["-show_entries", "stream=codec_name,width,height"]);
    let s = &v["streams"][0];
    assert_eq!(s["codec_name"], "mjpeg");
    let (w, h) = (
        s["width"].as_u64().unwrap() as u32,
        s["height"].as_u64().unwrap() as u32,
    );
    let raw = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "rawvideo", "-pix_fmt", "gray", "-"])
        .output()
        .unwrap();
    assert!(raw.status.success(), "ffmpeg: {}", stderr_of(&raw));
    assert_eq!(raw.stdout.len(), (w * h) as usize);
    let mean = raw.stdout.iter().map(|&b| f64::from(b)).sum::<f64>() / raw.stdout.len() as f64;
    (w, h, mean)
}

fn get(http: &reqwest::blocking::Client, url: &str) -> (u16, String, Vec<u8>) {
    let r = http.get(url).send().unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, ct, r.bytes().unwrap().to_vec())
}

#[test]
fn a_black_alert_keeps_a_snapshot_and_a_clip_and_is_sent_live() {
    let udp = free_udp_port();
    let dir = tempfile::tempdir().unwrap();
    let evidence = dir.path().join("evidence");
    let (service, http, base) = start_service(
        dir.path(),
        &format!(
            r#"
[evidence]
dir = "{}"
pre_s = 3
post_s = 4
[[streams]]
id = "cam"
url = "udp://127.0.0.1:{udp}"
io_timeout_s = 3
"#,
            evidence.display()
        ),
    );

    // Live events, read on their own thread.
    let (tx, events) = std::sync::mpsc::channel::<(String, Value)>();
    let sse = http.get(format!("{base}/api/events")).send().unwrap();
    assert_eq!(sse.status().as_u16(), 200);
    assert!(sse.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    std::thread::spawn(move || {
        let mut name = String::new();
        for line in BufReader::new(sse).lines() {
            let Ok(line) = line else { return };
            if let Some(n) = line.strip_prefix("event: ") {
                name = n.to_string();
            } else if let Some(d) = line.strip_prefix("data: ") {
                let v = serde_json::from_str(d).unwrap_or(Value::Null);
                if tx.send((name.clone(), v)).is_err() {
                    return;
                }
            }
        }
    });

    let mut synth = Killed(
        avmon()
            .args([
                "synth",
                &format!("udp://127.0.0.1:{udp}"),
                "--duration",
                "24",
            ])
            .args(["--width", "640", "--height", "360", "--preset", "ultrafast"])
            .args(["--defect", "black@7-15"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // Before the black: the thumbnail is the live picture, scaled to 320 wide.
    let thumb = dir.path().join("thumb.jpg");
    let fetch = |url: &str, ctype: &str, to: &Path, wait: u64| {
        wait_for(url, Duration::from_secs(wait), || {
            let (status, ct, body) = get(&http, &format!("{base}{url}"));
            (status == 200).then(|| {
                assert_eq!(ct, ctype, "{url}");
                std::fs::write(to, body).unwrap();
            })
        })
    };
    fetch("/api/streams/cam/thumbnail.jpg", "image/jpeg", &thumb, 15);
    let (w, h, lit) = jpeg_luma(&thumb);
    assert_eq!((w, h), (320, 180), "640x360 scaled to 320 wide");
    assert!(
        lit > 40.0,
        "the picture before the black is not black (mean luma {lit})"
    );

    // The alert is raised, and the event says so.
    let alert: Value = wait_for(
        "video.black on /api/events",
        Duration::from_secs(25),
        || {
            while let Ok((name, v)) = events.try_recv() {
                if name == "alert"
                    && v["transition"] == "raised"
                    && v["alert"]["kind"] == "video.black"
                {
                    return Some(v["alert"].clone());
                }
            }
            None
        },
    );
    assert_eq!(alert["stream_id"], "cam");
    let id = alert["id"].as_str().unwrap().to_string();
    let onset = alert["start_s"].as_f64().unwrap();
    assert_near("onset", onset, 7.0, 0.5);

    // The snapshot: a JPEG of the black picture at the onset, at thumbnail size.
    let snap = dir.path().join("snap.jpg");
    fetch(
        &format!("/api/alerts/{id}/snapshot.jpg"),
        "image/jpeg",
        &snap,
        5,
    );
    let (w, h, dark) = jpeg_luma(&snap);
    assert_eq!((w, h), (320, 180));
    assert!(
        dark < 20.0,
        "the snapshot shows the black picture (mean luma {dark})"
    );

    // The clip: written post_s after the onset; its bytes are TS that FFmpeg reads, and the
    // black starts in it about pre_s in (it spans the onset).
    let clip = dir.path().join("clip.ts");
    fetch(
        &format!("/api/alerts/{id}/clip.ts"),
        "video/mp2t",
        &clip,
        15,
    );
    let p = ffprobe(&clip, &["-show_format", "-show_streams"]);
    assert_eq!(p["format"]["format_name"], "mpegts");
    let codecs: Vec<&str> = p["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["codec_name"].as_str())
        .collect();
    assert!(
        codecs.contains(&"h264") && codecs.contains(&"aac"),
        "{codecs:?}"
    );
    let report = check_json(&clip);
    let blacks: Vec<_> = events_of(&report, "video.black");
    assert_eq!(blacks.len(), 1, "{report}");
    let (start, _) = blacks[0];
    // pre_s = 3 before the onset (the arrival clock maps media to bytes within a second or so).
    assert!(
        (1.5..=4.5).contains(&start),
        "the clip starts before the onset: black from {start} s into it"
    );
    let duration = p["format"]["duration"]
        .as_str()
        .unwrap()
        .parse::<f64>()
        .unwrap();
    assert!(
        duration >= 5.0,
        "pre_s + post_s of stream (got {duration} s)"
    );

    // The files are where the config says.
    assert!(evidence.join(format!("{id}.jpg")).is_file());
    assert!(evidence.join(format!("{id}.ts")).is_file());

    // What is not there is a JSON 404, and an id cannot name another file.
    for path in [
        "/api/alerts/no-such-alert/snapshot.jpg".to_string(),
        "/api/alerts/no-such-alert/clip.ts".to_string(),
        "/api/alerts/..%2Favmon/clip.ts".to_string(),
        "/api/streams/nope/thumbnail.jpg".to_string(),
    ] {
        let (status, ct, body) = get(&http, &format!("{base}{path}"));
        assert_eq!(status, 404, "{path}");
        assert!(ct.starts_with("application/json"), "{path}: {ct}");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert!(v["error"].is_string(), "{path}");
    }

    // The stream's status and audio levels are live events too.
    let (mut status_seen, mut levels_seen) = (false, false);
    wait_for("stream and levels events", Duration::from_secs(10), || {
        while let Ok((name, v)) = events.try_recv() {
            if name == "stream" && v["id"] == "cam" {
                status_seen = true;
            }
            if name == "levels" {
                let ch = v["cam"].as_array().map(|a| a.len()).unwrap_or(0);
                assert!(ch >= 1, "{v}");
                let rms = v["cam"][0][0].as_f64().unwrap();
                assert!((-100.0..=0.0).contains(&rms), "{v}");
                levels_seen = true;
            }
        }
        (status_seen && levels_seen).then_some(())
    });
    let _ = synth.0.kill();
    drop(service);
}

/// `(start_s, end_s)` of each event of `kind` in a `check` report.
fn events_of(report: &Value, kind: &str) -> Vec<(f64, f64)> {
    events(report)
        .into_iter()
        .filter(|(k, _, _)| k == kind)
        .map(|(_, s, e)| (s, e))
        .collect()
}
