//! Demuxed packets are let go of: decoding an input again and again does not grow the process
//! by what it read. (A packet reused across `av_read_frame` calls kept every buffer it was
//! given: the whole input's bytes stayed allocated, 0.6 MB a second on a 5 Mbit/s stream.)
//!
//! In a file of its own, so no other test shares (and moves) this process's memory.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use avmon_core::{AudioBuffer, Tier, TierControl, VideoFrame};
use avmon_media::synth::{generate, SynthSpec};
use avmon_media::{FrameSink, Input, MediaClock, OpenOptions};

struct Count(usize);

impl FrameSink for Count {
    fn on_video(&mut self, _f: &VideoFrame<'_>) {
        self.0 += 1;
    }
    fn on_audio(&mut self, _a: &AudioBuffer<'_>) {}
}

/// Resident memory of this process, in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

fn decode(path: &str, tier: Tier) -> usize {
    let opts = OpenOptions {
        tier: TierControl::new(tier),
        ..OpenOptions::default()
    };
    let mut input = Input::open(path, &opts, Arc::new(AtomicBool::new(false))).unwrap();
    let mut sink = Count(0);
    input.run(&mut MediaClock::new(), &mut sink).unwrap();
    sink.0
}

#[test]
fn decoding_again_and_again_does_not_keep_what_was_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.ts");
    let spec = SynthSpec {
        duration: Some(10.0),
        ..SynthSpec::default()
    };
    let path = path.to_str().unwrap();
    generate(path, &spec, Arc::new(AtomicBool::new(false))).unwrap();
    let size = std::fs::metadata(path).unwrap().len() as usize;
    // Warm up (the decoder's and allocator's own memory), then measure more runs.
    for tier in [Tier::Full, Tier::Transport, Tier::Keyframes] {
        decode(path, tier);
    }
    const RUNS: usize = 12;
    let before = rss();
    for i in 0..RUNS {
        let tier = [Tier::Full, Tier::Transport, Tier::Keyframes][i % 3];
        let frames = decode(path, tier);
        assert!(tier == Tier::Transport || frames > 0, "{tier}: no frames");
    }
    let grown = rss().saturating_sub(before);
    let read = RUNS * size;
    assert!(
        grown * 4 < read,
        "grew {grown} bytes over {RUNS} runs that read {read} bytes of a {size}-byte file"
    );
}
