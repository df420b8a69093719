//! The disk one stream's metrics take, raw and as retention folds them, on each backend.
//!
//! ```sh
//! cargo run --release -p avmon-store --example retention_disk -- [--streams 20] [--values 20]
//! ```
//!
//! Writes one day of samples (one every 10 s, the service's default period, with `--values`
//! values each under the names a full-tier stream reports) for `--streams` streams, then prunes
//! with the clock set a day later (the raw samples become 1-minute aggregates) and 31 days later
//! (1-hour aggregates). After each step it measures what the metrics take: SQLite's pages in
//! use (pages freed by pruning are reused, so not counted); PostgreSQL's
//! `pg_total_relation_size` of the metrics tables after `VACUUM FULL` (the rows, not the free
//! space that deletions leave for reuse). It prints bytes per stream-day in each form, what a
//! stream holds under the default policy (where the store stops growing), and how fast a day of
//! raw samples was folded, in transactions of the default size with no pause between them.

use std::collections::BTreeMap;

use avmon_core::{StreamId, WallTime};
use avmon_store::retention::prune;
use avmon_store::{MetricsSample, Retention, Store};
use avmon_testpg::TestPg;

/// The names of the values a full-tier stream with audio reports each period, read from the
/// store `avmon demo` wrote (19 or 20 a stream); `--values` takes the first N, repeating with a
/// suffix past them.
const NAMES: &[&str] = &[
    "audio_peak_db",
    "audio_rms_db",
    "av_sync_offset_ms",
    "av_sync_skew_ms",
    "black_ratio",
    "blockiness_max",
    "blockiness_mean",
    "bytes",
    "clipped_runs",
    "decode_errors",
    "dropouts",
    "frames_audio",
    "frames_video",
    "freeze_ratio",
    "loudness_momentary_lufs",
    "loudness_short_term_lufs",
    "luma_mean",
    "mad_mean",
    "silence_ratio",
    "true_peak_dbtp",
];

const PERIOD_S: i64 = 10;
const DAY_S: i64 = 86_400;

fn args() -> Result<(usize, usize), String> {
    let (mut streams, mut values) = (20, NAMES.len());
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let n: usize = value.parse().map_err(|e| format!("{flag} {value}: {e}"))?;
        match flag.as_str() {
            "--streams" => streams = n,
            "--values" => values = n,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok((streams.max(1), values.max(1)))
}

fn name(i: usize) -> String {
    match i / NAMES.len() {
        0 => NAMES[i].to_string(),
        k => format!("{}_{k}", NAMES[i % NAMES.len()]),
    }
}

fn t(s: i64) -> WallTime {
    chrono::DateTime::from_timestamp(1_767_225_600 + s, 0).unwrap_or_default()
}

/// A day of samples, written a period (all streams) per batch, as the hub writes them.
fn write_day(store: &dyn Store, streams: usize, values: usize) {
    let names: Vec<String> = (0..values).map(name).collect();
    for p in 0..DAY_S / PERIOD_S {
        let batch: Vec<MetricsSample> = (0..streams)
            .map(|s| MetricsSample {
                stream_id: StreamId(format!("stream-{s:05}")),
                at: t(p * PERIOD_S),
                media_t: (p * PERIOD_S) as f64,
                values: names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| {
                        (
                            n.clone(),
                            ((p as usize * 7 + i * 13 + s) % 1000) as f64 / 8.0,
                        )
                    })
                    .collect::<BTreeMap<_, _>>(),
            })
            .collect();
        store.record_metrics_batch(&batch).expect("writing metrics");
    }
}

struct Backend {
    name: &'static str,
    store: Box<dyn Store>,
    size: Box<dyn Fn() -> u64>,
}

fn sqlite(dir: &std::path::Path) -> Backend {
    let path = dir.join("avmon.db");
    let store = avmon_store::open(&path.display().to_string()).expect("opening SQLite");
    let conn = rusqlite::Connection::open(&path).expect("opening SQLite to measure it");
    let size = move || -> u64 {
        let pragma = |p: &str| -> i64 {
            conn.query_row(&format!("PRAGMA {p}"), [], |r| r.get(0))
                .unwrap()
        };
        ((pragma("page_count") - pragma("freelist_count")) * pragma("page_size")) as u64
    };
    Backend {
        name: "SQLite",
        store,
        size: Box::new(size),
    }
}

fn postgres(pg: &TestPg) -> Backend {
    let url = pg.fresh_database("retention_disk");
    let store = avmon_store::open(&url).expect("opening PostgreSQL");
    let client = std::sync::Mutex::new(postgres::Client::connect(&url, postgres::NoTls).unwrap());
    let size = move || -> u64 {
        let mut c = client.lock().unwrap();
        // What the rows take, without the free space deletions leave: a running server's
        // autovacuum makes that space reusable, not smaller. One statement per call: VACUUM
        // refuses the implicit transaction of several.
        c.batch_execute("VACUUM FULL metrics").unwrap();
        c.batch_execute("VACUUM FULL metrics_agg").unwrap();
        let row = c
            .query_one(
                "SELECT pg_total_relation_size('metrics') + pg_total_relation_size('metrics_agg')",
                &[],
            )
            .unwrap();
        row.get::<_, i64>(0) as u64
    };
    Backend {
        name: "PostgreSQL",
        store,
        size: Box::new(size),
    }
}

fn main() {
    let (streams, values) = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("retention_disk: {e}");
            std::process::exit(2);
        }
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let pg = TestPg::start();
    let policy = Retention::default();
    let days = |d: Option<std::time::Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() / 86_400.0);
    let (raw_days, minute_days) = (
        days(Some(policy.metrics_raw)),
        days(Some(policy.metrics_minute)),
    );
    let hour_days = days(policy.metrics_hour);
    println!(
        "{streams} streams x {values} values every {PERIOD_S} s; default policy: raw {raw_days} d, \
         1-minute {minute_days} d, 1-hour {hour_days} d\n"
    );
    println!(
        "| backend | raw, per stream-day | 1-minute, per stream-day | 1-hour, per stream-day | \
         a stream under the default policy | folding raw samples, rows/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for b in [sqlite(dir.path()), postgres(&pg)] {
        let empty = (b.size)();
        write_day(b.store.as_ref(), streams, values);
        let per = |bytes: u64| bytes.saturating_sub(empty) as f64 / streams as f64;
        let raw = per((b.size)());
        let mut go = || true;
        let started = std::time::Instant::now();
        let folded = prune(b.store.as_ref(), &policy, t(2 * DAY_S), &mut go)
            .expect("folding into minutes")
            .raw_folded;
        let rate = folded as f64 / started.elapsed().as_secs_f64();
        let minute = per((b.size)());
        prune(b.store.as_ref(), &policy, t(32 * DAY_S), &mut go).expect("folding into hours");
        let hour = per((b.size)());
        let bounded =
            raw * raw_days + minute * (minute_days - raw_days) + hour * (hour_days - minute_days);
        let mib = |b: f64| b / (1024.0 * 1024.0);
        println!(
            "| {} | {:.2} MiB | {:.3} MiB | {:.4} MiB | {:.0} MiB | {:.0} |",
            b.name,
            mib(raw),
            mib(minute),
            mib(hour),
            mib(bounded),
            rate
        );
    }
}
