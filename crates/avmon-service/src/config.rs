//! The service configuration: one TOML file → raw serde structs → a validated [`Config`].
//!
//! Validation gathers *every* problem with its path (`streams[2].url: unsupported scheme "foo"`)
//! rather than stopping at the first, so a user fixes a config in one pass. Each section and each
//! list item is deserialized on its own for that reason.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;

use avmon_alert::AlertConfig;
use avmon_core::{MaintenanceWindow, StreamId, Tier};
use avmon_detect::DetectorsConfig;
use avmon_hls::HlsConfig;
pub use avmon_notify::NotifierConfig;
use avmon_server::{Auth, Digest, Role, Token};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// `[server]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the HTTP API (`/api/...`, `/healthz`, `/metrics`).
    pub listen: String,
    /// Serve over TLS: the certificate chain, a PEM file (with `tls_key`).
    pub tls_cert: Option<std::path::PathBuf>,
    /// The certificate's private key, a PEM file.
    pub tls_key: Option<std::path::PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// `[store]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Where results go: a SQLite file (`sqlite://PATH`, or a plain path), or PostgreSQL
    /// (`postgres://USER:PASSWORD@HOST:PORT/DB`, which several nodes can share); created or
    /// migrated at start.
    pub url: String,
    /// Seconds between per-stream metrics samples.
    pub metrics_interval_s: f64,
    /// Free space kept on the disks holding the database and the evidence: less raises
    /// `monitor.storage`, and evidence is deleted, oldest first, before it takes twice this.
    /// Bytes, or a string with a unit (`"256MiB"`); at most a twentieth of the disk is kept.
    pub min_free: crate::evidence::Amount,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "sqlite://avmon.db".into(),
            metrics_interval_s: 10.0,
            min_free: crate::evidence::Amount::Text("256MiB".into()),
        }
    }
}

/// `[service]`: how the streams share the host.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// Streams that may decode at once (CPU permits); 0, the default: one per core.
    pub workers: usize,
    /// Lower the tier of the lowest-priority streams when the host falls behind real time, and
    /// restore it when capacity returns (`monitor.degraded` while lowered).
    pub auto_degrade: bool,
    /// A stream is behind when its lag is over this many seconds and growing.
    pub behind_s: f64,
    /// Seconds of sustained headroom before a lowered tier is raised one step.
    pub restore_after_s: f64,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            workers: 0,
            auto_degrade: true,
            behind_s: 2.0,
            restore_after_s: 30.0,
        }
    }
}

impl ServiceConfig {
    /// The CPU permits: `workers`, or the cores available.
    pub fn permits(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    fn validate(&self, errors: &mut Vec<String>) {
        if self.workers > 1024 {
            errors.push(format!(
                "service.workers: must be at most 1024 (got {})",
                self.workers
            ));
        }
        if !(self.behind_s > 0.0 && self.behind_s <= 600.0) {
            errors.push(format!(
                "service.behind_s: must be in (0, 600] (got {})",
                self.behind_s
            ));
        }
        if !(self.restore_after_s >= 1.0 && self.restore_after_s <= 86_400.0) {
            errors.push(format!(
                "service.restore_after_s: must be between 1 and 86400 (got {})",
                self.restore_after_s
            ));
        }
    }
}

fn default_priority() -> u32 {
    100
}

fn default_io_timeout() -> f64 {
    5.0
}
fn default_threads() -> usize {
    1
}

/// The longest `keyframe_interval_s`: `video.loss` tolerates gaps between decoded frames of up
/// to 10 s.
pub const MAX_KEYFRAME_INTERVAL_S: f64 = 10.0;

fn default_tier() -> String {
    Tier::Full.as_str().into()
}

/// `[[streams]]`: one monitored stream. The API's `POST /api/streams` takes the same keys as JSON.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// Unique id: letters, digits, `-`, `_`, `.`.
    pub id: String,
    /// Anything FFmpeg opens: a path, `udp://`, `srt://`, `rtmp://`, `rtsp://`, `http(s)://`.
    pub url: String,
    /// A human-readable name.
    #[serde(default)]
    pub name: Option<String>,
    /// `source.down` is raised when no data arrives for this many seconds.
    #[serde(default = "default_io_timeout")]
    pub io_timeout_s: f64,
    /// Decoder threads; 1 turns the decoder's own threading off (parallelism comes from streams).
    #[serde(default = "default_threads")]
    pub decoder_threads: usize,
    /// Fidelity tier: `full` (every frame, the default), `reference` (reference frames only),
    /// `keyframes` (keyframes only), `transport` (no video decode). Changeable at run time with
    /// `PATCH /api/streams/{id}`.
    #[serde(default = "default_tier")]
    pub tier: String,
    /// In the `keyframes` tier (set here, through the API or by degradation): decode at most one
    /// keyframe per this many seconds, 0 to 10 (0, the default: every keyframe). Cheaper, and
    /// black and freeze are judged at this spacing.
    #[serde(default)]
    pub keyframe_interval_s: f64,
    /// Higher is more important: when the host falls behind, the lowest-priority streams are
    /// lowered first and restored last (`[service] auto_degrade`). Default 100.
    #[serde(default = "default_priority")]
    pub priority: u32,
    /// Extra FFmpeg demuxer/protocol options, e.g. `{ rtsp_transport = "tcp" }`.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Detector settings for this stream (thresholds, minimum durations, on/off).
    #[serde(default)]
    pub detectors: DetectorsConfig,
    /// Alert hysteresis for this stream.
    #[serde(default)]
    pub alerts: AlertConfig,
    /// For an HLS stream (`url` is `http(s)://….m3u8`), monitored by avmon-hls: which variants
    /// (default: all) and the limits of its delivery checks. The playlist is `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hls: Option<HlsConfig>,
    /// In a cluster: the node (`[cluster] name`) that must monitor this stream. Needed for push
    /// inputs (a unicast UDP/RTP port, an SRT or RTMP listener), which reach one host only; a
    /// pinned stream is never moved, and goes unwatched (a gap, shown) while its node is down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// `[cluster]`: this process is one node of several sharing one PostgreSQL store.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The node's name, unique in the cluster (default: the hostname; the environment variable
    /// `AVMON_CLUSTER_NAME` overrides it). A second process with a live node of the same name
    /// is refused at start.
    pub name: String,
    /// The API's address as other nodes and consoles reach it (default: `http://` and
    /// `[server] listen`; set it when that is a wildcard or behind NAT; the environment
    /// variable `AVMON_CLUSTER_ADVERTISE` overrides it).
    pub advertise: Option<String>,
    /// Seconds a lease lasts without renewal: a node that dies or stalls loses its streams this
    /// long after its last renewal, and they run elsewhere about a second later. Leases are
    /// renewed every quarter of it.
    pub lease_ttl_s: f64,
    /// What this node can hold, in cores of measured CPU (the scheduler's busy time per second);
    /// 0, the default: 80% of `[service] workers`.
    pub capacity: f64,
    /// Seconds the node keeps monitoring its streams while the database does not answer (its
    /// results and notifications wait, and are written when it is back); then it stops them
    /// until the database answers.
    pub db_outage_s: f64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            name: hostname(),
            advertise: None,
            lease_ttl_s: 8.0,
            capacity: 0.0,
            db_outage_s: 300.0,
        }
    }
}

