//! How an HLS input is described: its URL, which variants to monitor, and the limits of the
//! checks. Deserialised from the binary's config (a stream's `[streams.hls]`,
//! `deny_unknown_fields`), validated with every problem named by its path.

#[cfg(feature = "net")]
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::manifest::Variant;

/// One HLS input.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HlsConfig {
    /// The master or media playlist (`http://` or `https://`). Not part of the serialised form:
    /// in a config it is the stream's own `url`, given once.
    #[serde(skip)]
    pub url: String,
    /// Which variants of a master playlist to monitor; empty = all. Ignored for a media playlist.
    pub variants: Vec<VariantSelector>,
    /// `hls.stale` when the playlist has not changed for longer than this many target durations.
    pub stale_factor: f64,
    /// Seconds a playlist request may take (connect to last byte).
    pub playlist_timeout_s: f64,
    /// Seconds a segment, key or init-section request may take; beyond it the segment failed.
    pub segment_timeout_s: f64,
    /// A playlist larger than this is refused (bounds memory on hostile input).
    pub max_playlist_bytes: u64,
    /// A segment larger than this is a segment error (bounds memory on hostile input).
    pub max_segment_bytes: u64,
}

impl Default for HlsConfig {
    fn default() -> Self {
        HlsConfig {
            url: String::new(),
            variants: Vec::new(),
            stale_factor: 3.0,
            playlist_timeout_s: 5.0,
            segment_timeout_s: 10.0,
            max_playlist_bytes: 1 << 20,
            max_segment_bytes: 64 << 20,
        }
    }
}

impl HlsConfig {
    /// The defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        HlsConfig {
            url: url.into(),
            ..HlsConfig::default()
        }
    }

    /// Push one message per invalid setting, prefixed with `path`.
    pub fn validate(&self, path: &str, errors: &mut Vec<String>) {
        let field = |f: &str| {
            if path.is_empty() {
                f.to_owned()
            } else {
                format!("{path}.{f}")
            }
        };
        if let Err(e) = self.parsed_url() {
            errors.push(format!("{}: {e}", field("url")));
        }
        for (name, v, min, max) in [
            ("stale_factor", self.stale_factor, 1.0, 100.0),
            ("playlist_timeout_s", self.playlist_timeout_s, 0.001, 3600.0),
            ("segment_timeout_s", self.segment_timeout_s, 0.001, 3600.0),
        ] {
            if !(min..=max).contains(&v) {
                errors.push(format!(
                    "{}: must be between {min} and {max} (got {v})",
                    field(name)
                ));
            }
        }
        for (name, v) in [
            ("max_playlist_bytes", self.max_playlist_bytes),
            ("max_segment_bytes", self.max_segment_bytes),
        ] {
            if v < 1024 {
                errors.push(format!("{}: must be at least 1024 (got {v})", field(name)));
            }
        }
        for (i, s) in self.variants.iter().enumerate() {
            if let VariantSelector::Name(n) = s {
                if n.is_empty() {
                    errors.push(format!(
                        "{}: must not be empty",
                        field(&format!("variants[{i}].name"))
                    ));
                }
            }
        }
    }

    /// The URL, if it is an absolute `http(s)` URL.
    pub fn parsed_url(&self) -> Result<Url, String> {
        let url = Url::parse(&self.url).map_err(|e| format!("not a URL ({e}): {:?}", self.url))?;
        match url.scheme() {
            "http" | "https" => Ok(url),
            s => Err(format!("unsupported scheme {s:?} (expected http or https)")),
        }
    }

    /// The manifest format of the URL: DASH for an MPD, HLS otherwise.
    pub fn format(&self) -> std::sync::Arc<dyn crate::manifest::ManifestFormat> {
        if is_dash_url(&self.url) {
            std::sync::Arc::new(crate::dash::Dash::default())
        } else {
            std::sync::Arc::new(crate::playlist::Hls)
        }
    }

    #[cfg(feature = "net")]
    pub(crate) fn playlist_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.playlist_timeout_s)
    }

    #[cfg(feature = "net")]
    pub(crate) fn segment_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.segment_timeout_s)
    }
}

