//! The monitor against nginx serving prepared content: AES-128 segments, byte ranges, bad
//! segments and bad playlists. Segments are FFmpeg's (byte-identical from run to run, so the
//! clear segments are the reference for what decryption must give).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use avmon_core::{kinds, FindingEdge};
use avmon_hls::{Hls, HlsConfig, HlsError, Retry, VariantSelector, VariantStats};
use common::{wait_for, write_vod, Log, Nginx, Recorder};

const KEY: [u8; 16] = *b"avmon-test-key!!";

/// Monitor `cfg`'s single variant until its playlist ends (or 20 s pass).
fn run_to_end(cfg: &HlsConfig) -> (Log, Result<VariantStats, HlsError>) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut monitors = avmon_hls::resolve(cfg, Arc::new(Hls), stop.clone()).unwrap();
    assert_eq!(monitors.len(), 1);
    let rec = Recorder::default();
    let mut sink = rec.clone();
    let watchdog = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            wait_for(Duration::from_secs(20), || stop.load(Ordering::Relaxed));
            stop.store(true, Ordering::Relaxed);
        })
    };
    let r = monitors.pop().unwrap().run(&mut sink);
    stop.store(true, Ordering::Relaxed);
    watchdog.join().unwrap();
    let log = std::mem::take(&mut *rec.log());
    (log, r)
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap()
}

/// AES-128-CBC with `openssl`, an implementation independent of the one under test.
fn openssl_encrypt(input: &Path, output: &Path, iv_hex: &str) {
    let key_hex: String = KEY.iter().map(|b| format!("{b:02x}")).collect();
    let status = Command::new("openssl")
        .args(["aes-128-cbc", "-e", "-K", &key_hex, "-iv", iv_hex, "-in"])
        .arg(input)
        .arg("-out")
        .arg(output)
        .stderr(Stdio::inherit())
        .status()
        .expect("run openssl");
    assert!(status.success());
}

/// Video frames FFmpeg decodes from `ts`.
fn video_frames(ts: &[u8]) -> u64 {
    use std::io::Write;
    let mut child = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
            "-i",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run ffprobe");
    child.stdin.take().unwrap().write_all(ts).unwrap();
    let out = child.wait_with_output().unwrap();
    // The stream is listed under its program too: the first count is the stream's.
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let first = text.lines().find(|l| !l.trim().is_empty());
    first
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("ffprobe said {text:?}"))
}

