//! avmon's stream runtime as a library: what `avmon run` is, one file per stage.
//!
//! Data flows one way, ingest → decode → detect → findings → alerts → store / notifiers / API:
//!
//! | stage | file | thread |
//! |---|---|---|
//! | one stream's demux, decode, detection and alert engine | [`stream`], [`pipeline`], [`transport`], [`hls`] | one decode thread per stream |
//! | findings into a stream's alert engine, from every source | [`alerts`] | the stream's |
//! | the running streams | [`registry`] | (shared state) |
//! | in a cluster: which streams this node holds (leases, claims, hand-over) | [`placement`] | one placement thread |
//! | alert fan-out: active alerts, store, evidence, notifiers | [`hub`], [`evidence`] | one hub thread |
//! | `monitor.storage`: a disk of the store or evidence nearly full, or refusing writes | [`storage`] | the hub's |
//! | in a cluster: writes under lease epochs, kept while the database is away | [`fenced`] | the hub's |
//! | tiers lowered and restored when the host falls behind | [`degradation`], [`degrade`] | one degradation thread |
//! | the API over the registry and the store | [`api`], [`metrics`], [`live`] | the async runtime |
//! | configuration | [`config`], [`mask`] | |
//! | wiring, start and shutdown | [`run`] | |
//!
//! - Every decode thread holds one of the host's CPU permits ([`avmon_core::sched`], `[service]
//!   workers`, one per core by default) while it demuxes, decodes and detects, and lets go of it
//!   while it waits for input: however many streams, at most that many decode at once,
//!   FIFO-fair.
//! - A decode thread never does I/O beyond its input: alert events and metrics leave it on an
//!   unbounded channel (a send never blocks), so nothing downstream can slow detection.
//! - The hub keeps each stream's active alerts for the API, writes the store, and hands events
//!   to notifiers (whose `notify` never blocks; delivery runs on the async runtime).
//!
//! `avmon check` uses the same [`pipeline`], [`transport`] and [`hls`] on one input.

pub mod alerts;
pub mod api;
pub mod cluster;
pub mod config;
pub mod degradation;
pub mod degrade;
pub mod evidence;
pub mod fenced;
pub mod hls;
pub mod hub;
pub mod live;
pub mod mask;
pub mod metrics;
pub mod pipeline;
pub mod placement;
pub mod registry;
pub mod report;
pub mod retention;
pub mod run;
pub mod scte35;
pub mod storage;
pub mod stream;
pub mod transport;

pub use run::{run, Options};
