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

    /// A reload was handled; the media clock is at `media_t`. Lets an alert engine clear holds
    /// while no segment arrives.
    fn on_tick(&mut self, _media_t: f64) {}
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
        checks: Checks::new(cfg.stale_factor, variant.name.clone(), 0.0),
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
    let monitors = resolve(cfg, Arc::new(crate::playlist::Hls), stop)?;
    Ok(run_monitors(monitors, make_sink))
}

/// Run monitors from [`resolve`], each on its own thread, and wait for them all.
pub fn run_monitors<S, F>(monitors: Vec<VariantMonitor>, mut make_sink: F) -> Vec<VariantRun<S>>
where
    S: HlsSink + Send,
    F: FnMut(&Variant) -> S,
{
    let sinks: Vec<S> = monitors.iter().map(|m| make_sink(m.variant())).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = monitors
            .into_iter()
            .zip(sinks)
            .map(|(m, mut sink)| {
                let variant = m.variant().clone();
                let h = std::thread::Builder::new()
                    .name(format!("hls-{}", variant.index))
                    .spawn_scoped(scope, move || {
                        let r = m.run(&mut sink);
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
                    sink.on_tick(self.checks.media_t);
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
                    sink.on_tick(self.checks.media_t);
                    td / 2.0
                }
            };
            self.sleep_until(load_start + Duration::from_secs_f64(wait));
        }
        Ok(self.checks.stats)
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn sleep_until(&self, at: Instant) {
        while !self.stopped() {
            let now = Instant::now();
            if now >= at {
                return;
            }
            std::thread::sleep((at - now).min(Duration::from_millis(50)));
        }
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

fn flush(findings: &mut Findings, sink: &mut dyn HlsSink) {
    for f in findings.drain(..) {
        sink.on_finding(f);
    }
}
