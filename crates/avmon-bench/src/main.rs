//! `avmon-bench accuracy`: score every detector on a generated, labelled corpus, side by side with
//! FFmpeg's own filters on the same files in the same run, and check loudness against the EBU test
//! signals. Prints Markdown tables (the docs keep a copy) and writes the raw figures as JSON.
//!
//! `bench/accuracy.sh` builds avmon and runs this.
//!
//! `avmon-bench cost` (`bench/cost.sh`): CPU, memory, streams per host and alert latency of
//! avmon against FFmpeg on the same inputs (see [`cost`]).

mod corpus;
mod cost;
mod ffmpeg;
mod score;
mod wav;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};

use corpus::{Item, Post};
use score::{score_item, Scores, Span};

#[derive(Parser)]
#[command(name = "avmon-bench", about = "avmon's benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Detector accuracy on the labelled corpus, against FFmpeg's filters.
    Accuracy {
        /// The avmon binary to score.
        #[arg(long, default_value = "target/release/avmon")]
        avmon: String,
        #[arg(long, default_value = "ffmpeg")]
        ffmpeg: String,
        /// Where the corpus is generated (reused when its recipes did not change).
        #[arg(long, default_value = "target/accuracy")]
        dir: PathBuf,
        /// Seconds per item.
        #[arg(long, default_value_t = 30.0)]
        duration: f64,
        /// Two contents only.
        #[arg(long)]
        quick: bool,
        /// Only items whose name contains this.
        #[arg(long)]
        only: Option<String>,
        /// Items analysed at once.
        #[arg(long, default_value_t = 2)]
        jobs: usize,
        /// Write the raw results here as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Seconds of tolerance when matching a detection to a label.
        #[arg(long, default_value_t = 0.5)]
        slack: f64,
        /// The fidelity tier avmon checks at (`check --tier`): full, reference, keyframes or
        /// transport. Below full, give `--slack` the keyframe interval (2 s here) for keyframes.
        #[arg(long, default_value = "full")]
        tier: String,
        /// `check --keyframe-interval`: at keyframes, one keyframe decoded per this many
        /// seconds at most (0: every keyframe). Give `--slack` the interval.
        #[arg(long, default_value_t = 0.0)]
        keyframe_interval: f64,
        /// Score avmon alone: do not run FFmpeg's filters (their columns show `–`). For the
        /// per-tier runs, where FFmpeg's side does not change.
        #[arg(long)]
        no_ffmpeg: bool,
    },
    /// What a monitored stream costs: CPU per stream-hour against FFmpeg's decode and detection
    /// chain, memory, streams per host, alert latency, and a profile.
    Cost {
        /// The avmon binary to measure.
        #[arg(long, default_value = "target/release/avmon")]
        avmon: String,
        #[arg(long, default_value = "ffmpeg")]
        ffmpeg: String,
        /// Where the inputs are generated (reused when their recipes did not change).
        #[arg(long, default_value = "target/cost")]
        dir: PathBuf,
        /// Seconds of each input (720p25 and 1080p25).
        #[arg(long, default_value_t = 60.0)]
        duration: f64,
        /// Interleaved runs of each command; the CPU figures are their medians.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Parts to run (repeatable): cpu, memory, latency, profile, streams. Default: all but
        /// streams, which --streams adds.
        #[arg(long = "only", value_name = "PART")]
        only: Vec<String>,
        /// Also measure streams per host (takes minutes).
        #[arg(long)]
        streams: bool,
        /// Most streams tried for streams per host.
        #[arg(long, default_value_t = 32)]
        max_streams: usize,
        /// Seconds each streams-per-host stage is watched for.
        #[arg(long, default_value_t = 30.0)]
        window: f64,
        /// Black defects in the latency stream (one every 12 s).
        #[arg(long, default_value_t = 10)]
        defects: usize,
        /// Streams of the degradation part (`--only degrade`): 1080p25, more than the workers
        /// hold at full.
        #[arg(long, default_value_t = 16)]
        degrade_streams: usize,
        /// `[service] workers` of the degradation part: the host's size for it.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Streams of the scheduling part (`--only sched`): 720p25.
        #[arg(long, default_value_t = 24)]
        sched_streams: usize,
        /// Streams of the transport-tier part (`--only transport`): 5 Mbit/s each.
        #[arg(long, default_value_t = 100)]
        transport_streams: usize,
        /// Streams of the tiers part (`--only tiers`) at `full`, and at `keyframes`: the same
        /// 5 Mbit/s input on one worker.
        #[arg(long, num_args = 2, value_names = ["FULL", "KEYFRAMES"], default_values_t = [16, 100])]
        tier_streams: Vec<usize>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Cost {
            avmon,
            ffmpeg,
            dir,
            duration,
            runs,
            only,
            streams,
            max_streams,
            window,
            defects,
            degrade_streams,
            workers,
            sched_streams,
            transport_streams,
            tier_streams,
        } => {
            const PARTS: [&str; 9] = [
                "cpu",
                "memory",
                "latency",
                "profile",
                "streams",
                "degrade",
                "sched",
                "transport",
                "tiers",
            ];
            if let Some(bad) = only.iter().find(|p| !PARTS.contains(&p.as_str())) {
                bail!("--only {bad:?}: not one of {}", PARTS.join(", "));
            }
            let mut parts = if only.is_empty() {
                PARTS[..4].iter().map(|p| p.to_string()).collect()
            } else {
                only
            };
            if streams && !parts.iter().any(|p| p == "streams") {
                parts.push("streams".into());
            }
            cost::run(&cost::Options {
                avmon,
                ffmpeg,
                dir,
                duration,
                runs: runs.max(1),
                parts,
                max_streams,
                window,
                defects,
                degrade_streams,
                workers,
                sched_streams,
                transport_streams,
                tier_streams: (tier_streams[0], tier_streams[1]),
            })
        }
        Cmd::Accuracy {
            avmon,
            ffmpeg,
            dir,
            duration,
            quick,
            only,
            jobs,
            json,
            slack,
            tier,
            keyframe_interval,
            no_ffmpeg,
        } => {
            std::fs::create_dir_all(&dir)?;
            let tools = Tools {
                avmon,
                ffmpeg,
                tier,
                keyframe_interval,
                ffmpeg_filters: !no_ffmpeg,
            };
            let mut items = corpus::items(duration, quick);
            if let Some(o) = &only {
                items.retain(|i| i.name.contains(o.as_str()));
            }
            let results = analyse_all(&tools, &dir, &items, jobs.max(1));
            let loudness = if only.is_none() || only.as_deref() == Some("loudness") {
                loudness_references(&tools, &dir)?
            } else {
                Vec::new()
            };
            let (text, raw) = report(&items, &results, &loudness, slack);
            let interval = if tools.keyframe_interval > 0.0 {
                format!(", keyframe interval {} s", tools.keyframe_interval)
            } else {
                String::new()
            };
            println!("avmon checked at tier {}{interval}\n\n{text}", tools.tier);
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&raw)?)?;
            }
            Ok(())
        }
    }
}

