//! Helpers shared by the integration tests: run the real `avmon` binary.

#![allow(dead_code)]

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn avmon() -> Command {
    Command::new(env!("CARGO_BIN_EXE_avmon"))
}

/// Generate a synthetic TS file with `avmon synth`.
pub fn synth(dir: &Path, name: &str, duration: f64, defects: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let mut cmd = avmon();
    cmd.args(["synth", out.to_str().unwrap()])
        .args(["--duration", &duration.to_string()])
        .args(["--width", "640", "--height", "360"]);
    for d in defects {
        cmd.args(["--defect", d]);
    }
    let o = cmd.output().expect("run avmon synth");
    assert!(
        o.status.success(),
        "synth failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// `avmon check --format json`, asserting it completed.
/// The events of `kind` in a `check` report, as its JSON objects.
pub fn of_kind<'a>(r: &'a Value, kind: &str) -> Vec<&'a Value> {
    r["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .collect()
}

/// `avmon check --format json INPUT` (a file or a URL), with `--detectors` when given.
pub fn check_with(input: impl AsRef<std::ffi::OsStr>, detectors: Option<&Path>) -> Value {
    let mut cmd = avmon();
    cmd.args(["check", "--format", "json"]);
    if let Some(d) = detectors {
        cmd.arg("--detectors").arg(d);
    }
    let o = cmd.arg(input).output().expect("run avmon check");
    assert!(o.status.success(), "check failed: {}", stderr_of(&o));
    serde_json::from_slice(&o.stdout).expect("check prints JSON")
}

pub fn check_json(input: &Path) -> Value {
    let o = avmon()
        .args(["check", "--format", "json", input.to_str().unwrap()])
        .output()
        .expect("run avmon check");
    assert!(
        o.status.success(),
        "check failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("check prints JSON")
}

/// The events of a report as (kind, start, end).
pub fn events(report: &Value) -> Vec<(String, f64, f64)> {
    report["events"]
        .as_array()
        .expect("events is an array")
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["start_s"].as_f64().unwrap(),
                e["end_s"].as_f64().unwrap(),
            )
        })
        .collect()
}

pub fn assert_near(what: &str, got: f64, want: f64, tol: f64) {
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got}, want {want} ± {tol}"
    );
}

/// `avmon` failed as it must for bad input: exit 1, one clear line mentioning `must_mention`,
/// no panic and no report.
pub fn assert_clean_failure(o: &Output, must_mention: &str) {
    let err = stderr_of(o);
    assert!(!o.status.success(), "must fail; stderr: {err}");
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "no panic: {err}");
    assert!(err.starts_with("avmon: error:"), "one clear line: {err}");
    assert!(
        err.contains(must_mention),
        "should mention {must_mention:?}: {err}"
    );
    assert!(o.stdout.is_empty(), "no report on failure");
}

pub fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A TCP port free on loopback a moment ago.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed (and reaped) when the test ends, pass or fail.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `input` remuxed (stream copy) with other PIDs, programme number and PMT PID, and a PCR on
/// every picture.
pub fn with_new_pids(input: &std::path::Path, out: &std::path::Path) {
    let o = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y", "-i"])
        .arg(input)
        .args(["-c", "copy", "-f", "mpegts", "-pcr_period", "20"])
        .args([
            "-mpegts_start_pid",
            "0x300",
            "-mpegts_pmt_start_pid",
            "0x1200",
        ])
        .args(["-mpegts_service_id", "7"])
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
}

/// A UDP port free on loopback just now.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Poll `f` every 200 ms until it gives a value; panics after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Wait until a socket on this host listens on `port`: for `udp` one bound to it, for `tcp`
/// one in LISTEN (the kernel's tables in /proc/net). A receiver is ready before anyone sends.
pub fn wait_listening(proto: &str, port: u16) {
    let suffix = format!(":{port:04X}");
    let bound = || {
        ["", "6"].iter().any(|v| {
            std::fs::read_to_string(format!("/proc/net/{proto}{v}")).is_ok_and(|t| {
                t.lines().skip(1).any(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.len() > 3 && f[1].ends_with(&suffix) && (proto == "udp" || f[3] == "0A")
                })
            })
        })
    };
    let what = format!("a {proto} listener on port {port}");
    wait_for(&what, Duration::from_secs(20), || bound().then_some(()));
}

