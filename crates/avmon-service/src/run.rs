//! `avmon run`: the service's threads wired together, until Ctrl-C, SIGTERM or a duration.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use avmon_alert::Suppression;
use avmon_core::sched::{Scheduler, DEFAULT_QUANTUM};
use avmon_notify::{Claim, Notifier, OutboxNotifier};
use avmon_server::Monitor;
use avmon_store::cluster::{Coordinator, NodeInfo};
use avmon_store::spill::SpillStore;
use avmon_store::Store;

use crate::config::Config;
use crate::degradation::degrade_thread;
use crate::evidence::Evidence;
use crate::fenced::FencedWriter;
use crate::hub::{hub_thread, HubOutputs};
use crate::live::live_events;
use crate::placement::{placement_thread, renew_thread, seed, ClusterNode};
use crate::registry::Service;
use crate::storage::StorageWatch;

/// How `run` behaves beyond the config.
#[derive(Default)]
pub struct Options {
    /// Print each alert as it is raised and cleared (the demo does).
    pub print_alerts: bool,
    /// Stop after this long (default: until Ctrl-C / SIGTERM).
    pub duration: Option<Duration>,
}

/// Ctrl-C, SIGTERM, or `duration` (when given) passed.
pub async fn shutdown_signal(duration: Option<Duration>) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    let timer = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
        _ = timer => {},
    }
}