struct Tools {
    avmon: String,
    ffmpeg: String,
    /// `check --tier`.
    tier: String,
    /// `check --keyframe-interval`.
    keyframe_interval: f64,
    /// Whether FFmpeg's own filters are run and scored too.
    ffmpeg_filters: bool,
}

/// What both monitors said about one item.
struct Outcome {
    truths: Vec<Span>,
    avmon: Vec<Span>,
    avmon_summary: Value,
    /// FFmpeg's filters on the same file; `None` when not run (`--no-ffmpeg`).
    ffmpeg: Option<ffmpeg::FfmpegReport>,
    /// For damage transcoded again: per corruption label, how visible it is.
    visibility: Vec<Visibility>,
}

/// How visible one damaged stretch is: the damaged decode (what the transcoder was given)
/// against the clean source, frame by frame, over the label.
struct Visibility {
    start: f64,
    /// Lowest luma PSNR in the span (dB; `None`: every frame identical).
    min_psnr: Option<f64>,
    /// Frames below [`VISIBLE_PSNR_DB`].
    visible_frames: usize,
    /// Lowest luma PSNR in the span with both pictures scaled to a quarter of their size (area
    /// average): the damage as it shows at a normal viewing distance, where grain displaced by a
    /// pixel or two (concealment copying a slowly moving fine texture) no longer counts.
    min_psnr_viewing: Option<f64>,
}

/// One row of the transcoded-damage table.
struct VisibleRow {
    item: String,
    start: f64,
    psnr: Option<f64>,
    frames: usize,
    viewing: Option<f64>,
    found: bool,
}

