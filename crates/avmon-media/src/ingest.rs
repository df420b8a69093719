//! Byte-level ingest: for transport-stream inputs avmon reads the bytes itself and hands them to
//! FFmpeg's demuxer through a custom I/O context, so that a transport analyser ([`ByteTap`]) sees
//! every byte once, on its way to the decoder, with nothing read twice.
//!
//! Which inputs ([`route`]):
//! - `udp://` and `rtp://`: avmon's own socket. Unicast or multicast (joined on the interface
//!   `localaddr=`), source-specific multicast (`sources=A,B`), a receive buffer of `buffer_size=`
//!   bytes (default 16 MiB, capped by the kernel's `net.core.rmem_max`: the size granted is
//!   logged), and for `rtp://` the RTP header stripped with sequence gaps counted
//!   ([`ByteTap::on_rtp_loss`]). The payload is MPEG-TS.
//! - `srt://`, `tcp://`, `http(s)://` (not HLS playlists): FFmpeg's protocol layer opens the
//!   connection (SRT caller or listener, latency, passphrase: its URL options), avmon reads from
//!   it and feeds the demuxer.
//! - a local file that starts with three TS sync bytes 188 bytes apart: read with `std::fs`.
//! - anything else (`rtmp://`, `rtsp://`, HLS, MP4 files, devices): straight through FFmpeg, which
//!   has no transport layer to show there.
//!
//! Reads never block for long: a socket read waits at most [`POLL`], then the stop flag and the
//! I/O deadline are checked, so a stalled source is reported as timed out (the same
//! [`EndReason::TimedOut`](crate::EndReason) as FFmpeg's own inputs) and a stop is prompt.

use std::cell::Cell;
use std::ffi::CString;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use avmon_core::Tier;
use ffmpeg_next::ffi;
use libc::{c_int, c_void};
use socket2::{Domain, Protocol, Socket, Type};

use crate::interrupt::{interrupt_cb, Interrupt};
use crate::keyfilter::{find_sync, Es, KeyFilter, TS};
use crate::{describe, MediaError, OpenOptions};

/// Sees the bytes of a byte-level input on their way to the demuxer (a transport analyser).
/// Called on the stream's own thread, from inside the demuxer's read.
///
/// Every method is required, none has a default: a tap that wraps others must forward each
/// one, and the compiler says so when one is added.
pub trait ByteTap: Send + Sync {
    /// A new byte stream begins (an input is being opened, or reopened after an outage): what
    /// follows does not continue what came before.
    fn on_start(&self);
    /// The next bytes of the input, in order, each exactly once.
    fn on_bytes(&self, bytes: &[u8]);
    /// RTP packets lost: the sequence number skipped `lost` packets.
    fn on_rtp_loss(&self, lost: u64);
    /// A datagram whose payload is `bytes` long was received by the kernel at `at_s` seconds
    /// (`CLOCK_REALTIME`), told before its bytes: UDP and RTP inputs, for the Media Delivery
    /// Index.
    fn on_arrival(&self, at_s: f64, bytes: usize);
}

/// A shared [`ByteTap`] in [`OpenOptions`].
#[derive(Clone)]
pub struct Tap(pub Arc<dyn ByteTap>);

impl fmt::Debug for Tap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tap")
    }
}

/// How long one socket or protocol read waits before the stop flag and deadline are checked.
pub const POLL: Duration = Duration::from_millis(100);
/// Receive buffer asked for by default: a few seconds of a 40 Mbit/s stream.
const DEFAULT_RCVBUF: usize = 16 << 20;
/// The largest datagram.
const MAX_DATAGRAM: usize = 65_536;
/// What a datagram of TS costs in a socket's receive buffer, at most (the kernel counts its
/// whole buffer; 2.3 KiB for 1316 bytes on loopback, a page with some network drivers).
const DATAGRAM_TRUESIZE: usize = 4096;
/// How long a UDP reader measures its datagram rate over.
const RATE_WINDOW: Duration = Duration::from_millis(250);
/// A UDP reader's linger before its rate is measured.
const UNMEASURED_LINGER: Duration = Duration::from_millis(5);

/// Where an input's bytes come from.
pub(crate) enum Route {
    /// avmon reads them; `format` forces the demuxer (`None`: probe).
    Bytes {
        reader: Box<dyn ByteSource>,
        format: Option<&'static str>,
    },
    /// FFmpeg opens the URL itself.
    Ffmpeg,
}

/// A source of bytes for [`Input::open_source`](crate::Input::open_source) (avmon's own readers
/// implement it too). `Ok(0)` is the end of the input; `ErrorKind::TimedOut` means nothing came
/// for the I/O timeout; `ErrorKind::Interrupted` that the stop flag was set. A read should not
/// block for much longer than [`POLL`] without checking the caller's stop flag.
pub trait ByteSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Whether the bytes the last read returned begin a new stream that does not continue the
    /// previous ones (an HLS discontinuity, a segment after a gap): the tap hears
    /// [`ByteTap::on_start`] before them. Asked once after each read.
    fn restarted(&mut self) -> bool {
        false
    }
    /// Whether the next read returns at once, without waiting for the source. A reader that
    /// cannot tell says `false`: the stream's CPU permit ([`avmon_core::sched::Slot`]) is then
    /// let go during each read.
    fn ready(&mut self) -> bool {
        false
    }
    /// Under the CPU scheduler, how long to let input gather before reading again once
    /// [`ByteSource::ready`] says everything waiting has been read: what comes meanwhile is
    /// read in one turn. `want` is the stream's choice for its tier ([`linger_for`]); a
    /// reader whose source keeps what is not read yet says `want`. One whose source drops what
    /// is not read in time (a socket's buffer) says less; one that cannot tell whether it is
    /// ready, nothing (the default).
    fn linger(&self, _want: Duration) -> Duration {
        Duration::ZERO
    }
}

/// Decide how to read `url` (see the module docs), and open it if avmon reads it.
pub(crate) fn route(
    url: &str,
    opts: &OpenOptions,
    stop: &Arc<AtomicBool>,
) -> Result<Route, MediaError> {
    let open_err = |reason: String| MediaError::Open {
        url: url.to_string(),
        reason,
    };
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    let waits = Waits {
        stop: stop.clone(),
        first: opts.open_timeout.max(opts.io_timeout),
        io: opts.io_timeout,
    };
    match scheme.as_deref() {
        Some(s @ ("udp" | "rtp")) => {
            let reader =
                UdpReader::open(url, s == "rtp", waits, opts.tap.clone(), opts.cpu.clone())
                    .map_err(|e| open_err(e.to_string()))?;
            Ok(Route::Bytes {
                reader: Box::new(reader),
                format: Some("mpegts"),
            })
        }
        Some("srt" | "tcp") => Ok(Route::Bytes {
            reader: protocol_reader(url, waits, opts)?,
            format: None,
        }),
        Some("http" | "https") if !is_playlist(url) => Ok(Route::Bytes {
            reader: protocol_reader(url, waits, opts)?,
            format: None,
        }),
        Some("file") | None => {
            let path = url.strip_prefix("file://").unwrap_or(url);
            match is_ts_file(Path::new(path)) {
                Some(file) => Ok(Route::Bytes {
                    reader: Box::new(FileReader {
                        file,
                        stop: waits.stop,
                    }),
                    format: Some("mpegts"),
                }),
                None => Ok(Route::Ffmpeg),
            }
        }
        _ => Ok(Route::Ffmpeg),
    }
}

