//! `avmon-bench cost`: what one monitored stream costs, side by side with FFmpeg on the same
//! inputs in the same run (issue 5). Prints Markdown tables; docs/cost.md keeps a copy.
//!
//! - **CPU**: whole-process user + system seconds (GNU `time`, i.e. `wait4`'s rusage) of
//!   `avmon check` (every detector on), FFmpeg's bare decode (`-threads 1 -f null`, the floor)
//!   and FFmpeg's own detection chain in one command, per stream-hour; the median of
//!   `--runs` interleaved runs, because one run on a shared machine swings by tens of per cent.
//! - **Memory**: `check`'s peak RSS (`ru_maxrss`) per input, and `avmon run`'s `VmRSS` with 1, 2
//!   and 4 UDP streams on loopback once every stream decodes: the growth per added stream.
//! - **Streams per host** (`--streams`, minutes): K real-time 720p25 streams into `avmon run`,
//!   K raised until one falls behind (see [`stage`] for how "behind" is decided).
//! - **Degradation** (`--only degrade`, minutes): more 1080p25 streams than `--workers` CPU
//!   permits hold at full, into `avmon run` with `auto_degrade` off, then on: how far streams
//!   fall behind, datagrams lost, and the tiers they end at.
//! - **Scheduling** (`--only sched`, minutes): 720p25 streams with one CPU permit per core
//!   against a thread per stream left to the kernel (`workers = 1024`).
//! - **Latency**: a live stream with a black picture every 12 s into `avmon run` with a webhook
//!   to a receiver in this process: threshold crossed → `raised_at` → webhook received.
//! - **Profile**: `perf` samples of `check` on the 720p input, self time grouped by who spends
//!   it (FFmpeg, detectors, the rest of avmon).
//!
//! Senders are `ffmpeg -re` stream copies of the cached inputs: cheap (measured and reported),
//! and paced by the file's own timestamps, so a picture at media time `t` leaves at `S + t`,
//! where `S` is when the first datagram left.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// What `cost` measures and with what.
pub struct Options {
    pub avmon: String,
    pub ffmpeg: String,
    /// Inputs are generated here once (and remade when their recipe changes).
    pub dir: PathBuf,
    /// Seconds of each CPU / memory input.
    pub duration: f64,
    /// Interleaved runs per command for the CPU medians.
    pub runs: usize,
    /// Parts to run: cpu, memory, latency, profile, streams.
    pub parts: Vec<String>,
    /// Most streams tried for streams per host.
    pub max_streams: usize,
    /// Seconds each streams-per-host stage is watched for.
    pub window: f64,
    /// Defects in the latency stream (one every 12 s).
    pub defects: usize,
    /// Streams of the degradation part.
    pub degrade_streams: usize,
    /// `[service] workers` of the degradation part.
    pub workers: usize,
    /// Streams of the scheduling part.
    pub sched_streams: usize,
    /// Streams of the transport-tier part.
    pub transport_streams: usize,
    /// Streams of the tiers part at `full` and at `keyframes`.
    pub tier_streams: (usize, usize),
}

/// The latency stream's defect: black from `LAT_ONSET` for 4 s, every `LAT_EVERY` s.
const LAT_ONSET: f64 = 4.0;
const LAT_EVERY: f64 = 12.0;
/// The black detector's minimum duration, set in the latency stream's config.
const LAT_MIN_DURATION: f64 = 2.0;

/// A stream is behind real time when its media time fell this much further behind wall time
/// during a stage's window (or the kernel dropped any of its datagrams).
const BEHIND_S: f64 = 2.0;

pub fn run(o: &Options) -> Result<()> {
    std::fs::create_dir_all(&o.dir)?;
    let scratch = o.dir.join("scratch");
    std::fs::create_dir_all(&scratch)?;
    let defects = "--defect black@10-14 --defect freeze@20-25 --defect silence@30-34";
    let d = o.duration;
    let i720 = synth(
        o,
        "720p",
        &format!("--size 1280x720 --duration {d} {defects}"),
    )?;
    let i1080 = synth(
        o,
        "1080p",
        &format!("--size 1920x1080 --duration {d} {defects}"),
    )?;
    let inputs = [("720p25", &i720), ("1080p25", &i1080)];
    let want = |p: &str| o.parts.iter().any(|x| x == p);
    println!(
        "# avmon cost\n\nInputs: {d} s of H.264 + AAC stereo (avmon synth, x264 veryfast, \
         black, freeze and silence defects); machine: {} cores, load average {} at start.\n",
        num_cpus(),
        loadavg()
    );
    if want("cpu") {
        println!("{}", cpu(o, &inputs, &scratch)?);
    }
    if want("memory") {
        println!("{}", memory(o, &inputs, &scratch)?);
    }
    if want("streams") {
        println!("{}", streams(o, &i720, &scratch)?);
    }
    if want("degrade") {
        println!("{}", degrade(o, &i1080, &scratch)?);
    }
    if want("sched") {
        println!("{}", sched(o, &i720, &scratch)?);
    }
    if want("transport") {
        println!("{}", transport_streams(o, &scratch)?);
    }
    if want("tiers") {
        println!("{}", tier_streams(o, &scratch)?);
    }
    if want("latency") {
        let n = o.defects.max(1);
        let file = synth(
            o,
            "latency",
            &format!(
                "--size 1280x720 --duration {} --defect black@{LAT_ONSET}-{} --repeat-every {LAT_EVERY}",
                LAT_EVERY * n as f64,
                LAT_ONSET + 4.0
            ),
        )?;
        println!("{}", latency(o, &file, n, &scratch)?);
    }
    if want("profile") {
        println!("{}", profile(o, &i720, &scratch)?);
        // Callgrind runs ~50× slower: a 10 s clip with the same kinds of defect.
        let clip = synth(
            o,
            "720p-10s",
            "--size 1280x720 --duration 10 --defect black@1.7-4 --defect freeze@4.3-6.6 \
             --defect silence@7-9.3",
        )?;
        println!("{}", inclusive(o, &clip, &scratch)?);
    }
    Ok(())
}

