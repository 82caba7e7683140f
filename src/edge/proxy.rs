//! The proxy path as named phases, each returning the next one's input or an [`Exit`]:
//! `asked` (what GitLab would read: credentials in an API body, a Terraform wrapper's job token) →
//! `decided` (the core, driven through its needs) → `guarded` (what the decision alone does not
//! settle: upgrades, credentials left in a body) → the credential plan, held → `forwarded`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use http::request::Parts;

use super::body::Body;
use super::exit::Exit;
use super::gateway::{Answer, Gateway};
use super::peek::Asked;
use super::record::{Outcome, RequestCx, Verification};
use super::reject::{self, Challenge};
use super::upstream::credential::{CredentialPlan, Held};
use super::upstream::{wants_upgrade, ForwardContext, Upstream};
use crate::classify::Family;
use crate::clock::unix_now;
use crate::enforce::{classify_request, enforce, Enforced, NoTrace, Verdict};
use crate::infra::audit::UpstreamCredential;
use crate::reason::Reason;
use crate::refusal::Refusal;
use crate::scope::ScopeSet;
use crate::snapshot::Snapshot;

impl Gateway {
    /// asked → decided → guarded → credential held → forwarded.
    pub(super) async fn proxy(
        &self,
        snapshot: &Snapshot,
        parts: Parts,
        body: Body,
        peer: SocketAddr,
        cx: &RequestCx,
    ) -> Result<Answer, Exit> {
        let Asked { mut body, decided_on, in_body, cut } = self.asked(&parts, body).await?;
        let core = self.core(snapshot);
        let head = decided_on.as_ref().unwrap_or(&parts);
        let decided =
            self.drive(&mut body, peer.ip(), |known| enforce(&core, head, known, unix_now(), &mut NoTrace)).await;
        let (enforced, seconds) = match decided {
            Ok(decided) => decided,
            Err(exit) => {
                // A need not met: the answer still takes the route's form and challenge.
                let request = classify_request(snapshot, head, None).ok().map(|r| r.request);
                let challenge = Challenge::for_request(&parts, request.as_ref(), self.registry.as_ref());
                return Err(exit.on(request).challenge(challenge).body(body));
            }
        };
        let verified = Verification::timed(enforced.verified, seconds);
        // Unmatched non-job traffic goes to git's upstream, the fallback for every family.
        let family = enforced.request.as_ref().map(|r| r.family);
        let upstream = &self.upstreams[family.unwrap_or(Family::Git)];
        let plan = match self.guarded(&parts, &enforced, upstream, in_body) {
            Ok(plan) => plan,
            Err(refusal) => {
                let challenge = Challenge::for_request(&parts, enforced.request.as_ref(), self.registry.as_ref());
                return Err(Exit::new(refusal).challenge(challenge).after(enforced, verified).body(body));
            }
        };
        let held = match plan {
            Some(plan) => match self.hold(plan, &enforced, &parts.headers).await {
                Ok(held) => Some(held),
                Err(refusal) => return Err(Exit::new(refusal).after(enforced, verified).body(body)),
            },
            None => None,
        };
        let summary = enforced.verdict.summary();
        let ctx = ForwardContext {
            peer,
            request_id: &cx.id,
            identity: match &enforced.verdict {
                Verdict::Allow(claims, permit) => Some((claims.claims(), permit.scopes())),
                Verdict::WouldDeny(claims, _) => Some((claims.claims(), ScopeSet::EMPTY)),
                Verdict::Passthrough | Verdict::Refuse(..) => None,
            },
            upgrade: matches!(enforced.verdict, Verdict::Passthrough),
            credential: held.as_ref().and_then(|h| h.header.clone()),
        };
        match upstream.forward(parts, body, &ctx).await {
            Ok(mut response) => {
                let label = held.map(|Held { label, .. }| label);
                if matches!(label, Some(UpstreamCredential::Impersonation(_))) {
                    reject::mark_upstream_refusal(&mut response);
                }
                let outcome = Outcome { upstream_credential: label, ..Outcome::enforced(enforced, verified, summary) };
                Ok((response, outcome))
            }
            Err(e) => {
                // 502, 504 or 500; or the body was cut off at a credential past the inspected bytes.
                let refusal = match cut {
                    Some(cut) if cut.load(Ordering::Acquire) => Refusal::new(
                        Reason::CredentialInBody,
                        "a credential past the inspected bytes of the body: the body was cut off, the request not completed",
                    ),
                    _ => Refusal::from(e),
                };
                Err(Exit::new(refusal).after(enforced, verified).decided(summary))
            }
        }
    }

    /// What the decision alone does not settle: the core's refusal, an upgrade with a job credential,
    /// a credential in a body the upstream would receive; then the credential plan of an allowed job.
    fn guarded(
        &self,
        parts: &Parts,
        enforced: &Enforced,
        upstream: &Upstream,
        credential_in_body: bool,
    ) -> Result<Option<CredentialPlan>, Refusal> {
        let job = match &enforced.verdict {
            Verdict::Refuse(refusal, _) => return Err(refusal.clone()),
            Verdict::Allow(..) | Verdict::WouldDeny(..) => true,
            Verdict::Passthrough => false,
        };
        if job && wants_upgrade(&parts.headers) {
            let why = "a protocol upgrade with a job credential: what travels over it cannot be decided, so only non-job traffic is upgraded";
            return Err(Refusal::new(Reason::UpgradeRefused, why));
        }
        if credential_in_body && !upstream.passes_credentials() {
            let why = "a credential in the request body cannot be taken out before forwarding (credentials: strip or replace); send it in a header";
            return Err(Refusal::new(Reason::CredentialInBody, why));
        }
        CredentialPlan::choose(upstream, enforced)
    }
}
