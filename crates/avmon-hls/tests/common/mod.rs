//! Real peers for the HLS tests: nginx (Debian's package) serving a temp directory on a free
//! loopback port, FFmpeg's HLS muxer writing a live playlist into it in real time, and a sink
//! that records what a variant's monitor reports, with wall-clock stamps. The binary's service
//! test (`crates/avmon/tests/live.rs`) uses the same origin.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use avmon_core::{Finding, FindingEdge};
use avmon_hls::{HlsSink, Segment};

/// An nginx serving `root` on 127.0.0.1:`port`, as the current user, with its own config, pid
/// and temp paths: nothing of the system's nginx is used.
pub struct Nginx {
    /// `None` while [`stop`](Nginx::stop)ped.
    child: Option<Child>,
    pub port: u16,
    pub root: PathBuf,
    conf: PathBuf,
    dir: tempfile::TempDir,
}

fn nginx_binary() -> PathBuf {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
    {
        let p = Path::new(dir).join("nginx");
        if p.is_file() {
            return p;
        }
    }
    panic!("nginx is not installed: `./dev test` installs it (or `apt-get install nginx`)");
}

impl Nginx {
    /// Start nginx; `locations` is extra config inside its `server` block.
    pub fn start(locations: &str) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("www");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        for _attempt in 0..5 {
            // A port that was free a moment ago; another process may take it first, so retry.
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let d = dir.path().display();
            let conf = format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\nerror_log stderr crit;\n\
                 pid {d}/nginx.pid;\nevents {{ worker_connections 64; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {d}/tmp/body;\n\
                 proxy_temp_path {d}/tmp/proxy;\n  fastcgi_temp_path {d}/tmp/fastcgi;\n\
                 uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n\
                 types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; \
                 application/dash+xml mpd; video/iso.segment m4s; }}\n\
                 default_type application/octet-stream;\n\
                 server {{\n    listen 127.0.0.1:{port};\n    root {root};\n\
                 add_header Cache-Control no-cache;\n    {locations}\n  }}\n}}\n",
                root = root.display()
            );
            let conf_path = dir.path().join("nginx.conf");
            std::fs::write(&conf_path, conf).unwrap();
            if let Some(child) = launch(dir.path(), &conf_path, port) {
                return Nginx {
                    child: Some(child),
                    port,
                    root,
                    conf: conf_path,
                    dir,
                };
            }
        }
        panic!("nginx did not start (see its messages above)");
    }

    /// Go away, as an origin that crashed: connections are refused until [`restart`].
    ///
    /// [`restart`]: Nginx::restart
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Come back on the same port, with the same config and files.
    pub fn restart(&mut self) {
        self.stop();
        self.child = Some(
            launch(self.dir.path(), &self.conf, self.port)
                .expect("nginx did not start again on its port"),
        );
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }
}

/// Run nginx with `conf` (which listens on `port`) until it accepts connections; `None` if it
/// exited first (the port was taken, or a config error, printed) or did not start in time.
fn launch(prefix: &Path, conf: &Path, port: u16) -> Option<Child> {
    let mut child = Command::new(nginx_binary())
        .arg("-p")
        .arg(prefix)
        .arg("-e")
        .arg("stderr")
        .arg("-c")
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start nginx");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return None;
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(child);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

/// FFmpeg's HLS muxer writing `dir/live.m3u8` and `dir/segNNNNN.ts` in real time: 320x240 test
/// pattern and a tone, H.264 + AAC, a keyframe every second, 1 s segments, 5 in the playlist.
pub struct Writer {
    child: Child,
}

/// The sound of every writer: a 1 kHz tone.
pub const TONE: &str = "sine=frequency=1000:sample_rate=48000";

/// The encoder arguments shared by the live and the fast writers.
fn encode_args(cmd: &mut Command) {
    encode_sound(cmd, TONE);
}

/// [`encode_args`] with `sound` (a lavfi source) for the audio.
fn encode_sound(cmd: &mut Command, sound: &str) {
    cmd.args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", sound])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-g", "25", "-keyint_min", "25", "-sc_threshold", "0"])
        .args(["-c:a", "aac", "-b:a", "64k"]);
}

/// [`encode_args`], then FFmpeg's HLS muxer with 1 s segments.
fn hls_args(cmd: &mut Command) {
    encode_args(cmd);
    cmd.args(["-f", "hls", "-hls_time", "1"]);
}

impl Writer {
    /// Start writing; `flags` are added to `delete_segments+omit_endlist+temp_file`.
    pub fn start(dir: &Path, flags: &str) -> Writer {
        let mut cmd = Command::new("ffmpeg");
        cmd.arg("-re");
        hls_args(&mut cmd);
        cmd.args(["-hls_list_size", "5"])
            .arg("-hls_flags")
            .arg(format!("delete_segments+omit_endlist+temp_file{flags}"))
            .arg("-hls_segment_filename")
            .arg(dir.join("seg%05d.ts"))
            .arg(dir.join("live.m3u8"))
            .stdin(Stdio::null());
        Writer {
            child: cmd.spawn().expect("start ffmpeg (is it installed?)"),
        }
    }

