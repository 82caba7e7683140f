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
//! - For `jobgate policy import` (docs: api/project_job_token_scopes.md, api/groups.md,
//!   api/projects.md; lib/api/project_job_token_scope.rb): `GET /projects/:id/job_token_scope`
//!   → `{"inbound_enabled", "outbound_enabled"}` (403 `{"message":"403 Forbidden"}` for a user who is
//!   not a Maintainer); `…/job_token_scope/allowlist` → `Entities::BasicProjectDetails`;
//!   `…/job_token_scope/groups_allowlist` → `Entities::BasicGroupDetails` (`id`, `web_url`, `name`);
//!   `GET /groups/:id` → `Entities::GroupDetail` (with `full_path`), 404 `{"message":"404 Group Not
//!   Found"}`; `GET /groups/:id/projects?include_subgroups=true` and `GET /projects`. Lists are
//!   paginated as api/rest/index.md says: `page`, `per_page` (default 20, at most 100), headers
//!   `x-page`, `x-per-page`, `x-total`, `x-total-pages`, `x-next-page` (empty on the last page),
//!   `x-prev-page` and `link`.
//!
//! - `GET /jwt/auth` (`app/controllers/jwt_controller.rb`, `app/services/auth/container_registry_authentication_service.rb`):
//!   an unknown `service` → 404 with no body (`head :not_found`); Basic credentials that are neither
//!   a running job's token nor a personal access token → 401 `{"errors":[{"code":"UNAUTHORIZED",
//!   "message":"HTTP Basic: Access denied. …"}]}`; otherwise 200 `{"token": <RS256 JWT>}` with header
//!   `{typ: JWT, alg: RS256, kid: <libtrust id>}` and claims `iss`, `aud` = service, `sub` = username,
//!   `iat`, `nbf`, `exp`, `jti`, `access: [{type, name, actions}]`. Scopes are every `scope`
//!   parameter split on whitespace (`scopes_param`); for each `repository:NAME:ACTIONS` the project
//!   is the longest project path NAME starts with, and only the actions allowed stay: a job pulls from
//!   its own project, or from one whose job-token allowlist admits the job's project and where the
//!   job's user is at least a Reporter (`build_can_pull?`); it pushes only to its own project
//!   (`build_can_push?`: "Build can push only to the project from which it originates"). A personal
//!   access token pulls as a Reporter and pushes as a Developer of the project (`user_can_pull?`,
//!   `user_can_push?`). An entry with no action left is dropped. `service=dependency_proxy`
//!   (`app/services/auth/dependency_proxy_authentication_service.rb`) answers `{"token": <HS256 JWT
//!   {user_id}>}` for any authenticated user, scopes ignored.
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

/// The issuer of the stand-in's registry tokens (Omnibus: `registry['issuer']`; the chart: `gitlab-issuer`).
pub const REGISTRY_ISSUER: &str = "gitlab-issuer";

