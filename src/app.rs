//! Builds the application from settings and runs it until stopped.
//!
//! [`Application::build`] opens the store, loads the keys, reads back live calls and pending
//! notifications, and binds the listener; [`Application::run_until_stopped`] serves until the
//! cancellation token fires, then stops accepting, lets in-flight requests finish, and stops the
//! timer and delivery workers (everything they had not done is already in the store).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::auth::{KeyRing, Validator, keys::KEY_FILE};
use crate::clock::Clock;
use crate::config::Settings;
use crate::connections::{self, Connections, Throttle};
use crate::delivery::queue::LocalOutbox;
use crate::delivery::{Delivery, Signer};
use crate::domain::call::Rules;
use crate::engine::{Engine, Parts};
use crate::fabric::Fabric;
use crate::fabric::simulated::SimulatedFabric;
use crate::http::{self, AppState, PeerAddr};
use crate::net_policy::Outbound;
use crate::store::committer::Committer;
use crate::telemetry::Metrics;

/// How `serve` was asked to run.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub listen: String,
    pub store: String,
    pub virtual_clock: bool,
    /// Without a configured `public_url`, the one derived from the listening address is
    /// `https://` (as `exec` wants, for the SDKs), not `http://`.
    pub https_public_url: bool,
}

/// Waits for SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

pub struct Application {
    listener: TcpListener,
    state: Arc<AppState>,
    engine: Arc<Engine>,
    delivery: Arc<Delivery>,
    store: Arc<dyn crate::store::Store>,
    key_dir: Option<PathBuf>,
    /// The SIP fabric, and what stops it, with a `[sip]` section.
    sip: Option<(Arc<crate::sip::SipFabric>, CancellationToken)>,
    /// What a connection that opens with a TLS handshake is served through.
    tls: tokio_rustls::TlsAcceptor,
}

impl Application {
    pub async fn build(settings: Settings, opts: &ServeOptions) -> anyhow::Result<Self> {
        let opened = crate::store::open(&opts.store, settings.store)?;
        Self::build_on(settings, opts, opened).await
    }

    /// Builds the server on a store already opened (`opts.store` is not read): the seam for a
    /// store that is not named by a URL, such as a test's.
    pub async fn build_on(
        settings: Settings,
        opts: &ServeOptions,
        opened: crate::store::Opened,
    ) -> anyhow::Result<Self> {
        Self::build_with(settings, opts, opened, None).await
    }

