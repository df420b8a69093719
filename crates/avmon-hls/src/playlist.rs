//! HLS playlists (RFC 8216) into the format-neutral [`Manifest`] and [`MediaWindow`].
//!
//! Parsing is `m3u8-rs`'s (a maintained nom parser that covers every tag of RFC 8216 and keeps
//! unknown ones; `hls_m3u8`, the other candidate, is unmaintained and panics on some malformed
//! input). This module adds what a monitor must not take on trust from a permissive parser:
//!
//! - the bytes must be UTF-8 text starting with `#EXTM3U`, or the document is refused with a
//!   one-line reason (an HTML error page served with status 200 is a common case);
//! - a media playlist must have a positive `EXT-X-TARGETDURATION` and one `EXTINF` per segment
//!   (`m3u8-rs` takes any stray line for a segment URI and defaults missing numbers to 0);
//! - `EXT-X-KEY` and `EXT-X-MAP` apply to every following segment until the next one of their
//!   kind (`m3u8-rs` attaches them to the next segment only), and `METHOD=NONE` ends encryption
//!   (`m3u8-rs` leaves that tag unparsed when it has no IV);
//! - URIs are resolved against the playlist's own URL (after redirects).

use m3u8_rs::{KeyMethod, Playlist};
use url::Url;

use crate::manifest::{
    ByteRange, Encryption, HlsCue, InitRef, Manifest, ManifestError, ManifestFormat, MediaWindow,
    SegmentRef, Variant,
};

/// The longest target duration taken seriously: reloads are timed by it, and one hour between
/// reloads is already no monitoring.
pub const MAX_TARGET_DURATION: u64 = 3600;

/// The HLS [`ManifestFormat`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Hls;

impl ManifestFormat for Hls {
    fn parse_top(&self, bytes: &[u8], base: &Url) -> Result<Manifest, ManifestError> {
        match parse(bytes)? {
            Playlist::MasterPlaylist(m) => master(m, base).map(Manifest::Variants),
            Playlist::MediaPlaylist(m) => media(m, text(bytes)?, base).map(Manifest::Media),
        }
    }

    fn parse_media(
        &self,
        bytes: &[u8],
        base: &Url,
        _variant: &Variant,
    ) -> Result<MediaWindow, ManifestError> {
        match parse(bytes)? {
            Playlist::MediaPlaylist(m) => media(m, text(bytes)?, base),
            Playlist::MasterPlaylist(_) => {
                Err(err("a master playlist where a media playlist was expected"))
            }
        }
    }
}

fn err(msg: impl Into<String>) -> ManifestError {
    ManifestError(msg.into())
}

fn text(bytes: &[u8]) -> Result<&str, ManifestError> {
    std::str::from_utf8(bytes).map_err(|e| {
        err(format!(
            "not UTF-8 text (byte {}); not an HLS playlist",
            e.valid_up_to()
        ))
    })
}

fn parse(bytes: &[u8]) -> Result<Playlist, ManifestError> {
    let s = text(bytes)?;
    if !s.starts_with("#EXTM3U") {
        let first: String = s.lines().next().unwrap_or("").chars().take(40).collect();
        return Err(err(format!(
            "does not start with #EXTM3U (starts with {first:?}); not an HLS playlist"
        )));
    }
    m3u8_rs::parse_playlist_res(bytes).map_err(|e| {
        let rest = match &e {
            nom::Err::Error(e) | nom::Err::Failure(e) => e.input.len(),
            nom::Err::Incomplete(_) => 0,
        };
        let at = bytes.len().saturating_sub(rest);
        let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        err(format!("malformed playlist at line {line}"))
    })
}

fn join(base: &Url, uri: &str, what: &str) -> Result<Url, ManifestError> {
    if uri.trim().is_empty() {
        return Err(err(format!("{what}: no URI")));
    }
    let url = base
        .join(uri.trim())
        .map_err(|e| err(format!("{what}: bad URI {uri:?}: {e}")))?;
    // `low.m:u` is an absolute URI of scheme `low.m`: what the monitor cannot fetch is refused
    // here, with the playlist, rather than failing as a download later.
    match url.scheme() {
        "http" | "https" => Ok(url),
        s if s == base.scheme() => Ok(url),
        s => Err(err(format!(
            "{what}: URI {uri:?} has scheme {s:?}; expected http or https"
        ))),
    }
}

