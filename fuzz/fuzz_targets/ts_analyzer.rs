//! Arbitrary bytes through the transport-stream analyser, as an ingest would feed them.
//!
//! The input is the stream itself (so real TS files are seeds as they are); its first eight
//! bytes also seed the generator that splits it into chunks (empty, one byte, around a packet,
//! a few kilobytes) and, for half the inputs, a live arrival clock that advances by small steps
//! and by the occasional jump of hours. What must hold, whatever the bytes:
//!
//! - no panic (`avmon_transport`'s contract);
//! - counters never decrease, and each event but an absence's end is one count of its indicator;
//! - an absence of an indicator and PID begins, then ends (not before it began), before it can
//!   begin again, and all have ended once the input is finished;
//! - on the stream clock, the counters do not depend on how the bytes were split (the crate
//!   puts packets split across chunks back together);
//! - the heap the analyser keeps stays under a fixed cap, whatever the input's length: it keeps
//!   at most five packets of input and a bounded state per PID and per program (the worst case
//!   of those bounds is about 20 MiB; the cap leaves room over it, not over a leak).

#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use avmon_transport::{Absences, Analyzer, Clock, Counters, Event, Indicator};
use libfuzzer_sys::fuzz_target;

/// Counts the live heap bytes of this process, so the analyser's retained memory can be asserted.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// See the module docs.
const MAX_RETAINED: isize = 32 << 20;

fn xorshift(mut s: u64) -> impl FnMut() -> u64 {
    s |= 1;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    }
}

fn chunk_len(r: u64) -> usize {
    match r % 8 {
        0 => 0,
        1 => 1,
        2 => 187,
        3 => 188,
        4 => 189,
        5 => 188 * 7,
        _ => (r >> 8) as usize % 4096,
    }
}

fn check(before: &Counters, after: &Counters, events: &[Event], open: &mut Absences) {
    for i in Indicator::ALL {
        let (b, a) = (before.get(i), after.get(i));
        assert!(a >= b, "{i:?} went down: {b} -> {a}");
        let n = events
            .iter()
            .filter(|e| e.indicator == i && e.edge.counts())
            .count() as u64;
        assert_eq!(a - b, n, "{i:?}: counter moved by {} but {n} events", a - b);
    }
    for e in events {
        if let Err(broken) = open.take(e) {
            panic!("{broken}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let seed = data
        .iter()
        .take(8)
        .fold(0u64, |s, &b| s << 8 | u64::from(b));
    let mut rnd = xorshift(seed);
    let live = rnd().is_multiple_of(2);

    let base = LIVE.load(Ordering::Relaxed);
    let mut a = Analyzer::new();
    let mut events = Vec::new();
    let mut open = Absences::default();
    let mut now = 0.0f64;
    let mut rest = data;
    while !rest.is_empty() {
        let n = chunk_len(rnd()).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let clock = if live {
            now += match rnd() % 16 {
                0 => 3600.0,
                1..=3 => 0.0,
                r => r as f64 * 0.007,
            };
            Clock::Arrival(now)
        } else {
            Clock::Stream
        };
        let before = *a.counters();
        a.feed(chunk, clock, &mut events);
        check(&before, a.counters(), &events, &mut open);
        events.clear();
        events.shrink_to_fit();
        let retained = LIVE.load(Ordering::Relaxed) - base;
        assert!(retained < MAX_RETAINED, "analyser retains {retained} bytes");
    }

    let before = *a.counters();
    a.finish(&mut events);
    check(&before, a.counters(), &events, &mut open);
    assert!(open.open().is_empty(), "not ended: {:?}", open.open());
    events.clear();

    if !live {
        let mut whole = Analyzer::new();
        whole.feed(data, Clock::Stream, &mut events);
        // Finished too: 2.4's verdicts still waiting are counted there.
        whole.finish(&mut events);
        assert_eq!(
            whole.counters(),
            a.counters(),
            "counters depend on how the stream was split"
        );
    }
});
