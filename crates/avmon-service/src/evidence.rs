//! Evidence kept with alerts: a snapshot (JPEG of the picture at the onset) for every alert, and
//! a clip (the stream's own transport-stream bytes from `pre_s` before the onset to `post_s`
//! after) for every video or transport alert.
//!
//! - Pictures: the decode thread keeps a scaled copy of its picture every second
//!   ([`avmon_media::Pictures`]); the snapshot is encoded from the copy at the onset, on the
//!   evidence thread, only when an alert is raised.
//! - Bytes: a [`ClipRing`] sees every byte avmon reads itself (it is a [`ByteTap`], beside the
//!   transport analyser) and keeps the last few seconds, bounded in time and size. When a video
//!   or transport alert is raised, the evidence thread waits until `post_s` after the onset and
//!   writes the ring's bytes around it out, from a packet boundary.
//! - Files are `{dir}/{alert_id}.jpg` and `{dir}/{alert_id}.ts`; the oldest go when they are
//!   older than `max_age` or take more than `max_bytes` together.
//!
//! Nothing here runs on a decode thread but the ring's append (a copy of bytes already read).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use avmon_core::Alert;
use avmon_media::{ByteTap, Pictures};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::{Deserialize, Serialize};

use crate::transport::TransportTap;

/// `[evidence]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvidenceConfig {
    /// Whether snapshots and clips are kept, and pictures for thumbnails taken, at all.
    pub enabled: bool,
    /// Where snapshots and clips are written (created at start). Default: `evidence/` beside
    /// the store's database file (`avmon.db` → `avmon.evidence/`).
    pub dir: PathBuf,
    /// Seconds of the stream kept before an alert's onset in its clip.
    pub pre_s: f64,
    /// Seconds after the onset in the clip; the clip is written this long after the onset.
    pub post_s: f64,
    /// Evidence older than this is deleted: seconds, or a string with a unit (`"7d"`, `"12h"`).
    pub max_age: Amount,
    /// The most all evidence together may take, oldest deleted first: bytes, or a string with
    /// a unit (`"2GiB"`, `"500MB"`).
    pub max_bytes: Amount,
    /// The most one stream's byte ring holds (the clip's own bound on a high-bitrate stream).
    pub ring_max_bytes: Amount,
}

/// A number, or a string with a unit, as a user writes a duration or a size.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Amount {
    Number(f64),
    Text(String),
}

impl Amount {
    fn value(&self, units: &[(&str, f64)]) -> Result<f64, String> {
        const MAX_AMOUNT: f64 = 1e15;
        let v = match self {
            Amount::Number(v) => *v,
            Amount::Text(s) => {
                let s = s.trim();
                let split = s
                    .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                    .unwrap_or(s.len());
                let (num, unit) = (s[..split].trim(), s[split..].trim());
                let n: f64 = num
                    .parse()
                    .map_err(|_| format!("{s:?} is not a number with a unit"))?;
                let factor = units
                    .iter()
                    .find(|(u, _)| u.eq_ignore_ascii_case(unit))
                    .map(|(_, f)| *f)
                    .ok_or_else(|| {
                        let known: Vec<&str> = units.iter().map(|(u, _)| *u).collect();
                        format!(
                            "unknown unit {unit:?} (expected one of {})",
                            known.join(", ")
                        )
                    })?;
                n * factor
            }
        };
        // A bound that any duration or size fits in (31 million years; a petabyte), so that
        // what is made of it cannot overflow.
        if v > MAX_AMOUNT {
            Err(format!("must be at most {MAX_AMOUNT:e} (got {v:e})"))
        } else if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(format!("must be > 0 (got {v})"))
        }
    }

    /// As seconds (`s`, `m`, `h`, `d`, `w`; a bare number is seconds).
    pub fn seconds(&self) -> Result<f64, String> {
        self.value(&[
            ("", 1.0),
            ("s", 1.0),
            ("m", 60.0),
            ("h", 3600.0),
            ("d", 86_400.0),
            ("w", 604_800.0),
        ])
    }

    /// As bytes (`B`, `KB`, `MB`, `GB`, `KiB`, `MiB`, `GiB`; a bare number is bytes).
    pub fn bytes(&self) -> Result<u64, String> {
        self.value(&[
            ("", 1.0),
            ("B", 1.0),
            ("KB", 1e3),
            ("MB", 1e6),
            ("GB", 1e9),
            ("KiB", 1024.0),
            ("MiB", 1024.0 * 1024.0),
            ("GiB", 1024.0 * 1024.0 * 1024.0),
        ])
        .map(|v| v as u64)
    }
}

