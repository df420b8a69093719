//! Run the TR 101 290 analyser over a TS file: print its counters and events, and what the
//! analysis costs.
//!
//! ```text
//! cargo run --release -p avmon-transport --example tr101290 -- FILE [--chunk BYTES] [--repeat N] [--quiet]
//! ```
//!
//! `--repeat N` analyses the file N times (a fresh analyser each time) to time it. The cost is
//! reported as CPU seconds per second of stream, from the file's duration on its own PCR clock:
//! the share of one core the analysis of this stream takes in real time.

use std::time::Instant;

use avmon_transport::{Analyzer, Clock};

fn main() {
    if let Err(e) = run() {
        eprintln!("tr101290: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mut path = None;
    let (mut chunk, mut repeat, mut quiet) = (65_536usize, 1u32, false);
    while let Some(a) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .and_then(|v| v.parse().ok())
                .ok_or(format!("{name} needs a positive number"))
        };
        match a.as_str() {
            "--chunk" => chunk = value("--chunk")?,
            "--repeat" => repeat = value("--repeat")? as u32,
            "--quiet" => quiet = true,
            _ if path.is_none() => path = Some(a),
            _ => return Err(format!("unexpected argument {a:?}")),
        }
    }
    let path = path.ok_or("usage: tr101290 FILE [--chunk BYTES] [--repeat N] [--quiet]")?;
    if chunk == 0 || repeat == 0 {
        return Err("--chunk and --repeat must be positive".into());
    }
    let data = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;

    let mut events = Vec::new();
    let cpu0 = cpu_seconds();
    let wall0 = Instant::now();
    let mut last = Analyzer::new();
    for _ in 0..repeat {
        let mut a = Analyzer::new();
        events.clear();
        for c in data.chunks(chunk) {
            a.feed(c, Clock::Stream, &mut events);
        }
        last = a;
    }
    let wall = wall0.elapsed().as_secs_f64();
    let cpu = cpu_seconds().map(|c| c - cpu0.unwrap_or(0.0));

    if !quiet {
        for e in &events {
            println!(
                "{:<34} pid {:>6} packet {:>9} t {:>9.3} media {}",
                e.indicator.kind(),
                e.pid.map_or("-".into(), |p| format!("0x{p:04X}")),
                e.packet,
                e.time_s,
                e.media_s.map_or("-".into(), |m| format!("{m:.3}"))
            );
        }
    }
    let c = last.counters();
    println!(
        "{}",
        serde_json::to_string(c).map_err(|e| format!("counters: {e}"))?
    );
    let secs = last.stream_time();
    let bytes = data.len() as f64 * f64::from(repeat);
    println!(
        "{} packets, {:.3} s of stream ({:.2} Mbit/s), {} bytes skipped",
        last.packets(),
        secs,
        data.len() as f64 * 8.0 / secs.max(1e-9) / 1e6,
        last.skipped_bytes()
    );
    let per_pass = cpu.unwrap_or(wall) / f64::from(repeat);
    println!(
        "{repeat} passes: {wall:.3} s wall, {} CPU; {:.0} Mbit/s; {:.4} % of one core in real time",
        cpu.map_or("n/a".into(), |c| format!("{c:.3} s")),
        bytes * 8.0 / cpu.unwrap_or(wall) / 1e6,
        100.0 * per_pass / secs.max(1e-9)
    );
    Ok(())
}

/// This process's user + system CPU time, from /proc (Linux); `None` elsewhere.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}
