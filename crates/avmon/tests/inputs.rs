//! `avmon check` over real network inputs: MPEG-TS over HTTP, HLS served over HTTP, and a live
//! UDP stream analysed for `--duration`.

mod common;

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use axum::{extract::Path as UrlPath, extract::State, http::StatusCode, routing::get, Router};
use common::*;

/// Serve the files of `dir` on 127.0.0.1:0; returns the base URL. The runtime must outlive use.
fn serve_dir(rt: &tokio::runtime::Runtime, dir: PathBuf) -> String {
    let app = Router::new()
        .route(
            "/{file}",
            get(
                |State(dir): State<PathBuf>, UrlPath(file): UrlPath<String>| async move {
                    if file.contains('/') || file.contains("..") {
                        return Err(StatusCode::NOT_FOUND);
                    }
                    std::fs::read(dir.join(file)).map_err(|_| StatusCode::NOT_FOUND)
                },
            ),
        )
        .with_state(dir);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, app).await });
    base
}

fn check_url(url: &str, extra: &[&str]) -> serde_json::Value {
    let o = avmon()
        .args(["check", "--format", "json", url])
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "check {url}: {}", stderr_of(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn ts_over_http_and_hls() {
    let dir = tempfile::tempdir().unwrap();
    let ts = synth(dir.path(), "x.ts", 10.0, &["black@2-5"]);
    // Segment the same stream as HLS with FFmpeg's own muxer.
    let o = Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-v",
            "error",
            "-i",
            ts.to_str().unwrap(),
            "-c",
            "copy",
        ])
        .args(["-f", "hls", "-hls_time", "2", "-hls_list_size", "0"])
        .arg(dir.path().join("index.m3u8"))
        .output()
        .expect("the ffmpeg CLI (installed by ./dev)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let base = serve_dir(&rt, dir.path().to_path_buf());
    for url in [format!("{base}/x.ts"), format!("{base}/index.m3u8")] {
        let r = check_url(&url, &[]);
        let ev = events(&r);
        assert_eq!(ev.len(), 1, "{url}: {ev:?}");
        assert_eq!(ev[0].0, "video.black", "{url}");
        assert_near("black start", ev[0].1, 2.0, 0.5);
        assert_near("black end", ev[0].2, 5.0, 0.5);
        assert_eq!(r["summary"]["video"]["frames"].as_u64(), Some(250), "{url}");
        // Both reach the decoder through avmon's own reading (for HLS: the segments avmon-hls
        // fetched), so the transport analyser saw every byte: an intact stream, zero errors.
        let t = r["summary"]["transport"]
            .as_object()
            .expect("summary.transport");
        assert!(t.values().all(|v| v.as_u64() == Some(0)), "{url}: {t:?}");
    }
    // The HLS input was monitored by avmon-hls too: every segment fetched, none failed.
    let r = check_url(&format!("{base}/index.m3u8"), &["--variant", "index:0"]);
    let hls = &r["summary"]["hls"];
    assert_eq!(hls["segments"].as_u64(), Some(5), "{hls}");
    assert_eq!(hls["segment_errors"].as_u64(), Some(0), "{hls}");
    let bitrate = hls["variants"][0]["bitrate_bps"].as_f64().unwrap();
    let bytes = std::fs::metadata(&ts).unwrap().len() as f64;
    assert_near(
        "HLS bitrate vs the file's",
        bitrate,
        bytes * 8.0 / 10.0,
        bytes * 8.0 / 10.0 * 0.1,
    );

    // A segment the origin no longer has: an hls.segment_error event over its media.
    let playlist = std::fs::read_to_string(dir.path().join("index.m3u8")).unwrap();
    let extinf: Vec<f64> = playlist
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .map(|l| l.trim_end_matches(',').parse().unwrap())
        .collect();
    let (start, end) = (extinf[0] + extinf[1], extinf[0] + extinf[1] + extinf[2]);
    std::fs::write(
        dir.path().join("broken.m3u8"),
        playlist.replace("index2.ts", "gone.ts"),
    )
    .unwrap();
    let r = check_url(&format!("{base}/broken.m3u8"), &[]);
    let ev: Vec<_> = events(&r)
        .into_iter()
        .filter(|e| e.0.starts_with("hls."))
        .collect();
    assert_eq!(ev.len(), 1, "{}", r["events"]);
    assert_eq!(ev[0].0, "hls.segment_error");
    assert_near("missing segment's start", ev[0].1, start, 0.001);
    assert_near("missing segment's end", ev[0].2, end, 0.001);
    assert_eq!(r["summary"]["hls"]["segment_errors"].as_u64(), Some(1));
    let o = avmon()
        .args(["check", &format!("{base}/x.ts"), "--variant", "index:0"])
        .output()
        .unwrap();
    assert_clean_failure(&o, "--variant applies only to HLS");
    // A playlist avmon-hls refuses is a clear error before anything is decoded.
    std::fs::write(dir.path().join("login.m3u8"), "<html>sign in</html>").unwrap();
    let o = avmon()
        .args(["check", &format!("{base}/login.m3u8")])
        .output()
        .unwrap();
    assert_clean_failure(&o, "does not start with #EXTM3U");
    // A 404 is a clear error.
    let o = avmon()
        .args(["check", &format!("{base}/missing.ts")])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr_of(&o).contains("404") || stderr_of(&o).contains("Not Found"),
        "{}",
        stderr_of(&o)
    );
}

#[test]
fn live_udp_for_a_duration() {
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("udp://127.0.0.1:{port}");
    let check = avmon()
        .args(["check", "--format", "json", &url, "--duration", "7"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_listening("udp", port);
    let mut synth = avmon()
        .args([
            "synth",
            &url,
            "--duration",
            "10",
            "--width",
            "320",
            "--height",
            "180",
        ])
        .args(["--preset", "ultrafast", "--defect", "black@2-5"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let o = check.wait_with_output().unwrap();
    let _ = synth.kill();
    let _ = synth.wait();
    assert!(o.status.success(), "{}", stderr_of(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_near(
        "analysed duration",
        r["duration_s"].as_f64().unwrap(),
        7.0,
        0.2,
    );
    // The black, and nothing else: a healthy stream raises no transport alarm, however late a
    // loaded host reads it.
    let ev = events(&r);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].0, "video.black");
    assert_near("black start", ev[0].1, 2.0, 0.5);
    assert_near("black end", ev[0].2, 5.0, 0.5);
}
