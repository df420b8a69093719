//! A full disk under a running service: its store and evidence on a real tmpfs, filled while a
//! live stream with a defect is monitored, then freed.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// How this host lets a test mount a tmpfs of its own: `unshare`'s options for a private
/// mount namespace where `mount -t tmpfs` works. Root needs none beyond `--mount`; a user (or
/// root without CAP_SYS_ADMIN, in a container) is mapped to root in a user namespace.
fn namespace_options(probe: &Path) -> Vec<&'static str> {
    for opts in [
        vec!["--mount", "--propagation", "private"],
        vec!["--map-root-user", "--mount", "--propagation", "private"],
    ] {
        let ok = Command::new("unshare")
            .args(&opts)
            .args([
                "sh",
                "-c",
                "mount -t tmpfs -o size=1m avmon-probe \"$1\"",
                "sh",
            ])
            .arg(probe)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return opts;
        }
    }
    panic!(
        "this test needs a tmpfs it can fill: `unshare --mount` (as root) or \
         `unshare --map-root-user --mount` (user namespaces) must be allowed here"
    );
}

/// `avmon run --config cfg` in a mount namespace of its own, where `mnt` is a tmpfs of
/// `size_mib`.
fn service_on_tmpfs(mnt: &Path, size_mib: u32, cfg: &Path) -> Killed {
    let mut cmd = Command::new("unshare");
    cmd.args(namespace_options(mnt))
        .args(["sh", "-c"])
        .arg(format!(
            "mount -t tmpfs -o size={size_mib}m avmon-test \"$1\" && exec \"$2\" run --config \"$3\""
        ))
        .arg("sh")
        .arg(mnt)
        .arg(env!("CARGO_BIN_EXE_avmon"))
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Killed(cmd.spawn().expect("unshare (util-linux) runs"))
}

/// Bytes free on the file system at `dir`, as `stat -f` (coreutils) tells.
fn free_bytes(dir: &Path) -> u64 {
    disk(dir).0
}

/// Bytes free, and the size, of the file system at `dir`.
fn disk(dir: &Path) -> (u64, u64) {
    let out = Command::new("stat")
        .args(["-f", "-c", "%a %b %S"])
        .arg(dir)
        .output()
        .expect("stat (coreutils) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<u64> = text
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(v.len(), 3, "stat -f {}: {text:?}", dir.display());
    (v[0] * v[2], v[1] * v[2])
}

/// Fill the file system at `dir` until `leave` bytes or fewer are free; returns the filler file.
fn fill_to(dir: &Path, leave: u64) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    while free_bytes(dir) > leave {
        let n = (free_bytes(dir) - leave).min(64 << 10) as usize;
        f.write_all(&vec![0x5a_u8; n]).unwrap();
        f.sync_data().unwrap();
    }
    path
}

/// Fill the file system at `dir` (seen through the service's own mount namespace) until it
/// refuses; returns the filler file.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0x5a_u8; 64 << 10];
    loop {
        if let Err(e) = f.write_all(&chunk).and_then(|()| f.sync_data()) {
            assert_eq!(e.raw_os_error(), Some(28), "filled until ENOSPC: {e}");
            return path;
        }
    }
}

