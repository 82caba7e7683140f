//! Where a request leaves the pipeline without its upstream's answer: an [`Exit`] carries the
//! refusal and everything its response and its record need, and [`Gateway::exit`] is the one place
//! that turns it into both (the body's form by family, the challenge it carries, a bounded drain of
//! a request body still arriving).

use http::Response;

use super::body::Body;
use super::gateway::Gateway;
use super::peek::drain;
use super::record::{Outcome, RequestCx, Verification};
use super::reject::{self, Challenge};
use crate::classify::{Classified, Family};
use crate::enforce::{Enforced, Summary};
use crate::refusal::Refusal;
use crate::token::verify::VerifiedClaims;

/// A request refused (or failed upstream) on its way, with what is known of it.
pub struct Exit {
    pub refusal: Refusal,
    /// The family whose clients read the answer (its form).
    family: Option<Family>,
    /// What a 401 asks the client for.
    challenge: Challenge,
    request: Option<Classified>,
    claims: Option<VerifiedClaims>,
    verified: Option<Verification>,
    /// The decision, when one was made before the exit: an upstream failure keeps its `allow`.
    decided: Option<Summary>,
    /// A request body that may still be arriving: read (bounded) before answering.
    body: Option<Body>,
}

impl Exit {
    pub fn new(refusal: Refusal) -> Exit {
        Exit {
            refusal,
            family: None,
            challenge: Challenge::GitLab,
            request: None,
            claims: None,
            verified: None,
            decided: None,
            body: None,
        }
    }

    /// The family whose clients read the answer.
    pub fn family(self, family: Family) -> Exit {
        Exit { family: Some(family), ..self }
    }

    /// What a 401 asks for, when not GitLab's Basic challenge.
    pub fn challenge(self, challenge: Challenge) -> Exit {
        Exit { challenge, ..self }
    }

    /// The request as classified (and so its family).
    pub fn request(self, request: Classified) -> Exit {
        Exit { family: Some(request.family), request: Some(request), ..self }
    }

    /// The request as classified, unless the exit already says what it was.
    pub fn on(self, request: Option<Classified>) -> Exit {
        match (&self.request, request) {
            (None, Some(request)) => self.request(request),
            _ => self,
        }
    }

    /// The job, and how its credential was verified, for the record.
    pub fn claims(self, claims: Option<VerifiedClaims>, verified: Option<Verification>) -> Exit {
        Exit { claims, verified, ..self }
    }

    /// What `enforce` concluded goes on the record: its request (and family), the job, the verification.
    pub fn after(self, enforced: Enforced, verified: Option<Verification>) -> Exit {
        let family = enforced.request.as_ref().map(|r| r.family).or(self.family);
        let claims = enforced.verdict.claims().cloned();
        Exit { family, request: enforced.request, claims, verified, ..self }
    }

    /// The decision stands (recorded with the exit's reason): the upstream failed after it.
    pub fn decided(self, summary: Summary) -> Exit {
        Exit { decided: Some(Summary { reason: self.refusal.reason(), ..summary }), ..self }
    }

    /// Drain `body` before answering.
    pub fn body(self, body: Body) -> Exit {
        Exit { body: Some(body), ..self }
    }
}

impl From<Refusal> for Exit {
    fn from(refusal: Refusal) -> Exit {
        Exit::new(refusal)
    }
}

impl Gateway {
    /// The response and the record for `exit`.
    pub(super) async fn exit(&self, cx: &RequestCx, exit: Exit) -> (Response<Body>, Outcome) {
        if let Some(body) = exit.body {
            drain(body).await;
        }
        let response = reject::response(&exit.refusal, &cx.id, exit.family, &exit.challenge);
        let summary = exit.decided.unwrap_or_else(|| Summary::refused(&exit.refusal));
        let outcome = Outcome {
            request: exit.request,
            claims: exit.claims,
            summary,
            verified: exit.verified,
            upstream_credential: None,
        };
        (response, outcome)
    }
}
