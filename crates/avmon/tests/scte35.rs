//! SCTE 35 in `avmon check`: a stream made by `avmon synth --cue` carries an avail signalled in
//! time, one signalled late, and one that never returns. Each cue is an event with what it says;
//! the late one and the missing return are alerts; a stream that expects cues is told when they
//! stop. threefive (PyPI, in `target/pydeps`) reads the same cues from the same file.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

fn pydeps() -> PathBuf {
    let dir = std::env::var_os("AVMON_PYDEPS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/pydeps"),
        PathBuf::from,
    );
    assert!(
        dir.join("threefive").is_dir(),
        "threefive is not in {}: run ./dev test, which installs it",
        dir.display()
    );
    dir
}

fn check(path: &Path, detectors: Option<&Path>) -> Value {
    check_with(path, detectors)
}

#[test]
fn cues_are_recorded_and_late_or_unended_avails_raised() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cues.ts");
    let o = avmon()
        .args(["synth"])
        .arg(&path)
        .args(["--duration", "50", "--width", "320", "--height", "180"])
        .args(["--preset", "ultrafast"])
        .args([
            "--cue",
            "avail@10-20",
            "--cue",
            "late@26-34",
            "--cue",
            "unended@40-42",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));

    let r = check(&path, None);
    // Each cue, where it was sent, saying what was sent: (sent at, event id, out, preroll).
    let cues = of_kind(&r, "scte35.cue");
    let want = [
        (4.0, 1, true, 6.0),
        (14.0, 1, false, 6.0),
        (27.0, 2, true, -1.0),
        (28.5, 2, false, 5.5),
        (34.0, 3, true, 6.0),
    ];
    assert_eq!(cues.len(), want.len(), "{}", r["events"]);
    for (c, (at, id, out, preroll)) in cues.iter().zip(want) {
        let d = &c["details"];
        assert_near("cue sent at", c["start_s"].as_f64().unwrap(), at, 0.3);
        assert_eq!(d["event_id"], id, "{c}");
        assert_eq!(d["out_of_network"], out, "{c}");
        assert_near("preroll", d["preroll_s"].as_f64().unwrap(), preroll, 0.3);
        assert_eq!(c["severity"], "info");
    }
    assert_eq!(cues[0]["details"]["duration_s"], 10.0);

    let late = of_kind(&r, "scte35.late_cue");
    assert_eq!(late.len(), 1, "{}", r["events"]);
    assert_near("late cue", late[0]["start_s"].as_f64().unwrap(), 27.0, 0.3);
    assert!(late[0]["details"]["preroll_s"].as_f64().unwrap() < 0.0);

    // The third avail ends at 42 s; 5 s later without its return, it is raised, to the end.
    let missing = of_kind(&r, "scte35.missing_cue_in");
    assert_eq!(missing.len(), 1, "{}", r["events"]);
    assert_near(
        "missing cue-in",
        missing[0]["start_s"].as_f64().unwrap(),
        47.0,
        0.3,
    );
    assert_near(
        "to the end",
        missing[0]["end_s"].as_f64().unwrap(),
        50.0,
        0.3,
    );
    assert_eq!(missing[0]["details"]["event_id"], 3);

    // Nothing else: the cue PID's silences between cues are no TR 101 290 PID_error.
    let others: Vec<&Value> = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e["kind"].as_str().unwrap().starts_with("scte35."))
        .collect();
    assert!(others.is_empty(), "{others:?}");
    let s = &r["summary"]["scte35"];
    assert_eq!(
        (
            s["cues"].as_f64(),
            s["avails"].as_f64(),
            s["late_cues"].as_f64()
        ),
        (Some(5.0), Some(3.0), Some(1.0))
    );

    // A stream that expects a cue at least every 8 s: told while none comes.
    let limits = dir.path().join("expect.toml");
    std::fs::write(&limits, "[scte35]\nexpect_every_s = 8\n").unwrap();
    let r = check(&path, Some(&limits));
    let silent: Vec<(f64, f64)> = of_kind(&r, "scte35.no_cues")
        .iter()
        .map(|e| (e["start_s"].as_f64().unwrap(), e["end_s"].as_f64().unwrap()))
        .collect();
    // Cues at 4, 14, 27, 28.5 and 34 s: silent from 12 to 14, 22 to 27, and 42 to the end.
    let gaps = [(12.0, 14.0), (22.0, 27.0), (42.0, 50.0)];
    assert_eq!(silent.len(), gaps.len(), "{silent:?}");
    for (got, want) in silent.iter().zip(gaps) {
        assert_near("silence from", got.0, want.0, 0.3);
        assert_near("silence to", got.1, want.1, 0.3);
    }

    // threefive reads the same five cues from the file.
    let script = r#"
