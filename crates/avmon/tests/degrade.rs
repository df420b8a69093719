//! Automatic degradation on a host overloaded on purpose: `avmon run` with one CPU worker, two
//! light streams (a low- and a high-priority one) and four 2160p streams (each ~half a core at
//! `full` here: twice what one worker holds, so a faster machine is overloaded too), all real
//! time over UDP on loopback. The lowest-priority stream is lowered first and says so (`monitor.degraded`),
//! the high-priority one keeps `full`, no stream stays behind real time, and once the load is
//! removed through the API the tier comes back and the alert clears.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The overloading tests run one at a time: each loads the host on purpose, and two at once
/// would push even the high-priority stream down.
static OVERLOAD: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn overload_alone() -> std::sync::MutexGuard<'static, ()> {
    OVERLOAD.lock().unwrap_or_else(|e| e.into_inner())
}

/// `ffmpeg -re` sending `input` to `udp` in a loop, in real time (a copy: it costs little).
fn send_forever(input: &Path, udp: u16) -> Killed {
    Killed(
        Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-re", "-stream_loop", "-1", "-i"])
            .arg(input)
            .args(["-c", "copy", "-f", "mpegts"])
            .arg(format!("udp://127.0.0.1:{udp}?pkt_size=1316"))
            .stdin(Stdio::null())
            .spawn()
            .expect("run ffmpeg"),
    )
}

fn synth_sized(dir: &Path, name: &str, size: &str) -> std::path::PathBuf {
    let out = dir.join(name);
    let o = avmon()
        .args(["synth", out.to_str().unwrap(), "--duration", "4"])
        .args(["--size", size, "--preset", "superfast"])
        .output()
        .unwrap();
    assert!(o.status.success(), "synth: {}", stderr_of(&o));
    out
}

/// `GET /api/streams`, or `None` while the service does not answer.
fn list_streams(http: &reqwest::blocking::Client, base: &str) -> Option<Value> {
    http.get(format!("{base}/api/streams"))
        .send()
        .ok()?
        .json()
        .ok()
}

fn by_id<'a>(streams: &'a Value, id: &str) -> &'a Value {
    streams
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {streams}"))
}

fn has_alert(s: &Value, kind: &str) -> bool {
    s["active_alerts"]
        .as_array()
        .is_some_and(|a| a.iter().any(|a| a["kind"] == kind))
}

