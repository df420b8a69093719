//! A cluster of real `avmon run` processes on loopback: one PostgreSQL (started by the test),
//! nodes sharing it, a live HLS origin (nginx, FFmpeg's HLS muxer) and a webhook receiver.
//! Nodes are killed (SIGKILL), frozen and thawed (SIGSTOP, SIGCONT), stopped cleanly (SIGTERM)
//! and added; through all of it every stream is held by one node, failover happens within
//! 15 s, open alerts are continued (not raised again) and cleared once, and every notification
//! reaches the receiver exactly once.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use avmon_testpg::TestPg;
use common::*;
use serde_json::Value;

/// The HLS origin of avmon-hls's tests: nginx, and FFmpeg's HLS muxer writing into it.
#[path = "../../avmon-hls/tests/common/mod.rs"]
mod origin;

/// Seconds a lease lasts in these tests (renewed every second).
const TTL_S: f64 = 4.0;

struct Node {
    name: String,
    base: String,
    proc: Option<Killed>,
}

impl Node {
    fn pid(&self) -> String {
        self.proc.as_ref().expect("running").0.id().to_string()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {}", self.name);
    }

    /// SIGTERM, and wait for the process to exit.
    fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        let mut p = self.proc.take().unwrap();
        let status = p.0.wait().unwrap();
        std::mem::forget(p);
        status
    }

    fn kill(&mut self) {
        self.signal("KILL");
        self.proc = None;
    }
}

/// A node's config: `evidence` is its `[evidence]` table's body.
fn config(
    dir: &Path,
    pg: &str,
    name: &str,
    port: u16,
    evidence: &str,
    streams: &str,
) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[store]\nurl = \"{pg}\"\n\
             metrics_interval_s = 2\n[evidence]\n{evidence}\n\
             [cluster]\nname = \"{name}\"\nlease_ttl_s = {TTL_S}\ncapacity = 1.0\n{streams}"
        ),
    )
    .unwrap();
    path
}

fn start_node(dir: &Path, pg: &str, name: &str, streams: &str) -> Node {
    start_node_with(dir, pg, name, "enabled = false", streams)
}

