//! `jobgate demo`: everything local for a first look. Writes certificates, an issuer key, a policy and
//! a config into one folder, starts a built-in upstream (Git via `git http-backend` when `git` is
//! installed, an echo otherwise), serves, and prints commands with freshly minted tokens.

pub mod upstream;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::token::mint::{JobClaims, Signer};
use crate::token::Alg;
use crate::tools::generate;

const ISSUER: &str = "jobgate-demo";
const AUDIENCE: &str = "jobgate";
const TOKEN_TTL_SECS: i64 = 4 * 3600;

const POLICY: &str = "\
# The demo policy: the seed defaults plus three projects.
# demo/app admits demo/lib: read (the cross-project baseline), and write_repository on protected refs.
# demo/secret admits nobody. Edit and restart to experiment; `jobgate check` validates.
instance:
  elevation: true
  own_project: [read_repository, read_registry, write_registry, read_package_registry, read_api]
  cross_project: [read_repository, read_registry, read_package_registry]
  destructive_requires_protected_ref: true
projects:
  demo/app:
    id: 1
    allow:
      - from: demo/lib
        scopes: [write_repository]
        refs: protected
  demo/lib:
    id: 2
  demo/secret:
    id: 3
";

/// Runs the demo until Ctrl-C.
///
/// # Errors
/// Files cannot be written, addresses cannot be bound, or a Git repository cannot be created.
pub async fn run(dir: &Path, listen: SocketAddr, admin_listen: SocketAddr) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let certs = generate::certs(&dir.join("certs"))?;
    let keys_dir = dir.join("keys");
    if !keys_dir.join("signing-key.pem").exists() {
        generate::keys(&keys_dir, Alg::RS256)?;
    }
    if !keys_dir.join("registry-key.pem").exists() {
        generate::registry_key(&keys_dir)?;
    }
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies)?;
    if !policies.join("demo.yaml").exists() {
        generate::write(&policies.join("demo.yaml"), POLICY)?;
    }
    let admin_token = dir.join("admin-token");
    if !admin_token.exists() {
        let mut bytes = [0u8; 24];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .map_err(|_| anyhow::anyhow!("no randomness"))?;
        generate::write(&admin_token, &bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())?;
    }
    if !dir.join("upstream-token").exists() {
        generate::write(&dir.join("upstream-token"), "demo-upstream-credential")?;
    }
    let git_root = git_available().then(|| dir.join("repos"));
    if let Some(root) = &git_root {
        for project in ["demo/app", "demo/lib", "demo/secret"] {
            create_repository(root, project)?;
        }
    }
    let upstream = TcpListener::bind("127.0.0.1:0").await?;
    let upstream_addr = upstream.local_addr()?;
    tokio::spawn(upstream::serve(upstream, git_root.clone()));

    let config_path = dir.join("jobgate.yaml");
    generate::write(&config_path, &config_text(listen, admin_listen, upstream_addr))?;
    let config = Config::load(&config_path)?;
    let running = crate::app::serve::start(config).await?;

    let signer = Signer::from_pem(&std::fs::read_to_string(keys_dir.join("signing-key.pem"))?)?;
    print_walkthrough(&dir, &certs.ca, running.public_addr, running.admin_addr, &signer, git_root.is_some())?;
    running.run_until_signalled().await
}