/// Whether `input` names an HLS playlist over HTTP: an `http(s)` URL whose path ends in `.m3u8`.
pub fn is_hls_url(input: &str) -> bool {
    Url::parse(input).is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https") && u.path().to_ascii_lowercase().ends_with(".m3u8")
    })
}

/// Whether `input` names a DASH MPD over HTTP: an `http(s)` URL whose path ends in `.mpd`.
pub fn is_dash_url(input: &str) -> bool {
    Url::parse(input).is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https") && u.path().to_ascii_lowercase().ends_with(".mpd")
    })
}

/// Whether `input` is for avmon's own HLS/DASH monitor ([`is_hls_url`] or [`is_dash_url`]).
pub fn is_manifest_url(input: &str) -> bool {
    is_hls_url(input) || is_dash_url(input)
}

/// Chooses variants of a master playlist. In TOML: `variants = [{ index = 0 }, { bandwidth =
/// 2500000 }, { name = "720p" }]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum VariantSelector {
    /// The n-th variant (from 0, in playlist order, I-frame-only variants not counted).
    Index(usize),
    /// The variant whose `BANDWIDTH` is closest to this many bits per second (ties: the first).
    Bandwidth(u64),
    /// The variant whose `NAME` attribute, `RESOLUTION` (`1280x720`) or URI as written matches;
    /// for DASH, the Representation's `@id` or avmon's name for it (`video/ID`).
    Name(String),
}

impl std::str::FromStr for VariantSelector {
    type Err = String;

    /// `index:N`, `bandwidth:BPS` or `name:NAME` (the command-line form).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("variant {s:?}: expected index:N, bandwidth:BITS_PER_S or name:NAME");
        let (how, what) = s.split_once(':').ok_or_else(bad)?;
        match how {
            "index" => what.parse().map(VariantSelector::Index).map_err(|_| bad()),
            "bandwidth" => what
                .parse()
                .map(VariantSelector::Bandwidth)
                .map_err(|_| bad()),
            "name" if !what.is_empty() => Ok(VariantSelector::Name(what.to_owned())),
            _ => Err(bad()),
        }
    }
}

impl VariantSelector {
    fn pick(&self, variants: &[Variant]) -> Option<usize> {
        match self {
            VariantSelector::Index(i) => (*i < variants.len()).then_some(*i),
            VariantSelector::Bandwidth(b) => variants
                .iter()
                .enumerate()
                .min_by_key(|(_, v)| v.bandwidth.abs_diff(*b))
                .map(|(i, _)| i),
            VariantSelector::Name(n) => variants.iter().position(|v| {
                v.name == *n
                    || v.id.as_deref() == Some(n.as_str())
                    || v.resolution.as_deref() == Some(n.as_str())
                    || v.uri.path().ends_with(&format!("/{n}"))
            }),
        }
    }
}