/// Both pictures are scaled down by this (width and height) for [`Visibility::min_psnr_viewing`].
const VIEWING_SCALE: u32 = 4;

/// Below this luma PSNR against the clean source, a frame's damage is plainly visible.
const VISIBLE_PSNR_DB: f64 = 30.0;

const CORRUPTION: &str = "video.corruption";

/// Luma PSNR of each frame of `damaged` against `clean`, by media time (FFmpeg's `psnr` filter,
/// which pairs frames by timestamp).
fn psnr_per_frame(
    tools: &Tools,
    clean: &Path,
    damaged: &Path,
    fps: f64,
    scale: u32,
) -> Result<Vec<(f64, f64)>> {
    let graph = if scale > 1 {
        format!(
            "[0:v]scale=iw/{scale}:ih/{scale}:flags=area[a];\
             [1:v]scale=iw/{scale}:ih/{scale}:flags=area[b];[a][b]psnr=stats_file=-"
        )
    } else {
        "[0:v][1:v]psnr=stats_file=-".to_string()
    };
    let out = run(Command::new(&tools.ffmpeg)
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-i"])
        .arg(damaged)
        .arg("-i")
        .arg(clean)
        .args(["-lavfi", &graph, "-f", "null", "-"]))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|line| {
            let field = |name: &str| {
                line.split_whitespace()
                    .find_map(|f| f.strip_prefix(name))
                    .map(str::to_string)
            };
            let n: f64 = field("n:")?.parse().ok()?;
            let psnr = match field("psnr_y:")?.as_str() {
                "inf" => f64::INFINITY,
                v => v.parse().ok()?,
            };
            Some(((n - 1.0) / fps, psnr))
        })
        .collect())
}

fn visibility(tools: &Tools, dir: &Path, item: &Item, truths: &[Span]) -> Result<Vec<Visibility>> {
    let fps = corpus::CONTENTS
        .iter()
        .find(|c| c.name == item.content)
        .map_or(25.0, |c| f64::from(c.fps));
    let (clean, damaged) = (
        dir.join(format!("{}.src.ts", item.name)),
        dir.join(format!("{}.damaged.ts", item.name)),
    );
    let full = psnr_per_frame(tools, &clean, &damaged, fps, 1)?;
    let viewing = psnr_per_frame(tools, &clean, &damaged, fps, VIEWING_SCALE)?;
    Ok(truths
        .iter()
        .filter(|t| t.kind == CORRUPTION)
        .map(|t| {
            let span = |psnr: &[(f64, f64)]| -> Vec<f64> {
                psnr.iter()
                    .filter(|(at, _)| *at >= t.start - 0.5 / fps && *at < t.end)
                    .map(|&(_, p)| p)
                    .collect()
            };
            let lowest = |v: &[f64]| v.iter().copied().reduce(f64::min).filter(|p| p.is_finite());
            let (span, span_viewing) = (span(&full), span(&viewing));
            Visibility {
                start: t.start,
                min_psnr: lowest(&span),
                visible_frames: span.iter().filter(|&&p| p < VISIBLE_PSNR_DB).count(),
                min_psnr_viewing: lowest(&span_viewing),
            }
        })
        .collect())
}

fn run(cmd: &mut Command) -> Result<std::process::Output> {
    let what = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!(
            "{what} failed: {}",
            err.lines().last().unwrap_or("no output")
        );
    }
    Ok(out)
}

