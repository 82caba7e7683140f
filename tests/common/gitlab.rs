//! A stand-in for GitLab's REST API — the one test double the suite allows (no GitLab runs here) — for
//! `GET /api/v4/job`, answered exactly as GitLab documents it:
//!
//! - `lib/api/ci/jobs.rb` (gitlabhq): `get '/job'` with `route_setting :authentication,
//!   job_token_allowed: true` presents `current_authenticated_job` with `Entities::Ci::Job`; a token that
//!   is no running job's is refused by `Gitlab::Auth::AuthFinders#find_valid_running_job_by_token!`
//!   → Grape's `unauthorized!` → `401` with `{"message":"401 Unauthorized"}`.
//! - `lib/api/entities/ci/job_basic.rb` and `job.rb`: the fields and their types below (`pipeline` is
//!   `Entities::Ci::PipelineBasic`, `user` is `Entities::User`); `web_url` is
//!   `project_job_url(job.project, job)`, i.e. `<external_url>/<full project path>/-/jobs/<id>`.
//!
//! - `GET /projects/:id/protected_branches` and `/protected_tags` (docs: api/protected_branches.md,
//!   api/protected_tags.md): a list of `{name, …access_levels}` (names may be wildcards such as
//!   `release/*`), paginated with `x-next-page`; `GET /projects/:id/members/all/:user_id` (docs:
//!   api/members.md): the member with a numeric `access_level` (10 … 50), or 404
//!   `{"message":"404 Not found"}`. These need an API token (`PRIVATE-TOKEN`): 401 without it.
//!
//! It counts job lookups so tests can assert caching, single flight and the budget; jobs can finish and
//! the whole API can go down (answering 502, as a reverse proxy in front of a dead Rails would).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use serde_json::{json, Value};

/// One running job of the fixture.
pub struct Job {
    pub id: u64,
    pub project_path: &'static str,
    pub project_id: u64,
    pub git_ref: &'static str,
    pub tag: bool,
    pub user: (u64, &'static str),
}

/// The API token the stand-in accepts for protected refs and members.
pub const API_TOKEN: &str = "glpat-jobgate-read-api";

#[derive(Clone)]
pub struct GitLab {
    pub port: u16,
    /// Shared with the server thread.
    state: State,
}

impl GitLab {
    pub fn start() -> GitLab {
        let state = State::default();
        let served = state.clone();
        let port = super::serve_on_thread(move |listener| async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = served.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                        let answer = state.answer(&request);
                        async move { Ok::<_, std::convert::Infallible>(answer) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
                });
            }
        });
        GitLab { port, state }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Lookups answered so far.
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// A running job whose token is `token`.
    pub fn add(&self, token: &str, job: Job) {
        let (user_id, username) = job.user;
        let base = self.url();
        let body = json!({
            "id": job.id, "status": "running", "stage": "test", "name": "build", "ref": job.git_ref, "tag": job.tag,
            "coverage": null, "allow_failure": false,
            "created_at": "2026-12-01T10:00:00.000Z", "started_at": "2026-12-01T10:00:01.000Z",
            "finished_at": null, "erased_at": null, "duration": 1.5, "queued_duration": 0.2,
            "user": {"id": user_id, "username": username, "name": username, "state": "active", "locked": false,
                     "avatar_url": null, "web_url": format!("{base}/{username}")},
            "commit": {"id": "0123456789abcdef0123456789abcdef01234567", "short_id": "01234567", "title": "change"},
            "pipeline": {"id": job.id / 10, "iid": 1, "project_id": job.project_id, "sha": "0123456789abcdef0123456789abcdef01234567",
                         "ref": job.git_ref, "status": "running", "source": "push",
                         "created_at": "2026-12-01T10:00:00.000Z", "updated_at": "2026-12-01T10:00:01.000Z",
                         "web_url": format!("{base}/{}/-/pipelines/{}", job.project_path, job.id / 10)},
            "web_url": format!("{base}/{}/-/jobs/{}", job.project_path, job.id),
            "project": {"ci_job_token_scope_enabled": false},
            "artifacts": [], "runner": null, "artifacts_expire_at": null, "archived": false, "tag_list": ["docker"]
        });
        self.state.jobs.insert(token.to_owned(), (body, true));
        self.state.paths.insert(job.project_path.to_owned(), job.project_id);
    }

    /// The body GitLab answers `GET /api/v4/job` with for `token`.
    pub fn job_body(&self, token: &str) -> String {
        self.state.jobs.get(token).map(|entry| entry.0.to_string()).unwrap_or_default()
    }

    /// The job of `token` ends: GitLab refuses its token from now on.
    pub fn finish(&self, token: &str) {
        if let Some(mut job) = self.state.jobs.get_mut(token) {
            job.1 = false;
        }
    }

    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// The project's protected branch names (wildcards allowed).
    pub fn protect_branches(&self, project_id: u64, names: Vec<&'static str>) {
        self.state.refs.insert((project_id, "protected_branches"), names);
    }

    /// The user's `access_level` in the project (10 guest … 50 owner).
    pub fn member(&self, project_id: u64, user_id: u64, access_level: u64) {
        self.state.members.insert((project_id, user_id), access_level);
    }
}

