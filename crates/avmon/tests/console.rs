//! The web console in a real headless Chromium, driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`, which `./dev` installs) with plain HTTP JSON: `avmon run` monitors three
//! live UDP streams from `avmon synth`, one of which goes black. The wall shows the three, the
//! alert appears on its tile without a reload, the alerts view acknowledges it, and the stream
//! detail shows its picture and timeline. A second run signs in with a token, holds a wall of
//! 151 streams and plots a stream's stored metrics. A third runs a cluster of two nodes on a
//! real PostgreSQL and a live HLS origin: node a's console lists both nodes, which streams each
//! holds and the node on every tile; when node b is killed it shows b down, its streams taken
//! over by a with the monitoring gaps, and b's pinned stream unwatched. A standalone host shows
//! no cluster view. Screenshots go to `target/test-artifacts/console/`.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use avmon_testpg::TestPg;
use common::*;
use serde_json::{json, Value};

/// The HLS origin of avmon-hls's tests: nginx, and FFmpeg's HLS muxer writing into it.
#[path = "../../avmon-hls/tests/common/mod.rs"]
mod origin;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A WebDriver session on a chromedriver of our own.
struct Browser {
    http: reqwest::blocking::Client,
    session: String,
    _driver: Killed,
    _chrome: Killed,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        let driver_bin = ["chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|b| Command::new(b).arg("--version").output().is_ok())
            .expect("chromedriver not found: install chromium and chromium-driver (./dev does)");
        let port = free_tcp_port();
        let driver = Killed(
            Command::new(driver_bin)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        wait_for("chromedriver", Duration::from_secs(20), || {
            let v: Value = http
                .get(format!("{base}/status"))
                .send()
                .ok()?
                .json()
                .ok()?;
            (v["value"]["ready"] == true).then_some(())
        });
        let binary = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("chromium not found: install chromium (./dev does)");
        // Chromium is started here, on a DevTools port at 127.0.0.1, and chromedriver attaches to
        // it there: left to start it, chromedriver reaches it by the name `localhost`, which a
        // bare system without /etc/hosts does not resolve.
        let profile = tempfile::tempdir().unwrap();
        let devtools = free_tcp_port();
        let chrome = Killed(
            Command::new(binary)
                .args([
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,900",
                    "--no-first-run",
                    "--disable-extensions",
                    "--remote-debugging-address=127.0.0.1",
                ])
                .arg(format!("--remote-debugging-port={devtools}"))
                .arg(format!("--user-data-dir={}", profile.path().display()))
                .arg("about:blank")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_for("chromium's DevTools", Duration::from_secs(30), || {
            http.get(format!("http://127.0.0.1:{devtools}/json/version"))
                .send()
                .ok()
                .filter(|r| r.status().is_success())
        });
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"debuggerAddress": format!("127.0.0.1:{devtools}")}
        }}});
        let v: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_string();
        Browser {
            http,
            session: format!("{base}/session/{session}"),
            _driver: driver,
            _chrome: chrome,
            _profile: profile,
        }
    }

    fn cmd(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.session));
        if !body.is_null() {
            req = req.json(&body);
        }
        let r = req.send().unwrap();
        let v: Value = r.json().unwrap();
        assert!(
            v["value"].get("error").is_none(),
            "WebDriver {path}: {}",
            v["value"]
        );
        v["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", json!({ "url": url }));
    }

    /// Run `script` (a function body) in the page and return its value.
    fn js(&self, script: &str) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
    }

    fn find(&self, css: &str) -> String {
        let v = self.cmd(
            reqwest::Method::POST,
            "/element",
            json!({"using": "css selector", "value": css}),
        );
        v[ELEMENT].as_str().unwrap().to_string()
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{e}/click"),
            json!({}),
        );
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            json!({ "text": text }),
        );
    }

    /// Wait until `script` returns something other than null/false; returns it.
    fn wait(&self, what: &str, script: &str) -> Value {
        self.wait_up_to(what, Duration::from_secs(40), script)
    }

    fn wait_up_to(&self, what: &str, timeout: Duration, script: &str) -> Value {
        wait_for(what, timeout, || {
            let v = self.js(script);
            (!v.is_null() && v != false).then_some(v)
        })
    }

    fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.cmd(reqwest::Method::GET, "/screenshot", Value::Null);
        let png = base64_decode(b64.as_str().unwrap());
        assert_eq!(&png[1..4], b"PNG");
        let dir = artifacts();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.http.delete(&self.session).send();
    }
}

fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("test-artifacts/console")
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let n = chunk.iter().take_while(|&&c| c != b'=').count();
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().take(n).enumerate() {
            acc |= val(c) << (18 - 6 * i);
        }
        out.extend_from_slice(&acc.to_be_bytes()[1..n]);
    }
    out
}

#[test]
fn the_wall_shows_streams_and_a_live_alert_that_can_be_acknowledged() {
    let ports: Vec<u16> = (0..3).map(|_| free_udp_port()).collect();
    let dir = tempfile::tempdir().unwrap();
    let streams: String = ["cam-1", "cam-2", "cam-3"]
        .iter()
        .zip(&ports)
        .map(|(id, p)| {
            format!("[[streams]]\nid = \"{id}\"\nurl = \"udp://127.0.0.1:{p}\"\nio_timeout_s = 3\n")
        })
        .collect();
    let (service, http, base) = start_service(dir.path(), &streams);
    let browser = Browser::start();
    browser.goto(&format!("{base}/"));

    let mut senders: Vec<Killed> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut cmd = avmon();
            cmd.args(["synth", &format!("udp://127.0.0.1:{p}"), "--duration", "60"])
                .args(["--width", "320", "--height", "180", "--preset", "ultrafast"]);
            if i == 1 {
                // Black from 8 s to the end: the alert stays raised while it is acknowledged.
                cmd.args(["--defect", "black@8-60"]);
            }
            Killed(cmd.stderr(Stdio::null()).spawn().unwrap())
        })
        .collect();

    // The wall: one tile per stream, each ok once media flows, with its thumbnail.
    let n = browser.wait(
        "three tiles",
        "const t = document.querySelectorAll('#wall .tile'); return t.length === 3 ? t.length : null;",
    );
    assert_eq!(n, 3);
    browser.wait(
        "every tile ok",
        "return [...document.querySelectorAll('#wall .tile')].every(t => t.dataset.status === 'ok');",
    );
    browser.wait(
        "a thumbnail on cam-1's tile",
        "const i = document.querySelector('.tile[data-id=\"cam-1\"] img'); return i && i.complete && i.naturalWidth === 320;",
    );
    // A standalone host: no Cluster tab, no node on the tiles, and #/cluster is the wall.
    let standalone = browser.js(
        "return [document.querySelector('#nav-cluster').hidden, document.querySelector('#node-name').hidden,
                 [...document.querySelectorAll('#wall .tile .node')].every(n => n.hidden && !n.textContent)];",
    );
    assert_eq!(standalone, json!([true, true, true]));
    browser.js("location.hash = '#/cluster'; return true;");
    browser.wait(
        "#/cluster back to the wall",
        "return location.hash === '#/' && !document.querySelector('#view-wall').hidden
                && document.querySelector('#view-cluster').hidden;",
    );
    // Marks this page load: a reload would lose it.
    browser.js("window.__sameLoad = 'yes'; return true;");

    // What the console is served with, as the browser reads it, and what the browser makes of
    // it: an inline script is refused.
    browser.js(
        "window.__violations = [];
         document.addEventListener('securitypolicyviolation', e => window.__violations.push(e.violatedDirective));
         fetch('/', {cache: 'no-store'}).then(r => { window.__headers = [...r.headers.entries()]; });
         const s = document.createElement('script');
         s.textContent = 'window.__inlineRan = true;';
         document.body.appendChild(s);
         return true;",
    );
    let headers: BTreeMap<String, String> = serde_json::from_value(browser.wait(
        "the page's headers",
        "return window.__headers ? Object.fromEntries(window.__headers) : null;",
    ))
    .unwrap();
    let csp = &headers["content-security-policy"];
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    let refused = browser.wait(
        "the inline script refused",
        "return window.__violations.length ? [window.__inlineRan === undefined, window.__violations] : null;",
    );
    assert_eq!(refused, json!([true, ["script-src-elem"]]));

    // The black stream's alert arrives on its tile without a reload; the others stay ok.
    browser.wait(
        "video.black on cam-2's tile",
        "const t = document.querySelector('.tile[data-id=\"cam-2\"]');
         return t.dataset.status === 'alarm' && !!t.querySelector('.alerts [data-kind=\"video.black\"]');",
    );
    let others = browser.js(
        "return ['cam-1', 'cam-3'].map(id => document.querySelector(`.tile[data-id=\"${id}\"]`).dataset.status);",
    );
    assert_eq!(others, json!(["ok", "ok"]));
    assert_eq!(browser.js("return window.__sameLoad || null;"), "yes");
    browser.wait(
        "audio level bars",
        "return document.querySelectorAll('.tile[data-id=\"cam-1\"] .levels .ch').length >= 1;",
    );
    let wall = browser.screenshot("wall.png");

    // Search narrows the wall.
    browser.type_into("#search", "cam-2");
    let visible = browser.js(
        "return [...document.querySelectorAll('#wall .tile')].filter(t => !t.hidden).map(t => t.dataset.id);",
    );
    assert_eq!(visible, json!(["cam-2"]));
    browser.js("const s = document.querySelector('#search'); s.value = ''; s.dispatchEvent(new Event('input')); return true;");

    // The alerts view lists it with its evidence; acknowledging it, with a comment.
    browser.click("header nav a[data-nav=alerts]");
    browser.wait(
        "the alert in the alerts view",
        "return !!document.querySelector('#alerts tr[data-kind=\"video.black\"] button.ack');",
    );
    browser.wait(
        "the snapshot in the alerts view",
        "const i = document.querySelector('#alerts tr[data-kind=\"video.black\"] a.snapshot img'); return i && i.complete && i.naturalWidth === 320;",
    );
    assert_eq!(
        browser
            .js("return !!document.querySelector('#alerts tr[data-kind=\"video.black\"] a.clip');"),
        true
    );
    browser.click("#alerts tr[data-kind=\"video.black\"] button.ack");
    browser.type_into("#ack-comment", "switching to the backup encoder");
    browser.click("#ack-ok");
    let msg = browser.wait(
        "the acknowledgement's outcome",
        "const m = document.querySelector('#alerts-msg').textContent; return m.startsWith('acknowledg') ? m : null;",
    );
    let msg = msg.as_str().unwrap().to_string();
    let alerts = browser.screenshot("alerts.png");
    assert!(msg.starts_with("acknowledged"), "{msg}");
    browser.wait(
        "the row shows the ack",
        "const r = document.querySelector('#alerts tr[data-kind=\"video.black\"]'); return r && !r.querySelector('button.ack');",
    );
    // And the store has it, with the comment.
    let stored: Value = http
        .get(format!("{base}/api/alerts?stream=cam-2&kind=video.black"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        stored[0]["ack"]["comment"], "switching to the backup encoder",
        "{stored}"
    );

    // The stream detail: its picture, its alert on the timeline, its configuration.
    browser.js("location.hash = '#/stream/cam-2'; return true;");
    browser.wait(
        "the current picture",
        "const i = document.querySelector('#d-picture'); return i.complete && i.naturalWidth === 320;",
    );
    browser.wait(
        "the alert on the timeline",
        "return !!document.querySelector('#d-timeline svg rect');",
    );
    let info = browser.js("return document.querySelector('#d-info').textContent;");
    assert!(info.as_str().unwrap().contains("video.black"), "{info}");
    let config = browser.js("return document.querySelector('#d-config').textContent;");
    assert!(
        config.as_str().unwrap().contains("\"io_timeout_s\": 3"),
        "{config}"
    );
    let detail = browser.screenshot("detail.png");
    eprintln!(
        "screenshots: {} {} {}",
        wall.display(),
        alerts.display(),
        detail.display()
    );

    for s in &mut senders {
        let _ = s.0.kill();
    }
    drop(browser);
    drop(service);
}

