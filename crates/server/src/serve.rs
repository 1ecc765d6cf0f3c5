//! A running node: binds both listeners, wires the node, stops gracefully.
//!
//! [`start`] takes a config and returns once both listeners are bound (port
//! 0 allowed), so tests and the bench get the real addresses. Stopping sends
//! `reset`/`shutdown` to every client, flushes, and waits for connections to
//! close within the grace time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::routing::get;
use chouquette_core::broker::{Broker, MemoryBroker};
use chouquette_core::hub::Hub;
use chouquette_core::limits::{Limiters, Rate};
use chouquette_core::node::{Node, NodeParts};
use chouquette_core::switches::Switch;
use chouquette_core::telemetry::Telemetry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::accept::{self, PublicSettings};
use crate::api;
use crate::audit::{Audit, AuditError};
use crate::broker::redis::RedisBroker;
use crate::config::{BrokerKind, Config};
use crate::edge::Edge;
use crate::gateway::Settings;
use crate::gateway::{Gateway, GatewayParts};
use crate::operator::store::{StoreError, SwitchStore};
use crate::operator::{AdminState, OperatorActions};
use crate::shutdown::{Shutdown, Trigger};
use crate::source::postgres::{Lease, PostgresSource, Statuses};
use crate::source::{self, redis_inbox::RedisInbox};
use crate::tls::{Certificates, Handshakes, TlsError};
use crate::transport::{Peer, cors, poll, sse, ws};

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The kill switch state file (`[admin] state_file`) cannot be used.
    #[error("kill switch state: {0}")]
    State(#[from] StoreError),
    /// The audit file (`[admin] audit_file`) cannot be opened.
    #[error("{0}")]
    Audit(#[from] AuditError),
    /// The certificate or key of `[listen.tls]` cannot be used.
    #[error("TLS on the public listener: {0}")]
    Tls(#[from] TlsError),
}

/// A started node.
#[derive(Debug)]
pub struct Running {
    /// The public listener's address.
    pub public: SocketAddr,
    /// The internal listener's address.
    pub internal: SocketAddr,
    /// The node's shared state.
    pub node: Arc<Node>,
    trigger: Trigger,
    task: JoinHandle<()>,
    background: std::sync::Mutex<Vec<tokio::task::AbortHandle>>,
    tls: Option<Arc<Certificates>>,
}

impl Running {
    /// Reads `[listen.tls]`'s certificate and key again (what SIGHUP does):
    /// new connections get the new pair, open ones keep theirs; on error
    /// the old pair stays (logged, counted in `chouquette_tls_reloads_total`).
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        self.tls.as_ref().ok_or(TlsError::NotConfigured)?.reload()
    }

    /// SHA-256 fingerprint of the certificate new connections get, when the
    /// public listener has TLS.
    pub fn tls_fingerprint(&self) -> Option<String> {
        self.tls.as_ref().map(|c| c.fingerprint())
    }

    /// Asks the node to stop (idempotent); background tasks tied to the
    /// node (see [`Running::on_stop`]) are ended.
    pub fn stop(&self) {
        self.trigger.stop();
        let tasks = std::mem::take(&mut *self.background.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            task.abort();
        }
    }

    /// Ends `task` when the node stops (a source, the demo's simulator).
    pub fn on_stop(&self, task: JoinHandle<()>) {
        self.background
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task.abort_handle());
    }

    /// Waits until the node has stopped.
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// Stops and waits.
    pub async fn shutdown(self) {
        self.stop();
        self.wait().await;
    }
}

/// Open files kept for listeners, logs and the broker beyond client sockets.
const RESERVED_FILES: usize = 128;

/// Raises the open-file limit to its hard maximum and derives the default
/// connection limit from it, so the node refuses politely before the OS does.
fn connection_limit(configured: usize) -> usize {
    let files = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let by_files = usize::try_from(files)
        .unwrap_or(usize::MAX)
        .saturating_sub(RESERVED_FILES)
        .max(16);
    if configured == 0 {
        by_files
    } else {
        configured.min(by_files)
    }
}

/// Connections the kernel holds ready for `accept`. A reconnect storm
/// (every client of a restarted node at once) overflows tokio's default of
/// 1,024, and a client whose SYN is dropped retries only a second later.
/// The kernel caps it at `net.core.somaxconn` (4,096 on Linux since 5.4).
const LISTEN_BACKLOG: u32 = 8192;

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    let listen = || {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        // As `TcpListener::bind` does: a restarted node binds its port again
        // at once, whatever connections of the old one linger.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|source| StartError::Bind { addr, source })
}

