//! Bad input gets one clear line on stderr and a non-zero exit, never a panic.

mod common;

use std::io::Write;

use common::*;

#[test]
fn a_garbage_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.ts");
    let mut f = std::fs::File::create(&path).unwrap();
    // Deterministic bytes that are no media format.
    let mut x: u32 = 12345;
    let bytes: Vec<u8> = (0..200_000)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect();
    f.write_all(&bytes).unwrap();
    drop(f);
    let o = avmon()
        .args(["check", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_clean_failure(&o, "garbage.ts");
}

#[test]
fn a_missing_file() {
    let o = avmon()
        .args(["check", "/nonexistent/dir/stream.ts"])
        .output()
        .unwrap();
    assert_clean_failure(&o, "No such file");
}

#[test]
fn a_bad_url() {
    let o = avmon()
        .args(["check", "nosuchproto://example/x"])
        .output()
        .unwrap();
    assert_clean_failure(&o, "nosuchproto://example/x");
    // A real scheme with nobody listening.
    let o = avmon()
        .args(["check", "http://127.0.0.1:9/stream.ts", "--timeout", "3"])
        .output()
        .unwrap();
    assert_clean_failure(&o, "127.0.0.1:9");
}

#[test]
fn a_live_url_without_duration() {
    let o = avmon()
        .args(["check", "udp://127.0.0.1:5999"])
        .output()
        .unwrap();
    assert_clean_failure(&o, "--duration");
}

#[test]
fn a_bad_config_lists_every_error_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("avmon.toml");
    std::fs::write(
        &path,
        r#"
[server]
listen = "not-an-address"
[[streams]]
id = "bad id"
url = "foo://x"
[[streams]]
id = "b"
url = "udp://127.0.0.1:5000"
[streams.detectors.black]
min_duration = -1
[[notifiers]]
kind = "webhook"
url = "ftp://nowhere"
"#,
    )
    .unwrap();
    let o = avmon()
        .args(["run", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let err = stderr_of(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for needle in [
        "server.listen",
        "streams[0].id",
        "streams[0].url",
        "streams[1].detectors.black.min_duration",
        "notifiers[0].url",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}

#[test]
fn a_missing_config_and_a_syntax_error() {
    let o = avmon()
        .args(["run", "--config", "/nonexistent/avmon.toml"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr_of(&o).contains("cannot read config"),
        "{}",
        stderr_of(&o)
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, "[[streams]\nid = \n").unwrap();
    let o = avmon()
        .args(["run", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr_of(&o).contains("line"), "{}", stderr_of(&o));
}

#[test]
fn a_bad_defect_spec_for_synth() {
    let o = avmon()
        .args(["synth", "/tmp/x.ts", "--defect", "smoke@1-2"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr_of(&o).contains("unknown defect"),
        "{}",
        stderr_of(&o)
    );
}

#[test]
fn a_gop_that_is_not_a_positive_length_for_synth() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.ts");
    for gop in ["0", "-2", "NaN"] {
        let o = avmon()
            .args(["synth", out.to_str().unwrap(), "--gop", gop])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "--gop {gop}");
        assert!(
            stderr_of(&o).contains("--gop must be a positive number of seconds"),
            "--gop {gop}: {}",
            stderr_of(&o)
        );
        assert!(!out.exists(), "nothing written for --gop {gop}");
    }
}
