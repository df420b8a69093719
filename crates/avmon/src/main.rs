//! avmon: a real-time audio/video quality monitor for live streams.
//!
//! The binary is thin: it parses the command line and the config, and wires the library crates
//! into the one-way pipeline ingest → decode → detect → findings → alerts → store / notifiers / API.

mod check;
mod damage;
mod demo;

use avmon_service::config;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use avmon_core::Severity;
use clap::{Parser, Subcommand, ValueEnum};

/// Exit status when `--fail-on` found a defect of that severity or worse.
const EXIT_DEFECTS: u8 = 3;

#[derive(Parser)]
#[command(
    name = "avmon",
    version,
    about = "Real-time audio/video quality monitor for live streams"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Json,
    Text,
}

#[derive(Subcommand)]
enum Command {
    /// Analyse one input (a file to its end, or a live URL for --duration) and print a report.
    ///
    /// Exit status: 0 when the analysis completed (defects or not), 1 for unreadable or invalid
    /// input, 3 when --fail-on found a defect of that severity or worse.
    Check {
        /// A file path or any URL FFmpeg opens (udp://, srt://, rtmp://, rtsp://, http(s)://).
        input: String,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Analyse at most this many seconds of media (needed for live URLs).
        #[arg(long)]
        duration: Option<f64>,
        /// Exit 3 when a defect of this severity or worse was found.
        #[arg(long, value_name = "SEVERITY")]
        fail_on: Option<Severity>,
        /// A TOML file with detector settings, as in a stream's `[streams.detectors]` section.
        #[arg(long, value_name = "FILE")]
        detectors: Option<PathBuf>,
        /// Give up when no data arrives for this many seconds.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
        /// Decoder threads (1 = the decoder's own threading off).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// An FFmpeg demuxer/protocol option, e.g. `-o rtsp_transport=tcp` or `-o listen=1`;
        /// repeatable.
        #[arg(long = "option", short = 'o', value_name = "KEY=VALUE")]
        options: Vec<String>,
        /// For an HLS or DASH input: a variant (DASH: Representation) to monitor (`index:N`,
        /// `bandwidth:BITS_PER_S` for the closest, or `name:NAME`, a DASH Representation's
        /// `@id`); repeatable. Default: every one.
        #[arg(long = "variant", value_name = "SELECTOR")]
        variants: Vec<avmon_hls::VariantSelector>,
        /// Fidelity tier: full (every frame), reference (reference frames only), keyframes
        /// (keyframes only), transport (no video decode; transport and audio checks only).
        #[arg(long, default_value = "full", value_name = "TIER")]
        tier: avmon_core::Tier,
        /// With --tier keyframes: decode at most one keyframe per this many seconds (0 to 10;
        /// 0, the default, decodes every keyframe). Cheaper, and black and freeze are judged at
        /// this spacing.
        #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
        keyframe_interval: f64,
    },
    /// Monitor the streams of a config file, with the HTTP API, store and notifiers.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Generate an H.264 + AAC MPEG-TS test stream with defects, to a file or to udp:// in real time.
    Synth {
        /// Output file, or a URL such as udp://127.0.0.1:5000 (sent in real time).
        output: String,
        /// Media seconds to generate (default: 20 for files, forever for URLs).
        #[arg(long)]
        duration: Option<f64>,
        #[arg(long, default_value_t = 1280)]
        width: u32,
        #[arg(long, default_value_t = 720)]
        height: u32,
        /// Picture size as WIDTHxHEIGHT, e.g. 1920x1080 (instead of --width and --height).
        #[arg(long, value_name = "WxH", conflicts_with_all = ["width", "height"])]
        size: Option<String>,
        /// Frames per second (1 to 120), e.g. 25, 30, 50, 60.
        #[arg(long, default_value_t = 25)]
        fps: u32,
        /// What the picture and sound show: pan (default), sync (white flash + 1 kHz beep once
        /// per second, for A/V sync tests), detail, motion, flat or noise.
        #[arg(long, default_value = "pan")]
        content: String,
        /// Delay the audio content by this many milliseconds relative to the video (negative:
        /// audio early), as a lip-sync fault does; timestamps stay consistent.
        #[arg(
            long,
            value_name = "MS",
            default_value_t = 0.0,
            allow_negative_numbers = true
        )]
        av_offset: f64,
        #[arg(long, default_value_t = 2)]
        channels: u32,
        /// A defect KIND[:PARAM]@START-END; repeatable. Kinds: black, freeze, silence, dropout,
        /// gain:DB (loudness step, default +12), clip:DB (drive into clipping, default +30),
        /// deadch:N (channel N silent, default 1), gap (all channels silent, short), click:AMP
        /// (pulse, default 0.5), nocaptions (with --captions: no caption data).
        #[arg(long = "defect", value_name = "KIND[:PARAM]@START-END")]
        defects: Vec<String>,
        /// Closed captions in the pictures: every 2 s a line of text on CEA-608 CC1 and
        /// CEA-708 service 1 (ATSC A/53 user data).
        #[arg(long)]
        captions: bool,
        /// An SCTE 35 avail KIND@START-END (a file output); repeatable. Kinds: avail (cue-out 6 s
        /// before START, cue-in 6 s before END), late (the cue-out 1 s after its splice time),
        /// unended (no cue-in). Cues go on PID 0x1F0.
        #[arg(long = "cue", value_name = "KIND@START-END")]
        cues: Vec<String>,
        /// Repeat the defect schedule every this many seconds.
        #[arg(long)]
        repeat_every: Option<f64>,
        /// Pace a file output in real time too.
        #[arg(long)]
        realtime: bool,
        /// x264 preset.
        #[arg(long, default_value = "veryfast")]
        preset: String,
        /// Seconds between keyframes (the GOP length).
        #[arg(
            long,
            value_name = "SECONDS",
            default_value_t = 2.0,
            allow_negative_numbers = true
        )]
        gop: f64,
    },
    /// Damage an MPEG-TS file: drop or bit-flip packets of its video PID at known media times.
    ///
    /// A SPEC is [PID@]START-END[:RATE] in media seconds, or [PID@]#FIRST-LAST[:RATE] in packet
    /// indices; RATE (default 1) is the chance each packet in the range is hit. Prints every hit
    /// (or writes them as JSON with --labels).
    Damage {
        input: PathBuf,
        output: PathBuf,
        /// Drop packets; repeatable.
        #[arg(long = "drop", value_name = "SPEC")]
        drops: Vec<String>,
        /// Invert --flip-bits random payload bits of packets; repeatable.
        #[arg(long = "flip", value_name = "SPEC")]
        flips: Vec<String>,
        /// Bits inverted in each flipped packet.
        #[arg(long, default_value_t = 4)]
        flip_bits: u32,
        /// Seed of the random choices (same seed, same damage).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write the hits as JSON to this file instead of listing them on stdout.
        #[arg(long, value_name = "FILE")]
        labels: Option<PathBuf>,
    },
    /// Start synthetic live streams with defects and monitor them (no configuration needed).
    Demo {
        /// Address of the HTTP API.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        duration: Option<f64>,
        /// Where the demo keeps its SQLite store.
        #[arg(long, default_value = "avmon-demo.db")]
        db: String,
        /// Run a cluster of this many nodes instead (2 to 9) on a PostgreSQL server of its own
        /// (needs PostgreSQL's server installed, as `./dev` does); their APIs listen on
        /// `--listen`'s port and the next ones.
        #[arg(long)]
        cluster: Option<usize>,
    },
}

