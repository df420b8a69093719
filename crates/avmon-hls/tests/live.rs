//! The monitor against a real origin: nginx serving a playlist that FFmpeg's HLS muxer writes
//! in real time. The origin is made to stall and to answer 404 for one segment, and the findings
//! must be raised and cleared; a healthy stream must give none.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use avmon_core::{kinds, FindingEdge};
use avmon_hls::{Hls, HlsConfig, HlsError, VariantSelector, VariantStats};
use common::{wait_for, Nginx, Recorder, Writer};

/// Monitor the single variant `url` names on a thread, recording into the returned sink.
fn spawn_monitor(
    url: String,
) -> (
    Arc<AtomicBool>,
    Recorder,
    JoinHandle<Result<VariantStats, HlsError>>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let rec = Recorder::default();
    let mut monitors =
        avmon_hls::resolve(&HlsConfig::new(url), Arc::new(Hls), stop.clone()).unwrap();
    assert_eq!(monitors.len(), 1);
    let m = monitors.pop().unwrap();
    let mut sink = rec.clone();
    (stop, rec, std::thread::spawn(move || m.run(&mut sink)))
}

/// nginx (with `locations`) serving a live playlist FFmpeg is writing, once it has one.
fn live_origin(locations: &str) -> (Nginx, Writer) {
    let nginx = Nginx::start(locations);
    let writer = Writer::start(&nginx.root, "");
    let playlist = nginx.root.join("live.m3u8");
    assert!(
        wait_for(Duration::from_secs(10), || playlist.exists()),
        "ffmpeg wrote no playlist"
    );
    (nginx, writer)
}

#[test]
fn a_healthy_live_stream_gives_no_findings_and_every_segment_in_order() {
    let (nginx, _writer) = live_origin("");
    std::fs::write(
        nginx.root.join("master.m3u8"),
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=900000,RESOLUTION=320x240,NAME=\"main\"\nlive.m3u8\n\
         #EXT-X-STREAM-INF:BANDWIDTH=300000,RESOLUTION=160x120\nlive.m3u8?rendition=low\n",
    )
    .unwrap();
    let mut cfg = HlsConfig::new(nginx.url("master.m3u8"));

    // Choosing by name gives that variant alone; by default every variant is monitored.
    cfg.variants = vec![VariantSelector::Name("main".into())];
    let chosen = avmon_hls::resolve(&cfg, Arc::new(Hls), Arc::new(AtomicBool::new(false))).unwrap();
    assert_eq!(chosen.len(), 1);
    assert_eq!(chosen[0].variant().bandwidth, 900_000);
    cfg.variants.clear();

    let stop = Arc::new(AtomicBool::new(false));
    let stopper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(6));
            stop.store(true, Ordering::Relaxed);
        })
    };
    let results = avmon_hls::run_all(&cfg, stop, |_| Recorder::default()).unwrap();
    stopper.join().unwrap();
    assert_eq!(results.len(), 2);
    for run in results {
        let (variant, rec, stats) = (run.variant, run.sink, run.result.unwrap());
        let log = rec.log();
        let findings: Vec<_> = log.findings.iter().map(|(_, f)| f).collect();
        assert!(
            findings.is_empty(),
            "variant {}: {findings:?}",
            variant.index
        );
        let segs: Vec<_> = log.segments.iter().map(|(_, s)| s).collect();
        assert!(
            segs.len() >= 5,
            "variant {}: {} segments in 6 s",
            variant.index,
            segs.len()
        );
        for w in segs.windows(2) {
            assert_eq!(w[1].sequence, w[0].sequence + 1, "in order, none missing");
            assert!(
                (w[1].start_t - (w[0].start_t + w[0].duration)).abs() < 1e-6,
                "media time is the sum of EXTINF"
            );
            assert!(!w[1].discontinuity && !w[1].after_gap);
        }
        // Reloaded about once per target duration (1 s), twice as often while unchanged.
        assert!(
            (4..=14).contains(&stats.reloads),
            "{} reloads in 6 s",
            stats.reloads
        );
        assert_eq!(stats.segments as usize, segs.len());
        assert_eq!((stats.segment_errors, stats.reload_errors), (0, 0));
        // 320x240 ultrafast H.264 + 64 kbit/s AAC: a few hundred kbit/s to a few Mbit/s.
        let bitrate = stats.bitrate_bps().unwrap();
        assert!((100e3..5e6).contains(&bitrate), "bitrate {bitrate}");
        let bytes: usize = segs.iter().map(|s| s.bytes.len()).sum();
        let secs: f64 = segs.iter().map(|s| s.duration).sum();
        assert!((bitrate - bytes as f64 * 8.0 / secs).abs() < 1.0);
        assert!(segs
            .iter()
            .all(|s| s.bitrate_bps > 0.0 && s.download_s < 0.5));
        assert!(
            stats.download_s_max < 0.5,
            "loopback downloads take {} s",
            stats.download_s_max
        );
        eprintln!(
            "variant {}: {} segments, {} reloads, {:.0} kbit/s, download mean {:.4} s max {:.4} s",
            variant.index,
            stats.segments,
            stats.reloads,
            bitrate / 1e3,
            stats.download_s_mean().unwrap(),
            stats.download_s_max
        );
    }
}

