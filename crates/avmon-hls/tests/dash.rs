//! The DASH monitor against a real origin: nginx serving the MPD and segments that FFmpeg's
//! `dash` muxer writes in real time (a `SegmentTimeline`, or a template with `@duration`). The
//! packager is stalled, restarted and made to lose a segment; a healthy stream must give no
//! finding, and every segment in order.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use avmon_core::{kinds, FindingEdge};
use avmon_hls::{HlsConfig, VariantRun, VariantSelector};
use common::{wait_for, DashWriter, Nginx, Recorder};

/// nginx (with `locations`) serving a live MPD FFmpeg is writing (with `args`), once it has
/// one.
fn live_origin(locations: &str, args: &[&str]) -> (Nginx, DashWriter) {
    let nginx = Nginx::start(locations);
    let writer = DashWriter::start(&nginx.root, args);
    let mpd = nginx.root.join("live.mpd");
    assert!(
        wait_for(Duration::from_secs(10), || mpd.exists()),
        "ffmpeg wrote no MPD"
    );
    (nginx, writer)
}

/// Monitor every Representation of `cfg` on threads until `stop`.
fn monitor(
    cfg: HlsConfig,
    stop: Arc<AtomicBool>,
) -> (
    Vec<Recorder>,
    std::thread::JoinHandle<Vec<VariantRun<Recorder>>>,
) {
    let monitors = avmon_hls::resolve(&cfg, cfg.format(), stop).unwrap();
    let recs: Vec<Recorder> = monitors.iter().map(|_| Recorder::default()).collect();
    let sinks = recs.clone();
    let h = std::thread::spawn(move || {
        let mut sinks = sinks.into_iter();
        avmon_hls::run_monitors(monitors, |_| sinks.next().unwrap())
    });
    (recs, h)
}

/// Every accepted segment follows the one before it: sequence + 1, media time adding up.
fn assert_in_order(rec: &Recorder, what: &str) {
    let log = rec.log();
    for w in log.segments.windows(2) {
        let (a, b) = (&w[0].1, &w[1].1);
        assert_eq!(
            b.sequence,
            a.sequence + 1,
            "{what}: {} then {}",
            a.sequence,
            b.sequence
        );
        assert!(
            (b.start_t - (a.start_t + a.duration)).abs() < 1e-6,
            "{what}: media time {} + {} then {}",
            a.start_t,
            a.duration,
            b.start_t
        );
    }
}

fn findings(rec: &Recorder) -> Vec<(String, FindingEdge)> {
    rec.log()
        .findings
        .iter()
        .map(|(_, f)| (f.kind.to_owned(), f.edge))
        .collect()
}

#[test]
fn a_live_timeline_is_followed_every_representation_without_findings() {
    let (nginx, _writer) = live_origin("", &[]);
    let cfg = HlsConfig::new(nginx.url("live.mpd"));
    let stop = Arc::new(AtomicBool::new(false));
    let (recs, h) = monitor(cfg.clone(), stop.clone());
    std::thread::sleep(Duration::from_secs(8));
    stop.store(true, Ordering::Relaxed);
    let runs = h.join().unwrap();
    let names: Vec<_> = runs.iter().map(|r| r.variant.name.as_str()).collect();
    assert_eq!(names, ["video/0", "audio/1"], "video first, then audio");
    for (run, rec) in runs.iter().zip(&recs) {
        let stats = run.result.as_ref().unwrap();
        let name = &run.variant.name;
        assert!(findings(rec).is_empty(), "{name}: {:?}", findings(rec));
        // Started three segments from the live edge, then one a second.
        assert!(stats.segments >= 7, "{name}: {stats:?}");
        assert_eq!(stats.segment_errors, 0);
        assert_in_order(rec, name);
        let log = rec.log();
        // fMP4 media segments (the init section goes first to the decoder, separately).
        assert!(
            log.segments.iter().all(|(_, s)| s
                .bytes
                .windows(4)
                .take(64)
                .any(|b| b == b"moof" || b == b"styp")),
            "{name}: not fMP4 media segments"
        );
        let bitrate = stats.bitrate_bps().unwrap();
        let declared = run.variant.bandwidth as f64;
        assert!(
            bitrate > declared / 4.0 && bitrate < declared * 4.0,
            "{name}: {bitrate} b/s measured, {declared} declared"
        );
    }

    // A Representation is chosen by its @id.
    let mut one = cfg;
    one.variants = vec![VariantSelector::Name("1".into())];
    let chosen = avmon_hls::resolve(&one, one.format(), Arc::new(AtomicBool::new(false))).unwrap();
    assert_eq!(chosen.len(), 1);
    assert_eq!(chosen[0].variant().name, "audio/1");
}

#[test]
fn a_template_with_duration_is_fetched_when_the_clock_says_without_errors() {
    let (nginx, _writer) = live_origin("", &["-use_timeline", "0"]);
    let mpd = std::fs::read_to_string(nginx.root.join("live.mpd")).unwrap();
    assert!(
        !mpd.contains("SegmentTimeline") && mpd.contains("duration="),
        "{mpd}"
    );
    let mut cfg = HlsConfig::new(nginx.url("live.mpd"));
    cfg.variants = vec![VariantSelector::Name("0".into())];
    let stop = Arc::new(AtomicBool::new(false));
    let (recs, h) = monitor(cfg, stop.clone());
    std::thread::sleep(Duration::from_secs(8));
    stop.store(true, Ordering::Relaxed);
    let runs = h.join().unwrap();
    let stats = runs[0].result.as_ref().unwrap();
    assert!(findings(&recs[0]).is_empty(), "{:?}", findings(&recs[0]));
    assert!(stats.segments >= 6, "{stats:?}");
    assert_in_order(&recs[0], "video/0");
}

