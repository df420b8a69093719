//! The I/O loop of one variant: reload its playlist as a player does, fetch new segments in
//! order, decrypt and check them, and hand findings and segment bytes to a [`HlsSink`].
//!
//! Reloads follow RFC 8216, 6.3.4: the next reload starts one target duration after the start of
//! the previous one when that one found new segments, half a target duration after it when not
//! (or when it failed). Segments are fetched one after another on the same thread, between
//! reloads, as a simple player does; a reload due while segments download waits for them, and
//! staleness is judged only on reloads, so a slow download is never mistaken for a stale
//! playlist.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use avmon_core::{Finding, Findings};
use url::Url;

use crate::checks::{Checks, Planned, VariantStats};
use crate::config::{choose, HlsConfig};
use crate::http::{FetchError, Http};
use crate::manifest::{
    Encryption, InitRef, Manifest, ManifestError, ManifestFormat, MediaWindow, Variant,
};
use crate::segment;

/// Keys kept per variant: a key changes rarely, and a hostile playlist must not grow this.
const KEY_CACHE: usize = 8;

/// Why monitoring could not start (or a variant could not go on).
#[derive(Debug, thiserror::Error)]
pub enum HlsError {
    #[error("{url}: {source}")]
    Fetch { url: Url, source: FetchError },
    #[error("{url}: {source}")]
    Manifest { url: Url, source: ManifestError },
    #[error("{0}")]
    Config(String),
}

/// Where a variant's monitor delivers what it finds. Called on the variant's thread.
pub trait HlsSink {
    /// A check began or ended (see [`crate::checks`] for the kinds).
    fn on_finding(&mut self, finding: Finding);

    /// A segment was fetched, decrypted and accepted: its bytes, in sequence order. This is
    /// where a transport-stream analyser or a decoder takes the media.
    fn on_segment(&mut self, _segment: &Segment<'_>) {}

    /// A reload was handled; the media clock is at `media_t`, and `stats` are the variant's
    /// totals so far (its metrics). Lets an alert engine clear holds while no segment arrives.
    fn on_tick(&mut self, _media_t: f64, _stats: &VariantStats) {}

    /// The monitor stopped at media time `media_t` (stopped, the playlist ended, or it could
    /// not be loaded): what it had begun will not end by itself. Under [`keep_monitoring`] a
    /// new monitor of the same variant may follow, on the same media clock.
    fn on_end(&mut self, _media_t: f64) {}
}

/// One accepted segment, borrowed for the duration of [`HlsSink::on_segment`].
#[derive(Debug)]
pub struct Segment<'a> {
    pub sequence: u64,
    pub uri: &'a Url,
    /// Media time at which the segment starts (see [`crate::checks`]).
    pub start_t: f64,
    /// `EXTINF`, in seconds.
    pub duration: f64,
    /// Where it starts on the presentation's time line (DASH; see
    /// [`crate::SegmentRef::presentation_s`]).
    pub presentation_s: Option<f64>,
    /// An `EXT-X-DISCONTINUITY` precedes it: timestamps and continuity counters may jump.
    pub discontinuity: bool,
    /// Media is missing before it (a failed or skipped segment, or the playlist restarted), so
    /// continuity counters will not follow on from the previous segment.
    pub after_gap: bool,
    /// The initialisation section (`EXT-X-MAP`), given with the first segment that needs it and
    /// whenever it changes.
    pub init: Option<&'a [u8]>,
    /// The segment's media, decrypted.
    pub bytes: &'a [u8],
    /// Seconds from request to last byte.
    pub download_s: f64,
}

impl Segment<'_> {
    pub fn bitrate_bps(&self) -> f64 {
        if self.duration > 0.0 {
            self.bytes.len() as f64 * 8.0 / self.duration
        } else {
            0.0
        }
    }
}