/// Builds the node from `config`, binds, and serves until stopped.
pub async fn start(config: Config) -> Result<Running, StartError> {
    start_with(config, |_| None).await
}

/// Like [`start`], with extra public routes built from the node (the demo
/// mounts its backend and page this way).
pub async fn start_with(
    config: Config,
    extra: impl FnOnce(&Arc<Node>) -> Option<Router>,
) -> Result<Running, StartError> {
    let apps = config.apps();
    let telemetry = Arc::new(Telemetry::with_apps(apps.iter().map(|a| a.id.clone())));
    // Before anything connects or binds: a bad certificate stops the start.
    let tls = match &config.listen.tls {
        Some(tls) => {
            crate::tls::install_provider();
            let certificates = Certificates::load(&tls.cert, &tls.key, telemetry.clone())?;
            Some((certificates, tls.settings()))
        }
        None => None,
    };
    let store = config.admin.state_file.clone().map(SwitchStore::new);
    let switches = match &store {
        Some(store) => store.load()?,
        None => Vec::new(),
    };
    let audit = Audit::open(config.admin.audit_file.clone())?;
    let (node, redis) = build_node(&config, apps, telemetry.clone(), switches).await;
    let extra_routes = extra(&node);
    let (trigger, shutdown) = Shutdown::new(telemetry);
    let mut postgres = Statuses::default();
    let postgres_sources: Vec<PostgresSource> = config
        .sources
        .postgres_settings()
        .into_iter()
        .map(|settings| {
            let ttl = settings.lease_ttl;
            let slot = settings.slot.clone();
            let source = PostgresSource::new(settings, &mut postgres);
            match &redis {
                Some(redis) => source.with_lease(Lease::new(
                    redis.clone(),
                    &config.broker.prefix,
                    &slot,
                    node.id(),
                    ttl,
                )),
                None => source,
            }
        })
        .collect();
    let mut mqtt = crate::source::mqtt::Statuses::default();
    let mut device_commands =
        crate::device_commands::DeviceCommands::new(crate::device_commands::last_seen::Tracked {
            node: node.clone(),
            ledger: device_ledger(redis.as_ref()),
        });
    let mqtt_sources: Vec<crate::source::mqtt::MqttSource> = config
        .sources
        .mqtt_settings(node.id())
        .into_iter()
        .map(|settings| {
            let mut source = crate::source::mqtt::MqttSource::new(settings, &mut mqtt);
            if let Some(link) = source.command_link(device_commands.waiting()) {
                device_commands.add_mqtt(link);
            }
            source
        })
        .collect();
    let mut xmpp = crate::source::xmpp::Statuses::default();
    let xmpp_sources: Vec<crate::source::xmpp::XmppSource> = config
        .sources
        .xmpp_settings()
        .into_iter()
        .map(|settings| crate::source::xmpp::XmppSource::new(settings, &mut xmpp))
        .collect();
    let fallback = crate::fallback::Fallback::new(&config, node.clone(), redis.clone());
    if let Some(fallback) = &fallback {
        node.notifier().set_scheduler(fallback.clone());
    }
    let gateway = Gateway::new(GatewayParts {
        node: node.clone(),
        settings: Arc::new(transport_settings(&config)),
        shutdown: shutdown.clone(),
        max_publish_bytes: config.limits.max_publish_bytes,
        admin: Arc::new(AdminState::new(config.admin.key.clone(), audit)),
        operator: Arc::new(OperatorActions::new(node.clone(), redis.clone(), store)),
        postgres,
        mqtt,
        xmpp,
        connect_auth: Arc::new(crate::connect_auth::ConnectAuth::new(&config)),
        device_commands: Arc::new(device_commands),
        fallback: fallback.clone(),
        parking: crate::transport::parking::Parking::new(),
    });
    // Not a background task, aborted at the stop: it ends by itself then,
    // once it has woken every parked connection to say goodbye.
    tokio::spawn(gateway.parking.clone().run(shutdown.clone()));
    let listeners = Listeners::bind(&config, tls.as_ref()).await?;
    let (public, internal) = (listeners.public_addr, listeners.internal_addr);
    let edge = Edge::new(
        &config.static_files,
        &config.proxy,
        config.listen.tls.is_some(),
    );
    let mut public_routes = public_router(gateway.clone(), edge);
    if let Some(extra) = extra_routes {
        public_routes = public_routes.merge(extra);
    }
    let task = tokio::spawn(serve(
        listeners,
        gateway,
        config.shutdown.grace,
        public_routes,
    ));
    let mut background = start_background(&config, &node, redis, &shutdown);
    for source in postgres_sources {
        background.push(source::spawn(source, node.clone(), shutdown.clone()));
    }
    for source in mqtt_sources {
        background.push(source::spawn(source, node.clone(), shutdown.clone()));
    }
    for source in xmpp_sources {
        background.push(source::spawn(source, node.clone(), shutdown.clone()));
    }
    if let Some(fallback) = fallback {
        background.push(tokio::spawn(fallback.run()).abort_handle());
    }
    tracing::info!(%public, %internal, node = %node.id(), broker = node.broker().kind(),
        switches = node.switches().len(), "chouquette listening");
    Ok(Running {
        public,
        internal,
        node,
        trigger,
        task,
        background: std::sync::Mutex::new(background),
        tls: tls.map(|(certificates, _)| certificates),
    })
}

