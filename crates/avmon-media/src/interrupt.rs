//! FFmpeg's interrupt callback, shared by every blocking FFmpeg call avmon makes: an [`Input`]'s
//! demuxer and ingest's protocol reader both box an [`Interrupt`] next to the context it
//! interrupts, so a stop or a deadline ends a blocked read at once.
//!
//! [`Input`]: crate::Input

use std::cell::Cell;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// State the interrupt callback reads: FFmpeg calls it from inside blocking I/O on this thread.
pub(crate) struct Interrupt {
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) deadline: Cell<Instant>,
}

pub(crate) extern "C" fn interrupt_cb(opaque: *mut c_void) -> c_int {
    // SAFETY: `opaque` points to an `Interrupt` boxed next to the context it interrupts (in
    // `Input`, or ingest's `ProtocolReader`), which is closed before the box is dropped.
    let irq = unsafe { &*(opaque as *const Interrupt) };
    (irq.stop.load(Ordering::Relaxed) || Instant::now() >= irq.deadline.get()) as c_int
}
