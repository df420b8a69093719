//! Finding packets in a byte stream: TR 101 290 indicators 1.1 (TS_sync_loss) and
//! 1.2 (Sync_byte_error).
//!
//! TR 101 290 §5.2.1, 1.1: sync is acquired after [`ACQUIRE`] consecutive correct sync bytes,
//! and lost after [`LOSE`] or more consecutive corrupted ones. While hunting, the framer looks
//! for a `0x47` followed by four more at 188-byte steps; once locked, it takes a packet every
//! 188 bytes and only checks the sync byte.

use crate::packet::{PACKET, SYNC};

/// Consecutive correct sync bytes that acquire sync (1.1).
pub const ACQUIRE: usize = 5;
/// Consecutive corrupted sync bytes that lose it (1.1).
pub const LOSE: u32 = 2;

/// What the framer found, with the stream offset of the 188-byte slot it concerns.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Sync is (re)acquired at this offset; packets follow.
    Acquired(u64),
    /// A packet with a correct sync byte.
    Packet(&'a [u8; PACKET], u64),
    /// 1.2: the slot where a packet should start has no sync byte. Its bytes are not a packet
    /// the analyser can trust, and are skipped as a demultiplexer skips them.
    SyncByteError(u64),
    /// 1.1: sync is lost (reported after the [`LOSE`]th `SyncByteError` in a row).
    SyncLoss(u64),
}

#[derive(Debug, Default)]
pub struct Framer {
    locked: bool,
    /// Consecutive slots without a sync byte while locked.
    bad_run: u32,
    /// Bytes passed over while hunting.
    pub skipped: u64,
}

impl Framer {
    /// Whether the framer is locked on packet boundaries.
    pub fn locked(&self) -> bool {
        self.locked
    }

    /// Frame `buf`, whose first byte is at stream offset `base`. Returns how many bytes were
    /// consumed: the rest (less than [`ACQUIRE`] packets) is needed again, with what follows.
    pub fn run(&mut self, buf: &[u8], base: u64, emit: &mut impl FnMut(Frame<'_>)) -> usize {
        let mut i = 0;
        loop {
            if self.locked {
                let Some(slot) = buf.get(i..i + PACKET) else {
                    return i;
                };
                let slot: &[u8; PACKET] = slot.try_into().expect("a slice of PACKET bytes");
                if slot[0] == SYNC {
                    self.bad_run = 0;
                    emit(Frame::Packet(slot, base + i as u64));
                    i += PACKET;
                    continue;
                }
                emit(Frame::SyncByteError(base + i as u64));
                self.bad_run += 1;
                if self.bad_run < LOSE {
                    i += PACKET;
                    continue;
                }
                emit(Frame::SyncLoss(base + i as u64));
                self.locked = false;
                self.bad_run = 0;
                // Hunt from this slot on: the packet boundary moved somewhere inside it or
                // the last one.
            }
            // Hunting.
            let last_start = (ACQUIRE - 1) * PACKET;
            if buf.len() < i + last_start + 1 {
                return i;
            }
            let found = buf[i..buf.len() - last_start]
                .iter()
                .enumerate()
                .filter(|(_, &b)| b == SYNC)
                .map(|(k, _)| i + k)
                .find(|&s| (1..ACQUIRE).all(|n| buf[s + n * PACKET] == SYNC));
            match found {
                Some(s) => {
                    self.skipped += (s - i) as u64;
                    i = s;
                    self.locked = true;
                    emit(Frame::Acquired(base + i as u64));
                }
                None => {
                    let next = buf.len() - last_start;
                    self.skipped += (next - i) as u64;
                    return next;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(packets: usize) -> Vec<u8> {
        let mut v = Vec::new();
        for n in 0..packets {
            let mut p = [n as u8; PACKET];
            p[0] = SYNC;
            v.extend(p);
        }
        v
    }

    /// Frame `data` fed in chunks of `chunk` bytes, carrying what is not consumed, as the
    /// analyser does.
    fn frames(f: &mut Framer, data: &[u8], chunk: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut carry: Vec<u8> = Vec::new();
        let mut base = 0u64;
        for c in data.chunks(chunk) {
            carry.extend(c);
            let n = f.run(&carry, base, &mut |fr| {
                out.push(match fr {
                    Frame::Acquired(o) => format!("acq@{o}"),
                    Frame::Packet(p, o) => format!("p{}@{o}", p[1]),
                    Frame::SyncByteError(o) => format!("sbe@{o}"),
                    Frame::SyncLoss(o) => format!("loss@{o}"),
                })
            });
            carry.drain(..n);
            base += n as u64;
        }
        out
    }

    #[test]
    fn locks_after_five_sync_bytes_whatever_the_chunking() {
        let mut data = vec![0x47, 1, 2, 3, 0x47, 9]; // junk, with false sync bytes
        data.extend(stream(7));
        let want: Vec<String> = std::iter::once("acq@6".to_string())
            .chain((0..7).map(|n| format!("p{n}@{}", 6 + n * PACKET)))
            .collect();
        for chunk in [1, 7, 188, 1000, 5000] {
            let mut f = Framer::default();
            assert_eq!(frames(&mut f, &data, chunk), want, "chunk {chunk}");
            assert_eq!(f.skipped, 6);
        }
        // Four packets are not enough to lock.
        let mut f = Framer::default();
        assert!(frames(&mut f, &stream(4), 188).is_empty());
        assert!(!f.locked());
    }

    #[test]
    fn one_bad_sync_byte_is_an_error_two_lose_sync() {
        let mut data = stream(12);
        data[5 * PACKET] = 0x46;
        let mut f = Framer::default();
        let got = frames(&mut f, &data, 100);
        assert!(got.contains(&format!("sbe@{}", 5 * PACKET)));
        assert!(!got
            .iter()
            .any(|s| s.starts_with("loss") || s.starts_with("p5@")));
        assert_eq!(got.iter().filter(|s| s.starts_with('p')).count(), 11);

        // Three bytes lost inside packet 6: slots 7 and 8 are misaligned, sync is lost, and
        // found again at the next true boundary.
        let mut data = stream(20);
        data.drain(6 * PACKET + 50..6 * PACKET + 53);
        let mut f = Framer::default();
        let got = frames(&mut f, &data, 1316);
        // Slot 7 still sits at 7 × 188; the next true boundary is packet 9's, 3 bytes early.
        let s7 = 7 * PACKET;
        assert_eq!(
            got[8..12],
            [
                format!("sbe@{s7}"),
                format!("sbe@{}", s7 + PACKET),
                format!("loss@{}", s7 + PACKET),
                format!("acq@{}", 9 * PACKET - 3),
            ]
        );
        assert_eq!(got.last().unwrap(), &format!("p19@{}", 19 * PACKET - 3));
    }
}