fn master(m: m3u8_rs::MasterPlaylist, base: &Url) -> Result<Vec<Variant>, ManifestError> {
    let mut out = Vec::new();
    for v in m.variants.into_iter().filter(|v| !v.is_i_frame) {
        let index = out.len();
        let name = v
            .other_attributes
            .as_ref()
            .and_then(|a| a.get("NAME"))
            .map(|n| n.as_str().to_owned())
            .unwrap_or_else(|| v.uri.clone());
        out.push(Variant {
            index,
            uri: join(base, &v.uri, &format!("variant {index}"))?,
            bandwidth: v.bandwidth,
            name,
            resolution: v.resolution.map(|r| format!("{}x{}", r.width, r.height)),
            id: None,
            captions: matches!(
                v.closed_captions,
                Some(m3u8_rs::ClosedCaptionGroupId::GroupId(_))
            ),
        });
    }
    if out.is_empty() {
        return Err(err("master playlist lists no variants"));
    }
    Ok(out)
}

fn media(m: m3u8_rs::MediaPlaylist, text: &str, base: &Url) -> Result<MediaWindow, ManifestError> {
    let tag_count = |tag: &str| {
        text.lines()
            .filter(|l| l.trim_start().starts_with(tag))
            .count()
    };
    if m.target_duration == 0 {
        return Err(err(if tag_count("#EXT-X-TARGETDURATION:") == 0 {
            "media playlist without EXT-X-TARGETDURATION"
        } else {
            "EXT-X-TARGETDURATION must be a positive integer"
        }));
    }
    if m.target_duration > MAX_TARGET_DURATION {
        return Err(err(format!(
            "EXT-X-TARGETDURATION {} s is beyond {MAX_TARGET_DURATION} s; not a live playlist",
            m.target_duration
        )));
    }
    let extinfs = tag_count("#EXTINF:");
    if extinfs != m.segments.len() {
        return Err(err(format!(
            "{} segment URIs but {extinfs} EXTINF tags (a stray line, or a segment without EXTINF)",
            m.segments.len()
        )));
    }
    let mut encryption = Encryption::None;
    let mut init: Option<InitRef> = None;
    // The end of the previous byte range, for EXT-X-BYTERANGE without an offset.
    let mut prev_range_end: Option<(Url, u64)> = None;
    let mut segments = Vec::with_capacity(m.segments.len());
    for (i, s) in m.segments.into_iter().enumerate() {
        let sequence = m.media_sequence.saturating_add(i as u64);
        let what = format!("segment {sequence}");
        for t in &s.unknown_tags {
            match (t.tag.as_str(), t.rest.as_deref().unwrap_or("")) {
                ("X-KEY", rest) if rest.contains("METHOD=NONE") => encryption = Encryption::None,
                ("X-KEY", rest) => return Err(err(format!("malformed EXT-X-KEY:{rest}"))),
                ("X-MAP", rest) => return Err(err(format!("malformed EXT-X-MAP:{rest}"))),
                _ => {}
            }
        }
        if let Some(k) = &s.key {
            encryption = key(k, base, &what)?;
        }
        if let Some(map) = &s.map {
            init = Some(InitRef {
                uri: join(base, &map.uri, &format!("{what} EXT-X-MAP"))?,
                range: map.byte_range.as_ref().map(|r| ByteRange {
                    offset: r.offset.unwrap_or(0),
                    length: r.length,
                }),
            });
        }
        let uri = join(base, &s.uri, &what)?;
        let range = match &s.byte_range {
            None => None,
            Some(r) => {
                let offset = match (r.offset, &prev_range_end) {
                    (Some(o), _) => o,
                    (None, Some((u, end))) if *u == uri => *end,
                    (None, _) => {
                        return Err(err(format!(
                            "{what}: EXT-X-BYTERANGE without an offset, and the previous segment \
                             is not a range of the same resource"
                        )))
                    }
                };
                prev_range_end = Some((uri.clone(), offset.saturating_add(r.length)));
                Some(ByteRange {
                    offset,
                    length: r.length,
                })
            }
        };
        let duration = f64::from(s.duration);
        if !duration.is_finite() {
            return Err(err(format!("{what}: EXTINF is not a number")));
        }
        segments.push(SegmentRef {
            sequence,
            uri,
            duration,
            discontinuity: s.discontinuity,
            range,
            encryption: encryption.clone(),
            init: init.clone(),
            cue: cue(&s),
            gap_before_s: None,
            presentation_s: None,
        });
    }
    Ok(MediaWindow {
        target_duration: m.target_duration as f64,
        first_sequence: m.media_sequence,
        segments,
        ended: m.end_list,
        doc: None,
    })
}