/// This host's name (`avmon` if it cannot be read).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "avmon".into())
}

impl ClusterConfig {
    /// The capacity in cores: `capacity`, or 80% of the CPU permits.
    pub fn capacity(&self, service: &ServiceConfig) -> f64 {
        if self.capacity > 0.0 {
            self.capacity
        } else {
            service.permits() as f64 * 0.8
        }
    }

    fn validate(&self, errors: &mut Vec<String>) {
        if self.name.is_empty() || self.name.len() > 64 || self.name.chars().any(char::is_control) {
            errors.push(format!(
                "cluster.name: must be 1 to 64 bytes without control characters (got {:?})",
                self.name
            ));
        }
        if !(self.lease_ttl_s >= 2.0 && self.lease_ttl_s <= 300.0) {
            errors.push(format!(
                "cluster.lease_ttl_s: must be between 2 and 300 (got {})",
                self.lease_ttl_s
            ));
        }
        if !(self.db_outage_s >= self.lease_ttl_s && self.db_outage_s <= 86_400.0) {
            errors.push(format!(
                "cluster.db_outage_s: must be between lease_ttl_s ({}) and 86400 (got {})",
                self.lease_ttl_s, self.db_outage_s
            ));
        }
        if !(self.capacity.is_finite() && self.capacity >= 0.0) {
            errors.push(format!(
                "cluster.capacity: must be a number of cores >= 0 (got {})",
                self.capacity
            ));
        }
        if let Some(a) = &self.advertise {
            if !(a.starts_with("http://") || a.starts_with("https://")) || a.len() < 10 {
                errors.push(format!(
                    "cluster.advertise: must be a URL such as http://10.0.0.5:8080 (got {a:?})"
                ));
            }
        }
    }
}

/// Whether `url` is a push input: the sender sends to this host (a unicast UDP/RTP port, an
/// SRT or RTMP listener), so only this host can monitor it.
pub fn is_push_input(url: &str, options: &BTreeMap<String, String>) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    let query = rest.split_once('?').map_or("", |(_, q)| q);
    let flag = |key: &str, values: &[&str]| {
        let in_query = query.split('&').any(|kv| {
            kv.split_once('=')
                .is_some_and(|(k, v)| k == key && values.contains(&v))
        });
        in_query
            || options
                .get(key)
                .is_some_and(|v| values.contains(&v.as_str()))
    };
    match scheme.to_ascii_lowercase().as_str() {
        "udp" | "rtp" => {
            let host = rest.split(['/', '?']).next().unwrap_or("");
            let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            match host.parse::<std::net::IpAddr>() {
                Ok(ip) => !ip.is_multicast(),
                // `udp://@:5000` or a name: bound on this host.
                Err(_) => true,
            }
        }
        "srt" => flag("mode", &["listener"]),
        "rtmp" | "rtmps" | "tcp" | "http" => flag("listen", &["1", "2"]),
        _ => false,
    }
}

/// `[api]`: who may use the HTTP API.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiSection {
    #[serde(default)]
    tokens: Vec<TokenSection>,
    /// Whether `GET /metrics` needs a read token (default false: open, as Prometheus expects).
    #[serde(default)]
    metrics_need_token: bool,
}

/// `[api] tokens = [{ name, role, token | token_env }]`. No `Debug`: it holds the secret.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenSection {
    name: String,
    role: String,
    token: Option<String>,
    token_env: Option<String>,
    /// The token's SHA-256, in hex (`printf %s "$TOKEN" | sha256sum`): the file never holds it.
    token_sha256: Option<String>,
}

/// The shortest token accepted: a guessable token is no protection.
pub const MIN_TOKEN_CHARS: usize = 16;

/// `[[maintenance]]`: a maintenance window in the config file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowSection {
    streams: Vec<String>,
    start: toml::Value,
    end: toml::Value,
    #[serde(default)]
    comment: String,
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub store: StoreConfig,
    pub evidence: crate::evidence::EvidenceConfig,
    pub retention: crate::retention::RetentionConfig,
    pub service: ServiceConfig,
    pub streams: Vec<StreamConfig>,
    pub notifiers: Vec<NotifierConfig>,
    /// TLS for the API and console (`[server] tls_cert`, `tls_key`), loaded; `None`: plain HTTP.
    pub tls: Option<std::sync::Arc<avmon_server::TlsConfig>>,
    /// API tokens (none: the API is open, and `listen` must be a loopback address).
    pub api: Auth,
    /// The config file's maintenance windows (ids `config-0`, `config-1`, ...).
    pub maintenance: Vec<MaintenanceWindow>,
    /// `[cluster]`: one node of several on one PostgreSQL store (`None`: a standalone host).
    pub cluster: Option<ClusterConfig>,
}

