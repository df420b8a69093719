//! A DASH video and audio Representation as one fragmented MP4 stream, for one decoder.
//!
//! DASH packages video and audio apart (each Representation its own initialisation section,
//! each track numbered 1). avmon decodes a stream with one demuxer, so the two are joined at the
//! box level, without touching a sample: [`merge_init`] puts the audio's `trak` (and its `trex`)
//! into the video's `moov` under a new track number, and [`retrack`] renumbers an audio
//! segment's track fragments (`tfhd`) and index (`sidx`) in place. Fragments stay whole
//! (`moof` with its `mdat`), so their moof-relative data offsets stay right; a fragment with an
//! absolute base data offset cannot be moved, and is refused.

/// One box: its type, where it starts, where its payload starts, where it ends.
#[derive(Clone, Copy, Debug)]
struct Bx {
    kind: [u8; 4],
    start: usize,
    body: usize,
    end: usize,
}

/// The boxes of `data[from..to]`, in order.
fn boxes(data: &[u8], from: usize, to: usize) -> Result<Vec<Bx>, String> {
    let mut out = Vec::new();
    let mut at = from;
    while at < to {
        if to - at < 8 {
            return Err(format!("a truncated box header at byte {at}"));
        }
        let size32 = u32::from_be_bytes(data[at..at + 4].try_into().unwrap_or_default()) as u64;
        let kind: [u8; 4] = data[at + 4..at + 8].try_into().unwrap_or_default();
        let (size, header) = match size32 {
            0 => ((to - at) as u64, 8),
            1 => {
                if to - at < 16 {
                    return Err(format!("a truncated large box at byte {at}"));
                }
                let s = u64::from_be_bytes(data[at + 8..at + 16].try_into().unwrap_or_default());
                (s, 16)
            }
            s => (s, 8),
        };
        if size < header as u64 || size > (to - at) as u64 {
            return Err(format!(
                "box {:?} at byte {at}: size {size} does not fit",
                String::from_utf8_lossy(&kind)
            ));
        }
        let end = at + size as usize;
        out.push(Bx {
            kind,
            start: at,
            body: at + header,
            end,
        });
        at = end;
    }
    Ok(out)
}

fn find(list: &[Bx], kind: &[u8; 4]) -> Option<Bx> {
    list.iter().copied().find(|b| &b.kind == kind)
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, String> {
    data.get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| format!("a field past the end at byte {at}"))
}

fn put_u32(data: &mut [u8], at: usize, v: u32) -> Result<(), String> {
    data.get_mut(at..at + 4)
        .map(|b| b.copy_from_slice(&v.to_be_bytes()))
        .ok_or_else(|| format!("a field past the end at byte {at}"))
}

/// Where a `tkhd`'s track_ID is.
fn tkhd_id_at(data: &[u8], tkhd: Bx) -> Result<usize, String> {
    let version = *data.get(tkhd.body).ok_or("an empty tkhd")?;
    Ok(tkhd.body + 4 + if version == 1 { 16 } else { 8 })
}

/// A track of an init section: its id and handler (`vide`, `soun`, …).
fn tracks(data: &[u8], moov: Bx) -> Result<Vec<(u32, [u8; 4], Bx)>, String> {
    let mut out = Vec::new();
    for trak in boxes(data, moov.body, moov.end)?
        .into_iter()
        .filter(|b| &b.kind == b"trak")
    {
        let inner = boxes(data, trak.body, trak.end)?;
        let tkhd = find(&inner, b"tkhd").ok_or("a trak without tkhd")?;
        let id = u32_at(data, tkhd_id_at(data, tkhd)?)?;
        let handler = find(&inner, b"mdia")
            .map(|m| boxes(data, m.body, m.end))
            .transpose()?
            .and_then(|m| find(&m, b"hdlr"))
            .and_then(|h| data.get(h.body + 8..h.body + 12))
            .and_then(|b| b.try_into().ok())
            .unwrap_or(*b"    ");
        out.push((id, handler, trak));
    }
    Ok(out)
}

fn moov_of(data: &[u8]) -> Result<(Vec<Bx>, Bx), String> {
    let top = boxes(data, 0, data.len())?;
    let moov = find(&top, b"moov").ok_or("no moov box: not an MP4 initialisation section")?;
    Ok((top, moov))
}

/// Write a box of `kind` holding `body`.
fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&((body.len() + 8) as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(body);
    out
}