/// The admin token of the signed-in test.
const ADMIN: &str = "console-admin-token-4b7e1d";

#[test]
fn a_signed_in_console_holds_a_wall_of_151_streams_and_plots_stored_metrics() {
    let live = free_udp_port();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = format!(
        "[api]\ntokens = [{{ name = \"ops\", role = \"admin\", token = \"{ADMIN}\" }}]\n\
         [[streams]]\nid = \"cam\"\nurl = \"udp://127.0.0.1:{live}\"\n"
    );
    // 150 streams nobody sends to: a wall of hundreds of tiles, most of them waiting.
    for i in 0..150 {
        cfg += &format!(
            "[[streams]]\nid = \"idle-{i:03}\"\nurl = \"udp://127.0.0.1:{}\"\n",
            free_udp_port()
        );
    }
    let (service, http, base) = start_service(dir.path(), &cfg);
    let _sender = synth_live(live, 60, &[]);
    let browser = Browser::start();
    browser.goto(&format!("{base}/"));

    // Without a token the API answers 401, and the console asks for one.
    browser.wait(
        "the sign-in dialog",
        "return document.querySelector('#signin').open || null;",
    );
    assert_eq!(
        browser.js("return document.querySelectorAll('#wall .tile').length;"),
        0
    );
    browser.type_into("#signin-token", ADMIN);
    browser.click("#signin-ok");

    // Signed in: every stream is a tile, and the live one shows its picture (fetched with the
    // token as `access_token`, since an <img> cannot send headers).
    browser.wait(
        "151 tiles",
        "return document.querySelectorAll('#wall .tile').length === 151 || null;",
    );
    assert_eq!(
        browser.js("return document.querySelector('#signin-open').textContent;"),
        "Signed in"
    );
    browser.wait(
        "the live tile ok with its thumbnail",
        "const t = document.querySelector('.tile[data-id=\"cam\"]'); const i = t && t.querySelector('img');
         return t.dataset.status === 'ok' && i && i.complete && i.naturalWidth === 320;",
    );
    browser.type_into("#search", "idle-14");
    let visible = browser
        .js("return [...document.querySelectorAll('#wall .tile')].filter(t => !t.hidden).length;");
    assert_eq!(visible, 10, "idle-140 to idle-149");
    browser.js("const s = document.querySelector('#search'); s.value = ''; s.dispatchEvent(new Event('input')); return true;");
    let wall = browser.screenshot("wall-151.png");

    // The live stream's detail plots what the store kept: loudness, bitrate and the delay
    // factor, with points.
    wait_for(
        "three stored metrics periods",
        Duration::from_secs(40),
        || {
            let v: Value = http
                .get(format!("{base}/api/streams/cam/metrics"))
                .bearer_auth(ADMIN)
                .send()
                .ok()?
                .json()
                .ok()?;
            (v["samples"].as_array()?.len() >= 3).then_some(())
        },
    );
    browser.js("location.hash = '#/stream/cam'; return true;");
    let plotted = browser.wait(
        "loudness, bitrate and the delay factor (MDI, a UDP input) plotted",
        "const f = [...document.querySelectorAll('#d-plots figure')];
         const pts = t => { const x = f.find(x => x.querySelector('figcaption').textContent.startsWith(t)); const l = x && x.querySelector('polyline');
                            return l ? l.getAttribute('points').split(' ').filter(Boolean).length : 0; };
         const got = [pts('Short-term loudness'), pts('Bitrate'), pts('Delay factor')];
         return got.every(n => n >= 2) ? got : null;",
    );
    eprintln!("points plotted (loudness, bitrate, delay factor): {plotted}");
    browser.js("document.querySelector('#d-plots').scrollIntoView(); return true;");
    let detail = browser.screenshot("detail-plots.png");
    eprintln!("screenshots: {} {}", wall.display(), detail.display());
    drop(browser);
    drop(service);
}

