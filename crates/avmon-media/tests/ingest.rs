//! Byte-level ingest with real peers: a TS file, UDP multicast and RTP on loopback sent by the
//! `ffmpeg` CLI, and SRT with `ffmpeg` as the caller and avmon listening. Every byte the demuxer
//! gets passes the tap exactly once, and the pictures decode.

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use avmon_core::{AudioBuffer, VideoFrame};
use avmon_media::synth::{generate, SynthSpec};
use avmon_media::{ByteTap, EndReason, FrameSink, Input, MediaClock, OpenOptions, Tap};

/// Counts bytes and TS sync bytes at 188-byte spacing (across chunk boundaries), and RTP loss.
#[derive(Default)]
struct Counter {
    bytes: AtomicU64,
    rtp_lost: AtomicU64,
    /// Bytes of the current TS packet seen, and packets whose first byte was 0x47.
    state: Mutex<(usize, u64, u64)>,
}

impl ByteTap for Counter {
    fn on_start(&self) {}
    fn on_arrival(&self, _: f64, _: usize) {}
    fn on_bytes(&self, bytes: &[u8]) {
        self.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let mut s = self.state.lock().unwrap();
        for &b in bytes {
            if s.0 == 0 {
                s.1 += 1;
                s.2 += u64::from(b == 0x47);
            }
            s.0 = (s.0 + 1) % 188;
        }
    }
    fn on_rtp_loss(&self, lost: u64) {
        self.rtp_lost.fetch_add(lost, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Frames {
    video: usize,
    audio: usize,
}

impl FrameSink for Frames {
    fn on_video(&mut self, _: &VideoFrame<'_>) {
        self.video += 1;
    }
    fn on_audio(&mut self, _: &AudioBuffer<'_>) {
        self.audio += 1;
    }
}

fn synth(dir: &std::path::Path, secs: f64) -> std::path::PathBuf {
    let path = dir.join("in.ts");
    let spec = SynthSpec {
        width: 320,
        height: 180,
        duration: Some(secs),
        ..SynthSpec::default()
    };
    generate(
        path.to_str().unwrap(),
        &spec,
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    path
}

fn options(tap: &Arc<Counter>) -> OpenOptions {
    OpenOptions {
        io_timeout: Duration::from_secs(2),
        open_timeout: Duration::from_secs(10),
        tap: Some(Tap(tap.clone())),
        ..OpenOptions::default()
    }
}

/// A free UDP port on loopback (bound, then released).
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `ffmpeg` sending `file` in real time to `url` (stream copy), muxed as `format`.
fn send(file: &std::path::Path, format: &str, url: &str) -> Child {
    Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-re",
            "-i",
        ])
        .arg(file)
        .args(["-c", "copy", "-f", format, url])
        .stdout(Stdio::null())
        .spawn()
        .expect("ffmpeg runs")
}

/// Open `url` with the counting tap and decode until the sender stops (the input times out).
fn receive(url: &str, tap: &Arc<Counter>) -> (Frames, EndReason) {
    let mut input = Input::open(url, &options(tap), Arc::new(AtomicBool::new(false)))
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    assert_eq!(input.info().format, "mpegts");
    let mut frames = Frames::default();
    let end = input
        .run(&mut MediaClock::new(), &mut frames)
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    (frames, end)
}

fn assert_ts_bytes(tap: &Counter) {
    let (_, packets, synced) = *tap.state.lock().unwrap();
    assert!(packets > 100, "only {packets} TS packets seen");
    assert_eq!(synced, packets, "every 188th byte is a sync byte");
}

#[test]
fn ts_file_bytes_pass_the_tap_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = synth(dir.path(), 2.0);
    let tap = Arc::new(Counter::default());
    let (frames, end) = receive(path.to_str().unwrap(), &tap);
    assert_eq!(end, EndReason::Eof);
    assert_eq!(frames.video, 50);
    let size = std::fs::metadata(&path).unwrap().len();
    assert_eq!(tap.bytes.load(Ordering::Relaxed), size);
    assert_ts_bytes(&tap);
}

#[test]
fn garbage_and_missing_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.ts");
    // Sync bytes where a TS file has them, garbage in between: recognised as TS, then nothing
    // decodes.
    let mut bytes = vec![0u8; 188 * 50];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = if i % 188 == 0 {
            0x47
        } else {
            (i * 7919 % 251) as u8
        };
    }
    std::fs::write(&junk, &bytes).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let err = Input::open(
        junk.to_str().unwrap(),
        &OpenOptions::default(),
        stop.clone(),
    )
    .err()
    .expect("garbage does not open");
    assert!(err.to_string().contains("junk.ts"), "{err}");
    for url in [
        "udp://example.invalid:5000",
        "udp://239.1.1.1",
        "rtp://10.0.0.1:5004?sources=1.2.3.4",
    ] {
        let err = Input::open(url, &OpenOptions::default(), stop.clone())
            .err()
            .expect("a bad URL does not open");
        assert!(err.to_string().contains(url), "{err}");
    }
}