/// The node and, with the Redis broker, that broker (sources and operator
/// actions use it beyond the `Broker` trait).
async fn build_node(
    config: &Config,
    apps: chouquette_core::app::Apps,
    telemetry: Arc<Telemetry>,
    switches: Vec<Switch>,
) -> (Arc<Node>, Option<Arc<RedisBroker>>) {
    let hub = Arc::new(Hub::new(telemetry.clone()));
    let (broker, redis): (Arc<dyn Broker>, Option<Arc<RedisBroker>>) = match config.broker.kind {
        BrokerKind::Memory => (
            Arc::new(MemoryBroker::new(hub.clone(), config.broker.max_channels)),
            None,
        ),
        BrokerKind::Redis => {
            let settings = config.broker.redis_settings();
            let redis =
                Arc::new(RedisBroker::start(settings, hub.clone(), telemetry.clone()).await);
            (redis.clone(), Some(redis))
        }
    };
    let limiters = Limiters::new(
        Rate::new(
            config.limits.new_connections_per_address,
            config.limits.new_connections_burst,
        ),
        config.limits.max_tracked_addresses,
        apps.iter().map(|a| (a.id.clone(), a.limits.publishes)),
        std::time::Instant::now(),
    )
    .with_client_publishes(
        apps.iter()
            .map(|a| (a.id.clone(), a.limits.client_publishes)),
    );
    let node = Node::new(NodeParts {
        id: config.node.id_or_default().into(),
        apps,
        hub,
        broker,
        telemetry,
        limits: config.session_limits(),
        max_data_bytes: config.limits.max_publish_bytes,
        switches,
        limiters,
    });
    let node = crate::rpc::with_routes(node, config);
    let node = node.with_devices(chouquette_core::devices::Devices::new(
        config.device_settings(),
    ));
    (Arc::new(node), redis)
}

/// What the transports need from the config.
fn transport_settings(config: &Config) -> Settings {
    Settings {
        max_connections: connection_limit(config.limits.max_connections),
        max_frame_bytes: config.limits.max_frame_bytes,
        write_timeout: config.limits.write_timeout,
        ping_interval: config.limits.ping_interval,
        idle_timeout: config.limits.idle_timeout,
        subscribe_timeout: config.limits.subscribe_timeout,
        sse_heartbeat: config.transports.sse_heartbeat,
        poll_wait: config.transports.poll_wait,
        origins: config.listen.origins(),
    }
}

/// The tasks that live as long as the node: following the broker's link,
/// the Redis link itself, and the sources.
/// Where the nodes' device holds meet: Redis with several gateways, else
/// this node alone.
fn device_ledger(redis: Option<&Arc<RedisBroker>>) -> Arc<dyn chouquette_core::devices::Ledger> {
    match redis {
        Some(redis) => redis.clone(),
        None => Arc::new(chouquette_core::devices::MemoryLedger),
    }
}

fn start_background(
    config: &Config,
    node: &Arc<Node>,
    redis: Option<Arc<RedisBroker>>,
    shutdown: &Shutdown,
) -> Vec<tokio::task::AbortHandle> {
    let mut background = vec![tokio::spawn(node.clone().follow_broker()).abort_handle()];
    // Presence entries are refreshed every third of their timeout.
    let refresh = config.broker.presence_timeout / 3;
    let presence = chouquette_core::presence::run(node.clone(), refresh);
    background.push(tokio::spawn(presence).abort_handle());
    let (webhooks, senders) = crate::devices::webhook::Webhooks::start(config, node);
    background.extend(senders);
    let liveness = crate::devices::run(
        node.clone(),
        device_ledger(redis.as_ref()),
        webhooks,
        config.broker.presence_timeout,
    );
    background.push(tokio::spawn(liveness).abort_handle());
    if let Some(redis) = redis {
        background.push(redis.stop_handle());
        if let Some(inbox) = config.broker.inbox_settings(node.id()) {
            let inbox = RedisInbox::new(redis, inbox);
            background.push(source::spawn(inbox, node.clone(), shutdown.clone()));
        }
    }
    background
}