/// Seconds a lease lasts in the cluster test: a killed node is down this long after its last
/// renewal.
const CLUSTER_TTL_S: u32 = 3;

/// `avmon run` as node `name` of a cluster on the database `pg` (in a folder of its own under
/// `dir`), with `streams` and no evidence; the process and its API's URL, once that answers.
fn start_node(dir: &std::path::Path, pg: &str, name: &str, streams: &str) -> (Killed, String) {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).unwrap();
    let cfg = format!(
        "[evidence]\nenabled = false\n[cluster]\nname = \"{name}\"\n\
         lease_ttl_s = {CLUSTER_TTL_S}\ncapacity = 1.0\n{streams}"
    );
    let (proc, _, base) = start_service_on(&home, pg, &cfg);
    (proc, base)
}

/// The cluster as the API at `base` tells it: stream id → its node (`None`: unwatched), and
/// `GET /api/cluster`.
fn cluster_of(base: &str) -> Option<(BTreeMap<String, Option<String>>, Value)> {
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?;
    let get = |path: &str| -> Option<Value> {
        http.get(format!("{base}{path}")).send().ok()?.json().ok()
    };
    let held = get("/api/streams")?
        .as_array()?
        .iter()
        .map(|s| {
            Some((
                s["id"].as_str()?.to_string(),
                s["node"].as_str().map(String::from),
            ))
        })
        .collect::<Option<_>>()?;
    Some((held, get("/api/cluster")?))
}

