//! RFC 4445's Media Delivery Index on a live UDP input: a constant-rate transport stream sent
//! by this test with its datagrams evenly paced, with pauses (the datagrams held back, then sent
//! in a burst: arrival jitter), and with datagrams dropped (media loss). `avmon check` measures
//! the delay factor and the loss rate from the kernel's receive time of each datagram.

mod common;

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const DATAGRAM: usize = 1316;
const SECONDS: f64 = 10.0;

/// A constant-rate TS (FFmpeg's `muxrate`: 1.5 Mbit/s, null packets fill what the content
/// leaves), long enough for the check.
fn cbr_ts(dir: &Path) -> Vec<u8> {
    let out = dir.join("cbr.ts");
    let st = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=s=320x180:r=25"])
        .args(["-f", "lavfi", "-i", "sine=f=440:r=48000"])
        .args(["-t", "14", "-c:v", "libx264", "-preset", "ultrafast"])
        .args(["-b:v", "400k", "-maxrate", "400k", "-bufsize", "200k"])
        .args(["-c:a", "aac", "-b:a", "96k"])
        .args(["-f", "mpegts", "-muxrate", "1500k"])
        .arg(&out)
        .status()
        .expect("ffmpeg runs");
    assert!(st.success(), "ffmpeg made the CBR stream");
    std::fs::read(out).unwrap()
}

/// How the test sends: every datagram evenly spaced, except that every 1.3 s the datagrams of
/// `pause_s` are held back and sent at once at its end (so that pauses fall on every phase of
/// avmon's one-second intervals), and every
/// `drop_every`th datagram is not sent. Returns the TS packets of media (not null packets)
/// in the datagrams dropped.
fn send(ts: &[u8], port: u16, pause_s: f64, drop_every: Option<usize>) -> u64 {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let datagrams: Vec<&[u8]> = ts.chunks(DATAGRAM).collect();
    let rate = ts.len() as f64 / 14.0; // bytes per second, as muxed
    let every = DATAGRAM as f64 / rate;
    let start = Instant::now() + Duration::from_millis(200);
    let mut lost_media = 0;
    for (i, d) in datagrams.iter().enumerate() {
        let t = i as f64 * every;
        if t > SECONDS + 3.0 {
            break;
        }
        let into = t % 1.3;
        let due = if into < pause_s {
            t - into + pause_s
        } else {
            t
        };
        let at = start + Duration::from_secs_f64(due);
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
        if drop_every.is_some_and(|n| i % n == n / 2) {
            lost_media += d
                .chunks(188)
                .filter(|p| (u16::from(p[1] & 0x1f) << 8 | u16::from(p[2])) != 0x1fff)
                .count() as u64;
            continue;
        }
        let _ = sock.send_to(d, ("127.0.0.1", port));
    }
    lost_media
}

/// `avmon check` of what `send` sends, with the delay factor judged over 150 ms.
fn check(dir: &Path, ts: &[u8], pause_s: f64, drop_every: Option<usize>) -> (Value, u64) {
    let limits = dir.join("mdi.toml");
    std::fs::write(&limits, "[mdi]\ndf_max_ms = 150\n").unwrap();
    let port = free_udp_port();
    let check = avmon()
        .args([
            "check",
            "--format",
            "json",
            "--duration",
            &SECONDS.to_string(),
        ])
        .arg("--detectors")
        .arg(&limits)
        .arg(format!("udp://127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let check = Killed(check);
    wait_listening("udp", port);
    let lost = send(ts, port, pause_s, drop_every);
    let mut child = check;
    let o = wait_output(&mut child.0);
    assert!(o.status.success(), "{}", stderr_of(&o));
    (serde_json::from_slice(&o.stdout).unwrap(), lost)
}

fn wait_output(child: &mut std::process::Child) -> std::process::Output {
    let until = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < until, "check did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .unwrap();
    std::process::Output {
        status: child.wait().unwrap(),
        stdout,
        stderr,
    }
}

fn network(r: &Value) -> (f64, f64, Vec<(String, f64, f64)>) {
    let n = &r["summary"]["network"];
    let ev = events(r)
        .into_iter()
        .filter(|e| e.0.starts_with("network."))
        .collect();
    (
        n["mdi_df_max_ms"]
            .as_f64()
            .expect("the delay factor is reported"),
        n["mdi_mlr_max"].as_f64().unwrap(),
        ev,
    )
}

#[test]
fn the_delay_factor_and_the_loss_rate_are_measured_per_datagram() {
    let dir = tempfile::tempdir().unwrap();
    let ts = cbr_ts(dir.path());
    let every_ms = DATAGRAM as f64 / (ts.len() as f64 / 14.0) * 1000.0;

    // Evenly paced: a datagram's time, give or take the sender's sleeps on a busy host.
    let (r, _) = check(dir.path(), &ts, 0.0, None);
    let (df, mlr, ev) = network(&r);
    eprintln!("evenly paced: DF {df} ms, MLR {mlr}");
    assert!(
        df >= every_ms * 0.9 && df < 40.0,
        "evenly paced: DF {df} ms (a datagram every {every_ms:.1} ms)"
    );
    assert_eq!(mlr, 0.0);
    assert!(ev.is_empty(), "{ev:?}");

    // Held back 300 ms every 1.3 s, then sent at once: the buffer it takes is 300 ms.
    let (r, _) = check(dir.path(), &ts, 0.3, None);
    let (df, _, ev) = network(&r);
    eprintln!("300 ms pauses: DF {df} ms");
    assert_near("DF with 300 ms pauses", df, 300.0, 60.0);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].0, "network.delay_factor");
    assert!(
        ev[0].1 < 4.0 && ev[0].2 > SECONDS - 1.5,
        "raised after 3 s over the limit, open to the end: {ev:?}"
    );

    // One datagram in 40 dropped: the media packets in them, per second.
    let (r, lost) = check(dir.path(), &ts, 0.0, Some(40));
    let (_, mlr, ev) = network(&r);
    let per_s = lost as f64 / (SECONDS + 3.0);
    eprintln!("1 datagram in 40 dropped: MLR {mlr} (sent {per_s:.1} lost media packets/s)");
    assert!(per_s > 5.0, "the drops carried media: {lost}");
    assert_near("media loss rate", mlr, per_s, per_s * 0.6);
    assert!(ev.iter().any(|e| e.0 == "network.media_loss"), "{ev:?}");
}
