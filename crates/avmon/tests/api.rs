//! The API of the real service, on loopback: tokens, acknowledgements, a muted stream whose
//! alerts are stored but not notified, stored metrics, maintenance windows, answers valid
//! against the OpenAPI document, what survives a restart, and no token in the logs.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use reqwest::blocking::{Client, RequestBuilder};
use serde_json::{json, Value};

const ADMIN: &str = "admin-secret-7f3a9c1e5b";
const READER: &str = "reader-secret-2d8e4f6a0c";

/// `avmon run` on `cfg` (written to `dir`), the admin token in its environment; its stderr goes
/// to `dir/stderr.log`. Returns once `/healthz` answers.
fn start(dir: &Path, cfg: &str, base: &str) -> Killed {
    let path = dir.join("avmon.toml");
    std::fs::write(&path, cfg).unwrap();
    let log = std::fs::File::create(dir.join("stderr.log")).unwrap();
    let child = Killed(
        avmon()
            .args(["run", "--config", path.to_str().unwrap()])
            .env("AVMON_TEST_ADMIN_TOKEN", ADMIN)
            .env("AVMON_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let http = Client::new();
    wait_for("the API", Duration::from_secs(20), || {
        http.get(format!("{base}/healthz"))
            .send()
            .ok()
            .filter(|r| r.status().is_success())
    });
    child
}

fn openapi() -> Value {
    serde_json::from_str(avmon_server::OPENAPI).unwrap()
}

/// Assert `body` is valid against the document's schema for `method route` → 200/201.
fn assert_documented(doc: &Value, route: &str, method: &str, status: u16, body: &Value) {
    let schema = &doc["paths"][route][method]["responses"][status.to_string()]["content"]
        ["application/json"]["schema"];
    assert!(schema.is_object(), "{method} {route} {status} undocumented");
    let root = json!({"components": doc["components"], "allOf": [schema]});
    let v = jsonschema::draft202012::new(&root).unwrap();
    let problems: Vec<String> = v
        .iter_errors(body)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(
        problems.is_empty(),
        "{method} {route}: {problems:#?}\n{body:#}"
    );
}

fn synth(udp: u16) -> std::process::Child {
    avmon()
        .args([
            "synth",
            &format!("udp://127.0.0.1:{udp}"),
            "--duration",
            "9",
        ])
        .args(["--width", "320", "--height", "180", "--preset", "ultrafast"])
        .args(["--defect", "black@2-5"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn the_real_api_with_tokens_mutes_acks_metrics_and_restarts() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (hook, got) = receiver(&rt);
    let dir = tempfile::tempdir().unwrap();
    let (udp_muted, udp_plain, udp_maint) = (free_udp_port(), free_udp_port(), free_udp_port());
    let port = free_tcp_port();
    let base = format!("http://127.0.0.1:{port}");
    let cfg = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
[store]
url = "sqlite://{db}"
metrics_interval_s = 1
[api]
tokens = [{{ name = "ops", role = "admin", token_env = "AVMON_TEST_ADMIN_TOKEN" }},
          {{ name = "wall", role = "read", token = "{READER}" }}]
[[streams]]
id = "muted-one"
url = "udp://127.0.0.1:{udp_muted}"
[[streams]]
id = "plain"
url = "udp://127.0.0.1:{udp_plain}"
[[streams]]
id = "maint-one"
url = "udp://127.0.0.1:{udp_maint}"
[[maintenance]]
streams = ["maint-*"]
start = "2020-01-01T00:00:00Z"
end = "2099-01-01T00:00:00Z"
comment = "all century"
[[notifiers]]
kind = "webhook"
url = "{hook}"
"#,
        db = dir.path().join("avmon.db").display()
    );
    let service = start(dir.path(), &cfg, &base);
    let http = Client::new();
    let doc = openapi();
    let get = |path: &str| http.get(format!("{base}{path}"));
    let send = |r: RequestBuilder| {
        let r = r.send().unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().unwrap_or(Value::Null))
    };

    // Tokens: none → 401, read → reads, admin needed to change.
    assert_eq!(send(get("/api/streams")).0, 401);
    assert_eq!(send(get("/api/streams").bearer_auth("wrong")).0, 401);
    let (st, streams) = send(get("/api/streams").bearer_auth(READER));
    assert_eq!(st, 200);
    assert_documented(&doc, "/api/streams", "get", 200, &streams);
    assert_eq!(
        send(get(&format!("/api/streams?access_token={READER}"))).0,
        200
    );
    let mute = || http.post(format!("{base}/api/streams/muted-one/mute"));
    assert_eq!(send(mute()).0, 401);
    assert_eq!(send(mute().bearer_auth(READER)).0, 403);
    let (st, m) = send(
        mute()
            .bearer_auth(ADMIN)
            .json(&json!({"comment": "rehearsal"})),
    );
    assert_eq!(st, 200, "{m}");
    assert_eq!(m["by"], "ops");
    assert_documented(&doc, "/api/streams/{id}/mute", "post", 200, &m);
    assert_eq!(send(get("/healthz")).0, 200);
    assert_eq!(send(get("/metrics")).0, 200, "open by default");

    // The three streams go black at 2–5 s; only the one neither muted nor in maintenance is
    // notified.
    let (mut a, mut b, mut c) = (synth(udp_muted), synth(udp_plain), synth(udp_maint));
    let alerts = |q: &str| -> Vec<Value> {
        let (st, v) = send(get(&format!("/api/alerts?kind=video.black{q}")).bearer_auth(READER));
        assert_eq!(st, 200, "{v}");
        v.as_array().unwrap().clone()
    };
    let cleared = wait_for("the black alerts cleared", Duration::from_secs(40), || {
        let v = alerts("&state=cleared");
        (v.len() == 3).then_some(v)
    });
    for s in [&mut a, &mut b, &mut c] {
        assert!(s.wait().unwrap().success());
    }
    let by_stream = |id: &str| {
        cleared
            .iter()
            .find(|a| a["stream_id"] == id)
            .unwrap()
            .clone()
    };
    let (muted, plain) = (by_stream("muted-one"), by_stream("plain"));
    assert_eq!(muted["suppressed"], "muted");
    assert_eq!(by_stream("maint-one")["suppressed"], "maintenance");
    assert_eq!(plain["suppressed"], Value::Null);
    assert_documented(
        &doc,
        "/api/alerts",
        "get",
        200,
        &Value::Array(cleared.clone()),
    );
    let notified = wait_for(
        "the plain stream's clear notified",
        Duration::from_secs(10),
        || {
            let got = got.lock().unwrap().clone();
            got.iter()
                .any(|n| n["alert_id"] == plain["id"] && n["state"] == "cleared")
                .then_some(got)
        },
    );
    assert!(
        notified.iter().all(|n| n["stream_id"] == "plain"),
        "a muted or maintenance stream was notified: {notified:#?}"
    );

    // Acknowledge the plain one.
    let ack_url = format!("{base}/api/alerts/{}/ack", plain["id"].as_str().unwrap());
    assert_eq!(send(http.post(&ack_url).bearer_auth(READER)).0, 403);
    let (st, acked) = send(
        http.post(&ack_url)
            .bearer_auth(ADMIN)
            .json(&json!({"comment": "seen"})),
    );
    assert_eq!(st, 200, "{acked}");
    assert_eq!(
        (acked["ack"]["by"].clone(), acked["ack"]["comment"].clone()),
        (json!("ops"), json!("seen"))
    );
    assert_documented(&doc, "/api/alerts/{id}/ack", "post", 200, &acked);
    assert_eq!(send(http.post(&ack_url).bearer_auth(ADMIN)).0, 409);
    let only = alerts("&acked=true");
    assert_eq!(only.len(), 1);
    assert_eq!(only[0]["id"], plain["id"]);

    // Stored metrics over time: the derived bitrate, and the decoder's errors.
    let (st, series) = send(
        get("/api/streams/plain/metrics?names=bitrate_bps,decode_errors,blockiness_mean")
            .bearer_auth(READER),
    );
    assert_eq!(st, 200, "{series}");
    assert_documented(&doc, "/api/streams/{id}/metrics", "get", 200, &series);
    let samples = series["samples"].as_array().unwrap();
    assert!(samples.len() >= 3, "{series}");
    assert!(
        samples
            .iter()
            .any(|s| s["values"]["bitrate_bps"].as_f64().unwrap_or(0.0) > 10_000.0),
        "{series}"
    );
    assert!(samples.iter().all(|s| s["values"].get("bytes").is_none()));

    // A maintenance window, kept across the restart.
    let (st, w) = send(
        http.post(format!("{base}/api/maintenance"))
            .bearer_auth(ADMIN)
            .json(
                &json!({"streams": ["pl*"], "end": "2099-01-01T00:00:00Z", "comment": "upgrade"}),
            ),
    );
    assert_eq!(st, 201, "{w}");
    assert_documented(&doc, "/api/maintenance", "post", 201, &w);

    drop(service);
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(log.contains("API tokens: 1 admin, 1 read-only"), "{log}");
    assert!(
        !log.contains(ADMIN) && !log.contains(READER),
        "a token in the log"
    );

    // Restarted on the same store: the mute, the window and the acknowledgement are still there.
    let _service = start(dir.path(), &cfg, &base);
    let (_, s) = send(get("/api/streams/muted-one").bearer_auth(READER));
    assert_eq!(s["muted"]["comment"], "rehearsal", "{s}");
    assert_documented(&doc, "/api/streams/{id}", "get", 200, &s);
    let (_, windows) = send(get("/api/maintenance").bearer_auth(READER));
    assert_eq!(windows.as_array().unwrap().len(), 2, "{windows}");
    assert_eq!(windows[0]["id"], "config-0");
    assert_eq!(windows[1], w);
    assert_documented(&doc, "/api/maintenance", "get", 200, &windows);
    let (_, detail) =
        send(get(&format!("/api/alerts/{}", plain["id"].as_str().unwrap())).bearer_auth(READER));
    assert_eq!(detail["ack"], acked["ack"]);
    assert_documented(&doc, "/api/alerts/{id}", "get", 200, &detail);
}

#[test]
fn without_tokens_it_refuses_to_listen_beyond_loopback_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_tcp_port();
    let cfg = dir.path().join("avmon.toml");
    let db = dir.path().join("avmon.db");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"0.0.0.0:{port}\"\n[store]\nurl = \"sqlite://{}\"\n",
            db.display()
        ),
    )
    .unwrap();
    let o = avmon()
        .args(["run", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = stderr_of(&o);
    assert!(!o.status.success());
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains(&format!(
            "server.listen: 0.0.0.0:{port} is not a loopback address, and [api] has no tokens"
        )),
        "{err}"
    );

    // On loopback it runs, and says the API is open.
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[store]\nurl = \"sqlite://{}\"\n",
            db.display()
        ),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let service = start(dir.path(), &std::fs::read_to_string(&cfg).unwrap(), &base);
    let r = Client::new()
        .get(format!("{base}/api/streams"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "no token needed");
    drop(service);
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(log.contains("no API tokens configured"), "{log}");
    assert!(log.contains("listens on loopback only"), "{log}");
}

