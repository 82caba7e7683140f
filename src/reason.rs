//! The one closed list of decision reason ids. They are metric label values, audit values and test
//! expectations alike, so they never carry data (no project, user or token) and never change spelling.

use serde::Serialize;

/// Why a request was allowed, passed through or rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The policy grants the needed scope.
    Granted,
    /// A read on a group or the instance (no single project to decide on): allowed because the job
    /// holds the needed scope on its own project; the upstream enforces visibility.
    GrantedViaOwnProject,
    /// Not job traffic, and the route passes such traffic to the upstream.
    NonJobPassthrough,
    /// No credential at all on a route that rejects non-job traffic.
    MissingCredential,
    /// A credential that is not a job token on a route that rejects non-job traffic.
    NonJobRejected,
    /// Two different credentials in one request (token smuggling).
    ConflictingCredentials,
    /// The request itself is malformed (duplicated `Host`, absolute-form target, ...).
    BadRequest,
    /// An API request whose body GitLab reads credentials from is larger than jobgate reads
    /// (`limits.body_credential_bytes`), or cannot be read: its credential is unknown, so it is refused.
    BodyNotInspected,
    /// A credential in a request body where jobgate cannot take it out (the upstream gets jobgate's
    /// own credential), or one found past the inspected bytes of a multipart body.
    CredentialInBody,
    /// A protocol upgrade (WebSocket) carrying a job credential: what travels over the upgraded
    /// connection cannot be decided, so only non-job traffic is upgraded.
    UpgradeRefused,
    /// The request names a host jobgate does not serve (`hosts:`), or none.
    UnknownHost,
    /// The request shape is not one jobgate knows; unknown shapes are denied, not guessed.
    UnmatchedRequest,
    /// The token is larger than the configured limit.
    TokenTooLarge,
    /// The token is not a well-formed JWS compact serialisation.
    MalformedToken,
    /// The token's `iss` names no configured issuer.
    UnknownIssuer,
    /// The header has no `kid`, or the issuer's key set has no key with that id.
    UnknownKid,
    /// The issuer's key set is older than its maximum staleness: fail closed.
    KeySetStale,
    /// The header's `alg` is not allowed for the issuer, or does not fit the key.
    AlgNotAllowed,
    /// The signature does not verify.
    BadSignature,
    /// A registered or GitLab claim is missing or has an impossible value.
    ClaimInvalid,
    /// `exp` is in the past (beyond the leeway).
    TokenExpired,
    /// `nbf` or `iat` is in the future (beyond the leeway).
    TokenNotYetValid,
    /// `aud` names none of the issuer's accepted audiences.
    WrongAudience,
    /// The token lives longer (`exp - iat`) than the issuer allows.
    LifetimeTooLong,
    /// The token (its `jti`) or its job was revoked: the job has ended.
    TokenRevoked,
    /// A kind of token that is not valid here (a registry token outside registry routes, a JWT whose
    /// `typ` is no job token's).
    TokenKindNotAllowed,
    /// The token's `project_id` is not the id the policy gives its `project_path`.
    ProjectIdMismatch,
    /// GitLab knows no running job with this token (a finished job's, or none at all).
    JobTokenInvalid,
    /// GitLab could not be asked who a job token belongs to: fail closed.
    GitlabUnavailable,
    /// Too many unknown job tokens to look up at GitLab this second.
    GitlabLookupBudget,
    /// GitLab's realm needs GitLab's own job token, and the job presented another kind (an ID token).
    NoGitlabCredential,
    /// GitLab refused what jobgate asked on the job's behalf (its answer is passed on): the policy
    /// allowed, GitLab did not.
    GitlabRefused,
    /// GitLab refused to mint the job's user's impersonation token (the user is blocked, the admin
    /// token is no administrator's), or the job has no user: nothing is forwarded.
    ImpersonationRefused,
    /// A registry token that does not grant this action: the client must ask the realm again
    /// (answered 401 with a challenge naming the scope, as registries do).
    RegistryScopeMissing,
    /// The target project does not admit the job's project.
    NotInAllowlist,
    /// The needed scope is granted by no baseline and no allowlist entry.
    ScopeNotGranted,
    /// A grant exists but elevation is switched off above or at the target.
    ElevationDisabled,
    /// The action (or the grant) needs a protected ref and the job's ref is not protected.
    RefNotProtected,
    /// A grant exists but a condition of its entry (ref name, ref type, environment) does not hold.
    ConditionNotMet,
    /// The user who runs the job could not do this.
    UserCeiling,
    /// The policy requires a user ceiling and neither the token nor `members` give the user's role.
    UserRoleUnknown,
    /// The token's own `scopes` claim does not include the needed scope.
    TokenCeiling,
    /// A numeric project id that neither the policy nor the token can resolve.
    UnknownProjectId,
    /// A write on a group or the instance: no single project to decide on, so denied.
    UnresolvedTarget,
    /// The upstream could not be reached.
    UpstreamUnavailable,
    /// The upstream did not answer in time.
    UpstreamTimeout,
    /// More client connections than `limits.max_connections`.
    OverCapacity,
    /// jobgate itself failed (a header it cannot build, a token it cannot sign): not the client's fault.
    InternalError,
}

