//! `jobgate policy import`: each project's CI/CD job token settings read from GitLab's REST API and
//! written as equivalent policy — one file per top-level group, one comment per entry naming its
//! source, byte-identical for the same settings (re-running it is idempotent).
//!
//! What GitLab answers (docs: `api/project_job_token_scopes.md`, `api/groups.md`, `api/projects.md`,
//! pagination in `api/rest/index.md`):
//! - `GET /projects/:id/job_token_scope` → `{"inbound_enabled": bool, "outbound_enabled": bool}`
//!   (the user must be a Maintainer: else `403 {"message": "403 Forbidden"}`);
//! - `GET /projects/:id/job_token_scope/allowlist` → projects (`id`, `path_with_namespace`, …),
//!   `GET /projects/:id/job_token_scope/groups_allowlist` → groups (`id`, `web_url`, `name`: no path,
//!   so each group's `full_path` comes from `GET /groups/:id`);
//! - `GET /groups/:id/projects?include_subgroups=true` and `GET /projects`: the projects to import;
//! - every list is paginated: `page`, `per_page` (at most 100) and the `x-next-page` header, empty on
//!   the last page.
//!
//! Mapping: "Limit access to this project" on (`inbound_enabled`) → the default `inbound: allowlist`
//! with one `from:` per allowlisted project and group (admission with the cross-project baseline,
//! GitLab's allowlist grants nothing more); off → `inbound: open`. The project's `id` is written too
//! (API paths name projects by id).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde::Deserialize;

use crate::config::GitLabConfig;
use crate::yaml::quoted as q;

/// Largest API answer read (one page).
const MAX_ANSWER: usize = 8 * 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(30);
/// Pages followed at most per list (100 entries each).
const MAX_PAGES: u32 = 1000;

/// A project or group as the import knows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Named {
    pub path: String,
    pub id: u64,
}

/// One project's job token settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub project: Named,
    pub inbound_enabled: bool,
    pub outbound_enabled: bool,
    pub projects: Vec<Named>,
    pub groups: Vec<Named>,
}

/// The policy files (file name → text) and what the import could not express or read.
#[derive(Debug, Default)]
pub struct Imported {
    pub files: BTreeMap<String, String>,
    pub report: Vec<String>,
}

#[derive(Deserialize)]
struct ProjectDoc {
    id: u64,
    path_with_namespace: String,
}

#[derive(Deserialize)]
struct GroupRef {
    id: u64,
}

#[derive(Deserialize)]
struct GroupDoc {
    id: u64,
    full_path: String,
}

#[derive(Deserialize)]
struct ScopeDoc {
    inbound_enabled: bool,
    outbound_enabled: bool,
}