#[test]
fn aes128_segments_decrypt_to_the_clear_segments() {
    let nginx = Nginx::start("");
    let root = &nginx.root;
    write_vod(root, "clear.m3u8", "clear%03d.ts", 3, &[]);
    std::fs::write(root.join("key.bin"), KEY).unwrap();

    // FFmpeg's encryption, with an explicit IV.
    let iv = "000102030405060708090a0b0c0d0e0f";
    let keyinfo = root.join("keyinfo");
    std::fs::write(
        &keyinfo,
        format!("key.bin\n{}\n{iv}\n", root.join("key.bin").display()),
    )
    .unwrap();
    write_vod(
        root,
        "enc.m3u8",
        "enc%03d.ts",
        3,
        &["-hls_key_info_file", keyinfo.to_str().unwrap()],
    );
    let playlist = String::from_utf8(read(root, "enc.m3u8")).unwrap();
    assert!(
        playlist.contains(&format!("METHOD=AES-128,URI=\"key.bin\",IV=0x{iv}")),
        "{playlist}"
    );
    let (log, stats) = run_to_end(&HlsConfig::new(nginx.url("enc.m3u8")));
    assert!(log.findings.is_empty(), "{:?}", log.findings);
    assert_eq!(stats.unwrap().segments, 3);
    let mut all = Vec::new();
    for (_, s) in &log.segments {
        let clear = read(root, &format!("clear{:03}.ts", s.sequence));
        assert_ne!(
            read(root, &format!("enc{:03}.ts", s.sequence)),
            clear,
            "served encrypted"
        );
        assert!(
            s.bytes == clear,
            "segment {} decrypts to the clear segment",
            s.sequence
        );
        all.extend_from_slice(&s.bytes);
    }
    assert_eq!(
        video_frames(&all),
        75,
        "3 s at 25 fps decode from the decrypted segments"
    );

    // No IV in the playlist: the IV is the media sequence number (7, 8, 9 here).
    let mut seq = String::from(
        "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:7\n\
                                #EXT-X-KEY:METHOD=AES-128,URI=\"key.bin\"\n",
    );
    for i in 0..3 {
        let name = format!("seq{:03}.ts", 7 + i);
        openssl_encrypt(
            &root.join(format!("clear{i:03}.ts")),
            &root.join(&name),
            &format!("{:032x}", 7 + i),
        );
        seq += &format!("#EXTINF:1.0,\n{name}\n");
    }
    std::fs::write(root.join("seq.m3u8"), seq + "#EXT-X-ENDLIST\n").unwrap();
    let (log, _) = run_to_end(&HlsConfig::new(nginx.url("seq.m3u8")));
    assert!(log.findings.is_empty(), "{:?}", log.findings);
    assert_eq!(log.segments.len(), 3);
    for (i, (_, s)) in log.segments.iter().enumerate() {
        assert_eq!(s.sequence, 7 + i as u64);
        assert!(
            s.bytes == read(root, &format!("clear{i:03}.ts")),
            "segment {}",
            s.sequence
        );
    }

    // The wrong key: every segment is an error, none is handed on.
    std::fs::write(root.join("other.bin"), [0x5a; 16]).unwrap();
    std::fs::write(
        root.join("wrong.m3u8"),
        playlist.replace("key.bin", "other.bin"),
    )
    .unwrap();
    let (log, stats) = run_to_end(&HlsConfig::new(nginx.url("wrong.m3u8")));
    assert!(log.segments.is_empty());
    assert_eq!(stats.unwrap().segment_errors, 3);
    let (_, begin) = log
        .first(kinds::HLS_SEGMENT_ERROR, FindingEdge::Begin)
        .unwrap();
    let reason = begin.details["reason"].as_str().unwrap();
    assert!(
        reason.contains("AES-128") || reason.contains("MPEG-TS"),
        "{reason}"
    );
}

#[test]
fn byte_ranges_are_fetched_with_range_requests() {
    let nginx = Nginx::start("");
    write_vod(
        &nginx.root,
        "one.m3u8",
        "one.ts",
        3,
        &["-hls_flags", "single_file"],
    );
    let playlist = String::from_utf8(read(&nginx.root, "one.m3u8")).unwrap();
    assert!(playlist.contains("#EXT-X-BYTERANGE:"), "{playlist}");
    let (log, stats) = run_to_end(&HlsConfig::new(nginx.url("one.m3u8")));
    assert!(log.findings.is_empty(), "{:?}", log.findings);
    assert_eq!(stats.unwrap().segments, 3);
    let joined: Vec<u8> = log
        .segments
        .iter()
        .flat_map(|(_, s)| s.bytes.clone())
        .collect();
    assert!(
        joined == read(&nginx.root, "one.ts"),
        "the three ranges make up the file"
    );
}

#[test]
fn bad_segments_are_segment_errors_until_a_good_one() {
    let nginx = Nginx::start("");
    let root = &nginx.root;
    write_vod(root, "clear.m3u8", "clear%03d.ts", 2, &[]);
    std::fs::write(
        root.join("error.ts"),
        "<html><body>origin error</body></html>",
    )
    .unwrap();
    std::fs::write(root.join("empty.ts"), "").unwrap();
    std::fs::write(
        root.join("bad.m3u8"),
        "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\nclear000.ts\n#EXTINF:1.0,\nerror.ts\n\
         #EXTINF:1.0,\nempty.ts\n#EXTINF:1.0,\nclear001.ts\n#EXT-X-ENDLIST\n",
    )
    .unwrap();
    let (log, stats) = run_to_end(&HlsConfig::new(nginx.url("bad.m3u8")));
    let stats = stats.unwrap();
    assert_eq!((stats.segments, stats.segment_errors), (2, 2));
    assert_eq!(log.count(kinds::HLS_SEGMENT_ERROR, FindingEdge::Begin), 1);
    let (_, begin) = log
        .first(kinds::HLS_SEGMENT_ERROR, FindingEdge::Begin)
        .unwrap();
    assert_eq!(
        begin.details["reason"],
        "not MPEG-TS: byte 0 is 0x3c, not the sync byte 0x47"
    );
    assert_eq!(
        (begin.t, begin.details["sequence"].as_u64()),
        (1.0, Some(1))
    );
    let (_, end) = log
        .first(kinds::HLS_SEGMENT_ERROR, FindingEdge::End)
        .unwrap();
    assert_eq!(end.t, 3.0);
    assert!(log.segments[1].1.after_gap);

    // Over the size cap: refused, not buffered.
    let mut cfg = HlsConfig::new(nginx.url("clear.m3u8"));
    cfg.max_segment_bytes = 4096;
    let (log, _) = run_to_end(&cfg);
    let (_, begin) = log
        .first(kinds::HLS_SEGMENT_ERROR, FindingEdge::Begin)
        .unwrap();
    assert_eq!(begin.details["reason"], "larger than 4096 bytes");
    assert!(log.segments.is_empty());
}