/// The running service applies `[retention]` at start: a stream's samples from two days ago
/// read back from the API as 1-minute aggregates (counts summed, so the derived bitrate holds),
/// and an alert cleared 500 days ago is gone while a recent one stays.
#[test]
fn the_service_prunes_old_results_and_the_api_reads_their_aggregates() {
    use avmon_core::{Alert, AlertEvent, AlertState, Severity, StreamId, Transition};
    use chrono::{DurationRound, Utc};

    let dir = tempfile::tempdir().unwrap();
    let store = avmon_store::open(&dir.path().join("avmon.db").display().to_string()).unwrap();
    let minute = chrono::Duration::minutes(1);
    let start = (Utc::now() - chrono::Duration::days(2))
        .duration_trunc(minute)
        .unwrap();
    // Three minutes of samples, every 10 s.
    let samples: Vec<avmon_store::MetricsSample> = (0..18)
        .map(|i| avmon_store::MetricsSample {
            stream_id: StreamId("old".into()),
            at: start + chrono::Duration::seconds(10 * i + 1),
            media_t: (10 * i) as f64,
            values: [
                ("bytes".to_string(), (1000 * (i + 1)) as f64),
                ("black_ratio".to_string(), (i % 2) as f64),
            ]
            .into(),
        })
        .collect();
    store.record_metrics_batch(&samples).unwrap();
    for (id, days) in [("long-ago", 500), ("lately", 3)] {
        let cleared = Utc::now() - chrono::Duration::days(days);
        let alert = Alert {
            id: id.into(),
            stream_id: StreamId("old".into()),
            kind: "video.black".into(),
            severity: Severity::Major,
            state: AlertState::Cleared,
            start_s: 1.0,
            end_s: Some(2.0),
            raised_at: cleared - chrono::Duration::seconds(1),
            cleared_at: Some(cleared),
            details: Default::default(),
        };
        for transition in [Transition::Raised, Transition::Cleared] {
            store
                .record_alert(&AlertEvent {
                    transition,
                    alert: alert.clone(),
                })
                .unwrap();
        }
    }
    drop(store);

    let udp = free_udp_port();
    let (_service, http, base) = start_service(
        dir.path(),
        &format!("[[streams]]\nid = \"old\"\nurl = \"udp://127.0.0.1:{udp}\"\n"),
    );
    let since = (start - minute).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let until = (start + minute * 10).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let url = format!("{base}/api/streams/old/metrics");
    let got: Vec<Value> = wait_for("the samples folded", Duration::from_secs(30), || {
        let body: Value = http
            .get(&url)
            .query(&[("since", &since), ("until", &until)])
            .send()
            .ok()?
            .json()
            .ok()?;
        let got = body["samples"].as_array()?.clone();
        (got.len() == 3).then_some(got)
    });
    for (m, sample) in got.iter().enumerate() {
        let minute_samples = &samples[6 * m..6 * m + 6];
        let at: chrono::DateTime<Utc> = sample["at"].as_str().unwrap().parse().unwrap();
        assert_eq!(at, start + minute * m as i32, "{sample}");
        let bytes: f64 = minute_samples.iter().map(|s| s.values["bytes"]).sum();
        assert_eq!(sample["values"]["bytes"], json!(bytes), "{sample}");
        assert_eq!(sample["values"]["black_ratio"], json!(0.5), "{sample}");
        if m > 0 {
            let bitrate = (bytes * 8.0 / 60.0).round();
            assert_eq!(sample["values"]["bitrate_bps"], json!(bitrate), "{sample}");
        }
    }
    let status = |id: &str| {
        http.get(format!("{base}/api/alerts/{id}"))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(status("long-ago"), 404);
    assert_eq!(status("lately"), 200);
}

/// An address that keeps presenting wrong tokens is refused for a while, right token or wrong;
/// another address, and the token given as its SHA-256 in the config, are not affected.
#[test]
fn repeated_wrong_tokens_are_refused_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_tcp_port();
    let base = format!("http://127.0.0.1:{port}");
    // The admin token as its digest: the config file never holds it.
    let digest: String = {
        use sha2::Digest;
        let d = sha2::Sha256::digest(ADMIN.as_bytes());
        d.iter().map(|b| format!("{b:02x}")).collect()
    };
    let cfg = format!(
        "[server]\nlisten = \"0.0.0.0:{port}\"\n[store]\nurl = \"sqlite://{}\"\n\
         [api]\ntokens = [{{ name = \"ops\", role = \"admin\", token_sha256 = \"{digest}\" }}]\n",
        dir.path().join("avmon.db").display()
    );
    let _service = start(dir.path(), &cfg, &base);
    let from = |ip: &str| {
        Client::builder()
            .local_address(ip.parse::<std::net::IpAddr>().unwrap())
            .build()
            .unwrap()
    };
    let (one, other) = (from("127.0.0.1"), from("127.0.0.2"));
    let get = |c: &Client, token: &str| {
        c.get(format!("{base}/api/streams"))
            .bearer_auth(token)
            .send()
            .unwrap()
    };
    assert_eq!(
        get(&one, ADMIN).status().as_u16(),
        200,
        "the hashed token works"
    );
    for i in 0..avmon_server::auth::MAX_FAILURES {
        assert_eq!(
            get(&one, "wrong-token-0123456789").status().as_u16(),
            401,
            "try {i}"
        );
    }
    let refused = get(&one, ADMIN);
    assert_eq!(refused.status().as_u16(), 429);
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert_eq!(get(&other, ADMIN).status().as_u16(), 200, "another address");
}

