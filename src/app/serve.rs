//! Listeners: the public TLS listener (handshake timeout, HTTP/1.1 and HTTP/2 through hyper-util's
//! auto builder, header size and read timeouts) and the admin listener; graceful drain on shutdown;
//! SIGHUP reloads. Request handling itself lives in `edge`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::app::admin::Admin;
use crate::app::reload::Reloader;
use crate::config::{Config, Limits, Timeouts};
use crate::edge::gateway::{BodyPeek, Gateway, GatewayParts};
use crate::enforce::NonJobRules;
use crate::infra::audit::Audit;
use crate::infra::metrics::Metrics;
use crate::infra::tls::{self, CertResolver};
use crate::revoke::store::Revocations;
use crate::token::verify::Verifier;

/// How long start waits for the shared revocations' first replay before serving without it (then
/// not ready until it comes).
const SHARED_REPLAY_WAIT: Duration = Duration::from_secs(3);

/// A started gateway: bound addresses and the handle to stop it.
pub struct Running {
    _watcher: notify::RecommendedWatcher,
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
    let metrics = Arc::new(Metrics::new());
    let loaded = crate::app::preflight::load(&config, &metrics, true)
        .await
        .map_err(|errors| anyhow::anyhow!("{}", errors.join("\n")))?;
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let mut revocations = match &config.revocations.file {
        Some(path) => Revocations::open(path, crate::clock::unix_now())
            .await
            .with_context(|| format!("revocations.file {}", path.display()))?,
        None => Revocations::in_memory(),
    };
    if let Some(redis) = &config.revocations.redis {
        revocations = revocations.share(redis).map_err(anyhow::Error::msg)?;
    }
    if let Some(shared) = revocations.shared() {
        shared.start(SHARED_REPLAY_WAIT).await;
    }
    let revocations = Arc::new(revocations);
    metrics.revocations.set(i64::try_from(revocations.set().len()).unwrap_or(i64::MAX));
    let certs = Arc::new(CertResolver::new(loaded.certificates));
    let acceptor = TlsAcceptor::from(tls::server_config(certs.clone())?);
    let audit =
        Audit::start(&config.audit, metrics.audit_dropped.clone()).await.with_context(|| match &config.audit.file {
            Some(file) => format!("opening the audit log {}", file.display()),
            None => "opening the audit log (standard output)".to_owned(),
        })?;
    let gateway = Arc::new(Gateway::new(GatewayParts {
        snapshot: loaded.snapshot,
        verifier: Verifier::new(loaded.issuers, config.limits.max_token_bytes, config.limits.token_cache_entries),
        key_sources: loaded.key_sources,
        revocations,
        registry: loaded.registry,
        gitlab: loaded.gitlab,
        registry_at_gitlab: config
            .registry_auth
            .as_ref()
            .filter(|r| r.tokens == crate::config::RegistryTokenSource::Gitlab)
            .map(|r| r.service.clone()),
        non_job: NonJobRules::new(&config),
        upstreams: loaded.upstreams,
        passthrough: loaded.passthrough,
        audit,
        metrics: metrics.clone(),
        peek: BodyPeek::new(&config.limits, &config.timeouts),
    }));
    let public =
        TcpListener::bind(config.listen.public).await.with_context(|| format!("binding {}", config.listen.public))?;
    let admin =
        TcpListener::bind(config.listen.admin).await.with_context(|| format!("binding {}", config.listen.admin))?;
    let (public_addr, admin_addr) = (public.local_addr()?, admin.local_addr()?);
    let (shutdown, signal) = watch::channel(false);
    let (timeouts, limits) = (config.timeouts.clone(), config.limits.clone());
    for source in gateway.key_sources() {
        tokio::spawn(source.clone().poll());
    }
    let housekeeping = gateway.clone();
    tokio::spawn(async move {
        if let Some(gitlab) = housekeeping.gitlab() {
            let revocations = housekeeping.revocations().set();
            gitlab.impersonation_housekeeping(|job| revocations.job_revoked(job, crate::clock::unix_now())).await;
        }
    });
    let reloader = Arc::new(Reloader::new(config.clone(), gateway.clone(), certs, 1));
    reloader.record_certificate_expiry();
    let admin_state = Arc::new(Admin {
        reloader: reloader.clone(),
        token: loaded.admin_token,
        webhook_secret: loaded.webhook_secret,
    });
    let watcher = crate::app::watch::start(&config, reloader.clone()).context("watching files for changes")?;
    Ok(Running {
        _watcher: watcher,
        public_addr,
        admin_addr,
        public: tokio::spawn(serve_public(public, acceptor, gateway, timeouts, limits, signal.clone())),
        admin: tokio::spawn(serve_admin(admin, admin_state, signal)),
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

    /// Serves until SIGTERM or Ctrl-C; SIGHUP reopens the audit file (after logrotate) and reloads.
    ///
    /// # Errors
    /// Signal handlers could not be installed.
    pub async fn run_until_signalled(self) -> anyhow::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = signal(SignalKind::hangup())?;
        let mut terminate = signal(SignalKind::terminate())?;
        loop {
            tokio::select! {
                _ = hangup.recv() => {
                    self.reloader.gateway().audit().reopen();
                    let _ = self.reloader.reload("sighup");
                }
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
    let builders = Arc::new(Builders::new(&timeouts, &limits));
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
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
        let (acceptor, gateway, builders, watcher) =
            (acceptor.clone(), gateway.clone(), builders.clone(), graceful.watcher());
        let (handshake_timeout, header_timeout) = (timeouts.tls_handshake(), timeouts.request_header());
        let permit = permits.clone().try_acquire_owned().ok();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let metrics = gateway.metrics().clone();
            let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    metrics.tls_handshake_failures.with_label_values(&["error"]).inc();
                    return tracing::debug!(%peer, error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    metrics.tls_handshake_failures.with_label_values(&["timeout"]).inc();
                    return tracing::debug!(%peer, "TLS handshake timed out");
                }
            };
            metrics.active_connections.inc();
            let _open = scopeguard({
                let metrics = metrics.clone();
                move || metrics.active_connections.dec()
            });
            let over_capacity = permit.is_none();
            if over_capacity {
                metrics.connections_refused.inc();
            }
            // The name the client opened the connection for: `hosts:` checks each request's Host against it.
            let sni = tls.get_ref().1.server_name().map(|name| crate::classify::Sni(name.into()));
            let service = service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
                let gateway = gateway.clone();
                if let Some(sni) = &sni {
                    request.extensions_mut().insert(sni.clone());
                }
                async move {
                    if over_capacity {
                        return Ok::<_, Infallible>(gateway.refuse_over_capacity(request));
                    }
                    Ok::<_, Infallible>(gateway.handle(request, peer).await)
                }
            });
            // ALPN has chosen the protocol: no sniffing, so the header timeout runs from the first byte.
            let builder = if tls.get_ref().1.alpn_protocol() == Some(b"h2") { &builders.h2 } else { &builders.h1 };
            let io = FirstByteDeadline::new(tls, header_timeout);
            // Upgrades (WebSocket) are possible; `forward` grants them to non-job traffic only.
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service).into_owned();
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

/// Runs `f` when dropped (the connection gauge goes down however the connection ends).
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// One connection builder per ALPN protocol. An auto builder that sniffs the protocol would wait for
/// the first bytes with no timeout at all; pinning the protocol lets hyper's HTTP/1 header timeout
/// (which is also its idle keep-alive timeout) run from the start of the connection.
struct Builders {
    h1: auto::Builder<TokioExecutor>,
    h2: auto::Builder<TokioExecutor>,
}

impl Builders {
    fn new(timeouts: &Timeouts, limits: &Limits) -> Self {
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
        Builders { h1: builder.clone().http1_only(), h2: builder.http2_only() }
    }
}

/// Fails the connection if the client sends nothing within the deadline after the TLS handshake.
/// hyper's HTTP/2 server waits for the connection preface without any timeout; this bounds it (and
/// doubles the HTTP/1 header timeout's guard).
struct FirstByteDeadline<T> {
    inner: T,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> FirstByteDeadline<T> {
    fn new(inner: T, timeout: Duration) -> Self {
        FirstByteDeadline { inner, deadline: Some(Box::pin(tokio::time::sleep(timeout))) }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for FirstByteDeadline<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.deadline = None;
        } else if let Some(deadline) = self.deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()));
            }
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FirstByteDeadline<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

async fn serve_admin(listener: TcpListener, admin: Arc<Admin>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            _ = shutdown.changed() => return,
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(admin.handle(request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