/// Make an item's file unless it exists with the same recipe; returns its path and labels.
fn make(tools: &Tools, dir: &Path, item: &Item) -> Result<(PathBuf, Vec<Span>)> {
    let path = dir.join(format!("{}.ts", item.name));
    let recipe_path = dir.join(format!("{}.recipe.json", item.name));
    let recipe =
        json!({"version": CORPUS_VERSION, "synth": item.synth, "post": format!("{:?}", item.post)});
    let labels_path = dir.join(format!("{}.labels.json", item.name));
    let cached = std::fs::read_to_string(&recipe_path)
        .ok()
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
        .is_some_and(|r| r == recipe)
        && path.exists();
    if !cached {
        let src = match item.post {
            Post::None => path.clone(),
            _ => dir.join(format!("{}.src.ts", item.name)),
        };
        run(Command::new(&tools.avmon)
            .arg("synth")
            .arg(&src)
            .args(&item.synth))?;
        match &item.post {
            Post::None => {}
            Post::Damage(args) | Post::DamageThenTranscode(args) => {
                let damaged = match item.post {
                    Post::Damage(_) => path.clone(),
                    _ => dir.join(format!("{}.damaged.ts", item.name)),
                };
                run(Command::new(&tools.avmon)
                    .arg("damage")
                    .arg(&src)
                    .arg(&damaged)
                    .args(args)
                    .arg("--labels")
                    .arg(&labels_path))?;
                if let Post::DamageThenTranscode(_) = item.post {
                    run(Command::new(&tools.ffmpeg)
                        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i"])
                        .arg(&damaged)
                        .args(["-c:v", "libx264", "-preset", "veryfast", "-crf", "20"])
                        .args(["-g", "50", "-c:a", "copy", "-f", "mpegts"])
                        .arg(&path))?;
                }
            }
        }
        std::fs::write(&recipe_path, recipe.to_string())?;
    }
    let mut truths = item.truths.clone();
    if item.post != Post::None {
        truths.extend(damage_labels(&labels_path, SYNTH_GOP_S)?);
    }
    Ok((path, truths))
}

/// The damaged stretches `avmon damage --labels` reported: hits less than a second apart form
/// one defect, from the first hit to the next keyframe after the last (the picture recovers at
/// the next IDR; synth puts one every `gop_s`).
fn damage_labels(path: &Path, gop_s: f64) -> Result<Vec<Span>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: Value = serde_json::from_str(&text)?;
    let mut times: Vec<f64> = v["outcome"]["hits"]
        .as_array()
        .context("damage labels: no `outcome.hits` array")?
        .iter()
        .filter_map(|h| h["t"].as_f64())
        .collect();
    times.sort_by(f64::total_cmp);
    Ok(group_hits(&times, gop_s))
}

/// Damaged spans from sorted hit times.
fn group_hits(times: &[f64], gop_s: f64) -> Vec<Span> {
    let mut spans: Vec<Span> = Vec::new();
    for &t in times {
        let recovered = ((t / gop_s).floor() + 1.0) * gop_s;
        match spans.last_mut() {
            Some(s) if t - s.start < 1.0 || t < s.end => s.end = s.end.max(recovered),
            _ => spans.push(Span::new("video.corruption", t, recovered)),
        }
    }
    spans
}

