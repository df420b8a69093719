//! The EBU loudness test signals (Tech 3341 for loudness and true peak, Tech 3342 for loudness
//! range), generated from their definitions as 48 kHz float WAV files.

use std::f64::consts::PI;
use std::io::Write;
use std::path::Path;

use anyhow::Result;

pub const RATE: u32 = 48_000;

/// WAV speaker masks (the same bits as FFmpeg's).
pub const STEREO: u32 = 0x3;
pub const FIVE_0: u32 = 0x1 | 0x2 | 0x4 | 0x10 | 0x20;
pub const FIVE_1: u32 = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20;

/// One stretch of a test signal: `seconds` of a sine at `hz`, with each channel's peak level in
/// dBFS (`None` = digital silence), starting at `phase_deg`.
#[derive(Clone, Debug)]
pub struct Segment {
    pub seconds: f64,
    pub hz: f64,
    pub levels_dbfs: Vec<Option<f64>>,
    pub phase_deg: f64,
    /// Raised-cosine fade in and out, seconds (0: the sine starts and stops abruptly).
    pub fade_s: f64,
}

/// A reference signal and what the specification says it measures.
#[derive(Clone, Debug)]
pub struct Reference {
    pub name: &'static str,
    pub mask: u32,
    pub segments: Vec<Segment>,
    pub expect: Expect,
}

#[derive(Clone, Copy, Debug)]
pub enum Expect {
    /// Integrated loudness, LUFS, ±0.1 LU.
    Integrated(f64),
    /// Loudness range, LU, ±1 LU.
    Range(f64),
    /// True peak, dBTP, −0.4 / +0.2 dB.
    TruePeak(f64),
}

fn stereo(seconds: f64, dbfs: f64) -> Segment {
    Segment {
        seconds,
        hz: 1000.0,
        levels_dbfs: vec![Some(dbfs), Some(dbfs)],
        phase_deg: 0.0,
        fade_s: 0.0,
    }
}

fn steps(levels: &[(f64, f64)]) -> Vec<Segment> {
    levels.iter().map(|&(s, l)| stereo(s, l)).collect()
}

/// The signals avmon is checked against.
pub fn references() -> Vec<Reference> {
    use Expect::*;
    let mut v = vec![
        Reference {
            name: "3341-1 stereo -23 dBFS",
            mask: STEREO,
            segments: steps(&[(20.0, -23.0)]),
            expect: Integrated(-23.0),
        },
        Reference {
            name: "3341-2 stereo -33 dBFS",
            mask: STEREO,
            segments: steps(&[(20.0, -33.0)]),
            expect: Integrated(-33.0),
        },
        Reference {
            name: "3341-3 -36/-23/-36",
            mask: STEREO,
            segments: steps(&[(10.0, -36.0), (60.0, -23.0), (10.0, -36.0)]),
            expect: Integrated(-23.0),
        },
        Reference {
            name: "3341-4 -72/-36/-23/-36/-72",
            mask: STEREO,
            segments: steps(&[
                (10.0, -72.0),
                (10.0, -36.0),
                (60.0, -23.0),
                (10.0, -36.0),
                (10.0, -72.0),
            ]),
            expect: Integrated(-23.0),
        },
        Reference {
            name: "3341-5 -26/-20/-26",
            mask: STEREO,
            segments: steps(&[(20.0, -26.0), (20.1, -20.0), (20.0, -26.0)]),
            expect: Integrated(-23.0),
        },
        Reference {
            name: "3341-6 5.0 channels",
            mask: FIVE_0,
            segments: vec![Segment {
                seconds: 20.0,
                hz: 1000.0,
                levels_dbfs: vec![
                    Some(-28.0),
                    Some(-28.0),
                    Some(-24.0),
                    Some(-30.0),
                    Some(-30.0),
                ],
                phase_deg: 0.0,
                fade_s: 0.0,
            }],
            expect: Integrated(-23.0),
        },
        Reference {
            // Case 6 with a loud LFE, which BS.1770 leaves out.
            name: "3341-6 + LFE at -20 dBFS (5.1)",
            mask: FIVE_1,
            segments: vec![Segment {
                seconds: 20.0,
                hz: 1000.0,
                levels_dbfs: vec![
                    Some(-28.0),
                    Some(-28.0),
                    Some(-24.0),
                    Some(-20.0),
                    Some(-30.0),
                    Some(-30.0),
                ],
                phase_deg: 0.0,
                fade_s: 0.0,
            }],
            expect: Integrated(-23.0),
        },
        Reference {
            name: "3342-1 -20/-30",
            mask: STEREO,
            segments: steps(&[(20.0, -20.0), (20.0, -30.0)]),
            expect: Range(10.0),
        },
        Reference {
            name: "3342-2 -20/-15",
            mask: STEREO,
            segments: steps(&[(20.0, -20.0), (20.0, -15.0)]),
            expect: Range(5.0),
        },
        Reference {
            name: "3342-3 -40/-20",
            mask: STEREO,
            segments: steps(&[(20.0, -40.0), (20.0, -20.0)]),
            expect: Range(20.0),
        },
        Reference {
            name: "3342-4 -50/-35/-20/-35/-50",
            mask: STEREO,
            segments: steps(&[
                (20.0, -50.0),
                (20.0, -35.0),
                (20.0, -20.0),
                (20.0, -35.0),
                (20.0, -50.0),
            ]),
            expect: Range(15.0),
        },
    ];
    // Tech 3341 cases 15–18: −6 dBFS sines near the Nyquist frequency whose sample peaks miss
    // the true peak. They fade in and out over 20 ms: an abrupt start is a step, whose
    // reconstruction really does overshoot the sine's peak (by ~0.4 dB for fs/6 at 60°, ~0.6 dB
    // for fs/8 at 67.5°), and the specified −6.0 dBTP is the steady sine's.
    for (case, div, phase) in [
        (15, 4.0, 0.0),
        (16, 4.0, 45.0),
        (17, 6.0, 60.0),
        (18, 8.0, 67.5),
    ] {
        let name: &'static str =
            Box::leak(format!("3341-{case} fs/{div} at {phase} deg, -6 dBFS").into_boxed_str());
        v.push(Reference {
            name,
            mask: STEREO,
            segments: vec![Segment {
                seconds: 5.0,
                hz: f64::from(RATE) / div,
                levels_dbfs: vec![Some(-6.0), Some(-6.0)],
                phase_deg: phase,
                fade_s: 0.02,
            }],
            expect: TruePeak(-6.0),
        });
    }
    v
}