/// Fetch `cfg.url` and build one monitor per chosen variant (one for a media playlist).
pub fn resolve(
    cfg: &HlsConfig,
    format: Arc<dyn ManifestFormat>,
    stop: Arc<AtomicBool>,
) -> Result<Vec<VariantMonitor>, HlsError> {
    let mut errors = Vec::new();
    cfg.validate("", &mut errors);
    if !errors.is_empty() {
        return Err(HlsError::Config(errors.join("; ")));
    }
    let url = cfg.parsed_url().map_err(HlsError::Config)?;
    let http = Http::new().map_err(|source| HlsError::Fetch {
        url: url.clone(),
        source,
    })?;
    let top = http
        .get(&url, None, cfg.max_playlist_bytes, cfg.playlist_timeout())
        .map_err(|source| HlsError::Fetch {
            url: url.clone(),
            source,
        })?;
    let manifest = format
        .parse_top(&top.body, &top.url)
        .map_err(|source| HlsError::Manifest {
            url: top.url.clone(),
            source,
        })?;
    let new = |variant: Variant, first: Option<MediaWindow>| VariantMonitor {
        cfg: cfg.clone(),
        http: http.clone(),
        format: format.clone(),
        stop: stop.clone(),
        checks: Checks::new(cfg.stale_factor, variant.name.clone(), 0.0).with_kinds(format.kinds()),
        variant,
        first,
        keys: Vec::new(),
        init: None,
    };
    Ok(match manifest {
        Manifest::Media(w) => {
            let name = top.url.path().rsplit('/').next().unwrap_or("").to_owned();
            let v = Variant {
                index: 0,
                uri: top.url.clone(),
                bandwidth: 0,
                name,
                resolution: None,
                id: None,
                captions: false,
            };
            vec![new(v, Some(w))]
        }
        Manifest::Variants(all) => choose(&all, &cfg.variants)
            .map_err(HlsError::Config)?
            .into_iter()
            .map(|v| new(v, None))
            .collect(),
    })
}

/// How one variant's monitoring ended, from [`run_all`].
#[derive(Debug)]
pub struct VariantRun<S> {
    pub variant: Variant,
    pub sink: S,
    /// The variant's metrics, or why its playlist could not be loaded at all.
    pub result: Result<VariantStats, HlsError>,
}

/// Monitor every chosen variant of `cfg`, each on its own thread, until `stop` or the end of
/// the playlists. `make_sink` gives each variant its sink; each comes back with its outcome.
pub fn run_all<S, F>(
    cfg: &HlsConfig,
    stop: Arc<AtomicBool>,
    make_sink: F,
) -> Result<Vec<VariantRun<S>>, HlsError>
where
    S: HlsSink + Send,
    F: FnMut(&Variant) -> S,
{
    let monitors = resolve(cfg, cfg.format(), stop)?;
    Ok(run_monitors(monitors, make_sink))
}

/// Run monitors from [`resolve`], each on its own thread, and wait for them all.
pub fn run_monitors<S, F>(monitors: Vec<VariantMonitor>, make_sink: F) -> Vec<VariantRun<S>>
where
    S: HlsSink + Send,
    F: FnMut(&Variant) -> S,
{
    run_each(monitors, make_sink, |mut m, sink| m.monitor(sink))
}

/// Reconnection delays of [`keep_monitoring`]: `initial`, doubling up to `max`; back to
/// `initial` once a monitor delivered segments.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(10),
        }
    }
}

