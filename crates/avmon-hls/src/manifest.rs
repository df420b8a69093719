//! What the monitor needs from a manifest, whatever its format: the seam for DASH.
//!
//! The monitor (polling, downloads, checks) never looks at HLS syntax. It asks a
//! [`ManifestFormat`] to turn the bytes of the top-level document into a list of [`Variant`]s or
//! a [`MediaWindow`], and the bytes of a variant's document into its current window. HLS does
//! this with two documents (a master playlist, then one media playlist per variant); DASH would do
//! it with one (the MPD, reloaded for every representation, `Variant::id` naming the
//! representation; see [`crate::dash`]). DASH is a second implementation of this trait, not a
//! second monitor.

use url::Url;

/// A variant (HLS) or representation (DASH) that can be monitored.
#[derive(Clone, Debug, PartialEq)]
pub struct Variant {
    /// Position among the variants of the top-level document, from 0 (I-frame-only variants are
    /// not counted).
    pub index: usize,
    /// The document to reload for this variant's window.
    pub uri: Url,
    /// Peak bits per second, as announced (`BANDWIDTH`); 0 when unknown.
    pub bandwidth: u64,
    /// A name: the `NAME` attribute some packagers add, else the URI as written.
    pub name: String,
    /// `WIDTHxHEIGHT`, when announced.
    pub resolution: Option<String>,
    /// Format-specific identity inside a shared document (a DASH representation id); `None` for HLS.
    pub id: Option<String>,
    /// It declares closed captions in its pictures (an HLS `CLOSED-CAPTIONS` group; a DASH
    /// `Accessibility` of `urn:scte:dash:cc:cea-608:2015` or `…cea-708:2015`).
    pub captions: bool,
}

/// What a top-level document lists.
#[derive(Clone, Debug, PartialEq)]
pub enum Manifest {
    /// A master playlist: pick variants, then reload each one's document.
    Variants(Vec<Variant>),
    /// The document is itself a media window (a media playlist given directly).
    Media(MediaWindow),
}

/// The segments a media document lists at one reload.
#[derive(Clone, Debug, PartialEq)]
pub struct MediaWindow {
    /// Upper bound of every segment's duration, in seconds (`EXT-X-TARGETDURATION`). Drives the
    /// reload interval and the stale limit.
    pub target_duration: f64,
    /// Sequence number of the first segment listed (`EXT-X-MEDIA-SEQUENCE`).
    pub first_sequence: u64,
    pub segments: Vec<SegmentRef>,
    /// No segment will be added (`EXT-X-ENDLIST`; a static MPD): stop reloading once these are
    /// fetched.
    pub ended: bool,
    /// The document's own times, for checks between reloads (DASH); `None` for HLS.
    pub doc: Option<DocTimes>,
}

/// What an MPD says of itself, compared from one reload to the next.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DocTimes {
    /// `availabilityStartTime`, Unix seconds: must not change while a presentation is live.
    pub availability_start: Option<f64>,
    /// `publishTime`, Unix seconds: must not go backwards.
    pub publish: Option<f64>,
    /// `minimumUpdatePeriod`, seconds: how often the document may change, so how long it may
    /// stay the same before it is stale.
    pub update_period: Option<f64>,
}

impl MediaWindow {
    /// Sequence number of the last segment listed, if any.
    pub fn last_sequence(&self) -> Option<u64> {
        self.segments.last().map(|s| s.sequence)
    }
}

/// One segment of a window, with everything needed to fetch and decrypt it.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentRef {
    pub sequence: u64,
    pub uri: Url,
    /// Duration announced by the manifest (`EXTINF`), in seconds.
    pub duration: f64,
    /// A discontinuity (`EXT-X-DISCONTINUITY`) comes before this segment: timestamps, encoding
    /// or continuity counters may change here.
    pub discontinuity: bool,
    /// Only these bytes of `uri` (`EXT-X-BYTERANGE`).
    pub range: Option<ByteRange>,
    pub encryption: Encryption,
    /// The initialisation section the segment needs (`EXT-X-MAP`; fMP4).
    pub init: Option<InitRef>,
    /// An ad cue at this segment (`EXT-X-CUE-OUT`/`-IN`, or an `EXT-X-DATERANGE` with SCTE 35
    /// attributes; a DASH EventStream's SCTE 35 event).
    pub cue: Option<HlsCue>,
    /// Seconds of media time missing before this segment (negative: overlapping the one before)
    /// where a DASH SegmentTimeline says so; `None` for HLS.
    pub gap_before_s: Option<f64>,
    /// Where the segment starts on the presentation's time line, seconds (DASH: from
    /// `availabilityStartTime`, the same for every Representation); `None` for HLS.
    pub presentation_s: Option<f64>,
}

/// An ad cue a playlist signals at a segment.
#[derive(Clone, Debug, PartialEq)]
pub struct HlsCue {
    /// The tag: `EXT-X-CUE-OUT`, `EXT-X-CUE-IN`, `EXT-X-DATERANGE`, or `EventStream` (DASH).
    pub tag: &'static str,
    /// Leaving the programme (an avail begins); false: returning to it.
    pub out: bool,
    /// The avail's duration, seconds, when given.
    pub duration: Option<f64>,
    /// The DATERANGE's `ID`.
    pub id: Option<String>,
    /// The SCTE 35 section a DATERANGE carries (`SCTE35-OUT`, `SCTE35-IN`, `SCTE35-CMD`).
    pub scte35: Option<Vec<u8>>,
}

/// `length` bytes from `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ByteRange {
    pub offset: u64,
    pub length: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InitRef {
    pub uri: Url,
    pub range: Option<ByteRange>,
}

/// How a segment is encrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Encryption {
    None,
    /// The whole segment is AES-128-CBC with PKCS#7 padding (`METHOD=AES-128`). Without an
    /// explicit IV, the IV is the segment's sequence number (RFC 8216, 5.2).
    Aes128 {
        key_uri: Url,
        iv: Option<[u8; 16]>,
    },
    /// Samples are encrypted inside a clear container (`SAMPLE-AES`, …): the segment is passed on
    /// as it is, and container checks still apply.
    Samples(String),
}

/// Why a document could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ManifestError(pub String);

/// A manifest format: HLS ([`crate::playlist::Hls`]) or DASH ([`crate::dash::Dash`]). See the
/// module docs.
pub trait ManifestFormat: Send + Sync {
    /// Parse the top-level document fetched from `base` (the URL after redirects).
    fn parse_top(&self, bytes: &[u8], base: &Url) -> Result<Manifest, ManifestError>;

    /// Parse `variant`'s document, fetched from `base`, into its current window.
    fn parse_media(
        &self,
        bytes: &[u8],
        base: &Url,
        variant: &Variant,
    ) -> Result<MediaWindow, ManifestError>;

    /// The kinds the delivery checks report under (`hls.*` or `dash.*`).
    fn kinds(&self) -> &'static crate::checks::DeliveryKinds {
        &crate::checks::HLS_KINDS
    }
}