/// With `tls_cert` and `tls_key` the API and console are served over TLS: a client that trusts
/// the certificate gets answers and checks the certificate's name; one that does not refuses
/// it; plain HTTP gets nothing; a key that does not fit is refused at start, by its path.
#[test]
fn over_tls_the_api_answers_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    // A CA of the test's own, and a certificate it issued for 127.0.0.1, as a site would have.
    let file = |name: &str| dir.path().join(name);
    let (cert, key, ca) = (file("cert.pem"), file("key.pem"), file("ca.pem"));
    let ext = file("ext.cnf");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let path = |p: &Path| p.display().to_string();
    let (ca_key, csr) = (path(&file("ca.key")), path(&file("leaf.csr")));
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    let steps = [
        format!("req -x509 {ec} -days 1 -subj /CN=avmon-test-ca -keyout {ca_key} -out {}", path(&ca)),
        format!("req {ec} -subj /CN=avmon-test -keyout {} -out {csr}", path(&key)),
        format!(
            "x509 -req -days 1 -in {csr} -CA {} -CAkey {ca_key} -CAcreateserial -extfile {} -out {}",
            path(&ca),
            path(&ext),
            path(&cert)
        ),
    ];
    for step in steps {
        let o = std::process::Command::new("openssl")
            .args(step.split(' '))
            .output()
            .expect("openssl (ca-certificates brings it)");
        assert!(o.status.success(), "{}", stderr_of(&o));
    }
    let port = free_tcp_port();
    let config = |key: &Path| {
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\
             [store]\nurl = \"sqlite://{}\"\n",
            cert.display(),
            key.display(),
            dir.path().join("avmon.db").display()
        )
    };
    let cfg = dir.path().join("avmon.toml");

    // A key that is not the certificate's key is refused at start, naming what to fix.
    std::fs::write(&cfg, config(&cert)).unwrap();
    let o = avmon()
        .args(["run", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = stderr_of(&o);
    assert!(
        !o.status.success() && err.contains("server.tls_cert, server.tls_key:"),
        "{err}"
    );
    assert!(err.contains("cert.pem"), "{err}");

    std::fs::write(&cfg, config(&key)).unwrap();
    let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
    let _service = Killed(
        avmon()
            .args(["run", "--config", cfg.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let trusting = Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .tls_built_in_root_certs(false)
        .build()
        .unwrap();
    let base = format!("https://127.0.0.1:{port}");
    wait_for("the API over TLS", Duration::from_secs(20), || {
        trusting
            .get(format!("{base}/healthz"))
            .send()
            .ok()
            .filter(|r| r.status().is_success())
    });
    let page = trusting.get(format!("{base}/")).send().unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.headers().contains_key("content-security-policy"));
    assert!(page.text().unwrap().contains("/console/app.js"));
    let streams = trusting.get(format!("{base}/api/streams")).send().unwrap();
    assert_eq!(streams.json::<Value>().unwrap(), json!([]));

    // The name is checked too: the certificate is for 127.0.0.1 and localhost only.
    let by_other_name = trusting
        .get(format!("https://127.0.0.2:{port}/healthz"))
        .send()
        .unwrap_err();
    assert!(by_other_name.is_connect(), "{by_other_name:?}");
    let untrusting = Client::builder().build().unwrap();
    let refused = untrusting
        .get(format!("{base}/healthz"))
        .send()
        .unwrap_err();
    assert!(
        format!("{refused:?}").contains("UnknownIssuer"),
        "an unknown issuer is refused: {refused:?}"
    );
    let plain = Client::new()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send();
    assert!(
        plain.map_or(true, |r| !r.status().is_success()),
        "plain HTTP gets no answer"
    );
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(log.contains(&format!("https://127.0.0.1:{port}/")), "{log}");
}
