//! A source that sends garbage and then changes its PIDs (a new encoder: new PAT, PMT and
//! elementary PIDs, its clock restarted) is followed without restarting avmon: the decoders
//! move to the new streams, the time line continues, and the detectors judge what follows.

mod common;

use common::*;

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
