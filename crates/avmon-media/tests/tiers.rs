//! Fidelity tiers at the decoder: which frames come out at each tier, and a tier changed while
//! the input runs (from the sink, as another thread would) taking effect at the next packet.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use avmon_core::{AudioBuffer, Tier, TierControl, VideoFrame};
use avmon_media::synth::{generate, SynthSpec};
use avmon_media::{FrameSink, Input, MediaClock, OpenOptions};

/// Collects (t, key, corrupt) of each frame, the tiers announced, and the audio buffers; sets
/// `switch.1` on `control` once the clock passes `switch.0`.
struct Frames {
    video: Vec<(f64, bool, bool)>,
    /// (t, bytes) of each packet.
    packets: Vec<(f64, usize)>,
    /// The key filter's counts at the end.
    filtered: Option<(u64, u64)>,
    audio: usize,
    tiers: Vec<(usize, Tier)>,
    control: TierControl,
    switch: Option<(f64, Tier)>,
}

impl Frames {
    fn new(control: TierControl, switch: Option<(f64, Tier)>) -> Frames {
        Frames {
            video: Vec::new(),
            packets: Vec::new(),
            filtered: None,
            audio: 0,
            tiers: Vec::new(),
            control,
            switch,
        }
    }
}

impl FrameSink for Frames {
    fn on_packet(&mut self, t: f64, bytes: usize) {
        self.packets.push((t, bytes));
        if let Some((_, tier)) = self.switch.filter(|(at, _)| t >= *at) {
            self.control.set(tier);
            self.switch = None;
        }
    }
    fn on_video(&mut self, f: &VideoFrame<'_>) {
        self.video.push((f.t, f.key, f.corrupt));
    }
    fn on_audio(&mut self, _a: &AudioBuffer<'_>) {
        self.audio += 1;
    }
    fn on_tier(&mut self, tier: Tier) {
        self.tiers.push((self.video.len(), tier));
    }
}

fn decode(path: &str, tier: Tier, switch: Option<(f64, Tier)>) -> Frames {
    decode_sparse(path, tier, switch, 0.0)
}

/// [`decode`] with a keyframe interval.
fn decode_sparse(
    path: &str,
    tier: Tier,
    switch: Option<(f64, Tier)>,
    keyframe_interval: f64,
) -> Frames {
    let control = TierControl::new(tier);
    let opts = OpenOptions {
        tier: control.clone(),
        keyframe_interval,
        ..OpenOptions::default()
    };
    let mut input = Input::open(path, &opts, Arc::new(AtomicBool::new(false))).unwrap();
    let mut sink = Frames::new(control, switch);
    input.run(&mut MediaClock::new(), &mut sink).unwrap();
    sink.filtered = input.key_filter_counts();
    sink
}

/// A 320x180 synth stream of `seconds` with a keyframe every `gop_s`, in `dir`.
fn make(dir: &tempfile::TempDir, seconds: f64, gop_s: f64) -> String {
    let path = dir.path().join("t.ts");
    let spec = SynthSpec {
        width: 320,
        height: 180,
        duration: Some(seconds),
        gop_s,
        ..SynthSpec::default()
    };
    let path = path.to_str().unwrap().to_string();
    generate(&path, &spec, Arc::new(AtomicBool::new(false))).unwrap();
    path
}

#[test]
fn at_keyframes_the_demuxer_gets_inter_pictures_blanked_with_their_sizes_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = &make(&dir, 10.0, 1.0);
    let full = decode(path, Tier::Full, None);
    let keys = full.video.iter().filter(|f| f.1).count();
    assert_eq!(full.filtered, None, "nothing filtered at full");
    let kf = decode(path, Tier::Keyframes, None);
    let (kept, blanked) = kf.filtered.expect("a TS input is filtered at keyframes");
    // The filter starts with the first packet out of the demuxer, after the probe read the
    // first pictures; from then on, keyframes go whole and the rest are blanked.
    assert!(
        kept as usize <= keys && kept >= 5,
        "kept {kept} of {keys} keyframes"
    );
    assert!(
        blanked as usize >= 250 - keys - 75 && (kept + blanked) <= 250,
        "blanked {blanked}"
    );
    // Every picture still arrives as a packet (a blanked one as its first TS packet), with
    // the whole picture's size: the parser's frame size plus its PES header (14 or 19 bytes).
    assert_eq!(kf.packets.len(), full.packets.len());
    let mut grown = 0;
    for (a, b) in full.packets.iter().zip(&kf.packets) {
        assert_eq!(a.0, b.0);
        assert!(
            b.1 == a.1 || (b.1 - a.1 == 14 || b.1 - a.1 == 19),
            "{a:?} {b:?}"
        );
        grown += usize::from(b.1 != a.1);
    }
    assert_eq!(grown as u64, blanked, "sizes from the filter");
    // And only the keyframes were decoded, each when its packet was read.
    let t_full: Vec<f64> = full.video.iter().filter(|f| f.1).map(|f| f.0).collect();
    let t_kf: Vec<f64> = kf.video.iter().map(|f| f.0).collect();
    assert_eq!(t_kf, t_full);
    assert!(kf.video.iter().all(|f| f.1 && !f.2));
}