/// The ad cue signalled at a segment: `EXT-X-CUE-OUT[:DURATION]` / `EXT-X-CUE-IN` (the common
/// SCTE 35 mapping of packagers), or an `EXT-X-DATERANGE` carrying `SCTE35-OUT`, `SCTE35-IN` or
/// `SCTE35-CMD` (RFC 8216, 4.3.2.7.1). `EXT-X-CUE-OUT-CONT` only repeats an avail in progress.
fn cue(s: &m3u8_rs::MediaSegment) -> Option<HlsCue> {
    if let Some(d) = &s.daterange {
        let attrs = d.other_attributes.as_ref();
        let hex = |name: &str| {
            attrs
                .and_then(|a| a.get(name))
                .map(|v| {
                    v.as_str()
                        .trim_start_matches("0x")
                        .trim_start_matches("0X")
                        .to_owned()
                })
                .and_then(|h| unhex(&h))
        };
        let (out, section) = match (hex("SCTE35-OUT"), hex("SCTE35-IN"), hex("SCTE35-CMD")) {
            (Some(o), _, _) => (true, Some(o)),
            (None, Some(i), _) => (false, Some(i)),
            (None, None, Some(c)) => (false, Some(c)),
            (None, None, None) => return None,
        };
        return Some(HlsCue {
            tag: "EXT-X-DATERANGE",
            out,
            duration: d.planned_duration.or(d.duration),
            id: Some(d.id.clone()),
            scte35: section,
        });
    }
    for t in &s.unknown_tags {
        match t.tag.as_str() {
            "X-CUE-OUT" => {
                let rest = t.rest.as_deref().unwrap_or("");
                let v = rest.trim().trim_start_matches("DURATION=");
                return Some(HlsCue {
                    tag: "EXT-X-CUE-OUT",
                    out: true,
                    duration: v.parse().ok().filter(|d: &f64| d.is_finite() && *d >= 0.0),
                    id: None,
                    scte35: None,
                });
            }
            "X-CUE-IN" => {
                return Some(HlsCue {
                    tag: "EXT-X-CUE-IN",
                    out: false,
                    duration: None,
                    id: None,
                    scte35: None,
                })
            }
            _ => {}
        }
    }
    None
}

fn unhex(h: &str) -> Option<Vec<u8>> {
    if h.len() % 2 != 0 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).ok())
        .collect()
}

fn key(k: &m3u8_rs::Key, base: &Url, what: &str) -> Result<Encryption, ManifestError> {
    Ok(match &k.method {
        KeyMethod::None => Encryption::None,
        KeyMethod::AES128 => {
            let uri = k
                .uri
                .as_deref()
                .ok_or_else(|| err(format!("{what}: EXT-X-KEY METHOD=AES-128 without URI")))?;
            let iv = match &k.iv {
                Some(iv) => Some(parse_iv(iv).ok_or_else(|| {
                    err(format!(
                        "{what}: EXT-X-KEY IV must be 0x and up to 32 hex digits (got {iv:?})"
                    ))
                })?),
                None => None,
            };
            Encryption::Aes128 {
                key_uri: join(base, uri, &format!("{what} key"))?,
                iv,
            }
        }
        KeyMethod::SampleAES => Encryption::Samples("SAMPLE-AES".into()),
        KeyMethod::Other(m) => Encryption::Samples(m.clone()),
    })
}