/// For a service: monitor every chosen variant of `cfg`, each on its own thread, until `stop`,
/// whatever the origin does. Where [`run_all`] fails or ends, this waits (`retry`) and starts
/// again: a master or media playlist that cannot be loaded at first is loaded again until it
/// can; a variant whose monitor ended (its playlist ended, or could not be loaded) is monitored
/// again, found in a fresh load of `cfg.url` by its URI (or, failing that, its index), on the
/// same media clock and with the same totals. An origin that stalls, answers errors or goes
/// away while a monitor runs needs none of this: that is `hls.stale` and `hls.segment_error`,
/// and the monitor goes on. Sinks are made once per variant, after the first successful load.
pub fn keep_monitoring<S, F>(
    cfg: &HlsConfig,
    format: Arc<dyn ManifestFormat>,
    stop: Arc<AtomicBool>,
    retry: Retry,
    make_sink: F,
) -> Vec<VariantRun<S>>
where
    S: HlsSink + Send,
    F: FnMut(&Variant) -> S,
{
    let mut delay = retry.initial;
    let mut failures = 0u64;
    let monitors = loop {
        if stop.load(Ordering::Relaxed) {
            return Vec::new();
        }
        match resolve(cfg, format.clone(), stop.clone()) {
            Ok(m) => break m,
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(url = %cfg.url, "HLS: {e}; retrying");
                } else {
                    tracing::debug!(url = %cfg.url, "HLS: {e}; retrying in {delay:?}");
                }
                sleep_until(&stop, Instant::now() + delay);
                delay = (delay * 2).min(retry.max);
            }
        }
    };
    let again = |mut m: VariantMonitor, sink: &mut dyn HlsSink| {
        let mut delay = retry.initial;
        let mut failed = false;
        loop {
            let segments = m.checks.stats.segments;
            let result = m.monitor(sink);
            if m.stopped() {
                return result;
            }
            if m.checks.stats.segments > segments {
                delay = retry.initial;
            }
            let name = &m.variant.name;
            match &result {
                Ok(_) => {
                    tracing::info!(variant = %name, "HLS: the playlist ended; loading it again")
                }
                Err(e) if !failed => tracing::warn!(variant = %name, "HLS: {e}; retrying"),
                Err(e) => tracing::debug!(variant = %name, "HLS: {e}; retrying in {delay:?}"),
            }
            failed = result.is_err();
            m = loop {
                sleep_until(&stop, Instant::now() + delay);
                if m.stopped() {
                    return result;
                }
                delay = (delay * 2).min(retry.max);
                match resolve(cfg, format.clone(), stop.clone()) {
                    Ok(fresh) => match m.successor(fresh) {
                        Some(next) => break next,
                        None => tracing::warn!(
                            variant = %m.variant.name,
                            "HLS: the variant is no longer in the master playlist"
                        ),
                    },
                    Err(e) => tracing::debug!(variant = %m.variant.name, "HLS: {e}; retrying"),
                }
            };
        }
    };
    run_each(monitors, make_sink, again)
}

/// Each monitor on its own thread with its own sink, `run` doing the monitoring; waits for all.
fn run_each<S, F, R>(monitors: Vec<VariantMonitor>, mut make_sink: F, run: R) -> Vec<VariantRun<S>>
where
    S: HlsSink + Send,
    F: FnMut(&Variant) -> S,
    R: Fn(VariantMonitor, &mut dyn HlsSink) -> Result<VariantStats, HlsError> + Sync,
{
    let sinks: Vec<S> = monitors.iter().map(|m| make_sink(m.variant())).collect();
    let run = &run;
    std::thread::scope(|scope| {
        let handles: Vec<_> = monitors
            .into_iter()
            .zip(sinks)
            .map(|(m, mut sink)| {
                let variant = m.variant().clone();
                let h = std::thread::Builder::new()
                    .name(format!("hls-{}", variant.index))
                    .spawn_scoped(scope, move || {
                        let r = run(m, &mut sink);
                        (sink, r)
                    })
                    .expect("spawn an HLS variant thread");
                (variant, h)
            })
            .collect();
        handles
            .into_iter()
            .map(|(variant, h)| {
                let (sink, result) = h.join().expect("HLS variant thread panicked");
                VariantRun {
                    variant,
                    sink,
                    result,
                }
            })
            .collect()
    })
}

/// Monitors one variant. Built by [`resolve`]; consumed by [`run`](Self::run).
pub struct VariantMonitor {
    cfg: HlsConfig,
    variant: Variant,
    http: Http,
    format: Arc<dyn ManifestFormat>,
    stop: Arc<AtomicBool>,
    checks: Checks,
    /// The window fetched by [`resolve`] when the URL was a media playlist.
    first: Option<MediaWindow>,
    keys: Vec<(Url, [u8; 16])>,
    /// The last initialisation section fetched.
    init: Option<(InitRef, Vec<u8>)>,
}

