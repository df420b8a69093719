//! How many metrics rows per second each backend sustains, against what 1,000 streams need.
//!
//! ```sh
//! cargo run -p avmon-store --example metrics_rate -- [--streams 1000] [--values 15] [--seconds 10]
//! ```
//!
//! Every stream sends one sample per period (10 s by default in the service) with `--values`
//! values, each stored as one row. The writer gathers a period's samples of all streams and
//! writes them with one `record_metrics_batch`, as fast as it can, for `--seconds` per
//! backend; then a few seconds of `record_metrics`, one sample per call, for comparison.
//! PostgreSQL is a throwaway server (avmon-testpg) with durability turned back **on** (`fsync`,
//! `synchronous_commit`, `full_page_writes`), so the figure is what a real server's disk
//! allows; SQLite is a file in WAL mode with `synchronous = NORMAL`, as the service opens it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use avmon_core::StreamId;
use avmon_store::{MetricsSample, Store};
use avmon_testpg::TestPg;

/// The service's default metrics period.
const PERIOD_S: f64 = 10.0;

struct Args {
    streams: usize,
    values: usize,
    seconds: f64,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        streams: 1000,
        values: 15,
        seconds: 10.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--streams" => a.streams = value.parse().map_err(|e| bad(&e))?,
            "--values" => a.values = value.parse().map_err(|e| bad(&e))?,
            "--seconds" => a.seconds = value.parse().map_err(|e| bad(&e))?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(a)
}

/// Period `n`'s samples: one per stream, the values a stream thread reports.
fn period(a: &Args, n: usize) -> Vec<MetricsSample> {
    let at =
        chrono::DateTime::from_timestamp(1_740_830_400 + (n as i64) * 10, 0).unwrap_or_default();
    (0..a.streams)
        .map(|s| MetricsSample {
            stream_id: StreamId(format!("stream-{s:05}")),
            at,
            media_t: n as f64 * PERIOD_S,
            values: (0..a.values)
                .map(|v| (format!("metric_{v:02}"), (s * 31 + v * 7 + n) as f64 * 0.25))
                .collect::<BTreeMap<_, _>>(),
        })
        .collect()
}

struct Rate {
    rows_per_s: f64,
    /// Seconds per period's write: median and worst.
    p50: f64,
    max: f64,
}

/// Write periods with `write` for `seconds`; rows per second and per-period latency.
fn measure(
    a: &Args,
    seconds: f64,
    mut write: impl FnMut(&[MetricsSample]) -> Result<(), avmon_store::StoreError>,
) -> Result<Rate, avmon_store::StoreError> {
    let rows_per_period = a.streams * a.values;
    let started = Instant::now();
    let mut times = Vec::new();
    let mut rows = 0;
    let mut n = 0;
    while started.elapsed() < Duration::from_secs_f64(seconds) {
        let batch = period(a, n);
        let t = Instant::now();
        write(&batch)?;
        times.push(t.elapsed().as_secs_f64());
        rows += rows_per_period;
        n += 1;
    }
    let total: f64 = times.iter().sum();
    times.sort_by(f64::total_cmp);
    Ok(Rate {
        rows_per_s: rows as f64 / total,
        p50: times[times.len() / 2],
        max: times[times.len() - 1],
    })
}

/// One sample per call: the same rows, without batching.
fn one_by_one(store: &dyn Store, batch: &[MetricsSample]) -> Result<(), avmon_store::StoreError> {
    batch.iter().try_for_each(|m| store.record_metrics(m))
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("metrics_rate: {e}");
            std::process::exit(2);
        }
    };
    let needed = a.streams as f64 * a.values as f64 / PERIOD_S;
    println!(
        "{} streams x {} values every {PERIOD_S} s = {needed:.0} rows/s needed",
        a.streams, a.values
    );
    println!(
        "{:<34} {:>12} {:>10} {:>14} {:>14}",
        "backend, write", "rows/s", "x needed", "period p50 s", "period max s"
    );
    let report = |name: &str, r: Rate| {
        println!(
            "{name:<34} {:>12.0} {:>10.1} {:>14.3} {:>14.3}",
            r.rows_per_s,
            r.rows_per_s / needed,
            r.p50,
            r.max
        );
    };

    let pg = TestPg::start();
    let mut admin = pg.connect();
    // The test server runs without durability; measure with it, as a real server runs.
    // One statement per call: ALTER SYSTEM refuses to run in the implicit transaction of a
    // multi-statement string.
    for sql in [
        "ALTER SYSTEM SET fsync = on",
        "ALTER SYSTEM SET synchronous_commit = on",
        "ALTER SYSTEM SET full_page_writes = on",
        "SELECT pg_reload_conf()",
    ] {
        admin.batch_execute(sql).expect("turning durability on");
    }
    // The reload is a signal, taken in by each session at its next command: ask a new one.
    std::thread::sleep(Duration::from_millis(300));
    let show = |name: &str| -> String {
        let row = pg.connect().query_one(&format!("SHOW {name}"), &[]);
        row.map(|r| r.get(0)).unwrap_or_else(|e| e.to_string())
    };
    println!(
        "PostgreSQL: fsync = {}, synchronous_commit = {}, full_page_writes = {}",
        show("fsync"),
        show("synchronous_commit"),
        show("full_page_writes")
    );
    let store = avmon_store::open(&pg.fresh_database("rate")).expect("opening PostgreSQL");
    let batched = measure(&a, a.seconds, |b| store.record_metrics_batch(b)).expect("PostgreSQL");
    report("PostgreSQL, record_metrics_batch", batched);
    let single =
        measure(&a, a.seconds.min(5.0), |b| one_by_one(store.as_ref(), b)).expect("PostgreSQL");
    report("PostgreSQL, record_metrics", single);
    drop(store);

    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("rate.db").display());
    let store = avmon_store::open(&url).expect("opening SQLite");
    let batched = measure(&a, a.seconds, |b| store.record_metrics_batch(b)).expect("SQLite");
    report("SQLite, record_metrics_batch", batched);
    let single =
        measure(&a, a.seconds.min(5.0), |b| one_by_one(store.as_ref(), b)).expect("SQLite");
    report("SQLite, record_metrics", single);
}