    /// Builds the server with `fabric` behind its calls instead of the simulated parties (which
    /// the control API still drives): the seam for a test's own fabric, and later SIP's.
    pub async fn build_with(
        settings: Settings,
        opts: &ServeOptions,
        opened: crate::store::Opened,
        fabric: Option<Arc<dyn Fabric>>,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(&opts.listen)
            .await
            .with_context(|| format!("cannot listen on {}", opts.listen))?;
        let addr = listener.local_addr()?;
        warn_if_control_api_open(addr, &settings);
        let public_url = settings
            .public_url
            .clone()
            .unwrap_or_else(|| {
                let scheme = if opts.https_public_url {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://{addr}")
            })
            .trim_end_matches('/')
            .to_string();
        let tls = {
            let mut names: Vec<String> = crate::tls::url_host(&public_url).into_iter().collect();
            names.extend(crate::tls::listen_name(addr.ip()));
            let ca_dir = crate::tls::ca_dir(opened.data_dir.as_deref());
            crate::tls::Tls::setup(
                &settings.tls,
                settings.config_dir.as_deref(),
                &ca_dir,
                &names,
            )
            .context("setting up TLS")?
        };
        if let Some(file) = &tls.ca_file {
            tracing::info!(
                "HTTPS on the same port: the certificate is from the local authority {} (also at /_switchboard/v1/ca.pem)",
                file.display()
            );
        }
        let keys = match &opened.data_dir {
            Some(dir) => KeyRing::load_or_create(dir)?,
            None => KeyRing::ephemeral()?,
        };
        let keys = Arc::new(RwLock::new(keys));
        let clock = if opts.virtual_clock {
            Clock::virtual_at(chrono::Utc::now())
        } else {
            Clock::real()
        };
        let snapshot = opened.store.load().await.context("reading the store")?;
        // Every outbound request goes through these clients, which enforce the callback
        // policy's address rules when it forbids private addresses (`net_policy`).
        let outbound = Outbound::new(&settings.callbacks).context("building the HTTP clients")?;
        let signer = Signer::new(keys.clone(), settings.notifications.clone());
        let metrics = Arc::new(Metrics::default());
        let on_commit = {
            let metrics = metrics.clone();
            Arc::new(move |took, changes| metrics.commit(took, changes))
        };
        let committer = Committer::start_observed(opened.store.clone(), Arc::default(), on_commit);
        let outbox = Arc::new(LocalOutbox::new(committer.clone(), &settings.delivery));
        let delivery = Arc::new(Delivery::new(
            outbox,
            clock.clone(),
            signer,
            outbound.deliveries.clone(),
            settings.delivery.clone(),
            metrics.clone(),
        ));
        delivery.callback_policy(settings.callbacks.clone());
        delivery.enqueue(snapshot.pending.clone());
        let rules = Rules {
            keep_alive_window: chrono::Duration::seconds(
                settings.calls.keep_alive_timeout_secs as i64,
            ),
            ringing_timeout: chrono::Duration::seconds(settings.calls.ringing_timeout_secs as i64),
        };
        let parties = Arc::new(SimulatedFabric::new(&settings.parties, clock.clone()));
        let prompts = Arc::new(crate::media::prompts::Prompts::new(&settings)?);
        if settings.media.default_prompt_secs.is_some() {
            tracing::warn!(
                "[media] default_prompt_secs is no longer used: a prompt that cannot be had fails its operation (400/8536 or 400/8535)"
            );
        }
        match prompts.folder() {
            Some(dir) => tracing::info!("file:// prompts are read from {}", dir.display()),
            None => tracing::info!("file:// prompts are off"),
        }
        let recordings = Arc::new(
            crate::media::recordings::Archive::new(
                opened.data_dir.as_deref(),
                settings.media.keep_recordings,
            )
            .context("cannot open the recordings folder in the store's data folder")?,
        );
        let sip_stop = CancellationToken::new();
        let sip = match (&settings.sip, &fabric) {
            (Some(sip), None) => {
                let media = (
                    prompts.clone(),
                    outbound.fetches.clone(),
                    recordings.clone(),
                );
                Some(start_sip(&settings, sip.clone(), media, sip_stop.clone()).await?)
            }
            _ => None,
        };
        let fabric = fabric.unwrap_or_else(|| match &sip {
            Some(sip) => Arc::new(crate::fabric::router::Router {
                simulated: parties.clone(),
                sip: sip.clone(),
            }),
            None => parties.clone(),
        });
        let engine = Arc::new(Engine::new(
            &snapshot,
            Parts {
                store: opened.store.clone(),
                committer,
                clock,
                fabric,
                rules,
                delivery: delivery.clone(),
                metrics,
                public_url: public_url.clone(),
                meetings: settings.meetings.clone(),
                callees: settings.apps.iter().map(Into::into).collect(),
                retention: settings.retention,
                recordings: recordings.clone(),
            },
        ));
        let weak = Arc::downgrade(&engine);
        delivery.on_redirect(Box::new(move |call, from, to| {
            if let Some(engine) = weak.upgrade() {
                tokio::spawn(async move { engine.redirect_callback(call, from, to).await });
            }
        }));
        let validator = Validator::new(keys.clone(), &settings.trusted_issuers, &outbound);
        validator.load_trusted_keys().await?;
        let mut state = AppState::new(
            engine.clone(),
            validator,
            keys,
            settings,
            public_url,
            (outbound.fetches.clone(), prompts, recordings),
            parties,
        );
        state.ca_pem = tls.ca_pem.clone();
        delivery.faults(state.faults.clone());
        let state = Arc::new(state);
        if let Some(sip) = &sip {
            sip.connect(engine.event_sink());
        }
        Ok(Application {
            listener,
            state,
            engine,
            delivery,
            store: opened.store,
            key_dir: opened.data_dir,
            sip: sip.map(|s| (s, sip_stop)),
            tls: tls.acceptor,
        })
    }

    /// Where SIP listens (UDP and TCP), with a `[sip]` section.
    pub fn sip_addr(&self) -> Option<SocketAddr> {
        self.sip.as_ref().map(|(s, _)| s.listen_addr())
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Serves until `stop` fires; see the module docs for the order of shutdown.
    pub async fn run_until_stopped(self, stop: CancellationToken) -> anyhow::Result<()> {
        let workers = CancellationToken::new();
        let timers = tokio::spawn(self.engine.clone().run_timers(workers.clone()));
        let delivery = tokio::spawn(self.delivery.clone().run(workers.clone()));
        let watch = tokio::spawn(self.engine.clone().watch_store(workers.clone()));
        let retention = tokio::spawn(self.engine.clone().run_retention(workers.clone()));
        // SIP dialogs live in memory: calls whose dialogs a restart lost end now, before any fabric
        // event (a new call already queued) is applied.
        match self.engine.end_lost_dialogs().await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                "{n} SIP call legs were lost with the last run: their calls end with 410/301005"
            ),
            Err(e) => tracing::error!("ending the SIP call legs lost with the last run: {e}"),
        }
        let fabric = tokio::spawn(self.engine.clone().run_fabric_events(workers.clone()));
        if let Some(dir) = self.key_dir.clone() {
            tokio::spawn(watch_keys(dir, self.state.keys.clone(), workers.clone()));
        }
        let limits = self.state.settings.limits.clone();
        let router = http::router(self.state.clone());
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(limits.idle_timeout_secs.max(1)))
            .max_buf_size(limits.max_header_bytes.max(8192))
            .keep_alive(true);
        let connections = Connections::new(connections::resolve_limit(limits.max_connections));
        // Cancelled at shutdown: every connection finishes its request and closes.
        let draining = CancellationToken::new();
        let tracker = TaskTracker::new();
        let mut accept_log = Throttle::new(connections::LOG_EVERY);
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    if let Some(n) = accept_log.hit(std::time::Instant::now()) {
                        tracing::warn!("accept failed: {e}{}", connections::more(n));
                    }
                    // Out of descriptors: an idle connection gives one back; otherwise wait.
                    let pause = Duration::from_millis(50);
                    if !(connections::out_of_descriptors(&e)
                        && connections.reclaim_descriptor(pause).await)
                    {
                        tokio::time::sleep(pause).await;
                    }
                    continue;
                }
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = connections.wait_for_room() => {}
            }
            let _ = stream.set_nodelay(true);
            let slot = connections.register(&draining);
            let svc = router.clone().map_request(
                move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(PeerAddr(peer));
                    req.map(axum::body::Body::new)
                },
            );
            let svc = TowerToHyperService::new(connections::Track::new(svc, slot.state()));
            let (builder, tls) = (builder.clone(), self.tls.clone());
            let handshake = Duration::from_secs(limits.idle_timeout_secs.max(1));
            tracker.spawn(async move {
                // TLS or not: the first byte says (22, a TLS handshake record).
                let mut first = [0u8; 1];
                let peeked = tokio::select! {
                    _ = slot.close_requested().cancelled() => return,
                    p = tokio::time::timeout(handshake, stream.peek(&mut first)) => p,
                };
                match peeked {
                    Ok(Ok(1)) if first[0] == 0x16 => {
                        let accepted = tokio::select! {
                            _ = slot.close_requested().cancelled() => return,
                            a = tokio::time::timeout(handshake, tls.accept(stream)) => a,
                        };
                        match accepted {
                            Ok(Ok(stream)) => {
                                let conn = builder.serve_connection(TokioIo::new(stream), svc);
                                serve_connection(conn, slot).await
                            }
                            Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
                            Err(_) => tracing::debug!("TLS handshake timed out"),
                        }
                    }
                    Ok(Ok(1)) => {
                        let conn = builder.serve_connection(TokioIo::new(stream), svc);
                        serve_connection(conn, slot).await
                    }
                    _ => {}
                }
            });
        }
        drop(self.listener);
        draining.cancel();
        tracker.close();
        if tokio::time::timeout(Duration::from_secs(10), tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections were still open after 10 s");
        }
        workers.cancel();
        let _ = timers.await;
        let _ = delivery.await;
        let _ = watch.await;
        let _ = retention.await;
        let _ = fabric.await;
        if let Some((_, stop)) = &self.sip {
            stop.cancel();
        }
        // The last attempts recorded are committed before the store closes.
        self.engine.flush().await;
        self.store.close().await;
        Ok(())
    }
}

