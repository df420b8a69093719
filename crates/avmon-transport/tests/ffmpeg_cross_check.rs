//! Continuity counts cross-checked against another implementation on the same bytes: FFmpeg's
//! MPEG-TS demuxer, which logs "Continuity check failed" for each break it sees.
//!
//! Where the two are meant to differ they are not compared here: FFmpeg (5.1) counts a legal
//! duplicate packet as a break, which ISO/IEC 13818-1 §2.4.3.3 allows (see `damage.rs`), and
//! it keeps counting across a sync loss, which TR 101 290 1.1 makes the only error.

mod common;

use common::*;

/// xorshift64*: deterministic picks without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n as u64) as usize
    }
}

#[test]
fn packets_lost_on_every_pid_agree_with_ffmpeg() {
    let ts = cbr();
    assert_eq!(
        ffmpeg_cc_failures(ts),
        0,
        "FFmpeg finds the intact stream clean"
    );
    // Packets with a payload (a lost one without moves no counter) of every PID but the null
    // one: PAT, PMT, SDT, video, audio.
    let candidates = indices(ts, |_, p| pid(p) != NULL && has_payload(p));
    for (p, name) in [(PAT, "PAT"), (PMT, "PMT"), (SDT, "SDT")] {
        assert!(
            candidates.iter().any(|&i| pid(&ts[i * P..]) == p),
            "{name} is in the stream"
        );
    }
    for seed in [1u64, 2, 3] {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut drop: Vec<usize> = (0..60)
            .map(|_| candidates[rng.below(candidates.len())])
            .collect();
        // And a PSI packet or two for sure.
        let psi = indices(ts, |_, p| matches!(pid(p), PAT | PMT | SDT));
        drop.push(psi[rng.below(psi.len())]);
        drop.sort_unstable();
        drop.dedup();
        let damaged = without(ts, &drop);
        let want = breaks(ts, &drop) as u64;
        let (ours, _) = analyse(&damaged);
        let theirs = ffmpeg_cc_failures(&damaged) as u64;
        assert_eq!(
            (ours.cc_errors, theirs),
            (want, want),
            "seed {seed}: {} packets dropped",
            drop.len()
        );
    }
}

#[test]
fn a_source_switch_agrees_with_ffmpeg_with_and_without_the_discontinuity_indicator() {
    let a = cbr();
    let b = ffmpeg_ts(3.0, &["-muxrate", "2000000"]);
    let half = a.len() / P / 2 * P;
    let mut b_di = b.clone();
    let first_pcr = indices(&b, |_, p| pcr(p).is_some())[0];
    b_di[first_pcr * P + 5] |= 0x80;
    for (name, b) in [("plain", &b), ("discontinuity_indicator", &b_di)] {
        let ts = [&a[..half], b].concat();
        let (ours, _) = analyse(&ts);
        assert!(ours.cc_errors > 0, "{name}: the counters break at the join");
        assert_eq!(ours.cc_errors, ffmpeg_cc_failures(&ts) as u64, "{name}");
    }
}
