//! `jobgate token mint`: job tokens in GitLab's claim formats, signed with a key file, for tests,
//! demos and load runs (many never-seen tokens at once, signed on every core).

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use crate::token::mint::{JobClaims, Signer};

/// The token's claims, as `jobgate token mint` takes them.
#[derive(Args)]
pub struct MintArgs {
    /// PEM private key (RSA or P-256).
    #[arg(long)]
    pub key: PathBuf,
    /// Key id; defaults to the key's RFC 7638 thumbprint.
    #[arg(long)]
    pub kid: Option<String>,
    #[arg(long)]
    pub iss: String,
    #[arg(long)]
    pub aud: String,
    #[arg(long)]
    pub project_path: String,
    #[arg(long)]
    pub project_id: u64,
    #[arg(long, default_value_t = 1)]
    pub user_id: u64,
    #[arg(long)]
    pub job_id: u64,
    #[arg(long, default_value_t = 1)]
    pub pipeline_id: u64,
    #[arg(long = "ref", default_value = "main")]
    pub git_ref: String,
    #[arg(long)]
    pub ref_protected: bool,
    #[arg(long, default_value_t = 3600)]
    pub ttl: i64,
    /// Comma-separated scope ceiling (`scopes` claim).
    #[arg(long, value_delimiter = ',')]
    pub scopes: Option<Vec<String>>,
    /// Extra claim KEY=VALUE (VALUE as JSON when it parses, else a string); repeatable.
    #[arg(long = "claim")]
    pub claims: Vec<String>,
    /// Print this many tokens, one per line, each with a `jti` of its own (signed on every core):
    /// never-seen tokens for load tests.
    #[arg(long, default_value_t = 1)]
    pub count: usize,
}

/// Prints `args.count` signed job tokens, one per line.
///
/// # Errors
/// An unreadable key, a malformed `--claim`, a signing failure.
pub fn mint(args: MintArgs) -> anyhow::Result<()> {
    let pem = if args.key.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        std::fs::read_to_string(&args.key).with_context(|| format!("reading {}", args.key.display()))?
    };
    let signer = Signer::from_pem(&pem)?;
    let mut extra = Vec::new();
    for claim in &args.claims {
        let Some((key, value)) = claim.split_once('=') else { bail!("--claim {claim:?}: expected KEY=VALUE") };
        let value = serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::String(value.to_owned()));
        extra.push((key.to_owned(), value));
    }
    let claims = JobClaims {
        iss: args.iss,
        aud: args.aud,
        project_path: args.project_path,
        project_id: args.project_id,
        user_id: args.user_id,
        job_id: args.job_id,
        pipeline_id: args.pipeline_id,
        git_ref: args.git_ref,
        ref_protected: args.ref_protected,
        ttl_secs: args.ttl,
        scopes: args.scopes,
        extra,
    };
    let kid = args.kid.unwrap_or_else(|| signer.thumbprint());
    let now = crate::clock::unix_now();
    if args.count <= 1 {
        println!("{}", signer.sign(&kid, &claims.payload(now))?);
        return Ok(());
    }
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let chunks: Vec<Vec<String>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (signer, kid, claims) = (&signer, &kid, &claims);
                scope.spawn(move || {
                    (t..args.count)
                        .step_by(threads)
                        .map(|i| {
                            let mut payload = claims.payload(now);
                            payload["jti"] = serde_json::Value::String(format!("{}-{now}-{i}", claims.job_id));
                            signer.sign(kid, &payload).map_err(|e| e.to_string())
                        })
                        .collect::<Result<Vec<String>, String>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err("a signing thread panicked".into())))
            .collect::<Result<_, _>>()
    })
    .map_err(anyhow::Error::msg)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for token in chunks.iter().flatten() {
        std::io::Write::write_all(&mut out, token.as_bytes())?;
        std::io::Write::write_all(&mut out, b"\n")?;
    }
    Ok(())
}