#[derive(Clone, Default)]
struct State {
    calls: Arc<AtomicUsize>,
    jobs: Arc<DashMap<String, (Value, bool)>>,
    down: Arc<AtomicBool>,
    /// `protected_branches` / `protected_tags` per project id, and `access_level` per (project, user).
    refs: Arc<DashMap<(u64, &'static str), Vec<&'static str>>>,
    members: Arc<DashMap<(u64, u64), u64>>,
    /// Project path → id, for API calls that name the project by its URL-encoded path.
    paths: Arc<DashMap<String, u64>>,
}

type Answer = http::Response<http_body_util::Full<bytes::Bytes>>;

fn respond(status: u16, body: String) -> Answer {
    let mut response = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

impl State {
    fn answer(&self, request: &http::Request<hyper::body::Incoming>) -> Answer {
        if request.method() != http::Method::GET {
            return respond(404, json!({"error": "404 Not Found"}).to_string());
        }
        if self.down.load(Ordering::SeqCst) {
            return respond(502, "<html>502 Bad Gateway</html>".into());
        }
        let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
        let path = request.uri().path();
        if path == "/api/v4/job" {
            self.calls.fetch_add(1, Ordering::SeqCst);
            return match self.jobs.get(header("job-token")) {
                Some(job) if job.1 => respond(200, job.0.to_string()),
                _ => respond(401, json!({"message": "401 Unauthorized"}).to_string()),
            };
        }
        let Some(rest) = path.strip_prefix("/api/v4/projects/") else { return respond(404, json!({"error": "404 Not Found"}).to_string()) };
        if header("private-token") != API_TOKEN {
            return respond(401, json!({"message": "401 Unauthorized"}).to_string());
        }
        let segments: Vec<&str> = rest.split('/').collect();
        let decoded = percent_encoding::percent_decode_str(segments[0]).decode_utf8_lossy().into_owned();
        let project: u64 = segments[0].parse().ok().or_else(|| self.paths.get(&decoded).map(|id| *id)).unwrap_or(0);
        match segments.as_slice() {
            [_, kind @ ("protected_branches" | "protected_tags")] => {
                let names = self.refs.get(&(project, if *kind == "protected_tags" { "protected_tags" } else { "protected_branches" })).map(|n| n.clone()).unwrap_or_default();
                let list: Vec<Value> = names
                    .iter()
                    .enumerate()
                    .map(|(i, name)| json!({"id": i + 1, "name": name, "push_access_levels": [{"access_level": 40, "access_level_description": "Maintainers"}], "merge_access_levels": [], "allow_force_push": false, "code_owner_approval_required": false}))
                    .collect();
                let mut response = respond(200, Value::Array(list).to_string());
                response.headers_mut().insert("x-next-page", http::HeaderValue::from_static(""));
                response
            }
            [_, "members", "all", user] => match self.members.get(&(project, user.parse().unwrap_or(0))) {
                Some(level) => respond(200, json!({"id": user.parse::<u64>().unwrap_or(0), "username": "ann", "name": "Ann", "state": "active", "access_level": *level, "expires_at": null}).to_string()),
                None => respond(404, json!({"message": "404 Not found"}).to_string()),
            },
            _ => respond(404, json!({"error": "404 Not Found"}).to_string()),
        }
    }
}

/// Which job tokens a scenario's clients hold: the test issuer's JWTs, or GitLab's own opaque
/// `CI_JOB_TOKEN`s answered by this stand-in (with jobgate's API token, so protected refs come from
/// GitLab too: `main` is protected in every project, `feature` is not).
pub enum Tokens {
    Jwt,
    GitLab(GitLab),
}

impl Tokens {
    /// Opaque tokens for jobs of `projects` (path, id): on `main` (job 3000 + id) and on `feature`
    /// (job 1000 + id, the JWT tokens' job id).
    pub fn gitlab(projects: &[(&'static str, u64)]) -> Tokens {
        let gitlab = GitLab::start();
        for (path, id) in projects {
            let job = |job_id, git_ref| Job { id: job_id, project_path: path, project_id: *id, git_ref, tag: false, user: (5, "ann") };
            gitlab.add(&opaque(path, *id, true), job(3000 + id, "main"));
            gitlab.add(&opaque(path, *id, false), job(1000 + id, "feature"));
            gitlab.protect_branches(*id, vec!["main"]);
            gitlab.member(*id, 5, 40);
        }
        Tokens::GitLab(gitlab)
    }

    /// A gateway with `upstreams` (one family per line) that accepts these tokens.
    pub fn gateway(&self, dir: &std::path::Path, upstreams: &str, policy: &str, extra: &str) -> super::Gateway {
        match self {
            Tokens::Jwt => super::Gateway::start_upstreams(dir, upstreams, policy, extra),
            Tokens::GitLab(gitlab) => {
                std::fs::write(dir.join("gitlab-token"), format!("{API_TOKEN}\n")).unwrap();
                let fields = format!("url: '{}', api_token_file: gitlab-token", gitlab.url());
                super::Gateway::start_with_gitlab(dir, upstreams, policy, &fields, 60, 50, extra)
            }
        }
    }

    /// The token of a job of `project` on a protected ref or not.
    pub fn token(&self, gw: &super::Gateway, project: &str, id: u64, protected: bool) -> String {
        match self {
            Tokens::Jwt => gw.token(project, id, protected),
            Tokens::GitLab(_) => opaque(project, id, protected),
        }
    }
}

/// An opaque job token in GitLab's `glcbt-<partition>_<random>` form.
fn opaque(project: &str, id: u64, protected: bool) -> String {
    format!("glcbt-64_{}{id}{}_0123456789abcdef", project.replace('/', ""), if protected { "main" } else { "feature" })
}
