//! The load generator of `benches/sidebyside.sh`: HTTPS/1.1 keep-alive connections to one URL, each
//! request carrying a token in a header — one token every time, or each token of a file exactly once.
//! Closed loop (default): every connection sends its next request when the last one is answered.
//! Open loop (`--rate R`): request `i` is due at `start + i / R`, spread over the connections, and its
//! latency runs from when it was due, so a stalled proxy cannot hide its queue (no coordinated
//! omission). Prints one JSON line: requests, seconds, rps, errors, statuses, p50/p99/p99.9 in ms.
//!
//! `cargo run --release --example loadgen -- --url https://127.0.0.1:8443/path --ca ca.pem --token T`

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;

#[derive(Parser)]
struct Args {
    /// `https://HOST:PORT/path?query`
    #[arg(long)]
    url: String,
    /// The CA that signed the server's certificate (SNI `localhost`).
    #[arg(long)]
    ca: PathBuf,
    /// One token for every request.
    #[arg(long, conflicts_with = "tokens")]
    token: Option<String>,
    /// A file of tokens, one per line, each sent once; the run ends when they are used up.
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// Which line of `--tokens` to start at (runs against the same target use fresh ones).
    #[arg(long, default_value_t = 0)]
    skip: usize,
    /// The header carrying the token; `{token}` is replaced.
    #[arg(long, default_value = "Authorization: Bearer {token}")]
    header: String,
    #[arg(long, default_value_t = 16)]
    connections: usize,
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Requests per second, open loop; without it, closed loop.
    #[arg(long)]
    rate: Option<f64>,
}

/// What one connection saw.
#[derive(Default)]
struct Seen {
    latencies_us: Vec<u32>,
    statuses: std::collections::BTreeMap<u16, usize>,
    errors: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let uri: http::Uri = args.url.parse().context("--url")?;
    let addr = format!("{}:{}", uri.host().context("--url has no host")?, uri.port_u16().unwrap_or(443));
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let tokens: Arc<Vec<String>> = Arc::new(match (&args.token, &args.tokens) {
        (Some(token), None) => vec![token.clone()],
        (None, Some(file)) => std::fs::read_to_string(file)?.lines().skip(args.skip).map(str::to_owned).collect(),
        _ => anyhow::bail!("give --token or --tokens"),
    });
    let once = args.tokens.is_some();
    let (name, value) = args.header.split_once(':').context("--header NAME: VALUE")?;
    let (name, value) = (http::HeaderName::from_bytes(name.trim().as_bytes())?, value.trim().to_owned());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls_pki_types::CertificateDer::from_pem_file(&args.ca)?)?;
    let tls = rustls::ClientConfig::builder_with_provider(jobgate::infra::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now() + Duration::from_millis(50);
    let deadline = start + Duration::from_secs_f64(args.seconds);
    let mut tasks = Vec::new();
    for k in 0..args.connections {
        let (connector, addr, path, tokens, next, name, value) =
            (connector.clone(), addr.clone(), path.clone(), tokens.clone(), next.clone(), name.clone(), value.clone());
        let schedule = args.rate.map(|rate| (rate, args.connections));
        tasks.push(tokio::spawn(async move {
            let mut seen = Seen::default();
            let mut sender = None;
            let mut slot = k;
            tokio::time::sleep_until(start.into()).await;
            loop {
                let due = match schedule {
                    Some((rate, connections)) => {
                        let due = start + Duration::from_secs_f64(slot as f64 / rate);
                        slot += connections;
                        tokio::time::sleep_until(due.into()).await;
                        due
                    }
                    None => Instant::now(),
                };
                if due >= deadline {
                    break;
                }
                let i = if once { next.fetch_add(1, Ordering::Relaxed) } else { 0 };
                let Some(token) = tokens.get(i) else { break };
                if sender.is_none() {
                    sender = connect(&connector, &addr).await.ok();
                }
                let Some(open) = sender.as_mut() else {
                    seen.errors += 1;
                    continue;
                };
                let request = http::Request::get(&path)
                    .header(http::header::HOST, "localhost")
                    .header(&name, value.replace("{token}", token))
                    .body(Empty::<bytes::Bytes>::new())
                    .unwrap_or_default();
                match open.send_request(request).await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let complete = response.into_body().collect().await.is_ok();
                        *seen.statuses.entry(status).or_default() += 1;
                        seen.latencies_us.push(u32::try_from(due.elapsed().as_micros()).unwrap_or(u32::MAX));
                        if !complete {
                            seen.errors += 1;
                            sender = None;
                        }
                    }
                    Err(_) => {
                        seen.errors += 1;
                        sender = None;
                    }
                }
            }
            seen
        }));
    }
    let mut all = Seen::default();
    for task in tasks {
        let seen = task.await?;
        all.latencies_us.extend(seen.latencies_us);
        all.errors += seen.errors;
        for (status, n) in seen.statuses {
            *all.statuses.entry(status).or_default() += n;
        }
    }
    let seconds = args.seconds.min(start.elapsed().as_secs_f64());
    all.latencies_us.sort_unstable();
    let quantile = |q: f64| {
        all.latencies_us
            .get(((all.latencies_us.len() as f64 * q) as usize).min(all.latencies_us.len().saturating_sub(1)))
            .map_or(0.0, |us| f64::from(*us) / 1000.0)
    };
    let line = serde_json::json!({
        "requests": all.latencies_us.len(),
        "seconds": seconds,
        "rps": all.latencies_us.len() as f64 / seconds,
        "errors": all.errors,
        "statuses": all.statuses,
        "p50_ms": quantile(0.50),
        "p99_ms": quantile(0.99),
        "p999_ms": quantile(0.999),
    });
    println!("{line}");
    Ok(())
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<bytes::Bytes>>;

async fn connect(connector: &tokio_rustls::TlsConnector, addr: &str) -> anyhow::Result<Sender> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let tls = connector.connect(rustls_pki_types::ServerName::try_from("localhost")?, tcp).await?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(connection);
    Ok(sender)
}