/// `0x` and up to 32 hex digits, as a big-endian 128-bit number.
fn parse_iv(s: &str) -> Option<[u8; 16]> {
    let hex = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    if hex.is_empty() || hex.len() > 32 {
        return None;
    }
    u128::from_str_radix(hex, 16).ok().map(u128::to_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("http://origin.test/live/chan/index.m3u8").unwrap()
    }

    fn window(s: &str) -> Result<MediaWindow, ManifestError> {
        match Hls.parse_top(s.as_bytes(), &base())? {
            Manifest::Media(w) => Ok(w),
            Manifest::Variants(_) => panic!("a master playlist"),
        }
    }

    const LIVE: &str = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n\
        #EXT-X-MEDIA-SEQUENCE:41\n#EXTINF:2.000,\nseg41.ts\n#EXTINF:1.960,\nseg42.ts\n\
        #EXT-X-DISCONTINUITY\n#EXTINF:2.0,\nhttp://cdn.test/seg43.ts\n";

    #[test]
    fn media_playlist_numbers_resolves_and_marks_segments() {
        let w = window(LIVE).unwrap();
        assert_eq!(w.target_duration, 2.0);
        assert_eq!(w.first_sequence, 41);
        assert!(!w.ended);
        let seqs: Vec<u64> = w.segments.iter().map(|s| s.sequence).collect();
        assert_eq!(seqs, [41, 42, 43]);
        assert_eq!(
            w.segments[0].uri.as_str(),
            "http://origin.test/live/chan/seg41.ts"
        );
        assert_eq!(w.segments[2].uri.as_str(), "http://cdn.test/seg43.ts");
        assert!((w.segments[1].duration - 1.96).abs() < 1e-6);
        assert_eq!(
            w.segments
                .iter()
                .map(|s| s.discontinuity)
                .collect::<Vec<_>>(),
            [false, false, true]
        );
        assert_eq!(w.last_sequence(), Some(43));
        assert!(window(&format!("{LIVE}#EXT-X-ENDLIST\n")).unwrap().ended);
    }

    #[test]
    fn keys_and_maps_carry_forward_until_replaced() {
        let w = window(
            "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:7\n\
             #EXT-X-MAP:URI=\"init.mp4\"\n\
             #EXT-X-KEY:METHOD=AES-128,URI=\"https://keys.test/k1\"\n#EXTINF:4,\na.m4s\n\
             #EXTINF:4,\nb.m4s\n\
             #EXT-X-KEY:METHOD=AES-128,URI=\"k2\",IV=0x0102\n#EXTINF:4,\nc.m4s\n\
             #EXT-X-KEY:METHOD=NONE\n#EXTINF:4,\nd.m4s\n\
             #EXT-X-KEY:METHOD=SAMPLE-AES,URI=\"k3\",IV=0x1\n#EXTINF:4,\ne.m4s\n",
        )
        .unwrap();
        let k1 = Encryption::Aes128 {
            key_uri: Url::parse("https://keys.test/k1").unwrap(),
            iv: None,
        };
        assert_eq!(w.segments[0].encryption, k1);
        assert_eq!(w.segments[1].encryption, k1);
        let mut iv = [0u8; 16];
        iv[14] = 1;
        iv[15] = 2;
        assert_eq!(
            w.segments[2].encryption,
            Encryption::Aes128 {
                key_uri: Url::parse("http://origin.test/live/chan/k2").unwrap(),
                iv: Some(iv)
            }
        );
        assert_eq!(w.segments[3].encryption, Encryption::None);
        assert_eq!(
            w.segments[4].encryption,
            Encryption::Samples("SAMPLE-AES".into())
        );
        for s in &w.segments {
            assert_eq!(
                s.init.as_ref().unwrap().uri.as_str(),
                "http://origin.test/live/chan/init.mp4"
            );
        }
    }

    #[test]
    fn byte_ranges_without_offset_follow_the_previous_range() {
        let w = window(
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-BYTERANGE:1000@500\n#EXTINF:1,\nall.ts\n\
             #EXT-X-BYTERANGE:300\n#EXTINF:1,\nall.ts\n",
        )
        .unwrap();
        assert_eq!(
            w.segments[0].range,
            Some(ByteRange {
                offset: 500,
                length: 1000
            })
        );
        assert_eq!(
            w.segments[1].range,
            Some(ByteRange {
                offset: 1500,
                length: 300
            })
        );
        let e =
            window("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-BYTERANGE:300\n#EXTINF:1,\nall.ts\n")
                .unwrap_err();
        assert!(e.0.contains("without an offset"), "{e}");
    }

    #[test]
    fn master_playlist_lists_variants_with_names_and_skips_iframe_streams() {
        let m = Hls
            .parse_top(
                b"#EXTM3U\n\
                  #EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360,NAME=\"low\"\nlow/index.m3u8\n\
                  #EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=90000,URI=\"iframes.m3u8\"\n\
                  #EXT-X-STREAM-INF:BANDWIDTH=2500000,RESOLUTION=1280x720\nhttps://cdn.test/hd.m3u8\n",
                &base(),
            )
            .unwrap();
        let Manifest::Variants(v) = m else {
            panic!("not a master playlist")
        };
        assert_eq!(v.len(), 2);
        assert_eq!((v[0].index, v[0].bandwidth), (0, 800_000));
        assert_eq!(v[0].name, "low");
        assert_eq!(
            v[0].uri.as_str(),
            "http://origin.test/live/chan/low/index.m3u8"
        );
        assert_eq!(v[0].resolution.as_deref(), Some("640x360"));
        assert_eq!(
            (v[1].index, v[1].name.as_str()),
            (1, "https://cdn.test/hd.m3u8")
        );
    }

    #[test]
    fn malformed_playlists_are_refused_with_a_reason() {
        let cases: [(&[u8], &str); 9] = [
            (b"", "does not start with #EXTM3U"),
            (b"<html><body>502 Bad Gateway</body></html>", "does not start with #EXTM3U"),
            (b"#EXTM3U\n\xff\xfe\x00garbage", "not UTF-8"),
            (b"#EXTM3U\n#EXTINF:1,\na.ts\n", "without EXT-X-TARGETDURATION"),
            (b"#EXTM3U\n#EXT-X-TARGETDURATION:x\n#EXTINF:1,\na.ts\n", "positive integer"),
            (b"#EXTM3U\n#EXT-X-TARGETDURATION:2\nhello world\n", "EXTINF"),
            (b"#EXTM3U\n#EXT-X-TARGETDURATION:18446744073709551615\n", "beyond 3600 s"),
            (b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-KEY:URI=\"k\"\n#EXTINF:1,\na.ts\n", "malformed EXT-X-KEY"),
            (b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-KEY:METHOD=AES-128,URI=\"k\",IV=0xZZ\n#EXTINF:1,\na.ts\n", "IV must be"),
        ];
        for (input, want) in cases {
            let e = Hls.parse_top(input, &base()).unwrap_err();
            assert!(e.0.contains(want), "{input:?}: {e}");
        }
        let e = Hls
            .parse_top(b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n", &base())
            .unwrap_err();
        assert_eq!(e.0, "variant 0: no URI");
        let e = Hls
            .parse_media(
                b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv.m3u8\n",
                &base(),
                &Variant {
                    index: 0,
                    uri: base(),
                    bandwidth: 0,
                    name: String::new(),
                    resolution: None,
                    id: None,
                    captions: false,
                },
            )
            .unwrap_err();
        assert!(e.0.contains("master playlist where"), "{e}");
    }

    /// Hostile input (random bytes, and a valid playlist with bytes flipped, cut or repeated) is
    /// parsed or refused, never a panic. A cheap stand-in for a fuzzer that runs with every test.
    #[test]
    fn mutated_and_random_input_never_panics() {
        let mut rnd = crate::xorshift(0x2545_f491_4f6c_dd1du64);
        let seeds: [&[u8]; 2] = [
            LIVE.as_bytes(),
            b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360\nlow.m3u8\n",
        ];
        let (mut refused, mut masters, mut media) = (0, 0, 0);
        for i in 0..20_000 {
            let mut b = seeds[i % 2].to_vec();
            match rnd() % 4 {
                0 => {
                    let n = (rnd() % 64) as usize;
                    b = (0..n).map(|_| rnd() as u8).collect();
                    b.splice(0..0, b"#EXTM3U\n".iter().copied());
                }
                1 => {
                    for _ in 0..1 + rnd() % 4 {
                        let at = (rnd() as usize) % b.len();
                        const BYTES: &[u8] = b"#:,=\"\n\r0x@-AZ9\xff";
                        b[at] = BYTES[(rnd() as usize) % BYTES.len()];
                    }
                }
                2 => b.truncate((rnd() as usize) % b.len()),
                _ => {
                    let at = (rnd() as usize) % b.len();
                    let tail = b[at..].to_vec();
                    b.extend_from_slice(&tail);
                }
            }
            match Hls.parse_top(&b, &base()) {
                Err(e) => {
                    assert!(!e.0.is_empty() && !e.0.contains('\n'), "{:?}", e.0);
                    refused += 1;
                }
                Ok(Manifest::Variants(v)) => {
                    assert!(!v.is_empty(), "a master without variants is refused");
                    for (k, variant) in v.iter().enumerate() {
                        assert_eq!(variant.index, k);
                        assert!(
                            matches!(variant.uri.scheme(), "http" | "https"),
                            "{variant:?}"
                        );
                    }
                    masters += 1;
                }
                Ok(Manifest::Media(w)) => {
                    assert!(
                        w.target_duration.is_finite() && w.target_duration >= 0.0,
                        "{w:?}"
                    );
                    for (k, seg) in w.segments.iter().enumerate() {
                        assert!(seg.duration.is_finite() && seg.duration >= 0.0, "{seg:?}");
                        let want = w.first_sequence.checked_add(k as u64);
                        assert_eq!(Some(seg.sequence), want, "numbered in order: {w:?}");
                    }
                    media += 1;
                }
            }
        }
        // Every outcome was reached, many times.
        assert!(
            refused > 1000 && masters > 1000 && media > 1000,
            "{refused} {masters} {media}"
        );
    }

    #[test]
    fn a_uri_the_monitor_cannot_fetch_is_refused_with_the_playlist() {
        for uri in [
            "ftp://origin.test/low.m3u8",
            "low.m:u",
            "file:///etc/passwd",
        ] {
            let text = format!("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\n{uri}\n");
            let e = Hls.parse_top(text.as_bytes(), &base()).unwrap_err().0;
            assert!(
                e.starts_with("variant 0: URI") && e.contains("expected http"),
                "{e}"
            );
        }
    }

    /// The two ways packagers signal ad breaks: `EXT-X-CUE-OUT`/`-IN`, and `EXT-X-DATERANGE`
    /// with the SCTE 35 section itself (SCTE 35's §14.1 example as `SCTE35-OUT`).
    #[test]
    fn ad_cues_are_read_from_cue_tags_and_dateranges() {
        let w = window(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n\
             #EXTINF:2.0,\ns7.ts\n\
             #EXT-X-CUE-OUT:DURATION=30\n#EXTINF:2.0,\ns8.ts\n\
             #EXT-X-CUE-OUT-CONT:ElapsedTime=2,Duration=30\n#EXTINF:2.0,\ns9.ts\n\
             #EXT-X-CUE-IN\n#EXTINF:2.0,\ns10.ts\n\
             #EXT-X-DATERANGE:ID=\"splice-1207959695\",START-DATE=\"2026-12-07T10:00:00Z\",\
             PLANNED-DURATION=60.3,SCTE35-OUT=0xFC302F000000000000FFFFF014054800008F7FEFFE7369C02EFE0052CCF500000000000A0008435545490000013562DBA30A\n\
             #EXTINF:2.0,\ns11.ts\n",
        )
        .unwrap();
        let cues: Vec<Option<&HlsCue>> = w.segments.iter().map(|s| s.cue.as_ref()).collect();
        assert_eq!(cues[0], None);
        let out = cues[1].unwrap();
        assert_eq!(
            (out.tag, out.out, out.duration),
            ("EXT-X-CUE-OUT", true, Some(30.0))
        );
        assert_eq!(cues[2], None, "a continuation is no new cue");
        assert_eq!(
            cues[3].map(|c| (c.tag, c.out)),
            Some(("EXT-X-CUE-IN", false))
        );
        let dr = cues[4].unwrap();
        assert_eq!(
            (dr.tag, dr.out, dr.duration),
            ("EXT-X-DATERANGE", true, Some(60.3))
        );
        assert_eq!(dr.id.as_deref(), Some("splice-1207959695"));
        let info = avmon_transport::scte35::parse(dr.scte35.as_ref().unwrap()).unwrap();
        assert_eq!(info.command.name(), "splice_insert");
    }

    #[test]
    fn iv_is_big_endian_and_bounded() {
        assert_eq!(parse_iv("0x1").unwrap()[15], 1);
        assert_eq!(parse_iv("0X").map(|_| ()), None);
        assert_eq!(parse_iv(&format!("0x{}", "f".repeat(32))), Some([0xff; 16]));
        assert_eq!(parse_iv(&format!("0x{}", "f".repeat(33))), None);
        assert_eq!(parse_iv("12"), None);
    }
}