    /// Stop writing at once, as a crashed packager does: no last segment, no end tag.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// FFmpeg's DASH muxer writing `dir/live.mpd` (a live MPD: `type="dynamic"`) with
/// `init-streamN.m4s` and `chunk-streamN-NNNNN.m4s`: the same content as [`Writer`], video and
/// audio each in its own AdaptationSet (Representations `0` and `1`), 1 s segments, 5 in the
/// window. `args` go to the muxer (`-use_timeline 0` for a template with `@duration`).
pub struct DashWriter {
    child: Child,
}

impl DashWriter {
    pub fn start(dir: &Path, args: &[&str]) -> DashWriter {
        let mut cmd = Command::new("ffmpeg");
        cmd.arg("-re");
        encode_args(&mut cmd);
        cmd.args(["-f", "dash", "-seg_duration", "1", "-window_size", "5"])
            .args(["-extra_window_size", "3", "-streaming", "0"])
            .args(args)
            .arg(dir.join("live.mpd"))
            .stdin(Stdio::null());
        DashWriter {
            child: cmd.spawn().expect("start ffmpeg (is it installed?)"),
        }
    }

    /// Send the packager `signal` (`STOP` to stall it, `CONT` to let it go on).
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill -{signal} failed");
    }

    /// Stop writing at once, as a crashed packager does.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for DashWriter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Write `seconds` of the same content (with `sound` for the audio) as fast as possible into
/// `dir/name` (an on-demand MPD, `type="static"`), as [`DashWriter`] names its files.
pub fn write_dash_vod(dir: &Path, name: &str, seconds: u32, sound: &str) {
    let mut cmd = Command::new("ffmpeg");
    encode_sound(&mut cmd, sound);
    cmd.args(["-t", &seconds.to_string()])
        .args(["-f", "dash", "-seg_duration", "1"])
        .arg(dir.join(name));
    let status = cmd.status().expect("run ffmpeg");
    assert!(status.success(), "ffmpeg failed: {status}");
}

/// Write `seconds` of the same content as fast as possible into `dir/playlist` (a complete,
/// ended playlist) and segments named by the muxer's `segments` pattern, with `extra` muxer
/// arguments (a key info file, flags). The output is byte-identical from run to run.
pub fn write_vod(dir: &Path, playlist: &str, segments: &str, seconds: u32, extra: &[&str]) {
    let mut cmd = Command::new("ffmpeg");
    hls_args(&mut cmd);
    cmd.args([
        "-t",
        &seconds.to_string(),
        "-hls_list_size",
        "0",
        "-hls_playlist_type",
        "vod",
    ])
    .args(extra)
    .arg("-hls_segment_filename")
    .arg(dir.join(segments))
    .arg(dir.join(playlist));
    let status = cmd.status().expect("run ffmpeg");
    assert!(status.success(), "ffmpeg failed: {status}");
}

/// Wait until `f` holds, checking every 20 ms; whether it did within `timeout`.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A segment as the sink saw it (the bytes are kept: tests decode them).
#[derive(Clone, Debug)]
pub struct Seen {
    pub sequence: u64,
    pub start_t: f64,
    pub duration: f64,
    pub discontinuity: bool,
    pub after_gap: bool,
    pub bytes: Vec<u8>,
    pub download_s: f64,
    pub bitrate_bps: f64,
}

#[derive(Debug, Default)]
pub struct Log {
    pub findings: Vec<(Instant, Finding)>,
    pub segments: Vec<(Instant, Seen)>,
    /// The media times at which monitors of the variant ended.
    pub ends: Vec<f64>,
}

impl Log {
    /// When the first finding of `kind` with `edge` came, and the finding.
    pub fn first(&self, kind: &str, edge: FindingEdge) -> Option<&(Instant, Finding)> {
        self.findings
            .iter()
            .find(|(_, f)| f.kind == kind && f.edge == edge)
    }

    pub fn count(&self, kind: &str, edge: FindingEdge) -> usize {
        self.findings
            .iter()
            .filter(|(_, f)| f.kind == kind && f.edge == edge)
            .count()
    }
}

/// A sink the test thread can read while the monitor runs.
#[derive(Clone, Default)]
pub struct Recorder(pub Arc<Mutex<Log>>);

impl Recorder {
    pub fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.0.lock().unwrap()
    }

    /// Wait up to `timeout` for the first finding of `kind` with `edge`: when it came, and it.
    pub fn wait_finding(
        &self,
        kind: &str,
        edge: FindingEdge,
        timeout: Duration,
    ) -> Option<(Instant, Finding)> {
        wait_for(timeout, || self.log().first(kind, edge).is_some());
        self.log().first(kind, edge).cloned()
    }
}

impl HlsSink for Recorder {
    fn on_finding(&mut self, finding: Finding) {
        self.log().findings.push((Instant::now(), finding));
    }

    fn on_segment(&mut self, s: &Segment<'_>) {
        let seen = Seen {
            sequence: s.sequence,
            start_t: s.start_t,
            duration: s.duration,
            discontinuity: s.discontinuity,
            after_gap: s.after_gap,
            bytes: s.bytes.to_vec(),
            download_s: s.download_s,
            bitrate_bps: s.bitrate_bps(),
        };
        self.log().segments.push((Instant::now(), seen));
    }

    fn on_end(&mut self, media_t: f64) {
        self.log().ends.push(media_t);
    }
}
