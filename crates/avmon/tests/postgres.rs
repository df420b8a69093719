//! `avmon run` on PostgreSQL: `[store] url = "postgres://…"` keeps alerts, metrics and stream
//! records in a real PostgreSQL server (started by the test), and the API reads them back.

mod common;

use std::time::Duration;

use avmon_testpg::TestPg;
use common::*;
use serde_json::Value;

#[test]
fn the_service_keeps_its_results_in_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let pg = TestPg::shared();
    let url = pg.fresh_database("service_results");
    let udp = free_udp_port();
    let streams = format!(
        r#"
[[streams]]
id = "live"
url = "udp://127.0.0.1:{udp}"
io_timeout_s = 3
[streams.detectors.black]
min_duration = 1.0
"#
    );
    let (service, http, base) = start_service_on(dir.path(), &url, &streams);
    let _synth = synth_live(udp, 12, &["black@2-5"]);

    // The black alert is raised and cleared, and the API reads it from PostgreSQL.
    let alert = wait_for("the black alert cleared", Duration::from_secs(30), || {
        let alerts: Value = http
            .get(format!("{base}/api/alerts?stream=live"))
            .send()
            .ok()?
            .json()
            .ok()?;
        alerts
            .as_array()?
            .iter()
            .find(|a| a["kind"] == "video.black" && a["state"] == "cleared")
            .cloned()
    });
    let start = alert["start_s"].as_f64().unwrap();
    let end = alert["end_s"].as_f64().unwrap();
    assert!(
        (start - 2.0).abs() < 0.5 && (end - 5.0).abs() < 0.5,
        "{alert}"
    );

    // The same rows, read straight from the database by a second client.
    let store = avmon_store::open(&url).unwrap();
    let stored = store
        .alert(alert["id"].as_str().unwrap())
        .unwrap()
        .expect("the alert is in PostgreSQL");
    assert_eq!(stored.alert.kind, "video.black");
    assert_eq!(stored.alert.end_s, Some(end));
    assert_eq!(
        store
            .streams()
            .unwrap()
            .iter()
            .map(|s| s.id.0.as_str())
            .collect::<Vec<_>>(),
        ["live"]
    );
    let metrics = wait_for("stored metrics", Duration::from_secs(10), || {
        let m = store
            .metrics(&avmon_core::StreamId("live".into()), None)
            .ok()?;
        (m.len() >= 3).then_some(m)
    });
    let frames: f64 = metrics
        .iter()
        .filter_map(|m| m.values.get("frames_video"))
        .sum();
    assert!(frames > 0.0, "{metrics:?}");
    drop(service);
}