impl Default for EvidenceConfig {
    fn default() -> Self {
        EvidenceConfig {
            enabled: true,
            dir: PathBuf::new(),
            pre_s: 5.0,
            post_s: 5.0,
            max_age: Amount::Text("7d".into()),
            max_bytes: Amount::Text("1GiB".into()),
            ring_max_bytes: Amount::Text("16MiB".into()),
        }
    }
}

impl EvidenceConfig {
    /// Every problem, with its path (`evidence.pre_s: ...`).
    pub fn validate(&self, errors: &mut Vec<String>) {
        for (name, v) in [("pre_s", self.pre_s), ("post_s", self.post_s)] {
            if !(0.0..=60.0).contains(&v) {
                errors.push(format!(
                    "evidence.{name}: must be between 0 and 60 (got {v})"
                ));
            }
        }
        if let Err(e) = self.max_age.seconds() {
            errors.push(format!("evidence.max_age: {e}"));
        }
        for (name, a) in [
            ("max_bytes", &self.max_bytes),
            ("ring_max_bytes", &self.ring_max_bytes),
        ] {
            if let Err(e) = a.bytes() {
                errors.push(format!("evidence.{name}: {e}"));
            }
        }
    }

    /// The default `dir` for a store at `store_url`: `PATH.evidence` beside a SQLite file
    /// (`sqlite://PATH` or a plain path; its extension replaced), `avmon.evidence` in the
    /// working directory for an in-memory store or PostgreSQL.
    pub fn default_dir(store_url: &str) -> PathBuf {
        match sqlite_file(store_url) {
            Some(p) => p.with_extension("evidence"),
            None => PathBuf::from("avmon.evidence"),
        }
    }

    /// How long a stream's ring keeps bytes: the clip's span and 2 s of slack. The clip is
    /// written `post_s` after the onset, so an alert raised within `post_s` of its onset (black
    /// and freeze are raised 2 s after it by default, corruption and transport at once) finds
    /// all of it; one raised later gets a clip that starts less than `pre_s` before the onset.
    /// The ring is most of what evidence costs in memory (bitrate × this), so it holds no more.
    pub fn ring_keep(&self) -> Duration {
        Duration::from_secs_f64(self.pre_s + self.post_s + 2.0)
    }
}

/// Whether an alert of `kind` gets a clip: its evidence is in the pictures or the bytes.
pub fn wants_clip(kind: &str) -> bool {
    kind.starts_with("video.") || kind.starts_with("transport.")
}

