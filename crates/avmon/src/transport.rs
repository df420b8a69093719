//! TR 101 290 counts (`summary.transport`) for `avmon check` on a local MPEG-TS file.
//!
//! For now the file is read a second time, beside FFmpeg's demuxer. Once avmon reads a stream's
//! bytes itself and hands them to FFmpeg through a custom I/O context (issue 4), the analyser
//! will see each byte on its way to the demuxer, and live inputs will be counted too.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use avmon_transport::{Analyzer, Clock, Counters};

/// The counts for `input` if FFmpeg found it to be MPEG-TS (`format`) and it is a local file;
/// up to `duration` seconds of the stream's own clock when given.
pub fn file_counts(input: &str, format: &str, duration: Option<f64>) -> Result<Option<Counters>> {
    let path = Path::new(input);
    if format != "mpegts" || !path.is_file() {
        return Ok(None);
    }
    let what = || format!("{input}: reading it for TR 101 290");
    let mut file = std::fs::File::open(path).with_context(what)?;
    let mut analyzer = Analyzer::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut events = Vec::new();
    loop {
        let n = file.read(&mut buf).with_context(what)?;
        if n == 0 {
            break;
        }
        analyzer.feed(&buf[..n], Clock::Stream, &mut events);
        events.clear();
        if duration.is_some_and(|d| analyzer.stream_time() >= d) {
            break;
        }
    }
    Ok(Some(*analyzer.counters()))
}

/// The counts as a line of the text report.
pub fn text(c: &Counters) -> String {
    let found: Vec<String> = c
        .named()
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    if found.is_empty() {
        "transport: no TR 101 290 errors".into()
    } else {
        format!("transport (TR 101 290): {}", found.join(", "))
    }
}