/// FFmpeg's protocol layer for `url`. Under the CPU scheduler ([`OpenOptions::cpu`]) it is read
/// on a thread of its own ([`Prefetch`]): FFmpeg's reads cannot say whether they would block, and
/// letting go of the permit around each one would cost a turn of the queue per packet.
fn protocol_reader(
    url: &str,
    waits: Waits,
    opts: &OpenOptions,
) -> Result<Box<dyn ByteSource>, MediaError> {
    if opts.cpu.is_none() {
        return Ok(Box::new(ProtocolReader::open(
            url,
            waits,
            &opts.format_options,
        )?));
    }
    let own_stop = Arc::new(AtomicBool::new(false));
    let reader = ProtocolReader::open(
        url,
        Waits {
            stop: own_stop.clone(),
            first: waits.first,
            io: waits.io,
        },
        &opts.format_options,
    )?;
    Ok(Box::new(Prefetch::spawn(reader, waits.stop, own_stop)))
}

/// Reads a [`ProtocolReader`] on its own thread (I/O only: it waits, the stream's thread
/// decodes), so that [`ByteSource::ready`] can tell whether bytes are waiting.
struct Prefetch {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
    /// The stream's stop flag.
    stop: Arc<AtomicBool>,
    /// The reader thread's own stop flag: set when this is dropped or the stream stops.
    own_stop: Arc<AtomicBool>,
    /// The reader ended: `None` at the end of the input, else its error (kind and words); what
    /// every later read returns.
    ended: Option<Option<(io::ErrorKind, String)>>,
}

/// Chunks read ahead at most (each one protocol read: an SRT packet, a TCP read).
const PREFETCH_CHUNKS: usize = 1024;

impl Prefetch {
    fn spawn(mut reader: ProtocolReader, stop: Arc<AtomicBool>, own_stop: Arc<AtomicBool>) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel(PREFETCH_CHUNKS);
        let spawned = std::thread::Builder::new()
            .name("avmon-read".into())
            .spawn(move || {
                let mut buf = vec![0u8; IO_BUFFER];
                loop {
                    let r = reader.read(&mut buf).map(|n| buf[..n].to_vec());
                    let end = !matches!(&r, Ok(b) if !b.is_empty());
                    if tx.send(r).is_err() || end {
                        break;
                    }
                }
            });
        let ended = spawned.err().map(|e| {
            Some((
                io::ErrorKind::Other,
                format!("starting a reader thread: {e}"),
            ))
        });
        Prefetch {
            rx,
            chunk: Vec::new(),
            pos: 0,
            stop,
            own_stop,
            ended,
        }
    }

    fn take(&mut self, r: io::Result<Vec<u8>>) {
        match r {
            Ok(b) if !b.is_empty() => {
                self.chunk = b;
                self.pos = 0;
            }
            Ok(_) => self.ended = Some(None),
            Err(e) => self.ended = Some(Some((e.kind(), e.to_string()))),
        }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.own_stop.store(true, Ordering::Relaxed);
    }
}

impl ByteSource for Prefetch {
    /// The reader thread queues up to [`PREFETCH_CHUNKS`] chunks meanwhile, and its source
    /// waits when the queue is full: nothing is lost by lingering.
    fn linger(&self, want: Duration) -> Duration {
        want
    }

    fn ready(&mut self) -> bool {
        if self.pos < self.chunk.len() || self.ended.is_some() {
            return true;
        }
        match self.rx.try_recv() {
            Ok(r) => {
                self.take(r);
                true
            }
            Err(_) => false,
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.chunk.len() {
            match &self.ended {
                Some(None) => return Ok(0),
                Some(Some((kind, why))) => return Err(io::Error::new(*kind, why.clone())),
                None => {}
            }
            if self.stop.load(Ordering::Relaxed) {
                self.own_stop.store(true, Ordering::Relaxed);
                return Err(io::ErrorKind::Interrupted.into());
            }
            match self.rx.recv_timeout(POLL) {
                Ok(r) => self.take(r),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => self.ended = Some(None),
            }
        }
        // Every chunk already read ahead goes in (one demuxer read per batch, as for UDP).
        let mut filled = 0;
        loop {
            let n = (buf.len() - filled).min(self.chunk.len() - self.pos);
            buf[filled..filled + n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
            self.pos += n;
            filled += n;
            if filled == buf.len() || self.ended.is_some() {
                return Ok(filled);
            }
            match self.rx.try_recv() {
                Ok(r) => self.take(r),
                Err(_) => return Ok(filled),
            }
        }
    }
}

/// An HLS playlist (FFmpeg's HLS demuxer reads those; avmon's own HLS monitor is separate).
fn is_playlist(url: &str) -> bool {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .to_ascii_lowercase();
    path.ends_with(".m3u8") || path.ends_with(".m3u")
}

/// The file, opened at its start, if it begins like an MPEG-TS file (see [`looks_like_ts`]).
fn is_ts_file(path: &Path) -> Option<File> {
    let mut head = Vec::with_capacity(TS_PROBE_BYTES);
    File::open(path)
        .ok()?
        .take(TS_PROBE_BYTES as u64)
        .read_to_end(&mut head)
        .ok()?;
    looks_like_ts(&head)
        .then(|| File::open(path).ok())
        .flatten()
}

/// How much of a file [`is_ts_file`] reads: 64 packets.
const TS_PROBE_BYTES: usize = 188 * 64;

/// Whether `head` is MPEG-TS the way demuxers judge it: sync bytes at a 188-byte stride, on
/// most of the packets, from some offset. A damaged sync byte or a run of garbage at the start
/// (a file cut mid-packet, a flipped bit) does not hide a transport stream; resynchronising
/// after garbage is the transport analyser's (it counts the sync losses).
fn looks_like_ts(head: &[u8]) -> bool {
    const P: usize = 188;
    (0..P.min(head.len())).any(|phase| {
        let slots = (head.len() - phase).div_ceil(P);
        let synced = head[phase..]
            .iter()
            .step_by(P)
            .filter(|&&b| b == 0x47)
            .count();
        slots >= 3 && synced >= 3 && synced * 10 >= slots * 8
    })
}

/// The stop flag and the I/O deadlines of a reader.
struct Waits {
    stop: Arc<AtomicBool>,
    /// Longest wait for the first bytes (connect and probe).
    first: Duration,
    /// Longest wait for more bytes after that.
    io: Duration,
}

struct FileReader {
    file: File,
    stop: Arc<AtomicBool>,
}

impl ByteSource for FileReader {
    fn ready(&mut self) -> bool {
        true
    }
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(io::ErrorKind::Interrupted.into());
        }
        self.file.read(buf)
    }
}