#[test]
fn a_stalled_packager_is_one_stale_mpd_raised_and_cleared_and_a_restart_is_told() {
    let (nginx, writer) = live_origin("", &[]);
    let mut cfg = HlsConfig::new(nginx.url("live.mpd"));
    cfg.variants = vec![VariantSelector::Name("0".into())];
    let stop = Arc::new(AtomicBool::new(false));
    let (recs, h) = monitor(cfg, stop.clone());
    let rec = &recs[0];
    assert!(wait_for(Duration::from_secs(8), || rec
        .log()
        .segments
        .len()
        >= 4));

    // 8 s stalled: the MPD (minimumUpdatePeriod 1 s, 1 s segments) is stale after 3 s.
    writer.signal("STOP");
    let stalled = std::time::Instant::now();
    let (at, f) = rec
        .wait_finding(
            kinds::DASH_STALE,
            FindingEdge::Begin,
            Duration::from_secs(8),
        )
        .expect("no dash.stale while the packager stalled");
    let after = at.duration_since(stalled).as_secs_f64();
    assert!((2.5..6.0).contains(&after), "stale after {after:.2} s");
    assert_eq!(f.details["limit_s"], 3.0);
    std::thread::sleep(Duration::from_secs(8).saturating_sub(stalled.elapsed()));
    writer.signal("CONT");
    rec.wait_finding(kinds::DASH_STALE, FindingEdge::End, Duration::from_secs(8))
        .expect("dash.stale not cleared after the packager went on");
    // Caught up, with nothing lost: the stall delayed segments, it did not drop them.
    std::thread::sleep(Duration::from_secs(3));
    {
        let log = rec.log();
        let told: Vec<_> = log
            .findings
            .iter()
            .map(|(at, f)| {
                (
                    at.duration_since(stalled).as_secs_f64(),
                    f.kind,
                    f.edge,
                    &f.details,
                )
            })
            .collect();
        assert_eq!(
            log.count(kinds::DASH_STALE, FindingEdge::Begin),
            1,
            "{told:?}"
        );
        for kind in [kinds::DASH_SEGMENT_ERROR, kinds::DASH_SEQUENCE_ERROR] {
            assert_eq!(
                log.count(kind, FindingEdge::Begin),
                0,
                "{kind}: {:?}",
                log.findings
            );
        }
    }
    assert_in_order(rec, "video/0 over the stall");

    // A packager started again: a new availabilityStartTime and a new timeline.
    writer.kill();
    let _again = DashWriter::start(&nginx.root, &[]);
    let (_, f) = rec
        .wait_finding(
            kinds::DASH_AVAILABILITY_START,
            FindingEdge::Begin,
            Duration::from_secs(10),
        )
        .expect("no dash.availability_start after the packager restarted");
    assert!(
        f.details["moved_s"].as_f64().unwrap() > 10.0,
        "{:?}",
        f.details
    );
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
}

#[test]
fn a_segment_the_origin_lacks_is_a_segment_error_on_that_representation_only() {
    // The video's fifth segment answers 404; the audio's is there.
    let (nginx, _writer) = live_origin("location ~ chunk-stream0-00006 { return 404; }", &[]);
    let cfg = HlsConfig::new(nginx.url("live.mpd"));
    let stop = Arc::new(AtomicBool::new(false));
    let (recs, h) = monitor(cfg, stop.clone());
    let (video, audio) = (&recs[0], &recs[1]);
    let (_, f) = video
        .wait_finding(
            kinds::DASH_SEGMENT_ERROR,
            FindingEdge::Begin,
            Duration::from_secs(12),
        )
        .expect("no dash.segment_error for the missing segment");
    assert_eq!(f.details["status"], 404);
    assert!(f.details["uri"]
        .as_str()
        .unwrap()
        .ends_with("chunk-stream0-00006.m4s"));
    video
        .wait_finding(
            kinds::DASH_SEGMENT_ERROR,
            FindingEdge::End,
            Duration::from_secs(4),
        )
        .expect("dash.segment_error not cleared by the next segment");
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
    assert!(findings(audio).is_empty(), "audio: {:?}", findings(audio));
}

#[test]
fn an_on_demand_mpd_is_read_to_its_end() {
    let nginx = Nginx::start("");
    common::write_dash_vod(&nginx.root, "vod.mpd", 6, common::TONE);
    let cfg = HlsConfig::new(nginx.url("vod.mpd"));
    let runs = avmon_hls::run_all(&cfg, Arc::new(AtomicBool::new(false)), |_| {
        Recorder::default()
    })
    .unwrap();
    assert_eq!(runs.len(), 2);
    for run in &runs {
        let stats = run.result.as_ref().unwrap();
        assert!(findings(&run.sink).is_empty(), "{:?}", findings(&run.sink));
        // Audio segments end on AAC frames, so the last may be a short seventh.
        assert!(
            (6..=7).contains(&stats.segments),
            "{}: {stats:?}",
            run.variant.name
        );
        assert!((stats.media_s - 6.0).abs() < 0.1, "{stats:?}");
        assert_in_order(&run.sink, &run.variant.name);
    }
}