/// The video initialisation section with the audio one's track added: the joined section, and
/// the audio track's number in it. Refused (with a reason) when either is not a fragmented MP4
/// initialisation section, or the video one already has sound.
pub fn merge_init(video: &[u8], audio: &[u8]) -> Result<(Vec<u8>, u32), String> {
    let (vtop, vmoov) = moov_of(video).map_err(|e| format!("video: {e}"))?;
    let (_, amoov) = moov_of(audio).map_err(|e| format!("audio: {e}"))?;
    let vtracks = tracks(video, vmoov)?;
    if vtracks.iter().any(|(_, h, _)| h == b"soun") {
        return Err("the video Representation carries sound already".into());
    }
    let atracks = tracks(audio, amoov)?;
    let (aid, _, atrak) = atracks
        .iter()
        .copied()
        .find(|(_, h, _)| h == b"soun")
        .ok_or("the audio initialisation section has no sound track")?;
    let new_id = vtracks.iter().map(|t| t.0).max().unwrap_or(0) + 1;

    // The audio trak, renumbered.
    let mut trak = audio[atrak.start..atrak.end].to_vec();
    let inner = boxes(&trak, atrak.body - atrak.start, trak.len())?;
    let tkhd = find(&inner, b"tkhd").ok_or("a trak without tkhd")?;
    let at = tkhd_id_at(&trak, tkhd)?;
    put_u32(&mut trak, at, new_id)?;

    // Its trex, renumbered.
    let achildren = boxes(audio, amoov.body, amoov.end)?;
    let amvex = find(&achildren, b"mvex").ok_or("audio: no mvex (not fragmented)")?;
    let mut trex = None;
    for b in boxes(audio, amvex.body, amvex.end)? {
        if &b.kind == b"trex" && u32_at(audio, b.body + 4)? == aid {
            let mut t = audio[b.start..b.end].to_vec();
            put_u32(&mut t, b.body - b.start + 4, new_id)?;
            trex = Some(t);
        }
    }
    let trex = trex.ok_or("audio: no trex for its track")?;

    // The video moov: its children, the audio trak after its traks, the trex in its mvex.
    let vchildren = boxes(video, vmoov.body, vmoov.end)?;
    let vmvex = find(&vchildren, b"mvex").ok_or("video: no mvex (not fragmented)")?;
    let mut moov_body = Vec::with_capacity(vmoov.end - vmoov.start + trak.len() + trex.len());
    let last_trak = vchildren
        .iter()
        .rposition(|b| &b.kind == b"trak")
        .ok_or("video: no trak")?;
    for (i, b) in vchildren.iter().enumerate() {
        match &b.kind {
            b"mvhd" => {
                let mut m = video[b.start..b.end].to_vec();
                let len = m.len();
                put_u32(&mut m, len - 4, new_id + 1)?;
                moov_body.extend_from_slice(&m);
            }
            b"mvex" => {
                let mut body = video[vmvex.body..vmvex.end].to_vec();
                body.extend_from_slice(&trex);
                moov_body.extend_from_slice(&boxed(b"mvex", &body));
            }
            _ => moov_body.extend_from_slice(&video[b.start..b.end]),
        }
        if i == last_trak {
            moov_body.extend_from_slice(&trak);
        }
    }
    let mut out = Vec::with_capacity(video.len() + trak.len() + trex.len());
    for b in vtop {
        if &b.kind == b"moov" {
            out.extend_from_slice(&boxed(b"moov", &moov_body));
        } else {
            out.extend_from_slice(&video[b.start..b.end]);
        }
    }
    Ok((out, new_id))
}