/// `udp://` / `rtp://` options, FFmpeg's spelling: `udp://[@]HOST:PORT?localaddr=IP&sources=IP,IP&buffer_size=N`.
#[derive(Debug, PartialEq)]
struct UdpUrl {
    addr: SocketAddr,
    localaddr: Option<IpAddr>,
    sources: Vec<Ipv4Addr>,
    buffer_size: usize,
}

fn parse_udp_url(url: &str) -> Result<UdpUrl, String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (hostport, query) = rest.split_once('?').unwrap_or((rest, ""));
    let hostport = hostport.trim_end_matches('/');
    let hostport = hostport.rsplit_once('@').map_or(hostport, |(_, h)| h);
    let (host, port) = hostport
        .rsplit_once(':')
        .ok_or_else(|| format!("no port in {url:?} (udp://[@]HOST:PORT)"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("bad port {port:?} in {url:?}"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = if host.is_empty() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        host.parse()
            .map_err(|_| format!("{host:?} is not an IP address (names are not resolved here)"))?
    };
    let mut out = UdpUrl {
        addr: SocketAddr::new(ip, port),
        localaddr: None,
        sources: Vec::new(),
        buffer_size: DEFAULT_RCVBUF,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "localaddr" => {
                out.localaddr = Some(v.parse().map_err(|_| format!("bad localaddr {v:?}"))?)
            }
            "sources" => {
                for s in v.split(',').filter(|s| !s.is_empty()) {
                    out.sources
                        .push(s.parse().map_err(|_| format!("bad source address {s:?}"))?);
                }
            }
            "buffer_size" => {
                out.buffer_size = v
                    .parse()
                    .ok()
                    .filter(|&n: &usize| n > 0)
                    .ok_or_else(|| format!("bad buffer_size {v:?}"))?
            }
            // FFmpeg's other udp options (pkt_size, fifo_size, overrun_nonfatal, timeout...)
            // concern its own reader; avmon's does not need them.
            _ => tracing::debug!(option = k, "udp option ignored by avmon's reader"),
        }
    }
    if !out.sources.is_empty() && !matches!(ip, IpAddr::V4(g) if g.is_multicast()) {
        return Err("sources= needs an IPv4 multicast group".into());
    }
    Ok(out)
}

/// A UDP socket, unicast or multicast, optionally carrying RTP.
struct UdpReader {
    socket: Socket,
    rtp: bool,
    waits: Waits,
    tap: Option<crate::Tap>,
    /// The datagrams of the last receive.
    batch: Datagrams,
    /// The next of them to take.
    next: usize,
    /// Payload of the current datagram not handed out yet: `batch.bytes[pos..end]`.
    pos: usize,
    end: usize,
    /// Last RTP sequence number seen.
    last_seq: Option<u16>,
    last_data: Instant,
    got_data: bool,
    /// Receive buffer the kernel granted, bytes.
    rcvbuf: usize,
    /// Datagrams a second, measured over at least [`RATE_WINDOW`] (0: not yet).
    rate: f64,
    rate_count: u32,
    rate_since: Instant,
    /// Told how long each datagram waited in the socket and how many the kernel dropped.
    cpu: Option<avmon_core::sched::Slot>,
    /// How long the batches waited, kept right across wall-clock steps.
    waited: ArrivalAge,
}