#[test]
fn a_full_disk_raises_monitor_storage_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("data");
    std::fs::create_dir(&mnt).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (hook, got) = receiver(&rt);
    let (api, udp) = (free_tcp_port(), free_udp_port());
    let cfg = dir.path().join("avmon.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:{api}\"\n\
             [store]\nurl = \"sqlite://{db}\"\nmetrics_interval_s = 1\n\
             [[streams]]\nid = \"s\"\nurl = \"udp://127.0.0.1:{udp}\"\n\
             [[notifiers]]\nkind = \"webhook\"\nurl = \"{hook}\"\n",
            db = mnt.join("avmon.db").display()
        ),
    )
    .unwrap();
    let service = service_on_tmpfs(&mnt, 16, &cfg);
    let http = reqwest::blocking::Client::new();
    let base = format!("http://127.0.0.1:{api}");
    wait_api(&http, &base);
    // The service's tmpfs, as its mount namespace sees it.
    let data = PathBuf::from(format!("/proc/{}/root{}", service.0.id(), mnt.display()));
    assert!(data.join("avmon.db").exists(), "the store is on the tmpfs");
    let _sender = synth_live(udp, 60, &["black@14-18"]);
    let samples = |http: &reqwest::blocking::Client| -> Vec<f64> {
        let body: Value = http
            .get(format!("{base}/api/streams/s/metrics"))
            .query(&[("since", "2000-01-01T00:00:00Z")])
            .send()
            .and_then(|r| r.json())
            .unwrap_or_default();
        body["samples"]
            .as_array()
            .map(|s| s.iter().filter_map(|s| s["media_t"].as_f64()).collect())
            .unwrap_or_default()
    };
    wait_for("metrics stored", Duration::from_secs(20), || {
        samples(&http).last().filter(|t| **t > 3.0).copied()
    });

    let filler = fill(&data);
    // Notifying goes on: avmon's own alert, and the stream's defect raised and cleared while
    // nothing can be written.
    let notified = |kind: &str, state: &str| {
        got.lock()
            .unwrap()
            .iter()
            .find(|b| b["kind"] == kind && b["state"] == state)
            .cloned()
    };
    let storage = wait_for("monitor.storage raised", Duration::from_secs(20), || {
        notified("monitor.storage", "raised")
    });
    assert_eq!(storage["stream_id"], "_avmon");
    assert!(
        storage["details"]["disks"][0]["free_bytes"]
            .as_u64()
            .is_some_and(|f| f < 1 << 20),
        "the full disk is told: {storage}"
    );
    let black = wait_for(
        "video.black raised and cleared",
        Duration::from_secs(40),
        || notified("video.black", "cleared"),
    );
    assert!(
        !data
            .join("avmon.evidence")
            .join(format!("{}.jpg", black["alert_id"].as_str().unwrap()))
            .exists(),
        "no room for the snapshot yet"
    );
    // Still full: nothing of it is in the store yet.
    let listed = |http: &reqwest::blocking::Client| -> Vec<Value> {
        http.get(format!("{base}/api/alerts"))
            .query(&[("stream", "s")])
            .send()
            .and_then(|r| r.json())
            .unwrap_or_default()
    };
    assert!(
        !listed(&http).iter().any(|a| a["id"] == black["alert_id"]),
        "the disk is full: the alert waits in memory"
    );

    std::fs::remove_file(&filler).unwrap();
    let cleared = wait_for("monitor.storage cleared", Duration::from_secs(20), || {
        notified("monitor.storage", "cleared")
    });
    assert_eq!(cleared["alert_id"], storage["alert_id"]);
    // What waited is written: the alert, its snapshot, the metrics of the whole time.
    let stored = wait_for("the alert stored", Duration::from_secs(10), || {
        listed(&http)
            .into_iter()
            .find(|a| a["id"] == black["alert_id"])
    });
    assert_eq!(stored["state"], "cleared", "{stored}");
    wait_for("the snapshot written", Duration::from_secs(15), || {
        let r = http
            .get(format!(
                "{base}/api/alerts/{}/snapshot.jpg",
                black["alert_id"].as_str().unwrap()
            ))
            .send()
            .ok()?;
        r.status().is_success().then_some(())
    });
    let times = samples(&http);
    let gaps: Vec<(f64, f64)> = times
        .windows(2)
        .filter(|w| w[1] - w[0] > 2.5)
        .map(|w| (w[0], w[1]))
        .collect();
    assert!(
        times.first().is_some_and(|t| *t < 4.0) && times.last().is_some_and(|t| *t > 18.0),
        "samples from before the disk filled to after it was freed: {times:?}"
    );
    assert!(
        gaps.is_empty(),
        "no sample lost: gaps {gaps:?} in {times:?}"
    );
    // Each notification once, under its key.
    let bodies = got.lock().unwrap().clone();
    let keys = keys_received(&got);
    assert!(
        keys.values().all(|n| *n == 1),
        "delivered once each: {keys:?}"
    );
    // The deliveries made while the disk was full are recorded as such: none left pending,
    // and every one delivered once.
    let outbox = |http: &reqwest::blocking::Client, status: &str| -> Option<f64> {
        let text = http
            .get(format!("{base}/metrics"))
            .send()
            .ok()?
            .text()
            .ok()?;
        let tag = format!("status=\"{status}\"");
        text.lines()
            .find(|l| l.starts_with("avmon_outbox_notifications{") && l.contains(&tag))
            .and_then(|l| l.split_whitespace().last()?.parse().ok())
    };
    assert_eq!(outbox(&http, "pending"), Some(0.0));
    assert_eq!(outbox(&http, "delivered"), Some(bodies.len() as f64));
    drop(service);
}