impl Reference {
    fn channels(&self) -> usize {
        self.mask.count_ones() as usize
    }

    /// Interleaved samples.
    pub fn samples(&self) -> Vec<f32> {
        let ch = self.channels();
        let mut out = Vec::new();
        for seg in &self.segments {
            let n = (seg.seconds * f64::from(RATE)).round() as usize;
            let phase = seg.phase_deg.to_radians();
            let fade = (seg.fade_s * f64::from(RATE)).round() as usize;
            for i in 0..n {
                let edge = i.min(n - 1 - i);
                let gain = if edge < fade {
                    0.5 - 0.5 * (PI * edge as f64 / fade as f64).cos()
                } else {
                    1.0
                };
                let x = gain * (2.0 * PI * seg.hz * i as f64 / f64::from(RATE) + phase).sin();
                for c in 0..ch {
                    let level = seg.levels_dbfs.get(c).copied().flatten();
                    let a = level.map_or(0.0, |db| 10f64.powf(db / 20.0));
                    out.push((a * x) as f32);
                }
            }
        }
        out
    }

    /// Write the signal as a WAVE_FORMAT_EXTENSIBLE float file with its speaker mask.
    pub fn write(&self, path: &Path) -> Result<()> {
        let ch = self.channels() as u16;
        let samples = self.samples();
        let data_len = (samples.len() * 4) as u32;
        let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
        w.write_all(b"RIFF")?;
        w.write_all(&(4 + 8 + 40 + 8 + data_len).to_le_bytes())?;
        w.write_all(b"WAVEfmt ")?;
        w.write_all(&40u32.to_le_bytes())?;
        w.write_all(&0xFFFEu16.to_le_bytes())?; // WAVE_FORMAT_EXTENSIBLE
        w.write_all(&ch.to_le_bytes())?;
        w.write_all(&RATE.to_le_bytes())?;
        w.write_all(&(RATE * 4 * u32::from(ch)).to_le_bytes())?;
        w.write_all(&(4 * ch).to_le_bytes())?;
        w.write_all(&32u16.to_le_bytes())?;
        w.write_all(&22u16.to_le_bytes())?; // extension size
        w.write_all(&32u16.to_le_bytes())?; // valid bits
        w.write_all(&self.mask.to_le_bytes())?;
        // KSDATAFORMAT_SUBTYPE_IEEE_FLOAT
        w.write_all(&[
            0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38,
            0x9B, 0x71,
        ])?;
        w.write_all(b"data")?;
        w.write_all(&data_len.to_le_bytes())?;
        for s in samples {
            w.write_all(&s.to_le_bytes())?;
        }
        w.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_have_their_defined_lengths_levels_and_phases() {
        let refs = references();
        let r = &refs[0];
        let s = r.samples();
        assert_eq!(s.len(), 20 * 48_000 * 2);
        let peak = s.iter().fold(0f32, |m, x| m.max(x.abs()));
        let want = 10f32.powf(-23.0 / 20.0);
        assert!((peak - want).abs() < 1e-4, "peak {peak}, want {want}");
        // Case 16: fs/4 at 45°: every sample is at 0.707 of the peak, 3 dB under the true peak.
        let c16 = refs.iter().find(|r| r.name.starts_with("3341-16")).unwrap();
        let s = c16.samples();
        let sample_peak = s.iter().fold(0f32, |m, x| m.max(x.abs()));
        let true_peak = 10f32.powf(-6.0 / 20.0);
        assert!((sample_peak / true_peak - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-3);
    }

    #[test]
    fn wav_header_is_consistent() {
        let dir = std::env::temp_dir().join(format!("avmon-bench-wav-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let refs = references();
        let r = refs.iter().find(|r| r.mask == FIVE_1).unwrap();
        let path = dir.join("a.wav");
        r.write(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[0..4], b"RIFF");
        let riff = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
        assert_eq!(riff + 8, bytes.len());
        assert_eq!(u16::from_le_bytes([bytes[22], bytes[23]]), 6);
        assert_eq!(
            u32::from_le_bytes(bytes[40..44].try_into().unwrap()),
            FIVE_1
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
