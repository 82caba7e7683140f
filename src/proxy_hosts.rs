//! The edges of the routes that are not the proxy path: the registry token realms (jobgate's own,
//! and GitLab's with the scopes narrowed to the permit) and the hosts jobgate passes undecided.

use std::net::SocketAddr;

use http::request::Parts;
use http::Response;

use super::{allowed, drain, Gateway};
use crate::body::Body;
use crate::classify::Family;
use crate::clock::unix_now;
use crate::enforce::{Disposition, Refused, Summary};
use crate::forward::ForwardContext;
use crate::reason::Reason;
use crate::record::{Outcome, RequestCx};
use crate::refusal::Refusal;
use crate::registry::realm::{gitlab_realm, realm, AskGitLab, RealmLogin};
use crate::reject::{self, Challenge};
use crate::snapshot::Snapshot;
use crate::token::verify::VerifiedClaims;

impl Gateway {
    pub(super) async fn token_realm(
        &self,
        snapshot: &Snapshot,
        parts: &Parts,
        cx: &RequestCx,
    ) -> (Response<Body>, Outcome) {
        let mut verified = None;
        let mut granted = realm(&self.core(snapshot), parts, unix_now(), &mut verified);
        if let Err(Refused { lookup: Some(token), .. }) = &granted {
            granted = match self.resolve(token).await {
                Ok(()) => realm(&self.core(snapshot), parts, unix_now(), &mut verified),
                Err(refusal) => Err(refusal.into()),
            };
        }
        match granted.map_err(|refused| refused.refusal) {
            Ok(grant) => (
                reject::json(&grant.body),
                Outcome {
                    request: None,
                    claims: Some(grant.claims),
                    summary: allowed(),
                    verified,
                    upstream_credential: None,
                },
            ),
            Err(refusal) => {
                let response = reject::response(&refusal, &cx.id, Some(Family::Registry), &Challenge::Realm);
                (response, Outcome { verified, ..Outcome::refused(&refusal, None, None) })
            }
        }
    }

    /// A host jobgate passes without deciding (Pages, a KAS): its traffic goes to its upstream as it
    /// is, upgrades included; a job credential there is refused, since nothing a job may do lives there.
    pub(super) async fn pass(
        &self,
        i: usize,
        parts: Parts,
        body: Body,
        peer: SocketAddr,
        cx: &RequestCx,
    ) -> (Response<Body>, Outcome) {
        use crate::token::extract::{extract, Credential};
        let refusal = match extract(&parts.headers, parts.uri.query()) {
            Ok(Credential::Job(_) | Credential::BearerJwt(_)) => Some(Refusal::new(
                Reason::UnmatchedRequest,
                "a job credential on a host jobgate passes without deciding (hosts.passthrough)",
            )),
            Ok(_) => None,
            Err(e) => Some(Refusal::from(e)),
        };
        let upstream = self.passthrough.get(i);
        let (Some(upstream), None) = (upstream, &refusal) else {
            let refusal = refusal.unwrap_or_else(|| Refusal::new(Reason::InternalError, "no upstream for this host"));
            drain(body).await;
            return (
                reject::response(&refusal, &cx.id, None, &Challenge::GitLab),
                Outcome::refused(&refusal, None, None),
            );
        };
        let passed =
            Summary { disposition: Disposition::Passthrough, enforced: true, reason: Reason::NonJobPassthrough };
        match upstream
            .forward(
                parts,
                body,
                &ForwardContext { peer, request_id: &cx.id, identity: None, upgrade: true, credential: None },
            )
            .await
        {
            Ok(response) => (
                response,
                Outcome { request: None, claims: None, summary: passed, verified: None, upstream_credential: None },
            ),
            Err(e) => {
                let refusal = Refusal::from(e);
                (reject::response(&refusal, &cx.id, None, &Challenge::GitLab), Outcome::refused(&refusal, None, None))
            }
        }
    }

    /// The realm for GitLab's registry tokens: a job's request goes to GitLab's `/jwt/auth` with only
    /// the scopes the policy allows and the job's own token, and GitLab's answer comes back as it is;
    /// non-job traffic takes the proxy path to GitLab untouched (when the registry passes it).
    pub(super) async fn gitlab_realm(
        &self,
        snapshot: &Snapshot,
        parts: Parts,
        body: Body,
        peer: SocketAddr,
        cx: &RequestCx,
    ) -> (Response<Body>, Outcome) {
        let (Some(service), Some(gitlab)) = (&self.registry_at_gitlab, &self.gitlab) else {
            return self.proxy(snapshot, parts, body, peer, cx).await;
        };
        let mut verified = None;
        let impersonation = gitlab.impersonation();
        let mut asked =
            gitlab_realm(&self.core(snapshot), &parts, service, impersonation.is_some(), unix_now(), &mut verified);
        if let Err(Refused { lookup: Some(lookup), .. }) = &asked {
            asked = match self.resolve(lookup).await {
                Ok(()) => gitlab_realm(
                    &self.core(snapshot),
                    &parts,
                    service,
                    impersonation.is_some(),
                    unix_now(),
                    &mut verified,
                ),
                Err(refusal) => Err(refusal.into()),
            };
        }
        let refused = |refusal: Refusal, claims: Option<VerifiedClaims>| {
            let response = reject::response(&refusal, &cx.id, Some(Family::Registry), &Challenge::GitLab);
            (response, Outcome { verified, ..Outcome::refused(&refusal, None, claims) })
        };
        match asked {
            Ok(AskGitLab::NonJob) => self.proxy(snapshot, parts, body, peer, cx).await,
            Ok(AskGitLab::Job { query, login, claims }) => {
                let (login, password, sent) = match login {
                    RealmLogin::JobToken(token) => {
                        ("gitlab-ci-token".to_owned(), token, std::borrow::Cow::Borrowed("job_token"))
                    }
                    RealmLogin::Impersonated(scope) => {
                        let Some(impersonation) = impersonation else {
                            return refused(
                                Refusal::new(Reason::InternalError, "no impersonation configured"),
                                Some(claims),
                            );
                        };
                        match impersonation.token(gitlab, claims.claims(), scope, unix_now()).await {
                            Ok(held) => (
                                claims.claims().user_login.as_deref().unwrap_or("jobgate").to_owned(),
                                held.token.to_string(),
                                format!("impersonation:{}", held.id).into(),
                            ),
                            Err(refusal) => return refused(refusal, Some(claims)),
                        }
                    }
                };
                match gitlab.registry_token(&query, &login, &password).await {
                    Ok((status, answer)) => {
                        let summary = match status.is_success() {
                            true => allowed(),
                            // The policy allowed, GitLab did not: its body says why.
                            false => Summary {
                                disposition: Disposition::Deny,
                                enforced: true,
                                reason: Reason::GitlabRefused,
                            },
                        };
                        (
                            reject::gitlab_answer(status, answer),
                            Outcome {
                                request: None,
                                claims: Some(claims),
                                summary,
                                verified,
                                upstream_credential: Some(sent),
                            },
                        )
                    }
                    Err(e) => refused(e.into(), Some(claims)),
                }
            }
            Err(refused_request) => refused(refused_request.refusal, None),
        }
    }
}
