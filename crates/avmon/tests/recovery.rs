//! A source that sends garbage and then changes its PIDs (a new encoder: new PAT, PMT and
//! elementary PIDs, its clock restarted) is followed without restarting avmon: the decoders
//! move to the new streams, the time line continues, and the detectors judge what follows.

mod common;

use common::*;
use std::time::Duration;

fn frames(report: &serde_json::Value, kind: &str) -> f64 {
    report["summary"][kind]["frames"].as_f64().unwrap()
}

#[test]
fn garbage_then_new_pids_are_followed_and_judged() {
    let dir = tempfile::tempdir().unwrap();
    let first = synth(dir.path(), "first.ts", 8.0, &[]);
    let second_src = synth(dir.path(), "second-src.ts", 8.0, &["black@2-4"]);
    let second = dir.path().join("second.ts");
    with_new_pids(&second_src, &second);
    let (a, b) = (check_json(&first), check_json(&second));

    // The first encoder's stream, 200 kB of garbage, then the second encoder's.
    let mut bytes = std::fs::read(&first).unwrap();
    let mut x = 0x1234_5678u32;
    bytes.extend((0..200_000).map(|_| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x as u8
    }));
    bytes.extend(std::fs::read(&second).unwrap());
    let joined = dir.path().join("joined.ts");
    std::fs::write(&joined, bytes).unwrap();
    let r = check_json(&joined);

    // Both parts were decoded (the last packets before the garbage, a few frames, are lost).
    for kind in ["video", "audio"] {
        let (got, want) = (frames(&r, kind), frames(&a, kind) + frames(&b, kind));
        assert!(
            got >= 0.98 * want && got <= want,
            "{kind} frames {got} of {want}"
        );
    }
    // The second part's black is found where it is on the continuing time line, and nothing
    // else is reported about the pictures and the sound: the junction is no freeze, no dropout
    // and no A/V drift.
    let events = events(&r);
    let black: Vec<_> = events.iter().filter(|e| e.0 == "video.black").collect();
    assert_eq!(black.len(), 1, "{events:?}");
    assert_near("black start", black[0].1, 8.0 + 2.0, 0.2);
    assert_near("black end", black[0].2, 8.0 + 4.0, 0.2);
    let others: Vec<_> = events
        .iter()
        .filter(|e| e.0 != "video.black" && !e.0.starts_with("transport."))
        .collect();
    assert!(others.is_empty(), "{others:?}");
    // The transport analyser saw the garbage.
    assert!(
        r["summary"]["transport"]["sync_losses"].as_u64() >= Some(1),
        "{}",
        r["summary"]["transport"]
    );
}

/// A standalone service killed with an alert raised: restarted on the same store, it continues
/// that alert (same id, still raised) while the defect lasts, and raises no second one; the
/// store never holds the first one open for ever.
#[test]
fn a_killed_service_continues_its_open_alerts_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let udp = free_udp_port();
    let stream = format!("[[streams]]\nid = \"s\"\nurl = \"udp://127.0.0.1:{udp}\"\n");
    let _source = synth_live(udp, 120, &["black@0-120"]);
    let black_of = |http: &reqwest::blocking::Client, base: &str| -> Option<String> {
        let s: serde_json::Value = http
            .get(format!("{base}/api/streams/s"))
            .send()
            .ok()?
            .json()
            .ok()?;
        s["active_alerts"]
            .as_array()?
            .iter()
            .find(|a| a["kind"] == "video.black")
            .and_then(|a| a["id"].as_str().map(String::from))
    };
    let first = {
        let (service, http, base) = start_service(dir.path(), &stream);
        let id = wait_for("video.black raised", Duration::from_secs(30), || {
            black_of(&http, &base)
        });
        drop(service); // SIGKILL: nothing is cleared on the way out
        id
    };
    let (_service, http, base) = start_service(dir.path(), &stream);
    // Long enough for a new raise (black confirms in 2 s), well inside the 45 s grace.
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(
        black_of(&http, &base).as_deref(),
        Some(first.as_str()),
        "the same alert goes on"
    );
    let stored: Vec<serde_json::Value> = http
        .get(format!("{base}/api/alerts"))
        .query(&[("stream", "s"), ("kind", "video.black")])
        .send()
        .unwrap()
        .json()
        .unwrap();
    let ids: Vec<&str> = stored.iter().filter_map(|a| a["id"].as_str()).collect();
    assert_eq!(ids, [first.as_str()], "one video.black alert in the store");
}