impl UdpReader {
    fn open(
        url: &str,
        rtp: bool,
        waits: Waits,
        tap: Option<crate::Tap>,
        cpu: Option<avmon_core::sched::Slot>,
    ) -> Result<Self, String> {
        let u = parse_udp_url(url)?;
        let domain = Domain::for_address(u.addr);
        let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))
            .map_err(|e| format!("socket: {e}"))?;
        socket
            .set_reuse_address(true)
            .map_err(|e| format!("SO_REUSEADDR: {e}"))?;
        let _ = socket.set_recv_buffer_size(u.buffer_size);
        let granted = socket.recv_buffer_size().unwrap_or(0);
        if granted < u.buffer_size {
            tracing::info!(
                url,
                asked = u.buffer_size,
                granted,
                "receive buffer capped by the kernel (raise net.core.rmem_max)"
            );
        }
        let multicast = u.addr.ip().is_multicast();
        // Bound on the URL's address: a multicast group on its own address, so that other
        // groups on the same port stay out; a unicast address to listen on one interface.
        let bind = u.addr;
        socket
            .bind(&bind.into())
            .map_err(|e| format!("bind {bind}: {e}"))?;
        match u.addr.ip() {
            IpAddr::V4(group) if multicast => {
                let iface = match u.localaddr {
                    Some(IpAddr::V4(a)) => a,
                    Some(IpAddr::V6(_)) => return Err("localaddr must be IPv4 here".into()),
                    None => Ipv4Addr::UNSPECIFIED,
                };
                if u.sources.is_empty() {
                    socket
                        .join_multicast_v4(&group, &iface)
                        .map_err(|e| format!("joining {group} on {iface}: {e}"))?;
                } else {
                    for src in &u.sources {
                        socket
                            .join_ssm_v4(src, &group, &iface)
                            .map_err(|e| format!("joining {group} from {src} on {iface}: {e}"))?;
                    }
                }
            }
            IpAddr::V6(group) if multicast => socket
                .join_multicast_v6(&group, 0)
                .map_err(|e| format!("joining {group}: {e}"))?,
            _ => {}
        }
        socket
            .set_read_timeout(Some(POLL))
            .map_err(|e| format!("SO_RCVTIMEO: {e}"))?;
        if cpu.is_some() || tap.is_some() {
            // Each datagram's kernel arrival time and the socket's drop count come with it
            // (ancillary data): how far behind the reader is, measured where it matters, and
            // how evenly the network delivers (MDI).
            enable_arrival_info(&socket);
        }
        Ok(UdpReader {
            socket,
            rtp,
            waits,
            tap,
            batch: Datagrams::new().map_err(|e| format!("receive buffer: {e}"))?,
            next: 0,
            pos: 0,
            end: 0,
            last_seq: None,
            last_data: Instant::now(),
            got_data: false,
            rcvbuf: granted,
            rate: 0.0,
            rate_count: 0,
            rate_since: Instant::now(),
            cpu,
            waited: ArrivalAge::default(),
        })
    }

    /// Receive every datagram waiting, up to a batch, without blocking when `wait` is false
    /// and else waiting for the first; notes the oldest one's age and the socket's drops for
    /// the scheduler when asked for them.
    fn recv_batch(&mut self, wait: bool) -> io::Result<()> {
        self.next = 0;
        let n = self.batch.recv(&self.socket, wait)?;
        // The clock and the rate once per batch, not per datagram.
        self.last_data = Instant::now();
        self.got_data = true;
        self.rate_count += n as u32;
        let span = self.last_data.duration_since(self.rate_since);
        if span >= RATE_WINDOW {
            self.rate = f64::from(self.rate_count) / span.as_secs_f64();
            self.rate_count = 0;
            self.rate_since = self.last_data;
        }
        if let (Some(cpu), Some(at)) = (&self.cpu, self.batch.arrival.at) {
            let age = self.waited.age(age_of(at), self.last_data);
            cpu.note_arrival(age, self.batch.arrival.drops);
        }
        Ok(())
    }

    /// Make the next received datagram that carries a payload current
    /// (`batch.bytes[pos..end]`); false when the batch has none left.
    fn take_next(&mut self) -> bool {
        while let Some(range) = self.batch.datagram(self.next) {
            self.next += 1;
            if self.accept(range) {
                return true;
            }
        }
        false
    }

    /// Take the received datagram at `range` of the batch; false when it carries no payload.
    fn accept(&mut self, range: std::ops::Range<usize>) -> bool {
        let (start, end) = if self.rtp {
            match rtp_payload(&self.batch.bytes[range.clone()]) {
                Some((seq, start, end)) => {
                    self.count_seq(seq);
                    (range.start + start, range.start + end)
                }
                // Not RTP (raw TS sent to an rtp:// port): take it whole.
                None => (range.start, range.end),
            }
        } else {
            (range.start, range.end)
        };
        self.pos = start;
        self.end = end;
        if let Some(tap) = &self.tap {
            let at = self.batch.ats[range.start / MAX_DATAGRAM];
            if start < end && at.is_finite() {
                tap.0.on_arrival(at, end - start);
            }
        }
        start < end
    }

    /// Make the next datagram with a payload current (`batch.bytes[pos..end]`), waiting for it.
    fn receive(&mut self) -> io::Result<()> {
        loop {
            if self.take_next() {
                return Ok(());
            }
            if self.waits.stop.load(Ordering::Relaxed) {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let limit = if self.got_data {
                self.waits.io
            } else {
                self.waits.first
            };
            if self.last_data.elapsed() >= limit {
                return Err(io::ErrorKind::TimedOut.into());
            }
            match self.recv_batch(true) {
                Ok(()) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn count_seq(&mut self, seq: u16) {
        if let Some(last) = self.last_seq {
            let ahead = seq.wrapping_sub(last);
            if ahead == 0 || ahead >= 0x8000 {
                // A duplicate or a late (reordered) packet: not a gap, and not the new latest.
                return;
            }
            if ahead > 1 {
                if let Some(tap) = &self.tap {
                    tap.0.on_rtp_loss(u64::from(ahead - 1));
                }
            }
        }
        self.last_seq = Some(seq);
    }
}

/// The sequence number and payload range of an RTP packet (RFC 3550 5.1), or `None` when the
/// datagram is not RTP version 2 or is inconsistent.
fn rtp_payload(d: &[u8]) -> Option<(u16, usize, usize)> {
    if d.len() < 12 || d[0] >> 6 != 2 {
        return None;
    }
    let csrc = usize::from(d[0] & 0x0f);
    let mut start = 12 + 4 * csrc;
    if d[0] & 0x10 != 0 {
        let ext = d.get(start + 2..start + 4)?;
        start += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    let mut end = d.len();
    if d[0] & 0x20 != 0 {
        end = end.checked_sub(usize::from(*d.last()?))?;
    }
    (start <= end).then_some((u16::from_be_bytes([d[2], d[3]]), start, end))
}

impl UdpReader {
    /// Take the next datagram already waiting in the socket, without blocking; false when
    /// there is none.
    fn take_waiting(&mut self) -> bool {
        loop {
            if self.take_next() {
                return true;
            }
            if self.recv_batch(false).is_err() {
                return false;
            }
        }
    }
}

impl ByteSource for UdpReader {
    fn ready(&mut self) -> bool {
        self.pos < self.end || self.take_waiting()
    }
    /// `want`, or less when the datagrams that come meanwhile would fill more than a quarter
    /// of the socket's receive buffer (a fast stream on a host that left `net.core.rmem_max` at
    /// its default); [`UNMEASURED_LINGER`] until the rate is known.
    fn linger(&self, want: Duration) -> Duration {
        if self.rate <= 0.0 {
            return UNMEASURED_LINGER.min(want);
        }
        let fits = self.rcvbuf as f64 / DATAGRAM_TRUESIZE as f64;
        want.min(Duration::from_secs_f64(fits / 4.0 / self.rate))
    }
    /// Waits for one datagram when none is pending, then fills `buf` with every datagram
    /// already waiting: one demuxer read and one tap call per batch, not per datagram.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.end {
            self.receive()?;
        }
        let mut filled = 0;
        loop {
            let n = (buf.len() - filled).min(self.end - self.pos);
            buf[filled..filled + n].copy_from_slice(&self.batch.bytes[self.pos..self.pos + n]);
            self.pos += n;
            filled += n;
            if filled == buf.len() || !self.take_waiting() {
                return Ok(filled);
            }
        }
    }
}

/// Ask the kernel for each datagram's receive time (`SO_TIMESTAMPNS`) and the socket's count of
/// dropped datagrams (`SO_RXQ_OVFL`) with every datagram received. Best effort: without them the
/// reader works the same, only unmeasured.
fn enable_arrival_info(socket: &Socket) {
    use std::os::fd::AsRawFd;
    let one: c_int = 1;
    for opt in [libc::SO_TIMESTAMPNS, libc::SO_RXQ_OVFL] {
        // SAFETY: setting an int socket option on our own open socket.
        let r = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                &one as *const c_int as *const c_void,
                std::mem::size_of::<c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            tracing::debug!(opt, "socket option refused: {}", io::Error::last_os_error());
        }
    }
}

/// Datagrams taken by one `recvmmsg`.
const BATCH: usize = 16;

/// What the kernel said with a batch of datagrams, when asked ([`enable_arrival_info`]): when
/// the oldest arrived, and how many datagrams the socket had dropped by the newest.
#[derive(Clone, Copy, Default)]
struct Arrival {
    at: Option<libc::timespec>,
    drops: Option<u64>,
}

/// Room for up to [`BATCH`] datagrams of any size, received in one `recvmmsg`. Each has a
/// whole [`MAX_DATAGRAM`] slot, so none is ever truncated; only the pages that datagrams touch
/// are resident ([`Lazy`]): 16 pages for 1316-byte datagrams, not 1 MiB.
struct Datagrams {
    bytes: Lazy,
    lens: [usize; BATCH],
    /// Of the last receive.
    arrival: Arrival,
    /// Each datagram's kernel receive time, seconds (`CLOCK_REALTIME`; NaN when not told).
    ats: [f64; BATCH],
    /// Datagrams received by the last call.
    len: usize,
    /// Room for a timespec and a u32 per datagram, with headers and alignment (u64 aligns).
    control: Box<[[u64; 16]; BATCH]>,
}

impl Datagrams {
    fn new() -> io::Result<Self> {
        Ok(Datagrams {
            bytes: Lazy::new(BATCH * MAX_DATAGRAM)?,
            lens: [0; BATCH],
            arrival: Arrival::default(),
            ats: [f64::NAN; BATCH],
            len: 0,
            control: Box::new([[0; 16]; BATCH]),
        })
    }

    /// Where datagram `i` of the last receive lies in `bytes`.
    fn datagram(&self, i: usize) -> Option<std::ops::Range<usize>> {
        (i < self.len).then(|| i * MAX_DATAGRAM..i * MAX_DATAGRAM + self.lens[i])
    }

    /// `recvmmsg` as many datagrams as are waiting, up to [`BATCH`]: without blocking when
    /// `wait` is false, else waiting for the first (for as long as the socket's
    /// `SO_RCVTIMEO`). Returns how many; `WouldBlock` when there was none.
    fn recv(&mut self, socket: &Socket, wait: bool) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        self.len = 0;
        let base = self.bytes.as_mut_ptr();
        let mut iovs: [libc::iovec; BATCH] = std::array::from_fn(|i| libc::iovec {
            // SAFETY: slot `i` lies inside `bytes` (BATCH slots of MAX_DATAGRAM bytes).
            iov_base: unsafe { base.add(i * MAX_DATAGRAM) } as *mut c_void,
            iov_len: MAX_DATAGRAM,
        });
        // SAFETY: a zeroed mmsghdr is valid; the pointers set below outlive the call.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (i, (m, c)) in msgs.iter_mut().zip(self.control.iter_mut()).enumerate() {
            m.msg_hdr.msg_iov = &mut iovs[i];
            m.msg_hdr.msg_iovlen = 1;
            m.msg_hdr.msg_control = c.as_mut_ptr() as *mut c_void;
            m.msg_hdr.msg_controllen = std::mem::size_of_val(c) as _;
        }
        let flags = if wait {
            libc::MSG_WAITFORONE
        } else {
            libc::MSG_DONTWAIT
        };
        // One system call for every datagram waiting, not one each: at 475 datagrams a second
        // per 5 Mbit/s stream, entering the kernel was a large share of a light stream's CPU.
        // The system call itself, not glibc's wrapper: that is a thread cancellation point,
        // and entering and leaving asynchronous cancellation around each call (atomics on the
        // thread's state) cost 2 % of 100 streams' CPU at `keyframes`. avmon never cancels
        // threads.
        // SAFETY: `msgs` points to our buffers, of the sizes given.
        let n = unsafe {
            libc::syscall(
                libc::SYS_recvmmsg,
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                flags,
                ptr::null_mut::<libc::timespec>(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        self.arrival = Arrival::default();
        for (i, m) in msgs[..n].iter().enumerate() {
            self.lens[i] = (m.msg_len as usize).min(MAX_DATAGRAM);
            let a = arrival_of(&m.msg_hdr);
            self.ats[i] =
                a.at.map_or(f64::NAN, |t| t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9);
            self.arrival.at = self.arrival.at.or(a.at);
            self.arrival.drops = a.drops.or(self.arrival.drops);
        }
        self.len = n;
        Ok(n)
    }
}

/// Zeroed bytes mapped straight from the kernel, so that a page is made resident only when
/// first written (an allocator may hand out, and clear, memory that is resident already).
struct Lazy {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: `Lazy` owns its mapping outright, like a `Vec<u8>`.
unsafe impl Send for Lazy {}

impl Lazy {
    fn new(len: usize) -> io::Result<Self> {
        // SAFETY: a fresh private anonymous mapping, owned by the value returned.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Lazy {
            ptr: p as *mut u8,
            len,
        })
    }
}

impl std::ops::Deref for Lazy {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len` mapped, zero-initialised bytes.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl std::ops::DerefMut for Lazy {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Lazy {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once.
        unsafe { libc::munmap(self.ptr as *mut c_void, self.len) };
    }
}

/// The arrival time and drop count the kernel wrote in one received message's control data.
fn arrival_of(msg: &libc::msghdr) -> Arrival {
    let mut a = Arrival::default();
    // SAFETY: walking the control messages the kernel wrote, with libc's CMSG macros, inside
    // `msg_controllen`; each payload is read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            let h = &*c;
            if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_TIMESTAMPNS {
                a.at = Some(std::ptr::read_unaligned(
                    libc::CMSG_DATA(c) as *const libc::timespec
                ));
            } else if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SO_RXQ_OVFL {
                a.drops = Some(u64::from(std::ptr::read_unaligned(
                    libc::CMSG_DATA(c) as *const u32
                )));
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    a
}

/// Seconds since the kernel received a datagram stamped `at` (`CLOCK_REALTIME`), on the wall
/// clock now: wrong by as much as that clock was stepped meanwhile (see [`ArrivalAge`]).
fn age_of(at: libc::timespec) -> f64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now.as_secs_f64() - (at.tv_sec as f64 + at.tv_nsec as f64 * 1e-9)
}

/// How long each batch of datagrams waited in the socket, from the kernel's receive stamps and
/// the wall clock, kept right when the wall clock steps (NTP, a VM resumed, a clock set by hand)
/// between a stamp and its reading, or when only this process's clock moves (libfaketime).
///
/// A batch's oldest datagram arrived after the last batch's, so its wait can have grown by at
/// most the time between the two reads (on the monotonic clock): more is a step forward. A wait
/// below zero is a step back. Either is absorbed as an offset, held until the next step. A step
/// forward is taken as if the batch had not waited: a reader behind at that moment is seen as
/// less behind, by that much at most, until it catches up; it is never seen behind when it is not.
#[derive(Default)]
struct ArrivalAge {
    offset: f64,
    last: Option<(Instant, f64)>,
}

/// Leeway for the stamps' and clocks' granularity, seconds.
const STEP_SLACK_S: f64 = 0.25;

impl ArrivalAge {
    /// The wait of a batch whose oldest datagram is `raw` seconds old on the wall clock, read
    /// at `now`.
    fn age(&mut self, raw: f64, now: Instant) -> Duration {
        if self.last.is_none() {
            // The socket was just opened, so the first batch has hardly waited: whatever its
            // wall-clock age says beyond that is the two clocks disagreeing (libfaketime moves
            // this process's clock and not the kernel's stamps; so would any clock that is not
            // the kernel's CLOCK_REALTIME). A first batch that did wait is seen less behind by
            // that much, until the reader catches up.
            self.offset = raw;
        }
        let mut age = raw - self.offset;
        if age < 0.0 {
            self.offset += age;
            age = 0.0;
        }
        if let Some((then, last)) = self.last {
            let most = last + now.saturating_duration_since(then).as_secs_f64() + STEP_SLACK_S;
            if age > most {
                self.offset += age;
                age = 0.0;
            }
        }
        self.last = Some((now, age));
        Duration::try_from_secs_f64(age).unwrap_or_default()
    }
}

/// An input opened with FFmpeg's protocol layer (`avio_open2`), read by avmon.
struct ProtocolReader {
    pb: *mut ffi::AVIOContext,
    deadline: Box<Interrupt>,
    waits: Waits,
    got_data: bool,
}

// SAFETY: a ProtocolReader owns its AVIOContext and interrupt state outright; moved to the
// thread that reads it ([`Prefetch`]), it is used there alone (FFmpeg's I/O contexts may be
// used from any one thread at a time).
unsafe impl Send for ProtocolReader {}

impl ProtocolReader {
    fn open(url: &str, waits: Waits, options: &[(String, String)]) -> Result<Self, MediaError> {
        crate::init();
        let open_err = |reason: String| MediaError::Open {
            url: url.to_string(),
            reason,
        };
        let curl = CString::new(url).map_err(|_| open_err("the URL contains a NUL byte".into()))?;
        let deadline = Box::new(Interrupt {
            stop: waits.stop.clone(),
            deadline: Cell::new(Instant::now() + waits.first),
        });
        let mut dict = ffmpeg_next::Dictionary::new();
        for (k, v) in options {
            dict.set(k, v);
        }
        let cb = ffi::AVIOInterruptCB {
            callback: Some(interrupt_cb),
            opaque: &*deadline as *const Interrupt as *mut c_void,
        };
        let mut pb: *mut ffi::AVIOContext = ptr::null_mut();
        // SAFETY: avio_open2 with a valid URL, interrupt callback and options dictionary (which
        // it may replace; we free what comes back).
        let r = unsafe {
            let mut d = dict.disown();
            let r = ffi::avio_open2(&mut pb, curl.as_ptr(), ffi::AVIO_FLAG_READ, &cb, &mut d);
            drop(ffmpeg_next::Dictionary::own(d));
            r
        };
        if r < 0 {
            return Err(open_err(describe(&ffmpeg_next::Error::from(r))));
        }
        Ok(ProtocolReader {
            pb,
            deadline,
            waits,
            got_data: false,
        })
    }
}

impl ByteSource for ProtocolReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let limit = if self.got_data {
            self.waits.io
        } else {
            self.waits.first
        };
        self.deadline.deadline.set(Instant::now() + limit);
        let len = c_int::try_from(buf.len()).unwrap_or(c_int::MAX);
        // SAFETY: `pb` is open; `buf` is valid for `len` bytes.
        let r = unsafe { ffi::avio_read_partial(self.pb, buf.as_mut_ptr(), len) };
        match r {
            n if n > 0 => {
                self.got_data = true;
                Ok(n as usize)
            }
            0 => Ok(0),
            ffi::AVERROR_EOF => Ok(0),
            ffi::AVERROR_EXIT => Err(if self.waits.stop.load(Ordering::Relaxed) {
                io::ErrorKind::Interrupted.into()
            } else {
                io::ErrorKind::TimedOut.into()
            }),
            e => {
                let why = describe(&ffmpeg_next::Error::from(e));
                if self.got_data {
                    // A connection that carried data and then fails was closed by the peer
                    // (SRT reports that as an I/O error): the end of this input.
                    tracing::debug!("read ended: {why}");
                    Ok(0)
                } else {
                    Err(io::Error::other(why))
                }
            }
        }
    }
}

impl Drop for ProtocolReader {
    fn drop(&mut self) {
        // SAFETY: `pb` came from avio_open2 and is closed once.
        unsafe { ffi::avio_closep(&mut self.pb) };
    }
}

/// What the custom I/O context's read callback works with.
pub(crate) struct IoState {
    reader: Box<dyn ByteSource>,
    tap: Option<crate::Tap>,
    /// The stream's CPU permit, let go while a read waits for the source.
    cpu: Option<avmon_core::sched::Slot>,
    /// Why the last read failed, for the user.
    pub(crate) error: Option<io::Error>,
    /// Blanks the video's inter-coded pictures at the `keyframes` tier ([`KeyFilter`]).
    filter: Option<KeyFilter>,
    /// The filter knows where the TS packets start: at the start of each read.
    synced: bool,
    /// The start of a TS packet that the last read ended inside: held back until it is whole,
    /// so that the filter judges whole packets. It goes out first on the next read.
    held: Vec<u8>,
    /// Bytes handed to the demuxer so far: the input position of the next read's first byte.
    handed: i64,
    /// How long to let input gather between turns, for the tier ([`linger_for`]).
    pub(crate) linger: Duration,
}

impl IoState {
    pub(crate) fn new(
        reader: Box<dyn ByteSource>,
        tap: Option<crate::Tap>,
        cpu: Option<avmon_core::sched::Slot>,
    ) -> Box<Self> {
        Box::new(IoState {
            reader,
            tap,
            cpu,
            error: None,
            filter: None,
            synced: false,
            held: Vec::new(),
            handed: 0,
            linger: INPUT_LINGER,
        })
    }

    /// Blank the pictures of video PID `pid` from now on (`es` says how to tell its
    /// keyframes), or stop blanking (`None`; what was blanked is still known).
    pub(crate) fn filter_video(&mut self, video: Option<(u16, Es)>) {
        match (video, self.filter.as_mut()) {
            (Some((pid, _)), Some(f)) if f.pid() == pid => {
                if !f.active {
                    // Resumes after a gap: its first PES packet starts afresh.
                    f.restart();
                    f.active = true;
                    self.synced = false;
                }
            }
            (Some((pid, es)), _) => {
                self.filter = Some(KeyFilter::new(pid, es));
                self.synced = false;
            }
            (None, Some(f)) => f.active = false,
            (None, None) => {}
        }
    }

    pub(crate) fn filter(&self) -> Option<&KeyFilter> {
        self.filter.as_ref()
    }

    /// Run the filter over `buf`, the bytes the demuxer is about to get, in place. Returns
    /// how many to hand over now: up to the start of a packet the read ended inside, which is
    /// held back for the next read (unless nothing would be left to hand over).
    fn filter_bytes(&mut self, buf: &mut [u8]) -> usize {
        let n = self.filter_in_place(buf);
        self.handed += n as i64;
        n
    }

    fn filter_in_place(&mut self, buf: &mut [u8]) -> usize {
        let Some(f) = self.filter.as_mut().filter(|f| f.active) else {
            return buf.len();
        };
        let mut at = if self.synced {
            0
        } else {
            match find_sync(buf) {
                Some(i) => i,
                None => return buf.len(),
            }
        };
        loop {
            let whole = (buf.len() - at) / TS * TS;
            let done = f.packets(&mut buf[at..at + whole], self.handed + at as i64);
            at += done;
            if done == whole {
                break;
            }
            // The packets were lost at `at`: find them again, passing what lies between.
            match find_sync(&buf[at..]) {
                Some(i) if i > 0 => at += i,
                _ => {
                    self.synced = false;
                    return buf.len();
                }
            }
        }
        if at == buf.len() || at == 0 {
            // Ends on a packet's end; or not one whole packet came: all of it goes (its
            // packets are found again next time).
            self.synced = at > 0;
            return buf.len();
        }
        self.held.extend_from_slice(&buf[at..]);
        self.synced = true;
        at
    }
}

/// Bytes in the custom I/O context's buffer.
const IO_BUFFER: usize = 64 * 1024;

/// How long a stream under the CPU scheduler that has read all its input waits before it reads
/// again ([`ByteSource::linger`]) at `full` and `reference`: the input that gathers meanwhile
/// is taken in one turn. Waking per datagram (a 5 Mbit/s stream sends 475 a second), a hundred
/// light streams spent most of their CPU switching threads; this wakes each 20 times a second.
/// The data waits at most this long more, which is little next to the seconds an alert needs.
pub const INPUT_LINGER: Duration = Duration::from_millis(50);

/// The linger at `keyframes` and `transport`, the tiers that trade detail for cost: there
/// the fixed cost of each turn (two thread switches, a demuxer call) is a large share of the
/// stream's, and a tier that judges pictures seconds apart loses nothing by hearing of its
/// audio 0.2 s later. Five turns a second instead of twenty.
pub const REDUCED_LINGER: Duration = Duration::from_millis(200);

/// The linger a stream at `tier` asks its reader for ([`ByteSource::linger`]).
pub fn linger_for(tier: Tier) -> Duration {
    match tier {
        Tier::Full | Tier::Reference => INPUT_LINGER,
        Tier::Keyframes | Tier::Transport => REDUCED_LINGER,
    }
}

/// The custom I/O context: owns the AVIOContext and its buffer, frees them on drop (after the
/// format context that uses it is closed: field order in `Input`).
pub(crate) struct CustomIo {
    pub(crate) avio: *mut ffi::AVIOContext,
}

impl CustomIo {
    /// A read-only, non-seekable I/O context reading from `state`.
    pub(crate) fn new(state: &mut IoState) -> Option<CustomIo> {
        // SAFETY: the buffer is allocated with av_malloc as avio_alloc_context requires; on
        // failure it is freed here, after success the context owns it (freed in Drop).
        unsafe {
            let buf = ffi::av_malloc(IO_BUFFER) as *mut u8;
            if buf.is_null() {
                return None;
            }
            let avio = ffi::avio_alloc_context(
                buf,
                IO_BUFFER as c_int,
                0,
                state as *mut IoState as *mut c_void,
                Some(read_packet),
                None,
                None,
            );
            if avio.is_null() {
                ffi::av_free(buf as *mut c_void);
                return None;
            }
            Some(CustomIo { avio })
        }
    }
}

impl Drop for CustomIo {
    fn drop(&mut self) {
        // SAFETY: the context and its (possibly reallocated) buffer are ours, freed once.
        unsafe {
            if !self.avio.is_null() {
                ffi::av_freep(&mut (*self.avio).buffer as *mut *mut u8 as *mut c_void);
                ffi::avio_context_free(&mut self.avio);
            }
        }
    }
}

extern "C" fn read_packet(opaque: *mut c_void, buf: *mut u8, size: c_int) -> c_int {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: `opaque` is the boxed `IoState` that outlives the I/O context; `buf` is
        // FFmpeg's buffer of `size` bytes.
        let state = unsafe { &mut *(opaque as *mut IoState) };
        let buf = unsafe { std::slice::from_raw_parts_mut(buf, size.max(0) as usize) };
        // A packet held back by the last read goes first (it has been through the tap).
        let held = state.held.len().min(buf.len());
        buf[..held].copy_from_slice(&state.held[..held]);
        state.held.drain(..held);
        let into = &mut buf[held..];
        let read = match &state.cpu {
            Some(cpu) if cpu.held() && !state.reader.ready() => cpu.blocking(|| {
                let linger = state.reader.linger(state.linger);
                if !linger.is_zero() {
                    std::thread::sleep(linger);
                }
                state.reader.read(into)
            }),
            _ => state.reader.read(into),
        };
        match read {
            // The end, or a failure that the next read meets again: what was held goes first.
            Ok(0) | Err(_) if held > 0 => {
                state.handed += held as i64;
                held as c_int
            }
            Ok(0) => ffi::AVERROR_EOF,
            Ok(n) => {
                let restarted = state.reader.restarted();
                if let Some(tap) = &state.tap {
                    if restarted {
                        tap.0.on_start();
                    }
                    tap.0.on_bytes(&buf[held..held + n]);
                }
                if restarted {
                    if let Some(f) = state.filter.as_mut() {
                        f.restart();
                    }
                    state.synced = false;
                }
                state.filter_bytes(&mut buf[..held + n]) as c_int
            }
            Err(e) => {
                let code = match e.kind() {
                    io::ErrorKind::TimedOut | io::ErrorKind::Interrupted => ffi::AVERROR_EXIT,
                    _ => ffi::AVERROR(libc::EIO),
                };
                state.error = Some(e);
                code
            }
        }
    }));
    result.unwrap_or(ffi::AVERROR(libc::EIO))
}

#[cfg(test)]
mod tests {
    /// A reader opened while this process's clock is 69 s ahead of the kernel's (libfaketime,
    /// after a step) sees no phantom 69 s lag, and still sees itself fall behind.
    #[test]
    fn a_reader_opened_on_a_stepped_clock_is_not_behind() {
        let mut w = super::ArrivalAge::default();
        let t0 = Instant::now();
        let got: Vec<f64> = [(0.0, 0.02), (1.0, 0.03), (2.0, 0.9), (3.0, 1.8)]
            .into_iter()
            .map(|(t, wait)| {
                w.age(69.0 + wait, t0 + Duration::from_secs_f64(t))
                    .as_secs_f64()
            })
            .collect();
        let want = [0.0, 0.01, 0.88, 1.78];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-9, "{got:?}");
        }
    }

    /// A reader falling behind is measured; wall-clock steps either way are not taken for
    /// waiting.
    #[test]
    fn a_clock_step_is_not_a_wait() {
        let mut w = super::ArrivalAge::default();
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        // (seconds since t0 on the monotonic clock, the wall clock's offset, the true wait)
        let batches = [
            (0.0, 0.0, 0.01),
            (1.0, 0.0, 0.5),
            (2.0, 0.0, 1.3),   // falling behind, at most a second a second
            (3.0, 300.0, 1.0), // stepped 5 minutes forward
            (4.0, 300.0, 0.02),
            (5.0, 300.0, 0.9),
            (6.0, -120.0, 0.02), // and back past where it was
            (7.0, -120.0, 0.8),
            (8.0, 0.0, 0.05),
            (9.0, 0.0, 0.3),
        ];
        // The first batch counts as a step: its own wait is taken for the clocks' offset.
        let mut wait_at_step = batches[0].2;
        let mut last_step = 0.0;
        for (i, (t, step, wait)) in batches.into_iter().enumerate() {
            if step != last_step {
                wait_at_step = wait;
                last_step = step;
            }
            let got = w.age(wait + step, at(t)).as_secs_f64();
            // Never behind when it is not; less behind by at most its wait at the last step.
            assert!(
                got <= wait + 1e-9 && got >= wait - wait_at_step - 1e-9,
                "batch {i}: {got} s for a wait of {wait} s ({wait_at_step} s at the step)"
            );
            if i < 3 {
                assert!(
                    (got - (wait - batches[0].2)).abs() < 1e-9,
                    "no step yet: exact, less the first batch's wait"
                );
            }
        }
    }

    use super::*;

    #[test]
    fn udp_urls_parse_like_ffmpeg() {
        let u =
            parse_udp_url("udp://@239.1.2.3:5000?localaddr=127.0.0.1&buffer_size=1000").unwrap();
        assert_eq!(u.addr, "239.1.2.3:5000".parse().unwrap());
        assert_eq!(u.localaddr, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(u.buffer_size, 1000);
        let u = parse_udp_url("udp://:1234").unwrap();
        assert_eq!(u.addr, "0.0.0.0:1234".parse().unwrap());
        let u = parse_udp_url("rtp://232.0.0.1:5004?sources=10.0.0.1,10.0.0.2").unwrap();
        assert_eq!(u.sources.len(), 2);
        for bad in [
            "udp://239.1.1.1",
            "udp://host.example:5000",
            "udp://239.1.1.1:99999",
            "udp://127.0.0.1:5000?sources=10.0.0.1",
            "udp://239.1.1.1:5000?buffer_size=lots",
        ] {
            assert!(parse_udp_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rtp_headers_are_stripped() {
        let mut p = vec![0x80, 33, 0x12, 0x34, 0, 0, 0, 0, 0, 0, 0, 1];
        p.extend([0x47; 188]);
        assert_eq!(rtp_payload(&p), Some((0x1234, 12, 200)));
        // Two CSRCs, an extension of one word, and 4 bytes of padding.
        let mut q = vec![0xB2, 33, 0, 7, 0, 0, 0, 0, 0, 0, 0, 1];
        q.extend([0; 8]);
        q.extend([0xBE, 0xDE, 0, 1, 0, 0, 0, 0]);
        q.extend([0x47; 188]);
        q.extend([0, 0, 0, 4]);
        assert_eq!(rtp_payload(&q), Some((7, 28, 216)));
        assert_eq!(rtp_payload(&[0x47; 188]), None, "raw TS is not RTP");
        assert_eq!(rtp_payload(&[0x80, 33, 0]), None, "too short");
        let bad = [0xA0, 33, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xFF];
        assert_eq!(rtp_payload(&bad), None, "padding longer than the packet");
    }

    /// A reader on a free loopback port, and a socket that sends to it.
    fn reader(rtp: bool, cpu: Option<avmon_core::sched::Slot>) -> (UdpReader, std::net::UdpSocket) {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let waits = Waits {
            stop: Arc::new(AtomicBool::new(false)),
            first: Duration::from_secs(5),
            io: Duration::from_secs(5),
        };
        let scheme = if rtp { "rtp" } else { "udp" };
        let url = format!("{scheme}://127.0.0.1:{port}");
        let r = UdpReader::open(&url, rtp, waits, None, cpu).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(("127.0.0.1", port)).unwrap();
        (r, tx)
    }

    /// Everything `r` reads until `want` bytes came, in reads of at most `chunk` bytes.
    fn read_all(r: &mut UdpReader, want: usize, chunk: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; chunk];
        while got.len() < want {
            let n = r.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    #[test]
    fn datagrams_of_any_size_come_whole_and_in_order_across_batches() {
        let sched = avmon_core::sched::Scheduler::new(1, Duration::from_millis(10));
        for cpu in [None, Some(sched.slot())] {
            let (mut r, tx) = reader(false, cpu.clone());
            // More than two batches' worth, of sizes from one byte to the largest IPv4 UDP
            // payload (one, so that all fit a default receive buffer), each datagram filled
            // with its own number.
            let sizes: Vec<usize> = (0..40)
                .map(|i| {
                    if i == 7 {
                        65_507
                    } else {
                        [1316, 1, 188, 4000][i % 4]
                    }
                })
                .collect();
            let mut sent = Vec::new();
            for (i, &n) in sizes.iter().enumerate() {
                let d = vec![i as u8; n];
                tx.send(&d).unwrap();
                sent.extend_from_slice(&d);
            }
            let got = read_all(&mut r, sent.len(), 64 * 1024);
            assert_eq!(got.len(), sent.len());
            assert!(got == sent, "bytes differ (cpu: {})", cpu.is_some());
            if let Some(c) = &cpu {
                assert!(c.input_age_s() >= 0.0);
                assert_eq!(c.input_drops(), 0);
            }
        }
    }

    #[test]
    fn rtp_payloads_are_read_across_batches_and_losses_counted() {
        let (mut r, tx) = reader(true, None);
        let lost = Arc::new(std::sync::atomic::AtomicU64::new(0));
        struct Loss(Arc<std::sync::atomic::AtomicU64>);
        impl ByteTap for Loss {
            fn on_start(&self) {}
            fn on_bytes(&self, _: &[u8]) {}
            fn on_rtp_loss(&self, n: u64) {
                self.0.fetch_add(n, Ordering::Relaxed);
            }
            fn on_arrival(&self, _: f64, _: usize) {}
        }
        r.tap = Some(crate::Tap(Arc::new(Loss(lost.clone()))));
        let mut sent = Vec::new();
        for seq in (0u16..40).filter(|s| *s != 17 && *s != 18) {
            let mut d = vec![0x80, 33];
            d.extend(seq.to_be_bytes());
            d.extend([0; 8]);
            let payload = vec![seq as u8; 188 * 7];
            d.extend(&payload);
            tx.send(&d).unwrap();
            sent.extend(payload);
        }
        let got = read_all(&mut r, sent.len(), 1000);
        assert!(got == sent, "payloads differ");
        assert_eq!(
            lost.load(Ordering::Relaxed),
            2,
            "datagrams 17 and 18 missing"
        );
    }

    #[test]
    fn transport_streams_are_recognised_through_damage_and_garbage() {
        let ts: Vec<u8> = (0..64 * 188)
            .map(|i| {
                if i % 188 == 0 {
                    0x47
                } else {
                    (i * 31 % 251) as u8
                }
            })
            .collect();
        assert!(looks_like_ts(&ts));
        let mut flipped = ts.clone();
        for i in (0..flipped.len()).step_by(997) {
            flipped[i] ^= 0xFF;
        }
        assert_eq!(flipped[0], !0x47, "the first sync byte is damaged");
        assert!(looks_like_ts(&flipped));
        let mut cut = vec![0x11u8; 1000];
        cut.extend(&ts[..ts.len() - 1000]);
        assert!(looks_like_ts(&cut), "a file that starts with garbage");
        // Not TS: the stride missing, or too few sync bytes on it.
        assert!(!looks_like_ts(&[0u8; 188 * 64]));
        let sparse: Vec<u8> = (0..64 * 188)
            .map(|i| if i % (188 * 3) == 0 { 0x47 } else { 0 })
            .collect();
        assert!(!looks_like_ts(&sparse));
        assert!(!looks_like_ts(&ts[..300]), "under three packets");
    }

    #[test]
    fn ts_files_are_recognised_by_their_sync_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let ts = dir.path().join("a.ts");
        std::fs::write(&ts, [0x47u8; 188 * 3]).unwrap();
        assert!(is_ts_file(&ts).is_some());
        let other = dir.path().join("a.mp4");
        std::fs::write(&other, [0u8; 1000]).unwrap();
        assert!(is_ts_file(&other).is_none());
        assert!(is_ts_file(&dir.path().join("missing")).is_none());
        assert!(is_playlist("http://x/live/index.m3u8?token=1"));
        assert!(!is_playlist("http://x/live/stream.ts"));
    }
}