/// A media segment with every track fragment (`tfhd`) and index (`sidx`) renumbered to
/// `track`, in place.
pub fn retrack(segment: &mut [u8], track: u32) -> Result<(), String> {
    let top = boxes(segment, 0, segment.len())?;
    for b in top {
        match &b.kind {
            b"sidx" => put_u32(segment, b.body + 4, track)?,
            b"moof" => {
                for traf in boxes(segment, b.body, b.end)?
                    .into_iter()
                    .filter(|t| &t.kind == b"traf")
                {
                    let tfhd = find(&boxes(segment, traf.body, traf.end)?, b"tfhd")
                        .ok_or("a traf without tfhd")?;
                    let flags = u32_at(segment, tfhd.body)? & 0x00FF_FFFF;
                    if flags & 0x1 != 0 {
                        return Err("a track fragment with an absolute base data offset".into());
                    }
                    put_u32(segment, tfhd.body + 4, track)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(kind: &[u8; 4], version: u8, body: &[u8]) -> Vec<u8> {
        let mut b = vec![version, 0, 0, 0];
        b.extend_from_slice(body);
        boxed(kind, &b)
    }

    /// A minimal init section with one track `id` of `handler`.
    fn init(id: u32, handler: &[u8; 4]) -> Vec<u8> {
        let mut tkhd = vec![0u8; 8];
        tkhd.extend_from_slice(&id.to_be_bytes());
        tkhd.extend_from_slice(&[0u8; 68]);
        let mut hdlr = vec![0u8; 4];
        hdlr.extend_from_slice(handler);
        hdlr.extend_from_slice(&[0u8; 13]);
        let mdia = boxed(b"mdia", &full(b"hdlr", 0, &hdlr));
        let trak = boxed(b"trak", &[full(b"tkhd", 0, &tkhd), mdia].concat());
        let mut trex = id.to_be_bytes().to_vec();
        trex.extend_from_slice(&[0u8; 16]);
        let mvex = boxed(b"mvex", &full(b"trex", 0, &trex));
        let mut mvhd = vec![0u8; 92];
        mvhd.extend_from_slice(&(id + 1).to_be_bytes());
        let moov = boxed(b"moov", &[full(b"mvhd", 0, &mvhd), trak, mvex].concat());
        [boxed(b"ftyp", b"iso6"), moov].concat()
    }

    #[test]
    fn the_audio_track_joins_the_video_moov_renumbered() {
        let (joined, id) = merge_init(&init(1, b"vide"), &init(1, b"soun")).unwrap();
        assert_eq!(id, 2);
        let (_, moov) = moov_of(&joined).unwrap();
        let t: Vec<_> = tracks(&joined, moov)
            .unwrap()
            .iter()
            .map(|t| (t.0, t.1))
            .collect();
        assert_eq!(t, [(1, *b"vide"), (2, *b"soun")]);
        let children = boxes(&joined, moov.body, moov.end).unwrap();
        let mvex = find(&children, b"mvex").unwrap();
        let trex: Vec<u32> = boxes(&joined, mvex.body, mvex.end)
            .unwrap()
            .iter()
            .map(|b| u32_at(&joined, b.body + 4).unwrap())
            .collect();
        assert_eq!(trex, [1, 2]);
        let mvhd = find(&children, b"mvhd").unwrap();
        assert_eq!(u32_at(&joined, mvhd.end - 4).unwrap(), 3, "next_track_ID");
        // Refused: sound already there, or not an init section.
        assert!(merge_init(&init(1, b"soun"), &init(1, b"soun")).is_err());
        assert!(merge_init(b"\0\0\0\x08free", &init(1, b"soun")).is_err());
    }

    #[test]
    fn segments_are_renumbered_in_place_and_hostile_bytes_refused() {
        let mut tfhd = 0x0002_0000u32.to_be_bytes().to_vec(); // default-base-is-moof
        tfhd.extend_from_slice(&1u32.to_be_bytes());
        let traf = boxed(b"traf", &boxed(b"tfhd", &tfhd));
        let moof = boxed(b"moof", &[full(b"mfhd", 0, &[0, 0, 0, 1]), traf].concat());
        let sidx = full(b"sidx", 0, &[0, 0, 0, 1, 0, 0, 0, 0]);
        let mut seg = [boxed(b"styp", b"msdh"), sidx, moof, boxed(b"mdat", b"xyz")].concat();
        let before = seg.len();
        retrack(&mut seg, 2).unwrap();
        assert_eq!(seg.len(), before);
        let ids: Vec<usize> = seg
            .windows(4)
            .enumerate()
            .filter(|(_, w)| *w == [0, 0, 0, 2])
            .map(|(i, _)| i)
            .collect();
        assert_eq!(ids.len(), 2, "sidx and tfhd renumbered");
        // An absolute base data offset cannot be moved.
        let mut abs = seg.clone();
        let i = abs.windows(4).position(|w| w == b"tfhd").unwrap();
        abs[i + 7] |= 1;
        assert!(retrack(&mut abs, 2).is_err());
        // Truncated or oversized boxes: an error, never a panic.
        for cut in 0..seg.len() {
            let mut s = seg[..cut].to_vec();
            let _ = retrack(&mut s, 2);
        }
        let mut huge = seg.clone();
        huge[0] = 0xFF;
        assert!(retrack(&mut huge, 2).is_err());
    }
}