/// `[api]`, checked; `env` reads an environment variable (`std::env::var` outside tests).
fn api_auth(
    value: toml::Value,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<String>,
) -> Auth {
    let Some(api) = section::<ApiSection>(value, "api", errors) else {
        return Auth::open();
    };
    let mut tokens: Vec<Token> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for (i, t) in api.tokens.into_iter().enumerate() {
        let path = format!("api.tokens[{i}]");
        let before = errors.len();
        names.push(t.name.clone());
        if t.name.trim().is_empty() {
            errors.push(format!("{path}.name: must not be empty"));
        } else if names[..i].contains(&t.name) {
            errors.push(format!("{path}.name: duplicate name {:?}", t.name));
        }
        let role = match t.role.as_str() {
            "read" => Role::Read,
            "admin" => Role::Admin,
            other => {
                errors.push(format!(
                    "{path}.role: expected \"read\" or \"admin\" (got {other:?})"
                ));
                Role::Read
            }
        };
        let given = [
            t.token.is_some(),
            t.token_env.is_some(),
            t.token_sha256.is_some(),
        ];
        let digest = match (t.token, t.token_env, t.token_sha256) {
            _ if given.iter().filter(|g| **g).count() > 1 => {
                errors.push(format!(
                    "{path}: give one of token, token_env and token_sha256"
                ));
                None
            }
            (Some(tok), _, _) => plain_token(&tok, &path, errors),
            (_, Some(var), _) => match env(&var) {
                Some(v) => plain_token(&v, &path, errors),
                None => {
                    errors.push(format!(
                        "{path}.token_env: the environment variable {var:?} is not set"
                    ));
                    None
                }
            },
            (_, _, Some(hex)) => match Digest::from_hex(&hex) {
                Some(d) => Some(d),
                None => {
                    errors.push(format!(
                        "{path}.token_sha256: expected 64 hexadecimal digits, the SHA-256 of \
                         the token (printf %s \"$TOKEN\" | sha256sum)"
                    ));
                    None
                }
            },
            (None, None, None) => {
                errors.push(format!(
                    "{path}: missing token (give token = \"...\", token_env = \"VAR\" or \
                     token_sha256 = \"HEX\")"
                ));
                None
            }
        };
        if let Some(d) = &digest {
            if tokens.iter().any(|o| &o.digest == d) {
                errors.push(format!("{path}: the same token as another entry"));
            }
        }
        if let (Some(digest), true) = (digest, errors.len() == before) {
            tokens.push(Token {
                name: t.name,
                role,
                digest,
            });
        }
    }
    Auth {
        tokens,
        metrics_need_token: api.metrics_need_token,
    }
}

/// A token given as itself: its digest, if it is long enough. The token is never echoed.
fn plain_token(token: &str, path: &str, errors: &mut Vec<String>) -> Option<Digest> {
    if token.chars().count() < MIN_TOKEN_CHARS || token.trim() != token {
        errors.push(format!(
            "{path}: the token must be at least {MIN_TOKEN_CHARS} characters, without \
             surrounding spaces"
        ));
        return None;
    }
    Some(Digest::of(token))
}

/// A config file time: an RFC 3339 string, or a TOML offset date-time.
fn config_time(
    v: &toml::Value,
    path: &str,
    errors: &mut Vec<String>,
) -> Option<avmon_core::WallTime> {
    let text = match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Datetime(d) => d.to_string(),
        other => {
            errors.push(format!(
                "{path}: expected an RFC 3339 time such as 2026-11-24T02:00:00Z (got {other})"
            ));
            return None;
        }
    };
    match chrono::DateTime::parse_from_rfc3339(&text) {
        Ok(t) => Some(t.with_timezone(&chrono::Utc)),
        Err(_) => {
            errors.push(format!(
                "{path}: expected an RFC 3339 time with its offset, such as \
                 2026-11-24T02:00:00Z (got {text:?})"
            ));
            None
        }
    }
}

/// `[[maintenance]]`, checked.
fn maintenance(value: toml::Value, errors: &mut Vec<String>) -> Vec<MaintenanceWindow> {
    let toml::Value::Array(items) = value else {
        errors.push("maintenance: must be an array of tables ([[maintenance]])".into());
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let path = format!("maintenance[{i}]");
        let Some(w) = section::<WindowSection>(item, &path, errors) else {
            continue;
        };
        let before = errors.len();
        if w.streams.is_empty() {
            errors.push(format!("{path}.streams: must not be empty"));
        }
        for (j, g) in w.streams.iter().enumerate() {
            if let Some(p) = avmon_core::glob_problem(g) {
                errors.push(format!("{path}.streams[{j}]: {p}"));
            }
        }
        let start = config_time(&w.start, &format!("{path}.start"), errors);
        let end = config_time(&w.end, &format!("{path}.end"), errors);
        if let (Some(start), Some(end)) = (start, end) {
            if end <= start {
                errors.push(format!("{path}.end: must be after start"));
            } else if errors.len() == before {
                out.push(MaintenanceWindow {
                    id: format!("config-{i}"),
                    streams: w.streams,
                    start,
                    end,
                    comment: w.comment,
                    by: "config".into(),
                });
            }
        }
    }
    out
}

/// Every problem found in a config.
#[derive(Debug, thiserror::Error)]
#[error("invalid config {source_name}:\n  {}", .errors.join("\n  "))]
pub struct ConfigError {
    pub source_name: String,
    pub errors: Vec<String>,
}

/// Deserialize one value, with the path of the first problem inside it prefixed by `path`.
fn section<T: DeserializeOwned>(
    value: toml::Value,
    path: &str,
    errors: &mut Vec<String>,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let at = if inner == "." || inner.is_empty() {
                path.to_string()
            } else if inner.starts_with('[') {
                format!("{path}{inner}")
            } else {
                format!("{path}.{inner}")
            };
            let msg = e.into_inner().to_string();
            // toml's messages may span lines; the first line holds the point.
            let msg = msg
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim();
            errors.push(format!("{at}: {msg}"));
            None
        }
    }
}

/// Why a stream URL won't do, if it won't.
pub fn url_problem(url: &str, protocols: &[String]) -> Option<String> {
    if url.trim().is_empty() {
        return Some("must not be empty".into());
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return None; // a file path
    };
    if rest.is_empty() {
        return Some(format!("{url:?} has no address after the scheme"));
    }
    let scheme = scheme.to_ascii_lowercase();
    if protocols.contains(&scheme) {
        None
    } else {
        Some(format!(
            "unsupported scheme {scheme:?} (this FFmpeg reads: {})",
            protocols.join(", ")
        ))
    }
}

impl StreamConfig {
    /// The configured tier (`full` when invalid: validation reports that).
    pub fn tier(&self) -> Tier {
        self.tier.parse().unwrap_or_default()
    }

    /// Check one stream; `path` is where it sits (`streams[0]`).
    pub fn validate(&self, path: &str, protocols: &[String], errors: &mut Vec<String>) {
        if let Some(p) = StreamId::problem(&self.id) {
            errors.push(format!("{path}.id: {p} (got {:?})", self.id));
        }
        if let Some(p) = url_problem(&self.url, protocols) {
            errors.push(format!("{path}.url: {p}"));
        }
        if !(self.io_timeout_s > 0.0 && self.io_timeout_s <= 3600.0) {
            errors.push(format!(
                "{path}.io_timeout_s: must be in (0, 3600] (got {})",
                self.io_timeout_s
            ));
        }
        if self.decoder_threads > 64 {
            errors.push(format!(
                "{path}.decoder_threads: must be at most 64 (got {})",
                self.decoder_threads
            ));
        }
        if let Err(e) = self.tier.parse::<Tier>() {
            errors.push(format!("{path}.tier: {e}"));
        }
        if !(0.0..=MAX_KEYFRAME_INTERVAL_S).contains(&self.keyframe_interval_s) {
            errors.push(format!(
                "{path}.keyframe_interval_s: must be between 0 and {MAX_KEYFRAME_INTERVAL_S} (got {})",
                self.keyframe_interval_s
            ));
        }
        self.detectors
            .validate(&format!("{path}.detectors"), errors);
        self.alerts.validate(&format!("{path}.alerts"), errors);
        match self.hls_config() {
            Some(h) => h.validate(&format!("{path}.hls"), errors),
            None if self.hls.is_some() => errors.push(format!(
                "{path}.hls: only for an HLS or DASH stream, whose url is http(s)://….m3u8 or ….mpd (got {:?})",
                self.url
            )),
            None => {}
        }
    }