#[test]
fn keep_monitoring_waits_for_playlists_and_starts_again_where_one_ended() {
    let nginx = Nginx::start("");
    let root = &nginx.root;
    write_vod(root, "a.m3u8", "a%d.ts", 2, &[]);
    let segments = read(root, "a.m3u8")
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"#EXTINF"))
        .count();
    assert_eq!(segments, 2);
    let stop = Arc::new(AtomicBool::new(false));
    let recorders = Arc::new(std::sync::Mutex::new(Vec::<Recorder>::new()));
    let monitor = {
        let (cfg, stop, recorders) = (
            HlsConfig::new(nginx.url("master.m3u8")),
            stop.clone(),
            recorders.clone(),
        );
        std::thread::spawn(move || {
            let retry = Retry {
                initial: Duration::from_millis(50),
                max: Duration::from_millis(200),
            };
            avmon_hls::keep_monitoring(&cfg, Arc::new(Hls), stop, retry, |_| {
                let r = Recorder::default();
                recorders.lock().unwrap().push(r.clone());
                r
            })
        })
    };
    // No master playlist yet: loaded again until there is one.
    std::thread::sleep(Duration::from_millis(500));
    assert!(recorders.lock().unwrap().is_empty());
    std::fs::write(
        root.join("master.m3u8"),
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=900000\na.m3u8\n\
         #EXT-X-STREAM-INF:BANDWIDTH=300000\nb.m3u8\n",
    )
    .unwrap();
    let recorder = |i: usize| {
        wait_for(Duration::from_secs(5), || {
            recorders.lock().unwrap().len() > i
        })
        .then(|| recorders.lock().unwrap()[i].clone())
        .expect("a sink per variant")
    };
    let (a, b) = (recorder(0), recorder(1));
    // Variant a's playlist ends; it is monitored again, three times over, on one media clock.
    assert!(wait_for(Duration::from_secs(10), || a.log().segments.len()
        >= 3 * segments));
    // Variant b's playlist is missing at first: its monitor is started again until it loads.
    std::thread::sleep(Duration::from_millis(300));
    assert!(b.log().segments.is_empty());
    std::fs::copy(root.join("a.m3u8"), root.join("b.m3u8")).unwrap();
    assert!(wait_for(Duration::from_secs(5), || !b
        .log()
        .segments
        .is_empty()));
    stop.store(true, Ordering::Relaxed);
    let runs = monitor.join().unwrap();
    assert_eq!(runs.len(), 2);
    for (run, rec) in runs.iter().zip([&a, &b]) {
        let log = rec.log();
        let stats = run.result.as_ref().unwrap();
        // Totals and the media clock run on across monitors; each monitor's end was heard.
        assert_eq!(stats.segments as usize, log.segments.len());
        for w in log.segments.windows(2) {
            let (x, y) = (&w[0].1, &w[1].1);
            assert!(
                (y.start_t - (x.start_t + x.duration)).abs() < 1e-6,
                "{} then {}",
                x.start_t,
                y.start_t
            );
        }
        assert!(
            log.ends.len() >= log.segments.len() / segments,
            "{:?}",
            log.ends
        );
        assert!(log.ends.windows(2).all(|w| w[0] <= w[1]), "{:?}", log.ends);
        assert!(log.findings.is_empty(), "{:?}", log.findings);
    }
    assert!(runs[0].sink.log().ends.len() >= 3);
}