/// A disk nearly full is told before anything is refused, and avmon's own evidence gives way
/// instead of filling it.
#[test]
fn a_disk_nearly_full_is_told_and_evidence_gives_way() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("data");
    std::fs::create_dir(&mnt).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (hook, got) = receiver(&rt);
    let api = free_tcp_port();
    let cfg = dir.path().join("avmon.toml");
    // 16 MiB: 1 MiB kept free (at most a twentieth of the disk, 0.8 MiB), and evidence keeps
    // twice that.
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:{api}\"\n\
             [store]\nurl = \"sqlite://{db}\"\nmin_free = \"1MiB\"\n\
             [evidence]\nmax_bytes = \"1GiB\"\n\
             [[notifiers]]\nkind = \"webhook\"\nurl = \"{hook}\"\n",
            db = mnt.join("avmon.db").display()
        ),
    )
    .unwrap();
    let service = service_on_tmpfs(&mnt, 16, &cfg);
    let http = reqwest::blocking::Client::new();
    wait_api(&http, &format!("http://127.0.0.1:{api}"));
    let data = PathBuf::from(format!("/proc/{}/root{}", service.0.id(), mnt.display()));
    let keep = (1 << 20).min(disk(&data).1 / 20);
    let notified = |state: &str| {
        got.lock()
            .unwrap()
            .iter()
            .filter(|b| b["kind"] == "monitor.storage" && b["state"] == state)
            .cloned()
            .collect::<Vec<Value>>()
    };

    // Under the reserve, with room still for the store's writes: told at once.
    let filler = fill_to(&data, keep / 2);
    let raised = wait_for("monitor.storage raised", Duration::from_secs(10), || {
        notified("raised").into_iter().next()
    });
    let disk = &raised["details"]["disks"][0];
    assert!(
        disk["free_bytes"]
            .as_u64()
            .is_some_and(|f| f > 0 && f < keep),
        "told with room left, before a write is refused: {raised}"
    );
    assert_eq!(disk["min_free_bytes"].as_u64(), Some(keep), "{raised}");
    assert!(
        raised["details"].get("store").is_none(),
        "nothing was refused yet: {raised}"
    );
    std::fs::remove_file(&filler).unwrap();
    let cleared = wait_for("monitor.storage cleared", Duration::from_secs(10), || {
        notified("cleared").into_iter().next()
    });
    assert_eq!(cleared["alert_id"], raised["alert_id"]);

    // Evidence that grew into the reserve's double is deleted, oldest first, down to it; the
    // disk is never short for it, so nothing is raised.
    let evidence = data.join("avmon.evidence");
    let t0 = std::time::SystemTime::now() - Duration::from_secs(3600);
    for i in 0..6u64 {
        let path = evidence.join(format!("old{i}.ts"));
        std::fs::write(&path, vec![0x47_u8; 256 << 10]).unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(t0 + Duration::from_secs(60 * i)).unwrap();
    }
    let filler = fill_to(&data, keep + keep / 4);
    let left = wait_for("evidence deleted for room", Duration::from_secs(15), || {
        let mut left: Vec<String> = std::fs::read_dir(&evidence)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        (free_bytes(&data) + (64 << 10) >= 2 * keep).then_some(left)
    });
    assert!(
        !left.is_empty() && left.len() < 6,
        "only the oldest went: {left:?}"
    );
    let oldest_kept: usize = left[0]["old".len()..left[0].len() - 3].parse().unwrap();
    assert_eq!(left.len(), 6 - oldest_kept, "the newest are kept: {left:?}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        notified("raised").len(),
        1,
        "avmon's own evidence raises nothing"
    );
    std::fs::remove_file(&filler).unwrap();

    // Another writer (a database growing by a WAL segment) takes the disk below the reserve
    // at once: evidence on the disk gives way before anyone is told.
    for i in 0..8u64 {
        std::fs::write(
            evidence.join(format!("new{i}.ts")),
            vec![0x47_u8; 256 << 10],
        )
        .unwrap();
    }
    std::thread::sleep(Duration::from_secs(2));
    let before = std::fs::read_dir(&evidence).unwrap().count();
    let filler = fill_to(&data, keep / 2);
    wait_for(
        "evidence deleted for the other writer",
        Duration::from_secs(10),
        || (free_bytes(&data) + (64 << 10) >= 2 * keep).then_some(()),
    );
    let after = std::fs::read_dir(&evidence).unwrap().count();
    assert!(
        after < before,
        "evidence gave way: {before} -> {after} files"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        notified("raised").len(),
        1,
        "a disk short while evidence could give way raises nothing"
    );
    std::fs::remove_file(&filler).unwrap();
    drop(service);
}