fn check(tools: &Tools, path: &Path) -> Result<Value> {
    let out = run(Command::new(&tools.avmon).arg("check").arg(path).args([
        "--format",
        "json",
        "--tier",
        &tools.tier,
        "--keyframe-interval",
        &tools.keyframe_interval.to_string(),
    ]))?;
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The events this benchmark scores. Transport (TR 101 290) and HLS delivery findings are left
/// out: this corpus labels defects in the pictures and the sound, and those are counted exactly
/// by their own tests (`avmon-transport`, `avmon-hls`) on streams damaged at known packets.
fn events_of(report: &Value) -> Vec<Span> {
    report["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| {
                    e["kind"]
                        .as_str()
                        .is_some_and(|k| !k.starts_with("transport.") && !k.starts_with("hls."))
                })
                .filter_map(|e| {
                    Some(Span::new(
                        e["kind"].as_str()?,
                        e["start_s"].as_f64()?,
                        e["end_s"].as_f64()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn analyse(tools: &Tools, dir: &Path, item: &Item) -> Result<Outcome> {
    let (path, truths) = make(tools, dir, item)?;
    let report = check(tools, &path)?;
    let ffmpeg = if tools.ffmpeg_filters {
        Some(ffmpeg::analyse(
            &tools.ffmpeg,
            &path,
            true,
            true,
            &dir.join(&item.name),
        )?)
    } else {
        None
    };
    let visibility = match item.post {
        Post::DamageThenTranscode(_) => visibility(tools, dir, item, &truths)?,
        _ => Vec::new(),
    };
    Ok(Outcome {
        visibility,
        truths,
        avmon: events_of(&report),
        avmon_summary: report["summary"].clone(),
        ffmpeg,
    })
}

fn analyse_all(
    tools: &Tools,
    dir: &Path,
    items: &[Item],
    jobs: usize,
) -> Vec<Result<Outcome, String>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<Outcome, String>>>> =
        Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                eprintln!("[{}/{}] {}", i + 1, items.len(), item.name);
                let r = analyse(tools, dir, item).map_err(|e| format!("{e:#}"));
                if let Err(e) = &r {
                    eprintln!("  {}: {e}", item.name);
                }
                results.lock().unwrap()[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err("not run".into())))
        .collect()
}

/// One EBU reference signal, measured by avmon and by FFmpeg's ebur128.
struct LoudnessRow {
    name: &'static str,
    expect: wav::Expect,
    avmon: Option<f64>,
    ffmpeg: Option<f64>,
}

fn loudness_references(tools: &Tools, dir: &Path) -> Result<Vec<LoudnessRow>> {
    let mut rows = Vec::new();
    for (i, r) in wav::references().into_iter().enumerate() {
        let path = dir.join(format!("ebu-{i:02}.wav"));
        r.write(&path)?;
        let report = check(tools, &path)?;
        let a = &report["summary"]["audio"];
        let f = ffmpeg::analyse(&tools.ffmpeg, &path, false, true, &dir.join("ebu"))?;
        let (avmon, ff) = match r.expect {
            wav::Expect::Integrated(_) => (a["integrated_lufs"].as_f64(), f.integrated_lufs),
            wav::Expect::Range(_) => (a["loudness_range_lu"].as_f64(), f.loudness_range_lu),
            wav::Expect::TruePeak(_) => (a["true_peak_dbtp"].as_f64(), f.true_peak_dbtp),
        };
        rows.push(LoudnessRow {
            name: r.name,
            expect: r.expect,
            avmon,
            ffmpeg: ff,
        });
    }
    Ok(rows)
}

fn within(expect: wav::Expect, got: Option<f64>) -> &'static str {
    let Some(v) = got else { return "missing" };
    let ok = match expect {
        wav::Expect::Integrated(e) => (v - e).abs() <= 0.1 + 1e-9,
        wav::Expect::Range(e) => (v - e).abs() <= 1.0 + 1e-9,
        wav::Expect::TruePeak(e) => v >= e - 0.4 && v <= e + 0.2,
    };
    if ok {
        "pass"
    } else {
        "FAIL"
    }
}

fn fmt(v: Option<f64>, prec: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.prec$}"))
}

/// The kinds FFmpeg's filters cover.
const FFMPEG_KINDS: [&str; 5] = [
    "video.black",
    "video.freeze",
    "video.corruption",
    "audio.silence",
    "audio.loudness",
];

fn report(
    items: &[Item],
    results: &[Result<Outcome, String>],
    loudness: &[LoudnessRow],
    slack: f64,
) -> (String, Value) {
    // blockdetect has no threshold of its own: give it the highest score it reached on a clean
    // control of the same content, so it has no false alarm there by construction.
    let mut block_threshold: BTreeMap<&str, f64> = BTreeMap::new();
    for (item, r) in items.iter().zip(results) {
        if let (
            true,
            Ok(Outcome {
                ffmpeg: Some(f), ..
            }),
        ) = (item.name.ends_with("-clean"), r)
        {
            let max = f.block.iter().map(|b| b.1).fold(0.0, f64::max);
            block_threshold.insert(item.content, max);
        }
    }
    let mut avmon_scores = Scores::new();
    let mut ffmpeg_scores = Scores::new();
    let mut failed = Vec::new();
    let mut sync_rows = Vec::new();
    let mut blockiness = Vec::new();
    let mut visible_rows = Vec::new();
    for (item, r) in items.iter().zip(results) {
        let o = match r {
            Ok(o) => o,
            Err(e) => {
                failed.push(format!("{}: {e}", item.name));
                continue;
            }
        };
        score_item(
            &item.name,
            &o.truths,
            &item.incidental,
            &o.avmon,
            slack,
            &mut avmon_scores,
        );
        if let Some(f) = &o.ffmpeg {
            let mut ff = f.events.clone();
            if let Some(th) = block_threshold.get(item.content) {
                ff.extend(ffmpeg::block_events(&f.block, *th, 0.5));
            }
            ff.extend(ffmpeg::loudness_events(
                &f.short_term,
                -23.0,
                LOUDNESS_TOLERANCE_LU,
                LOUDNESS_GATE_LUFS,
                LOUDNESS_MIN_S,
            ));
            let truths: Vec<Span> = o
                .truths
                .iter()
                .filter(|t| FFMPEG_KINDS.contains(&t.kind.as_str()))
                .cloned()
                .collect();
            score_item(
                &item.name,
                &truths,
                &item.incidental,
                &ff,
                slack,
                &mut ffmpeg_scores,
            );
        }
        if let Some(offset) = item.av_offset_ms {
            sync_rows.push((
                item.name.clone(),
                offset,
                o.avmon_summary["av_sync"]["offset_ms"].as_f64(),
            ));
        }
        for v in &o.visibility {
            let found = o.avmon.iter().any(|d| {
                d.kind == CORRUPTION
                    && o.truths
                        .iter()
                        .find(|t| t.kind == CORRUPTION && t.start == v.start)
                        .is_some_and(|t| t.matches(d, slack))
            });
            visible_rows.push(VisibleRow {
                item: item.name.clone(),
                start: v.start,
                psnr: v.min_psnr,
                frames: v.visible_frames,
                viewing: v.min_psnr_viewing,
                found,
            });
        }
        blockiness.push((
            item.name.clone(),
            o.avmon_summary["video"]["blockiness_mean"].as_f64(),
            o.avmon_summary["video"]["blockiness_max"].as_f64(),
        ));
    }

    let mut t = String::new();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let _ = writeln!(
        t,
        "## Detector accuracy ({ok} items scored, matching slack {slack} s)\n"
    );
    let _ = writeln!(
        t,
        "| kind | labels | avmon precision | avmon recall | median onset err (s) | worst onset err (s) | FFmpeg precision | FFmpeg recall | FFmpeg median onset err (s) |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|");
    for (kind, a) in &avmon_scores {
        let f = ffmpeg_scores.get(kind);
        let _ = writeln!(
            t,
            "| {kind} | {} | {} | {} | {} | {} | {} | {} | {} |",
            a.truths,
            fmt(a.precision(), 3),
            fmt(a.recall(), 3),
            fmt(a.median_onset_error(), 3),
            fmt(a.worst_onset_error(), 3),
            fmt(f.and_then(|f| f.precision()), 3),
            fmt(f.and_then(|f| f.recall()), 3),
            fmt(f.and_then(|f| f.median_onset_error()), 3),
        );
    }
    let _ = writeln!(t);
    for (kind, a) in &avmon_scores {
        if !a.misses.is_empty() {
            let _ = writeln!(t, "- avmon missed {kind}: {}", a.misses.join(", "));
        }
        if !a.false_alarms.is_empty() {
            let _ = writeln!(t, "- avmon false {kind}: {}", a.false_alarms.join(", "));
        }
    }
    for (kind, f) in &ffmpeg_scores {
        if !f.false_alarms.is_empty() {
            let _ = writeln!(t, "- FFmpeg false {kind}: {}", f.false_alarms.join(", "));
        }
    }
    if !visible_rows.is_empty() {
        let _ = writeln!(
            t,
            "\n## Transcoded damage: how visible it is, and what avmon saw\n\nThe damaged decode \
             (what the transcoder was given) against the clean source, over each label.\n"
        );
        let _ = writeln!(
            t,
            "| item | label at (s) | lowest luma PSNR (dB) | frames below {VISIBLE_PSNR_DB:.0} dB | \
             lowest luma PSNR at 1/{VIEWING_SCALE} size (dB) | avmon |"
        );
        let _ = writeln!(t, "|---|---|---|---|---|---|");
        let db = |p: &Option<f64>| p.map_or("identical".into(), |p| format!("{p:.1}"));
        for r in &visible_rows {
            let _ = writeln!(
                t,
                "| {} | {:.2} | {} | {} | {} | {} |",
                r.item,
                r.start,
                db(&r.psnr),
                r.frames,
                db(&r.viewing),
                if r.found { "found" } else { "missed" }
            );
        }
        let recall = |rows: &[&VisibleRow]| {
            let found = rows.iter().filter(|r| r.found).count();
            format!(
                "{found} of {} ({})",
                rows.len(),
                fmt(
                    (!rows.is_empty()).then(|| found as f64 / rows.len() as f64),
                    3
                )
            )
        };
        let below = |p: &Option<f64>| p.is_some_and(|p| p < VISIBLE_PSNR_DB);
        // Recall over the labels visible at full size, and over those visible at viewing scale.
        let visible = |rows: &[&VisibleRow]| {
            let full: Vec<_> = rows.iter().copied().filter(|r| below(&r.psnr)).collect();
            let view: Vec<_> = rows.iter().copied().filter(|r| below(&r.viewing)).collect();
            (recall(&full), recall(&view))
        };
        let all: Vec<_> = visible_rows.iter().collect();
        let (full, view) = visible(&all);
        let _ = writeln!(
            t,
            "\nTranscoded corruption recall: {} labels; {full} whose damage is visible at full \
             size (luma PSNR below {VISIBLE_PSNR_DB:.0} dB on some frame); {view} visible at \
             viewing scale (the same at 1/{VIEWING_SCALE} size).",
            recall(&all),
        );
        let (held, shaped): (Vec<_>, Vec<_>) = all
            .iter()
            .copied()
            .partition(|r| r.item.ends_with("-heldout"));
        if !held.is_empty() {
            let split = |rows: &[&VisibleRow]| {
                let (full, view) = visible(rows);
                format!("{full} visible at full size, {view} at viewing scale")
            };
            let _ = writeln!(
                t,
                "Of these, on the items the picture evidence was shaped on: {}; on the held-out \
                 items (`-heldout`, never used to tune it): {}.",
                split(&shaped),
                split(&held),
            );
        }
    }
    if !sync_rows.is_empty() {
        let _ = writeln!(t, "\n## A/V offset (flash and beep)\n");
        let _ = writeln!(t, "| item | injected (ms) | measured (ms) | error (ms) |");
        let _ = writeln!(t, "|---|---|---|---|");
        for (name, want, got) in &sync_rows {
            let _ = writeln!(
                t,
                "| {name} | {want:+.0} | {} | {} |",
                fmt(*got, 1),
                fmt(got.map(|g| g - want), 1)
            );
        }
    }
    if !loudness.is_empty() {
        let _ = writeln!(t, "\n## Loudness on the EBU test signals\n");
        let _ = writeln!(
            t,
            "| signal | measure | specified | avmon | | FFmpeg ebur128 | |"
        );
        let _ = writeln!(t, "|---|---|---|---|---|---|---|");
        for r in loudness {
            let (what, want) = match r.expect {
                wav::Expect::Integrated(v) => ("integrated (LUFS, ±0.1)", v),
                wav::Expect::Range(v) => ("LRA (LU, ±1)", v),
                wav::Expect::TruePeak(v) => ("true peak (dBTP, −0.4/+0.2)", v),
            };
            let _ = writeln!(
                t,
                "| {} | {what} | {want:.1} | {} | {} | {} | {} |",
                r.name,
                fmt(r.avmon, 2),
                within(r.expect, r.avmon),
                fmt(r.ffmpeg, 1),
                within(r.expect, r.ffmpeg),
            );
        }
    }
    if blockiness.iter().any(|b| b.1.is_some()) {
        let _ = writeln!(t, "\n## Blockiness per item (avmon summary)\n");
        let _ = writeln!(t, "| item | mean | max |");
        let _ = writeln!(t, "|---|---|---|");
        for (name, mean, max) in &blockiness {
            let _ = writeln!(t, "| {name} | {} | {} |", fmt(*mean, 3), fmt(*max, 3));
        }
    }
    if !failed.is_empty() {
        let _ = writeln!(t, "\n## Items that could not be made or analysed\n");
        for f in &failed {
            let _ = writeln!(t, "- {f}");
        }
    }
    let raw = json!({
        "avmon": avmon_scores,
        "ffmpeg": ffmpeg_scores,
        "block_thresholds": block_threshold,
        "failed": failed,
    });
    (t, raw)
}

/// Bumped whenever `avmon synth`'s output changes, so cached corpus files are made again.
const CORPUS_VERSION: u32 = 2;

/// `avmon synth` puts a keyframe every 2 s.
const SYNTH_GOP_S: f64 = 2.0;

/// The loudness detector's defaults (tolerance around the −23 LUFS target, the level below which
/// audio is silence rather than too quiet, and the minimum duration), applied to FFmpeg's
/// short-term loudness.
const LOUDNESS_TOLERANCE_LU: f64 = 6.0;
const LOUDNESS_GATE_LUFS: f64 = -55.0;
const LOUDNESS_MIN_S: f64 = 10.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_group_into_defects_that_end_at_the_next_keyframe() {
        let spans = group_hits(&[8.3, 8.32, 8.5, 19.1, 19.11], 2.0);
        assert_eq!(
            spans,
            [
                Span::new("video.corruption", 8.3, 10.0),
                Span::new("video.corruption", 19.1, 20.0)
            ]
        );
    }
}