/// With no admin token, the control API trusts every client whose address is loopback.
fn warn_if_control_api_open(addr: SocketAddr, settings: &Settings) {
    if http::control::guarded_by_address_only(addr, settings) {
        tracing::warn!(
            "listening on {addr} with no [admin] token: the control API serves any client whose \
             address is loopback, and a reverse proxy or port forward on this host makes remote \
             clients look local; set [admin] token (or SWITCHBOARD_ADMIN_TOKEN)"
        );
    }
}

/// Serves one connection until it ends, or until it is asked to close (shed by the connection
/// limit, or the server stopping): then a request in flight is finished first.
async fn serve_connection<C>(conn: C, slot: connections::Slot)
where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    let mut conn = std::pin::pin!(conn);
    let ended = tokio::select! {
        ended = conn.as_mut() => ended,
        _ = slot.close_requested().cancelled() => {
            // A connection that never started a request has nothing to finish or flush (hyper
            // would wait for its first request); the others close once their answer is out.
            if slot.state().requests() == 0 {
                return;
            }
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!("connection ended: {e}");
    }
}

/// Picks up `switchboard keys rotate` run while the server is up.
async fn watch_keys(dir: PathBuf, keys: Arc<RwLock<KeyRing>>, stop: CancellationToken) {
    let path = dir.join(KEY_FILE);
    let modified = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut seen = modified(&path);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        let now = modified(&path);
        if now != seen {
            seen = now;
            // Never a new key here: tokens the old one signed would all stop working.
            match KeyRing::load(&dir) {
                Ok(ring) => {
                    *keys.write().expect("key ring lock") = ring;
                    tracing::info!("signing keys reloaded");
                }
                Err(e) => tracing::error!("cannot reload signing keys: {e}"),
            }
        }
    }
}

/// Starts SIP for `[sip]`: the parties it reaches by `sip_uri` and the apps its numbers ring.
async fn start_sip(
    settings: &Settings,
    sip: crate::sip::SipSettings,
    media: crate::sip::MediaParts,
    stop: CancellationToken,
) -> anyhow::Result<Arc<crate::sip::SipFabric>> {
    let users = settings
        .parties
        .iter()
        .filter_map(|p| Some((p.id.clone(), p.sip_uri.clone()?)))
        .collect();
    let mut numbers = std::collections::HashMap::new();
    for n in &sip.numbers {
        let Some(app) = settings
            .apps
            .iter()
            .find(|a| a.app_id.eq_ignore_ascii_case(&n.app_id))
        else {
            continue;
        };
        let Some(number) = crate::sip::numbers::e164(&n.number) else {
            continue;
        };
        let number_app = crate::sip::NumberApp {
            app: app.app_ref(),
            incoming_call_uri: app.incoming_call_uri.clone(),
        };
        numbers.insert(number, number_app);
    }
    crate::sip::SipFabric::start(sip, users, numbers, media, stop)
        .await
        .context("starting SIP")
}