/// `dom[key]` (of [`CLUSTER_DOM`]) as a `T`.
fn dom_rows<T: serde::de::DeserializeOwned>(dom: &Value, key: &str) -> Option<T> {
    serde_json::from_value(dom[key].clone()).ok()
}

/// What the console shows of the cluster: its node rows (name, state, the streams count, the
/// streams listed as held), its tiles (id, node, the node label, status), its unwatched rows
/// (stream, pinned to) and its gap rows (stream, reason, "prev → next").
const CLUSTER_DOM: &str = "
    const text = (r, sel) => r.querySelector(sel).textContent;
    return {
      nodes: [...document.querySelectorAll('#cluster-nodes tbody tr[data-node]')].map(r => [
        r.dataset.node, r.dataset.state, +text(r, 'td.streams'),
        [...r.querySelectorAll('td.holds a')].map(a => a.textContent)]),
      tiles: [...document.querySelectorAll('#wall .tile')].map(t => [
        t.dataset.id, t.dataset.node, t.querySelector('.node').textContent, t.dataset.status]),
      unwatched: [...document.querySelectorAll('#cluster-unwatched tbody tr[data-stream]')].map(r => [
        r.dataset.stream, r.lastElementChild.textContent]),
      gaps: [...document.querySelectorAll('#cluster-gaps tbody tr[data-stream]')].map(r => [
        r.dataset.stream, r.dataset.reason, text(r, 'td.nodes')]),
    };";

/// The streams of `held` (stream → node) held by `node`, sorted.
fn held_by(held: &BTreeMap<String, Option<String>>, node: &str) -> Vec<String> {
    held.iter()
        .filter(|(_, n)| n.as_deref() == Some(node))
        .map(|(s, _)| s.clone())
        .collect()
}

