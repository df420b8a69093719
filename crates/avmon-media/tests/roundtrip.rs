//! Synthesize a stream with libavcodec, then decode it back through `Input`: frame counts, media
//! times from zero, planar float audio, and the injected defects visible in the borrowed planes.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use avmon_core::{AudioBuffer, VideoFrame};
use avmon_media::synth::{generate, SynthSpec};
use avmon_media::{EndReason, FrameSink, Input, MediaClock, OpenOptions};

#[derive(Default)]
struct Collect {
    video: Vec<(f64, f64)>,               // (t, mean luma)
    keys: Vec<f64>,                       // t of each keyframe
    audio: Vec<(f64, usize, usize, f32)>, // (t, channels, samples, peak)
    packets: usize,
}

impl FrameSink for Collect {
    fn on_packet(&mut self, _t: f64, _bytes: usize) {
        self.packets += 1;
    }
    fn on_video(&mut self, f: &VideoFrame<'_>) {
        if f.key {
            self.keys.push(f.t);
        }
        let l = &f.luma;
        let sum: u64 = (0..l.height)
            .map(|y| l.row(y).iter().map(|&v| v as u64).sum::<u64>())
            .sum();
        self.video
            .push((f.t, sum as f64 / (l.width * l.height) as f64));
    }
    fn on_audio(&mut self, a: &AudioBuffer<'_>) {
        let peak = a
            .planes
            .iter()
            .flat_map(|p| p.iter())
            .fold(0f32, |m, s| m.max(s.abs()));
        self.audio.push((a.t, a.channels(), a.samples(), peak));
    }
}

/// Write `spec` to `path`, then decode it all back.
fn synth_and_decode(path: &std::path::Path, spec: &SynthSpec) -> Collect {
    generate(
        path.to_str().unwrap(),
        spec,
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    let mut input = Input::open(
        path.to_str().unwrap(),
        &OpenOptions::default(),
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    let mut sink = Collect::default();
    assert_eq!(
        input.run(&mut MediaClock::new(), &mut sink).unwrap(),
        EndReason::Eof
    );
    sink
}

#[test]
fn synth_then_decode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rt.ts");
    let spec = SynthSpec {
        width: 320,
        height: 180,
        duration: Some(4.0),
        defects: vec!["black@1-2".parse().unwrap(), "silence@2-3".parse().unwrap()],
        ..SynthSpec::default()
    };
    let stats = generate(
        path.to_str().unwrap(),
        &spec,
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    assert_eq!(stats.video_frames, 100);

    let mut input = Input::open(
        path.to_str().unwrap(),
        &OpenOptions::default(),
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    let info = input.info().clone();
    assert_eq!(info.format, "mpegts");
    let v = info.video.unwrap();
    assert_eq!(
        (v.codec.as_str(), v.width, v.height, v.fps),
        ("h264", 320, 180, 25.0)
    );
    let a = info.audio.unwrap();
    assert_eq!(
        (a.codec.as_str(), a.channels, a.sample_rate),
        ("aac", 2, 48_000)
    );

    let mut sink = Collect::default();
    let end = input.run(&mut MediaClock::new(), &mut sink).unwrap();
    assert_eq!(end, EndReason::Eof);
    assert_eq!(
        sink.video.len(),
        100,
        "every frame decoded, the last ones flushed"
    );
    assert!(
        sink.video[0].0.abs() < 0.05,
        "media time starts at 0: {}",
        sink.video[0].0
    );
    assert!((sink.video[99].0 - 3.96).abs() < 0.05);
    for (t, mean) in &sink.video {
        let in_black = *t >= 1.0 && *t < 2.0;
        assert_eq!(*mean < 20.0, in_black, "frame at {t}: mean luma {mean}");
    }
    assert!(
        sink.audio.len() > 150,
        "about 4 s of 1024-sample AAC frames"
    );
    for (t, ch, n, peak) in &sink.audio {
        assert_eq!((*ch, *n), (2, 1024));
        // Away from the edges (AAC's transform spreads the change over a frame or two).
        if *t > 2.1 && *t < 2.9 {
            assert!(*peak < 1e-3, "silence at {t}: {peak}");
        } else if *t > 0.2 && (*t < 1.9 || *t > 3.1) && *t < 3.8 {
            // The tone peaks near 0.077 (a −23 LUFS stereo programme).
            assert!(*peak > 0.03, "tone at {t}: {peak}");
        }
    }
}

#[test]
fn the_gop_length_sets_the_keyframe_spacing() {
    let dir = tempfile::tempdir().unwrap();
    for gop_s in [0.4, 2.0, 3.0] {
        let path = dir.path().join(format!("gop{gop_s}.ts"));
        let spec = SynthSpec {
            width: 160,
            height: 96,
            duration: Some(6.0),
            gop_s,
            ..SynthSpec::default()
        };
        let sink = synth_and_decode(&path, &spec);
        assert_eq!(sink.video.len(), 150);
        // The synthetic pictures have no scene cuts, so keyframes come exactly every GOP.
        // Media time starts at the first timestamp of either stream, so the first picture may
        // sit a little after 0.
        let first = sink.video[0].0;
        let want: Vec<f64> = (0..)
            .map(|k| first + k as f64 * gop_s)
            .take_while(|&t| t < first + 6.0 - 1e-9)
            .collect();
        assert_eq!(
            sink.keys.len(),
            want.len(),
            "GOP {gop_s} s: {:?}",
            sink.keys
        );
        for (got, want) in sink.keys.iter().zip(&want) {
            assert!((got - want).abs() < 0.01, "GOP {gop_s} s: {:?}", sink.keys);
        }
    }
}

#[test]
fn a_dropout_leaves_a_timestamp_gap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gap.ts");
    let spec = SynthSpec {
        width: 160,
        height: 96,
        duration: Some(5.0),
        defects: vec!["dropout@2-4".parse().unwrap()],
        ..SynthSpec::default()
    };
    let sink = synth_and_decode(&path, &spec);
    assert_eq!(sink.video.len(), 75, "3 s of 5 are sent");
    let gap = sink
        .video
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .fold(0f64, f64::max);
    assert!((gap - 2.04).abs() < 0.05, "a 2 s hole: {gap}");
}
