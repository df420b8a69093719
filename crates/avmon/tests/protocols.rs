//! Live protocols through FFmpeg's own protocol layer: the real ffmpeg CLI pushes a synthetic
//! stream over SRT and RTMP, and `avmon check` receives it as the listener.

mod common;

use std::process::{Command, Stdio};

use common::*;

/// Start `avmon check` listening on `url`, then push `file` to `push_url` as `format` in real
/// time; return the report.
fn receive(
    url: &str,
    options: &[&str],
    file: &std::path::Path,
    format: &str,
    push_url: &str,
) -> serde_json::Value {
    let mut check = avmon();
    check.args([
        "check",
        "--format",
        "json",
        url,
        "--duration",
        "6",
        "--timeout",
        "15",
    ]);
    for o in options {
        check.args(["-o", o]);
    }
    let check = check
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The listener is up before the push starts: SRT listens on UDP, RTMP on TCP.
    let port: u16 = url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split(['/', '?']).next()?.parse().ok())
        .expect("a port in the URL");
    wait_listening(if url.starts_with("srt") { "udp" } else { "tcp" }, port);
    let _push = Killed(
        Command::new("ffmpeg")
            .args([
                "-nostdin",
                "-v",
                "error",
                "-re",
                "-i",
                file.to_str().unwrap(),
                "-c",
                "copy",
            ])
            // MPEG-TS with a PCR on every picture: the muxer's default leaves 80 ms between
            // PCRs, a TR 101 290 2.3a error that avmon reports.
            .args(match format {
                "rtsp" => &["-rtsp_transport", "tcp"][..],
                "mpegts" => &["-pcr_period", "20"][..],
                _ => &[][..],
            })
            .args(["-f", format, push_url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the ffmpeg CLI (installed by ./dev)"),
    );
    let o = check.wait_with_output().unwrap();
    assert!(o.status.success(), "{url}: {}", stderr_of(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn assert_black(url: &str, r: &serde_json::Value) {
    let ev = events(r);
    assert_eq!(ev.len(), 1, "{url}: {ev:?}");
    assert_eq!(ev[0].0, "video.black", "{url}");
    assert_near("black start", ev[0].1, 2.0, 0.5);
    assert_near("black end", ev[0].2, 4.5, 0.5);
    assert_eq!(r["summary"]["video"]["codec"], "h264", "{url}");
    assert_eq!(r["summary"]["audio"]["codec"], "aac", "{url}");
}

#[test]
fn srt_and_rtmp() {
    let dir = tempfile::tempdir().unwrap();
    let file = synth(dir.path(), "push.ts", 9.0, &["black@2-4.5"]);

    let p = free_tcp_port();
    let url = format!("srt://127.0.0.1:{p}?mode=listener");
    let r = receive(
        &url,
        &[],
        &file,
        "mpegts",
        &format!("srt://127.0.0.1:{p}?mode=caller"),
    );
    assert_black(&url, &r);

    let p = free_tcp_port();
    let url = format!("rtmp://127.0.0.1:{p}/live/test");
    let r = receive(&url, &["listen=1"], &file, "flv", &url);
    assert_black(&url, &r);
}