    /// The HLS monitor's settings, for an HLS or DASH stream: `[streams.hls]` (or the defaults)
    /// on `url`.
    pub fn hls_config(&self) -> Option<HlsConfig> {
        avmon_hls::is_manifest_url(&self.url).then(|| HlsConfig {
            url: self.url.clone(),
            ..self.hls.clone().unwrap_or_default()
        })
    }

    /// Parse and check a stream given as JSON (the API's `POST /api/streams`).
    pub fn from_json(value: serde_json::Value, protocols: &[String]) -> Result<Self, Vec<String>> {
        let s: StreamConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let p = e.path().to_string();
            vec![if p == "." {
                e.into_inner().to_string()
            } else {
                format!("{p}: {}", e.into_inner())
            }]
        })?;
        let mut errors = Vec::new();
        s.validate("stream", protocols, &mut errors);
        if errors.is_empty() {
            Ok(s)
        } else {
            Err(errors)
        }
    }
}

/// Parse and validate a config's text. `source_name` names it in messages.
pub fn parse(text: &str, source_name: &str) -> Result<Config, ConfigError> {
    parse_with_env(text, source_name, &|var| {
        std::env::var(var).ok().filter(|v| !v.is_empty())
    })
}

/// [`parse`], reading `token_env` variables with `env`.
pub fn parse_with_env(
    text: &str,
    source_name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let fail = |errors: Vec<String>| ConfigError {
        source_name: source_name.to_string(),
        errors,
    };
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        fail(vec![
            e.to_string()
                .lines()
                .next()
                .unwrap_or("syntax error")
                .to_string()
                + &match e.span() {
                    Some(span) => format!(" (line {})", text[..span.start].lines().count().max(1)),
                    None => String::new(),
                },
        ])
    })?;
    let protocols = avmon_media::input_protocols();
    let mut errors = Vec::new();
    let mut server = ServerConfig::default();
    let mut store = StoreConfig::default();
    let mut evidence = crate::evidence::EvidenceConfig::default();
    let mut retention = crate::retention::RetentionConfig::default();
    let mut service = ServiceConfig::default();
    let mut streams = Vec::new();
    let mut notifiers = Vec::new();
    let mut api = Auth::open();
    let mut windows = Vec::new();
    let mut cluster = None;
    for (key, value) in table {
        match key.as_str() {
            "server" => {
                if let Some(s) = section(value, "server", &mut errors) {
                    server = s;
                }
            }
            "store" => {
                if let Some(s) = section(value, "store", &mut errors) {
                    store = s;
                }
            }
            "evidence" => {
                if let Some(e) =
                    section::<crate::evidence::EvidenceConfig>(value, "evidence", &mut errors)
                {
                    e.validate(&mut errors);
                    evidence = e;
                }
            }
            "retention" => {
                let r =
                    section::<crate::retention::RetentionConfig>(value, "retention", &mut errors);
                if let Some(r) = r {
                    r.validate(&mut errors);
                    retention = r;
                }
            }
            "service" => {
                if let Some(s) = section::<ServiceConfig>(value, "service", &mut errors) {
                    s.validate(&mut errors);
                    service = s;
                }
            }
            "streams" => match value {
                toml::Value::Array(items) => {
                    for (i, item) in items.into_iter().enumerate() {
                        let path = format!("streams[{i}]");
                        if let Some(s) = section::<StreamConfig>(item, &path, &mut errors) {
                            s.validate(&path, &protocols, &mut errors);
                            streams.push(s);
                        }
                    }
                }
                _ => errors.push("streams: must be an array of tables ([[streams]])".into()),
            },
            "notifiers" => match value {
                toml::Value::Array(items) => {
                    for (i, item) in items.into_iter().enumerate() {
                        let path = format!("notifiers[{i}]");
                        if let Some(n) = notifier(item, &path, i, &mut errors) {
                            notifiers.push(n);
                        }
                    }
                }
                _ => errors.push("notifiers: must be an array of tables ([[notifiers]])".into()),
            },
            "api" => api = api_auth(value, env, &mut errors),
            "maintenance" => windows = maintenance(value, &mut errors),
            "cluster" => {
                if let Some(mut c) = section::<ClusterConfig>(value, "cluster", &mut errors) {
                    // One config for every node: what differs per node may come from its
                    // environment (a pod's name and IP, through Kubernetes' downward API).
                    if let Some(name) = env("AVMON_CLUSTER_NAME") {
                        c.name = name;
                    }
                    if let Some(a) = env("AVMON_CLUSTER_ADVERTISE") {
                        c.advertise = Some(a);
                    }
                    c.validate(&mut errors);
                    cluster = Some(c);
                }
            }
            other => errors.push(format!(
                "{other}: unknown section (expected server, store, service, evidence, retention, \
                 api, streams, notifiers, maintenance, cluster)"
            )),
        }
    }
    let mut seen = HashSet::new();
    for (i, s) in streams.iter().enumerate() {
        if !seen.insert(s.id.clone()) {
            errors.push(format!("streams[{i}].id: duplicate id {:?}", s.id));
        }
    }
    let mut seen = HashSet::new();
    for (i, n) in notifiers.iter().enumerate() {
        if !seen.insert(n.id().to_string()) {
            errors.push(format!(
                "notifiers[{i}].id: duplicate id {:?} (each notifier's outbox needs its own)",
                n.id()
            ));
        }
    }
    let listen = match server.listen.parse::<SocketAddr>() {
        Ok(a) if !a.ip().is_loopback() && !api.enabled() => {
            errors.push(format!(
                "server.listen: {a} is not a loopback address, and [api] has no tokens: anyone \
                 who reaches it could add and remove streams; add [api] tokens, or listen on \
                 127.0.0.1"
            ));
            None
        }
        Ok(a) => Some(a),
        Err(_) => {
            errors.push(format!(
                "server.listen: {:?} is not an address like 127.0.0.1:8080",
                server.listen
            ));
            None
        }
    };
    if let Err(e) = store.min_free.bytes() {
        errors.push(format!("store.min_free: {e}"));
    }
    if let Err(e) = store_url_problem(&store.url) {
        errors.push(format!("store.url: {e}"));
    }
    if !(store.metrics_interval_s >= 1.0 && store.metrics_interval_s <= 86_400.0) {
        errors.push(format!(
            "store.metrics_interval_s: must be between 1 and 86400 (got {})",
            store.metrics_interval_s
        ));
    }
    match &cluster {
        Some(_) => {
            if !avmon_store::is_postgres_url(&store.url) {
                errors.push(format!(
                    "cluster: the nodes of a cluster share one PostgreSQL store; set [store] url \
                     = \"postgres://USER:PASSWORD@HOST/DB\" (got {:?})",
                    store.url
                ));
            }
            for (i, s) in streams.iter().enumerate() {
                if s.node.is_none() && is_push_input(&s.url, &s.options) {
                    errors.push(format!(
                        "streams[{i}].node: {:?} is a push input, which reaches one host only; \
                         pin it to the node that receives it with node = \"NAME\"",
                        s.url
                    ));
                }
            }
        }
        None => {
            for (i, s) in streams.iter().enumerate() {
                if s.node.is_some() {
                    errors.push(format!(
                        "streams[{i}].node: only for a cluster; add a [cluster] section, or \
                         remove it"
                    ));
                }
            }
        }
    }
    if evidence.dir.as_os_str().is_empty() {
        evidence.dir = crate::evidence::EvidenceConfig::default_dir(&store.url);
    }
    let tls = match (&server.tls_cert, &server.tls_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => match avmon_server::tls_config(cert, key) {
            Ok(t) => Some(t),
            Err(e) => {
                errors.push(format!("server.tls_cert, server.tls_key: {e}"));
                None
            }
        },
        _ => {
            errors.push("server: give both tls_cert and tls_key, or neither".into());
            None
        }
    };
    match (errors.is_empty(), listen) {
        (true, Some(listen)) => Ok(Config {
            listen,
            tls,
            store,
            evidence,
            retention,
            service,
            streams,
            notifiers,
            api,
            maintenance: windows,
            cluster,
        }),
        _ => Err(fail(errors)),
    }
}