/// How a segment failed: a phrase for the finding, and the HTTP status when there was one.
struct Failure {
    reason: String,
    status: Option<u16>,
}

impl From<FetchError> for Failure {
    fn from(e: FetchError) -> Self {
        Failure {
            status: e.status(),
            reason: e.to_string(),
        }
    }
}

impl VariantMonitor {
    pub fn variant(&self) -> &Variant {
        &self.variant
    }

    /// Monitor until `stop` is set or the playlist ends (`EXT-X-ENDLIST`). Fails only when the
    /// first load of the playlist fails; later failures are findings.
    pub fn run(mut self, sink: &mut dyn HlsSink) -> Result<VariantStats, HlsError> {
        self.monitor(sink)
    }

    /// The same monitor of this variant, built from a fresh [`resolve`], to follow this one on
    /// its media clock and totals: found by URI, or else by index.
    fn successor(&self, fresh: Vec<VariantMonitor>) -> Option<VariantMonitor> {
        let uri = fresh.iter().position(|m| m.variant.uri == self.variant.uri);
        let i = uri.or_else(|| {
            fresh
                .iter()
                .position(|m| m.variant.index == self.variant.index)
        })?;
        let mut next = fresh.into_iter().nth(i)?;
        next.checks.media_t = self.checks.media_t;
        next.checks.stats = self.checks.stats.clone();
        Some(next)
    }

    /// [`run`](Self::run), keeping the monitor (its clock and totals) for a successor.
    fn monitor(&mut self, sink: &mut dyn HlsSink) -> Result<VariantStats, HlsError> {
        let result = self.watch(sink);
        sink.on_end(self.checks.media_t);
        result
    }

