//! Arbitrary bytes as an SCTE 35 splice_info_section (`avmon_transport::scte35::parse`), and as
//! the same bytes with a correct CRC_32 appended (so that the parser gets past the CRC and reads
//! the command and descriptors). What must hold: no panic; a reading's splice and break times are
//! 33-bit values, its segmentation UPIDs no longer than their 8-bit length allows.

#![no_main]

use avmon_transport::psi::crc32_mpeg2;
use avmon_transport::scte35::{parse, Command};
use libfuzzer_sys::fuzz_target;

fn judge(section: &[u8]) {
    if let Ok(info) = parse(section) {
        assert!(info.pts_adjustment < 1 << 33);
        match &info.command {
            Command::Insert(i) => {
                assert!(i.pts.is_none_or(|p| p < 1 << 33));
                assert!(i.duration.is_none_or(|(d, _)| d < 1 << 33));
            }
            Command::TimeSignal { pts } => assert!(pts.is_none_or(|p| p < 1 << 33)),
            _ => {}
        }
        for s in &info.segmentation {
            assert!(s.upid.len() <= 255);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    judge(data);
    // The same body with its length and CRC made right: table_id 0xFC, section_length, body, CRC.
    let body = &data[..data.len().min(4000)];
    let len = body.len() + 4;
    let mut s = vec![0xFC, 0x30 | (len >> 8) as u8 & 0x0F, len as u8];
    s.extend_from_slice(body);
    let crc = crc32_mpeg2(&s);
    s.extend(crc.to_be_bytes());
    judge(&s);
});