#[test]
fn a_cluster_nodes_console_shows_the_nodes_their_streams_and_a_failover() {
    let dir = tempfile::tempdir().unwrap();
    let pg = TestPg::shared().fresh_database("console_cluster");
    let nginx = origin::Nginx::start("");
    let _writer = origin::Writer::start(&nginx.root, "");
    let playlist = nginx.root.join("live.m3u8");
    wait_for("FFmpeg's first playlist", Duration::from_secs(15), || {
        playlist.exists().then_some(())
    });
    // Three pulled streams any node can monitor, and a push input pinned to each node (nobody
    // sends to them): one only its node can receive, so b's goes unwatched while b is down.
    let hls = ["news", "sport", "weather"];
    let mut streams = String::new();
    for id in hls {
        streams += &format!(
            "[[streams]]\nid = \"{id}\"\nurl = \"{}\"\ntier = \"transport\"\nio_timeout_s = 2\n",
            nginx.url("live.m3u8")
        );
    }
    for (id, node) in [("desk", "a"), ("studio", "b")] {
        streams += &format!(
            "[[streams]]\nid = \"{id}\"\nurl = \"udp://127.0.0.1:{}\"\nnode = \"{node}\"\nio_timeout_s = 2\n",
            free_udp_port()
        );
    }
    let n = hls.len() + 2;

    // b first, so that it holds pulled streams whatever a's share turns out to be; then a.
    let (mut b, b_base) = start_node(dir.path(), &pg, "b", &streams);
    wait_for(
        "b holding every stream it may",
        Duration::from_secs(30),
        || {
            let (h, _) = cluster_of(&b_base)?;
            (h.len() == n && h.iter().all(|(s, v)| (s == "desk") == v.is_none())).then_some(())
        },
    );
    let (a, a_base) = start_node(dir.path(), &pg, "a", &streams);

    let browser = Browser::start();
    browser.goto(&format!("{a_base}/"));
    browser.wait(
        "the Cluster tab",
        "return !document.querySelector('#nav-cluster').hidden
                && document.querySelector('#node-name').textContent === 'node a';",
    );
    browser.click("header nav a[data-nav=cluster]");

    // Both nodes alive; each one's count and streams as the API has them, on its row and on
    // the tiles. The cluster may still be balancing: wait until the page and the API agree.
    let (before, view) = wait_for(
        "the cluster view agreeing with the API",
        Duration::from_secs(60),
        || {
            let (held, cluster) = cluster_of(&a_base)?;
            let dom = browser.js(CLUSTER_DOM);
            if held.len() != n || held.values().any(Option::is_none) {
                return None;
            }
            // b (first up, so it took the pulled streams) keeps some once balanced: one to
            // fail over.
            if !held_by(&held, "b")
                .iter()
                .any(|s| hls.contains(&s.as_str()))
            {
                return None;
            }
            let mut rows: Vec<(String, String, u64, Vec<String>)> = dom_rows(&dom, "nodes")?;
            rows.sort();
            let mut want = Vec::new();
            for node in ["a", "b"] {
                let api = cluster["nodes"]
                    .as_array()?
                    .iter()
                    .find(|x| x["name"] == node)?;
                let mine = held_by(&held, node);
                if api["alive"] != true || api["streams"].as_u64()? != mine.len() as u64 {
                    return None;
                }
                want.push((
                    node.to_string(),
                    "alive".to_string(),
                    mine.len() as u64,
                    mine,
                ));
            }
            let tiles: Vec<(String, String, String, String)> = dom_rows(&dom, "tiles")?;
            let tiles_agree = tiles.len() == n
                && tiles.iter().all(|(id, node, label, _)| {
                    held.get(id).cloned().flatten().as_deref() == Some(node.as_str())
                        && label.split_whitespace().any(|w| w == node)
                });
            (rows == want && tiles_agree).then_some((held, tiles))
        },
    );
    eprintln!("held before the kill: {before:?}; tiles: {view:?}");
    let b_pulled: Vec<String> = held_by(&before, "b")
        .into_iter()
        .filter(|s| hls.contains(&s.as_str()))
        .collect();
    assert!(
        !b_pulled.is_empty(),
        "b should hold a pulled stream to fail over: {before:?}"
    );
    assert_eq!(before["studio"].as_deref(), Some("b"), "pinned to b");
    assert_eq!(before["desk"].as_deref(), Some("a"), "pinned to a");
    // This node is marked as such; b links to its own console.
    let links = browser.js(
        "return [...document.querySelectorAll('#cluster-nodes tbody tr[data-node]')].map(r => {
           const a = r.querySelector('td.name a'); return [r.dataset.node, a ? a.getAttribute('href') : r.querySelector('td.name').textContent];
         });",
    );
    assert_eq!(
        links,
        json!([["a", "a (this node)"], ["b", format!("{b_base}/")]]),
        "{links}"
    );
    let cluster_png = browser.screenshot("cluster.png");

    // The wall and a stream's detail name the node.
    browser.click("header nav a[data-nav=wall]");
    let wall_png = browser.screenshot("cluster-wall.png");
    let first = &b_pulled[0];
    browser.js(&format!("location.hash = '#/stream/{first}'; return true;"));
    // The cluster may still move it (balancing): the detail follows whoever the API says holds
    // it now.
    let (node_row, holder) = wait_for(
        "the node in the stream detail",
        Duration::from_secs(40),
        || {
            let row = browser.js(
            "const r = document.querySelector('#d-info tr[data-key=node]'); return r && r.lastElementChild.textContent;",
        );
            let holder = cluster_of(&a_base)?
                .0
                .get(first.as_str())
                .cloned()
                .flatten()?;
            let want = if holder == "a" {
                "a (this node)".to_string()
            } else {
                holder.clone()
            };
            (row == want.as_str()).then_some((row, holder))
        },
    );
    assert!(
        node_row
            .as_str()
            .is_some_and(|r| r.starts_with(holder.as_str())),
        "{first}: {node_row} for {holder}"
    );

    // SIGKILL b: once its leases run out (the TTL) it is down, a takes its pulled streams over
    // with a gap in monitoring (node lost), and the stream pinned to b is unwatched.
    browser.click("header nav a[data-nav=cluster]");
    // What b holds now (balancing may have moved some since): those fail over.
    let b_pulled: Vec<String> = held_by(&cluster_of(&a_base).unwrap().0, "b")
        .into_iter()
        .filter(|s| hls.contains(&s.as_str()))
        .collect();
    let killed = std::time::Instant::now();
    b.0.kill().unwrap();
    b.0.wait().unwrap();
    // Down once it has not renewed for a lease TTL: not before.
    let seen_ago = browser.wait_up_to(
        "b down in the cluster view",
        Duration::from_secs(30),
        "const r = document.querySelector('#cluster-nodes tr[data-node=b]');
         return r && r.dataset.state === 'down' && +r.dataset.seenAgo;",
    );
    let down_after = killed.elapsed();
    assert!(
        seen_ago.as_f64().unwrap() >= f64::from(CLUSTER_TTL_S),
        "b shown down {seen_ago} s after its last renewal"
    );
    let after = wait_for(
        "a's takeover in the cluster view",
        Duration::from_secs(60),
        || {
            let (held, cluster) = cluster_of(&a_base)?;
            let dom = browser.js(CLUSTER_DOM);
            let gaps: Vec<(String, String, String)> = dom_rows(&dom, "gaps")?;
            let tiles: Vec<(String, String, String, String)> = dom_rows(&dom, "tiles")?;
            let unwatched: Vec<(String, String)> = dom_rows(&dom, "unwatched")?;
            let taken = b_pulled
                .iter()
                .chain([&"desk".to_string()])
                .all(|s| held.get(s).cloned().flatten().as_deref() == Some("a"));
            let gapped = b_pulled.iter().all(|s| {
                gaps.iter()
                    .any(|(g, reason, nodes)| g == s && reason == "node_lost" && nodes == "b → a")
            });
            // Every gap row is one the API reports.
            let api_gaps = cluster["gaps"].as_array()?;
            let true_gaps = gaps.iter().all(|(g, reason, nodes)| {
                api_gaps.iter().any(|x| {
                    x["stream"] == g.as_str()
                        && x["reason"] == reason.as_str()
                        && *nodes
                            == format!(
                                "{} → {}",
                                x["prev_node"].as_str().unwrap_or("—"),
                                x["next_node"].as_str().unwrap_or_default()
                            )
                })
            });
            let tiles_moved = tiles.iter().all(|(id, node, label, status)| {
                if id == "studio" {
                    node.is_empty()
                        && status == "unwatched"
                        && label.contains("no node monitors it")
                } else {
                    node == "a" && label.split_whitespace().any(|w| w == "a")
                }
            });
            let studio_unwatched = unwatched == [("studio".to_string(), "b".to_string())];
            (taken && gapped && true_gaps && tiles_moved && studio_unwatched)
                .then_some((held, gaps))
        },
    );
    let taken_after = killed.elapsed();
    eprintln!(
        "after SIGKILL of b: down in the view after {down_after:?}, taken over after \
         {taken_after:?}: {after:?}"
    );
    let rows = browser.js(
        "return [...document.querySelectorAll('#cluster-nodes tbody tr[data-node]')].map(r => [r.dataset.node, r.dataset.state]);",
    );
    assert_eq!(rows, json!([["a", "alive"], ["b", "down"]]));
    let failover_png = browser.screenshot("cluster-failover.png");
    browser.click("header nav a[data-nav=wall]");
    let unwatched_png = browser.screenshot("cluster-wall-unwatched.png");
    eprintln!(
        "screenshots: {} {} {} {}",
        cluster_png.display(),
        wall_png.display(),
        failover_png.display(),
        unwatched_png.display()
    );
    drop(browser);
    drop(a);
}

#[test]
fn base64_decodes() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGVsbG8h"), b"hello!");
    assert_eq!(base64_decode("aGk="), b"hi");
}