#[test]
fn bad_playlists_and_urls_are_clear_errors_at_start() {
    let nginx = Nginx::start("");
    let root = &nginx.root;
    let mut noise = vec![0u8; 4096];
    let mut x = 0x9e37_79b9u32;
    for b in &mut noise {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    std::fs::write(root.join("noise.m3u8"), noise).unwrap();
    std::fs::write(
        root.join("page.m3u8"),
        "<!DOCTYPE html><title>Login</title>",
    )
    .unwrap();
    std::fs::write(
        root.join("huge.m3u8"),
        format!("#EXTM3U\n{}", "#comment\n".repeat(200_000)),
    )
    .unwrap();
    std::fs::write(
        root.join("master.m3u8"),
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000\nlow.m3u8\n",
    )
    .unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let start = |url: String, variants: Vec<VariantSelector>| {
        let cfg = HlsConfig {
            variants,
            ..HlsConfig::new(url)
        };
        match avmon_hls::resolve(&cfg, Arc::new(Hls), Arc::new(AtomicBool::new(false))) {
            Ok(_) => panic!("{} was accepted", cfg.url),
            Err(e) => e.to_string(),
        }
    };
    let cases = [
        (start(nginx.url("noise.m3u8"), vec![]), "not UTF-8 text"),
        (
            start(nginx.url("page.m3u8"), vec![]),
            "does not start with #EXTM3U",
        ),
        (
            start(nginx.url("huge.m3u8"), vec![]),
            "larger than 1048576 bytes",
        ),
        (start(nginx.url("nothing-here.m3u8"), vec![]), "HTTP 404"),
        (
            start(format!("http://127.0.0.1:{closed}/live.m3u8"), vec![]),
            "onnection refused",
        ),
        (
            start("ftp://example.test/live.m3u8".into(), vec![]),
            "unsupported scheme \"ftp\"",
        ),
        (
            start(
                nginx.url("master.m3u8"),
                vec![VariantSelector::Name("hd".into())],
            ),
            "no variant matches",
        ),
    ];
    for (message, want) in cases {
        assert!(message.contains(want), "{message:?} should say {want:?}");
        assert!(!message.contains('\n'), "one line: {message:?}");
    }
}

#[test]
fn a_playlist_turning_to_garbage_is_stale_with_the_reason() {
    let nginx = Nginx::start("");
    let root = &nginx.root;
    write_vod(root, "clear.m3u8", "clear%03d.ts", 2, &[]);
    // A live playlist (no end tag) that will never change.
    let live = String::from_utf8(read(root, "clear.m3u8"))
        .unwrap()
        .replace("#EXT-X-ENDLIST\n", "");
    std::fs::write(root.join("live.m3u8"), live).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let m = avmon_hls::resolve(
        &HlsConfig::new(nginx.url("live.m3u8")),
        Arc::new(Hls),
        stop.clone(),
    )
    .unwrap()
    .pop()
    .unwrap();
    let rec = Recorder::default();
    let mut sink = rec.clone();
    let handle = std::thread::spawn(move || m.run(&mut sink));
    assert!(wait_for(Duration::from_secs(5), || rec
        .log()
        .segments
        .len()
        == 2));
    std::fs::write(root.join("live.m3u8"), [0xde, 0xad, 0xbe, 0xef]).unwrap();
    let stale = rec.wait_finding(kinds::HLS_STALE, FindingEdge::Begin, Duration::from_secs(6));
    stop.store(true, Ordering::Relaxed);
    let stats = handle.join().unwrap().unwrap();
    let (_, begin) = stale.expect("no hls.stale after the playlist turned to garbage");
    assert!(
        begin.details["last_error"]
            .as_str()
            .unwrap()
            .contains("not UTF-8"),
        "{begin:?}"
    );
    assert!(stats.reload_errors >= 1);
}
