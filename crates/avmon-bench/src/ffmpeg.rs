//! FFmpeg's own detection filters on the same input, for the side-by-side columns:
//! `blackdetect`, `freezedetect`, `silencedetect`, `blockdetect` and `ebur128`, in one run.
//!
//! Their settings mirror avmon's defaults where the filters have the same knob (2 s minimum
//! durations, 98 % black pixels, −60 dB silence). `blockdetect` gives a per-frame score only; an
//! event rule is ours (see [`block_events`]). `ebur128` logs short-term loudness every 100 ms; the
//! same out-of-window rule as avmon's loudness detector turns it into events.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::score::Span;

/// What FFmpeg's filters reported on one input.
#[derive(Debug, Default)]
pub struct FfmpegReport {
    pub events: Vec<Span>,
    /// `(pts_time, lavfi.block)` per frame.
    pub block: Vec<(f64, f64)>,
    /// `(t, short-term LUFS)` every 100 ms.
    pub short_term: Vec<(f64, f64)>,
    pub integrated_lufs: Option<f64>,
    pub loudness_range_lu: Option<f64>,
    pub true_peak_dbtp: Option<f64>,
}

/// Run the filters on `input` (video filters when `video`, audio filters when `audio`).
pub fn analyse(
    ffmpeg: &str,
    input: &Path,
    video: bool,
    audio: bool,
    scratch: &Path,
) -> Result<FfmpegReport> {
    let block_file = scratch.with_extension("block.txt");
    let _ = std::fs::remove_file(&block_file);
    let mut graph = Vec::new();
    let mut maps = Vec::new();
    if video {
        graph.push(format!(
            "[0:v]blackdetect=d=2:pic_th=0.98,freezedetect=n=-60dB:d=2,blockdetect,\
             metadata=mode=print:key=lavfi.block:file={}[vo]",
            block_file.display()
        ));
        maps.extend(["-map".to_string(), "[vo]".to_string()]);
    }
    if audio {
        graph.push(
            "[0:a]silencedetect=n=-60dB:d=2,ebur128=framelog=verbose:peak=true[ao]".to_string(),
        );
        maps.extend(["-map".to_string(), "[ao]".to_string()]);
    }
    let out = Command::new(ffmpeg)
        .args([
            "-hide_banner",
            "-nostdin",
            "-nostats",
            "-loglevel",
            "verbose",
        ])
        .args(["-threads", "1", "-i"])
        .arg(input)
        .args(["-filter_complex", &graph.join(";")])
        .args(&maps)
        .args(["-f", "null", "-"])
        .output()
        .with_context(|| format!("running {ffmpeg}"))?;
    let log = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!(
            "ffmpeg failed on {}: {}",
            input.display(),
            log.lines().last().unwrap_or("")
        );
    }
    let mut report = parse_log(&log);
    if video {
        let text = std::fs::read_to_string(&block_file).unwrap_or_default();
        report.block = parse_block(&text);
        let _ = std::fs::remove_file(&block_file);
    }
    Ok(report)
}

/// The number after `key` on `line` (up to the next space, comma or `|`).
fn value_after(line: &str, key: &str) -> Option<f64> {
    let rest = &line[line.find(key)? + key.len()..];
    let rest = rest.trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Events and loudness figures from FFmpeg's log.
pub fn parse_log(log: &str) -> FfmpegReport {
    let mut r = FfmpegReport::default();
    let mut freeze_start = None;
    let mut silence_start = None;
    let mut last_t: f64 = 0.0;
    let mut in_summary = false;
    for line in log.lines() {
        if let (Some(a), Some(b)) = (
            value_after(line, "black_start:"),
            value_after(line, "black_end:"),
        ) {
            r.events.push(Span::new("video.black", a, b));
        }
        if let Some(a) = value_after(line, "lavfi.freezedetect.freeze_start:") {
            freeze_start = Some(a);
        }
        if let Some(b) = value_after(line, "lavfi.freezedetect.freeze_end:") {
            if let Some(a) = freeze_start.take() {
                r.events.push(Span::new("video.freeze", a, b));
            }
        }
        if let Some(a) = value_after(line, "silence_start:") {
            silence_start = Some(a);
        }
        if let Some(b) = value_after(line, "silence_end:") {
            if let Some(a) = silence_start.take() {
                r.events.push(Span::new("audio.silence", a, b));
            }
        }
        if line.contains("TARGET:") {
            if let (Some(t), Some(s)) = (value_after(line, "t:"), value_after(line, "S:")) {
                r.short_term.push((t, s));
                last_t = last_t.max(t);
            }
        }
        if line.contains("Summary:") {
            in_summary = true;
        }
        if in_summary {
            let l = line.trim_start();
            if l.starts_with("I:") {
                r.integrated_lufs = value_after(l, "I:");
            } else if l.starts_with("LRA:") {
                r.loudness_range_lu = value_after(l, "LRA:");
            } else if l.starts_with("Peak:") {
                r.true_peak_dbtp = value_after(l, "Peak:");
            }
        }
    }
    // Open at the end of the input: close there, as avmon does.
    let end = last_t;
    if let Some(a) = freeze_start {
        r.events.push(Span::new("video.freeze", a, end.max(a)));
    }
    if let Some(a) = silence_start {
        r.events.push(Span::new("audio.silence", a, end.max(a)));
    }
    r
}

/// `(pts_time, score)` pairs from `metadata=mode=print` output.
pub fn parse_block(text: &str) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let mut t = None;
    for line in text.lines() {
        if let Some(v) = value_after(line, "pts_time:") {
            t = Some(v);
        } else if let Some(v) = line.strip_prefix("lavfi.block=") {
            if let (Some(t), Ok(v)) = (t, v.trim().parse()) {
                out.push((t, v));
            }
        }
    }
    out
}

