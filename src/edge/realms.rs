//! The routes that are not the proxy path: the registry token realms (jobgate's own, and GitLab's
//! with the scopes narrowed to the permit), both driven through the core's needs like the proxy
//! path, and the hosts jobgate passes undecided.

use std::net::SocketAddr;

use http::request::Parts;

use super::body::{self, Body};
use super::exit::Exit;
use super::gateway::{Answer, Gateway};
use super::record::{Outcome, RequestCx, Verification};
use super::reject::{self, Challenge};
use super::upstream::ForwardContext;
use crate::classify::Family;
use crate::clock::unix_now;
use crate::enforce::realm::{gitlab_realm, realm, AskGitLab, RealmLogin};
use crate::enforce::{Disposition, Summary};
use crate::infra::audit::UpstreamCredential;
use crate::reason::Reason;
use crate::refusal::Refusal;
use crate::snapshot::Snapshot;
use crate::token::extract::{extract, Credential};

impl Gateway {
    /// jobgate's own realm: a registry token for what the policy allows.
    pub(super) async fn token_realm(
        &self,
        snapshot: &Snapshot,
        parts: &Parts,
        peer: SocketAddr,
    ) -> Result<Answer, Exit> {
        let core = self.core(snapshot);
        let mut stats = None;
        let refused = |refusal: Refusal| Exit::new(refusal).family(Family::Registry).challenge(Challenge::Realm);
        let (granted, seconds) = self
            .drive(&mut body::empty(), peer.ip(), |known| realm(&core, parts, known, unix_now(), &mut stats))
            .await
            .map_err(|exit| refused(exit.refusal))?;
        let verified = Verification::timed(stats, seconds);
        match granted {
            Ok(grant) => Ok((reject::json(&grant.body), Outcome::answered(Some(grant.claims), verified))),
            Err(refusal) => Err(refused(refusal).claims(None, verified)),
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
    ) -> Result<Answer, Exit> {
        let refusal = match extract(&parts.headers, parts.uri.query()) {
            Ok(Credential::Job(_) | Credential::BearerJwt(_)) => Some(Refusal::new(
                Reason::UnmatchedRequest,
                "a job credential on a host jobgate passes without deciding (hosts.passthrough)",
            )),
            Ok(_) => None,
            Err(e) => Some(Refusal::from(e)),
        };
        let (Some(upstream), None) = (self.passthrough.get(i), &refusal) else {
            let refusal = refusal.unwrap_or_else(|| Refusal::new(Reason::InternalError, "no upstream for this host"));
            return Err(Exit::new(refusal).body(body));
        };
        let ctx = ForwardContext { peer, request_id: &cx.id, identity: None, upgrade: true, credential: None };
        let response = upstream.forward(parts, body, &ctx).await.map_err(|e| Exit::new(Refusal::from(e)))?;
        let passed =
            Summary { disposition: Disposition::Passthrough, enforced: true, reason: Reason::NonJobPassthrough };
        Ok((
            response,
            Outcome { request: None, claims: None, summary: passed, verified: None, upstream_credential: None },
        ))
    }

    /// The realm for GitLab's registry tokens: a job's request goes to GitLab's `/jwt/auth` with only
    /// the scopes the policy allows and the job's own token (or its user's, beyond the job token's
    /// rights), and GitLab's answer comes back as it is; non-job traffic takes the proxy path to
    /// GitLab untouched (when the registry passes it).
    pub(super) async fn gitlab_realm(
        &self,
        snapshot: &Snapshot,
        parts: Parts,
        body: Body,
        peer: SocketAddr,
        cx: &RequestCx,
    ) -> Result<Answer, Exit> {
        let (Some(service), Some(gitlab)) = (&self.registry_at_gitlab, &self.gitlab) else {
            return self.proxy(snapshot, parts, body, peer, cx).await;
        };
        let core = self.core(snapshot);
        let mut stats = None;
        let impersonation = gitlab.impersonation();
        let (asked, seconds) = self
            .drive(&mut body::empty(), peer.ip(), |known| {
                gitlab_realm(&core, &parts, service, impersonation.is_some(), known, unix_now(), &mut stats)
            })
            .await
            .map_err(|exit| exit.family(Family::Registry))?;
        let verified = Verification::timed(stats, seconds);
        let (query, login, claims) = match asked {
            Ok(AskGitLab::NonJob) => return self.proxy(snapshot, parts, body, peer, cx).await,
            Ok(AskGitLab::Job { query, login, claims }) => (query, login, claims),
            Err(refusal) => return Err(Exit::new(refusal).family(Family::Registry).claims(None, verified)),
        };
        let refused =
            |refusal: Refusal| Exit::new(refusal).family(Family::Registry).claims(Some(claims.clone()), verified);
        let (login, password, sent) = match login {
            RealmLogin::JobToken(token) => ("gitlab-ci-token".to_owned(), token, UpstreamCredential::JobToken),
            RealmLogin::Impersonated(scope) => {
                let Some(impersonation) = impersonation else {
                    return Err(refused(Refusal::new(Reason::InternalError, "no impersonation configured")));
                };
                let held = impersonation.token(gitlab, claims.claims(), scope, unix_now()).await.map_err(refused)?;
                let login = claims.claims().user_login.as_deref().unwrap_or("jobgate").to_owned();
                (login, held.token.to_string(), UpstreamCredential::Impersonation(held.id))
            }
        };
        let (status, answer) =
            gitlab.registry_token(&query, &login, &password).await.map_err(|e| refused(Refusal::from(e)))?;
        let mut outcome = Outcome { upstream_credential: Some(sent), ..Outcome::answered(Some(claims), verified) };
        if !status.is_success() {
            // The policy allowed, GitLab did not: its body says why.
            outcome.summary = Summary { disposition: Disposition::Deny, enforced: true, reason: Reason::GitlabRefused };
        }
        Ok((reject::gitlab_answer(status, answer), outcome))
    }
}
