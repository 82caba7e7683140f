//! The HTTP half of asking GitLab: one pooled client (`send`, `get`, `pages` over GitLab's
//! `x-next-page` lists), its errors, the budget of questions per second, and GitLab's own registry
//! realm. What the questions mean lives beside it: job tokens and roles (`mod.rs`), impersonation
//! tokens (`impersonate.rs`).

use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};

use bytes::Bytes;
use dashmap::DashMap;
use http::{header, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};

use super::{GitLab, MAX_ANSWER, TIMEOUT};
use crate::reason::Reason;
use crate::refusal::Refusal;

/// Why no answer could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("GitLab could not be asked who this job token belongs to: {0}")]
    Unavailable(String),
    #[error("too many unknown job tokens to look up at GitLab this second; retry")]
    OverBudget,
}

impl From<LookupError> for Refusal {
    fn from(e: LookupError) -> Refusal {
        let reason = match e {
            LookupError::Unavailable(_) => Reason::GitlabUnavailable,
            LookupError::OverBudget => Reason::GitlabLookupBudget,
        };
        Refusal::new(reason, e.to_string())
    }
}

/// Why a call of GitLab's API brought no usable answer. Never holds a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitLabError {
    #[error("{0}: not a URL of GitLab's API")]
    Url(String),
    #[error("{0}: no answer in time")]
    Timeout(String),
    #[error("{url}: {why}")]
    Unreachable { url: String, why: String },
    #[error("reading GitLab's answer: {0}")]
    Answer(String),
    #[error("GitLab answered {status} to {path}")]
    Status { status: StatusCode, path: String },
    #[error("the credential is not a header value")]
    Credential,
}

impl From<GitLabError> for LookupError {
    fn from(e: GitLabError) -> LookupError {
        LookupError::Unavailable(e.to_string())
    }
}

/// A fixed one-second window of lookups (or mints).
pub(crate) struct Budget {
    pub(crate) per_second: u32,
    pub(crate) second: AtomicI64,
    pub(crate) used: AtomicU32,
}

impl Budget {
    pub(crate) fn take(&self, now: i64) -> bool {
        if self.second.swap(now, Ordering::AcqRel) != now {
            self.used.store(0, Ordering::Release);
        }
        self.used.fetch_add(1, Ordering::AcqRel) < self.per_second
    }
}

/// Each client's share of a [`Budget`]: at most half of it a second per client address, so one
/// client's never-seen tokens cannot spend what another's new jobs need. Bounded: past 10,000
/// addresses, those not seen this second are forgotten.
pub(crate) struct ClientShares {
    share: u32,
    used: DashMap<IpAddr, (i64, u32)>,
}

impl ClientShares {
    pub(crate) fn of(budget: &Budget) -> ClientShares {
        ClientShares { share: budget.per_second.div_ceil(2).max(1), used: DashMap::new() }
    }

    /// Takes one from `client`'s share this second; `false` when it is spent.
    pub(crate) fn take(&self, client: IpAddr, now: i64) -> bool {
        if self.used.len() >= 10_000 {
            self.used.retain(|_, (second, _)| *second == now);
        }
        let mut used = self.used.entry(client).or_insert((now, 0));
        if used.0 != now {
            *used = (now, 0);
        }
        used.1 += 1;
        used.1 <= self.share
    }
}

/// GitLab's status, headers and (bounded) body.
pub type Answered = (StatusCode, http::HeaderMap, Bytes);

impl GitLab {
    /// Every page of a GitLab list (`path` ends in `?` or `&`), 100 per page, following
    /// `x-next-page`, at most `max` pages: their bodies.
    ///
    /// # Errors
    /// GitLab unreachable or answering anything but 200.
    pub async fn pages(&self, path: &str, credential: &HeaderValue, max: usize) -> Result<Vec<Bytes>, GitLabError> {
        let (mut bodies, mut page) = (Vec::new(), Some("1".to_owned()));
        for _ in 0..max {
            let Some(n) = page.take() else { break };
            let (status, headers, body) =
                self.get(&format!("{path}per_page=100&page={n}"), "private-token", credential.clone()).await?;
            if status != StatusCode::OK {
                return Err(GitLabError::Status { status, path: path.trim_end_matches(['?', '&']).to_owned() });
            }
            bodies.push(body);
            page =
                headers.get("x-next-page").and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty()).map(str::to_owned);
        }
        Ok(bodies)
    }

    /// Asks GitLab's own registry realm (`GET /jwt/auth?{query}`, `app/controllers/jwt_controller.rb`)
    /// for a registry token with Basic credentials (`gitlab-ci-token` and the job's own token, or the
    /// user and an impersonation token): GitLab's
    /// status and JSON body (`{"token": …}`, or `{"errors": [{code, message}]}`).
    ///
    /// # Errors
    /// GitLab unreachable or too slow.
    pub async fn registry_token(
        &self,
        query: &str,
        login: &str,
        password: &str,
    ) -> Result<(StatusCode, Bytes), LookupError> {
        use base64::Engine as _;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{login}:{password}"));
        let mut value = HeaderValue::from_str(&format!("Basic {basic}")).map_err(|_| GitLabError::Credential)?;
        value.set_sensitive(true);
        let asked = self.get(&format!("/jwt/auth?{query}"), "authorization", value).await.map_err(LookupError::from);
        self.record(&asked.as_ref().map(|_| ()).map_err(Clone::clone));
        asked.map(|(status, _, body)| (status, body))
    }

    pub(super) async fn get_job(&self, token: &str) -> Result<Answered, GitLabError> {
        let mut value = HeaderValue::from_str(token).map_err(|_| GitLabError::Credential)?;
        value.set_sensitive(true);
        self.get("/api/v4/job", "job-token", value).await
    }

    /// One GET of GitLab's API with a credential header; the answer bounded.
    pub(super) async fn get(
        &self,
        path: &str,
        credential: &'static str,
        value: HeaderValue,
    ) -> Result<Answered, GitLabError> {
        self.send(http::Method::GET, path, credential, value, None).await
    }

    /// One call of GitLab's API with a credential header and an optional JSON body; the answer bounded.
    ///
    /// # Errors
    /// GitLab unreachable, too slow, or its answer unreadable.
    pub async fn send(
        &self,
        method: http::Method,
        path: &str,
        credential: &'static str,
        value: HeaderValue,
        json: Option<&serde_json::Value>,
    ) -> Result<Answered, GitLabError> {
        let url = || format!("{}{path}", self.base);
        let uri: Uri = url().parse().map_err(|_| GitLabError::Url(path.to_owned()))?;
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(credential, value)
            .header(header::ACCEPT, "application/json");
        if json.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(json.map_or_else(Bytes::new, |j| Bytes::from(j.to_string()))))
            .map_err(|_| GitLabError::Url(path.to_owned()))?;
        let response = tokio::time::timeout(TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| GitLabError::Timeout(url()))?
            .map_err(|e| GitLabError::Unreachable { url: url(), why: crate::error::chain(&e) })?;
        let (parts, body) = response.into_parts();
        let body =
            Limited::new(body, MAX_ANSWER).collect().await.map_err(|e| GitLabError::Answer(e.to_string()))?.to_bytes();
        Ok((parts.status, parts.headers, body))
    }
}

/// A token file's content as a header value marked sensitive (never printed).
pub(super) fn secret_header(file: &std::path::Path, what: &str) -> Result<HeaderValue, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{what} {}: {e}", file.display()))?;
    let mut value =
        HeaderValue::from_str(text.trim()).map_err(|_| format!("{what} {}: not a header value", file.display()))?;
    value.set_sensitive(true);
    Ok(value)
}