/// An alert id as a file name: only what ids are made of, so no path can be smuggled in.
pub fn safe_id(id: &str) -> Option<&str> {
    (!id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    .then_some(id)
}

/// Block of bytes that arrived together (within [`BLOCK_SPAN`]).
struct Block {
    first: Instant,
    last: Instant,
    data: Vec<u8>,
}

const BLOCK_BYTES: usize = 64 * 1024;
const BLOCK_SPAN: Duration = Duration::from_millis(100);

/// The last seconds of a stream's bytes, by arrival time.
pub struct ClipRing {
    keep: Duration,
    max_bytes: usize,
    inner: Mutex<RingInner>,
}

#[derive(Default)]
struct RingInner {
    blocks: VecDeque<Block>,
    bytes: usize,
    /// Emptied blocks' buffers, reused.
    spare: Vec<Vec<u8>>,
}

impl ClipRing {
    pub fn new(keep: Duration, max_bytes: usize) -> Arc<Self> {
        Arc::new(ClipRing {
            keep,
            max_bytes: max_bytes.max(BLOCK_BYTES),
            inner: Mutex::new(RingInner::default()),
        })
    }

    fn append(&self, bytes: &[u8], now: Instant) {
        let mut r = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let fits = r.blocks.back().is_some_and(|b| {
            b.data.len() + bytes.len() <= BLOCK_BYTES && now.duration_since(b.first) < BLOCK_SPAN
        });
        if !fits {
            let mut data = r.spare.pop().unwrap_or_default();
            data.clear();
            data.reserve(bytes.len().max(BLOCK_BYTES));
            r.blocks.push_back(Block {
                first: now,
                last: now,
                data,
            });
        }
        if let Some(b) = r.blocks.back_mut() {
            b.data.extend_from_slice(bytes);
            b.last = now;
        }
        r.bytes += bytes.len();
        // Older than `keep`, or over the size bound: dropped, their buffers kept for reuse.
        while r.blocks.len() > 1
            && (r.bytes > self.max_bytes
                || r.blocks
                    .front()
                    .is_some_and(|b| now.duration_since(b.last) > self.keep))
        {
            if let Some(b) = r.blocks.pop_front() {
                r.bytes -= b.data.len();
                if r.spare.len() < 4 {
                    r.spare.push(b.data);
                }
            }
        }
    }

    /// The bytes that arrived between `from` and `to`, starting at a transport packet.
    pub fn range(&self, from: Instant, to: Instant) -> Vec<u8> {
        let r = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for b in &r.blocks {
            if b.last >= from && b.first <= to {
                out.extend_from_slice(&b.data);
            }
        }
        drop(r);
        match ts_start(&out) {
            Some(0) => out,
            Some(i) => out.split_off(i),
            None => Vec::new(),
        }
    }
}

/// The first offset where three transport packets' sync bytes line up.
fn ts_start(b: &[u8]) -> Option<usize> {
    (0..188.min(b.len())).find(|&i| (0..3).all(|k| b.get(i + k * 188) == Some(&0x47)))
}

impl ByteTap for ClipRing {
    // The ring keeps bytes by when they came; a new connection's follow on in it.
    fn on_start(&self) {}
    fn on_bytes(&self, bytes: &[u8]) {
        self.append(bytes, Instant::now());
    }
    fn on_rtp_loss(&self, _: u64) {}
    fn on_arrival(&self, _: f64, _: usize) {}
}

/// The stream's byte tap: the transport analyser and the clip ring, each sees every byte.
pub struct Taps {
    pub transport: Arc<TransportTap>,
    pub ring: Option<Arc<ClipRing>>,
}

impl ByteTap for Taps {
    fn on_start(&self) {
        self.transport.on_start();
    }
    fn on_bytes(&self, bytes: &[u8]) {
        self.transport.on_bytes(bytes);
        if let Some(r) = &self.ring {
            r.on_bytes(bytes);
        }
    }
    fn on_rtp_loss(&self, lost: u64) {
        self.transport.on_rtp_loss(lost);
    }
    fn on_arrival(&self, at_s: f64, bytes: usize) {
        self.transport.on_arrival(at_s, bytes);
    }
}

/// A stream's evidence sources, for the evidence thread.
#[derive(Clone)]
pub struct Sources {
    pub pictures: Option<Arc<Pictures>>,
    pub ring: Option<Arc<ClipRing>>,
}

struct Job {
    alert: Alert,
    sources: Sources,
    /// When the onset's bytes arrived.
    onset: Instant,
}

/// The SQLite file a store URL names (`sqlite://PATH`, `sqlite:PATH`, or a plain path), or
/// `None` for an in-memory store or PostgreSQL.
pub(crate) fn sqlite_file(store_url: &str) -> Option<PathBuf> {
    let plain = !store_url.contains("://") && !store_url.starts_with("sqlite:");
    store_url
        .strip_prefix("sqlite://")
        .or_else(|| store_url.strip_prefix("sqlite:"))
        .or(plain.then_some(store_url))
        .map(|p| p.split('?').next().unwrap_or(p))
        .filter(|p| !p.is_empty() && !p.starts_with(':'))
        .map(PathBuf::from)
}

/// The evidence thread's handle. Dropping it ends the thread once queued clips are written.
pub struct Evidence {
    tx: Sender<Job>,
    thread: Option<std::thread::JoinHandle<()>>,
    unwritten: Arc<Mutex<Unwritten>>,
    room_wanted: Arc<AtomicBool>,
    cfg: EvidenceConfig,
}

/// Evidence files the disk did not take, kept to write again (see [`Unwritten`]).
const MAX_UNWRITTEN_BYTES: usize = 64 << 20;

/// How often evidence the disk did not take is tried again.
const REWRITE_EVERY: Duration = Duration::from_secs(5);

/// Evidence files that could not be written (a full disk), kept in memory up to
/// [`MAX_UNWRITTEN_BYTES`] and written again every [`REWRITE_EVERY`]; beyond that the newest
/// are dropped, and counted.
#[derive(Default)]
pub struct Unwritten {
    files: Vec<(PathBuf, Vec<u8>)>,
    bytes: usize,
    /// Files given up on since the disk last took everything.
    pub dropped: u64,
    /// The last refusal, while anything waits or was dropped.
    pub error: Option<String>,
    /// Before each file: room made for it, so that evidence never takes the disk below twice
    /// the reserve (the settings, `min_free`), even in a burst of clips between two looks at
    /// the disk.
    room: Option<(EvidenceConfig, u64)>,
    /// Files and bytes deleted to make that room, not yet reported.
    freed: (usize, u64),
}

impl Unwritten {
    /// Files waiting.
    pub fn waiting(&self) -> usize {
        self.files.len()
    }

    fn write(&mut self, path: &Path, data: &[u8]) {
        if !self.files.is_empty() {
            self.keep(path, data, None);
            return;
        }
        if let Some((cfg, min_free)) = &self.room {
            let short = crate::storage::free_space(&cfg.dir).map_or(0, |(free, size)| {
                (2 * crate::storage::reserve(*min_free, size) + data.len() as u64)
                    .saturating_sub(free)
            });
            if short > 0 {
                let (files, bytes) = prune(cfg, short);
                self.freed = (self.freed.0 + files, self.freed.1 + bytes);
            }
        }
        if let Err(e) = write_file(path, data) {
            self.keep(path, data, Some(e));
        }
    }

    fn keep(&mut self, path: &Path, data: &[u8], e: Option<std::io::Error>) {
        if let Some(e) = e {
            if self.error.is_none() {
                tracing::error!(
                    "writing evidence {}: {e}; evidence waits in memory (up to {} MiB) and is \
                     written when the disk takes it",
                    path.display(),
                    MAX_UNWRITTEN_BYTES >> 20
                );
            }
            self.error = Some(format!("writing evidence {}: {e}", path.display()));
        }
        if self.bytes + data.len() > MAX_UNWRITTEN_BYTES {
            self.dropped += 1;
            return;
        }
        self.bytes += data.len();
        self.files.push((path.to_path_buf(), data.to_vec()));
    }

    /// Write what waits, in order, until the disk refuses again.
    fn retry(&mut self) {
        let mut done = 0;
        for (path, data) in &self.files {
            if let Err(e) = write_file(path, data) {
                self.error = Some(format!("writing evidence {}: {e}", path.display()));
                break;
            }
            self.bytes -= data.len();
            done += 1;
        }
        self.files.drain(..done);
        if self.files.is_empty() && self.error.take().is_some() {
            tracing::warn!(
                dropped = self.dropped,
                "the disk takes evidence again: what waited is written"
            );
            self.dropped = 0;
        }
    }
}

impl Evidence {
    /// Create `cfg.dir` and start the evidence thread.
    ///
    /// Evidence never takes its disk below twice the reserve `min_free` asks for (see
    /// [`crate::storage::reserve`]): before, its oldest files are deleted.
    pub fn start(cfg: EvidenceConfig, min_free: u64) -> anyhow::Result<Evidence> {
        std::fs::create_dir_all(&cfg.dir).map_err(|e| {
            anyhow::anyhow!("evidence.dir: cannot create {}: {e}", cfg.dir.display())
        })?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let unwritten = Arc::new(Mutex::new(Unwritten::default()));
        let room_wanted = Arc::new(AtomicBool::new(false));
        let (kept, wanted) = (unwritten.clone(), room_wanted.clone());
        let worker_cfg = cfg.clone();
        let thread = std::thread::Builder::new()
            .name("evidence".into())
            .spawn(move || worker(rx, worker_cfg, min_free, &kept, &wanted))?;
        Ok(Evidence {
            tx,
            thread: Some(thread),
            unwritten,
            room_wanted,
            cfg,
        })
    }

    /// The store cannot write for want of space (`on`), or can again: evidence, the least
    /// needed of what avmon keeps, gives way. While the store or evidence waits for space, the
    /// oldest evidence is deleted, [`ROOM_STEP_BYTES`] every few seconds: the disk may be full
    /// of avmon's own evidence (its `max_bytes` larger than the disk).
    pub fn want_room(&self, on: bool) {
        self.room_wanted.store(on, Ordering::Relaxed);
    }

    /// Whether evidence is kept on the same disk (file system) as `path`.
    pub fn shares_disk(&self, path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(&self.cfg.dir), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev(),
            _ => false,
        }
    }

    /// Delete the oldest evidence now, until `bytes` are freed (or none is left): another
    /// writer (the database) took its disk below the reserve, and evidence gives way first.
    /// The files and bytes deleted.
    pub fn make_room(&self, bytes: u64) -> (usize, u64) {
        let (files, freed) = prune(&self.cfg, bytes);
        if files > 0 {
            tracing::warn!(
                files,
                mib = freed as f64 / f64::from(1 << 20),
                "the disk was short of space: the oldest evidence was deleted to make room"
            );
        }
        (files, freed)
    }

    /// Why evidence could not be written, while it waits or was dropped: the error, the files
    /// waiting, the files dropped.
    pub fn refused(&self) -> Option<(String, usize, u64)> {
        let u = self.unwritten.lock().unwrap_or_else(|p| p.into_inner());
        Some((u.error.clone()?, u.waiting(), u.dropped))
    }

    /// An alert was raised whose onset is `behind` seconds of media before now: keep its evidence.
    pub fn raised(&self, alert: &Alert, sources: Sources, behind: f64) {
        let onset = Instant::now()
            .checked_sub(Duration::from_secs_f64(behind.clamp(0.0, 3600.0)))
            .unwrap_or_else(Instant::now);
        let _ = self.tx.send(Job {
            alert: alert.clone(),
            sources,
            onset,
        });
    }

    /// Finish: write the clips still waiting (at once, with what the rings hold).
    pub fn finish(mut self) {
        let (tx, _) = crossbeam_channel::bounded(0);
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn worker(
    rx: Receiver<Job>,
    cfg: EvidenceConfig,
    min_free: u64,
    unwritten: &Mutex<Unwritten>,
    room_wanted: &AtomicBool,
) {
    let lock = || unwritten.lock().unwrap_or_else(|p| p.into_inner());
    lock().room = Some((cfg.clone(), min_free));
    let mut made_room: (usize, u64) = (0, 0);
    let pre = Duration::from_secs_f64(cfg.pre_s);
    let post = Duration::from_secs_f64(cfg.post_s);
    let mut pending: Vec<(Instant, Job)> = Vec::new();
    let mut last_prune = Instant::now();
    let mut last_clip: LastClip = None;
    loop {
        let next_due = pending.iter().map(|(due, _)| *due).min();
        // At least every few seconds: the disk's free space is looked at.
        let wait = next_due
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(REWRITE_EVERY)
            .min(REWRITE_EVERY);
        let closed = match rx.recv_timeout(wait) {
            Ok(job) => {
                snapshot(&cfg.dir, &job, &mut lock());
                if wants_clip(&job.alert.kind) && job.sources.ring.is_some() {
                    pending.push((job.onset + post, job));
                }
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        let now = Instant::now();
        let mut wrote = false;
        pending.retain(|(due, job)| {
            if closed || *due <= now {
                clip(&cfg.dir, job, pre, post, &mut last_clip, &mut lock());
                wrote = true;
                false
            } else {
                true
            }
        });
        {
            // What the disk lacks of twice its reserve, freed now.
            let short = crate::storage::free_space(&cfg.dir).map_or(0, |(free, size)| {
                (2 * crate::storage::reserve(min_free, size)).saturating_sub(free)
            });
            let mut u = lock();
            let freed = std::mem::take(&mut u.freed);
            made_room = (made_room.0 + freed.0, made_room.1 + freed.1);
            if u.error.is_some() || room_wanted.load(Ordering::Relaxed) || short > 0 {
                let step = if u.error.is_some() || room_wanted.load(Ordering::Relaxed) {
                    ROOM_STEP_BYTES
                } else {
                    0
                };
                let (files, bytes) = prune(&cfg, step.max(short));
                made_room = (made_room.0 + files, made_room.1 + bytes);
                if u.error.is_some() {
                    u.retry();
                }
            } else if made_room.0 > 0 {
                tracing::warn!(
                    files = made_room.0,
                    mib = made_room.1 as f64 / f64::from(1 << 20),
                    "the disk was short of space: the oldest evidence was deleted to make room"
                );
                made_room = (0, 0);
            }
        }
        if wrote || last_prune.elapsed() >= Duration::from_secs(60) {
            last_prune = Instant::now();
            prune(&cfg, 0);
        }
        if closed {
            return;
        }
    }
}

fn write_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
    // Written aside and renamed: a reader never sees half a file.
    let tmp = path.with_extension("part");
    let res = std::fs::write(&tmp, data).and_then(|()| std::fs::rename(&tmp, path));
    if res.is_err() {
        // Half a file on a full disk holds space that the rest needs.
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

fn snapshot(dir: &Path, job: &Job, out: &mut Unwritten) {
    let Some(id) = safe_id(&job.alert.id) else {
        return;
    };
    let Some(mut picture) = job
        .sources
        .pictures
        .as_ref()
        .and_then(|p| p.at(job.alert.start_s))
    else {
        return; // No video decoded (audio only, or the transport tier).
    };
    // Where the damage is, when the detector said (`video.corruption`'s `regions`).
    if let Some(boxes) = job
        .alert
        .details
        .get("regions")
        .and_then(|r| serde_json::from_value::<Vec<[f64; 4]>>(r.clone()).ok())
    {
        picture.outline(&boxes);
    }
    match avmon_media::encode_jpeg(&picture) {
        Ok(jpeg) => out.write(&dir.join(format!("{id}.jpg")), &jpeg),
        Err(e) => tracing::warn!(alert = %job.alert.id, "snapshot: {e}"),
    }
}

/// The last clip written: its stream, onset and file.
type LastClip = Option<(String, Instant, PathBuf)>;

/// Onsets of one stream closer than this share one clip (linked, not written again): a burst of
/// damage raises `video.corruption` and several `transport.*` alerts at once.
const SAME_CLIP: Duration = Duration::from_secs(1);

fn clip(
    dir: &Path,
    job: &Job,
    pre: Duration,
    post: Duration,
    last: &mut LastClip,
    out: &mut Unwritten,
) {
    let (Some(id), Some(ring)) = (safe_id(&job.alert.id), job.sources.ring.as_ref()) else {
        return;
    };
    let path = dir.join(format!("{id}.ts"));
    if let Some((stream, onset, file)) = last.as_ref() {
        let apart = onset.max(&job.onset).duration_since(*onset.min(&job.onset));
        if *stream == job.alert.stream_id.as_str()
            && apart < SAME_CLIP
            && std::fs::hard_link(file, &path).is_ok()
        {
            return;
        }
    }
    let from = job.onset.checked_sub(pre).unwrap_or(job.onset);
    let bytes = ring.range(from, job.onset + post);
    if bytes.is_empty() {
        tracing::warn!(alert = %job.alert.id, "clip: no transport-stream bytes around the onset");
        return;
    }
    out.write(&path, &bytes);
    *last = Some((job.alert.stream_id.as_str().to_string(), job.onset, path));
}

/// Delete evidence older than `max_age`, then the oldest while all of it is over `max_bytes`,
/// and the oldest until `room` bytes are freed. Returns the files and bytes deleted.
fn prune(cfg: &EvidenceConfig, room: u64) -> (usize, u64) {
    let max_age = Duration::from_secs_f64(cfg.max_age.seconds().unwrap_or(7.0 * 86_400.0));
    let max_bytes = cfg.max_bytes.bytes().unwrap_or(u64::MAX);
    let Ok(entries) = std::fs::read_dir(&cfg.dir) else {
        return (0, 0);
    };
    let now = SystemTime::now();
    let mut files: Vec<(SystemTime, u64, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            let ext = path.extension()?.to_str()?;
            if !matches!(ext, "jpg" | "ts") {
                return None;
            }
            let meta = e.metadata().ok()?;
            Some((meta.modified().ok()?, meta.len(), path))
        })
        .collect();
    files.sort();
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    let (mut deleted, mut freed) = (0, 0);
    for (modified, len, path) in files {
        let old = now.duration_since(modified).unwrap_or_default() > max_age;
        if !old && total <= max_bytes && freed >= room {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= len;
            freed += len;
            deleted += 1;
        }
    }
    (deleted, freed)
}

/// Evidence deleted at a time, oldest first, while the disk has no room (see [`Evidence::want_room`]).
const ROOM_STEP_BYTES: u64 = 8 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_take_units() {
        assert_eq!(Amount::Text("7d".into()).seconds(), Ok(604_800.0));
        assert_eq!(Amount::Number(90.0).seconds(), Ok(90.0));
        assert_eq!(Amount::Text("2GiB".into()).bytes(), Ok(2 << 30));
        assert_eq!(Amount::Text("500 MB".into()).bytes(), Ok(500_000_000));
        assert!(Amount::Text("5 parsecs".into())
            .seconds()
            .unwrap_err()
            .contains("unknown unit"));
        assert!(Amount::Number(-1.0).bytes().is_err());
        // Found by fuzzing the config: a duration past u64 seconds made a panic, not an error.
        for huge in [
            Amount::Number(1e300),
            Amount::Text("99999999999999999999999 d".into()),
        ] {
            assert!(huge.seconds().unwrap_err().contains("at most"));
        }
    }

    #[test]
    fn evidence_goes_beside_the_store_by_default() {
        let d = EvidenceConfig::default_dir;
        assert_eq!(
            d("sqlite:///var/lib/avmon/avmon.db"),
            Path::new("/var/lib/avmon/avmon.evidence")
        );
        assert_eq!(
            d("sqlite://avmon-demo.db"),
            Path::new("avmon-demo.evidence")
        );
        assert_eq!(d("sqlite::memory:"), Path::new("avmon.evidence"));
        assert_eq!(d("data/avmon.db"), Path::new("data/avmon.evidence"));
        assert_eq!(
            d("postgres://avmon@db.example/avmon"),
            Path::new("avmon.evidence")
        );
    }

    #[test]
    fn ids_cannot_name_other_files() {
        assert!(safe_id("0193a0b1-7c2e-7d3f-9a4b-123456789abc").is_some());
        for bad in ["", "../etc/passwd", "a/b", "a.b", "x\0"] {
            assert!(safe_id(bad).is_none(), "{bad:?}");
        }
    }

    fn packets(n: usize, tag: u8) -> Vec<u8> {
        let mut v = vec![tag; 188 * n];
        for p in 0..n {
            v[p * 188] = 0x47;
        }
        v
    }

    #[test]
    fn alerts_of_one_burst_share_one_clip() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let ring = ClipRing::new(Duration::from_secs(60), 1 << 20);
        let t0 = Instant::now();
        ring.append(&packets(70, 1), t0);
        let job = |id: &str, stream: &str, onset: Instant| Job {
            alert: Alert {
                id: id.into(),
                stream_id: avmon_core::StreamId(stream.into()),
                kind: "transport.cc_error".into(),
                severity: avmon_core::Severity::Major,
                state: avmon_core::AlertState::Raised,
                start_s: 0.0,
                end_s: None,
                raised_at: chrono::Utc::now(),
                cleared_at: None,
                details: Default::default(),
            },
            sources: Sources {
                pictures: None,
                ring: Some(ring.clone()),
            },
            onset,
        };
        let (pre, post) = (Duration::from_secs(1), Duration::from_secs(1));
        let mut last = None;
        let ino = |id: &str| {
            std::fs::metadata(dir.path().join(format!("{id}.ts")))
                .unwrap()
                .ino()
        };
        let mut out = Unwritten::default();
        clip(
            dir.path(),
            &job("a", "s1", t0),
            pre,
            post,
            &mut last,
            &mut out,
        );
        clip(
            dir.path(),
            &job("b", "s1", t0 + Duration::from_millis(300)),
            pre,
            post,
            &mut last,
            &mut out,
        );
        clip(
            dir.path(),
            &job("c", "s2", t0 + Duration::from_millis(300)),
            pre,
            post,
            &mut last,
            &mut out,
        );
        assert_eq!(ino("a"), ino("b"), "one burst, one file");
        assert_ne!(ino("a"), ino("c"), "another stream's clip is its own");
        assert_eq!(
            std::fs::read(dir.path().join("c.ts")).unwrap().len(),
            70 * 188
        );
    }

    #[test]
    fn the_ring_keeps_its_bounds_and_cuts_at_a_packet() {
        let ring = ClipRing::new(Duration::from_secs(2), 1 << 20);
        let t0 = Instant::now();
        for i in 0..50u32 {
            ring.append(
                &packets(7, i as u8),
                t0 + Duration::from_millis(200 * u64::from(i)),
            );
        }
        let end = t0 + Duration::from_millis(200 * 49);
        // Only the last ~2 s is held.
        let all = ring.range(t0, end);
        assert!(all.len() <= 188 * 7 * 12, "{}", all.len());
        assert!(all.len() >= 188 * 7 * 10, "{}", all.len());
        let some = ring.range(end - Duration::from_millis(500), end);
        assert_eq!(some.len(), 188 * 7 * 3);
        assert_eq!(some[0], 0x47);
        // A size bound holds too.
        let small = ClipRing::new(Duration::from_secs(60), 0);
        for i in 0..200u32 {
            small.append(
                &packets(7, 1),
                t0 + Duration::from_millis(200 * u64::from(i)),
            );
        }
        assert!(small.range(t0, t0 + Duration::from_secs(60)).len() <= 2 * BLOCK_BYTES);
        // Bytes that begin mid-packet start at the next packet.
        let mid = ClipRing::new(Duration::from_secs(60), 1 << 20);
        let p = packets(5, 9);
        mid.append(&p[100..], t0);
        let got = mid.range(t0, t0);
        assert_eq!(got.len(), 188 * 4);
        assert_eq!(got[0], 0x47);
    }

    #[test]
    fn room_is_made_from_the_oldest_evidence() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = EvidenceConfig {
            dir: dir.path().to_path_buf(),
            ..EvidenceConfig::default()
        };
        let t0 = SystemTime::now() - Duration::from_secs(600);
        for i in 0..5u64 {
            let path = dir
                .path()
                .join(format!("a{i}.{}", ["ts", "jpg"][i as usize % 2]));
            let f = std::fs::File::create(&path).unwrap();
            f.set_len(2_000).unwrap();
            f.set_modified(t0 + Duration::from_secs(60 * i)).unwrap();
        }
        std::fs::write(dir.path().join("other.txt"), "not evidence").unwrap();
        assert_eq!(prune(&cfg, 0), (0, 0), "within its bounds, nothing goes");
        assert_eq!(
            prune(&cfg, 5_000),
            (3, 6_000),
            "the oldest, until 5,000 bytes are free"
        );
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["a3.jpg", "a4.ts", "other.txt"]);
    }
}
