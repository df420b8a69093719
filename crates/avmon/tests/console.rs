//! The web console in a real headless Chromium, driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`, which `./dev` installs) with plain HTTP JSON: `avmon run` monitors three
//! live UDP streams from `avmon synth`, one of which goes black. The wall shows the three, the
//! alert appears on its tile without a reload, the alerts view acknowledges it, and the stream
//! detail shows its picture and timeline. A second run signs in with a token, holds a wall of\n//! 151 streams and plots a stream's stored metrics. Screenshots go to\n//! `target/test-artifacts/console/`.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

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
        wait_for(what, Duration::from_secs(40), || {
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
    // Marks this page load: a reload would lose it.
    browser.js("window.__sameLoad = 'yes'; return true;");

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

    // The live stream's detail plots what the store kept: loudness and bitrate, with points.
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
        "loudness and bitrate plotted",
        "const f = [...document.querySelectorAll('#d-plots figure')];
         const pts = t => { const x = f.find(x => x.querySelector('figcaption').textContent.startsWith(t)); const l = x && x.querySelector('polyline');
                            return l ? l.getAttribute('points').split(' ').filter(Boolean).length : 0; };
         const got = [pts('Short-term loudness'), pts('Bitrate')];
         return got.every(n => n >= 2) ? got : null;",
    );
    eprintln!("points plotted (loudness, bitrate): {plotted}");
    browser.js("document.querySelector('#d-plots').scrollIntoView(); return true;");
    let detail = browser.screenshot("detail-plots.png");
    eprintln!("screenshots: {} {}", wall.display(), detail.display());
    drop(browser);
    drop(service);
}

#[test]
fn base64_decodes() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGVsbG8h"), b"hello!");
    assert_eq!(base64_decode("aGk="), b"hi");
}
