//! What a fetched segment must look like before its bytes go on: decrypted (AES-128), not
//! empty, and, for MPEG-TS, packets that start with the sync byte every 188 bytes.
//!
//! A segment is taken for MPEG-TS unless it has an initialisation section (`EXT-X-MAP`: fMP4)
//! or its name says another container (packed audio, fMP4, WebVTT). For those only emptiness is
//! checked here; their decoding is the decoder's business.

use aes::cipher::{block_padding::Pkcs7, BlockModeDecrypt, KeyIvInit};

use crate::manifest::SegmentRef;

pub const TS_PACKET: usize = 188;
const TS_SYNC: u8 = 0x47;

/// File extensions of segments that are not MPEG-TS.
const NOT_TS: [&str; 12] = [
    "aac", "ac3", "ec3", "mp3", "m4s", "mp4", "m4a", "m4v", "cmfv", "cmfa", "vtt", "webvtt",
];

/// Whether `seg` is expected to be MPEG-TS.
pub fn is_ts(seg: &SegmentRef) -> bool {
    if seg.init.is_some() {
        return false;
    }
    let name = seg.uri.path().rsplit('/').next().unwrap_or("");
    match name.rsplit_once('.') {
        Some((_, ext)) => !NOT_TS.contains(&ext.to_ascii_lowercase().as_str()),
        None => true,
    }
}

/// Why `bytes` (decrypted) cannot be decoded as `seg`, or `None` when they can.
pub fn problem(seg: &SegmentRef, bytes: &[u8]) -> Option<String> {
    if bytes.is_empty() {
        return Some("empty segment".into());
    }
    if !is_ts(seg) {
        return None;
    }
    if bytes[0] != TS_SYNC {
        return Some(format!(
            "not MPEG-TS: byte 0 is 0x{:02x}, not the sync byte 0x47",
            bytes[0]
        ));
    }
    let lost = (0..bytes.len())
        .step_by(TS_PACKET)
        .find(|&i| bytes[i] != TS_SYNC)?;
    Some(format!(
        "MPEG-TS sync lost at byte {lost} (packet {})",
        lost / TS_PACKET
    ))
}

/// The IV of a segment without an explicit one: its sequence number, big-endian (RFC 8216, 5.2).
pub fn sequence_iv(sequence: u64) -> [u8; 16] {
    u128::from(sequence).to_be_bytes()
}

/// Decrypt an AES-128-CBC segment in place and strip its PKCS#7 padding.
pub fn decrypt_aes128(key: &[u8; 16], iv: &[u8; 16], data: &mut Vec<u8>) -> Result<(), String> {
    if data.len() % 16 != 0 {
        return Err(format!(
            "AES-128: {} bytes is not a whole number of 16-byte blocks",
            data.len()
        ));
    }
    let plain = cbc::Decryptor::<aes::Aes128>::new(key.into(), iv.into())
        .decrypt_padded::<Pkcs7>(data)
        .map_err(|_| "AES-128: bad padding after decryption (wrong key or IV?)".to_owned())?
        .len();
    data.truncate(plain);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Encryption, InitRef};
    use aes::cipher::BlockModeEncrypt;
    use url::Url;

    fn seg(name: &str) -> SegmentRef {
        SegmentRef {
            sequence: 0,
            uri: Url::parse(&format!("http://o.test/{name}")).unwrap(),
            duration: 1.0,
            discontinuity: false,
            range: None,
            encryption: Encryption::None,
            init: None,
            cue: None,
            gap_before_s: None,
            presentation_s: None,
        }
    }

    fn ts(packets: usize) -> Vec<u8> {
        let mut b = vec![0xffu8; packets * TS_PACKET];
        for p in 0..packets {
            b[p * TS_PACKET] = TS_SYNC;
        }
        b
    }

    #[test]
    fn ts_segments_need_sync_bytes_every_188_bytes() {
        let s = seg("seg1.ts");
        assert_eq!(problem(&s, &ts(10)), None);
        // A trailing partial packet still starts with a sync byte: decodable up to there.
        assert_eq!(problem(&s, &ts(10)[..1000]), None);
        assert_eq!(problem(&s, &[]).as_deref(), Some("empty segment"));
        let html = b"<html>404</html>";
        assert!(problem(&s, html).unwrap().contains("byte 0 is 0x3c"));
        let mut b = ts(10);
        b[5 * TS_PACKET] = 0;
        assert!(problem(&s, &b)
            .unwrap()
            .contains("sync lost at byte 940 (packet 5)"));
        // Names without a known extension are taken for TS too.
        assert!(problem(&seg("chunk?id=3"), html).is_some());
    }

    #[test]
    fn other_containers_are_only_checked_for_emptiness() {
        for name in ["a.aac", "b.M4S", "c.mp4", "d.vtt"] {
            assert!(!is_ts(&seg(name)), "{name}");
            assert_eq!(problem(&seg(name), b"ftyp..."), None);
            assert!(problem(&seg(name), b"").is_some());
        }
        let mut s = seg("e.ts");
        s.init = Some(InitRef {
            uri: Url::parse("http://o.test/init").unwrap(),
            range: None,
        });
        assert!(!is_ts(&s));
    }

    #[test]
    fn aes128_round_trip_and_wrong_key() {
        let key = [7u8; 16];
        let iv = sequence_iv(258);
        assert_eq!(iv[14..], [1, 2]);
        let plain = ts(3);
        let mut buf = plain.clone();
        buf.resize(plain.len() + 16, 0);
        let n = cbc::Encryptor::<aes::Aes128>::new((&key).into(), (&iv).into())
            .encrypt_padded::<Pkcs7>(&mut buf, plain.len())
            .unwrap()
            .len();
        buf.truncate(n);
        let cipher = buf.clone();
        decrypt_aes128(&key, &iv, &mut buf).unwrap();
        assert_eq!(buf, plain);
        // A wrong key gives garbage: refused by the padding, or (1 in 256) by the TS check.
        let mut bad = cipher.clone();
        let refused = decrypt_aes128(&[8u8; 16], &iv, &mut bad).is_err()
            || problem(&seg("x.ts"), &bad).is_some();
        assert!(refused);
        let mut odd = cipher[..cipher.len() - 1].to_vec();
        assert!(decrypt_aes128(&key, &iv, &mut odd)
            .unwrap_err()
            .contains("whole number"));
    }
}