/// `avmon synth` into `dir/NAME.ts`, unless it is there from the same recipe.
fn synth(o: &Options, name: &str, args: &str) -> Result<PathBuf> {
    let path = o.dir.join(format!("{name}.ts"));
    let recipe = o.dir.join(format!("{name}.recipe"));
    if path.exists() && std::fs::read_to_string(&recipe).ok().as_deref() == Some(args) {
        return Ok(path);
    }
    eprintln!("cost: generating {}", path.display());
    let out = Command::new(&o.avmon)
        .arg("synth")
        .arg(&path)
        .args(args.split_whitespace())
        .output()
        .with_context(|| format!("running {}", o.avmon))?;
    if !out.status.success() {
        bail!(
            "avmon synth {name} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    std::fs::write(&recipe, args)?;
    Ok(path)
}

// ---------------------------------------------------------------------------------------------
// CPU

/// One command's rusage, as `wait4` reports it (through GNU `time`).
#[derive(Clone, Copy)]
struct Usage {
    cpu_s: f64,
    maxrss_mib: f64,
}

fn measure(cmd: &[String], scratch: &Path) -> Result<Usage> {
    let out = scratch.join("time.txt");
    let status = Command::new("/usr/bin/time")
        .args(["-f", "%U %S %M", "-o"])
        .arg(&out)
        .args(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running /usr/bin/time (Debian package `time`)")?;
    if !status.success() {
        bail!("`{}` failed ({status})", cmd.join(" "));
    }
    let text = std::fs::read_to_string(&out)?;
    let f: Vec<f64> = text
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    match f[..] {
        [u, s, kib] => Ok(Usage {
            cpu_s: u + s,
            maxrss_mib: kib / 1024.0,
        }),
        _ => bail!("unexpected output of time: {text:?}"),
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn cpu(o: &Options, inputs: &[(&str, &PathBuf)], scratch: &Path) -> Result<String> {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "## CPU seconds per stream-hour\n\nWhole process, user + system (wait4), median of {} \
         interleaved runs; one FFmpeg thread everywhere.\n\n\
         | input | avmon check | FFmpeg decode | FFmpeg chain | avmon / decode | chain / avmon | check peak RSS |\n\
         |---|---:|---:|---:|---:|---:|---:|",
        o.runs
    );
    for (name, file) in inputs {
        let f = file.display().to_string();
        let check = {
            let mut c = strings(&[&o.avmon, "check", &f, "--format", "json"]);
            c.extend(strings(&["--threads", "1"]));
            c
        };
        let decode = strings(&[
            &o.ffmpeg, "-nostdin", "-threads", "1", "-i", &f, "-f", "null", "-",
        ]);
        // What a user would assemble: FFmpeg's detection filters, settings as the accuracy
        // benchmark's (avmon's defaults where a filter has the same knob), in one command.
        let chain = strings(&[
            &o.ffmpeg,
            "-nostdin",
            "-threads",
            "1",
            "-filter_threads",
            "1",
            "-filter_complex_threads",
            "1",
            "-i",
            &f,
            "-filter_complex",
            "[0:v]freezedetect=n=-60dB:d=2,blackdetect=d=2:pic_th=0.98,blockdetect[v];\
             [0:a]silencedetect=n=-60dB:d=2,ebur128=peak=true[a]",
            "-map",
            "[v]",
            "-map",
            "[a]",
            "-f",
            "null",
            "-",
        ]);
        let (mut a, mut d, mut c, mut rss) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..o.runs {
            eprintln!("cost: cpu {name} run {}/{}", i + 1, o.runs);
            let u = measure(&check, scratch)?;
            a.push(u.cpu_s);
            rss.push(u.maxrss_mib);
            d.push(measure(&decode, scratch)?.cpu_s);
            c.push(measure(&chain, scratch)?.cpu_s);
        }
        let per_hour = 3600.0 / o.duration;
        let (a, d, c, rss) = (median(&a), median(&d), median(&c), median(&rss));
        let _ = writeln!(
            t,
            "| {name} | {:.0} s | {:.0} s | {:.0} s | {:.2}× | {:.2}× | {:.0} MiB |",
            a * per_hour,
            d * per_hour,
            c * per_hour,
            a / d,
            c / a,
            rss
        );
    }
    let _ = writeln!(
        t,
        "\nTargets: avmon / decode ≤ 1.10×, chain / avmon ≥ 4×. A stream-hour of CPU seconds \
         / 3600 is the share of one core a real-time stream takes."
    );
    Ok(t)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Nearest-rank percentile (`p` in 0..=100).
fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

// ---------------------------------------------------------------------------------------------
// The service, its senders, and what /proc says about them

/// Children killed when dropped.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Procs {
    fn pids(&self) -> Vec<u32> {
        self.0.iter().map(Child::id).collect()
    }
}

/// A running `avmon run`.
struct Service {
    proc: Procs,
    api: String,
}

impl Service {
    fn pid(&self) -> u32 {
        self.proc.0[0].id()
    }

    /// `avmon run` with these `[[streams]]` / `[[notifiers]]` sections; returns once its API
    /// answers.
    fn start(o: &Options, scratch: &Path, sections: &str) -> Result<Service> {
        let api = format!("127.0.0.1:{}", free_tcp_port()?);
        let db = scratch.join("avmon.db");
        for ext in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{ext}", db.display()));
        }
        let cfg = scratch.join("avmon.toml");
        std::fs::write(
            &cfg,
            format!(
                "[server]\nlisten = \"{api}\"\n[store]\nurl = \"sqlite://{}\"\n\
                 metrics_interval_s = 10\n{sections}",
                db.display()
            ),
        )?;
        let child = Command::new(&o.avmon)
            .args(["run", "--config"])
            .arg(&cfg)
            .env("AVMON_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {} run", o.avmon))?;
        let svc = Service {
            proc: Procs(vec![child]),
            api,
        };
        let t0 = Instant::now();
        while http_get(&svc.api, "/healthz").is_err() {
            if t0.elapsed() > Duration::from_secs(20) {
                bail!("avmon run did not answer on {} within 20 s", svc.api);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(svc)
    }

    /// `(id, media_t, frames_video)` of every stream.
    fn streams(&self) -> Result<Vec<(String, f64, u64)>> {
        let v: Value = serde_json::from_str(&http_get(&self.api, "/api/streams")?)?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .map(|s| {
                        (
                            s["id"].as_str().unwrap_or("").to_string(),
                            s["media_t"].as_f64().unwrap_or(0.0),
                            s["frames_video"].as_u64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Waits until every one of `n` streams has decoded a picture (`pictures`), or else has
    /// media time (the `transport` tier decodes none).
    fn wait_flowing(&self, n: usize, pictures: bool, limit: Duration) -> Result<()> {
        let t0 = Instant::now();
        loop {
            let s = self.streams()?;
            if s.len() == n && s.iter().all(|x| if pictures { x.2 > 0 } else { x.1 > 0.0 }) {
                return Ok(());
            }
            if t0.elapsed() > limit {
                bail!("not every stream flowed within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

fn stream_sections(ports: &[u16]) -> String {
    ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("[[streams]]\nid = \"s{i}\"\nurl = \"udp://127.0.0.1:{p}\"\n"))
        .collect()
}

/// `ffmpeg -re` stream copies of `file` to these ports (looped when `looped`).
fn senders(o: &Options, file: &Path, ports: &[u16], looped: bool) -> Result<Procs> {
    let mut procs = Procs(Vec::new());
    for p in ports {
        let mut c = Command::new(&o.ffmpeg);
        c.args(["-nostdin", "-hide_banner", "-loglevel", "error", "-re"]);
        if looped {
            c.args(["-stream_loop", "-1"]);
        }
        procs.0.push(
            c.arg("-i")
                .arg(file)
                .args(["-c", "copy", "-f", "mpegts"])
                .arg(format!("udp://127.0.0.1:{p}?pkt_size=1316"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {}", o.ffmpeg))?,
        );
    }
    Ok(procs)
}

fn free_tcp_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn free_udp_ports(n: usize) -> Result<Vec<u16>> {
    // Held together so that no two are the same.
    let socks: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()?;
    socks.iter().map(|s| Ok(s.local_addr()?.port())).collect()
}

/// A body of an HTTP/1.0 GET (so no chunked encoding) on loopback.
fn http_get(addr: &str, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// User + system CPU seconds of a running process (all its threads).
fn proc_cpu_s(pid: u32, tck: f64) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = text.rsplit_once(')').map_or("", |r| r.1);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // Fields 14 and 15 of stat; `rest` starts at field 3.
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / tck
}

/// This process's CPU seconds (user + system).
fn self_cpu_s(tck: f64) -> f64 {
    proc_cpu_s(std::process::id(), tck)
}

/// The tiers a watched run sets on its streams.
#[derive(Clone, Copy, PartialEq)]
enum Tier {
    Full,
    Keyframes,
    Transport,
}

impl Tier {
    fn name(self) -> &'static str {
        match self {
            Tier::Full => "full",
            Tier::Keyframes => "keyframes",
            Tier::Transport => "transport",
        }
    }
}

/// A thread of this process sending a TS file's bytes to many UDP ports at once, in 1316-byte
/// datagrams at `bps` each (a constant-rate file sent at its own rate is real time), each port
/// from its own place in the first tenth of the file (so keyframes and PCRs do not all land
/// together). One sender for a hundred streams costs far less than a hundred `ffmpeg -re`.
/// It stops when dropped; a file is never wrapped around within a run (a run must be shorter
/// than nine tenths of the file).
struct Blaster {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Blaster {
    fn start(file: &Path, ports: &[u16], bps: f64) -> Result<Blaster> {
        const DGRAM: usize = 1316;
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let total = bytes.len() / DGRAM;
        if total < 10 {
            bail!("{} is too short to send", file.display());
        }
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        let n = ports.len();
        let targets: Vec<std::net::SocketAddr> = ports
            .iter()
            .map(|&p| std::net::SocketAddr::from(([127, 0, 0, 1], p)))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let halt = stop.clone();
        let per_s = bps / 8.0 / DGRAM as f64;
        let thread = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut sent = vec![0usize; n];
            while !halt.load(Ordering::Relaxed) {
                let due = (t0.elapsed().as_secs_f64() * per_s) as usize;
                for (i, to) in targets.iter().enumerate() {
                    let start = i * (total / 10) / n.max(1);
                    while sent[i] < due {
                        let k = (start + sent[i]) % total;
                        // Loopback: an error is a full socket buffer, i.e. a loss avmon's
                        // drop counters see anyway.
                        let _ = sock.send_to(&bytes[k * DGRAM..(k + 1) * DGRAM], to);
                        sent[i] += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Ok(Blaster {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Blaster {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn proc_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// `(busy, total)` jiffies of the whole host, from /proc/stat.
fn host_jiffies() -> (f64, f64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let total: f64 = f.iter().take(8).sum();
    let idle = f.get(3).unwrap_or(&0.0) + f.get(4).unwrap_or(&0.0);
    (total - idle, total)
}

/// The kernel's view of these local UDP ports: datagrams dropped (socket buffer full), summed,
/// and the largest receive queue (bytes the kernel holds for avmon to read, with its per-datagram
/// overhead), i.e. how far avmon's reading is behind its senders.
fn udp_sockets(ports: &[u16]) -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    let (mut drops, mut queue) = (0, 0);
    for l in text.lines().skip(1) {
        let f: Vec<&str> = l.split_whitespace().collect();
        let port = f
            .get(1)
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| u16::from_str_radix(p, 16).ok());
        if !port.is_some_and(|p| ports.contains(&p)) {
            continue;
        }
        drops += f.last().and_then(|d| d.parse::<u64>().ok()).unwrap_or(0);
        let rx = f
            .get(4)
            .and_then(|q| q.split(':').nth(1))
            .and_then(|q| u64::from_str_radix(q, 16).ok())
            .unwrap_or(0);
        queue = queue.max(rx);
    }
    (drops, queue)
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------------
// Memory

fn memory(o: &Options, inputs: &[(&str, &PathBuf)], scratch: &Path) -> Result<String> {
    let ns = [1usize, 2, 4];
    let mut t = String::from(
        "## Memory of the service\n\n`avmon run`'s VmRSS with N real-time UDP streams on \
         loopback (each an `ffmpeg -re` copy of the input), read 5 s after every stream decodes; \
         the growth per stream is the least-squares slope over N. The last row repeats the \
         last input with `[evidence] enabled = false` (no byte ring for clips, no pictures for \
         snapshots): the ring holds `pre_s + post_s + 2` s of the stream's bytes, so what it \
         adds grows with the bitrate, up to `ring_max_bytes`.\n\n\
         | input | N = 1 | N = 2 | N = 4 | per added stream |\n|---|---:|---:|---:|---:|\n",
    );
    // The last input again without the evidence ring and pictures (`[evidence] enabled =
    // false`): what clips and snapshots add to each stream, which grows with its bitrate.
    let last = inputs.last().map(|(name, file)| (*name, *file, false));
    let runs = inputs
        .iter()
        .map(|(name, file)| (*name, *file, true))
        .chain(last);
    for (name, file, evidence) in runs {
        let (label, extra) = if evidence {
            (name.to_string(), "")
        } else {
            (
                format!("{name}, `[evidence] enabled = false`"),
                "[evidence]\nenabled = false\n",
            )
        };
        let mut rss = Vec::new();
        for &n in &ns {
            eprintln!("cost: memory {label} N={n}");
            let ports = free_udp_ports(n)?;
            let sections = format!("{extra}{}", stream_sections(&ports));
            let svc = Service::start(o, scratch, &sections)?;
            let _send = senders(o, file, &ports, true)?;
            svc.wait_flowing(n, true, Duration::from_secs(30))?;
            std::thread::sleep(Duration::from_secs(5));
            rss.push(proc_rss_mib(svc.pid()));
        }
        let xs: Vec<f64> = ns.iter().map(|&n| n as f64).collect();
        let _ = writeln!(
            t,
            "| {label} | {:.0} MiB | {:.0} MiB | {:.0} MiB | {:.1} MiB |",
            rss[0],
            rss[1],
            rss[2],
            slope(&xs, &rss)
        );
    }
    t.push_str("\nTarget: ≤ 40 MiB per 1080p stream.\n");
    Ok(t)
}

fn slope(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let sxx: f64 = x.iter().map(|a| (a - mx) * (a - mx)).sum();
    sxy / sxx
}

// ---------------------------------------------------------------------------------------------
// Streams per host

/// One stage of the streams-per-host test.
struct Stage {
    k: usize,
    avmon_pct: f64,
    senders_pct: f64,
    host_pct: f64,
    rss_mib: f64,
    /// The largest slip of any stream in the window: how far its lag behind wall time rose
    /// above its lowest point, seconds.
    lag_s: f64,
    /// The largest lag at the window's end: wall time since the senders started, less media
    /// time (an upper bound: it includes FFmpeg's and avmon's start-up, probing included).
    lag_end_s: f64,
    drops: u64,
    /// The largest receive queue of any stream's socket seen in the window, bytes.
    backlog: u64,
    holds: bool,
}

/// K streams for `window` seconds. A stream is **behind** when its lag behind wall time (wall
/// time since the senders started, less its media time from `GET /api/streams`, published every
/// 200 ms; read every second) rose more than [`BEHIND_S`] above its lowest point in the window,
/// i.e. it slipped, or the kernel dropped datagrams on its socket (its receive buffer, up to
/// `net.core.rmem_max`, filled because avmon did not read in time). A stream still catching up
/// from its start (probing, a slow start of its sender on a busy host) has a falling lag and
/// holds; a constant lag is reported (`lag at end`) but is a delay, not falling behind. The
/// window starts 5 s after every stream decodes.
fn stage(o: &Options, file: &Path, k: usize, scratch: &Path, tck: f64) -> Result<Stage> {
    let ports = free_udp_ports(k)?;
    let svc = Service::start(o, scratch, &stream_sections(&ports))?;
    let started = Instant::now();
    let send = senders(o, file, &ports, true)?;
    svc.wait_flowing(k, true, Duration::from_secs(60))?;
    std::thread::sleep(Duration::from_secs(5));
    let snap = |svc: &Service| -> Result<_> {
        Ok((
            Instant::now(),
            svc.streams()?,
            proc_cpu_s(svc.pid(), tck),
            send.pids().iter().map(|&p| proc_cpu_s(p, tck)).sum::<f64>(),
            host_jiffies(),
            udp_sockets(&ports).0,
        ))
    };
    let a = snap(&svc)?;
    // Each stream's lag (wall time since the senders started, less its media time) every
    // second; the slip is how far it rose above its lowest point so far in the window.
    let mut lowest: Vec<(String, f64)> = Vec::new();
    let mut lag_s: f64 = 0.0;
    let mut lag_end_s = f64::NEG_INFINITY;
    let mut backlog = 0;
    let end = a.0 + Duration::from_secs_f64(o.window);
    let b = loop {
        let now = Instant::now();
        if now >= end {
            let b = snap(&svc)?;
            let wall = b.0.duration_since(started).as_secs_f64();
            for (id, media_t, _) in &b.1 {
                let lag = wall - media_t;
                lag_end_s = lag_end_s.max(lag);
                if let Some(x) = lowest.iter().find(|x| &x.0 == id) {
                    lag_s = lag_s.max(lag - x.1);
                }
            }
            break b;
        }
        let wall = now.duration_since(started).as_secs_f64();
        backlog = backlog.max(udp_sockets(&ports).1);
        for (id, media_t, _) in &svc.streams()? {
            let lag = wall - media_t;
            match lowest.iter_mut().find(|x| &x.0 == id) {
                Some(x) => {
                    x.1 = x.1.min(lag);
                    lag_s = lag_s.max(lag - x.1);
                }
                None => lowest.push((id.clone(), lag)),
            }
        }
        std::thread::sleep(Duration::from_secs(1).min(end.saturating_duration_since(now)));
    };
    let wall = b.0.duration_since(a.0).as_secs_f64();
    let drops = b.5 - a.5;
    let host = (b.4 .0 - a.4 .0) / (b.4 .1 - a.4 .1) * 100.0 * num_cpus() as f64;
    Ok(Stage {
        k,
        avmon_pct: (b.2 - a.2) / wall * 100.0,
        senders_pct: (b.3 - a.3) / wall * 100.0,
        host_pct: host,
        rss_mib: proc_rss_mib(svc.pid()),
        lag_s,
        lag_end_s,
        drops,
        backlog,
        holds: lag_s <= BEHIND_S && drops == 0,
    })
}

fn streams(o: &Options, file: &Path, scratch: &Path) -> Result<String> {
    let tck = clock_ticks();
    // The senders alone first: what they take from the machine avmon runs on.
    let alone = {
        let ports = free_udp_ports(4)?;
        let _sinks: Vec<UdpSocket> = ports
            .iter()
            .map(|p| UdpSocket::bind(("127.0.0.1", *p)))
            .collect::<std::io::Result<_>>()?;
        let send = senders(o, file, &ports, true)?;
        std::thread::sleep(Duration::from_secs(3));
        let c0: f64 = send.pids().iter().map(|&p| proc_cpu_s(p, tck)).sum();
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(10));
        let c1: f64 = send.pids().iter().map(|&p| proc_cpu_s(p, tck)).sum();
        (c1 - c0) / t0.elapsed().as_secs_f64() * 100.0 / 4.0
    };
    let mut ks: Vec<usize> = vec![1, 2, 4];
    ks.extend((8..=o.max_streams).step_by(4));
    ks.retain(|&k| k <= o.max_streams);
    let mut rows = Vec::new();
    // A stage that could not be measured (a stream that never decoded) ends the test: the K
    // before it is the answer, and the reason is printed with the table.
    let mut failed = None;
    for k in ks {
        eprintln!("cost: streams K={k}");
        match stage(o, file, k, scratch, tck) {
            Ok(s) => {
                let holds = s.holds;
                rows.push(s);
                if !holds {
                    break;
                }
            }
            Err(e) => {
                failed = Some(format!("K = {k} could not be measured: {e:#}"));
                break;
            }
        }
    }
    let best = rows.iter().filter(|s| s.holds).map(|s| s.k).max();
    let mut t = format!(
        "## Streams per host\n\nK real-time 720p25 streams (`ffmpeg -re -stream_loop -1 -c copy` \
         of the 720p input to UDP on loopback) into one `avmon run`, every detector on, each K \
         watched for {:.0} s after every stream decodes. Behind: a stream's lag behind wall \
         time (wall time since the senders started, less its media time in `/api/streams`, read \
         every second) rose > {BEHIND_S} s above its lowest point in the window, or the kernel \
         dropped datagrams on its socket. Lag at end: the largest lag when the window closed, \
         FFmpeg's and avmon's start-up included. The slip includes the senders' own delays on \
         a busy host; socket backlog (the largest receive queue of a stream's socket, read \
         every second, with the kernel's per-datagram overhead) is what waits for avmon alone. CPU in % of one core; the host has {} cores \
         ({}%). One sender alone takes {alone:.1} % of a core.\n\n\
         | K | avmon CPU | senders CPU | host busy (all processes) | avmon RSS | max slip | max lag at end | socket backlog | UDP drops | holds |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
        o.window,
        num_cpus(),
        100 * num_cpus()
    );
    for s in &rows {
        let _ = writeln!(
            t,
            "| {} | {:.0} % | {:.0} % | {:.0} % | {:.0} MiB | {:.2} s | {:.2} s | {:.0} KiB | {} | {} |",
            s.k,
            s.avmon_pct,
            s.senders_pct,
            s.host_pct,
            s.rss_mib,
            s.lag_s,
            s.lag_end_s,
            s.backlog as f64 / 1024.0,
            s.drops,
            if s.holds { "yes" } else { "**no**" }
        );
    }
    if let Some(why) = failed {
        let _ = writeln!(t, "\n{why}");
    }
    let _ = writeln!(
        t,
        "\nLargest K that holds: {} (target ≥ 16).",
        best.map_or("none".to_string(), |k| k.to_string())
    );
    Ok(t)
}

// ---------------------------------------------------------------------------------------------
// Automatic degradation

/// One watched run of `avmon run` for the degradation and scheduling parts.
struct DegradeRun {
    auto: bool,
    workers: usize,
    avmon_pct: f64,
    /// Involuntary context switches of all avmon's threads per second (preempted: more
    /// runnable threads than cores).
    preempted_per_s: f64,
    /// The largest slip of any stream in the window (as in [`stage`]).
    slip_s: f64,
    /// The largest lag avmon itself reported (`lag_s`, smoothed) in the window.
    reported_lag_s: f64,
    drops: u64,
    behind: usize,
    /// Streams at each tier at the window's end: full, reference, keyframes, transport.
    tiers: [usize; 4],
    degraded_alerts: usize,
    steps: usize,
    /// While settling (from when every stream decodes): the largest lag avmon reported, and
    /// the last second any stream was late (reported lag ≥ 1 s, or datagrams dropped): how
    /// long the host took to get back in time; `None` when never late.
    settle_peak_lag_s: f64,
    late_until_s: Option<f64>,
    /// `monitor.behind` alerts raised in all.
    behind_alerts: usize,
    /// CPU of this process (the [`Blaster`], when it feeds the streams), % of a core.
    own_pct: f64,
}

/// Involuntary context switches of every thread of `pid`.
fn preemptions(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .filter_map(|st| {
            st.lines()
                .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum()
}

/// `n` real-time copies of `file` (priorities 10, 20, …) into `avmon run` with `workers`
/// permits and `auto_degrade = auto`; watched for `o.window` s after `settle` s from the moment
/// every stream decodes. Behind: a stream slipped > [`BEHIND_S`] in the window, or lost
/// datagrams in it.
/// How the streams of a watched run are fed.
enum Feed<'a> {
    /// One `ffmpeg -re -stream_loop -1 -c copy` per stream.
    Ffmpeg(&'a Path),
    /// [`Blaster`]: this process sends the file's bytes to every stream at `bps`.
    Blast(&'a Path, f64),
}

/// What a watched run starts: `n` streams at `tier` fed by `feed` into a service with
/// `workers` permits and `auto_degrade = auto`, settling `settle` s before the window.
struct Setup<'a> {
    feed: Feed<'a>,
    n: usize,
    workers: usize,
    auto: bool,
    tier: Tier,
    /// `keyframe_interval_s` of every stream (0: every keyframe).
    keyframe_interval: f64,
    settle: f64,
}

fn watch_service(o: &Options, setup: &Setup<'_>, scratch: &Path) -> Result<DegradeRun> {
    let Setup {
        ref feed,
        n,
        workers,
        auto,
        tier,
        keyframe_interval,
        settle,
    } = *setup;
    let tck = clock_ticks();
    let ports = free_udp_ports(n)?;
    let mut sections = format!("[service]\nworkers = {workers}\nauto_degrade = {auto}\n");
    for (i, p) in ports.iter().enumerate() {
        let _ = write!(
            sections,
            "[[streams]]\nid = \"s{i}\"\nurl = \"udp://127.0.0.1:{p}\"\npriority = {}\ntier = \"{}\"\n\
             keyframe_interval_s = {keyframe_interval}\n",
            10 * (i + 1),
            tier.name()
        );
    }
    let svc = Service::start(o, scratch, &sections)?;
    let started = Instant::now();
    let (_procs, _blaster) = match feed {
        Feed::Ffmpeg(file) => (Some(senders(o, file, &ports, true)?), None),
        Feed::Blast(file, bps) => (None, Some(Blaster::start(file, &ports, *bps)?)),
    };
    svc.wait_flowing(n, tier != Tier::Transport, Duration::from_secs(60))?;
    let own_cpu0 = self_cpu_s(tck);
    let list = |svc: &Service| -> Result<Vec<Value>> {
        let v: Value = serde_json::from_str(&http_get(&svc.api, "/api/streams")?)?;
        Ok(v.as_array().cloned().unwrap_or_default())
    };
    // Settling: how high the lag goes and when the last late second is.
    let decoding = Instant::now();
    let (mut settle_peak_lag_s, mut late_until_s) = (0.0f64, None);
    let mut drops_before: u64 = ports.iter().map(|p| udp_sockets(&[*p]).0).sum();
    while decoding.elapsed().as_secs_f64() < settle {
        std::thread::sleep(Duration::from_secs(1));
        let lag = list(&svc)?
            .iter()
            .map(|s| s["lag_s"].as_f64().unwrap_or(0.0))
            .fold(0.0, f64::max);
        let drops: u64 = ports.iter().map(|p| udp_sockets(&[*p]).0).sum();
        settle_peak_lag_s = settle_peak_lag_s.max(lag);
        if lag >= 1.0 || drops > drops_before {
            late_until_s = Some(decoding.elapsed().as_secs_f64());
        }
        drops_before = drops;
    }
    let (t0, c0, p0) = (
        Instant::now(),
        proc_cpu_s(svc.pid(), tck),
        preemptions(svc.pid()),
    );
    let drops0: Vec<u64> = ports.iter().map(|p| udp_sockets(&[*p]).0).collect();
    let mut lowest: Vec<(String, f64)> = Vec::new();
    let mut slip: Vec<(String, f64)> = Vec::new();
    let mut reported: f64 = 0.0;
    let end = t0 + Duration::from_secs_f64(o.window);
    let last = loop {
        let now = Instant::now();
        let wall = now.duration_since(started).as_secs_f64();
        let l = list(&svc)?;
        for s in &l {
            let id = s["id"].as_str().unwrap_or("").to_string();
            let lag = wall - s["media_t"].as_f64().unwrap_or(0.0);
            reported = reported.max(s["lag_s"].as_f64().unwrap_or(0.0));
            match lowest.iter_mut().find(|x| x.0 == id) {
                Some(x) => {
                    x.1 = x.1.min(lag);
                    let up = lag - x.1;
                    match slip.iter_mut().find(|x| x.0 == id) {
                        Some(y) => y.1 = y.1.max(up),
                        None => slip.push((id, up)),
                    }
                }
                None => lowest.push((id, lag)),
            }
        }
        if now >= end {
            break l;
        }
        std::thread::sleep(Duration::from_secs(1).min(end.saturating_duration_since(now)));
    };
    let wall = t0.elapsed().as_secs_f64();
    let (cpu, preempted) = (proc_cpu_s(svc.pid(), tck), preemptions(svc.pid()));
    let own_pct = (self_cpu_s(tck) - own_cpu0) / started.elapsed().as_secs_f64() * 100.0;
    let drops_now: Vec<u64> = ports.iter().map(|p| udp_sockets(&[*p]).0).collect();
    let mut tiers = [0; 4];
    let mut degraded_alerts = 0;
    for s in &last {
        let t = match s["tier"].as_str() {
            Some("reference") => 1,
            Some("keyframes") => 2,
            Some("transport") => 3,
            _ => 0,
        };
        tiers[t] += 1;
        degraded_alerts += s["active_alerts"].as_array().map_or(0, |a| {
            a.iter().filter(|a| a["kind"] == "monitor.degraded").count()
        });
    }
    // Ports are in the streams' order.
    let behind = (0..n)
        .filter(|&i| {
            let id = format!("s{i}");
            slip.iter().any(|x| x.0 == id && x.1 > BEHIND_S) || drops_now[i] > drops0[i]
        })
        .count();
    let alerts: Value = serde_json::from_str(&http_get(&svc.api, "/api/alerts?limit=10000")?)?;
    let count = |kind: &str| {
        alerts
            .as_array()
            .map_or(0, |a| a.iter().filter(|a| a["kind"] == kind).count())
    };
    let (steps, behind_alerts) = (count("monitor.degraded"), count("monitor.behind"));
    Ok(DegradeRun {
        auto,
        workers,
        avmon_pct: (cpu - c0) / wall * 100.0,
        preempted_per_s: (preempted - p0) as f64 / wall,
        slip_s: slip.iter().map(|x| x.1).fold(0.0, f64::max),
        reported_lag_s: reported,
        drops: drops_now.iter().sum::<u64>() - drops0.iter().sum::<u64>(),
        behind,
        tiers,
        degraded_alerts,
        steps,
        settle_peak_lag_s,
        late_until_s,
        behind_alerts,
        own_pct,
    })
}

fn degrade_table(runs: &[DegradeRun], n: usize) -> String {
    let mut t = String::from(
        "| workers | auto_degrade | settling: peak lag | settling: late until | avmon CPU | preempted / s | max slip | max reported lag | UDP drops | streams behind | full | reference | keyframes | transport | monitor.degraded active | monitor.degraded alerts in all | monitor.behind alerts |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in runs {
        let _ = writeln!(
            t,
            "| {} | {} | {:.1} s | {} | {:.0} % | {:.0} | {:.2} s | {:.2} s | {} | {} of {n} | {} | {} | {} | {} | {} | {} | {} |",
            r.workers,
            if r.auto { "on" } else { "off" },
            r.settle_peak_lag_s,
            r.late_until_s
                .map_or_else(|| "never late".to_string(), |t| format!("{t:.0} s")),
            r.avmon_pct,
            r.preempted_per_s,
            r.slip_s,
            r.reported_lag_s,
            r.drops,
            r.behind,
            r.tiers[0],
            r.tiers[1],
            r.tiers[2],
            r.tiers[3],
            r.degraded_alerts,
            r.steps,
            r.behind_alerts
        );
    }
    t
}

/// `--degrade-streams` 1080p25 streams on `--workers` permits, `auto_degrade` off then on; each
/// settles as long as it is watched (degradation takes a step every 2 s at most).
fn degrade(o: &Options, file: &Path, scratch: &Path) -> Result<String> {
    let n = o.degrade_streams.max(1);
    let mut runs = Vec::new();
    for auto in [false, true] {
        eprintln!("cost: degrade, auto_degrade = {auto}");
        runs.push(watch_service(
            o,
            &Setup {
                feed: Feed::Ffmpeg(file),
                n,
                workers: o.workers,
                auto,
                tier: Tier::Full,
                keyframe_interval: 0.0,
                settle: o.window,
            },
            scratch,
        )?);
    }
    Ok(format!(
        "## Automatic degradation\n\n{n} real-time 1080p25 streams (`ffmpeg -re -stream_loop -1 \
         -c copy` to UDP on loopback, priorities 10, 20, …) into one `avmon run` with \
         `[service] workers = {}`, every detector on, first with `auto_degrade = false`, then \
         `true`; each run settles {:.0} s after every stream decodes, then is watched for {:.0} s. \
         Max slip: how far a stream's lag behind wall time rose above its lowest point in the \
         window (read every second); reported lag: the largest `lag_s` avmon showed; behind: \
         streams that slipped > {BEHIND_S} s or whose socket dropped datagrams in the window; \
         preempted: involuntary context switches of avmon's threads. Tiers at the window's \
         end. Settling (from when every stream decodes, before the window): the largest \
         `lag_s` shown, and the last second any stream was late (`lag_s` ≥ 1 s, or datagrams \
         dropped), i.e. how long the host took to get back in time.\n\n{}",
        o.workers,
        o.window,
        o.window,
        degrade_table(&runs, n)
    ))
}

/// Bits per second of [`cbr5m`]'s input.
const BPS: f64 = 5_000_000.0;

/// The constant 5 Mbit/s 720p25 TS of the service-mode tier parts (made once), and its recipe.
fn cbr5m(o: &Options) -> Result<(PathBuf, &'static str)> {
    let file = o.dir.join("cbr5m.ts");
    let recipe = "720p25 testsrc2 H.264 4.7M + AAC 128k, muxrate 5M, 120 s";
    let recipe_path = o.dir.join("cbr5m.recipe");
    if !file.exists() || std::fs::read_to_string(&recipe_path).ok().as_deref() != Some(recipe) {
        eprintln!("cost: generating {}", file.display());
        let out = Command::new(&o.ffmpeg)
            .args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i"])
            .arg("testsrc2=size=1280x720:rate=25")
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args([
                "-t",
                "120",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-g",
                "50",
            ])
            .args(["-b:v", "4.7M", "-maxrate", "4.7M", "-bufsize", "2M"])
            .args(["-c:a", "aac", "-b:a", "128k", "-muxrate", "5000000"])
            .args(["-f", "mpegts"])
            .arg(&file)
            .output()
            .with_context(|| format!("running {}", o.ffmpeg))?;
        if !out.status.success() {
            bail!(
                "making the 5 Mbit/s input failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        std::fs::write(&recipe_path, recipe)?;
    }
    Ok((file, recipe))
}

/// The `transport` tier at scale (the issue's ≥ 100 streams of 5 Mbit/s per core):
/// `--transport-streams` streams of a constant 5 Mbit/s TS (720p25 H.264 + AAC, made by
/// FFmpeg), all at `tier = "transport"`, on one CPU permit (`workers = 1`: one core's worth of
/// decoding and analysis), fed by one [`Blaster`]; `auto_degrade = false`, so nothing hides a
/// host that cannot keep up.
fn transport_streams(o: &Options, scratch: &Path) -> Result<String> {
    let n = o.transport_streams.max(1);
    let (file, recipe) = cbr5m(o)?;
    eprintln!("cost: transport tier, {n} streams");
    let run = watch_service(
        o,
        &Setup {
            feed: Feed::Blast(&file, BPS),
            n,
            workers: 1,
            auto: false,
            tier: Tier::Transport,
            keyframe_interval: 0.0,
            settle: 20.0,
        },
        scratch,
    )?;
    Ok(format!(
        "## The `transport` tier at scale\n\n{n} real-time streams of a constant 5 Mbit/s TS \
         (720p25 H.264 + AAC, {recipe}), each sent to its own UDP port on loopback by one \
         sending thread of the benchmark (in 1316-byte datagrams at 5 Mbit/s), into one \
         `avmon run` with every stream at `tier = \"transport\"`, `[service] workers = 1` (one \
         core's worth of permits) and `auto_degrade = false`; settled 20 s after every stream \
         flows, then watched for {:.0} s. Columns as in the degradation table; the sender's CPU \
         was {:.0} % of a core.\n\n{}",
        o.window,
        run.own_pct,
        degrade_table(std::slice::from_ref(&run), n)
    ))
}

/// Streams per core at `full` against `keyframes`, in service mode: the same constant 5 Mbit/s
/// input ([`cbr5m`]) blasted to `tier_streams.0` streams at `full`, then to `tier_streams.1` at
/// `keyframes` (every keyframe), then at `keyframes` with `keyframe_interval_s = 6`, each in its
/// own `avmon run` with one worker and `auto_degrade = false`; CPU per stream from avmon's own
/// CPU over the window. Start-up is outside the window, as a service pays it.
fn tier_streams(o: &Options, scratch: &Path) -> Result<String> {
    let (file, recipe) = cbr5m(o)?;
    let (n_full, n_kf) = (o.tier_streams.0.max(1), o.tier_streams.1.max(1));
    let mut rows = Vec::new();
    for (tier, n, interval) in [
        (Tier::Full, n_full, 0.0),
        (Tier::Keyframes, n_kf, 0.0),
        (Tier::Keyframes, n_kf, 6.0),
    ] {
        eprintln!(
            "cost: tiers, {n} streams at {}, interval {interval}",
            tier.name()
        );
        let run = watch_service(
            o,
            &Setup {
                feed: Feed::Blast(&file, BPS),
                n,
                workers: 1,
                auto: false,
                tier,
                keyframe_interval: interval,
                settle: 15.0,
            },
            scratch,
        )?;
        rows.push((tier, n, interval, run));
    }
    let per_stream = |r: &DegradeRun, n: usize| r.avmon_pct / n as f64;
    let full = per_stream(&rows[0].3, rows[0].1);
    let mut t = format!(
        "## Streams per core by tier, in service mode\n\nThe constant 5 Mbit/s TS ({recipe}) \
         blasted to N streams on loopback into one `avmon run` with `[service] workers = 1` and \
         `auto_degrade = false`, one run per row; settled 15 s after every stream flows, then \
         watched for {:.0} s. Streams per core = 100 % / (avmon CPU per stream).\n\n\
         | tier | keyframe_interval_s | streams | avmon CPU | per stream | streams per core | against `full` | streams behind | UDP drops | sender CPU |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        o.window
    );
    for (tier, n, interval, r) in &rows {
        let p = per_stream(r, *n);
        let _ = writeln!(
            t,
            "| `{}` | {interval} | {n} | {:.1} % | {:.2} % | {:.0} | {:.1}× | {} of {n} | {} | {:.0} % |",
            tier.name(),
            r.avmon_pct,
            p,
            100.0 / p,
            full / p,
            r.behind,
            r.drops,
            r.own_pct
        );
    }
    Ok(t)
}

/// The scheduling model against a thread per stream left to the kernel: `--sched-streams`
/// 720p25 streams with one permit per core, and with 1024 (no limit), auto_degrade off, twice
/// each, interleaved.
fn sched(o: &Options, file: &Path, scratch: &Path) -> Result<String> {
    let n = o.sched_streams.max(1);
    let mut runs = Vec::new();
    for _ in 0..2 {
        for workers in [num_cpus(), 1024] {
            eprintln!("cost: sched, workers = {workers}");
            runs.push(watch_service(
                o,
                &Setup {
                    feed: Feed::Ffmpeg(file),
                    n,
                    workers,
                    auto: false,
                    tier: Tier::Full,
                    keyframe_interval: 0.0,
                    settle: 10.0,
                },
                scratch,
            )?);
        }
    }
    Ok(format!(
        "## Scheduling model\n\n{n} real-time 720p25 streams into one `avmon run` (`auto_degrade = \
         false`) with one CPU permit per core (`workers = {}`), and with `workers = 1024` (every \
         stream's thread runs when it likes: the kernel alone shares the cores), twice each, \
         interleaved; each watched for {:.0} s, 10 s after every stream decodes. Columns as in \
         the degradation table.\n\n{}",
        num_cpus(),
        o.window,
        degrade_table(&runs, n)
    ))
}

// ---------------------------------------------------------------------------------------------
// Latency

/// Wall time now, seconds since the Unix epoch.
fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// What the webhook receiver got: each request's wall time (Unix seconds) and JSON body.
type Received = Arc<Mutex<Vec<(f64, Value)>>>;

/// A webhook receiver on loopback: every request's body with the wall time it was read by.
fn receiver() -> Result<(u16, Received)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let out = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let out = out.clone();
            std::thread::spawn(move || serve(conn, &out));
        }
    });
    Ok((port, got))
}

/// Requests on one (keep-alive) connection until it closes.
fn serve(mut conn: TcpStream, out: &Mutex<Vec<(f64, Value)>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        // A whole request: headers, then Content-Length bytes.
        let request = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    let body = buf[end + 4..end + 4 + len].to_vec();
                    buf.drain(..end + 4 + len);
                    break Some(body);
                }
            }
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => break None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let Some(body) = request else { return };
        let at = now_s();
        if let Ok(v) = serde_json::from_slice::<Value>(&body) {
            if let Ok(mut o) = out.lock() {
                o.push((at, v));
            }
        }
        if conn
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

/// A running [`relay`].
struct Relay {
    port: u16,
    /// When the first datagram came (Unix seconds).
    first: Arc<Mutex<Option<f64>>>,
    stop: Arc<AtomicBool>,
}

/// Forwards datagrams from a local socket to `to`, noting when the first one came: the
/// sender's start `S`, to which the file's media times are added.
fn relay(to: u16) -> Result<Relay> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    let port = sock.local_addr()?.port();
    let first = Arc::new(Mutex::new(None));
    let stop = Arc::new(AtomicBool::new(false));
    let (f, s) = (first.clone(), stop.clone());
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while !s.load(Ordering::Relaxed) {
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                if let Ok(mut f) = f.lock() {
                    f.get_or_insert_with(now_s);
                }
                let _ = sock.send_to(&buf[..n], ("127.0.0.1", to));
            }
        }
    });
    Ok(Relay { port, first, stop })
}

fn latency(o: &Options, file: &Path, n: usize, scratch: &Path) -> Result<String> {
    eprintln!(
        "cost: latency ({:.0} s of live stream)",
        LAT_EVERY * n as f64
    );
    let (hook, got) = receiver()?;
    let port = free_udp_ports(1)?[0];
    let svc = Service::start(
        o,
        scratch,
        &format!(
            "[[streams]]\nid = \"latency\"\nurl = \"udp://127.0.0.1:{port}\"\n\
             [streams.detectors.black]\nmin_duration = {LAT_MIN_DURATION:.1}\n\
             [[notifiers]]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{hook}/hook\"\n"
        ),
    )?;
    let relay = relay(port)?;
    let mut send = senders(o, file, &[relay.port], false)?;
    let _ = send.0[0].wait();
    std::thread::sleep(Duration::from_secs(3));
    relay.stop.store(true, Ordering::Relaxed);
    drop(svc);
    let start = relay
        .first
        .lock()
        .ok()
        .and_then(|f| *f)
        .context("the sender sent nothing")?;
    let got = got.lock().map(|g| g.clone()).unwrap_or_default();
    let (mut to_raise, mut to_deliver, mut total, mut onset_err) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (at, v) in &got {
        if v["kind"] != "video.black" || v["state"] != "raised" {
            continue;
        }
        let (Some(start_s), Some(raised)) = (
            v["start_s"].as_f64(),
            v["raised_at"]
                .as_str()
                .and_then(|r| chrono::DateTime::parse_from_rfc3339(r).ok()),
        ) else {
            continue;
        };
        let k = ((start_s - LAT_ONSET) / LAT_EVERY).round().max(0.0);
        let onset = LAT_ONSET + k * LAT_EVERY;
        let crossed = start + onset + LAT_MIN_DURATION;
        let raised = raised.timestamp_micros() as f64 / 1e6;
        to_raise.push(raised - crossed);
        to_deliver.push(at - raised);
        total.push(at - crossed);
        onset_err.push(start_s - onset);
    }
    let mut t = format!(
        "## Alert latency\n\nOne live 720p25 stream (`ffmpeg -re` copy to UDP) into `avmon run` \
         with a webhook to a receiver in the benchmark; black from {LAT_ONSET} s for 4 s every \
         {LAT_EVERY} s, {n} times; black's minimum duration {LAT_MIN_DURATION} s. Threshold \
         crossed = the sender's first datagram + onset + minimum duration; raised = the alert's \
         `raised_at`; delivered = when the receiver had read the request. {} of {n} defects \
         raised (mean onset error {:+.3} s). Percentiles are nearest-rank (with 10 samples, p99 \
         is the largest).\n\n| interval | p50 | p99 | max |\n|---|---:|---:|---:|\n",
        to_raise.len(),
        if onset_err.is_empty() {
            f64::NAN
        } else {
            onset_err.iter().sum::<f64>() / onset_err.len() as f64
        }
    );
    for (name, v) in [
        ("crossed → raised", &to_raise),
        ("raised → delivered", &to_deliver),
        ("crossed → delivered", &total),
    ] {
        let _ = writeln!(
            t,
            "| {name} | {:.0} ms | {:.0} ms | {:.0} ms |",
            percentile(v, 50.0) * 1e3,
            percentile(v, 99.0) * 1e3,
            v.iter().copied().fold(f64::NAN, f64::max) * 1e3
        );
    }
    t.push_str("\nTarget: raised → delivered p99 ≤ 1 s.\n");
    Ok(t)
}

// ---------------------------------------------------------------------------------------------
// Profile

/// `perf record` of `check` on `file`; self time by who spends it, and the top 10 functions.
fn profile(o: &Options, file: &Path, scratch: &Path) -> Result<String> {
    eprintln!("cost: profile");
    let data = scratch.join("perf.data");
    let status = Command::new("perf")
        .args(["record", "-q", "-F", "999", "-o"])
        .arg(&data)
        .args([&o.avmon, "check"])
        .arg(file)
        .args(["--format", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !status.is_ok_and(|s| s.success()) {
        return Ok("## Profile\n\n`perf record` is not available here.\n".to_string());
    }
    let out = Command::new("perf")
        .args([
            "report",
            "--no-children",
            "--sort",
            "dso,symbol",
            "--stdio",
            "-g",
            "none",
            "-i",
        ])
        .arg(&data)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // Lines: "  4.61%  avmon   [.] avmon_detect::corruption::measure_bands".
    let rows: Vec<(f64, String, String)> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (pct, rest) = l.trim().split_once('%')?;
            let pct: f64 = pct.trim().parse().ok()?;
            let (dso, sym) = rest.trim().split_once(' ')?;
            let sym = sym
                .trim()
                .trim_start_matches("[.]")
                .trim_start_matches("[k]")
                .trim()
                // perf's empty trailing columns.
                .trim_end_matches([' ', '-']);
            Some((pct, dso.to_string(), sym.to_string()))
        })
        .collect();
    // FFmpeg's unnamed internal functions (addresses) as one row per library.
    let mut top: Vec<(f64, String, String)> = Vec::new();
    for (pct, dso, sym) in &rows {
        let sym = if sym.starts_with("0x") {
            "(internal functions, no symbols)".to_string()
        } else {
            sym.clone()
        };
        match top.iter_mut().find(|x| x.1 == *dso && x.2 == sym) {
            Some(x) => x.0 += pct,
            None => top.push((*pct, dso.clone(), sym)),
        }
    }
    top.sort_by(|a, b| b.0.total_cmp(&a.0));
    let who = |dso: &str, sym: &str| -> &'static str {
        if dso.starts_with("libav") || dso.starts_with("libsw") {
            "FFmpeg (libav*, libsw*)"
        } else if sym.contains("avmon_detect::") {
            "avmon detectors (avmon-detect)"
        } else if dso == "avmon" {
            "avmon, the rest (demux glue, transport analyser, pipeline)"
        } else if dso.starts_with("[kernel") {
            "kernel"
        } else {
            "libc, loader, other libraries"
        }
    };
    let mut groups: Vec<(&str, f64)> = Vec::new();
    for (pct, dso, sym) in &rows {
        let g = who(dso, sym);
        match groups.iter_mut().find(|x| x.0 == g) {
            Some(x) => x.1 += pct,
            None => groups.push((g, *pct)),
        }
    }
    groups.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut t = String::from(
        "## Profile of `avmon check` (720p25)\n\n`perf record -F 999` samples, self time. \
         Debian's FFmpeg has no frame pointers and no symbols for its internal functions, so \
         call graphs do not unwind through it: the split is by who runs the sampled \
         instruction, and FFmpeg's internal functions are one row per library.\n\n\
         | who | share of samples |\n|---|---:|\n",
    );
    for (g, pct) in &groups {
        let _ = writeln!(t, "| {g} | {pct:.1} % |");
    }
    t.push_str("\n| # | self | library | function |\n|---:|---:|---|---|\n");
    for (i, (pct, dso, sym)) in top.iter().take(10).enumerate() {
        let sym: String = sym.chars().take(100).collect();
        let _ = writeln!(t, "| {} | {pct:.2} % | {dso} | `{sym}` |", i + 1);
    }
    Ok(t)
}

/// One function of a callgrind profile: inclusive instructions, and its name.
struct Inclusive {
    ir: f64,
    name: String,
}

/// `check` under callgrind on `clip`: the inclusive instruction count of each function, so
/// FFmpeg's decode (`avcodec_send_packet` and `avcodec_receive_frame`, exported and so named)
/// stands against each detector and avmon's own code.
fn inclusive(o: &Options, clip: &Path, scratch: &Path) -> Result<String> {
    eprintln!("cost: callgrind");
    let out = scratch.join("callgrind.out");
    let status = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .args([&o.avmon, "check"])
        .arg(clip)
        .args(["--format", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !status.is_ok_and(|s| s.success()) {
        return Ok("valgrind (callgrind) is not available here.\n".to_string());
    }
    let text = Command::new("callgrind_annotate")
        .args(["--inclusive=yes", "--threshold=100", "--auto=no"])
        .arg(&out)
        .output()?;
    let text = String::from_utf8_lossy(&text.stdout);
    // "12,345,678 (97.20%)  ???:main [/path/avmon]" or "12,345,678  PROGRAM TOTALS".
    let mut total = 0.0;
    let mut fns: Vec<Inclusive> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let Some((n, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(ir) = n.replace(',', "").parse::<f64>() else {
            continue;
        };
        let rest = rest.trim();
        let rest = match rest.strip_prefix('(') {
            Some(r) => r.split_once(')').map_or("", |x| x.1).trim(),
            None => rest,
        };
        if rest.starts_with("PROGRAM TOTALS") {
            total = ir;
            continue;
        }
        // "file:function [object]": the function, without the file and the object.
        let name = rest.rsplit_once(" [").map_or(rest, |x| x.0);
        let name = name.split_once(':').map_or(name, |x| x.1).to_string();
        // callgrind lists a function once per source file its inlined code came from.
        match fns.iter_mut().find(|f| f.name == name) {
            Some(f) => f.ir = f.ir.max(ir),
            None => fns.push(Inclusive { ir, name }),
        }
    }
    if total <= 0.0 {
        bail!("no totals in callgrind_annotate's output");
    }
    fns.sort_by(|a, b| b.ir.total_cmp(&a.ir));
    let share = |pred: &dyn Fn(&str) -> bool| -> f64 {
        fns.iter()
            .filter(|f| pred(&f.name))
            .map(|f| f.ir)
            .sum::<f64>()
            / total
            * 100.0
    };
    let detector = |n: &str| {
        n.starts_with("<avmon_detect::")
            && n.contains("as avmon_core::detector::Detector>::")
            && !n.ends_with("::name")
    };
    let mut t = format!(
        "### Inclusive instructions (callgrind, 10 s of 720p25)\n\n`valgrind --tool=callgrind` \
         of `avmon check` on a 10 s clip of the same kind ({:.2} G instructions in all). \
         Inclusive: a function with everything it calls. Instructions are a proxy for time \
         (libavcodec's SIMD does more per instruction than the detectors' loops).\n\n\
         | part | inclusive share |\n|---|---:|\n\
         | FFmpeg decode (`avcodec_send_packet` + `avcodec_receive_frame`) | {:.1} % |\n\
         | FFmpeg demux (`av_read_frame`) | {:.1} % |\n\
         | avmon detectors (every `Detector::on_*`) | {:.1} % |\n\n\
         The top 10 named functions below the call chain from `main` to the decode loop \
         (those under 90 % inclusive; libavcodec's internal functions have no symbols):\n\n| # | inclusive | function |\n|---:|---:|---|\n",
        total / 1e9,
        share(&|n| n == "avcodec_send_packet" || n == "avcodec_receive_frame"),
        share(&|n| n == "av_read_frame"),
        share(&detector),
    );
    for (i, f) in fns
        .iter()
        .filter(|f| f.ir / total < 0.9 && !f.name.starts_with("0x"))
        .take(10)
        .enumerate()
    {
        let name: String = f.name.chars().take(100).collect();
        let _ = writeln!(
            t,
            "| {} | {:.1} % | `{name}` |",
            i + 1,
            f.ir / total * 100.0
        );
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 5.0);
        assert_eq!(percentile(&v, 99.0), 10.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn slope_of_a_line() {
        assert!((slope(&[1.0, 2.0, 4.0], &[10.0, 13.0, 19.0]) - 3.0).abs() < 1e-9);
    }
}