impl Reason {
    /// Every reason, for metrics pre-registration and exhaustive tests.
    pub const ALL: [Reason; 48] = [
        Reason::Granted,
        Reason::GrantedViaOwnProject,
        Reason::NonJobPassthrough,
        Reason::MissingCredential,
        Reason::NonJobRejected,
        Reason::ConflictingCredentials,
        Reason::BadRequest,
        Reason::BodyNotInspected,
        Reason::CredentialInBody,
        Reason::UpgradeRefused,
        Reason::UnknownHost,
        Reason::UnmatchedRequest,
        Reason::TokenTooLarge,
        Reason::MalformedToken,
        Reason::UnknownIssuer,
        Reason::UnknownKid,
        Reason::KeySetStale,
        Reason::AlgNotAllowed,
        Reason::BadSignature,
        Reason::ClaimInvalid,
        Reason::TokenExpired,
        Reason::TokenNotYetValid,
        Reason::WrongAudience,
        Reason::LifetimeTooLong,
        Reason::TokenRevoked,
        Reason::TokenKindNotAllowed,
        Reason::ProjectIdMismatch,
        Reason::JobTokenInvalid,
        Reason::GitlabUnavailable,
        Reason::GitlabLookupBudget,
        Reason::NoGitlabCredential,
        Reason::GitlabRefused,
        Reason::ImpersonationRefused,
        Reason::RegistryScopeMissing,
        Reason::NotInAllowlist,
        Reason::ScopeNotGranted,
        Reason::ElevationDisabled,
        Reason::RefNotProtected,
        Reason::ConditionNotMet,
        Reason::UserCeiling,
        Reason::UserRoleUnknown,
        Reason::TokenCeiling,
        Reason::UnknownProjectId,
        Reason::UnresolvedTarget,
        Reason::UpstreamUnavailable,
        Reason::UpstreamTimeout,
        Reason::OverCapacity,
        Reason::InternalError,
    ];

    /// The stable id used in metrics, audit lines, response bodies and tests.
    pub fn id(self) -> &'static str {
        match self {
            Reason::Granted => "granted",
            Reason::GrantedViaOwnProject => "granted_via_own_project",
            Reason::NonJobPassthrough => "non_job_passthrough",
            Reason::MissingCredential => "missing_credential",
            Reason::NonJobRejected => "non_job_rejected",
            Reason::ConflictingCredentials => "conflicting_credentials",
            Reason::BadRequest => "bad_request",
            Reason::BodyNotInspected => "body_not_inspected",
            Reason::CredentialInBody => "credential_in_body",
            Reason::UpgradeRefused => "upgrade_refused",
            Reason::UnknownHost => "unknown_host",
            Reason::UnmatchedRequest => "unmatched_request",
            Reason::TokenTooLarge => "token_too_large",
            Reason::MalformedToken => "malformed_token",
            Reason::UnknownIssuer => "unknown_issuer",
            Reason::UnknownKid => "unknown_kid",
            Reason::KeySetStale => "key_set_stale",
            Reason::AlgNotAllowed => "alg_not_allowed",
            Reason::BadSignature => "bad_signature",
            Reason::ClaimInvalid => "claim_invalid",
            Reason::TokenExpired => "token_expired",
            Reason::TokenNotYetValid => "token_not_yet_valid",
            Reason::WrongAudience => "wrong_audience",
            Reason::LifetimeTooLong => "lifetime_too_long",
            Reason::TokenRevoked => "token_revoked",
            Reason::TokenKindNotAllowed => "token_kind_not_allowed",
            Reason::ProjectIdMismatch => "project_id_mismatch",
            Reason::JobTokenInvalid => "job_token_invalid",
            Reason::GitlabUnavailable => "gitlab_unavailable",
            Reason::GitlabLookupBudget => "gitlab_lookup_budget",
            Reason::NoGitlabCredential => "no_gitlab_credential",
            Reason::GitlabRefused => "gitlab_refused",
            Reason::ImpersonationRefused => "impersonation_refused",
            Reason::RegistryScopeMissing => "registry_scope_missing",
            Reason::NotInAllowlist => "not_in_allowlist",
            Reason::ScopeNotGranted => "scope_not_granted",
            Reason::ElevationDisabled => "elevation_disabled",
            Reason::RefNotProtected => "ref_not_protected",
            Reason::ConditionNotMet => "condition_not_met",
            Reason::UserCeiling => "user_ceiling",
            Reason::UserRoleUnknown => "user_role_unknown",
            Reason::TokenCeiling => "token_ceiling",
            Reason::UnknownProjectId => "unknown_project_id",
            Reason::UnresolvedTarget => "unresolved_target",
            Reason::UpstreamUnavailable => "upstream_unavailable",
            Reason::UpstreamTimeout => "upstream_timeout",
            Reason::OverCapacity => "over_capacity",
            Reason::InternalError => "internal_error",
        }
    }
}

impl Reason {
    /// Whether this reason can end in a refusal (every reason but the three allow reasons).
    pub fn refuses(self) -> bool {
        !matches!(self, Reason::Granted | Reason::GrantedViaOwnProject | Reason::NonJobPassthrough)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_match_serde() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            assert!(seen.insert(r.id()), "duplicate id {}", r.id());
            let json = serde_json::to_string(&r).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", r.id()));
        }
    }
}