#[test]
fn each_tier_decodes_what_it_says_and_changes_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let path = &make(&dir, 10.0, 2.0);

    let full = decode(path, Tier::Full, None);
    assert_eq!(full.video.len(), 250);
    assert_eq!(full.tiers, vec![(0, Tier::Full)]);
    let keys = full.video.iter().filter(|f| f.1).count();
    assert!(
        (5..=8).contains(&keys),
        "a keyframe every 2 s or so: {keys}"
    );

    let reference = decode(path, Tier::Reference, None);
    assert!(
        reference.video.len() > keys && reference.video.len() < 200,
        "reference frames only: {} of 250",
        reference.video.len()
    );

    let kf = decode(path, Tier::Keyframes, None);
    assert_eq!(kf.video.len(), keys, "keyframes only");
    assert!(kf.video.iter().all(|f| f.1 && !f.2), "{:?}", kf.video);
    // Each keyframe comes out when its packet is read, not keyframes later.
    let t_full: Vec<f64> = full.video.iter().filter(|f| f.1).map(|f| f.0).collect();
    let t_kf: Vec<f64> = kf.video.iter().map(|f| f.0).collect();
    assert_eq!(t_kf, t_full);

    let transport = decode(path, Tier::Transport, None);
    assert!(transport.video.is_empty());
    assert_eq!(
        transport.audio, full.audio,
        "audio is decoded in every tier"
    );

    // keyframes → full and transport → full at 4 s: every frame from the next keyframe on, none
    // flagged corrupt (inter frames wait for a keyframe, whose references the decoder then has).
    // In `transport` the demuxer skipped the video altogether (the audio kept the clock): it
    // delivers it again.
    let since =
        |f: &Frames| -> Vec<f64> { f.video.iter().map(|f| f.0).filter(|t| *t > 6.5).collect() };
    let want = since(&full);
    for from in [Tier::Keyframes, Tier::Transport] {
        let up = decode(path, from, Some((4.0, Tier::Full)));
        assert_eq!(up.tiers.len(), 2, "{from}: {:?}", up.tiers);
        assert_eq!(up.tiers[1].1, Tier::Full);
        assert!(
            up.video.iter().all(|f| !f.2),
            "{from}: nothing corrupt: {:?}",
            up.video
        );
        assert_eq!(
            since(&up),
            want,
            "{from}: every frame after the next keyframe"
        );
        assert_eq!(up.audio, full.audio);
    }

    // full → transport at 5 s: no frame presented after about then.
    let down = decode(path, Tier::Full, Some((5.0, Tier::Transport)));
    let last = down.video.last().unwrap().0;
    assert!((4.5..5.5).contains(&last), "last frame at {last}");
    assert_eq!(down.audio, full.audio);
}

#[test]
fn a_keyframe_interval_decodes_one_keyframe_per_interval_and_only_in_keyframes() {
    let dir = tempfile::tempdir().unwrap();
    let path = &make(&dir, 12.0, 1.0);
    let with_interval = |tier: Tier, interval: f64| decode_sparse(path, tier, None, interval);
    let every = with_interval(Tier::Keyframes, 0.0);
    let keys: Vec<f64> = every.video.iter().map(|f| f.0).collect();
    assert_eq!(keys.len(), 12, "a keyframe a second: {keys:?}");

    let sparse = with_interval(Tier::Keyframes, 3.0);
    let got: Vec<f64> = sparse.video.iter().map(|f| f.0).collect();
    // The first keyframe, then the first one 3 s after the last decoded: every third.
    let want: Vec<f64> = keys.iter().copied().step_by(3).collect();
    assert_eq!(got, want);
    assert!(
        sparse.video.iter().all(|f| f.1 && !f.2),
        "{:?}",
        sparse.video
    );
    assert_eq!(sparse.audio, every.audio, "audio is whole");

    // Other tiers ignore it.
    assert_eq!(with_interval(Tier::Full, 3.0).video.len(), 300);
}

/// A file's bytes in small reads that never say they are ready, so that under the scheduler
/// each read asks how long to linger; it records what it was asked for and lingers not at all.
struct Asked {
    bytes: Vec<u8>,
    pos: usize,
    wants: Arc<std::sync::Mutex<Vec<std::time::Duration>>>,
}

impl avmon_media::ByteSource for Asked {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(4096).min(self.bytes.len() - self.pos);
        buf[..n].copy_from_slice(&self.bytes[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
    fn linger(&self, want: std::time::Duration) -> std::time::Duration {
        self.wants.lock().unwrap().push(want);
        std::time::Duration::ZERO
    }
}

#[test]
fn a_stream_lingers_longer_between_reads_at_the_reduced_tiers() {
    use avmon_media::ingest::{INPUT_LINGER, REDUCED_LINGER};
    let dir = tempfile::tempdir().unwrap();
    let path = make(&dir, 10.0, 1.0);
    let sched = avmon_core::sched::Scheduler::new(1, std::time::Duration::from_millis(10));
    let wants = Arc::new(std::sync::Mutex::new(Vec::new()));
    let control = TierControl::new(Tier::Full);
    let opts = OpenOptions {
        tier: control.clone(),
        cpu: Some(sched.slot()),
        ..OpenOptions::default()
    };
    let reader = Asked {
        bytes: std::fs::read(&path).unwrap(),
        pos: 0,
        wants: wants.clone(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let mut input =
        Input::open_source("asked", Box::new(reader), Some("mpegts"), &opts, stop).unwrap();
    let mut sink = Frames::new(control, Some((5.0, Tier::Keyframes)));
    input.run(&mut MediaClock::new(), &mut sink).unwrap();
    let wants = wants.lock().unwrap();
    // 50 ms at `full` until the switch, 200 ms at `keyframes` after it.
    let full = wants.iter().take_while(|w| **w == INPUT_LINGER).count();
    assert!(full >= 5, "{wants:?}");
    assert!(wants.len() - full >= 5, "{wants:?}");
    assert!(
        wants[full..].iter().all(|w| *w == REDUCED_LINGER),
        "{wants:?}"
    );
    assert_eq!(sink.tiers.last().map(|t| t.1), Some(Tier::Keyframes));
}