#[test]
fn an_overloaded_host_lowers_the_lowest_priority_first_and_restores_it() {
    let _alone = overload_alone();
    let dir = tempfile::tempdir().unwrap();
    let light = synth_sized(dir.path(), "light.ts", "640x360");
    let heavy = synth_sized(dir.path(), "heavy.ts", "3840x2160");
    let ids = ["lo", "hi", "load1", "load2", "load3", "load4"];
    let ports: Vec<u16> = ids.iter().map(|_| free_udp_port()).collect();
    let mut cfg = String::from("[service]\nworkers = 1\nrestore_after_s = 3\n");
    for (i, id) in ids.iter().enumerate() {
        let priority = match *id {
            "lo" => 10,
            "hi" => 200,
            _ => 100,
        };
        cfg += &format!(
            "[[streams]]\nid = \"{id}\"\nurl = \"udp://127.0.0.1:{}\"\npriority = {priority}\n",
            ports[i]
        );
    }
    let (_service, http, base) = start_service(dir.path(), &cfg);
    let streams = || list_streams(&http, &base);
    let _senders: Vec<Killed> = ids
        .iter()
        .zip(&ports)
        .map(|(id, &port)| {
            send_forever(
                if id.starts_with("load") {
                    &heavy
                } else {
                    &light
                },
                port,
            )
        })
        .collect();

    // Overloaded: the lowest-priority stream is lowered first. One step may lower several
    // streams (as much as the measured excess), but none of the others before lo is at its
    // lowest tier.
    let first = wait_for("a stream lowered", Duration::from_secs(60), || {
        let s = streams()?;
        assert_eq!(by_id(&s, "hi")["tier"], "full", "hi keeps full: {s}");
        let lowered: Vec<String> = s
            .as_array()?
            .iter()
            .filter(|x| x["degraded"] == true)
            .map(|x| x["id"].as_str().unwrap().to_string())
            .collect();
        (!lowered.is_empty()).then(|| (lowered, s.clone()))
    });
    assert!(
        first.0.iter().any(|id| id == "lo"),
        "the lowest priority first: {}",
        first.1
    );
    if first.0.len() > 1 {
        assert_eq!(
            by_id(&first.1, "lo")["tier"],
            "transport",
            "lo went as low as it can before the others: {}",
            first.1
        );
    }
    let lo = by_id(&first.1, "lo");
    assert_eq!(lo["configured_tier"], "full");
    assert_eq!(lo["priority"], 10);
    assert_ne!(lo["tier"], "full");

    // It says so, through the alert path: raised, with the tiers and the reason.
    let alert = wait_for("monitor.degraded on lo", Duration::from_secs(20), || {
        let s = streams()?;
        let lo = by_id(&s, "lo");
        lo["active_alerts"]
            .as_array()?
            .iter()
            .find(|a| a["kind"] == "monitor.degraded")
            .cloned()
    });
    assert_eq!(alert["details"]["configured_tier"], "full", "{alert}");
    assert!(
        alert["details"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("behind") || r.contains("datagrams")),
        "{alert}"
    );
    assert!(
        !has_alert(by_id(&streams().unwrap(), "hi"), "monitor.degraded"),
        "hi is not degraded"
    );

    // Degradation brings every stream back to real time, and hi never left full.
    let settled = Instant::now();
    wait_for("every stream in time", Duration::from_secs(90), || {
        let s = streams()?;
        assert_eq!(by_id(&s, "hi")["tier"], "full", "hi keeps full: {s}");
        let lags: Vec<f64> = s
            .as_array()?
            .iter()
            .map(|x| x["lag_s"].as_f64().unwrap())
            .collect();
        lags.iter().all(|&l| l < 1.0).then_some(())
    });
    eprintln!("in time after {:.1} s", settled.elapsed().as_secs_f64());
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(metrics.contains("avmon_cpu_workers 1"), "{metrics}");
    assert!(
        metrics.contains("avmon_stream_degraded{stream=\"lo\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("avmon_stream_tier{stream=\"hi\"} 0"),
        "{metrics}"
    );

    // The load goes: lo comes back to full, and the alert clears.
    for id in ["load1", "load2", "load3", "load4"] {
        let r = http
            .delete(format!("{base}/api/streams/{id}"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    wait_for("lo restored", Duration::from_secs(90), || {
        let s = streams()?;
        let lo = by_id(&s, "lo");
        (lo["tier"] == "full" && lo["degraded"] == false && !has_alert(lo, "monitor.degraded"))
            .then_some(())
    });
    let alerts: Value = http
        .get(format!("{base}/api/alerts?stream=lo"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let degraded: Vec<&Value> = alerts
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "monitor.degraded")
        .collect();
    assert!(!degraded.is_empty(), "stored: {alerts}");
    assert!(
        degraded.iter().all(|a| !a["cleared_at"].is_null()),
        "cleared in the store: {degraded:?}"
    );
    let s = streams().unwrap();
    assert_eq!(by_id(&s, "hi")["tier"], "full");
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("avmon_stream_degraded{stream=\"lo\"} 0"),
        "{metrics}"
    );

    // The priority can be changed while the stream runs; a bad one is refused.
    let patch = |body: &str| {
        http.patch(format!("{base}/api/streams/hi"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap()
    };
    let r = patch(r#"{"priority": 5}"#);
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    assert_eq!(
        (v["priority"].clone(), v["tier"].clone()),
        (5.into(), "full".into())
    );
    let r = patch(r#"{"priority": -1}"#);
    assert_eq!(r.status(), 400);
    let v: Value = r.json().unwrap();
    assert!(
        v["errors"][0].as_str().unwrap().starts_with("priority:"),
        "{v}"
    );
}

/// With `auto_degrade = false` an overloaded host does not change any tier, but it does not fall
/// behind silently either: the streams behind get `monitor.behind`, which clears when the load
/// goes.
#[test]
fn a_host_that_may_not_degrade_says_which_streams_are_behind() {
    let _alone = overload_alone();
    let dir = tempfile::tempdir().unwrap();
    let heavy = synth_sized(dir.path(), "heavy.ts", "3840x2160");
    // Four: three of these need about 95 % of one worker, which is too close to call.
    let ids = ["a", "b", "c", "d"];
    let ports: Vec<u16> = ids.iter().map(|_| free_udp_port()).collect();
    let mut cfg = String::from("[service]\nworkers = 1\nauto_degrade = false\n");
    for (id, port) in ids.iter().zip(&ports) {
        cfg += &format!("[[streams]]\nid = \"{id}\"\nurl = \"udp://127.0.0.1:{port}\"\n");
    }
    let (_service, http, base) = start_service(dir.path(), &cfg);
    let streams = || list_streams(&http, &base);
    let senders: Vec<Killed> = ports.iter().map(|&p| send_forever(&heavy, p)).collect();

    let (behind, s) = wait_for("monitor.behind raised", Duration::from_secs(60), || {
        let s = streams()?;
        let behind: Vec<String> = ids
            .iter()
            .filter(|id| has_alert(by_id(&s, id), "monitor.behind"))
            .map(|id| id.to_string())
            .collect();
        (!behind.is_empty()).then_some((behind, s))
    });
    for id in ids {
        assert_eq!(by_id(&s, id)["tier"], "full", "no tier changed: {s}");
    }
    let alert = by_id(&s, &behind[0])["active_alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "monitor.behind")
        .cloned()
        .unwrap();
    let reason = alert["details"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("auto_degrade is off"), "{alert}");
    assert_eq!(alert["details"]["workers"], 1, "{alert}");
    assert_eq!(alert["details"]["tier"], "full", "{alert}");

    // Three of the four loads go: the one left keeps up, and its alert clears.
    drop(senders);
    for id in ["b", "c", "d"] {
        let r = http
            .delete(format!("{base}/api/streams/{id}"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    let _sender = send_forever(&heavy, ports[0]);
    wait_for("monitor.behind cleared", Duration::from_secs(90), || {
        let s = streams()?;
        (!has_alert(by_id(&s, "a"), "monitor.behind")).then_some(())
    });
    let alerts: Value = http
        .get(format!("{base}/api/alerts?kind=monitor.behind"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let stored = alerts.as_array().unwrap();
    assert!(!stored.is_empty(), "stored: {alerts}");
    assert!(
        stored
            .iter()
            .filter(|a| a["stream_id"] == "a")
            .all(|a| !a["cleared_at"].is_null()),
        "cleared in the store: {alerts}"
    );
}

#[test]
fn bad_service_settings_are_refused_with_their_paths() {
    let dir = tempfile::tempdir().unwrap();
    let err = refused_run(
        dir.path(),
        "[service]\nworkers = 5000\nbehind_s = 0\nrestore_after_s = -1\nturbo = true\n\
         [[streams]]\nid = \"a\"\nurl = \"udp://127.0.0.1:5000\"\npriority = -3\n",
    );
    assert!(
        err.contains("service: unknown field `turbo`") || err.contains("turbo"),
        "{err}"
    );
    assert!(err.contains("streams[0].priority"), "{err}");
    let err = refused_run(
        dir.path(),
        "[service]\nworkers = 5000\nbehind_s = 0\nrestore_after_s = -1\n",
    );
    for needle in [
        "service.workers: must be at most 1024",
        "service.behind_s: must be in (0, 600]",
        "service.restore_after_s: must be between 1 and 86400",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}