/// GitLab's REST API with jobgate's API token.
struct Api {
    base: String,
    token: HeaderValue,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl Api {
    fn new(config: &GitLabConfig) -> Result<Api, String> {
        let file = config
            .api_token_file
            .as_ref()
            .ok_or("gitlab.api_token_file is required: the import reads each project's settings with it")?;
        let token = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let mut token =
            HeaderValue::from_str(token.trim()).map_err(|_| format!("{}: not a header value", file.display()))?;
        token.set_sensitive(true);
        let tls = crate::infra::tls::client_config(config.ca_file.as_deref())?;
        let connector =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();
        Ok(Api {
            base: config.url.trim_end_matches('/').to_owned(),
            token,
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// One GET: the status, the `x-next-page` header and the body.
    async fn get(&self, path: &str) -> Result<(StatusCode, Option<u32>, Bytes), String> {
        let url = format!("{}/api/v4{path}", self.base);
        let uri: Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let request = Request::get(uri)
            .header("private-token", self.token.clone())
            .header(header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| format!("GET {url}: no answer within {}s", TIMEOUT.as_secs()))?
            .map_err(|e| format!("GET {url}: {}", crate::error::chain(&e)))?;
        let (parts, body) = response.into_parts();
        let next = parts.headers.get("x-next-page").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok());
        let body = Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("GET {url}: reading the answer: {e}"))?
            .to_bytes();
        Ok((parts.status, next, body))
    }

    /// A GET whose answer must be 200 and `T`; GitLab's `message` is in the error otherwise.
    async fn one<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<(T, Option<u32>), String> {
        let (status, next, body) = self.get(path).await?;
        if status != StatusCode::OK {
            // GitLab's own words when it gave some (`{"message": "403 Forbidden"}`), else the status.
            let answer = serde_json::from_slice::<serde_json::Value>(&body).ok();
            let message = answer
                .as_ref()
                .and_then(|v| v.get("message").or_else(|| v.get("error")))
                .map(|m| m.as_str().map_or_else(|| m.to_string(), str::to_owned));
            let said = message.filter(|m| m.starts_with(status.as_str())).unwrap_or_else(|| status.to_string());
            return Err(format!("GET /api/v4{path}: {said}"));
        }
        let value =
            serde_json::from_slice(&body).map_err(|e| format!("GET /api/v4{path}: not GitLab's answer: {e}"))?;
        Ok((value, next))
    }

    /// Every page of a list, following `x-next-page`.
    async fn all<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<Vec<T>, String> {
        let join = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut page = 1;
        for _ in 0..MAX_PAGES {
            let (batch, next): (Vec<T>, _) = self.one(&format!("{path}{join}per_page=100&page={page}")).await?;
            items.extend(batch);
            match next {
                Some(next) if next > page => page = next,
                _ => return Ok(items),
            }
        }
        Err(format!("GET /api/v4{path}: more than {MAX_PAGES} pages"))
    }
}

fn encode(path: &str) -> String {
    utf8_percent_encode(path, NON_ALPHANUMERIC).to_string()
}

/// Reads the settings of every project in `groups` (with subgroups), or of every project the token
/// sees when none is named. A project whose settings cannot be read is reported, not imported.
///
/// # Errors
/// No API token, or a project list that cannot be read.
pub async fn fetch(config: &GitLabConfig, groups: &[String]) -> Result<(Vec<Settings>, Vec<String>), String> {
    let api = Api::new(config)?;
    let mut projects = BTreeSet::new();
    if groups.is_empty() {
        projects.extend(
            api.all::<ProjectDoc>("/projects")
                .await?
                .into_iter()
                .map(|p| Named { path: p.path_with_namespace, id: p.id }),
        );
    }
    for group in groups {
        let listed = api
            .all::<ProjectDoc>(&format!("/groups/{}/projects?include_subgroups=true", encode(group.trim_matches('/'))))
            .await?;
        projects.extend(listed.into_iter().map(|p| Named { path: p.path_with_namespace, id: p.id }));
    }
    let mut group_paths: BTreeMap<u64, String> = BTreeMap::new();
    let (mut settings, mut problems) = (Vec::new(), Vec::new());
    for project in projects {
        match read_settings(&api, &project, &mut group_paths).await {
            Ok(read) => settings.push(read),
            Err(e) => {
                problems.push(format!("{}: {e}; not imported (it stays closed to other projects' jobs)", project.path))
            }
        }
    }
    Ok((settings, problems))
}

async fn read_settings(
    api: &Api,
    project: &Named,
    group_paths: &mut BTreeMap<u64, String>,
) -> Result<Settings, String> {
    let base = format!("/projects/{}/job_token_scope", project.id);
    let (scope, _): (ScopeDoc, _) = api.one(&base).await?;
    let mut projects: Vec<Named> = api
        .all::<ProjectDoc>(&format!("{base}/allowlist"))
        .await?
        .into_iter()
        .map(|p| Named { path: p.path_with_namespace, id: p.id })
        .collect();
    projects.retain(|p| p.id != project.id);
    let mut groups = Vec::new();
    for group in api.all::<GroupRef>(&format!("{base}/groups_allowlist")).await? {
        let path = match group_paths.get(&group.id) {
            Some(path) => path.clone(),
            None => {
                let (doc, _): (GroupDoc, _) = api.one(&format!("/groups/{}?with_projects=false", group.id)).await?;
                group_paths.insert(doc.id, doc.full_path.clone());
                doc.full_path
            }
        };
        groups.push(Named { path, id: group.id });
    }
    projects.sort();
    groups.sort();
    Ok(Settings {
        project: project.clone(),
        inbound_enabled: scope.inbound_enabled,
        outbound_enabled: scope.outbound_enabled,
        projects,
        groups,
    })
}

/// The policy files for `settings` (read from `source`, GitLab's URL) and what they leave unsaid.
pub fn render(settings: &[Settings], source: &str) -> Imported {
    let mut imported = Imported::default();
    let mut by_top: BTreeMap<&str, Vec<&Settings>> = BTreeMap::new();
    for s in settings {
        by_top.entry(s.project.path.split('/').next().unwrap_or_default()).or_default().push(s);
    }
    for (top, mut projects) in by_top {
        projects.sort_by(|a, b| a.project.path.cmp(&b.project.path));
        let mut text = format!(
            "# The CI/CD job token allowlists of GitLab's {top} projects, imported from {source} by\n\
             # `jobgate policy import`. Re-running the import rewrites this file: change the settings in GitLab,\n\
             # or move a project into a file of your own (and leave it out of the import).\nprojects:\n"
        );
        for s in projects {
            text.push_str(&format!("  {}:\n    id: {}\n", q(&s.project.path), s.project.id));
            if s.inbound_enabled {
                text.push_str("    # GitLab: \"Limit access to this project\" is on: only the allowlist reaches it\n");
            } else {
                text.push_str("    # GitLab: \"Limit access to this project\" is off: every project's jobs reach it\n    inbound: open\n");
            }
            if !s.projects.is_empty() || !s.groups.is_empty() {
                text.push_str("    allow:\n");
            }
            for p in &s.projects {
                text.push_str(&format!(
                    "      # GitLab allowlist: project {} (id {})\n      - from: {}\n",
                    p.path,
                    p.id,
                    q(&p.path)
                ));
            }
            for g in &s.groups {
                text.push_str(&format!(
                    "      # GitLab groups allowlist: group {} (id {})\n      - from: {}\n",
                    g.path,
                    g.id,
                    q(&g.path)
                ));
            }
            if s.outbound_enabled {
                imported.report.push(format!("{}: GitLab's outbound scope (deprecated, removed in GitLab 18.0) is on; jobgate has none: it decides at the target", s.project.path));
            }
        }
        imported.files.insert(format!("gitlab-{top}.yaml"), text);
    }
    imported.report.push(
        "not in GitLab's allowlists, and not set by the import: grants beyond the cross-project baseline (`scopes:`), \
         `refs: protected` and ref/environment conditions, destructive actions only from protected refs \
         (instance.destructive_requires_protected_ref) and the compliance switches (`elevation: false`): add them in files of your own"
            .to_owned(),
    );
    imported.report.push("fine-grained job token permissions (GitLab's `job_token_policies`) are not read: imported entries admit with jobgate's cross-project baseline".to_owned());
    imported
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(path: &str, id: u64) -> Named {
        Named { path: path.into(), id }
    }

    #[test]
    fn settings_become_one_policy_per_top_level_group_that_loads() {
        let settings = vec![
            Settings {
                project: named("acme/app", 42),
                inbound_enabled: true,
                outbound_enabled: false,
                projects: vec![named("acme/lib", 43)],
                groups: vec![named("acme/tools", 9)],
            },
            Settings {
                project: named("acme/open", 45),
                inbound_enabled: false,
                outbound_enabled: true,
                projects: vec![],
                groups: vec![],
            },
            Settings {
                project: named("other/x", 50),
                inbound_enabled: true,
                outbound_enabled: false,
                projects: vec![],
                groups: vec![],
            },
        ];
        let imported = render(&settings, "https://gitlab.example.com");
        assert_eq!(imported.files.keys().collect::<Vec<_>>(), ["gitlab-acme.yaml", "gitlab-other.yaml"]);
        let acme = &imported.files["gitlab-acme.yaml"];
        let policy = crate::policy::Policy::from_yaml(std::path::Path::new("gitlab-acme.yaml"), acme)
            .unwrap_or_else(|e| panic!("{e}\n{acme}"));
        let app = &policy.projects[&crate::path::ProjectPath::parse("acme/app").unwrap_or_else(|| unreachable!())];
        assert_eq!((app.id, app.scoped.allow.entries.len()), (Some(42), 2));
        assert!(
            acme.contains("inbound: open") && acme.contains("# GitLab groups allowlist: group acme/tools (id 9)"),
            "{acme}"
        );
        assert!(imported.report.iter().any(|r| r.starts_with("acme/open: GitLab's outbound scope")));
        assert_eq!(
            render(&settings, "https://gitlab.example.com").files,
            imported.files,
            "the same settings, the same bytes"
        );
    }
}