/// `blockdetect` has no event output: frames scoring above `threshold` are damaged, and damaged
/// frames less than `merge_s` apart form one event.
pub fn block_events(scores: &[(f64, f64)], threshold: f64, merge_s: f64) -> Vec<Span> {
    let mut out: Vec<Span> = Vec::new();
    for &(t, v) in scores {
        if v <= threshold {
            continue;
        }
        match out.last_mut() {
            Some(last) if t - last.end <= merge_s => last.end = t,
            _ => out.push(Span::new("video.corruption", t, t)),
        }
    }
    out
}

/// Short-term loudness outside `target ± tolerance` for at least `min_s` (ignoring values below
/// `gate` LUFS, which are silence, not a loudness fault) as `audio.loudness` events.
pub fn loudness_events(
    short_term: &[(f64, f64)],
    target: f64,
    tolerance: f64,
    gate: f64,
    min_s: f64,
) -> Vec<Span> {
    let mut out = Vec::new();
    let mut run: Option<f64> = None;
    let mut last = 0.0;
    for &(t, s) in short_term {
        let outside = s > gate && (s - target).abs() > tolerance;
        match (outside, run) {
            (true, None) => run = Some(t),
            (false, Some(a)) => {
                if t - a >= min_s {
                    out.push(Span::new("audio.loudness", a, t));
                }
                run = None;
            }
            _ => {}
        }
        last = t;
    }
    if let Some(a) = run {
        if last - a >= min_s {
            out.push(Span::new("audio.loudness", a, last));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
[blackdetect @ 0x1] black_start:6.04 black_end:10.04 black_duration:4
[freezedetect @ 0x2] lavfi.freezedetect.freeze_start: 16.08
[freezedetect @ 0x2] lavfi.freezedetect.freeze_duration: 5
[freezedetect @ 0x2] lavfi.freezedetect.freeze_end: 21.08
[silencedetect @ 0x3] silence_start: 8.0213
[silencedetect @ 0x3] silence_end: 12.0213 | silence_duration: 4
[Parsed_ebur128_1 @ 0x4] t: 0.1  TARGET:-23 LUFS    M:-120.7 S:-120.7     I: -70.0 LUFS       LRA:   0.0 LU
[Parsed_ebur128_1 @ 0x4] t: 3.1  TARGET:-23 LUFS    M: -20.5 S: -21.0     I: -21.0 LUFS       LRA:   0.0 LU
[freezedetect @ 0x2] lavfi.freezedetect.freeze_start: 27.5
[Parsed_ebur128_1 @ 0x4] Summary:

  Integrated loudness:
    I:         -21.1 LUFS
    Threshold: -31.1 LUFS

  Loudness range:
    LRA:        20.0 LU

  True peak:
    Peak:      -18.1 dBFS
";

    #[test]
    fn parses_every_filter_and_closes_open_events_at_the_end() {
        let r = parse_log(LOG);
        assert_eq!(
            r.events,
            [
                Span::new("video.black", 6.04, 10.04),
                Span::new("video.freeze", 16.08, 21.08),
                Span::new("audio.silence", 8.0213, 12.0213),
                Span::new("video.freeze", 27.5, 27.5),
            ]
        );
        assert_eq!(r.short_term, [(0.1, -120.7), (3.1, -21.0)]);
        assert_eq!(r.integrated_lufs, Some(-21.1));
        assert_eq!(r.loudness_range_lu, Some(20.0));
        assert_eq!(r.true_peak_dbtp, Some(-18.1));
    }

    #[test]
    fn block_scores_become_merged_events() {
        let text = "frame:0 pts:0 pts_time:0\nlavfi.block=2.0\nframe:1 pts:1 pts_time:0.04\n\
                    lavfi.block=9.0\nframe:2 pts:2 pts_time:0.08\nlavfi.block=8.5\n\
                    frame:3 pts:3 pts_time:2\nlavfi.block=9.0\n";
        let s = parse_block(text);
        assert_eq!(s.len(), 4);
        let e = block_events(&s, 5.0, 0.5);
        assert_eq!(
            e,
            [
                Span::new("video.corruption", 0.04, 0.08),
                Span::new("video.corruption", 2.0, 2.0)
            ]
        );
    }

    #[test]
    fn loudness_rule_ignores_silence_and_short_excursions() {
        let mut st = Vec::new();
        for i in 0..300 {
            let t = i as f64 * 0.1;
            let s = match t {
                t if t < 5.0 => -23.0,
                t if t < 6.0 => -12.0, // 1 s excursion: too short
                t if t < 10.0 => -23.0,
                t if t < 20.0 => -10.0,  // 10 s too loud
                t if t < 25.0 => -120.0, // silence: gated out
                _ => -23.0,
            };
            st.push((t, s));
        }
        let e = loudness_events(&st, -23.0, 5.0, -60.0, 3.0);
        assert_eq!(e.len(), 1);
        assert!((e[0].start - 10.0).abs() < 1e-9 && (e[0].end - 20.0).abs() < 1e-9);
    }
}