fn start_node_with(dir: &Path, pg: &str, name: &str, evidence: &str, streams: &str) -> Node {
    let port = free_tcp_port();
    let cfg = config(dir, pg, name, port, evidence, streams);
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let proc = Killed(
        avmon()
            .args(["run", "--config", cfg.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::blocking::Client::new();
    wait_for(
        &format!("node {name}'s API"),
        Duration::from_secs(30),
        || {
            http.get(format!("{base}/healthz"))
                .send()
                .ok()
                .filter(|r| r.status().is_success())
        },
    );
    Node {
        name: name.into(),
        base,
        proc: Some(proc),
    }
}

fn get(url: &str) -> Option<Value> {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?
        .get(url)
        .send()
        .ok()?
        .json()
        .ok()
}

/// stream id → the node that holds it, as a node's API lists them.
fn holders(node: &Node) -> Option<BTreeMap<String, Option<String>>> {
    let v = get(&format!("{}/api/streams", node.base))?;
    Some(
        v.as_array()?
            .iter()
            .map(|s| {
                (
                    s["id"].as_str().unwrap_or_default().to_string(),
                    s["node"].as_str().map(String::from),
                )
            })
            .collect(),
    )
}

/// All `n` streams held, each by one of `alive`, now.
fn held_by(via: &Node, n: usize, alive: &[&str]) -> Option<BTreeMap<String, String>> {
    let held: BTreeMap<String, String> = holders(via)?
        .into_iter()
        .filter_map(|(s, n)| Some((s, n?)))
        .filter(|(_, n)| alive.contains(&n.as_str()))
        .collect();
    (held.len() == n).then_some(held)
}

/// Wait until all `n` streams are held, each by one of `alive`; the map, and how long it took.
fn all_held_by(
    via: &Node,
    n: usize,
    alive: &[&str],
    timeout: Duration,
) -> (BTreeMap<String, String>, Duration) {
    let t0 = Instant::now();
    let got = wait_for(
        &format!("all {n} streams held by {alive:?}"),
        timeout,
        || held_by(via, n, alive),
    );
    (got, t0.elapsed())
}

fn log_of(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
}

/// The origin: one live playlist that `plain` streams read (`s0`, `s1`, …), and one
/// (`stall/`) whose packager a test stops and starts again, read by the stream `stall`; with
/// the streams' config (all at tier transport) and a webhook notifier to `hook`.
struct Origin {
    _nginx: origin::Nginx,
    _writer: origin::Writer,
    stall_dir: std::path::PathBuf,
    stall_writer: Option<origin::Writer>,
    streams: String,
}

impl Origin {
    fn start(plain: usize, hook: &str) -> Origin {
        let nginx = origin::Nginx::start("");
        let writer = origin::Writer::start(&nginx.root, "");
        let stall_dir = nginx.root.join("stall");
        std::fs::create_dir_all(&stall_dir).unwrap();
        let stall_writer = origin::Writer::start(&stall_dir, "");
        for p in [nginx.root.join("live.m3u8"), stall_dir.join("live.m3u8")] {
            wait_for("FFmpeg's first playlists", Duration::from_secs(15), || {
                p.exists().then_some(())
            });
        }
        let mut streams = String::new();
        for i in 0..plain {
            streams += &format!(
                "[[streams]]\nid = \"s{i}\"\nurl = \"{}\"\ntier = \"transport\"\n\
                 io_timeout_s = 2\n",
                nginx.url("live.m3u8")
            );
        }
        streams += &format!(
            "[[streams]]\nid = \"stall\"\nurl = \"{}\"\ntier = \"transport\"\n\
             io_timeout_s = 2\n[streams.hls]\nstale_factor = 3\n\
             [[notifiers]]\nkind = \"webhook\"\nurl = \"{hook}\"\n",
            nginx.url("stall/live.m3u8")
        );
        Origin {
            _nginx: nginx,
            _writer: writer,
            stall_dir,
            stall_writer: Some(stall_writer),
            streams,
        }
    }

    /// The stalled packager stops (as a crashed one: no last segment, no end tag).
    fn stall(&mut self) {
        self.stall_writer = None;
    }

    /// It starts again.
    fn resume(&mut self) {
        self.stall_writer = Some(origin::Writer::start(&self.stall_dir, ""));
    }
}

#[test]
fn a_cluster_fails_over_hands_over_and_notifies_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let pg = TestPg::shared().fresh_database("cluster_failover");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (hook, got) = receiver(&rt);

    let plain = 5;
    let mut origin = Origin::start(plain, &hook);
    let streams = origin.streams.clone();
    let n = plain + 1;

    // Three nodes, started one after another: the first takes everything, the others join and
    // get their share.
    let mut a = start_node(dir.path(), &pg, "a", &streams);
    all_held_by(&a, n, &["a"], Duration::from_secs(20));
    let mut b = start_node(dir.path(), &pg, "b", &streams);
    let mut c = start_node(dir.path(), &pg, "c", &streams);
    let t0 = Instant::now();
    let held = wait_for(
        "every node holding streams",
        Duration::from_secs(40),
        || {
            let h = held_by(&a, n, &["a", "b", "c"])?;
            let per: BTreeSet<&String> = h.values().collect();
            (per.len() == 3).then_some(h.clone())
        },
    );
    let balance = t0.elapsed();
    eprintln!("balanced: {held:?} ({balance:?})");
    // Seeding the same config on every node wrote the streams once.
    let cluster = get(&format!("{}/api/cluster", b.base)).unwrap();
    assert_eq!(cluster["node"], "b");
    let names: BTreeSet<&str> = cluster["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["alive"] == true)
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, BTreeSet::from(["a", "b", "c"]), "{cluster:#}");
    // Prometheus reads the outbox's counts from PostgreSQL (off the async workers: it used to
    // abort the node).
    let metrics = reqwest::blocking::get(format!("{}/metrics", b.base)).unwrap();
    assert_eq!(metrics.status().as_u16(), 200);
    let text = metrics.text().unwrap();
    assert!(text.contains("avmon_outbox_notifications{"), "{text}");

    // The stalled packager: its stream's alerts are raised (once, by its holder).
    origin.stall();
    let raised = |kind: &str| -> Vec<Value> {
        got.lock()
            .unwrap()
            .iter()
            .filter(|v| v["stream_id"] == "stall" && v["kind"] == kind && v["state"] == "raised")
            .cloned()
            .collect()
    };
    let stale = wait_for("hls.stale raised", Duration::from_secs(20), || {
        raised("hls.stale").first().cloned()
    });
    let down = wait_for("source.down raised", Duration::from_secs(20), || {
        raised("source.down").first().cloned()
    });

    // SIGKILL its holder: every stream runs on the two others within 15 s.
    let holder = holders(&a).unwrap()["stall"].clone().unwrap();
    let (victim, rest): (&mut Node, Vec<&Node>) = match holder.as_str() {
        "a" => (&mut a, vec![&b, &c]),
        "b" => (&mut b, vec![&a, &c]),
        _ => (&mut c, vec![&a, &b]),
    };
    victim.kill();
    let alive: Vec<&str> = rest.iter().map(|n| n.name.as_str()).collect();
    let (after, failover) = all_held_by(rest[0], n, &alive, Duration::from_secs(30));
    eprintln!("failover after SIGKILL of {holder}: {failover:?}: {after:?}");
    assert!(
        failover <= Duration::from_secs(15),
        "failover took {failover:?}"
    );
    // The time nobody watched the stalled stream is recorded as a gap.
    let cluster = get(&format!("{}/api/cluster", rest[0].base)).unwrap();
    let gap = cluster["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["stream"] == "stall")
        .unwrap_or_else(|| panic!("no gap for the stalled stream: {cluster:#}"))
        .clone();
    assert_eq!(gap["reason"], "node_lost", "{gap}");
    assert_eq!(gap["prev_node"], holder.as_str(), "{gap}");
    assert!(gap["duration_s"].as_f64().unwrap() > 0.0, "{gap}");

    // Its new holder continues the open alerts: nothing raised again while the stall goes on.
    let new_holder = after["stall"].clone();
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(raised("hls.stale").len(), 1, "{:#?}", raised("hls.stale"));
    assert_eq!(
        raised("source.down").len(),
        1,
        "{:#?}",
        raised("source.down")
    );
    let via = rest.iter().find(|n| n.name == new_holder).unwrap();
    let s = get(&format!("{}/api/streams/stall", via.base)).unwrap();
    let open: BTreeSet<&str> = s["active_alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    for a in [&stale, &down] {
        assert!(
            open.contains(a["alert_id"].as_str().unwrap()),
            "{} continued on {new_holder}: {s:#}",
            a["kind"]
        );
    }

    // The packager comes back: each alert is cleared once, by the new holder. Within 60 s: a
    // holder that never saw the defect itself (the stream moved again, to balance, after the
    // packager came back) clears a continued alert after 45 s of media without it
    // (CARRY_GRACE_S).
    origin.resume();
    let cleared = |id: &str| -> usize {
        got.lock()
            .unwrap()
            .iter()
            .filter(|v| v["alert_id"] == id && v["state"] == "cleared")
            .count()
    };
    for a in [&stale, &down] {
        let id = a["alert_id"].as_str().unwrap().to_string();
        wait_for(
            &format!("{} cleared", a["kind"]),
            Duration::from_secs(60),
            || (cleared(&id) > 0).then_some(()),
        );
    }

    // SIGSTOP a live node until its streams moved, then SIGCONT: it steps back.
    let frozen_name = alive[1].to_string();
    let (frozen, other) = if a.proc.is_some() && a.name == frozen_name {
        (&a, if b.proc.is_some() { &b } else { &c })
    } else if b.proc.is_some() && b.name == frozen_name {
        (&b, if a.proc.is_some() { &a } else { &c })
    } else {
        (&c, if a.proc.is_some() { &a } else { &b })
    };
    frozen.signal("STOP");
    let (moved, t) = all_held_by(other, n, &[other.name.as_str()], Duration::from_secs(30));
    eprintln!("after SIGSTOP of {frozen_name}: {t:?}: {moved:?}");
    assert!(t <= Duration::from_secs(15), "failover took {t:?}");
    frozen.signal("CONT");
    // Back, it finds its leases taken and stops those streams: its own list shows none held.
    wait_for(
        &format!("{frozen_name} stepping back"),
        Duration::from_secs(15),
        || {
            let h = holders(frozen)?;
            h.values()
                .all(|n| n.as_deref() != Some(frozen_name.as_str()))
                .then_some(())
        },
    );

    // A fourth node joins and gets a share.
    let d = start_node(dir.path(), &pg, "d", &streams);
    let t0 = Instant::now();
    let joined = wait_for("d holding streams", Duration::from_secs(40), || {
        let h = held_by(&d, n, &[&frozen_name, &other.name, "d"])?;
        h.values().any(|n| n == "d").then_some(h.clone())
    });
    let t = t0.elapsed();
    eprintln!("joined: {joined:?} ({t:?})");

    // SIGTERM hands d's streams over at once: no gap.
    let mut d = d;
    let gaps_before = get(&format!("{}/api/cluster", other.base)).unwrap()["gaps"]
        .as_array()
        .unwrap()
        .len();
    let t0 = Instant::now();
    assert!(d.terminate().success());
    let (_, t) = all_held_by(
        other,
        n,
        &[&frozen_name, &other.name],
        Duration::from_secs(20),
    );
    let handover = t0.elapsed();
    eprintln!("hand-over after SIGTERM: {handover:?} ({t:?} after exit)");
    assert!(handover <= Duration::from_secs(10), "{handover:?}");
    let gaps_after = get(&format!("{}/api/cluster", other.base)).unwrap()["gaps"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(gaps_before, gaps_after, "a clean hand-over leaves no gap");

    // Every notification reached the receiver exactly once.
    std::thread::sleep(Duration::from_secs(3));
    let bodies = got.lock().unwrap().clone();
    let mut keys: BTreeMap<String, usize> = BTreeMap::new();
    for b in &bodies {
        *keys
            .entry(b["idempotency_key"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let dups: Vec<_> = keys.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "delivered more than once: {dups:?}");
    for a in [&stale, &down] {
        assert_eq!(cleared(a["alert_id"].as_str().unwrap()), 1, "{a}");
    }
    // And the stopped node's log says it stepped back.
    let log = log_of(dir.path(), &frozen_name);
    assert!(
        log.contains("no longer held by this node") || log.contains("another node holds"),
        "{log}"
    );
}

/// PostgreSQL goes away for longer than a lease while a stream's defect begins: both nodes
/// keep monitoring what they hold (nobody claims anything), the alerts raised meanwhile wait
/// with their notifications, and when the database is back they are written and delivered
/// once each; no stream moved, no gap was recorded, and the alerts clear once.
#[test]
fn a_database_outage_loses_nothing_and_moves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut pg = TestPg::start();
    let url = pg.fresh_database("cluster_outage");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (hook, got) = receiver(&rt);
    let mut origin = Origin::start(3, &hook);
    let streams = origin.streams.clone();
    let n = 4;
    let a = start_node(dir.path(), &url, "a", &streams);
    let b = start_node(dir.path(), &url, "b", &streams);
    let before = wait_for(
        "both nodes holding streams",
        Duration::from_secs(40),
        || {
            let h = held_by(&a, n, &["a", "b"])?;
            (h.values().collect::<BTreeSet<_>>().len() == 2).then_some(h)
        },
    );
    let holder = if before["stall"] == "a" { &a } else { &b };

    // The database goes away; then the packager stalls.
    pg.stop();
    origin.stall();
    // Its holder sees the stall and raises the alerts, though nothing can be written.
    let s = wait_for(
        "the stall seen during the outage",
        Duration::from_secs(20),
        || {
            let s = get(&format!("{}/api/streams/stall", holder.base))?;
            let kinds: BTreeSet<String> = s["active_alerts"]
                .as_array()?
                .iter()
                .filter_map(|a| a["kind"].as_str().map(String::from))
                .collect();
            (kinds.contains("hls.stale") && kinds.contains("source.down")).then_some(s)
        },
    );
    assert_eq!(s["node"], holder.name.as_str(), "{s:#}");
    // Longer than a lease: nothing is claimed, both nodes still monitor their own streams.
    std::thread::sleep(Duration::from_secs_f64(TTL_S * 2.0));
    for node in [&a, &b] {
        let local = holders(node).unwrap();
        let mine: usize = before.values().filter(|h| **h == node.name).count();
        let running = local
            .values()
            .filter(|h| h.as_deref() == Some(node.name.as_str()))
            .count();
        assert_eq!(running, mine, "{} during the outage: {local:?}", node.name);
    }
    assert!(
        got.lock()
            .unwrap()
            .iter()
            .all(|v| v["stream_id"] != "stall"),
        "nothing can be queued for delivery while the database is away"
    );

    // Back: what waited is written and delivered, once; nothing moved, no gap.
    pg.restart();
    for kind in ["hls.stale", "source.down"] {
        wait_for(
            &format!("{kind} delivered"),
            Duration::from_secs(60),
            || {
                got.lock()
                    .unwrap()
                    .iter()
                    .any(|v| {
                        v["stream_id"] == "stall" && v["kind"] == kind && v["state"] == "raised"
                    })
                    .then_some(())
            },
        );
    }
    let after = wait_for("every stream held again", Duration::from_secs(20), || {
        held_by(&a, n, &["a", "b"])
    });
    assert_eq!(after, before, "the streams stayed where they were");
    let cluster = get(&format!("{}/api/cluster", a.base)).unwrap();
    assert_eq!(cluster["gaps"], serde_json::json!([]), "{cluster:#}");

    // The packager returns: each alert clears once.
    origin.resume();
    let ids: Vec<String> = got
        .lock()
        .unwrap()
        .iter()
        .filter(|v| v["stream_id"] == "stall" && v["state"] == "raised")
        .map(|v| v["alert_id"].as_str().unwrap().to_string())
        .collect();
    assert!(ids.len() >= 2, "{ids:?}");
    for id in &ids {
        wait_for(&format!("{id} cleared"), Duration::from_secs(40), || {
            got.lock()
                .unwrap()
                .iter()
                .any(|v| v["alert_id"] == id.as_str() && v["state"] == "cleared")
                .then_some(())
        });
    }
    std::thread::sleep(Duration::from_secs(2));
    let keys = keys_received(&got);
    assert!(
        keys.values().all(|n| *n == 1),
        "delivered more than once: {keys:?}"
    );
    drop((a, b));
}

/// Whether `node` runs stream `id` itself now (not only lists it from the database): its own
/// status of it carries live counters.
fn runs(node: &Node, id: &str) -> bool {
    get(&format!("{}/api/streams/{id}", node.base)).is_some_and(|s| {
        s["node"] == node.name.as_str() && s["frames_audio"].as_u64().unwrap_or(0) > 0
    })
}

/// Past `db_outage_s` without the database, a node stops its streams (another node may hold
/// them by now). When the database answers again, the streams it still holds but no longer
/// runs are given up and watched again, with the time nobody watched them recorded as lost by
/// that node; they are not left held and unwatched.
#[test]
fn past_the_outage_allowance_streams_stop_and_are_watched_again_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut pg = TestPg::start();
    let url = pg.fresh_database("cluster_long_outage");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (hook, _got) = receiver(&rt);
    let origin = Origin::start(1, &hook);
    let outage_s = TTL_S * 1.5;
    // Keys after `capacity` in the node's [cluster] table.
    let streams = format!("db_outage_s = {outage_s}\n{}", origin.streams);
    let a = start_node(dir.path(), &url, "a", &streams);
    let ids = ["s0", "stall"];
    wait_for("a running both streams", Duration::from_secs(40), || {
        ids.iter().all(|id| runs(&a, id)).then_some(())
    });

    pg.stop();
    wait_for(
        "a stopping its streams past db_outage_s",
        Duration::from_secs_f64(outage_s + 20.0),
        || {
            log_of(dir.path(), "a")
                .contains("stopping this node's streams until the database answers")
                .then_some(())
        },
    );
    pg.restart();
    let log = wait_for(
        "the streams a held but no longer ran given up",
        Duration::from_secs(30),
        || {
            let log = log_of(dir.path(), "a");
            log.contains("held by this node but not running here: given up")
                .then_some(log)
        },
    );
    assert!(log.contains("the database answers again"), "{log}");
    // Watched again: by a, the only node, once it waited a TTL after the outage.
    wait_for(
        "a running both streams again",
        Duration::from_secs(40),
        || ids.iter().all(|id| runs(&a, id)).then_some(()),
    );
    let cluster = get(&format!("{}/api/cluster", a.base)).unwrap();
    let gaps: Vec<&Value> = cluster["gaps"].as_array().unwrap().iter().collect();
    for id in ids {
        let gap = gaps.iter().find(|g| g["stream"] == id).unwrap_or_else(|| {
            panic!(
                "no gap recorded for {id}: {cluster:#}\n{}",
                log_of(dir.path(), "a")
            )
        });
        assert_eq!(
            (&gap["reason"], &gap["prev_node"]),
            (&Value::from("node_lost"), &Value::from("a")),
            "{gap:#}"
        );
        assert!(gap["duration_s"].as_f64().unwrap() > 0.0, "{gap:#}");
    }
    drop(a);
}

/// Evidence is kept by the node that raised the alert; any node's API serves it (fetched from
/// that node with the caller's token), and a pinned push input runs on its node only.
#[test]
fn any_node_serves_the_evidence_of_any_alert() {
    let dir = tempfile::tempdir().unwrap();
    let pg = TestPg::shared().fresh_database("cluster_evidence");
    let udp = free_udp_port();
    let streams = format!(
        "[[streams]]\nid = \"cam\"\nurl = \"udp://127.0.0.1:{udp}\"\nnode = \"a\"\n\
         io_timeout_s = 3\n[streams.detectors.black]\nmin_duration = 1.0\n"
    );
    let evidence = |n: &str| format!("dir = \"{}\"", dir.path().join(n).display());
    let a = start_node_with(dir.path(), &pg, "a", &evidence("a-evidence"), &streams);
    let b = start_node_with(dir.path(), &pg, "b", &evidence("b-evidence"), &streams);
    let held = wait_for("cam held", Duration::from_secs(20), || {
        held_by(&b, 1, &["a", "b"])
    });
    assert_eq!(
        held["cam"], "a",
        "a push input runs on the node it is pinned to"
    );
    let _synth = synth_live(udp, 12, &["black@2-5"]);
    let alert = wait_for(
        "the black alert, through b",
        Duration::from_secs(30),
        || {
            get(&format!("{}/api/alerts?stream=cam", b.base))?
                .as_array()?
                .iter()
                .find(|a| a["kind"] == "video.black")
                .cloned()
        },
    );
    let id = alert["id"].as_str().unwrap();
    let http = reqwest::blocking::Client::new();
    let fetch = |node: &Node| {
        let r = http
            .get(format!("{}/api/alerts/{id}/snapshot.jpg", node.base))
            .send()
            .unwrap();
        (r.status().as_u16(), r.bytes().unwrap().to_vec())
    };
    let from_a = wait_for("the snapshot on a", Duration::from_secs(20), || {
        let (st, body) = fetch(&a);
        (st == 200).then_some(body)
    });
    assert_eq!(&from_a[..2], [0xff, 0xd8], "a JPEG");
    assert!(
        std::fs::read_dir(dir.path().join("b-evidence"))
            .map(|d| d.count() == 0)
            .unwrap_or(true),
        "b keeps no evidence of a's alert"
    );
    let (st, from_b) = fetch(&b);
    assert_eq!(st, 200);
    assert_eq!(from_b, from_a, "b serves a's snapshot");
    // The stream's live thumbnail too: b does not run cam, and fetches it from a.
    let thumb = |node: &Node| {
        let r = http
            .get(format!("{}/api/streams/cam/thumbnail.jpg", node.base))
            .send()
            .unwrap();
        (r.status().as_u16(), r.bytes().unwrap().to_vec())
    };
    let (st, t) = thumb(&b);
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&t));
    assert_eq!(&t[..2], [0xff, 0xd8], "a JPEG");
    assert_eq!(thumb(&a).0, 200);
    let r = http
        .get(format!("{}/api/alerts/no-such-alert/snapshot.jpg", b.base))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let body: Value = r.json().unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("any live node"),
        "{body}"
    );
}

/// A second live node with a node's name, and a database that does not answer, are refused at
/// start with messages that say what to do.
#[test]
fn a_duplicate_name_and_an_unreachable_database_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let pg = TestPg::shared().fresh_database("cluster_refusals");
    let _a = start_node(dir.path(), &pg, "a", "");
    let port = free_tcp_port();
    let t0 = Instant::now();
    let err = refused_run(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[store]\nurl = \"{pg}\"\n\
             [cluster]\nname = \"a\"\nlease_ttl_s = {TTL_S}\n"
        ),
    );
    assert!(
        err.contains("another node named \"a\" is alive") && err.contains("another [cluster] name"),
        "{err}"
    );
    // It waited for the name to free up (a restarted node's previous instance), then gave up.
    assert!(
        t0.elapsed() >= Duration::from_secs_f64(TTL_S),
        "{:?}",
        t0.elapsed()
    );

    let closed = free_tcp_port();
    let err = refused_run(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\
             [store]\nurl = \"postgres://avmon:secret@127.0.0.1:{closed}/avmon\"\n[cluster]\n"
        ),
    );
    assert!(err.contains("opening the cluster's store"), "{err}");
    assert!(
        !err.contains("secret"),
        "the password is never shown: {err}"
    );
}