/// The variants `selectors` choose (all when empty), each once, in playlist order; or why one
/// selector matched none.
pub fn choose(variants: &[Variant], selectors: &[VariantSelector]) -> Result<Vec<Variant>, String> {
    if selectors.is_empty() {
        return Ok(variants.to_vec());
    }
    let mut chosen = vec![false; variants.len()];
    for s in selectors {
        let i = s.pick(variants).ok_or_else(|| {
            let have: Vec<String> = variants
                .iter()
                .map(|v| format!("{} {:?} {} bit/s", v.index, v.name, v.bandwidth))
                .collect();
            format!(
                "no variant matches {s:?}; the master playlist has: {}",
                have.join(", ")
            )
        })?;
        chosen[i] = true;
    }
    Ok(variants
        .iter()
        .zip(chosen)
        .filter(|(_, c)| *c)
        .map(|(v, _)| v.clone())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variants() -> Vec<Variant> {
        [
            (800_000, "low", "640x360"),
            (2_500_000, "hd/index.m3u8", "1280x720"),
        ]
        .iter()
        .enumerate()
        .map(|(index, (bandwidth, name, res))| Variant {
            index,
            uri: Url::parse(&format!("http://o.test/{name}")).unwrap(),
            bandwidth: *bandwidth,
            name: (*name).into(),
            resolution: Some((*res).into()),
            id: None,
            captions: false,
        })
        .collect()
    }

    #[test]
    fn selectors_choose_by_index_bandwidth_and_name() {
        let v = variants();
        let pick = |s: Vec<VariantSelector>| -> Vec<usize> {
            choose(&v, &s).unwrap().iter().map(|v| v.index).collect()
        };
        assert_eq!(pick(vec![]), [0, 1]);
        assert_eq!(pick(vec![VariantSelector::Index(1)]), [1]);
        assert_eq!(pick(vec![VariantSelector::Bandwidth(1_000_000)]), [0]);
        assert_eq!(pick(vec![VariantSelector::Bandwidth(9_000_000)]), [1]);
        assert_eq!(pick(vec![VariantSelector::Name("low".into())]), [0]);
        assert_eq!(pick(vec![VariantSelector::Name("1280x720".into())]), [1]);
        assert_eq!(pick(vec![VariantSelector::Name("index.m3u8".into())]), [1]);
        // Each variant once, in playlist order, however the selectors are ordered.
        assert_eq!(
            pick(vec![
                VariantSelector::Index(1),
                VariantSelector::Name("hd/index.m3u8".into()),
                VariantSelector::Index(0)
            ]),
            [0, 1]
        );
        let e = choose(&v, &[VariantSelector::Name("4k".into())]).unwrap_err();
        assert!(
            e.contains("no variant matches") && e.contains("\"low\""),
            "{e}"
        );
        assert!(choose(&v, &[VariantSelector::Index(2)]).is_err());
    }

    #[test]
    fn config_deserialises_and_validation_names_every_problem() {
        let c = HlsConfig {
            url: "http://o.test/live.m3u8".into(),
            ..from_json(
                r#"{"variants": [{"index": 0}, {"name": "hd"}, {"bandwidth": 5}], "stale_factor": 4}"#,
            )
        };
        assert_eq!(c.variants.len(), 3);
        assert_eq!(c.stale_factor, 4.0);
        assert_eq!(c.segment_timeout_s, 10.0);
        let mut errors = Vec::new();
        c.validate("streams[0].hls", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");

        let bad = HlsConfig {
            url: "rtmp://o.test/x".into(),
            stale_factor: 0.5,
            playlist_timeout_s: f64::NAN,
            max_segment_bytes: 10,
            variants: vec![VariantSelector::Name(String::new())],
            ..HlsConfig::default()
        };
        let mut errors = Vec::new();
        bad.validate("hls", &mut errors);
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert!(
            errors[0].starts_with("hls.url: unsupported scheme \"rtmp\""),
            "{errors:?}"
        );
        assert!(errors
            .iter()
            .any(|e| e.starts_with("hls.stale_factor: must be between 1 and 100")));
        assert!(errors.iter().any(|e| e.starts_with("hls.variants[0].name")));
        assert!(serde_json::from_str::<HlsConfig>(r#"{"stale": 3}"#).is_err());
        // The URL is the stream's: naming it again in the section is refused, not ignored.
        let e = serde_json::from_str::<HlsConfig>(r#"{"url": "http://o.test/x.m3u8"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `url`"), "{e}");
        assert!(!serde_json::to_string(&c).unwrap().contains("o.test"));
    }

    fn from_json(json: &str) -> HlsConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn selectors_parse_from_the_command_line_form() {
        assert_eq!("index:2".parse(), Ok(VariantSelector::Index(2)));
        assert_eq!(
            "bandwidth:2500000".parse(),
            Ok(VariantSelector::Bandwidth(2_500_000))
        );
        assert_eq!(
            "name:720p:hi".parse(),
            Ok(VariantSelector::Name("720p:hi".into()))
        );
        for bad in ["2", "index:-1", "bandwidth:fast", "name:", "size:4"] {
            let e = bad.parse::<VariantSelector>().unwrap_err();
            assert!(e.contains("expected index:N"), "{bad}: {e}");
        }
    }

    #[test]
    fn hls_urls_are_http_m3u8_paths() {
        assert!(is_hls_url("http://127.0.0.1:8080/live/index.m3u8"));
        assert!(is_hls_url("https://cdn.test/a/MASTER.M3U8?token=1"));
        assert!(!is_hls_url("http://cdn.test/a/stream.ts"));
        assert!(!is_hls_url("file:///tmp/x.m3u8"));
        assert!(!is_hls_url("/tmp/x.m3u8"));
    }
}