#[test]
fn udp_multicast_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let path = synth(dir.path(), 3.0);
    let port = free_port();
    let group = "239.255.42.1";
    let tap = Arc::new(Counter::default());
    let mut sender = send(
        &path,
        "mpegts",
        &format!("udp://{group}:{port}?localaddr=127.0.0.1&pkt_size=1316&ttl=0"),
    );
    let (frames, end) = receive(&format!("udp://@{group}:{port}?localaddr=127.0.0.1"), &tap);
    let _ = sender.wait();
    assert_eq!(
        end,
        EndReason::TimedOut,
        "the sender stopped: the input times out"
    );
    assert!(frames.video >= 50, "{} pictures decoded", frames.video);
    assert!(frames.audio > 0);
    assert_ts_bytes(&tap);
}

#[test]
fn rtp_headers_stripped_and_no_loss_counted_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let path = synth(dir.path(), 3.0);
    let port = free_port();
    let tap = Arc::new(Counter::default());
    let mut sender = send(&path, "rtp_mpegts", &format!("rtp://127.0.0.1:{port}"));
    let (frames, end) = receive(&format!("rtp://127.0.0.1:{port}"), &tap);
    let _ = sender.wait();
    assert_eq!(end, EndReason::TimedOut);
    assert!(frames.video >= 50, "{} pictures decoded", frames.video);
    assert_ts_bytes(&tap);
    assert_eq!(tap.rtp_lost.load(Ordering::Relaxed), 0);
}

/// Wait until a UDP socket on this host is bound to `port` (the kernel's /proc/net/udp): the
/// listener is up before the caller calls.
fn wait_bound(port: u16) {
    let suffix = format!(":{port:04X}");
    let bound = |table: &str| {
        std::fs::read_to_string(format!("/proc/net/{table}")).is_ok_and(|t| {
            t.lines().any(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|a| a.ends_with(&suffix))
            })
        })
    };
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while !bound("udp") && !bound("udp6") {
        assert!(
            std::time::Instant::now() < until,
            "nothing bound UDP port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn srt_listener_with_ffmpeg_calling() {
    let dir = tempfile::tempdir().unwrap();
    let path = synth(dir.path(), 3.0);
    let port = free_port();
    let tap = Arc::new(Counter::default());
    // avmon listens; ffmpeg calls once the listener's socket is bound.
    let url =
        format!("srt://127.0.0.1:{port}?mode=listener&latency=120000&passphrase=avmon-secret-1");
    let caller =
        format!("srt://127.0.0.1:{port}?mode=caller&latency=120000&passphrase=avmon-secret-1");
    let sender = std::thread::spawn(move || {
        wait_bound(port);
        send(&path, "mpegts", &caller).wait()
    });
    let (frames, _end) = receive(&url, &tap);
    sender.join().unwrap().unwrap();
    assert!(frames.video >= 50, "{} pictures decoded", frames.video);
    assert_ts_bytes(&tap);
}
