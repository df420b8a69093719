//! Arbitrary bytes as HLS playlists through avmon-hls's parsing and the checks that consume
//! each parsed window, as the monitor drives them.
//!
//! The input is split at NUL bytes (no playlist contains one): the first part is the top-level
//! document (`parse_top`: a master or a media playlist), every part is then a reload of the
//! variant's media playlist (`parse_media`), one second of wall time apart, fed to
//! [`Checks::on_window`] (sequence, skip, restart, stale and target-duration rules). Each
//! planned segment is then accepted or failed, slow or not, as the input's bytes decide. A
//! refused document goes to `on_reload_failed`, as the monitor does. What must hold:
//!
//! - no panic (avmon-hls's contract: bad input is refused with a reason);
//! - a refusal's reason is one line;
//! - every count in `VariantStats` is monotonic, and media time stays finite and never goes
//!   backwards, nor do the planned segments' start times or the findings' times.

#![no_main]

use avmon_core::Findings;
use avmon_hls::checks::Checks;
use avmon_hls::{Hls, Manifest, ManifestFormat, MediaWindow, Variant};
use libfuzzer_sys::fuzz_target;
use url::Url;

/// Feed one parsed window (or a refusal) to the checks and check what they make of it.
fn reload(c: &mut Checks, w: Result<MediaWindow, String>, now: f64, decide: u8) {
    let before = c.stats.counts();
    let t0 = c.media_t;
    let mut out = Findings::new();
    match w {
        Ok(w) => {
            let r = c.on_window(&w, now, &mut out);
            let mut prev = t0;
            for (i, p) in r.planned.iter().enumerate() {
                assert!(
                    p.start_t >= prev,
                    "segment starts went backwards: {prev} -> {}",
                    p.start_t
                );
                prev = p.start_t;
                let bit = (decide >> (i % 8)) & 1 == 1;
                if bit && i % 3 == 0 {
                    c.on_segment_failed(p, "fuzz", Some(404), &mut out);
                } else {
                    let slow = if bit { p.seg.duration * 2.0 } else { 0.1 };
                    c.on_segment_ok(p, 1000, slow, &mut out);
                }
            }
        }
        Err(e) => {
            assert!(!e.contains('\n'), "a reason on more than one line: {e:?}");
            c.on_reload_failed(now, &e, &mut out);
        }
    }
    if let Err(e) = c.moved_forward(&before, t0, &out) {
        panic!("{e}");
    }
}

fuzz_target!(|data: &[u8]| {
    let base = Url::parse("http://origin.test/live/index.m3u8").unwrap();
    let mut parts = data.split(|&b| b == 0);
    let top = parts.next().unwrap_or_default();
    let variant = match Hls.parse_top(top, &base) {
        Ok(Manifest::Variants(v)) => v.into_iter().next().unwrap(),
        Ok(Manifest::Media(_)) | Err(_) => Variant {
            index: 0,
            uri: base.clone(),
            bandwidth: 0,
            name: "fuzz".into(),
            resolution: None,
            id: None,
            captions: false,
        },
    };
    let mut checks = Checks::new(3.0, variant.name.clone(), 0.0);
    let mut now = 0.0;
    for (i, part) in data.split(|&b| b == 0).enumerate().take(64) {
        now += 1.0;
        let w = Hls
            .parse_media(part, &variant.uri, &variant)
            .map_err(|e| e.0);
        reload(&mut checks, w, now, data.get(i).copied().unwrap_or(0));
    }
});
