//! Listeners: the public TLS listener (handshake timeout, HTTP/1.1 and HTTP/2 through hyper-util's
//! auto builder, header size and read timeouts) and the admin listener; graceful drain on shutdown;
//! SIGHUP reloads. Request handling itself lives in `proxy`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::audit::Audit;
use crate::config::{Config, Limits, Timeouts};
use crate::forward::Upstream;
use crate::proxy::{Gateway, RequestIds};
use crate::reload::Reloader;
use crate::snapshot::Snapshot;
use crate::tls::{self, CertResolver};

/// A started gateway: bound addresses and the handle to stop it.
pub struct Running {
    pub public_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub reloader: Arc<Reloader>,
    shutdown: watch::Sender<bool>,
    public: JoinHandle<()>,
    admin: JoinHandle<()>,
}

/// Loads everything, binds both listeners and starts serving.
///
/// # Errors
/// Any file that does not load, or an address that cannot be bound.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let snapshot = Snapshot::build(&config, 1)?;
    let certs = Arc::new(CertResolver::new(tls::load_certified_key(&config.tls.cert, &config.tls.key)?));
    let acceptor = TlsAcceptor::from(tls::server_config(certs.clone())?);
    let gateway = Arc::new(Gateway {
        snapshot: ArcSwap::from_pointee(snapshot),
        non_job: config.non_job,
        git: Upstream::new(&config.upstreams.git).map_err(anyhow::Error::msg)?,
        audit: Audit::start(&config.audit).await.context("opening the audit log")?,
        request_ids: RequestIds::new(),
    });
    let public = TcpListener::bind(config.listen.public).await.with_context(|| format!("binding {}", config.listen.public))?;
    let admin = TcpListener::bind(config.listen.admin).await.with_context(|| format!("binding {}", config.listen.admin))?;
    let (public_addr, admin_addr) = (public.local_addr()?, admin.local_addr()?);
    let (shutdown, signal) = watch::channel(false);
    let (timeouts, limits) = (config.timeouts.clone(), config.limits.clone());
    let reloader = Arc::new(Reloader::new(config, gateway.clone(), certs, 1));
    Ok(Running {
        public_addr,
        admin_addr,
        public: tokio::spawn(serve_public(public, acceptor, gateway, timeouts, limits, signal.clone())),
        admin: tokio::spawn(serve_admin(admin, reloader.clone(), signal)),
        reloader,
        shutdown,
    })
}

impl Running {
    /// Stops accepting, drains in-flight requests up to the configured deadline, then returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.public.await;
        let _ = self.admin.await;
    }

    /// Serves until SIGTERM or Ctrl-C; SIGHUP reloads.
    ///
    /// # Errors
    /// Signal handlers could not be installed.
    pub async fn run_until_signalled(self) -> anyhow::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = signal(SignalKind::hangup())?;
        let mut terminate = signal(SignalKind::terminate())?;
        loop {
            tokio::select! {
                _ = hangup.recv() => { let _ = self.reloader.reload(); }
                _ = terminate.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        tracing::info!("shutting down: draining in-flight requests");
        self.shutdown().await;
        Ok(())
    }
}

async fn serve_public(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    gateway: Arc<Gateway>,
    timeouts: Timeouts,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let builder = Arc::new(http_builder(&timeouts, &limits));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let (acceptor, gateway, builder, watcher) = (acceptor.clone(), gateway.clone(), builder.clone(), graceful.watcher());
        let handshake_timeout = timeouts.tls_handshake();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let service = service_fn(move |request| {
                let gateway = gateway.clone();
                async move { Ok::<_, Infallible>(gateway.handle(request, peer).await) }
            });
            let connection = builder.serve_connection(TokioIo::new(tls), service).into_owned();
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(timeouts.drain(), graceful.shutdown()).await.is_err() {
        tracing::warn!("drain deadline passed; closing the remaining connections");
    }
}

fn http_builder(timeouts: &Timeouts, limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.request_header())
        .max_buf_size(limits.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(timeouts.keepalive())
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(256)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

async fn serve_admin(listener: TcpListener, reloader: Arc<Reloader>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            _ = shutdown.changed() => return,
        };
        let reloader = reloader.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = crate::admin::handle(&reloader, &request);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