/// Both listeners, bound, with their actual addresses (port 0 allowed).
struct Listeners {
    public: TcpListener,
    public_settings: PublicSettings,
    internal: TcpListener,
    public_addr: SocketAddr,
    internal_addr: SocketAddr,
}

impl Listeners {
    async fn bind(
        config: &Config,
        tls: Option<&(Arc<Certificates>, crate::tls::TlsSettings)>,
    ) -> Result<Listeners, StartError> {
        let public = bind(config.listen.public).await?;
        let internal = bind(config.listen.internal).await?;
        let public_addr = public.local_addr().unwrap_or(config.listen.public);
        let internal_addr = internal.local_addr().unwrap_or(config.listen.internal);
        let tls = match tls {
            Some((certificates, settings)) => {
                Some(Handshakes::new(certificates.clone(), settings)?)
            }
            None => None,
        };
        let public_settings = PublicSettings {
            header_read_timeout: config.limits.header_read_timeout,
            max_connections_per_address: config.limits.max_connections_per_address,
            trusted_proxies: config.listen.trusted(),
            tls,
        };
        Ok(Listeners {
            public,
            public_settings,
            internal,
            public_addr,
            internal_addr,
        })
    }
}

/// The public routes: transports, then the edge's proxy routes and static
/// files when configured.
fn public_router(shared: Gateway, edge: Option<Arc<Edge>>) -> Router {
    // Each layer runs once per request; without `allowed_origins` both
    // pass every request through untouched.
    let cors = || axum::middleware::from_fn_with_state(shared.clone(), cors::cors);
    let ws_origin = axum::middleware::from_fn_with_state(shared.clone(), cors::check_ws_origin);
    let router = Router::new()
        .route("/ws", get(ws::upgrade).layer(ws_origin))
        .route(
            "/sse",
            get(sse::stream).post(sse::stream_body).layer(cors()),
        )
        .route("/poll", get(poll::poll).post(poll::poll_body).layer(cors()))
        .route(
            "/notifications/ack",
            axum::routing::post(crate::api::notify::public_ack)
                .layer(axum::extract::DefaultBodyLimit::max(
                    crate::api::notify::ACK_BODY_LIMIT,
                ))
                .layer(cors()),
        )
        .with_state(shared);
    match edge {
        Some(edge) => router.fallback(
            move |Peer(client): Peer, request: Request<Body>| async move {
                edge.handle(client, request).await
            },
        ),
        None => router,
    }
}

async fn serve(listeners: Listeners, shared: Gateway, grace: Duration, public_routes: Router) {
    let Listeners {
        public,
        public_settings,
        internal,
        ..
    } = listeners;
    let shutdown = shared.shutdown.clone();
    let (drained_tx, mut drained_rx) = tokio::sync::watch::channel(false);
    let stop_internal = async move {
        let _ = drained_rx.wait_for(|d| *d).await;
    };
    let node = shared.node.clone();
    let internal_app = api::router(shared).into_make_service_with_connect_info::<SocketAddr>();
    let public_server = accept::serve_public(
        public,
        public_routes,
        node,
        public_settings,
        shutdown.clone(),
    );
    // The internal listener stays up while clients drain, so probes see
    // `/readyz` 503 and metrics stay readable until the end.
    let internal_server = axum::serve(internal, internal_app).with_graceful_shutdown(stop_internal);
    let public_then_drain = async {
        public_server.await;
        if !shutdown.drained(grace).await {
            tracing::warn!(?grace, "grace time passed with connections still open");
        }
        drained_tx.send_replace(true);
    };
    let serving = async {
        let (_, internal) = tokio::join!(public_then_drain, internal_server.into_future());
        if let Err(e) = internal {
            tracing::error!(error = %e, "internal listener failed");
        }
    };
    // The grace time counts from the stop, whatever the servers wait for:
    // a graceful shutdown waits for every HTTP connection, and a client
    // that stopped reading would hold it forever. Past it, what is left is
    // dropped and the process exits.
    let mut stop = shutdown.clone();
    let deadline = async move {
        stop.stopped().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        () = serving => {}
        () = deadline => tracing::warn!(?grace, "grace time passed: closing what is still open"),
    }
    tracing::info!("chouquette stopped");
}
