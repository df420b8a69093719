//! Service mode end to end, in real time: `avmon synth` streams UDP on loopback into `avmon run`,
//! a local webhook receiver gets the notifications, and the HTTP API is queried while it runs.

mod common;

use std::net::UdpSocket;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn find<'a>(got: &'a [Value], kind: &str, state: &str) -> Option<&'a Value> {
    got.iter()
        .find(|v| v["kind"] == kind && v["state"] == state)
}

#[test]
fn udp_stream_into_service_mode_notifies_freeze_and_source_down() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (hook, got) = receiver(&rt);
    let udp = free_udp_port();
    let dir = tempfile::tempdir().unwrap();
    let (service, http, base) = start_service(
        dir.path(),
        &format!(
            r#"
[[streams]]
id = "live"
url = "udp://127.0.0.1:{udp}"
io_timeout_s = 2
[[notifiers]]
kind = "webhook"
url = "{hook}"
"#
        ),
    );

    // 26 s of live stream: a freeze at 5–10 s, then 6 s with no packets at all.
    let mut synth = avmon()
        .args([
            "synth",
            &format!("udp://127.0.0.1:{udp}"),
            "--duration",
            "26",
        ])
        .args(["--width", "320", "--height", "180", "--preset", "ultrafast"])
        .args(["--defect", "freeze@5-10", "--defect", "dropout@15-21"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // While it runs: the stream is listed with its status and media info.
    let streams: Value = wait_for("the stream to be ok", Duration::from_secs(15), || {
        let v: Value = http
            .get(format!("{base}/api/streams"))
            .send()
            .ok()?
            .json()
            .ok()?;
        (v[0]["status"] == "ok").then_some(v)
    });
    assert_eq!(streams[0]["id"], "live");
    assert_eq!(streams[0]["info"]["video"]["width"], 320);

    // Streams can be added and removed while running.
    let r = http
        .post(format!("{base}/api/streams"))
        .json(&json!({"id": "extra", "url": format!("udp://127.0.0.1:{}", free_udp_port())}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let r = http
        .post(format!("{base}/api/streams"))
        .json(&json!({"id": "extra", "url": "udp://127.0.0.1:1"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 409, "duplicate id");
    let r = http
        .post(format!("{base}/api/streams"))
        .json(&json!({"id": "bad one", "url": "foo://x"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let ids = |v: Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    let listed = ids(http
        .get(format!("{base}/api/streams"))
        .send()
        .unwrap()
        .json()
        .unwrap());
    assert_eq!(listed, ["extra", "live"]);
    let r = http
        .delete(format!("{base}/api/streams/extra"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let listed = ids(http
        .get(format!("{base}/api/streams"))
        .send()
        .unwrap()
        .json()
        .unwrap());
    assert_eq!(listed, ["live"]);

    assert!(synth.wait().unwrap().success());

    // The webhook got the freeze and the outage, each raised once and cleared once.
    let got = wait_for("all four notifications", Duration::from_secs(20), || {
        let g = got.lock().unwrap().clone();
        let all = ["video.freeze", "source.down"]
            .iter()
            .all(|k| find(&g, k, "raised").is_some() && find(&g, k, "cleared").is_some());
        all.then_some(g)
    });
    // Once the generator ends the source goes quiet for good, so a second source.down may
    // follow; the outage in the middle of the stream is the one under test.
    let mid_stream = |v: &&Value| v["kind"] == "video.freeze" || v["start_s"].as_f64() < Some(24.0);
    for kind in ["video.freeze", "source.down"] {
        for state in ["raised", "cleared"] {
            let n = got
                .iter()
                .filter(mid_stream)
                .filter(|v| v["kind"] == kind && v["state"] == state)
                .count();
            assert_eq!(n, 1, "{kind} {state} exactly once: {got:#?}");
        }
    }
    let freeze = find(&got, "video.freeze", "cleared").unwrap();
    assert_eq!(freeze["stream_id"], "live");
    assert_near(
        "freeze start (media time)",
        freeze["start_s"].as_f64().unwrap(),
        5.0,
        0.6,
    );
    assert_near(
        "freeze end (media time)",
        freeze["end_s"].as_f64().unwrap(),
        10.0,
        0.6,
    );
    assert!(freeze["raised_at"].is_string() && freeze["cleared_at"].is_string());
    let raised = find(&got, "video.freeze", "raised").unwrap();
    assert!(raised["end_s"].is_null() && raised["cleared_at"].is_null());
    let down = find(&got, "source.down", "cleared").unwrap();
    assert_near("outage start", down["start_s"].as_f64().unwrap(), 15.0, 0.6);
    assert_near("outage end", down["end_s"].as_f64().unwrap(), 21.0, 0.6);
    // No other kinds: a dropout of the whole source is not also video or audio loss. The
    // transport analyser does see it (TR 101 290: tables and PCRs stop arriving, the PCR jumps
    // when the source comes back), so its findings may come, at the outage only: a healthy
    // stream raises none, however late a loaded host reads it.
    for v in got
        .iter()
        .filter(|v| v["kind"].as_str().unwrap().starts_with("transport."))
    {
        let t = v["start_s"].as_f64().unwrap();
        assert!(
            (14.0..22.5).contains(&t),
            "transport finding away from the outage: {v:#}"
        );
    }
    let kinds: std::collections::BTreeSet<&str> = got
        .iter()
        .map(|v| v["kind"].as_str().unwrap())
        .filter(|k| !k.starts_with("transport."))
        .collect();
    assert_eq!(
        kinds,
        ["source.down", "video.freeze"].into_iter().collect(),
        "{got:#?}"
    );

    // The API and the store agree.
    let alerts: Value = http
        .get(format!("{base}/api/alerts?stream=live"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let stored: Vec<&str> = alerts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert!(
        stored.contains(&"video.freeze") && stored.contains(&"source.down"),
        "{alerts}"
    );
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("avmon_video_frames_total{stream=\"live\"}"),
        "{metrics}"
    );
    let delivered: u64 = metrics
        .lines()
        .find(|l| l.starts_with("avmon_notifications_total") && l.contains("delivered"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0);
    assert!(delivered >= 4, "{metrics}");
    drop(service);
}

/// `ffmpeg` sending `file` in real time (stream copy) as MPEG-TS to `url`, with a PCR on every
/// picture (its muxer's default leaves 80 ms between PCRs, a TR 101 290 2.3a error).
fn ffmpeg_send(file: &std::path::Path, url: &str) -> Killed {
    Killed(
        std::process::Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-re", "-i"])
            .arg(file)
            .args(["-c", "copy", "-f", "mpegts", "-pcr_period", "20", url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the ffmpeg CLI (installed by ./dev)"),
    )
}

/// Relays datagrams from `from` to `to`, dropping every video packet (PID 0x100) of the
/// `count` datagrams that follow the first one received `after` seconds or more after the
/// start: one run of lost packets on the wire, however the datagrams are paced. Stops after a
/// second of silence; returns how many packets it dropped.
fn lossy_relay(
    from: UdpSocket,
    to: String,
    after: f64,
    count: usize,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let out = UdpSocket::bind("127.0.0.1:0").unwrap();
        out.set_multicast_ttl_v4(0).unwrap();
        from.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 2048];
        let mut start = None;
        let (mut lost, mut lossy) = (0, 0);
        while let Ok(n) = from.recv(&mut buf) {
            let t0 = *start.get_or_insert_with(Instant::now);
            from.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            let lose = t0.elapsed().as_secs_f64() >= after && lossy < count;
            lossy += usize::from(lose);
            let mut kept = Vec::with_capacity(n);
            for p in buf[..n].chunks(188) {
                let pid = p
                    .get(1..3)
                    .map(|b| (u16::from(b[0] & 0x1F) << 8) | u16::from(b[1]));
                if lose && pid == Some(0x100) {
                    lost += 1;
                } else {
                    kept.extend_from_slice(p);
                }
            }
            if !kept.is_empty() {
                let _ = out.send_to(&kept, &to);
            }
        }
        lost
    })
}

#[test]
fn multicast_and_srt_into_service_mode_with_transport_alerts() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (hook, got) = receiver(&rt);
    let (mc_port, srt_port) = (free_udp_port(), free_udp_port());
    let dir = tempfile::tempdir().unwrap();
    // 10 s with black at 3–6 s; the multicast path loses a run of video packets at about 7 s.
    let file = synth(dir.path(), "in.ts", 10.0, &["black@3-6"]);
    let group = "239.255.77.1";
    let (_service, _, _) = start_service(
        dir.path(),
        &format!(
            r#"
[[streams]]
id = "mc"
url = "udp://@{group}:{mc_port}?localaddr=127.0.0.1"
io_timeout_s = 3
[[streams]]
id = "srt"
url = "srt://127.0.0.1:{srt_port}?mode=listener&latency=120000"
io_timeout_s = 3
[[notifiers]]
kind = "webhook"
url = "{hook}"
"#
        ),
    );
    // Both inputs are open before anything is sent (SRT listens on UDP too).
    wait_listening("udp", mc_port);
    wait_listening("udp", srt_port);
    let relay_in = UdpSocket::bind("127.0.0.1:0").unwrap();
    let relay_port = relay_in.local_addr().unwrap().port();
    let relay = lossy_relay(relay_in, format!("{group}:{mc_port}"), 7.0, 5);
    let _mc = ffmpeg_send(
        &file,
        &format!("udp://127.0.0.1:{relay_port}?pkt_size=1316"),
    );
    let _srt = ffmpeg_send(
        &file,
        &format!("srt://127.0.0.1:{srt_port}?mode=caller&latency=120000"),
    );
    let got = wait_for("black on both streams", Duration::from_secs(25), || {
        let g = got.lock().unwrap().clone();
        let done = ["mc", "srt"].iter().all(|id| {
            g.iter().any(|v| {
                v["stream_id"] == *id && v["kind"] == "video.black" && v["state"] == "cleared"
            })
        }) && find(&g, "transport.cc_error", "raised").is_some();
        done.then_some(g)
    });
    assert!(relay.join().unwrap() > 0, "the relay lost packets");
    for id in ["mc", "srt"] {
        let black = got
            .iter()
            .find(|v| v["stream_id"] == id && v["kind"] == "video.black" && v["state"] == "cleared")
            .unwrap();
        assert_near("black start", black["start_s"].as_f64().unwrap(), 3.0, 0.5);
        assert_near("black end", black["end_s"].as_f64().unwrap(), 6.0, 0.5);
    }
    // The lost packets: one continuity error, on the multicast stream, where they were lost.
    let cc: Vec<&Value> = got
        .iter()
        .filter(|v| v["kind"] == "transport.cc_error" && v["state"] == "raised")
        .collect();
    assert_eq!(cc.len(), 1, "{cc:#?}");
    assert_eq!(cc[0]["stream_id"], "mc");
    assert_near("cc error", cc[0]["start_s"].as_f64().unwrap(), 7.0, 1.0);
    // Nothing but the black (and the end of the stream) on the intact SRT stream.
    let srt_kinds: std::collections::BTreeSet<&str> = got
        .iter()
        .filter(|v| v["stream_id"] == "srt")
        .map(|v| v["kind"].as_str().unwrap())
        .filter(|k| *k != "source.down")
        .collect();
    assert_eq!(srt_kinds, ["video.black"].into_iter().collect(), "{got:#?}");
}

/// The HLS origin of avmon-hls's tests: nginx, and FFmpeg's HLS muxer writing into it.
#[path = "../../avmon-hls/tests/common/mod.rs"]
mod origin;

fn get_json(http: &reqwest::blocking::Client, url: &str) -> Option<Value> {
    http.get(url).send().ok()?.json().ok()
}

#[test]
fn hls_into_service_mode_recovers_from_a_404_a_stall_and_an_outage() {
    // nginx serving a live playlist FFmpeg writes in real time (1 s segments, 5 listed); its
    // segment 8 answers 404.
    let mut nginx = origin::Nginx::start("location = /seg00008.ts { return 404; }");
    let writer = origin::Writer::start(&nginx.root, "");
    let playlist = nginx.root.join("live.m3u8");
    wait_for("FFmpeg's first playlist", Duration::from_secs(10), || {
        playlist.exists().then_some(())
    });
    let dir = tempfile::tempdir().unwrap();
    let (_service, http, base) = start_service(
        dir.path(),
        &format!(
            r#"
[[streams]]
id = "hls"
url = "{}"
io_timeout_s = 2
[streams.hls]
stale_factor = 3
segment_timeout_s = 2
"#,
            nginx.url("live.m3u8"),
        ),
    );
    let stream = || get_json(&http, &format!("{base}/api/streams/hls")).unwrap_or_default();
    let alerts = |kind: &str| -> Vec<Value> {
        get_json(&http, &format!("{base}/api/alerts?stream=hls"))
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a["kind"] == kind)
            .collect()
    };
    let cleared = |a: &Value| a["state"] == "cleared" && a["cleared_at"].is_string();
    let frames = |s: &Value| s["frames_video"].as_u64().unwrap_or(0);

    // The decoded variant's pictures reach the detectors.
    let s = wait_for("decoded frames", Duration::from_secs(20), || {
        let s = stream();
        (s["status"] == "ok" && frames(&s) > 0).then_some(s)
    });
    assert_eq!(s["info"]["video"]["width"], 320, "{s:#}");
    assert_eq!(s["info"]["audio"]["sample_rate"], 48000, "{s:#}");

    // Segment 8 is missing: an hls.segment_error over its media, cleared by segment 9.
    let err = wait_for(
        "hls.segment_error raised and cleared",
        Duration::from_secs(20),
        || alerts("hls.segment_error").into_iter().find(cleared),
    );
    assert_eq!(err["details"]["status"], 404, "{err:#}");
    assert_eq!(err["details"]["sequence"], 8, "{err:#}");
    assert_eq!(err["details"]["variant"], "live.m3u8", "{err:#}");
    let span = err["end_s"].as_f64().unwrap() - err["start_s"].as_f64().unwrap();
    assert_near("the missing segment's media", span, 1.0, 0.05);

    // The packager stalls: the playlist goes stale, and the decoder, without segments, reports
    // the source down.
    let before = frames(&stream());
    writer.kill();
    wait_for(
        "hls.stale and the stream down",
        Duration::from_secs(15),
        || {
            let stale = alerts("hls.stale");
            (stale.iter().any(|a| a["state"] == "raised") && stream()["status"] == "down")
                .then_some(())
        },
    );
    // It comes back, appending to the same playlist: everything clears, frames flow again.
    let _writer = origin::Writer::start(&nginx.root, "+append_list");
    let recovered = |phase: &str, stale_alerts: usize, before: u64| {
        wait_for(phase, Duration::from_secs(25), || {
            let stale = alerts("hls.stale");
            let down = alerts("source.down");
            let s = stream();
            let done = stale.len() == stale_alerts
                && stale.iter().all(cleared)
                && !down.is_empty()
                && down.iter().all(cleared)
                && s["status"] == "ok"
                && frames(&s) > before;
            done.then_some(s)
        })
    };
    let s = recovered("recovery from the stall", 1, before);
    assert!(s["reconnects"].as_u64() >= Some(1), "{s:#}");

    // The origin goes away (connections refused) and comes back.
    let before = frames(&s);
    nginx.stop();
    wait_for("hls.stale again, and down", Duration::from_secs(15), || {
        let stale = alerts("hls.stale");
        (stale.len() == 2 && stream()["status"] == "down").then_some(())
    });
    nginx.restart();
    recovered("recovery from the outage", 2, before);
    let stale = alerts("hls.stale");
    assert!(
        stale.iter().any(|a| a["details"]["last_error"].is_string()),
        "the outage's reload errors are in the details: {stale:#?}"
    );

    // The stall and the outage raise nothing but hls.* and source.down (reconnections are no
    // loss or freeze); the missing segment's media may also show as damaged pictures there.
    let all = get_json(&http, &format!("{base}/api/alerts?stream=hls")).unwrap();
    let missing_at = err["start_s"].as_f64().unwrap();
    for a in all.as_array().unwrap() {
        let kind = a["kind"].as_str().unwrap();
        let at_missing = (a["start_s"].as_f64().unwrap() - missing_at).abs() < 0.5;
        assert!(
            kind.starts_with("hls.") || kind == "source.down" || at_missing,
            "{kind} away from the missing segment: {all:#}"
        );
    }

    // Nothing is left raised; per-variant delivery metrics are on /metrics.
    let active = get_json(&http, &format!("{base}/api/alerts?stream=hls&active=true")).unwrap();
    assert_eq!(active, json!([]), "{active:#}");
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let value = |name: &str| -> f64 {
        let prefix = format!("{name}{{stream=\"hls\",variant=\"0\",name=\"live.m3u8\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix:?} in {metrics}"))
    };
    assert!(value("avmon_hls_segments_total") >= 10.0, "{metrics}");
    assert_eq!(value("avmon_hls_segment_errors_total"), 1.0, "{metrics}");
    assert!(value("avmon_hls_reload_errors_total") >= 1.0, "{metrics}");
    let bitrate = value("avmon_hls_bitrate_bps");
    assert!((50e3..5e6).contains(&bitrate), "{metrics}");
    assert!(value("avmon_hls_download_seconds") < 1.0, "{metrics}");
    assert!(
        metrics.contains("avmon_video_frames_total{stream=\"hls\"}"),
        "{metrics}"
    );

    // The store has the variant's metrics per period, next to the decoder's.
    let store = avmon_store::open(&format!(
        "sqlite://{}",
        dir.path().join("avmon.db").display()
    ))
    .unwrap();
    let samples = store
        .metrics(&avmon_core::StreamId("hls".into()), None)
        .unwrap();
    let sum = |key: &str| -> f64 { samples.iter().filter_map(|m| m.values.get(key)).sum() };
    assert_eq!(sum("hls.0.segment_errors"), 1.0, "{samples:#?}");
    assert!(sum("hls.0.segments") >= 8.0, "{samples:#?}");
    assert!(sum("frames_video") > 0.0, "{samples:#?}");
    let bitrates: Vec<f64> = samples
        .iter()
        .filter_map(|m| m.values.get("hls.0.bitrate_bps").copied())
        .collect();
    assert!(
        !bitrates.is_empty() && bitrates.iter().all(|b| (50e3..5e6).contains(b)),
        "{bitrates:?}"
    );
    assert!(samples
        .iter()
        .filter_map(|m| m.values.get("hls.0.download_s_max"))
        .all(|&d| (0.0..1.0).contains(&d)));
}

/// Sends `parts` to `udp` as 7-packet datagrams, each part paced at its own average rate so it
/// lasts about `secs` seconds.
fn send_paced(udp: u16, parts: &[(Vec<u8>, f64)]) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for (bytes, secs) in parts {
        let chunks = bytes.len().div_ceil(1316).max(1);
        let gap = Duration::from_secs_f64(secs / chunks as f64);
        let start = std::time::Instant::now();
        for (i, c) in bytes.chunks(1316).enumerate() {
            sock.send_to(c, ("127.0.0.1", udp)).unwrap();
            if let Some(wait) =
                (start + gap * (i as u32 + 1)).checked_duration_since(std::time::Instant::now())
            {
                std::thread::sleep(wait);
            }
        }
    }
}

#[test]
fn udp_source_sending_garbage_then_new_pids_is_followed_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let small = ["--width", "320", "--height", "180", "--preset", "ultrafast"];
    let make = |name: &str, defects: &[&str]| {
        let out = dir.path().join(name);
        let mut cmd = avmon();
        cmd.args(["synth", out.to_str().unwrap(), "--duration", "6"])
            .args(small);
        for d in defects {
            cmd.args(["--defect", d]);
        }
        assert!(cmd.status().unwrap().success());
        out
    };
    let first = make("first.ts", &[]);
    let second_src = make("second-src.ts", &["black@2-4"]);
    let second = dir.path().join("second.ts");
    with_new_pids(&second_src, &second);
    let udp = free_udp_port();
    let (_service, http, base) = start_service(
        dir.path(),
        &format!(
            "[[streams]]\nid = \"moved\"\nurl = \"udp://127.0.0.1:{udp}\"\nio_timeout_s = 3\n"
        ),
    );
    // One encoder for 6 s, a second of garbage, then another encoder on other PIDs for 6 s.
    let garbage: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    send_paced(
        udp,
        &[
            (std::fs::read(&first).unwrap(), 6.0),
            (garbage, 1.0),
            (std::fs::read(&second).unwrap(), 6.0),
        ],
    );
    // The second encoder's black is raised and cleared on the stream's continuing time line
    // (after the first part and the garbage), without restarting anything.
    let black = wait_for(
        "video.black raised and cleared",
        Duration::from_secs(15),
        || {
            get_json(&http, &format!("{base}/api/alerts?stream=moved"))?
                .as_array()?
                .iter()
                .find(|a| a["kind"] == "video.black" && a["state"] == "cleared")
                .cloned()
        },
    );
    let start = black["start_s"].as_f64().unwrap();
    let length = black["end_s"].as_f64().unwrap() - start;
    assert!(
        (7.0..10.5).contains(&start),
        "black after the switch: {black:#}"
    );
    assert_near("black length", length, 2.0, 0.2);
    let s = get_json(&http, &format!("{base}/api/streams/moved")).unwrap();
    let frames = s["frames_video"].as_u64().unwrap_or(0);
    assert!(frames >= 290, "both encoders' pictures decoded: {s:#}");
    // No alert about the pictures or the sound besides the black: the junction is no freeze,
    // no loss and no A/V drift.
    let alerts = get_json(&http, &format!("{base}/api/alerts?stream=moved")).unwrap();
    let kinds: Vec<&str> = alerts
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["kind"].as_str())
        .filter(|k| !k.starts_with("transport."))
        .collect();
    assert_eq!(kinds, ["video.black"], "{alerts:#}");
}

#[test]
fn dash_into_service_mode_decodes_video_and_audio_and_a_stall_is_no_storm() {
    // nginx serving a live MPD FFmpeg's dash muxer writes in real time: video and audio in
    // Representations of their own, 1 s segments.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (hook, got) = receiver(&rt);
    let nginx = origin::Nginx::start("");
    let writer = origin::DashWriter::start(&nginx.root, &[]);
    let mpd = nginx.root.join("live.mpd");
    wait_for("FFmpeg's first MPD", Duration::from_secs(10), || {
        mpd.exists().then_some(())
    });
    let dir = tempfile::tempdir().unwrap();
    let (_service, http, base) = start_service(
        dir.path(),
        &format!(
            r#"
[[streams]]
id = "dash"
url = "{}"
io_timeout_s = 2
[[notifiers]]
kind = "webhook"
url = "{hook}"
"#,
            nginx.url("live.mpd"),
        ),
    );
    let stream = || get_json(&http, &format!("{base}/api/streams/dash")).unwrap_or_default();
    let alerts = || -> Vec<Value> {
        get_json(&http, &format!("{base}/api/alerts?stream=dash"))
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    };
    let frames = |s: &Value, k: &str| s[k].as_u64().unwrap_or(0);

    // Both Representations reach the detectors, joined into one decoded stream.
    let s = wait_for("decoded video and audio", Duration::from_secs(20), || {
        let s = stream();
        (s["status"] == "ok" && frames(&s, "frames_video") > 50 && frames(&s, "frames_audio") > 50)
            .then_some(s)
    });
    assert_eq!(s["info"]["video"]["width"], 320, "{s:#}");
    assert_eq!(s["info"]["audio"]["sample_rate"], 48000, "{s:#}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        alerts(),
        Vec::<Value>::new(),
        "a healthy stream raises nothing"
    );

    // The packager stalls for 12 s, then goes on.
    writer.signal("STOP");
    std::thread::sleep(Duration::from_secs(12));
    writer.signal("CONT");
    let (before_v, before_a) = (
        frames(&stream(), "frames_video"),
        frames(&stream(), "frames_audio"),
    );
    let all = wait_for("recovery from the stall", Duration::from_secs(25), || {
        let all = alerts();
        let s = stream();
        let done = all.iter().any(|a| a["kind"] == "dash.stale")
            && all.iter().all(|a| a["state"] == "cleared")
            && s["status"] == "ok"
            && frames(&s, "frames_video") > before_v + 50
            && frames(&s, "frames_audio") > before_a + 50;
        done.then_some(all)
    });
    // One stale MPD per Representation, the decoder without segments told as the source
    // down, the media the stall kept out of the window; nothing of the pictures or the sound.
    let kinds: std::collections::BTreeMap<String, usize> =
        all.iter().fold(Default::default(), |mut m, a| {
            *m.entry(a["kind"].as_str().unwrap().to_owned()).or_default() += 1;
            m
        });
    assert_eq!(kinds.get("dash.stale"), Some(&2), "{all:#?}");
    for k in kinds.keys() {
        assert!(
            ["dash.stale", "dash.sequence_error", "source.down"].contains(&k.as_str()),
            "{k} from a packager stall: {all:#?}"
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    let notified = got.lock().unwrap().len();
    eprintln!("a 12 s packager stall: {kinds:?}, {notified} notifications");
    assert!(
        notified <= 2 * all.len(),
        "{notified} notifications for {all:#?}"
    );
}

#[test]
fn check_on_a_dash_mpd_decodes_both_representations_and_reports_delivery() {
    // An on-demand MPD from FFmpeg's dash muxer: 8 s, the sound silent from 2 to 6 s.
    let nginx = origin::Nginx::start("");
    let sound = format!("{},volume=enable='between(t,2,6)':volume=0", origin::TONE);
    origin::write_dash_vod(&nginx.root, "vod.mpd", 8, &sound);
    let o = avmon()
        .args(["check", "--format", "json", &nginx.url("vod.mpd")])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    let s = &r["summary"];
    assert_eq!(s["video"]["frames"], 200, "{s:#}");
    assert!(s["audio"]["frames"].as_u64().unwrap() > 250, "{s:#}");
    let variants: Vec<&str> = s["dash"]["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(variants, ["video/0", "audio/1"]);
    assert_eq!(s["dash"]["segment_errors"], 0, "{s:#}");
    // The silence, found in the joined audio, where it is.
    let events = r["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["kind"], "audio.silence");
    assert_near(
        "silence start",
        events[0]["start_s"].as_f64().unwrap(),
        2.0,
        0.1,
    );
    assert_near(
        "silence end",
        events[0]["end_s"].as_f64().unwrap(),
        6.0,
        0.1,
    );
}