/// mimalloc, for Rust and, through its `override` feature, for the whole process: FFmpeg's
/// `av_malloc` is `posix_memalign`, which glibc 2.36 serves without its per-thread cache, and
/// every demuxed packet, parsed picture and decoded frame allocates a few times. With a hundred
/// light streams (5 Mbit/s at `keyframes`) glibc's allocator was 8 % of avmon's samples;
/// mimalloc made the same streams 8–10 % cheaper, side by side, and kept the memory per
/// 1080p stream at 34.5 MiB (33.7 with glibc). Its version 2: version 3 took 59 MiB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Check { .. } | Command::Synth { .. } | Command::Damage { .. } => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AVMON_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("avmon: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Check {
            input,
            format,
            duration,
            fail_on,
            detectors,
            timeout,
            threads,
            options,
            variants,
            tier,
            keyframe_interval,
        } => {
            if !(0.0..=config::MAX_KEYFRAME_INTERVAL_S).contains(&keyframe_interval) {
                anyhow::bail!(
                    "--keyframe-interval: must be between 0 and {} seconds (got {keyframe_interval})",
                    config::MAX_KEYFRAME_INTERVAL_S
                );
            }
            let options = options
                .iter()
                .map(|o| match o.split_once('=') {
                    Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
                    _ => Err(anyhow::anyhow!("--option {o:?}: expected KEY=VALUE")),
                })
                .collect::<Result<Vec<_>>>()?;
            if check::is_live(&input) && duration.is_none() {
                anyhow::bail!("{input} is a live input: give --duration SECS");
            }
            let detectors = match detectors {
                Some(path) => config::load_detectors(&path)?,
                None => Default::default(),
            };
            let report = check::check(check::CheckOptions {
                input,
                duration,
                detectors,
                alerts: Default::default(),
                io_timeout: Duration::from_secs_f64(timeout.max(0.1)),
                decoder_threads: threads,
                format_options: options,
                gap_s: 3.0,
                hls_variants: variants,
                tier,
                keyframe_interval,
            })?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&report.to_json())?),
                Format::Text => println!("{}", report.to_text()),
            }
            if let (Some(limit), Some(worst)) = (fail_on, report.worst()) {
                if worst >= limit {
                    return Ok(ExitCode::from(EXIT_DEFECTS));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { config } => {
            let cfg = config::load(&config)?;
            avmon_service::run(cfg, avmon_service::Options::default())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Synth {
            output,
            duration,
            width,
            height,
            size,
            fps,
            content,
            av_offset,
            channels,
            defects,
            captions,
            cues,
            repeat_every,
            realtime,
            preset,
            gop,
        } => {
            if !(gop.is_finite() && gop > 0.0) {
                anyhow::bail!("--gop must be a positive number of seconds, got {gop}");
            }
            let (width, height) = match size {
                Some(s) => parse_size(&s)?,
                None => (width, height),
            };
            let content = content.parse().map_err(anyhow::Error::msg)?;
            let defects = defects
                .iter()
                .map(|d| d.parse())
                .collect::<Result<Vec<_>, String>>()
                .map_err(anyhow::Error::msg)?;
            let network = output.contains("://");
            let cues = cues
                .iter()
                .map(|c| c.parse())
                .collect::<Result<Vec<avmon_transport::scte35::write::CueSpec>, String>>()
                .map_err(anyhow::Error::msg)?;
            if network && !cues.is_empty() {
                anyhow::bail!(
                    "--cue needs a file output (cues are written into the file after it)"
                );
            }
            let spec = avmon_media::synth::SynthSpec {
                width,
                height,
                fps,
                duration: duration.or(if network { None } else { Some(20.0) }),
                channels,
                defects,
                repeat_every,
                realtime,
                preset,
                gop_s: gop,
                content,
                av_offset_ms: av_offset,
                captions,
                ..Default::default()
            };
            let stop = Arc::new(AtomicBool::new(false));
            let stats = avmon_media::synth::generate(&output, &spec, stop)
                .with_context(|| format!("generating {output}"))?;
            eprintln!(
                "avmon synth: wrote {} video and {} audio frames ({:.2} s) to {output}",
                stats.video_frames, stats.audio_frames, stats.duration_s
            );
            if !cues.is_empty() {
                use avmon_transport::scte35::write;
                let ts = std::fs::read(&output).with_context(|| format!("reading {output}"))?;
                let first = write::first_pts(&ts)
                    .with_context(|| format!("{output}: no PTS to place cues by"))?;
                let with = write::inject(&ts, 0x1F0, &write::plan(first, &cues))
                    .with_context(|| format!("writing cues into {output}"))?;
                std::fs::write(&output, with).with_context(|| format!("writing {output}"))?;
                eprintln!("avmon synth: {} SCTE 35 avails signalled", cues.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Damage {
            input,
            output,
            drops,
            flips,
            flip_bits,
            seed,
            labels,
        } => {
            let parse = |specs: &[String]| {
                specs
                    .iter()
                    .map(|s| s.parse())
                    .collect::<Result<Vec<damage::Spec>, String>>()
                    .map_err(anyhow::Error::msg)
            };
            let opts = damage::Options {
                drops: parse(&drops)?,
                flips: parse(&flips)?,
                seed,
                flip_bits,
            };
            let data =
                std::fs::read(&input).with_context(|| format!("reading {}", input.display()))?;
            let (out, outcome) = damage::damage(&data, &opts)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("damaging {}", input.display()))?;
            std::fs::write(&output, out)
                .with_context(|| format!("writing {}", output.display()))?;
            match labels {
                Some(path) => {
                    let json = serde_json::json!({
                        "input": input,
                        "output": output,
                        "seed": seed,
                        "outcome": outcome,
                    });
                    std::fs::write(&path, serde_json::to_string_pretty(&json)?)
                        .with_context(|| format!("writing {}", path.display()))?;
                }
                None => print!("{}", damage::hit_lines(&outcome)),
            }
            let at = |t: Option<f64>| t.map_or("-".to_string(), |t| format!("{t:.3} s"));
            eprintln!(
                "avmon damage: dropped {}, flipped {} of {} packets; first hit at {}, last at {}",
                outcome.dropped,
                outcome.flipped,
                outcome.packets,
                at(outcome.first_hit_s),
                at(outcome.last_hit_s)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            listen,
            duration,
            db,
            cluster,
        } => {
            match cluster {
                Some(n) => demo::run_cluster(n, &listen, duration)?,
                None => demo::run(&listen, duration, &db)?,
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `WIDTHxHEIGHT`, e.g. `1280x720`.
fn parse_size(s: &str) -> Result<(u32, u32)> {
    let parsed = s
        .split_once(['x', 'X'])
        .and_then(|(w, h)| Some((w.trim().parse().ok()?, h.trim().parse().ok()?)));
    parsed.ok_or_else(|| anyhow::anyhow!("--size {s:?}: expected WIDTHxHEIGHT, e.g. 1280x720"))
}
