//! The one home of "which credential goes upstream" for an allowed job request: a [`CredentialPlan`]
//! chosen once from the upstream's `credentials:` mode and what GitLab itself would accept
//! (`enforce::elevate`), then held ([`Gateway::hold`]: an impersonation token minted or reused) and
//! named for the audit line by its kind, never its value. Non-job traffic has no plan: the mode
//! alone treats its credentials.

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;

use super::Upstream;
use crate::clock::unix_now;
use crate::config::CredentialMode;
use crate::edge::gateway::Gateway;
use crate::enforce::elevate::{elevation, presented};
use crate::enforce::{Enforced, Verdict};
use crate::infra::audit::UpstreamCredential;
use crate::reason::Reason;
use crate::refusal::Refusal;
use crate::scope::GitLabScope;

/// Which credential an allowed job request carries upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialPlan {
    /// The job's own, as it came (`passthrough`; `impersonate` within GitLab's job-token rules).
    Job,
    /// None: every credential is taken out (`strip`).
    Strip,
    /// jobgate's configured credential and identity headers (`replace`).
    Static,
    /// An impersonation token of the job's user with this scope, in the client's form
    /// (`impersonate`, beyond the job token's rights).
    Impersonate(GitLabScope),
}

impl CredentialPlan {
    /// The plan for a job request `enforced` allowed (or would deny in audit mode); `None` for
    /// anything else.
    ///
    /// # Errors
    /// A credential of jobgate's own (`Static`, `Impersonate`) for a group or instance target, which
    /// the policy did not decide.
    pub fn choose(upstream: &Upstream, enforced: &Enforced) -> Result<Option<CredentialPlan>, Refusal> {
        let (Verdict::Allow(claims, _) | Verdict::WouldDeny(claims, _)) = &enforced.verdict else { return Ok(None) };
        let plan = match upstream.mode() {
            CredentialMode::Passthrough => CredentialPlan::Job,
            CredentialMode::Strip => CredentialPlan::Strip,
            CredentialMode::Replace => CredentialPlan::Static,
            CredentialMode::Impersonate => {
                let beyond = match (&enforced.verdict, &enforced.request, enforced.credential) {
                    (Verdict::Allow(..), Some(request), Some(kind)) => elevation(request, claims.claims(), kind),
                    _ => None,
                };
                beyond.map_or(CredentialPlan::Job, CredentialPlan::Impersonate)
            }
        };
        let own = matches!(plan, CredentialPlan::Static | CredentialPlan::Impersonate(_));
        if own && !enforced.request.as_ref().is_some_and(|r| r.target.is_single()) {
            let why = "group and instance targets are not decided, so no credential of jobgate's own (credentials: replace, impersonate) is presented for them";
            return Err(Refusal::new(Reason::UnresolvedTarget, why));
        }
        Ok(Some(plan))
    }
}

/// A plan made real: the header that replaces the request's credentials (an impersonation token),
/// and the audit line's name for what went.
pub struct Held {
    pub header: Option<(HeaderName, HeaderValue)>,
    pub label: UpstreamCredential,
}

impl Gateway {
    /// Holds the credential `plan` names for the job `enforced` verified; `headers` say the form the
    /// client sent its own in.
    ///
    /// # Errors
    /// Impersonation without an administrator token, or a mint GitLab refused or could not answer.
    pub(crate) async fn hold(
        &self,
        plan: CredentialPlan,
        enforced: &Enforced,
        headers: &HeaderMap,
    ) -> Result<Held, Refusal> {
        let label = match plan {
            CredentialPlan::Job => UpstreamCredential::Job,
            CredentialPlan::Strip => UpstreamCredential::Stripped,
            CredentialPlan::Static => UpstreamCredential::Static,
            CredentialPlan::Impersonate(scope) => return self.impersonated(scope, enforced, headers).await,
        };
        Ok(Held { header: None, label })
    }

    async fn impersonated(
        &self,
        scope: GitLabScope,
        enforced: &Enforced,
        headers: &HeaderMap,
    ) -> Result<Held, Refusal> {
        let gitlab = self.gitlab.as_ref().and_then(|g| Some((g, g.impersonation()?)));
        let (Some((gitlab, impersonation)), Some(claims)) = (gitlab, enforced.verdict.claims().map(|c| c.claims()))
        else {
            return Err(Refusal::new(
                Reason::InternalError,
                "credentials: impersonate without gitlab.admin_token_file",
            ));
        };
        let held = impersonation.token(gitlab, claims, scope, unix_now()).await?;
        let header = presented(headers, claims.user_login.as_deref(), &held.token)
            .ok_or_else(|| Refusal::new(Reason::InternalError, "GitLab's impersonation token is no header value"))?;
        Ok(Held { header: Some(header), label: UpstreamCredential::Impersonation(held.id) })
    }
}