/// `avmon run` on a config of `streams` (its `[[streams]]` and `[[notifiers]]`), with its API on
/// a free port and its store in `dir`, once the API answers; with a client and the API's URL.
pub fn start_service(
    dir: &std::path::Path,
    streams: &str,
) -> (Killed, reqwest::blocking::Client, String) {
    let db = format!("sqlite://{}", dir.join("avmon.db").display());
    start_service_on(dir, &db, streams)
}

/// [`start_service`] with its results in the store at `store_url`.
pub fn start_service_on(
    dir: &std::path::Path,
    store_url: &str,
    streams: &str,
) -> (Killed, reqwest::blocking::Client, String) {
    let api = free_tcp_port();
    let cfg = dir.join("avmon.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:{api}\"\n[store]\nurl = \"{store_url}\"\n\
             metrics_interval_s = 2\n{streams}"
        ),
    )
    .unwrap();
    let service = Killed(
        avmon()
            .args(["run", "--config", cfg.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http = reqwest::blocking::Client::new();
    let base = format!("http://127.0.0.1:{api}");
    wait_api(&http, &base);
    (service, http, base)
}

/// `avmon synth` sending a 320×180 live stream to `udp://127.0.0.1:{udp}` in real time for
/// `duration` seconds with `defects`; killed when dropped.
pub fn synth_live(udp: u16, duration: u32, defects: &[&str]) -> Killed {
    let mut cmd = avmon();
    cmd.args(["synth", &format!("udp://127.0.0.1:{udp}")])
        .args(["--duration", &duration.to_string()])
        .args(["--width", "320", "--height", "180", "--preset", "ultrafast"]);
    for d in defects {
        cmd.args(["--defect", d]);
    }
    Killed(cmd.stderr(Stdio::null()).spawn().unwrap())
}

/// What a test webhook receiver got: each JSON body, in arrival order.
pub type Received = std::sync::Arc<std::sync::Mutex<Vec<Value>>>;

/// A webhook receiver on 127.0.0.1:0; returns its URL and what it received.
pub fn receiver(rt: &tokio::runtime::Runtime) -> (String, Received) {
    use axum::{extract::State, routing::post, Json, Router};
    let got: Received = Default::default();
    let app = Router::new()
        .route(
            "/hook",
            post(
                |State(got): State<Received>, Json(body): Json<Value>| async move {
                    got.lock().unwrap().push(body);
                    "ok"
                },
            ),
        )
        .with_state(got.clone());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

/// How many times each idempotency key came, of the webhook bodies `got`.
pub fn keys_received(got: &Received) -> std::collections::BTreeMap<String, usize> {
    let mut keys = std::collections::BTreeMap::new();
    for b in got.lock().unwrap().iter() {
        *keys
            .entry(b["idempotency_key"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    keys
}

/// Wait until the API at `base` answers `/healthz`.
pub fn wait_api(http: &reqwest::blocking::Client, base: &str) {
    wait_for("the API", Duration::from_secs(20), || {
        http.get(format!("{base}/healthz"))
            .send()
            .ok()
            .filter(|r| r.status().is_success())
    });
}

/// `avmon run` on a config file of `text` (written as `avmon.toml` in `dir`), which must refuse
/// it: returns its stderr.
pub fn refused_run(dir: &Path, text: &str) -> String {
    let cfg = dir.join("avmon.toml");
    std::fs::write(&cfg, text).unwrap();
    let o = avmon()
        .args(["run", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success(), "the config was accepted:\n{text}");
    stderr_of(&o)
}
