//! RTSP, both ways, against real peers: pulled from a real RTSP server (Debian's
//! `rtsp-server-perl`, fed by FFmpeg publishing to it), and, in listen mode, pushed to avmon by
//! FFmpeg over TCP and over UDP. Each run must decode the stream and find its black at its place.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// FFmpeg sending `file` in real time to the RTSP URL `to` over `transport` (the audio
/// re-encoded: RTSP wants AAC's global header, which a TS does not carry); `looped`: for ever.
fn ffmpeg_rtsp(file: &Path, to: &str, transport: &str, looped: bool) -> Command {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-loglevel", "error", "-re"]);
    if looped {
        cmd.args(["-stream_loop", "-1"]);
    }
    cmd.arg("-i")
        .arg(file)
        .args([
            "-c:v",
            "copy",
            "-c:a",
            "aac",
            "-f",
            "rtsp",
            "-rtsp_transport",
            transport,
        ])
        .arg(to)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// [`ffmpeg_rtsp`] in a loop, killed when dropped.
fn publish(file: &Path, to: &str, transport: &str) -> Killed {
    Killed(
        ffmpeg_rtsp(file, to, transport, true)
            .spawn()
            .expect("ffmpeg runs"),
    )
}

/// `avmon check URL --duration 12 -o KEY=VALUE...`: its JSON report.
fn check_live(url: &str, options: &[&str]) -> serde_json::Value {
    let mut cmd = avmon();
    cmd.args(["check", url, "--duration", "12", "--format", "json"]);
    for o in options {
        cmd.args(["-o", o]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// 12 s of a stream whose black runs 4 s: decoded, and the black found once, 4 s long.
fn assert_seen(report: &serde_json::Value, what: &str) {
    let frames = report["summary"]["video"]["frames"].as_f64().unwrap_or(0.0);
    assert!(frames >= 250.0, "{what}: {frames} video frames in 12 s");
    let black: Vec<_> = events(report)
        .into_iter()
        .filter(|e| e.0 == "video.black")
        .collect();
    assert_eq!(black.len(), 1, "{what}: {:?}", events(report));
    let (_, start, end) = black[0];
    assert!(
        start < 12.0 && end - start > 3.0,
        "{what}: black {start}..{end}"
    );
}

#[test]
fn pulled_from_an_rtsp_server_over_udp() {
    let dir = tempfile::tempdir().unwrap();
    // Black every 10 s, 4 s long: wherever the 12 s window starts, one whole black is in it.
    let file = synth(dir.path(), "cam.ts", 20.0, &["black@2-6", "black@12-16"]);
    let (clients, sources) = (free_tcp_port(), free_tcp_port());
    let rtp = free_udp_port() & !1;
    let _server = Killed(
        Command::new("rtsp-server-perl")
            .args(["--clientport", &clients.to_string()])
            .args(["--serverport", &sources.to_string()])
            .args(["--client_listen_address", "127.0.0.1"])
            .args(["--source_listen_address", "127.0.0.1"])
            .args(["--rtp_start_port", &rtp.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rtsp-server-perl runs (./dev installs it)"),
    );
    wait_listening("tcp", sources);
    wait_listening("tcp", clients);
    // Published over UDP: this server relays what comes to it over TCP to no one.
    let _publisher = publish(&file, &format!("rtsp://127.0.0.1:{sources}/cam"), "udp");
    let url = format!("rtsp://127.0.0.1:{clients}/cam");
    // The server has the stream once the publisher's ANNOUNCE is through: until then, 404.
    wait_for("the stream published", Duration::from_secs(20), || {
        let o = avmon()
            .args(["check", &url, "--duration", "1", "-o", "rtsp_transport=udp"])
            .output()
            .ok()?;
        o.status.success().then_some(())
    });
    assert_seen(
        &check_live(&url, &["rtsp_transport=udp"]),
        "pulled over UDP",
    );
}

#[test]
fn listening_for_a_stream_pushed_over_tcp_and_over_udp() {
    let dir = tempfile::tempdir().unwrap();
    let file = synth(dir.path(), "cam.ts", 20.0, &["black@2-6", "black@12-16"]);
    for transport in ["tcp", "udp"] {
        let port = free_tcp_port();
        let url = format!("rtsp://127.0.0.1:{port}/cam");
        let mut check = avmon();
        check
            .args(["check", &url, "--duration", "12", "--format", "json"])
            .args(["-o", "rtsp_flags=listen"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = check.spawn().unwrap();
        wait_listening("tcp", port);
        let _pusher = publish(&file, &url, transport);
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{transport}: {}", stderr_of(&out));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_seen(&report, &format!("pushed over {transport}"));
    }
}

/// The service in listen mode: an encoder pushes over TCP and goes away; the stream is
/// `source.down`, listens again, and takes the next push, over UDP.
#[test]
fn the_service_listens_again_after_a_push_ends() {
    let dir = tempfile::tempdir().unwrap();
    let file = synth(dir.path(), "cam.ts", 6.0, &[]);
    let port = free_tcp_port();
    let url = format!("rtsp://127.0.0.1:{port}/cam");
    let (_service, http, base) = start_service(
        dir.path(),
        &format!(
            "[[streams]]\nid = \"cam\"\nurl = \"{url}\"\noptions = {{ rtsp_flags = \"listen\" }}\n"
        ),
    );
    let frames = |http: &reqwest::blocking::Client| -> (u64, u64, String) {
        let s: serde_json::Value = http
            .get(format!("{base}/api/streams/cam"))
            .send()
            .and_then(|r| r.json())
            .unwrap_or_default();
        (
            s["frames_video"].as_u64().unwrap_or(0),
            s["reconnects"].as_u64().unwrap_or(0),
            s["status"].as_str().unwrap_or("").to_string(),
        )
    };
    let push = |transport: &str| {
        wait_listening("tcp", port);
        let status = ffmpeg_rtsp(&file, &url, transport, false).status().unwrap();
        assert!(status.success(), "the {transport} push went through");
    };
    push("tcp");
    let (first, _, _) = frames(&http);
    assert!(first >= 120, "the first push decoded: {first} frames");
    wait_for(
        "the stream down, listening again",
        Duration::from_secs(20),
        || {
            let (_, reconnects, status) = frames(&http);
            (reconnects >= 1 || status == "down").then_some(())
        },
    );
    push("udp");
    let (second, _, _) = frames(&http);
    assert!(
        second >= first + 120,
        "the second push decoded too: {first} then {second} frames"
    );
}