/// The administrator's token the stand-in accepts for impersonation tokens.
pub const ADMIN_TOKEN: &str = "glpat-jobgate-admin";

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
                        let state = state.clone();
                        async move {
                            use http_body_util::BodyExt;
                            let (parts, body) = request.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            Ok::<_, std::convert::Infallible>(state.answer(&http::Request::from_parts(parts, body)))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
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

    /// A project of the instance (its group is the path's parent).
    pub fn project(&self, id: u64, path: &str) {
        self.state.projects.insert(id, path.to_owned());
        self.state.paths.insert(path.to_owned(), id);
    }

    pub fn group(&self, id: u64, full_path: &str) {
        self.state.groups.insert(id, full_path.to_owned());
    }

    /// The project's CI/CD job token settings: "Limit access to this project", the deprecated
    /// outbound scope, and the project and group ids of its allowlists.
    pub fn job_token_scope(
        &self,
        project_id: u64,
        inbound_enabled: bool,
        outbound_enabled: bool,
        projects: Vec<u64>,
        groups: Vec<u64>,
    ) {
        self.state.scopes.insert(project_id, Scope { inbound_enabled, outbound_enabled, projects, groups });
    }

    /// The API token's user is not a Maintainer of the project: its settings answer 403.
    pub fn forbid(&self, project_id: u64) {
        self.state.forbidden.insert(project_id, ());
    }

    /// Signs registry tokens with the RSA key (PKCS#8 PEM) at `key`, as GitLab does with `registry.key`.
    pub fn sign_registry_tokens(&self, key: &std::path::Path) {
        let pem = std::fs::read_to_string(key).unwrap();
        let kid = jobgate::token::registry::libtrust_key_id(&jobgate::token::registry::spki_der(&pem).unwrap());
        let _ = self.state.registry_key.set((jobgate::token::mint::Signer::from_pem(&pem).unwrap(), kid));
    }

    /// A personal access token of the user.
    pub fn personal_access_token(&self, token: &str, user: (u64, &'static str)) {
        self.state.pats.insert(token.to_owned(), user);
    }

    /// The realm requests answered so far: the Basic login and the scopes asked for.
    pub fn realm_requests(&self) -> Vec<(String, Vec<String>)> {
        let mut log: Vec<(usize, (String, Vec<String>))> =
            self.state.realm_log.iter().map(|e| (*e.key(), e.value().clone())).collect();
        log.sort_by_key(|(i, _)| *i);
        log.into_iter().map(|(_, request)| request).collect()
    }

    /// The impersonation tokens minted so far, by id.
    pub fn impersonation_tokens(&self) -> Vec<(u64, ImpersonationToken)> {
        self.state.impersonation_tokens_sorted()
    }

    /// The credentials (header names, `?parameters`) the issue with this id was created with.
    pub fn issue_credentials(&self, id: u64) -> Vec<String> {
        self.state.issue_credentials.get(&id).map(|c| c.clone()).unwrap_or_default()
    }

    /// An impersonation token as another jobgate (an earlier process, another replica) minted it.
    pub fn leftover_token(&self, user: u64, name: &str, scopes: &[&str]) -> u64 {
        let id = self.state.impersonation.len() as u64 + 1;
        let token = ImpersonationToken {
            user,
            name: name.to_owned(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            token: format!("glpat-leftover-{id}"),
            revoked: false,
        };
        self.state.impersonation.insert(id, token);
        id
    }

    /// GitLab's Git front for `git_port` (git http-backend): authenticates each request as GitLab
    /// does and enforces the user's role from the fixture (`lib/gitlab/git_access.rb`: download needs
    /// Reporter, push Developer; a job token pushes nowhere unless the project allows it, which no
    /// fixture does; an impersonation token needs `read_repository`/`write_repository`), then proxies.
    /// Refusals are GitLab's: 401 with `WWW-Authenticate: Basic realm="GitLab"`, or 403 "You are not
    /// allowed to push code to this project." / "You are not allowed to download code from this project.".
    pub fn git_front(&self, git_port: u16) -> u16 {
        self.front(git_port, Front::Git)
    }

    /// GitLab's package front for `port` (a package server mounted under GitLab's paths,
    /// `/api/v4/projects/:id/packages/…`): authenticates as GitLab does (`Basic` with a job token
    /// or a token as password, a `Bearer` (npm), `PRIVATE-TOKEN`, `JOB-TOKEN`) and applies GitLab's rules (docs:
    /// user/packages/package_registry; `lib/api/helpers/packages_helpers.rb`): a job token reads where
    /// its user is a Reporter and publishes only to its own project; a personal or impersonation
    /// token needs `read_api`/`api` to read as a Reporter and `api` to publish as a Developer.
    /// Refusals are 401/403 `{"message": …}`; the rest is proxied with its credentials taken off (the
    /// package server is GitLab's storage, not GitLab), and with `strip` its path below
    /// `/api/v4/projects/:id/packages/<format>` only (for a server that lives at its root, such as verdaccio).
    pub fn package_front(&self, port: u16, strip: bool) -> u16 {
        self.front(port, Front::Packages { strip })
    }

    fn front(&self, port: u16, kind: Front) -> u16 {
        let state = self.state.clone();
        super::serve_on_thread(move |listener| async move {
            let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<hyper::body::Incoming>();
            while let Ok((stream, _)) = listener.accept().await {
                let (state, client) = (state.clone(), client.clone());
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
                            let (state, client) = (state.clone(), client.clone());
                            async move {
                                let refusal = match kind {
                                    Front::Git => state.git_refusal(&request),
                                    Front::Packages { .. } => state.package_refusal(&request),
                                };
                                let response = match refusal {
                                    Some(answer) => answer,
                                    None => {
                                        let mut target =
                                            request.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
                                        if let Front::Packages { strip } = kind {
                                            if strip {
                                                // /api/v4/projects/:id/packages/<format>/rest → /rest
                                                target =
                                                    format!("/{}", target.splitn(8, '/').nth(7).unwrap_or_default());
                                            }
                                            for name in ["authorization", "private-token", "job-token"] {
                                                request.headers_mut().remove(name);
                                            }
                                        }
                                        *request.uri_mut() =
                                            format!("http://127.0.0.1:{port}{target}").parse().unwrap();
                                        match client.request(request).await {
                                            Ok(response) => response.map(jobgate::edge::body::stream),
                                            Err(_) => http::Response::builder()
                                                .status(502)
                                                .body(jobgate::edge::body::empty())
                                                .unwrap(),
                                        }
                                    }
                                };
                                Ok::<_, std::convert::Infallible>(response)
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        })
    }

    /// Entries per page at most (GitLab's is 100): a smaller cap shows a client following pages.
    pub fn page_cap(&self, cap: usize) {
        self.state.page_cap.store(cap, Ordering::SeqCst);
    }
}

#[derive(Clone)]
struct Scope {
    inbound_enabled: bool,
    outbound_enabled: bool,
    projects: Vec<u64>,
    groups: Vec<u64>,
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
    /// The instance's projects (id → path) and groups (id → full path).
    projects: Arc<DashMap<u64, String>>,
    groups: Arc<DashMap<u64, String>>,
    scopes: Arc<DashMap<u64, Scope>>,
    forbidden: Arc<DashMap<u64, ()>>,
    /// 0: GitLab's 100.
    page_cap: Arc<AtomicUsize>,
    registry_key: Arc<std::sync::OnceLock<(jobgate::token::mint::Signer, String)>>,
    pats: Arc<DashMap<String, (u64, &'static str)>>,
    realm_log: Arc<DashMap<usize, (String, Vec<String>)>>,
    realm_seq: Arc<AtomicUsize>,
    impersonation: Arc<DashMap<u64, ImpersonationToken>>,
    issues: Arc<AtomicUsize>,
    /// Per created issue: the names of the credential headers (and `?parameters`) it came with.
    issue_credentials: Arc<DashMap<u64, Vec<String>>>,
}

/// Which of GitLab's fronts a stand-in front plays.
#[derive(Clone, Copy)]
enum Front {
    Git,
    Packages { strip: bool },
}

/// One impersonation token minted by the stand-in.
#[derive(Clone, Debug)]
pub struct ImpersonationToken {
    pub user: u64,
    pub name: String,
    pub scopes: Vec<String>,
    token: String,
    pub revoked: bool,
}

/// Who a Git request authenticated as.
enum GitActor {
    Job { project: u64, user: u64 },
    Token { user: u64, scopes: Vec<String> },
}

fn scoped(scopes: &Option<Vec<String>>, any_of: &[&str]) -> bool {
    scopes.as_ref().is_none_or(|scopes| scopes.iter().any(|s| any_of.contains(&s.as_str())))
}

/// Who a realm request authenticated as.
enum Actor {
    /// A running job: its project and user.
    Job { project: u64, user: u64, username: String },
    /// A personal access token (`scopes: None`: the fixture's are unrestricted) or an impersonation token.
    User { id: u64, username: String, scopes: Option<Vec<String>> },
}

type Answer = http::Response<http_body_util::Full<bytes::Bytes>>;

fn respond(status: u16, body: String) -> Answer {
    let mut response = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

impl State {
    fn answer(&self, request: &http::Request<bytes::Bytes>) -> Answer {
        if self.down.load(Ordering::SeqCst) {
            return respond(502, "<html>502 Bad Gateway</html>".into());
        }
        if let Some(rest) = request.uri().path().strip_prefix("/api/v4/users/") {
            return self.impersonation_tokens(request, rest);
        }
        if request.uri().path() == "/api/v4/personal_access_tokens" {
            return self.token_list(request);
        }
        if request.method() == http::Method::POST {
            return self.create_issue(request);
        }
        if request.method() != http::Method::GET {
            return respond(404, json!({"error": "404 Not Found"}).to_string());
        }
        if self.down.load(Ordering::SeqCst) {
            return respond(502, "<html>502 Bad Gateway</html>".into());
        }
        let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
        let path = request.uri().path();
        if path == "/jwt/auth" {
            return self.registry_realm(header("authorization"), request.uri().query().unwrap_or_default());
        }
        if path == "/api/v4/job" {
            self.calls.fetch_add(1, Ordering::SeqCst);
            return match self.jobs.get(header("job-token")) {
                Some(job) if job.1 => respond(200, job.0.to_string()),
                _ => respond(401, json!({"message": "401 Unauthorized"}).to_string()),
            };
        }
        if !path.starts_with("/api/v4/projects") && !path.starts_with("/api/v4/groups/") {
            return respond(404, json!({"error": "404 Not Found"}).to_string());
        }
        if header("private-token") != API_TOKEN {
            return respond(401, json!({"message": "401 Unauthorized"}).to_string());
        }
        let query = request.uri().query().unwrap_or_default();
        if path == "/api/v4/projects" {
            let mut all: Vec<(u64, String)> = self.projects.iter().map(|e| (*e.key(), e.value().clone())).collect();
            all.sort();
            return self.page(all.iter().map(|(id, path)| self.project_entity(*id, path)).collect(), query);
        }
        if let Some(rest) = path.strip_prefix("/api/v4/groups/") {
            let segments: Vec<&str> = rest.split('/').collect();
            let decoded = percent_encoding::percent_decode_str(segments[0]).decode_utf8_lossy().into_owned();
            let group = self
                .groups
                .iter()
                .find(|g| g.key().to_string() == decoded || *g.value() == decoded)
                .map(|g| (*g.key(), g.value().clone()));
            let Some((id, full_path)) = group else {
                return respond(404, json!({"message": "404 Group Not Found"}).to_string());
            };
            return match segments.as_slice() {
                [_] => respond(200, self.group_detail(id, &full_path).to_string()),
                [_, "projects"] => {
                    let subgroups = query.split('&').any(|p| p == "include_subgroups=true");
                    let mut below: Vec<(u64, String)> = self
                        .projects
                        .iter()
                        .filter(|p| {
                            p.value().rsplit_once('/').is_some_and(|(parent, _)| {
                                parent == full_path || (subgroups && parent.starts_with(&format!("{full_path}/")))
                            })
                        })
                        .map(|p| (*p.key(), p.value().clone()))
                        .collect();
                    below.sort();
                    self.page(below.iter().map(|(id, path)| self.project_entity(*id, path)).collect(), query)
                }
                _ => respond(404, json!({"error": "404 Not Found"}).to_string()),
            };
        }
        let rest = path.trim_start_matches("/api/v4/projects/");
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
            [_, "job_token_scope", rest @ ..] => {
                if self.forbidden.contains_key(&project) {
                    return respond(403, json!({"message": "403 Forbidden"}).to_string());
                }
                let Some(scope) = self.scopes.get(&project).map(|s| s.clone()) else { return respond(404, json!({"message": "404 Project Not Found"}).to_string()) };
                match rest {
                    [] => respond(200, json!({"inbound_enabled": scope.inbound_enabled, "outbound_enabled": scope.outbound_enabled}).to_string()),
                    ["allowlist"] => {
                        // GitLab lists the project itself first: its own jobs always reach it.
                        let ids = std::iter::once(project).chain(scope.projects.iter().copied());
                        let items = ids.filter_map(|id| self.projects.get(&id).map(|p| self.project_entity(id, p.value()))).collect();
                        self.page(items, query)
                    }
                    ["groups_allowlist"] => {
                        let items = scope.groups.iter().filter_map(|id| self.groups.get(id).map(|g| self.group_basic(*id, g.value()))).collect();
                        self.page(items, query)
                    }
                    _ => respond(404, json!({"error": "404 Not Found"}).to_string()),
                }
            }
            _ => respond(404, json!({"error": "404 Not Found"}).to_string()),
        }
    }

    /// GitLab's refusal of a Git request, or `None` to let it through.
    fn git_refusal<B>(&self, request: &http::Request<B>) -> Option<http::Response<jobgate::edge::body::Body>> {
        let answer = |status: u16, text: &'static str| {
            http::Response::builder().status(status).body(jobgate::edge::body::full(text)).unwrap()
        };
        let path = request.uri().path();
        let (project, rest) = path.trim_start_matches('/').split_once(".git/")?;
        let push =
            rest == "git-receive-pack" || request.uri().query().is_some_and(|q| q.contains("service=git-receive-pack"));
        let Some(project) = self.paths.get(project).map(|id| *id) else { return Some(answer(404, "")) };
        let authorization = request.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
        let Some(actor) = self.git_actor(authorization) else {
            let mut refused = answer(401, "HTTP Basic: Access denied");
            refused.headers_mut().insert("www-authenticate", http::HeaderValue::from_static("Basic realm=\"GitLab\""));
            return Some(refused);
        };
        let level = |user: u64| self.members.get(&(project, user)).map_or(0, |l| *l);
        let allowed = match (&actor, push) {
            (GitActor::Job { project: own, user }, false) => *own == project || level(*user) >= 20,
            (GitActor::Job { .. }, true) => false,
            (GitActor::Token { user, scopes }, false) => {
                scopes.iter().any(|s| s == "read_repository" || s == "write_repository") && level(*user) >= 20
            }
            (GitActor::Token { user, scopes }, true) => {
                scopes.iter().any(|s| s == "write_repository") && level(*user) >= 30
            }
        };
        let message = if push {
            "You are not allowed to push code to this project."
        } else {
            "You are not allowed to download code from this project."
        };
        (!allowed).then(|| answer(403, message))
    }

    fn registry_realm(&self, authorization: &str, query: &str) -> Answer {
        use base64::Engine as _;
        let pairs: Vec<(String, String)> =
            jobgate::query::pairs(Some(query)).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        let service = pairs.iter().find(|(k, _)| k == "service").map(|(_, v)| v.clone()).unwrap_or_default();
        if service != "container_registry" && service != "dependency_proxy" {
            return respond(404, String::new());
        }
        let basic = authorization
            .strip_prefix("Basic ")
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok());
        let (login, password) = basic
            .as_deref()
            .and_then(|b| b.split_once(':'))
            .map(|(l, p)| (l.to_owned(), p.to_owned()))
            .unwrap_or_default();
        let job = self.jobs.get(&password).filter(|j| j.1).map(|j| j.0.clone());
        let impersonated =
            self.impersonation.iter().find(|t| t.token == password && !t.revoked).map(|t| (t.user, t.scopes.clone()));
        let actor = match (job, self.pats.get(&password), impersonated) {
            (Some(job), _, _) => Actor::Job {
                project: job["pipeline"]["project_id"].as_u64().unwrap(),
                user: job["user"]["id"].as_u64().unwrap(),
                username: job["user"]["username"].as_str().unwrap().to_owned(),
            },
            (None, Some(user), _) => Actor::User { id: user.0, username: user.1.to_owned(), scopes: None },
            (None, None, Some((id, scopes))) => Actor::User { id, username: login.clone(), scopes: Some(scopes) },
            _ => {
                let message = "HTTP Basic: Access denied. If a password was provided for Git authentication, the password was incorrect or you're required to use a token instead of a password. If a token was provided, it was either incorrect, expired, or improperly scoped. See http://gitlab.test/help/user/profile/account/two_factor_authentication_troubleshooting.md#error-http-basic-access-denied-if-a-password-was-provided-for-git-authentication-";
                return respond(401, json!({"errors": [{"code": "UNAUTHORIZED", "message": message}]}).to_string());
            }
        };
        let user_id = match &actor {
            Actor::Job { user, .. } | Actor::User { id: user, .. } => *user,
        };
        if service == "dependency_proxy" {
            use base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let scopes = pairs.iter().filter(|(k, _)| k == "scope").map(|(_, v)| v.clone()).collect();
            self.realm_log
                .insert(self.realm_seq.fetch_add(1, Ordering::SeqCst), (format!("{login} (dependency_proxy)"), scopes));
            let part = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
            let token = format!(
                "{}.{}.c2ln",
                part(json!({"alg": "HS256", "typ": "JWT"})),
                part(json!({"user_id": user_id, "exp": jobgate::clock::unix_now() + 300}))
            );
            return respond(200, json!({"token": token}).to_string());
        }
        let scopes: Vec<String> = pairs
            .iter()
            .filter(|(k, _)| k == "scope")
            .flat_map(|(_, v)| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .collect();
        let seq = self.realm_seq.fetch_add(1, Ordering::SeqCst);
        self.realm_log.insert(seq, (login, scopes.clone()));
        let access: Vec<Value> = scopes
            .iter()
            .filter_map(|scope| {
                let mut fields = scope.splitn(3, ':');
                let (Some("repository"), Some(name), Some(actions)) = (fields.next(), fields.next(), fields.next())
                else {
                    return None;
                };
                let project = self
                    .paths
                    .iter()
                    .filter(|p| name == p.key() || name.starts_with(&format!("{}/", p.key())))
                    .max_by_key(|p| p.key().len())
                    .map(|p| *p.value())?;
                let actions: Vec<&str> =
                    actions.split(',').filter(|action| self.may(&actor, project, action)).collect();
                (!actions.is_empty()).then(|| json!({"type": "repository", "name": name, "actions": actions}))
            })
            .collect();
        let (signer, kid) = self.registry_key.get().expect("sign_registry_tokens first");
        let now = jobgate::clock::unix_now();
        let username = match &actor {
            Actor::Job { username, .. } | Actor::User { username, .. } => username.as_str(),
        };
        let payload = json!({"iss": REGISTRY_ISSUER, "aud": service, "sub": username, "iat": now, "nbf": now - 5, "exp": now + 300,
                             "jti": format!("{now}-{seq}"), "access": access});
        let token = signer.sign_raw(&json!({"typ": "JWT", "alg": "RS256", "kid": kid}), &payload).unwrap();
        respond(200, json!({"token": token}).to_string())
    }

    /// GitLab's `can_access?` for one registry action (an impersonation token also needs the
    /// registry scope: `read_registry` pulls, `write_registry` pushes and pulls).
    fn may(&self, actor: &Actor, project: u64, action: &str) -> bool {
        let level = |user: u64| self.members.get(&(project, user)).map_or(0, |l| *l);
        match (actor, action) {
            (Actor::Job { project: own, .. }, "pull") if *own == project => true,
            (Actor::Job { project: own, user, .. }, "pull") => {
                let admitted = self.scopes.get(&project).is_none_or(|s| !s.inbound_enabled || s.projects.contains(own));
                admitted && level(*user) >= 20
            }
            (Actor::Job { project: own, .. }, "push") => *own == project,
            (Actor::User { id, scopes, .. }, "pull") => {
                level(*id) >= 20 && scoped(scopes, &["read_registry", "write_registry"])
            }
            (Actor::User { id, scopes, .. }, "push") => level(*id) >= 30 && scoped(scopes, &["write_registry"]),
            _ => false,
        }
    }

    /// `POST /users/:user_id/impersonation_tokens` and `DELETE …/:id` (docs: api/user_tokens.md;
    /// `lib/api/users.rb`): administrators only (403 `{"message":"403 Forbidden"}`), an unknown user is
    /// 404 `{"message":"404 User Not Found"}`, a mint without `name` or `scopes` 400
    /// `{"error":"name is missing"}`; 201 with `Entities::ImpersonationTokenWithToken`; 204 on revoke.
    fn impersonation_tokens(&self, request: &http::Request<bytes::Bytes>, rest: &str) -> Answer {
        let private = request.headers().get("private-token").and_then(|v| v.to_str().ok());
        if private != Some(ADMIN_TOKEN) {
            return respond(403, json!({"message": "403 Forbidden"}).to_string());
        }
        let segments: Vec<&str> = rest.split('/').collect();
        let user: u64 = segments[0].parse().unwrap_or(0);
        if !self.members.iter().any(|m| m.key().1 == user) {
            return respond(404, json!({"message": "404 User Not Found"}).to_string());
        }
        match (request.method().as_str(), &segments[1..]) {
            ("POST", ["impersonation_tokens"]) => {
                let body: Value = serde_json::from_slice(request.body()).unwrap_or(Value::Null);
                let (Some(name), Some(scopes)) = (body["name"].as_str(), body["scopes"].as_array()) else {
                    return respond(400, json!({"error": "name is missing, scopes is missing"}).to_string());
                };
                let id = self.impersonation.len() as u64 + 1;
                let scopes: Vec<String> = scopes.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect();
                let token = format!("glpat-impersonation-{id}-0123456789");
                let entity = json!({"id": id, "revoked": false, "user_id": user, "scopes": scopes, "token": token, "active": true, "impersonation": true,
                                    "name": name, "description": "", "created_at": "2026-12-01T10:00:00.000Z", "last_used_at": null,
                                    "expires_at": body["expires_at"]});
                self.impersonation
                    .insert(id, ImpersonationToken { user, name: name.to_owned(), scopes, token, revoked: false });
                respond(201, entity.to_string())
            }
            ("DELETE", ["impersonation_tokens", id]) => match self.impersonation.get_mut(&id.parse().unwrap_or(0)) {
                Some(mut token) if token.user == user => {
                    token.revoked = true;
                    respond(204, String::new())
                }
                _ => respond(404, json!({"message": "404 Impersonation Token Not Found"}).to_string()),
            },
            _ => respond(404, json!({"error": "404 Not Found"}).to_string()),
        }
    }

    /// `POST /projects/:id/issues` (docs: api/issues.md; `lib/api/issues.rb`): not a job-token endpoint
    /// (a `JOB-TOKEN` is 401 `{"message":"401 Unauthorized"}` there); a `PRIVATE-TOKEN` that is an
    /// active impersonation token with the `api` scope, of a user with at least the Guest role (10)
    /// in the project, creates the issue: 201 with `{id, iid, project_id, title, author: {id, username}}`;
    /// an inactive token or one without `api` is 401/403 as GitLab answers (`insufficient_scope`).
    fn create_issue(&self, request: &http::Request<bytes::Bytes>) -> Answer {
        let Some(project) = request
            .uri()
            .path()
            .strip_prefix("/api/v4/projects/")
            .and_then(|r| r.strip_suffix("/issues"))
            .and_then(|id| id.parse::<u64>().ok())
        else {
            return respond(404, json!({"error": "404 Not Found"}).to_string());
        };
        let private = request.headers().get("private-token").and_then(|v| v.to_str().ok()).unwrap_or("");
        let Some(token) = self.impersonation.iter().find(|t| t.token == private && !t.revoked).map(|t| t.clone())
        else {
            return respond(401, json!({"message": "401 Unauthorized"}).to_string());
        };
        if !token.scopes.iter().any(|s| s == "api") {
            return respond(403, json!({"error": "insufficient_scope", "error_description": "The request requires higher privileges than provided by the access token.", "scope": "api"}).to_string());
        }
        if self.members.get(&(project, token.user)).is_none_or(|l| *l < 10) {
            return respond(404, json!({"message": "404 Project Not Found"}).to_string());
        }
        let title = jobgate::query::pairs(Some(&String::from_utf8_lossy(request.body())))
            .find(|(k, _)| k == "title")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let id = self.issues.fetch_add(1, Ordering::SeqCst) + 1;
        let credentials = ["authorization", "private-token", "job-token", "deploy-token"]
            .into_iter()
            .filter(|n| request.headers().contains_key(*n))
            .map(str::to_owned);
        let in_query = jobgate::query::pairs(request.uri().query())
            .filter(|(k, _)| k.contains("token"))
            .map(|(k, _)| format!("?{k}"));
        self.issue_credentials.insert(id as u64, credentials.chain(in_query).collect());
        respond(201, json!({"id": id, "iid": id, "project_id": project, "title": title, "author": {"id": token.user, "username": "ann"}}).to_string())
    }

    /// `GET /personal_access_tokens?search=&state=active` (docs: api/personal_access_tokens.md): an
    /// administrator sees every user's tokens, impersonation tokens included, as
    /// `Entities::PersonalAccessToken` (no `token`), paginated.
    fn token_list(&self, request: &http::Request<bytes::Bytes>) -> Answer {
        if request.headers().get("private-token").and_then(|v| v.to_str().ok()) != Some(ADMIN_TOKEN) {
            return respond(403, json!({"message": "403 Forbidden"}).to_string());
        }
        let query = request.uri().query().unwrap_or_default();
        let pairs: Vec<(String, String)> =
            jobgate::query::pairs(Some(query)).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        let param = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
        let (search, active_only) = (param("search"), param("state") == "active");
        let items = self
            .impersonation_tokens_sorted()
            .into_iter()
            .filter(|(_, t)| t.name.contains(&search) && (!active_only || !t.revoked))
            .map(|(id, t)| json!({"id": id, "name": t.name, "revoked": t.revoked, "created_at": "2026-12-01T10:00:00.000Z", "description": "",
                                  "scopes": t.scopes, "user_id": t.user, "last_used_at": null, "active": !t.revoked, "expires_at": "2026-12-02"}))
            .collect();
        self.page(items, query)
    }

    fn impersonation_tokens_sorted(&self) -> Vec<(u64, ImpersonationToken)> {
        let mut all: Vec<(u64, ImpersonationToken)> =
            self.impersonation.iter().map(|e| (*e.key(), e.value().clone())).collect();
        all.sort_by_key(|(id, _)| *id);
        all
    }

    /// GitLab's refusal of a package request, or `None` to let it through.
    fn package_refusal<B>(&self, request: &http::Request<B>) -> Option<http::Response<jobgate::edge::body::Body>> {
        let answer = |status: u16, message: &str| {
            http::Response::builder()
                .status(status)
                .body(jobgate::edge::body::full(json!({"message": message}).to_string()))
                .unwrap()
        };
        let rest = request.uri().path().strip_prefix("/api/v4/projects/")?;
        let project: u64 = rest.split('/').next()?.parse().ok()?;
        let write = !matches!(request.method().as_str(), "GET" | "HEAD");
        let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
        let secret = match (header("private-token"), header("job-token")) {
            ("", "") => header("authorization")
                .strip_prefix("Bearer ")
                .map(str::to_owned)
                .or_else(|| self.basic_password(header("authorization")))
                .unwrap_or_default(),
            ("", job) => job.to_owned(),
            (private, _) => private.to_owned(),
        };
        let Some(actor) = self.actor(&secret) else { return Some(answer(401, "401 Unauthorized")) };
        let level = |user: u64| self.members.get(&(project, user)).map_or(0, |l| *l);
        let allowed = match (&actor, write) {
            (GitActor::Job { project: own, user }, false) => *own == project || level(*user) >= 20,
            (GitActor::Job { project: own, .. }, true) => *own == project,
            (GitActor::Token { user, scopes }, false) => {
                scopes.iter().any(|s| s == "read_api" || s == "api") && level(*user) >= 20
            }
            (GitActor::Token { user, scopes }, true) => scopes.iter().any(|s| s == "api") && level(*user) >= 30,
        };
        (!allowed).then(|| answer(403, "403 Forbidden"))
    }

    fn basic_password(&self, authorization: &str) -> Option<String> {
        use base64::Engine as _;
        let decoded = authorization
            .strip_prefix("Basic ")
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok())?;
        decoded.split_once(':').map(|(_, password)| password.to_owned())
    }

    /// A running job's token, or an active impersonation token.
    fn actor(&self, secret: &str) -> Option<GitActor> {
        if let Some(job) = self.jobs.get(secret).filter(|j| j.1) {
            return Some(GitActor::Job {
                project: job.0["pipeline"]["project_id"].as_u64()?,
                user: job.0["user"]["id"].as_u64()?,
            });
        }
        self.impersonation
            .iter()
            .find(|t| t.token == secret && !t.revoked)
            .map(|t| GitActor::Token { user: t.user, scopes: t.scopes.clone() })
    }

    /// Who Basic credentials are, as GitLab's `Gitlab::Auth.find_for_git_client` finds them: a
    /// running job's token (`gitlab-ci-token`), an active impersonation token, or nobody.
    fn git_actor(&self, authorization: &str) -> Option<GitActor> {
        self.actor(&self.basic_password(authorization)?)
    }

    /// One page of `items` for the request's `page` and `per_page`, with GitLab's pagination headers.
    fn page(&self, items: Vec<Value>, query: &str) -> Answer {
        let param = |name: &str| {
            query.split('&').find_map(|p| p.strip_prefix(&format!("{name}="))).and_then(|v| v.parse::<usize>().ok())
        };
        let cap = match self.page_cap.load(Ordering::SeqCst) {
            0 => 100,
            cap => cap,
        };
        let per_page = param("per_page").unwrap_or(20).clamp(1, cap);
        let page = param("page").unwrap_or(1).max(1);
        let total = items.len();
        let pages = total.div_ceil(per_page).max(1);
        let shown: Vec<Value> = items.into_iter().skip((page - 1) * per_page).take(per_page).collect();
        let mut response = respond(200, Value::Array(shown).to_string());
        let next = if page < pages { (page + 1).to_string() } else { String::new() };
        let prev = if page > 1 { (page - 1).to_string() } else { String::new() };
        for (name, value) in [
            ("x-page", page.to_string()),
            ("x-per-page", per_page.to_string()),
            ("x-total", total.to_string()),
            ("x-total-pages", pages.to_string()),
            ("x-next-page", next.clone()),
            ("x-prev-page", prev),
        ] {
            response.headers_mut().insert(name, http::HeaderValue::from_str(&value).unwrap());
        }
        if !next.is_empty() {
            let link = format!("<http://gitlab.test/api/v4?page={next}&per_page={per_page}>; rel=\"next\"");
            response.headers_mut().insert("link", http::HeaderValue::from_str(&link).unwrap());
        }
        response
    }

    /// `Entities::BasicProjectDetails`.
    fn project_entity(&self, id: u64, path: &str) -> Value {
        let (namespace, name) = path.rsplit_once('/').unwrap_or(("", path));
        let namespace_id = self.groups.iter().find(|g| g.value() == namespace).map_or(0, |g| *g.key());
        json!({
            "id": id, "description": null, "name": name, "name_with_namespace": path.replace('/', " / "), "path": name,
            "path_with_namespace": path, "created_at": "2026-01-05T10:00:00.000Z", "default_branch": "main", "tag_list": [], "topics": [],
            "ssh_url_to_repo": format!("git@gitlab.test:{path}.git"), "http_url_to_repo": format!("http://gitlab.test/{path}.git"),
            "web_url": format!("http://gitlab.test/{path}"), "readme_url": null, "forks_count": 0, "avatar_url": null, "star_count": 0,
            "last_activity_at": "2026-12-01T10:00:00.000Z",
            "namespace": {"id": namespace_id, "name": namespace.rsplit('/').next().unwrap_or_default(), "path": namespace.rsplit('/').next().unwrap_or_default(),
                          "kind": "group", "full_path": namespace, "parent_id": null, "avatar_url": null, "web_url": format!("http://gitlab.test/groups/{namespace}")}
        })
    }

    /// `Entities::BasicGroupDetails`: no path, only the web URL.
    fn group_basic(&self, id: u64, full_path: &str) -> Value {
        json!({"id": id, "web_url": format!("http://gitlab.test/groups/{full_path}"), "name": full_path.rsplit('/').next().unwrap_or_default()})
    }

    /// `Entities::GroupDetail` (without projects: `with_projects=false`).
    fn group_detail(&self, id: u64, full_path: &str) -> Value {
        let name = full_path.rsplit('/').next().unwrap_or_default();
        json!({"id": id, "web_url": format!("http://gitlab.test/groups/{full_path}"), "name": name, "path": name, "description": "",
               "visibility": "private", "full_name": full_path.replace('/', " / "), "full_path": full_path, "parent_id": null,
               "created_at": "2026-01-05T10:00:00.000Z", "shared_with_groups": []})
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
            let job = |job_id, git_ref| Job {
                id: job_id,
                project_path: path,
                project_id: *id,
                git_ref,
                tag: false,
                user: (5, "ann"),
            };
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