/// Run the service until Ctrl-C, SIGTERM or `opts.duration`.
pub fn run(cfg: Config, opts: Options) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(cfg.listen))
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let addr: SocketAddr = listener.local_addr().unwrap_or(cfg.listen);
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    let mut spill = None;
    let (store, cluster): (Arc<dyn Store>, Option<Arc<ClusterNode>>) = match &cfg.cluster {
        None => {
            let opened = avmon_store::open(&cfg.store.url).with_context(|| {
                format!(
                    "opening the store {}",
                    avmon_store::redact_url(&cfg.store.url)
                )
            })?;
            // Monitoring's writes wait in memory while the disk is full (monitor.storage).
            let spilling = Arc::new(SpillStore::new(Arc::from(opened)));
            spill = Some(spilling.clone());
            (spilling, None)
        }
        Some(c) => {
            let coordinator = Coordinator::open(&cfg.store.url).with_context(|| {
                format!(
                    "opening the cluster's store {}",
                    avmon_store::redact_url(&cfg.store.url)
                )
            })?;
            let advertise = c
                .advertise
                .clone()
                .unwrap_or_else(|| format!("{scheme}://{addr}"));
            let node =
                NodeInfo::new(&c.name, advertise, c.capacity(&cfg.service)).context("[cluster]")?;
            let ttl = Duration::from_secs_f64(c.lease_ttl_s);
            let store: Arc<dyn Store> = Arc::new(coordinator.store().clone());
            let outage = Duration::from_secs_f64(c.db_outage_s);
            let node =
                ClusterNode::register(coordinator, node, ttl, cfg.maintenance.clone(), outage)?;
            (store, Some(Arc::new(node)))
        }
    };

    // Each notifier starts with what an earlier run left pending in the outbox.
    let mut notifiers: Vec<Arc<dyn Notifier>> = Vec::new();
    for (i, n) in cfg.notifiers.iter().enumerate() {
        let claim = match &cluster {
            None => Claim::Local,
            Some(c) => Claim::Cluster {
                coordinator: c.coordinator.clone(),
                node: c.node.name.clone(),
                // Longer than a delivery attempt, whatever the notifier's timeout.
                ttl: avmon_notify::CLAIM_TTL
                    .max(Duration::from_secs_f64(n.delivery.timeout_s.max(0.0) * 3.0)),
                poll: avmon_notify::POLL,
            },
        };
        let notifier = OutboxNotifier::spawn_with(n.clone(), store.clone(), claim, rt.handle())
            .with_context(|| format!("starting notifiers[{i}] ({})", n.id()))?;
        notifiers.push(Arc::new(notifier));
    }
    // Rows of a notifier no longer configured (renamed, removed, or its default id moved with
    // its position) would wait forever: say so, and how to deliver them.
    match store.outbox_pending_by_notifier() {
        Ok(pending) => {
            for (id, n) in pending {
                if !cfg.notifiers.iter().any(|c| c.id() == id) {
                    tracing::warn!(
                        notifier = %id, pending = n,
                        "notifications pending for a notifier that is not configured; give a \
                         notifier this id to deliver them"
                    );
                }
            }
        }
        Err(e) => tracing::warn!("reading the outbox: {e}"),
    }

    // Mutes and the API's maintenance windows survive restarts; the config file's are added.
    let mut windows = store.windows().context("loading maintenance windows")?;
    windows.extend(cfg.maintenance.iter().cloned());
    let suppression = Arc::new(Suppression::new(
        store.mutes().context("loading muted streams")?,
        windows,
    ));
    // Validated with the config.
    let min_free = cfg.store.min_free.bytes().unwrap_or(256 << 20);
    let evidence = match cfg.evidence.enabled {
        true => Some(Evidence::start(cfg.evidence.clone(), min_free)?),
        false => None,
    };
    // The disks monitor.storage watches: the database's (standalone) and the evidence's.
    let mut disks = Vec::new();
    if let Some(file) = crate::evidence::sqlite_file(&cfg.store.url) {
        let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        disks.push(if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        });
    }
    if cfg.evidence.enabled {
        disks.push(cfg.evidence.dir.clone());
    }
    let node_name = cluster.as_ref().map(|c| c.node.name.clone());
    let watch = StorageWatch::new(
        store.as_ref(),
        crate::storage::self_stream(node_name.as_deref()),
        disks,
        min_free,
    );
    // Bounded: a client too slow for it gets `resync`, never holds the hub up.
    let (events, _) = tokio::sync::broadcast::channel(1024);
    let (hub_tx, hub_rx) = crossbeam_channel::unbounded();
    let hub_handle = {
        let (store, notifiers) = (store.clone(), notifiers.clone());
        let suppression = suppression.clone();
        let out = HubOutputs {
            print: opts.print_alerts,
            events: events.clone(),
            evidence,
            cluster: cluster
                .as_ref()
                .map(|c| FencedWriter::new(c.coordinator.clone(), c.node.name.clone())),
            spill,
            watch,
        };
        std::thread::Builder::new()
            .name("hub".into())
            .spawn(move || hub_thread(hub_rx, store, notifiers, out, suppression))
            .context("starting the hub thread")?
    };
    let service = Arc::new(Service {
        streams: Mutex::new(BTreeMap::new()),
        hub: hub_tx,
        store,
        notifiers: notifiers.clone(),
        protocols: avmon_media::input_protocols(),
        metrics_interval: Duration::from_secs_f64(cfg.store.metrics_interval_s),
        suppression,
        events,
        evidence: cfg.evidence.clone(),
        sched: Scheduler::new(cfg.service.permits(), DEFAULT_QUANTUM),
        cluster: cluster.clone(),
    });
    rt.spawn(live_events(Arc::downgrade(&service)));
    let placement_stop = Arc::new(AtomicBool::new(false));
    let mut placement = None;
    let renew_stop = Arc::new(AtomicBool::new(false));
    let mut renewer = None;
    match (&cluster, &cfg.cluster) {
        (Some(c), Some(cc)) => {
            let seeded = seed(service.store.as_ref(), &cfg.streams)
                .context("writing the config file's streams to the cluster's store")?;
            let peers = c
                .coordinator
                .nodes(c.ttl)
                .map(|n| n.iter().filter(|n| n.alive).count());
            eprintln!(
                "avmon: node {:?} of a cluster of {} live node(s) (store {}); {seeded} of the \
                 config's {} stream(s) written to it; console and API on {scheme}://{addr}/ \
                 (advertised as {})",
                c.node.name,
                peers.unwrap_or(1),
                avmon_store::redact_url(&cfg.store.url),
                cfg.streams.len(),
                c.node.api_addr
            );
            crate::live::cluster_events(c, service.events.clone());
            let (renewed, stop) = (c.clone(), renew_stop.clone());
            renewer = Some(
                std::thread::Builder::new()
                    .name("renew".into())
                    .spawn(move || renew_thread(renewed, stop))
                    .context("starting the lease renewal thread")?,
            );
            let (placed, c, stop) = (service.clone(), c.clone(), placement_stop.clone());
            let capacity = cc.capacity(&cfg.service);
            placement = Some(
                std::thread::Builder::new()
                    .name("placement".into())
                    .spawn(move || placement_thread(placed, c, capacity, stop))
                    .context("starting the placement thread")?,
            );
        }
        _ => {
            for s in cfg.streams.clone() {
                service.start_stream(s);
            }
            eprintln!(
                "avmon: monitoring {} stream(s) on {} worker(s); console and API on \
                 {scheme}://{addr}/ (store {})",
                cfg.streams.len(),
                service.sched.permits(),
                avmon_store::redact_url(&cfg.store.url)
            );
        }
    }
    if cfg.api.enabled() {
        let admins = cfg
            .api
            .tokens
            .iter()
            .filter(|t| t.role == avmon_server::Role::Admin)
            .count();
        eprintln!(
            "avmon: API tokens: {admins} admin, {} read-only; /metrics {}",
            cfg.api.tokens.len() - admins,
            if cfg.api.metrics_need_token {
                "needs a token"
            } else {
                "is open"
            }
        );
    } else {
        // Config validation refused a non-loopback address without tokens.
        eprintln!(
            "avmon: no API tokens configured: the API is open to anyone on this host, so it \
             listens on loopback only ({addr})"
        );
    }
    let degrade_stop = Arc::new(AtomicBool::new(false));
    let degrade_handle = {
        let (service, stop, scfg) = (service.clone(), degrade_stop.clone(), cfg.service.clone());
        std::thread::Builder::new()
            .name("degrade".into())
            .spawn(move || degrade_thread(&service, &scfg, &stop))
            .context("starting the degradation thread")?
    };
    let retention_stop = Arc::new(AtomicBool::new(false));
    let retention = crate::retention::spawn(
        service.store.clone(),
        &cfg.retention,
        retention_stop.clone(),
    )
    .context("starting the retention thread")?;
    let monitor: Arc<dyn Monitor> = service.clone();
    let served = rt.block_on(avmon_server::serve(
        listener,
        monitor,
        cfg.api.clone(),
        cfg.tls.clone(),
        shutdown_signal(opts.duration),
    ));
    eprintln!("avmon: shutting down");
    degrade_stop.store(true, Ordering::Relaxed);
    let _ = degrade_handle.join();
    retention_stop.store(true, Ordering::Relaxed);
    let _ = retention.join();
    placement_stop.store(true, Ordering::Relaxed);
    if let Some(p) = placement {
        let _ = p.join();
    }
    match &cluster {
        // Hand over: stop without clearing alerts, write what is queued under the leases, then
        // let go of every lease at once (the other nodes are woken and take them).
        Some(c) => {
            service.stop_all(true);
            service.drain_hub();
            renew_stop.store(true, Ordering::Relaxed);
            if let Some(r) = renewer.take() {
                let _ = r.join();
            }
            match c.coordinator.deregister(&c.node) {
                Ok(released) => eprintln!(
                    "avmon: left the cluster; {} stream(s) handed over",
                    released.len()
                ),
                Err(e) => tracing::warn!("leaving the cluster: {e} (its leases will expire)"),
            }
        }
        None => service.stop_all(false),
    }
    // The live-events task holds the service only for a moment at a time.
    let until = Instant::now() + Duration::from_secs(2);
    while Arc::strong_count(&service) > 1 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Dropping the last sender ends the hub once it has handled everything queued.
    let Service { hub, .. } = match Arc::try_unwrap(service) {
        Ok(s) => s,
        Err(_) => anyhow::bail!("the API still holds the service at shutdown"),
    };
    drop(hub);
    let _ = hub_handle.join();
    for n in &notifiers {
        if !n.flush(Duration::from_secs(5)) {
            tracing::warn!(
                notifier = n.name(),
                "some notifications were not delivered before exit"
            );
        }
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    served.map_err(|e| anyhow::anyhow!("HTTP server: {e}"))
}
