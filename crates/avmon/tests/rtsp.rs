//! RTSP, both ways, against real peers: pulled from a real RTSP server (Debian's
//! `rtsp-server-perl`, fed by FFmpeg publishing to it), and, in listen mode, pushed to avmon by
//! FFmpeg over TCP and over UDP. Each run must decode the stream and find its black at its place.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// FFmpeg publishing `file` in a loop, in real time, to the RTSP URL `to` over `transport` (the
/// audio re-encoded: RTSP wants AAC's global header, which a TS does not carry).
fn publish(file: &Path, to: &str, transport: &str) -> Killed {
    Killed(
        Command::new("ffmpeg")
            .args(["-loglevel", "error", "-re", "-stream_loop", "-1", "-i"])
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
            .stderr(Stdio::null())
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
