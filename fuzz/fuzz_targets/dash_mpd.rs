//! Arbitrary bytes as DASH MPDs through avmon-hls's DASH format and the checks that consume
//! each window, as the monitor drives them; and as MP4 boxes through the joining of a video
//! and an audio Representation.
//!
//! The input is split at NUL bytes (no MPD contains one): the first part is the top-level
//! document (`parse_top`), every part is then a reload of the MPD for the first variant
//! (`parse_media`), one second of wall time apart (the clock starts at the Unix time the first
//! byte picks, so live windows land anywhere), fed to [`Checks::on_window`]. The last part is
//! also taken as an initialisation section and a media segment (`fmp4::merge_init`,
//! `fmp4::retrack`). What must hold:
//!
//! - no panic (bad input is refused with a reason), and a refusal's reason is one line;
//! - a window never holds more than `MAX_SEGMENTS` segments, its sequence numbers increase;
//! - the checks' counts are monotonic and media time never goes backwards;
//! - renumbering a segment never changes its length.

#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use avmon_core::Findings;
use avmon_hls::checks::{Checks, DASH_KINDS};
use avmon_hls::dash::MAX_SEGMENTS;
use avmon_hls::{fmp4, Dash, Manifest, ManifestFormat, Variant};
use libfuzzer_sys::fuzz_target;
use url::Url;

fuzz_target!(|data: &[u8]| {
    let base = Url::parse("http://origin.test/live/live.mpd").unwrap();
    // 3 s after the seeds' availabilityStartTime (2020-09-13T12:26:40Z).
    let start = 1_600_000_003;
    let clock = Arc::new(AtomicU64::new(start));
    let now = clock.clone();
    let dash = Dash::with_clock(move || now.load(Ordering::Relaxed) as f64);
    let mut parts = data.split(|&b| b == 0);
    let top = parts.next().unwrap_or_default();
    let variant = match dash.parse_top(top, &base) {
        Ok(Manifest::Variants(v)) => v.into_iter().next().unwrap(),
        Ok(Manifest::Media(_)) => panic!("an MPD is never a media window"),
        Err(e) => {
            assert!(!e.0.contains('\n'), "a reason on more than one line: {e:?}");
            Variant {
                index: 0,
                uri: base.clone(),
                bandwidth: 0,
                name: "video/0".into(),
                resolution: None,
                id: Some("0".into()),
                captions: false,
            }
        }
    };
    let mut checks = Checks::new(3.0, variant.name.clone(), 0.0).with_kinds(&DASH_KINDS);
    let mut last = &[][..];
    for (i, part) in data.split(|&b| b == 0).enumerate().take(32) {
        last = part;
        clock.fetch_add(1, Ordering::Relaxed);
        let wall = i as f64 + 1.0;
        let before = checks.stats.counts();
        let t0 = checks.media_t;
        let mut out = Findings::new();
        match dash.parse_media(part, &variant.uri, &variant) {
            Ok(w) => {
                assert!(w.segments.len() <= MAX_SEGMENTS, "{} segments", w.segments.len());
                assert!(
                    w.segments.windows(2).all(|s| s[0].sequence < s[1].sequence),
                    "sequence numbers not increasing"
                );
                let r = checks.on_window(&w, wall, &mut out);
                for (j, p) in r.planned.iter().enumerate() {
                    if (data.get(j).copied().unwrap_or(0) & 1) == 1 {
                        checks.on_segment_failed(p, "fuzz", Some(404), &mut out);
                    } else {
                        checks.on_segment_ok(p, 1000, 0.1, &mut out);
                    }
                }
            }
            Err(e) => {
                assert!(!e.0.contains('\n'), "a reason on more than one line: {e:?}");
                checks.on_reload_failed(wall, &e.0, &mut out);
            }
        }
        if let Err(e) = checks.moved_forward(&before, t0, &out) {
            panic!("{e}");
        }
    }
    let _ = fmp4::merge_init(last, last);
    let mut seg = last.to_vec();
    let _ = fmp4::retrack(&mut seg, 2);
    assert_eq!(seg.len(), last.len());
});