    fn watch(&mut self, sink: &mut dyn HlsSink) -> Result<VariantStats, HlsError> {
        let clock = Instant::now();
        let wall = || clock.elapsed().as_secs_f64();
        let mut findings: Findings = Vec::new();
        let mut first = self.first.take();
        loop {
            if self.stopped() {
                break;
            }
            let load_start = Instant::now();
            let loaded = match first.take() {
                Some(w) => Ok(w),
                None => self.load(),
            };
            let wait = match loaded {
                Ok(w) => {
                    let r = self.checks.on_window(&w, wall(), &mut findings);
                    flush(&mut findings, sink);
                    for p in &r.planned {
                        if self.stopped() {
                            break;
                        }
                        self.fetch(p, &mut findings, sink);
                        flush(&mut findings, sink);
                    }
                    sink.on_tick(self.checks.media_t, &self.checks.stats);
                    if w.ended {
                        break;
                    }
                    if r.changed {
                        w.target_duration
                    } else {
                        w.target_duration / 2.0
                    }
                }
                Err(e) => {
                    let Some(td) = self.checks.target_duration() else {
                        return Err(e);
                    };
                    tracing::debug!(variant = %self.variant.name, "reload failed: {e}");
                    self.checks
                        .on_reload_failed(wall(), &reason(&e), &mut findings);
                    flush(&mut findings, sink);
                    sink.on_tick(self.checks.media_t, &self.checks.stats);
                    td / 2.0
                }
            };
            sleep_until(&self.stop, load_start + Duration::from_secs_f64(wait));
        }
        Ok(self.checks.stats.clone())
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn load(&self) -> Result<MediaWindow, HlsError> {
        let url = &self.variant.uri;
        let f = self
            .http
            .get(
                url,
                None,
                self.cfg.max_playlist_bytes,
                self.cfg.playlist_timeout(),
            )
            .map_err(|source| HlsError::Fetch {
                url: url.clone(),
                source,
            })?;
        self.format
            .parse_media(&f.body, &f.url, &self.variant)
            .map_err(|source| HlsError::Manifest {
                url: f.url.clone(),
                source,
            })
    }

    fn fetch(&mut self, p: &Planned, findings: &mut Findings, sink: &mut dyn HlsSink) {
        match self.fetch_checked(p) {
            Ok((bytes, download_s, new_init)) => {
                let after_gap = self
                    .checks
                    .on_segment_ok(p, bytes.len(), download_s, findings);
                flush(findings, sink);
                let init = match (new_init, &self.init) {
                    (true, Some((_, b))) => Some(b.as_slice()),
                    _ => None,
                };
                sink.on_segment(&Segment {
                    sequence: p.seg.sequence,
                    uri: &p.seg.uri,
                    start_t: p.start_t,
                    duration: p.seg.duration,
                    presentation_s: p.seg.presentation_s,
                    discontinuity: p.seg.discontinuity,
                    after_gap,
                    init,
                    bytes: &bytes,
                    download_s,
                });
            }
            Err(f) => {
                tracing::debug!(variant = %self.variant.name, seq = p.seg.sequence, "segment failed: {}", f.reason);
                self.checks
                    .on_segment_failed(p, &f.reason, f.status, findings);
            }
        }
    }

    /// The segment's bytes (decrypted and checked), its download time, and whether its
    /// initialisation section is new.
    fn fetch_checked(&mut self, p: &Planned) -> Result<(Vec<u8>, f64, bool), Failure> {
        let seg = &p.seg;
        let new_init = match &seg.init {
            Some(i) if self.init.as_ref().map(|(r, _)| r) != Some(i) => {
                let f = self
                    .get(&i.uri, i.range)
                    .map_err(|e| prefix("init section", e))?;
                self.init = Some((i.clone(), f.body));
                true
            }
            _ => false,
        };
        let f = self.get(&seg.uri, seg.range)?;
        let mut bytes = f.body;
        if let Encryption::Aes128 { key_uri, iv } = &seg.encryption {
            let key = self.key(key_uri)?;
            let iv = iv.unwrap_or_else(|| segment::sequence_iv(seg.sequence));
            segment::decrypt_aes128(&key, &iv, &mut bytes).map_err(|reason| Failure {
                reason,
                status: None,
            })?;
        }
        if let Some(reason) = segment::problem(seg, &bytes) {
            return Err(Failure {
                reason,
                status: None,
            });
        }
        Ok((bytes, f.elapsed_s, new_init))
    }

    fn get(
        &self,
        url: &Url,
        range: Option<crate::manifest::ByteRange>,
    ) -> Result<crate::http::Fetched, FetchError> {
        self.http.get(
            url,
            range,
            self.cfg.max_segment_bytes,
            self.cfg.segment_timeout(),
        )
    }

    fn key(&mut self, uri: &Url) -> Result<[u8; 16], Failure> {
        if let Some((_, k)) = self.keys.iter().find(|(u, _)| u == uri) {
            return Ok(*k);
        }
        let f = self
            .http
            .get(uri, None, 1024, self.cfg.segment_timeout())
            .map_err(|e| prefix("key", e))?;
        let key: [u8; 16] = f.body.as_slice().try_into().map_err(|_| Failure {
            reason: format!("key: {} bytes, not 16", f.body.len()),
            status: None,
        })?;
        if self.keys.len() == KEY_CACHE {
            self.keys.remove(0);
        }
        self.keys.push((uri.clone(), key));
        Ok(key)
    }
}

fn prefix(what: &str, e: FetchError) -> Failure {
    Failure {
        status: e.status(),
        reason: format!("{what}: {e}"),
    }
}

fn reason(e: &HlsError) -> String {
    match e {
        HlsError::Fetch { source, .. } => source.to_string(),
        HlsError::Manifest { source, .. } => source.to_string(),
        HlsError::Config(s) => s.clone(),
    }
}

/// Sleep until `at`, waking early when `stop` is set.
fn sleep_until(stop: &AtomicBool, at: Instant) {
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= at {
            return;
        }
        std::thread::sleep((at - now).min(Duration::from_millis(50)));
    }
}

fn flush(findings: &mut Findings, sink: &mut dyn HlsSink) {
    for f in findings.drain(..) {
        sink.on_finding(f);
    }
}