#[test]
fn a_stalled_playlist_is_stale_within_four_target_durations_and_clears_when_it_moves() {
    let (nginx, writer) = live_origin("");
    let (stop, rec, handle) = spawn_monitor(nginx.url("live.m3u8"));
    assert!(wait_for(Duration::from_secs(10), || rec
        .log()
        .segments
        .len()
        >= 2));

    writer.kill();
    let killed = Instant::now();
    let (raised, begin) = rec
        .wait_finding(kinds::HLS_STALE, FindingEdge::Begin, Duration::from_secs(8))
        .expect("no hls.stale after the writer died");
    let after = (raised - killed).as_secs_f64();
    // The last update came at most one segment (1 s) before the kill; the limit is 3 x 1 s,
    // checked every half target duration.
    assert!(
        (2.0..=4.5).contains(&after),
        "stale raised {after:.2} s after the writer died"
    );
    eprintln!("hls.stale raised {after:.2} s after the writer died");
    // Over the limit (rounded to the millisecond).
    assert!(
        begin.details["unchanged_s"].as_f64().unwrap() >= 3.0,
        "{begin:?}"
    );
    assert!(rec
        .log()
        .first(kinds::HLS_STALE, FindingEdge::End)
        .is_none());

    // The packager comes back and appends to the same playlist.
    let _writer = Writer::start(&nginx.root, "+append_list");
    let restarted = Instant::now();
    let (cleared, end) = rec
        .wait_finding(kinds::HLS_STALE, FindingEdge::End, Duration::from_secs(8))
        .expect("hls.stale not cleared after the writer came back");
    let clear_after = (cleared - restarted).as_secs_f64();
    assert!(clear_after < 5.0);
    eprintln!("hls.stale cleared {clear_after:.2} s after the writer came back");
    assert!(end.details["stale_s"].as_f64().unwrap() > 0.0);
    // FFmpeg marks the appended part with EXT-X-DISCONTINUITY; the numbering goes on.
    assert!(wait_for(Duration::from_secs(4), || {
        rec.log()
            .segments
            .iter()
            .any(|(t, s)| *t > cleared && s.discontinuity)
    }));
    stop.store(true, Ordering::Relaxed);
    let stats = handle.join().unwrap().unwrap();
    let log = rec.log();
    assert_eq!(log.count(kinds::HLS_STALE, FindingEdge::Begin), 1);
    assert_eq!(log.count(kinds::HLS_DISCONTINUITY, FindingEdge::Begin), 1);
    assert_eq!(
        log.count(kinds::HLS_SEQUENCE_ERROR, FindingEdge::Begin),
        0,
        "{:?}",
        log.findings
    );
    assert_eq!(
        log.count(kinds::HLS_SEGMENT_ERROR, FindingEdge::Begin),
        0,
        "{:?}",
        log.findings
    );
    assert_eq!((stats.stale_events, stats.discontinuities), (1, 1));
}

#[test]
fn a_missing_segment_is_a_segment_error_cleared_by_the_next_one() {
    let (nginx, _writer) = live_origin("location = /seg00004.ts { return 404; }");
    let (stop, rec, handle) = spawn_monitor(nginx.url("live.m3u8"));
    let cleared = rec.wait_finding(
        kinds::HLS_SEGMENT_ERROR,
        FindingEdge::End,
        Duration::from_secs(12),
    );
    assert!(
        cleared.is_some(),
        "no hls.segment_error raised and cleared: {:?}",
        rec.log().findings
    );
    stop.store(true, Ordering::Relaxed);
    let stats = handle.join().unwrap().unwrap();
    let log = rec.log();
    let (_, begin) = log
        .first(kinds::HLS_SEGMENT_ERROR, FindingEdge::Begin)
        .unwrap();
    assert_eq!(begin.details["sequence"], 4);
    assert_eq!(begin.details["status"], 404);
    assert_eq!(begin.details["reason"], "HTTP 404");
    assert_eq!(log.count(kinds::HLS_SEGMENT_ERROR, FindingEdge::Begin), 1);
    let (_, end) = cleared.unwrap();
    let seqs: Vec<u64> = log.segments.iter().map(|(_, s)| s.sequence).collect();
    assert!(
        !seqs.contains(&4) && seqs.contains(&3) && seqs.contains(&5),
        "{seqs:?}"
    );
    let (_, five) = log.segments.iter().find(|(_, s)| s.sequence == 5).unwrap();
    // The error spans segment 4's media: from its start to the start of 5, the next good one.
    assert_eq!(end.t, five.start_t);
    assert!(
        (end.t - begin.t - 1.0).abs() < 1e-6,
        "{} .. {}",
        begin.t,
        end.t
    );
    assert!(five.after_gap, "the bytes of 4 are missing before 5");
    assert_eq!(stats.segment_errors, 1);
}
