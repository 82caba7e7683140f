//! The `jobgate` command line. Only argument parsing and start-up live here (anyhow allowed).

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use jobgate::classify::lfs::BatchOperation;
use jobgate::classify::Action;
use jobgate::config::Config;
use jobgate::token::Alg;

#[derive(Parser)]
#[command(name = "jobgate", version, about = "Enforcement gateway for CI job credentials in front of GitLab")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines on standard error: `text` (coloured only on a terminal), `json` (one object per
    /// line), or `auto`: text on a terminal, JSON otherwise (journald, `kubectl logs`, files). The
    /// level comes from `RUST_LOG` (default `info`; e.g. `RUST_LOG=jobgate=debug`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Auto,
    Text,
    Json,
}

/// Installs the log subscriber: ANSI colour only on a terminal (and never with `NO_COLOR`).
fn init_logs(format: LogFormat) {
    use std::io::IsTerminal;
    let terminal = std::io::stderr().is_terminal();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter);
    match (format, terminal) {
        (LogFormat::Json, _) | (LogFormat::Auto, false) => logs.json().with_current_span(false).init(),
        _ => logs.with_ansi(terminal && std::env::var_os("NO_COLOR").is_none()).init(),
    }
}

#[derive(Subcommand)]
enum Command {
    /// Serve: the public TLS listener and the admin listener.
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate everything `serve` loads (config, policies and their tests, key sets, certificate,
    /// secrets, folders), report every problem, then exit: 0 exactly when `serve` would start.
    Check {
        #[arg(long)]
        config: PathBuf,
        /// Do not fetch key sets from URLs (they are reported as not fetched, as `serve` would
        /// start without them and retry).
        #[arg(long)]
        offline: bool,
    },
    /// Print the whole policy derivation for one token and one request; exits 1 when it is a deny
    /// (enforced or, in audit mode, not).
    Explain {
        #[arg(long)]
        config: PathBuf,
        /// The job token, or `-` to read it from standard input.
        #[arg(long)]
        token: String,
        #[arg(long, default_value = "GET")]
        method: String,
        /// The request URL (absolute or a path with its query).
        #[arg(long)]
        url: String,
        /// For an LFS batch call: the operation its body asks for.
        #[arg(long, value_enum)]
        lfs_operation: Option<LfsOperation>,
        /// Print the derivation and the decision as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Policy tools for rolling out: suggestions from audit lines, GitLab's allowlists imported.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Everything local for a first look: certificates, keys, policy, upstream, tokens.
    Demo {
        #[arg(long, default_value = "jobgate-demo")]
        dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:9443")]
        admin_listen: SocketAddr,
    },
    /// Development certificates.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Issuer signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Job tokens (dev/test issuer).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Suggest allowlist entries that admit the job traffic the policy denied (or, in audit mode,
    /// would have denied), with policy tests pinning each entry to a request it came from.
    Suggest {
        /// The config whose policy the suggestions complement.
        #[arg(long)]
        config: PathBuf,
        /// Audit files (JSON lines; rotated `.gz` files too).
        #[arg(long, required = true, num_args = 1..)]
        audit: Vec<PathBuf>,
        /// Only lines at or after this time: RFC 3339, or a duration before now (`24h`).
        #[arg(long)]
        since: Option<String>,
        /// Write `suggested.yaml` and `tests/suggested.yaml` here (the policy folder, or a copy to
        /// review); without it the policy is printed.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write policy equivalent to GitLab's CI/CD job token allowlists, read through its API
    /// (`gitlab.url`, `gitlab.api_token_file` of the config): one file per top-level group.
    Import {
        #[arg(long)]
        config: PathBuf,
        /// Import the projects of this group and its subgroups (repeatable); without it, every
        /// project the API token sees.
        #[arg(long)]
        group: Vec<String>,
        /// Where the files go; defaults to the config's policy folder. They are written only when the
        /// folder with them loads and its policy tests pass.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Write a dev CA and a server certificate for localhost and 127.0.0.1.
    Generate {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Write a signing key (PKCS#8 PEM) and its jwks.json.
    Generate {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "RS256", value_parser = parse_alg)]
        alg: Alg,
        /// Also write the registry token key and its certificate (registry-key.pem, registry-cert.pem).
        #[arg(long)]
        registry: bool,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a signed job token in GitLab's claim formats.
    Mint(jobgate::tools::mint::MintArgs),
}

fn parse_alg(s: &str) -> Result<Alg, String> {
    Alg::parse(s).ok_or_else(|| format!("unknown algorithm {s:?}"))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("jobgate: error: {}", jobgate::error::chain(&*e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs one command; `explain` exits 1 when its decision is deny.
fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    let done = |result: anyhow::Result<()>| result.map(|()| std::process::ExitCode::SUCCESS);
    match cli.command {
        Command::Serve { config } => done(runtime()?.block_on(serve(&config))),
        Command::Check { config, offline } => done(runtime()?.block_on(check(&config, offline))),
        Command::Explain { config, token, method, url, lfs_operation, json } => {
            let batch = lfs_operation
                .map(|op| BatchOperation(if op == LfsOperation::Download { Action::Read } else { Action::Write }));
            runtime()?.block_on(explain(&config, &token, &method, &url, batch, json))
        }
        Command::Policy { command: PolicyCommand::Suggest { config, audit, since, out } } => {
            done(suggest(&config, &audit, since.as_deref(), out.as_deref()))
        }
        Command::Policy { command: PolicyCommand::Import { config, group, out } } => {
            done(runtime()?.block_on(import(&config, &group, out.as_deref())))
        }
        Command::Demo { dir, listen, admin_listen } => {
            done(runtime()?.block_on(jobgate::tools::demo::run(&dir, listen, admin_listen)))
        }
        Command::Certs { command: CertsCommand::Generate { out } } => {
            let files = jobgate::tools::generate::certs(&out)?;
            println!("wrote {} {} {}", files.ca.display(), files.cert.display(), files.key.display());
            done(Ok(()))
        }
        Command::Keys { command: KeysCommand::Generate { out, alg, registry } } => {
            let files = jobgate::tools::generate::keys(&out, alg)?;
            println!("wrote {} {} (kid {})", files.signing_key.display(), files.jwks.display(), files.kid);
            if registry {
                let (key, cert) = jobgate::tools::generate::registry_key(&out)?;
                println!("wrote {} {}", key.display(), cert.display());
            }
            done(Ok(()))
        }
        Command::Token { command: TokenCommand::Mint(args) } => done(jobgate::tools::mint::mint(args)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LfsOperation {
    Download,
    Upload,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

async fn serve(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let running = jobgate::app::serve::start(config).await?;
    // Tests and scripts read this line for the bound addresses (port 0 is allowed).
    eprintln!("jobgate listening public=https://{} admin=http://{}", running.public_addr, running.admin_addr);
    running.run_until_signalled().await
}

async fn check(path: &Path, offline: bool) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let loaded = match jobgate::app::preflight::load(&config, &jobgate::infra::metrics::Metrics::new(), !offline).await
    {
        Ok(loaded) => loaded,
        Err(errors) => {
            for error in &errors {
                println!("error: {error}");
            }
            bail!("{}: {} problem(s); serve would not start", path.display(), errors.len());
        }
    };
    for source in &loaded.key_sources {
        let keys = source.state().current();
        println!("issuer {}: {} key(s), {} skipped", source.name(), keys.set.len(), keys.set.skipped.len());
        for skipped in &keys.set.skipped {
            println!("  skipped {skipped}");
        }
    }
    let policy = &loaded.snapshot.policy;
    println!(
        "policy: {} file(s), {} project(s), {} group(s)",
        policy.files.len(),
        policy.projects.len(),
        policy.groups.len()
    );
    println!("policy tests: {} passed, 0 failed", loaded.tests_passed);
    for warning in &loaded.warnings {
        println!("warning: {warning}");
    }
    println!("ok: {}", path.display());
    Ok(())
}

async fn explain(
    path: &Path,
    token: &str,
    method: &str,
    url: &str,
    lfs_operation: Option<BatchOperation>,
    json: bool,
) -> anyhow::Result<std::process::ExitCode> {
    let config = Config::load(path)?;
    let snapshot = jobgate::snapshot::Snapshot::build(&config, 1)?;
    let (issuers, _sources) = jobgate::keys::start(&config, &jobgate::infra::metrics::Metrics::new(), true)
        .await
        .map_err(|errors| anyhow::anyhow!("{}", errors.join("\n")))?;
    let verifier = jobgate::token::verify::Verifier::new(issuers, config.limits.max_token_bytes, 0);
    let registry = jobgate::config::RegistryAuthConfig::tokens(config.registry_auth.as_ref())?;
    // Read only: a running `serve` owns the file.
    let revocations = match &config.revocations.file {
        Some(path) => jobgate::revoke::store::replay(path, jobgate::clock::unix_now()).await?,
        None => jobgate::revoke::RevocationSet::default(),
    };
    let non_job = jobgate::enforce::NonJobRules::new(&config);
    let core = jobgate::enforce::Core {
        snapshot: &snapshot,
        verifier: &verifier,
        revocations: &revocations,
        registry: registry.as_ref(),
        gitlab: None,
        non_job: &non_job,
    };
    let token = if token == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        token.to_owned()
    };
    let explained =
        jobgate::enforce::explain::explain(&core, &token, method, url, lfs_operation, jobgate::clock::unix_now());
    if json {
        let summary = explained
            .summary
            .map(|s| serde_json::json!({"decision": s.decision(), "enforced": s.enforced, "reason": s.reason.id()}));
        println!("{:#}", serde_json::json!({"summary": summary, "lines": explained.lines}));
    } else {
        for line in &explained.lines {
            println!("{line}");
        }
    }
    let allowed = explained.summary.is_some_and(|s| s.disposition != jobgate::enforce::Disposition::Deny);
    Ok(if allowed { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::FAILURE })
}

fn suggest(path: &Path, audit: &[PathBuf], since: Option<&str>, out: Option<&Path>) -> anyhow::Result<()> {
    use jobgate::tools::suggest::{self, POLICY_FILE};
    let config = Config::load(path)?;
    let since = since.map(suggest::since).transpose().map_err(anyhow::Error::msg)?;
    // A previous suggestion in the policy folder is replaced by this one, not built upon.
    let dir = &config.policy_dir;
    let policy = jobgate::policy::Policy::load_dir_with(dir, &[(dir.join(POLICY_FILE), "{}".to_owned())])?;
    let snapshot = jobgate::snapshot::Snapshot::new(policy, config.api_routes.clone(), 1);
    let read = suggest::read(audit, since).map_err(anyhow::Error::msg)?;
    let found = suggest::suggest(&snapshot, dir, &read.lines);
    for line in &read.unreadable {
        eprintln!("skipped {line}");
    }
    eprintln!("{} audit line(s) read; {} entr(ies) suggested", read.lines.len(), found.entries);
    for existing in &found.for_existing {
        eprintln!("for {existing}");
    }
    for why in &found.left_out {
        eprintln!("left out {why}");
    }
    let (Some(policy), Some(tests)) = (found.policy, found.tests) else { return Ok(()) };
    match out {
        None => print!("{policy}"),
        Some(out) => {
            let (policy_file, tests_file) = (out.join(POLICY_FILE), out.join("tests").join(POLICY_FILE));
            std::fs::create_dir_all(out.join("tests"))
                .with_context(|| format!("creating {}", out.join("tests").display()))?;
            std::fs::write(&policy_file, policy).with_context(|| format!("writing {}", policy_file.display()))?;
            std::fs::write(&tests_file, tests).with_context(|| format!("writing {}", tests_file.display()))?;
            eprintln!("wrote {} {}", policy_file.display(), tests_file.display());
        }
    }
    Ok(())
}

async fn import(path: &Path, groups: &[String], out: Option<&Path>) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let Some(gitlab) = &config.gitlab else {
        bail!("{}: the import needs a `gitlab:` block (url, api_token_file)", path.display())
    };
    let (settings, problems) = jobgate::tools::import::fetch(gitlab, groups).await.map_err(anyhow::Error::msg)?;
    let imported = jobgate::tools::import::render(&settings, &gitlab.url);
    let out = out.unwrap_or(&config.policy_dir);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    // The folder as it will be, loaded and tested before anything is written.
    let files: Vec<(PathBuf, String)> =
        imported.files.iter().map(|(name, text)| (out.join(name), text.clone())).collect();
    let policy = jobgate::policy::Policy::load_dir_with(out, &files)
        .context("the imported files do not load with the folder's other files")?;
    let snapshot = jobgate::snapshot::Snapshot::new(policy, config.api_routes.clone(), 1);
    let report = jobgate::enforce::expect::run(&snapshot, out)?;
    if !report.failures.is_empty() {
        bail!(
            "with the imported files, {} policy test(s) of {} fail:\n{}",
            report.failures.len(),
            out.display(),
            report.failures.join("\n")
        );
    }
    for (file, text) in &files {
        std::fs::write(file, text).with_context(|| format!("writing {}", file.display()))?;
        println!("wrote {}", file.display());
    }
    println!("{} project(s) imported", settings.len());
    for line in problems.iter().chain(&imported.report) {
        println!("note: {line}");
    }
    Ok(())
}