fn store_url_problem(url: &str) -> Result<(), String> {
    avmon_store::check_url(url).map_err(|e| e.to_string())
}

fn notifier(
    value: toml::Value,
    path: &str,
    index: usize,
    errors: &mut Vec<String>,
) -> Option<NotifierConfig> {
    // The notifier crate reads its tables as JSON; TOML's values map onto it one to one here.
    match serde_json::to_value(value) {
        Ok(v) => NotifierConfig::parse(v, path, index, errors),
        Err(e) => {
            errors.push(format!("{path}: {e}"));
            None
        }
    }
}

/// Read and validate a config file.
pub fn load(path: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
    Ok(parse(&text, &path.display().to_string())?)
}

/// Read a detectors-only TOML file (`avmon check --detectors FILE`).
pub fn load_detectors(path: &Path) -> anyhow::Result<DetectorsConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let value: toml::Value = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message()))?;
    let mut errors = Vec::new();
    let cfg: Option<DetectorsConfig> = section(value, "detectors", &mut errors);
    if let Some(c) = &cfg {
        c.validate("detectors", &mut errors);
    }
    match cfg {
        Some(c) if errors.is_empty() => Ok(c),
        _ => Err(ConfigError {
            source_name: path.display().to_string(),
            errors,
        }
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use avmon_hls::VariantSelector;

    const CONTRACT: &str = r#"
[server]
listen = "127.0.0.1:8080"
[store]
url = "sqlite://avmon.db"
[[streams]]
id = "news-hd"
url = "udp://127.0.0.1:5000"
[[notifiers]]
kind = "webhook"
url = "http://127.0.0.1:9000/hook"
"#;

    #[test]
    fn the_contract_config_is_valid() {
        let c = parse(CONTRACT, "avmon.toml").unwrap();
        assert_eq!(c.streams.len(), 1);
        assert_eq!(c.streams[0].id, "news-hd");
        assert_eq!(c.notifiers.len(), 1);
        assert_eq!(c.listen.port(), 8080);
    }

    #[test]
    fn the_store_is_a_sqlite_file_or_postgres() {
        for url in [
            "sqlite://avmon.db",
            "/var/lib/avmon/avmon.db",
            "avmon.db",
            "postgres://avmon@db.example:5432/avmon",
            "postgresql://avmon@db.example/avmon",
        ] {
            let text = format!("[store]\nurl = {url:?}\n");
            let c = parse(&text, "avmon.toml").unwrap_or_else(|e| panic!("{url}: {e:?}"));
            assert_eq!(c.store.url, url);
        }
        let err = parse("[store]\nurl = \"mysql://x/db\"\n", "avmon.toml").unwrap_err();
        assert!(err.errors.join("\n").contains("\"mysql\""), "{err:?}");
    }

    #[test]
    fn a_cluster_needs_postgres_and_pins_for_push_inputs() {
        let pg = "[store]\nurl = \"postgres://avmon@db/avmon\"\n";
        let text = format!(
            "{pg}[cluster]\nname = \"node-1\"\nadvertise = \"http://10.0.0.5:8080\"\n\
             [[streams]]\nid = \"pulled\"\nurl = \"https://cdn.example/live.m3u8\"\n\
             [[streams]]\nid = \"multicast\"\nurl = \"udp://239.1.1.1:5000\"\n\
             [[streams]]\nid = \"pushed\"\nurl = \"udp://0.0.0.0:5000\"\nnode = \"node-1\"\n"
        );
        let c = parse(&text, "c.toml").unwrap_or_else(|e| panic!("{e}"));
        let cl = c.cluster.expect("a cluster");
        assert_eq!(cl.name, "node-1");
        assert_eq!(cl.lease_ttl_s, ClusterConfig::default().lease_ttl_s);
        assert_eq!(c.streams[2].node.as_deref(), Some("node-1"));
        // The default name is the host's.
        let c = parse(&format!("{pg}[cluster]\n"), "c.toml").unwrap();
        assert_eq!(c.cluster.unwrap().name, hostname());
        // The environment names the node and its address (one config for every pod).
        let env = |v: &str| match v {
            "AVMON_CLUSTER_NAME" => Some("pod-7".to_string()),
            "AVMON_CLUSTER_ADVERTISE" => Some("http://10.1.2.3:8080".to_string()),
            _ => None,
        };
        let c = parse_with_env(&format!("{pg}[cluster]\nname = \"x\"\n"), "c.toml", &env)
            .unwrap()
            .cluster
            .unwrap();
        assert_eq!(c.name, "pod-7");
        assert_eq!(c.advertise.as_deref(), Some("http://10.1.2.3:8080"));

        let bad = "[store]\nurl = \"sqlite://a.db\"\n[cluster]\nname = \"\"\nlease_ttl_s = 0.5\n\
                   capacity = -1\nadvertise = \"10.0.0.5\"\n\
                   [[streams]]\nid = \"srt\"\nurl = \"srt://:9000?mode=listener\"\n\
                   [[streams]]\nid = \"udp\"\nurl = \"udp://127.0.0.1:5000\"\n";
        let e = parse(bad, "c.toml").unwrap_err();
        for (path, what) in [
            ("cluster.name", "1 to 64"),
            ("cluster.lease_ttl_s", "between 2 and 300"),
            ("cluster.capacity", ">= 0"),
            ("cluster.advertise", "URL"),
            ("cluster:", "PostgreSQL"),
            ("streams[0].node", "push input"),
            ("streams[1].node", "push input"),
        ] {
            assert!(
                e.errors
                    .iter()
                    .any(|m| m.starts_with(path) && m.contains(what)),
                "{path}: {what} not in {:#?}",
                e.errors
            );
        }
        assert_eq!(e.errors.len(), 7, "{:#?}", e.errors);
        // `node` without a cluster is a mistake.
        let e = parse(
            "[[streams]]\nid = \"a\"\nurl = \"udp://127.0.0.1:5000\"\nnode = \"x\"\n",
            "c.toml",
        )
        .unwrap_err();
        assert!(
            e.errors[0].starts_with("streams[0].node: only for a cluster"),
            "{e}"
        );
    }

    #[test]
    fn push_inputs_are_told_from_pulled_ones() {
        let none = BTreeMap::new();
        for url in [
            "udp://127.0.0.1:5000",
            "udp://@:5000",
            "rtp://0.0.0.0:5004",
            "srt://:9000?mode=listener",
            "rtmp://0.0.0.0/live?listen=1",
        ] {
            assert!(is_push_input(url, &none), "{url}");
        }
        for url in [
            "udp://239.1.1.1:5000",
            "udp://[ff0e::1]:5000",
            "srt://ingest.example:9000?mode=caller",
            "srt://ingest.example:9000",
            "rtmp://origin.example/live/a",
            "https://cdn.example/live.m3u8",
            "rtsp://cam.example/1",
            "/srv/file.ts",
        ] {
            assert!(!is_push_input(url, &none), "{url}");
        }
        let listen = BTreeMap::from([("listen".to_string(), "1".to_string())]);
        assert!(is_push_input("rtmp://0.0.0.0/live", &listen));
    }

    #[test]
    fn every_error_is_listed_with_its_path() {
        let text = r#"
[server]
listen = "nowhere"
[store]
url = "mysql://x"
[[streams]]
id = "a b"
url = "foo://x"
[[streams]]
id = "ok"
url = "udp://127.0.0.1:1"
io_timeout_s = -1
[streams.detectors.freeze]
min_duration = -2
[[streams]]
id = "ok"
url = "udp://127.0.0.1:2"
colour = "red"
[[notifiers]]
kind = "pager"
[bogus]
"#;
        let err = parse(text, "bad.toml").unwrap_err();
        let all = err.errors.join("\n");
        for needle in [
            "server.listen:",
            "store.url:",
            "streams[0].id:",
            "streams[0].url: unsupported scheme \"foo\"",
            "streams[1].io_timeout_s:",
            "streams[1].detectors.freeze.min_duration",
            "streams[2]",
            "colour",
            "notifiers[0].kind:",
            "bogus: unknown section",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn every_notifier_kind_with_filters_and_secrets_from_the_environment() {
        std::env::set_var("AVMON_TEST_PD_KEY", "pd-routing-key");
        let text = r#"
[[notifiers]]
kind = "webhook"
id = "ops"
url = "https://hooks.example.com/avmon"
secret = "hmac-secret"
kinds = ["video.*", "source.down"]
min_severity = "major"
group_window_s = 10
[[notifiers]]
kind = "slack"
url = "https://hooks.slack.com/services/T0/B0/XXXX"
streams = ["news-*"]
[[notifiers]]
kind = "pagerduty"
routing_key_env = "AVMON_TEST_PD_KEY"
[[notifiers]]
kind = "command"
command = ["/usr/local/bin/switch-to-backup", "--encoder", "2"]
timeout_s = 20
"#;
        let c = parse(text, "n.toml").unwrap();
        let ids: Vec<&str> = c.notifiers.iter().map(|n| n.id()).collect();
        assert_eq!(ids, ["ops", "slack-1", "pagerduty-2", "command-3"]);
        match &c.notifiers[2].channel {
            avmon_notify::ChannelConfig::PagerDuty(p) => {
                assert_eq!(p.routing_key.as_ref().unwrap().expose(), "pd-routing-key")
            }
            other => panic!("{other:?}"),
        }
        let dbg = format!("{c:?}");
        for secret in ["hmac-secret", "XXXX", "pd-routing-key"] {
            assert!(!dbg.contains(secret), "{secret} in {dbg}");
        }
        let bad = r#"
[[notifiers]]
kind = "webhook"
id = "same"
url = "http://127.0.0.1:9/x"
[[notifiers]]
kind = "webhook"
id = "same"
url = "http://127.0.0.1:9/y"
[[notifiers]]
kind = "pagerduty"
routing_key_env = "AVMON_TEST_UNSET_VAR"
[[notifiers]]
kind = "slack"
[[notifiers]]
kind = "command"
command = []
"#;
        let all = parse(bad, "bad.toml").unwrap_err().errors.join("\n");
        for needle in [
            "notifiers[1].id: duplicate id \"same\"",
            "notifiers[2].routing_key_env: environment variable \"AVMON_TEST_UNSET_VAR\" is not set",
            "notifiers[3].url: is required",
            "notifiers[4].command: is required",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn evidence_settings_are_checked_and_its_dir_defaults_beside_the_store() {
        let c = parse("[store]\nurl = \"sqlite:///srv/avmon/a.db\"\n", "e.toml").unwrap();
        assert_eq!(c.evidence.dir, Path::new("/srv/avmon/a.evidence"));
        assert!(c.evidence.enabled);
        let text = "[evidence]\npre_s = -1\npost_s = 90\nmax_age = \"3 fortnights\"\nmax_bytes = 0\nspeed = 1\n";
        let e = parse(text, "e.toml").unwrap_err();
        assert_eq!(e.errors.len(), 1, "{:?}", e.errors);
        assert!(e.errors[0].contains("evidence") && e.errors[0].contains("speed"));
        let text =
            "[evidence]\npre_s = -1\npost_s = 90\nmax_age = \"3 fortnights\"\nmax_bytes = 0\n";
        let e = parse(text, "e.toml").unwrap_err();
        let starts: Vec<&str> = e
            .errors
            .iter()
            .map(|e| e.split(':').next().unwrap())
            .collect();
        assert_eq!(
            starts,
            [
                "evidence.pre_s",
                "evidence.post_s",
                "evidence.max_age",
                "evidence.max_bytes"
            ],
            "{:?}",
            e.errors
        );
    }

    #[test]
    fn duplicate_ids_and_syntax_errors() {
        let dup = "[[streams]]\nid='a'\nurl='x.ts'\n[[streams]]\nid='a'\nurl='y.ts'\n";
        let e = parse(dup, "d.toml").unwrap_err();
        assert!(e.errors.iter().any(|m| m.contains("duplicate id")), "{e}");
        let e = parse("[[streams]\nid=", "s.toml").unwrap_err();
        assert_eq!(e.errors.len(), 1);
        assert!(e.errors[0].contains("line"), "{e}");
    }

    #[test]
    fn an_hls_stream_takes_its_monitor_settings_from_streams_hls() {
        let text = r#"
[[streams]]
id = "ott"
url = "https://origin.test/live/master.m3u8"
[streams.hls]
variants = [{ name = "720p" }, { index = 0 }, { bandwidth = 800000 }]
stale_factor = 4
segment_timeout_s = 3
[[streams]]
id = "plain-hls"
url = "http://origin.test/other.m3u8?token=x"
[[streams]]
id = "ts"
url = "udp://127.0.0.1:5000"
"#;
        let c = parse(text, "hls.toml").unwrap();
        let h = c.streams[0].hls_config().unwrap();
        assert_eq!(h.url, "https://origin.test/live/master.m3u8");
        assert_eq!(
            h.variants,
            [
                VariantSelector::Name("720p".into()),
                VariantSelector::Index(0),
                VariantSelector::Bandwidth(800_000)
            ]
        );
        assert_eq!((h.stale_factor, h.segment_timeout_s), (4.0, 3.0));
        // Defaults where the section says nothing, or there is none.
        assert_eq!(
            h.playlist_timeout_s,
            HlsConfig::default().playlist_timeout_s
        );
        let plain = c.streams[1].hls_config().unwrap();
        assert_eq!(
            plain,
            HlsConfig::new("http://origin.test/other.m3u8?token=x")
        );
        assert!(c.streams[2].hls_config().is_none());
    }

    #[test]
    fn the_readme_example_config_is_valid() {
        let readme = include_str!("../../../README.md");
        let at = readme.find("### Service configuration").unwrap();
        let block = readme[at..].split("```toml\n").nth(1).unwrap();
        let block = block.split("```").next().unwrap();
        let c = parse(block, "README.md").unwrap();
        assert_eq!(c.streams.len(), 2);
        assert_eq!(c.streams[0].alerts.flap_max, 5);
        assert_eq!(c.maintenance.len(), 1);
        // Its [retention] says the defaults, as it claims.
        let retention = c.retention.policy().unwrap();
        assert_eq!(retention, avmon_store::Retention::default());
        let h = c.streams[1].hls_config().unwrap();
        assert_eq!(h.variants.len(), 2);
        // It writes out the defaults, but for the variants.
        let written = HlsConfig {
            variants: Vec::new(),
            ..h
        };
        assert_eq!(written, HlsConfig::new(&c.streams[1].url));
    }

    #[test]
    fn a_bad_hls_section_is_refused_with_its_path() {
        let text = r#"
[[streams]]
id = "a"
url = "http://origin.test/a.m3u8"
[streams.hls]
stale_factor = 0.5
segment_timeout_s = -1
variants = [{ name = "" }]
[[streams]]
id = "b"
url = "udp://127.0.0.1:5000"
[streams.hls]
stale_factor = 3
[[streams]]
id = "c"
url = "http://origin.test/c.m3u8"
[streams.hls]
url = "http://elsewhere.test/c.m3u8"
[[streams]]
id = "d"
url = "http://origin.test/d.m3u8"
hls = { variants = [{ size = 2 }] }
[[streams]]
id = "e"
url = "http://origin.test/e.m3u8"
hls = { stale_factor = "three" }
"#;
        let err = parse(text, "bad.toml").unwrap_err();
        let all = err.errors.join("\n");
        for needle in [
            "streams[0].hls.stale_factor: must be between 1 and 100 (got 0.5)",
            "streams[0].hls.segment_timeout_s: must be between",
            "streams[0].hls.variants[0].name: must not be empty",
            "streams[1].hls: only for an HLS or DASH stream",
            "streams[2].hls.url: unknown field `url`",
            "streams[3].hls.variants[0]: unknown variant `size`",
            "streams[4].hls.stale_factor: invalid type",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert_eq!(err.errors.len(), 7, "{all}");
    }

    #[test]
    fn streams_from_json_are_validated() {
        let p = avmon_media::input_protocols();
        let ok = StreamConfig::from_json(
            serde_json::json!({"id": "x", "url": "udp://127.0.0.1:9"}),
            &p,
        );
        assert!(ok.is_ok());
        let bad = StreamConfig::from_json(serde_json::json!({"id": "", "url": "nope://"}), &p);
        assert!(bad.unwrap_err().len() >= 2);
        let typed = StreamConfig::from_json(serde_json::json!({"id": "x", "url": 3}), &p);
        assert!(typed.unwrap_err()[0].contains("url"));
        // The API's streams take the same `hls` section.
        let hls = StreamConfig::from_json(
            serde_json::json!({"id": "x", "url": "http://o.test/live.m3u8",
                               "hls": {"variants": [{"index": 1}], "stale_factor": 2}}),
            &p,
        )
        .unwrap();
        let h = hls.hls_config().unwrap();
        assert_eq!(
            (h.variants, h.stale_factor),
            (vec![VariantSelector::Index(1)], 2.0)
        );
        let bad = StreamConfig::from_json(
            serde_json::json!({"id": "x", "url": "http://o.test/live.m3u8",
                               "hls": {"stale_factor": 200, "variants": [{"index": -1}]}}),
            &p,
        );
        assert!(bad.unwrap_err()[0].starts_with("hls.variants[0]"));
        let bad = StreamConfig::from_json(
            serde_json::json!({"id": "x", "url": "http://o.test/live.m3u8",
                               "hls": {"stale_factor": 200}}),
            &p,
        );
        assert_eq!(
            bad.unwrap_err(),
            ["stream.hls.stale_factor: must be between 1 and 100 (got 200)"]
        );
    }

    const SECRET_A: &str = "adm-0123456789abcdefXYZ";
    const SECRET_B: &str = "read-0123456789abcdefXYZ";

    fn env(var: &str) -> Option<String> {
        (var == "AVMON_TEST_ADMIN").then(|| SECRET_A.to_string())
    }

    #[test]
    fn api_tokens_are_read_from_the_file_or_the_environment_and_never_shown() {
        // `printf %s abc | sha256sum`
        let hashed = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let text = format!(
            r#"
[server]
listen = "0.0.0.0:8080"
[api]
tokens = [{{ name = "ops", role = "admin", token_env = "AVMON_TEST_ADMIN" }},
          {{ name = "wall", role = "read", token = "{SECRET_B}" }},
          {{ name = "ci", role = "read", token_sha256 = "{hashed}" }}]
metrics_need_token = true
"#
        );
        let c = parse_with_env(&text, "avmon.toml", &env).unwrap();
        assert_eq!(c.api.tokens.len(), 3);
        assert_eq!(c.api.tokens[0].name, "ops");
        assert_eq!(c.api.tokens[0].role, Role::Admin);
        assert_eq!(c.api.tokens[0].digest, Digest::of(SECRET_A));
        assert_eq!(c.api.tokens[1].role, Role::Read);
        assert_eq!(c.api.tokens[2].digest, Digest::of("abc"));
        assert!(c.api.metrics_need_token);
        assert!(!c.listen.ip().is_loopback(), "tokens allow any address");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains(SECRET_A) && !shown.contains(SECRET_B),
            "{shown}"
        );
    }

    #[test]
    fn bad_tokens_are_listed_by_path_without_their_value() {
        let text = r#"
[api]
tokens = [{ name = "ops", role = "root", token = "short" },
          { name = "ops", role = "read", token_env = "AVMON_TEST_UNSET" },
          { name = "", role = "read" },
          { name = "x", role = "read", token = "adm-0123456789abcdefXYZ", token_env = "A" },
          { name = "y", role = "admin", token = "adm-0123456789abcdefXYZ" },
          { name = "z", role = "admin", token = "adm-0123456789abcdefXYZ" },
          { name = "h", role = "admin", token_sha256 = "not-hex" }]
"#;
        let err = parse_with_env(text, "avmon.toml", &env).unwrap_err();
        assert_eq!(
            err.errors,
            [
                "api.tokens[0].role: expected \"read\" or \"admin\" (got \"root\")",
                "api.tokens[0]: the token must be at least 16 characters, without surrounding spaces",
                "api.tokens[1].name: duplicate name \"ops\"",
                "api.tokens[1].token_env: the environment variable \"AVMON_TEST_UNSET\" is not set",
                "api.tokens[2].name: must not be empty",
                "api.tokens[2]: missing token (give token = \"...\", token_env = \"VAR\" or token_sha256 = \"HEX\")",
                "api.tokens[3]: give one of token, token_env and token_sha256",
                "api.tokens[5]: the same token as another entry",
                "api.tokens[6].token_sha256: expected 64 hexadecimal digits, the SHA-256 of the token (printf %s \"$TOKEN\" | sha256sum)",
            ]
        );
        assert!(!err.to_string().contains("short") && !err.to_string().contains("abcdefXYZ"));
    }

    #[test]
    fn tls_needs_both_files_and_names_a_bad_one() {
        let err = |text: &str| parse_with_env(text, "avmon.toml", &env).unwrap_err().errors;
        assert_eq!(
            err("[server]\ntls_cert = \"cert.pem\"\n"),
            ["server: give both tls_cert and tls_key, or neither"]
        );
        let e = err("[server]\ntls_cert = \"/nonexistent/cert.pem\"\ntls_key = \"k.pem\"\n");
        assert!(
            e.len() == 1
                && e[0].starts_with("server.tls_cert, server.tls_key: /nonexistent/cert.pem"),
            "{e:?}"
        );
    }

    #[test]
    fn without_tokens_only_loopback_is_accepted() {
        for listen in ["0.0.0.0:8080", "[::]:8080", "192.0.2.1:80"] {
            let text = format!("[server]\nlisten = \"{listen}\"\n");
            let err = parse_with_env(&text, "avmon.toml", &env).unwrap_err();
            assert_eq!(err.errors.len(), 1, "{listen}");
            assert!(
                err.errors[0].starts_with(&format!("server.listen: {listen}"))
                    && err.errors[0].contains("[api] has no tokens"),
                "{err}"
            );
        }
        for listen in ["127.0.0.1:8080", "[::1]:8080", "127.0.0.2:1"] {
            let text = format!("[server]\nlisten = \"{listen}\"\n");
            let c = parse_with_env(&text, "avmon.toml", &env).unwrap();
            assert!(!c.api.enabled());
        }
    }

    #[test]
    fn maintenance_windows_from_the_config() {
        let text = r#"
[[maintenance]]
streams = ["news-*", "sport"]
start = "2026-11-24T02:00:00Z"
end = 2026-11-24T04:00:00+01:00
comment = "encoder upgrade"
[[maintenance]]
streams = []
start = "yesterday"
end = 5
[[maintenance]]
streams = ["a b"]
start = "2026-11-24T02:00:00Z"
end = "2026-11-24T01:00:00Z"
[[maintenance]]
streams = ["x"]
start = "2026-11-24T02:00:00Z"
end = "2026-11-24T03:00:00Z"
until = "never"
"#;
        let err = parse_with_env(text, "avmon.toml", &env).unwrap_err();
        assert_eq!(err.errors.len(), 6, "{err}");
        assert_eq!(err.errors[0], "maintenance[1].streams: must not be empty");
        assert!(err.errors[1].starts_with("maintenance[1].start: expected an RFC 3339 time"));
        assert!(err.errors[2].starts_with("maintenance[1].end: expected an RFC 3339 time"));
        assert!(err.errors[3].starts_with("maintenance[2].streams[0]: \"a b\""));
        assert_eq!(err.errors[4], "maintenance[2].end: must be after start");
        assert!(
            err.errors[5].starts_with("maintenance[3].until: unknown field `until`"),
            "{err}"
        );

        let ok = text.split("[[maintenance]]\nstreams = []").next().unwrap();
        let c = parse_with_env(ok, "avmon.toml", &env).unwrap();
        assert_eq!(c.maintenance.len(), 1);
        let w = &c.maintenance[0];
        assert_eq!(w.id, "config-0");
        assert_eq!(w.by, "config");
        assert_eq!(w.streams, ["news-*", "sport"]);
        assert_eq!(
            w.end - w.start,
            chrono::Duration::hours(1),
            "the offset counts"
        );
    }
}
