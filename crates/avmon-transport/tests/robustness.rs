//! Hostile and broken input: the analyser never panics, keeps its memory bounded, and says what
//! it saw. (A bounded stand-in for the `cargo fuzz` target the issue asks for later.)

mod common;

use avmon_transport::psi::{crc32_mpeg2, long_section};
use avmon_transport::{Analyzer, Clock, Settings};
use common::*;

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Feed `ts` in chunks of `chunk` bytes, on the stream's clock, to the end; the events are
/// checked against the counters and each other ([`check_events`]).
fn feed_all(ts: &[u8], chunk: usize) -> Analyzer {
    feed_on(ts, chunk, |_| Clock::Stream)
}

/// The same, each chunk's clock given by `clock` from its offset.
fn feed_on(ts: &[u8], chunk: usize, clock: impl Fn(usize) -> Clock) -> Analyzer {
    let mut a = Analyzer::new();
    let mut events = Vec::new();
    for (n, c) in ts.chunks(chunk).enumerate() {
        a.feed(c, clock(n * chunk), &mut events);
    }
    a.finish(&mut events);
    check_events(&events, a.counters());
    a
}

#[test]
fn noise_finds_no_packets() {
    let mut rng = Rng(7);
    let noise: Vec<u8> = rng
        .bytes(2_000_000)
        .into_iter()
        .map(|b| if b == 0x47 { 0x46 } else { b })
        .collect();
    let a = feed_all(&noise, 1316);
    assert_eq!(a.packets(), 0);
    assert!(!a.in_sync());
    assert_eq!(a.counters().total(), 0, "nothing to judge out of sync");
    // It keeps less than five packets to look at again.
    assert!(a.skipped_bytes() > noise.len() as u64 - 5 * P as u64);
}

#[test]
fn random_packets_behind_good_sync_bytes_do_not_panic() {
    for seed in 1..=20u64 {
        let mut rng = Rng(seed * 0x9E37_79B9);
        let mut ts = Vec::new();
        for n in 0..5000 {
            let mut p = rng.bytes(P);
            p[0] = 0x47;
            // Some of them on the PSI PIDs, so random bytes go through section reassembly.
            if n % 3 == 0 {
                p[1] &= 0xE0;
                p[2] = [0x00, 0x01, 0x10, 0x11, 0x12, 0x14][n % 6];
            }
            ts.extend(p);
        }
        // Every packet behind a sync byte is read, and how the bytes arrive changes nothing:
        // the same counts in 1316-byte datagrams and in 7-byte dribbles.
        let [a, b] = [1316, 7].map(|chunk| feed_all(&ts, chunk));
        assert_eq!((a.packets(), b.packets()), (5000, 5000), "seed {seed}");
        assert_eq!(a.counters(), b.counters(), "seed {seed}");
        assert!(
            a.counters().total() > 0,
            "random packets are judged: seed {seed}"
        );
    }
}

/// Packets carrying `section` on `pid`, starting with continuity counter `cc`.
fn carry(section: &[u8], pid: u16, cc: &mut u8) -> Vec<u8> {
    let mut data = vec![0u8]; // pointer_field
    data.extend(section);
    let mut out = Vec::new();
    for (n, part) in data.chunks(184).enumerate() {
        let mut p = [0xFFu8; P];
        p[0] = 0x47;
        p[1] = (if n == 0 { 0x40 } else { 0 }) | (pid >> 8) as u8;
        p[2] = pid as u8;
        p[3] = 0x10 | (*cc & 0x0F);
        *cc = cc.wrapping_add(1);
        p[4..4 + part.len()].copy_from_slice(part);
        out.extend(p);
    }
    out
}

#[test]
fn valid_tables_naming_thousands_of_pids_stay_bounded() {
    // A PAT with 250 programs, each PMT naming 150 PIDs, all with correct CRCs, changing every
    // time: the analyser follows, and its state is bounded by the 8191 PIDs there are.
    let mut rng = Rng(99);
    let mut ts = Vec::new();
    let (mut cc_pat, mut cc_pmt) = (0u8, [0u8; 250]);
    for round in 0..20u8 {
        let mut pat = Vec::new();
        let pmt_pids: Vec<u16> = (0..250)
            .map(|_| 0x20 + (rng.next() % 0x1F00) as u16)
            .collect();
        for (n, &pid) in pmt_pids.iter().enumerate() {
            pat.extend((n as u16 + 1).to_be_bytes());
            pat.extend((0xE000 | pid).to_be_bytes());
        }
        let mut pat_section = long_section(0, 1, &pat);
        pat_section[5] = 0xC1 | (round % 32) << 1; // a new version each round
        let crc = crc32_mpeg2(&pat_section[..pat_section.len() - 4]);
        let n = pat_section.len();
        pat_section[n - 4..].copy_from_slice(&crc.to_be_bytes());
        ts.extend(carry(&pat_section, 0, &mut cc_pat));
        for (n, &pid) in pmt_pids.iter().enumerate() {
            let mut body = vec![0xE1, 0x00, 0xF0, 0x00];
            for _ in 0..150 {
                let es = (rng.next() % 0x1FFF) as u16;
                body.extend([0x1B, 0xE0 | (es >> 8) as u8, es as u8, 0xF0, 0x00]);
            }
            ts.extend(carry(
                &long_section(2, n as u16 + 1, &body),
                pid,
                &mut cc_pmt[n],
            ));
        }
    }
    let a = feed_on(&ts, 1316, |_| Clock::Arrival(0.0));
    assert_eq!(a.counters().crc_errors, 0);
    assert_eq!(a.packets(), (ts.len() / P) as u64);
}

#[test]
fn a_real_stream_with_random_bytes_corrupted_does_not_panic() {
    let mut rng = Rng(5);
    for rate in [10_000u64, 1_000, 100] {
        let mut ts = cbr().to_vec();
        for b in ts.iter_mut() {
            if rng.next() % rate == 0 {
                *b = rng.next() as u8;
            }
        }
        // And a cut mid-packet at the end.
        ts.truncate(ts.len() - 77);
        // On the stream's clock, and on an arrival clock at its 2 Mbit/s.
        for a in [
            feed_all(&ts, 1316),
            feed_on(&ts, 1316, |at| Clock::Arrival(at as f64 / 250_000.0)),
        ] {
            let c = a.counters();
            assert!(c.total() > 0, "1 byte in {rate} corrupted is seen");
            assert!(
                c.sync_byte_errors <= (ts.len() / P) as u64,
                "at most one per slot: {c:?}"
            );
        }
    }
}

#[test]
fn bad_settings_name_the_field() {
    for (s, field) in [
        (
            Settings {
                pat_interval_s: 0.0,
                ..Settings::default()
            },
            "pat_interval_s",
        ),
        (
            Settings {
                pts_interval_s: f64::NAN,
                ..Settings::default()
            },
            "pts_interval_s",
        ),
        (
            Settings {
                pid_absence_s: -5.0,
                ..Settings::default()
            },
            "pid_absence_s",
        ),
    ] {
        let e = Analyzer::with_settings(s).err().expect("refused");
        assert!(
            e.to_string().starts_with(&format!("{field}: must be")),
            "{e}"
        );
    }
    // Settings come from TOML/JSON config: unknown keys are refused, missing ones default.
    let s: Settings = serde_json::from_str(r#"{"pid_absence_s": 10}"#).unwrap();
    assert_eq!(s.pid_absence_s, 10.0);
    assert_eq!(s.pat_interval_s, 0.5);
    assert!(serde_json::from_str::<Settings>(r#"{"pid_absense_s": 10}"#).is_err());
}