import json, sys, threefive
found = []
threefive.Stream(sys.argv[1]).decode(func=lambda c: found.append(
    [c.command.splice_event_id, c.command.out_of_network_indicator]))
print(json.dumps(found))
"#;
    let o = Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .env("PYTHONPATH", pydeps())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let theirs: Vec<(u32, bool)> = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let ours: Vec<(u32, bool)> = want.iter().map(|w| (w.1, w.2)).collect();
    assert_eq!(theirs, ours);
}

/// The service, watching a UDP stream that carries cues (the synthetic file sent in real time,
/// its datagrams evenly paced), stores each cue as an event with what it says, and raises the
/// avail that does not return.
#[test]
fn the_service_records_the_cues_of_a_live_stream() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cues.ts");
    let o = avmon()
        .args(["synth"])
        .arg(&path)
        .args(["--duration", "24", "--width", "320", "--height", "180"])
        .args(["--preset", "ultrafast"])
        .args(["--cue", "avail@8-12", "--cue", "unended@14-15"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    let ts = std::fs::read(&path).unwrap();
    let port = free_udp_port();
    let (_service, http, base) = start_service(
        dir.path(),
        &format!("[[streams]]\nid = \"s\"\nurl = \"udp://127.0.0.1:{port}\"\n"),
    );
    // In real time: 24 s of stream, 1316-byte datagrams evenly spaced.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let datagrams: Vec<&[u8]> = ts.chunks(1316).collect();
    let every = std::time::Duration::from_secs_f64(24.0 / datagrams.len() as f64);
    let start = std::time::Instant::now();
    for (i, d) in datagrams.iter().enumerate() {
        let due = start + every * i as u32;
        if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
            std::thread::sleep(wait);
        }
        let _ = sock.send_to(d, ("127.0.0.1", port));
    }
    let alerts = |kind: &str| -> Vec<Value> {
        let all: Vec<Value> = http
            .get(format!("{base}/api/alerts"))
            .query(&[("stream", "s")])
            .send()
            .and_then(|r| r.json())
            .unwrap_or_default();
        all.into_iter().filter(|a| a["kind"] == kind).collect()
    };
    // Cues at 2 s (out, event 1), 6 s (in, event 1) and 8 s (out, event 2, 1 s long): the
    // second avail ends at 15 s and is raised 5 s later, while the stream still runs.
    let cues = wait_for(
        "three cues stored",
        std::time::Duration::from_secs(20),
        || {
            let c = alerts("scte35.cue");
            (c.len() >= 3).then_some(c)
        },
    );
    let mut seen: Vec<(u64, bool)> = cues
        .iter()
        .map(|a| {
            let d = &a["details"];
            (
                d["event_id"].as_u64().unwrap(),
                d["out_of_network"].as_bool().unwrap(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(seen, [(1, false), (1, true), (2, true)], "{cues:?}");
    let missing = wait_for(
        "the avail without return raised",
        std::time::Duration::from_secs(10),
        || alerts("scte35.missing_cue_in").into_iter().next(),
    );
    assert_eq!(missing["details"]["event_id"], 2, "{missing}");
    assert_eq!(missing["severity"], "major");
}