fn config_text(listen: SocketAddr, admin: SocketAddr, upstream: SocketAddr) -> String {
    format!(
        "# Written by `jobgate demo`; relative paths are relative to this file.
listen: {{ public: \"{listen}\", admin: \"{admin}\" }}
tls: {{ cert: certs/server.pem, key: certs/server-key.pem }}
# The built-in upstream also answers GitLab's GET /api/v4/job for the demo's opaque job token.
gitlab: {{ url: \"http://{upstream}\" }}
issuers:
  - name: gitlab-jobs
    gitlab_job_tokens: {{ cache_secs: 60, lookups_per_sec: 20 }}
  - name: demo
    iss: {ISSUER}
    audiences: [{AUDIENCE}]
    jwks_file: keys/jwks.json
    algorithms: [RS256, ES256]
policy_dir: policies
non_job: reject
upstreams:
  git: {{ url: \"http://{upstream}\", credentials: strip }}
  # Packages and the API go to the built-in echo: `replace` swaps the job token for the upstream's own
  # credential and adds identity headers, which the echo shows back.
  packages: {{ url: \"http://{upstream}\", credentials: replace, replace: {{ header: PRIVATE-TOKEN, value_file: upstream-token }} }}
  api: {{ url: \"http://{upstream}\", credentials: replace, replace: {{ header: PRIVATE-TOKEN, value_file: upstream-token }} }}
  lfs: {{ url: \"http://{upstream}\", credentials: strip }}
  registry: {{ url: \"http://{upstream}\", credentials: strip }}
registry_auth: {{ signing_key: keys/registry-key.pem }}
audit:
  file: audit.log
admin:
  token_file: admin-token
"
    )
}

fn git_available() -> bool {
    Command::new("git").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// A bare repository with one commit on `main`, accepting pushes over HTTP.
fn create_repository(root: &Path, project: &str) -> anyhow::Result<()> {
    let bare = root.join(format!("{project}.git"));
    if bare.exists() {
        return Ok(());
    }
    let git = |args: &[&str], cwd: &Path| -> anyhow::Result<()> {
        let status = Command::new("git").args(args).current_dir(cwd).stdout(std::process::Stdio::null()).status()?;
        if !status.success() {
            bail!("git {} failed in {}", args.join(" "), cwd.display());
        }
        Ok(())
    };
    std::fs::create_dir_all(&bare)?;
    git(&["init", "--quiet", "--bare", "-b", "main"], &bare)?;
    git(&["config", "http.receivepack", "true"], &bare)?;
    let work = tempfile_dir(root, project)?;
    git(&["init", "--quiet", "-b", "main"], &work)?;
    std::fs::write(work.join("README.md"), format!("# {project}\n\nA demo repository behind jobgate.\n"))?;
    git(&["add", "README.md"], &work)?;
    git(&["-c", "user.name=demo", "-c", "user.email=demo@localhost", "commit", "--quiet", "-m", "initial"], &work)?;
    git(&["push", "--quiet", bare.to_string_lossy().as_ref(), "main"], &work)?;
    std::fs::remove_dir_all(&work)?;
    Ok(())
}

fn tempfile_dir(root: &Path, project: &str) -> anyhow::Result<std::path::PathBuf> {
    let work = root.join(".work").join(project);
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    Ok(work)
}

fn print_walkthrough(
    dir: &Path,
    ca: &Path,
    public: SocketAddr,
    admin: SocketAddr,
    signer: &Signer,
    git: bool,
) -> anyhow::Result<()> {
    let kid = signer.thumbprint();
    let now = crate::clock::unix_now();
    let token = |project: &str, id: u64, job: u64, git_ref: &str, protected: bool| {
        let claims = JobClaims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            project_path: project.into(),
            project_id: id,
            user_id: 1,
            job_id: job,
            pipeline_id: 1,
            git_ref: git_ref.into(),
            ref_protected: protected,
            ttl_secs: TOKEN_TTL_SECS,
            scopes: None,
            extra: Vec::new(),
        };
        signer.sign(&kid, &claims.payload(now))
    };
    let app = token("demo/app", 1, 101, "feature", false)?;
    let lib = token("demo/lib", 2, 201, "feature", false)?;
    let lib_protected = token("demo/lib", 2, 202, "main", true)?;
    let env = format!(
        "export JOBGATE_CA={ca}\nexport APP_TOKEN={app}\nexport LIB_TOKEN={lib}\nexport LIB_PROTECTED_TOKEN={lib_protected}\nexport CI_JOB_TOKEN={}\n",
        upstream::DEMO_JOB_TOKEN,
        ca = ca.display()
    );
    generate::write(&dir.join("tokens.env"), &env)?;
    let url = |token_var: &str, project: &str| format!("https://gitlab-ci-token:${token_var}@{public}/{project}.git");
    let work = std::env::temp_dir().join("jobgate-demo-work");
    let w = work.display();
    println!("\njobgate demo is serving https://{public} (admin http://{admin}/-/ready)");
    println!("config {}, audit log {}", dir.join("jobgate.yaml").display(), dir.join("audit.log").display());
    println!("tokens are valid for {} hours; in another shell:\n", TOKEN_TTL_SECS / 3600);
    println!("  source {}; export GIT_SSL_CAINFO=$JOBGATE_CA", dir.join("tokens.env").display());
    println!("  rm -rf {w}; mkdir -p {w}\n");
    if !git {
        println!("  (git is not installed: Git requests reach the echo upstream instead of repositories)");
    }
    println!("  # 1. a job clones its own project: allowed");
    println!("  git clone {} {w}/app", url("APP_TOKEN", "demo/app"));
    println!("  # 2. demo/lib's job clones demo/app, which admits it: allowed");
    println!("  git clone {} {w}/lib-reads-app", url("LIB_TOKEN", "demo/app"));
    println!("  # 3. demo/lib's job clones demo/secret, which admits nobody: denied (403 not_in_allowlist)");
    println!("  git clone {} {w}/secret", url("LIB_TOKEN", "demo/secret"));
    println!("  # 4. demo/lib's job on an unprotected ref pushes to demo/app: denied (403 ref_not_protected)");
    println!(
        "  git -C {w}/lib-reads-app -c user.name=ci -c user.email=ci@localhost commit --allow-empty -m from-demo-lib"
    );
    println!("  git -C {w}/lib-reads-app push {} HEAD:main", url("LIB_TOKEN", "demo/app"));
    println!("  # 5. the same push from a job on a protected ref: allowed");
    println!("  git -C {w}/lib-reads-app push {} HEAD:main", url("LIB_PROTECTED_TOKEN", "demo/app"));
    println!("  # 6. an unmodified pipeline's opaque CI_JOB_TOKEN, looked up at the built-in GitLab stand-in: allowed");
    println!("  git clone {} {w}/unmodified", url("CI_JOB_TOKEN", "demo/app"));
    let curl = format!("curl -s --cacert $JOBGATE_CA https://{public}");
    println!("  # packages and the API (routed to the echo upstream, which shows what arrived):");
    println!("  {curl}/api/v4/projects/1/packages/generic/tool/1.0/tool.bin -H \"JOB-TOKEN: $APP_TOKEN\"     # allowed: own project read");
    println!("  {curl}/api/v4/projects/1/packages/generic/tool/1.0/tool.bin -H \"JOB-TOKEN: $LIB_TOKEN\" -X PUT --data x   # denied: scope_not_granted");
    println!("  {curl}/api/v4/projects/demo%2Fapp -H \"JOB-TOKEN: $APP_TOKEN\"     # allowed: read_api, %2F kept");
    println!("  {curl}/api/v4/projects/1/issues -H \"JOB-TOKEN: $APP_TOKEN\" -X POST   # denied: api is not granted");
    println!("  # LFS and the container registry (echo upstream; jobgate serves the token realm and /-/jwks itself):");
    println!("  {curl}/demo/app.git/info/lfs/objects/batch -H \"JOB-TOKEN: $LIB_TOKEN\" -X POST --data '{{\"operation\":\"download\",\"objects\":[]}}'   # allowed: read");
    println!("  {curl}/demo/app.git/info/lfs/objects/batch -H \"JOB-TOKEN: $LIB_TOKEN\" -X POST --data '{{\"operation\":\"upload\",\"objects\":[]}}'   # denied: ref_not_protected");
    println!("  {curl}/jwt/auth?service=container_registry\\&scope=repository:demo/app/img:pull,push -u gitlab-ci-token:$LIB_TOKEN   # a token granting pull only");
    println!("  {curl}/v2/demo/secret/img/tags/list -u gitlab-ci-token:$LIB_TOKEN   # denied: not_in_allowlist");
    println!(
        "  # why, step by step (policy edits in {} apply on save; a broken edit shows on /-/ready):",
        dir.join("policies").display()
    );
    // The binary that runs now, by its full path: after `cargo run`, `jobgate` is not on PATH.
    let jobgate = std::env::current_exe().map_or_else(|_| "jobgate".to_owned(), |p| p.display().to_string());
    println!(
        "  {jobgate} explain --config {} --token $LIB_TOKEN --method POST --url /demo/app.git/git-receive-pack",
        dir.join("jobgate.yaml").display()
    );
    println!("  curl -s http://{admin}/metrics | grep jobgate_requests_total");
    println!(
        "  curl -s -X POST -H \"Authorization: Bearer $(cat {})\" http://{admin}/-/reload",
        dir.join("admin-token").display()
    );
    println!("  # the reason for each refusal is in the audit log:");
    println!("  tail -n 5 {}", dir.join("audit.log").display());
    println!("  # the decision view — recent decisions, the access matrix, an explain form — in a browser at");
    println!("  # http://{admin}/-/decisions (any user name; the password is the admin token), or:");
    println!("  curl -s -u ops:$(cat {}) 'http://{admin}/-/decisions?reason=not_in_allowlist' | grep -o 'demo/lib → demo/secret' | head -n 1\n", dir.join("admin-token").display());
    Ok(())
}
