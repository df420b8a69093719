//! A small mutation fuzzer for the parsers of text that comes from outside (config files, the
//! API's JSON bodies): each input is a seed changed by a few random edits that tend to break
//! such text (a bit flipped, a delimiter, a token that overflows or nests, a range deleted,
//! repeated or spliced from another seed). Not coverage-guided: the test suites run it for a
//! fixed number of inputs, `AVMON_FUZZ_SECS` for longer.

use std::time::{Duration, Instant};

/// Bytes and tokens that parsers of TOML and JSON treat specially.
const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"'",
    b":",
    b",",
    b"=",
    b"\n",
    b"\\",
    b"#",
    b".",
    b"-",
    b"null",
    b"true",
    b"false",
    b"0",
    b"-1",
    b"1e309",
    b"-1e309",
    b"nan",
    b"inf",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"0.0000001",
    b"\"\"",
    b"[]",
    b"{}",
    b"[[streams]]",
    b"[server]",
    b"\xff\xfe",
    b"\x00",
    b"\xf4\x8f\xbf\xbf",
    b"\\u0000",
    b"\\ud800",
    b"1979-05-27T07:32:00Z",
    b"9999-12-31T23:59:59Z",
];

/// Seeded random edits of seeds.
pub struct Mutator {
    rng: fastrand::Rng,
}

impl Mutator {
    pub fn new(seed: u64) -> Self {
        Mutator {
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// One input: a seed (chosen at random) with 1 to 4 edits.
    pub fn next(&mut self, seeds: &[Vec<u8>]) -> Vec<u8> {
        let mut out = seeds[self.rng.usize(..seeds.len())].clone();
        for _ in 0..self.rng.usize(1..=4) {
            self.edit(&mut out, seeds);
        }
        out
    }

    fn edit(&mut self, out: &mut Vec<u8>, seeds: &[Vec<u8>]) {
        let at = self.rng.usize(..=out.len());
        match self.rng.u8(..7) {
            0 if !out.is_empty() => {
                let i = self.rng.usize(..out.len());
                out[i] ^= 1 << self.rng.u8(..8);
            }
            1 => {
                let t = TOKENS[self.rng.usize(..TOKENS.len())];
                out.splice(at..at, t.iter().copied());
            }
            2 if !out.is_empty() => {
                let i = self.rng.usize(..out.len());
                out[i] = TOKENS[self.rng.usize(..TOKENS.len())][0];
            }
            3 => {
                let end = (at + self.rng.usize(..32)).min(out.len());
                out.drain(at..end);
            }
            4 => {
                let end = (at + self.rng.usize(..64)).min(out.len());
                let copy = out[at..end].to_vec();
                let n = self.rng.usize(1..=16);
                for _ in 0..n {
                    out.splice(at..at, copy.iter().copied());
                }
            }
            5 => {
                let other = &seeds[self.rng.usize(..seeds.len())];
                let from = self.rng.usize(..=other.len());
                let end = (from + self.rng.usize(..128)).min(other.len());
                out.splice(at..at, other[from..end].iter().copied());
            }
            _ => {
                // Deep nesting.
                let n = self.rng.usize(1..200);
                let open = if self.rng.bool() { b'[' } else { b'{' };
                out.splice(at..at, std::iter::repeat_n(open, n));
            }
        }
    }
}

/// Run `check` on inputs from `seeds`: `iterations` of them, or for `AVMON_FUZZ_SECS` seconds
/// when set. Returns how many ran.
pub fn run(seeds: &[Vec<u8>], iterations: usize, mut check: impl FnMut(&[u8])) -> usize {
    assert!(!seeds.is_empty(), "no seeds");
    let until = std::env::var("AVMON_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(|s| Instant::now() + Duration::from_secs(s));
    let seed = std::env::var("AVMON_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut m = Mutator::new(seed);
    for s in seeds {
        check(s);
    }
    let mut n = seeds.len();
    loop {
        match until {
            Some(t) if Instant::now() >= t => break,
            None if n >= iterations => break,
            _ => {}
        }
        let input = m.next(seeds);
        check(&input);
        n += 1;
    }
    n
}

/// The seed files of a corpus directory, in name order.
pub fn seeds(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect()
}
