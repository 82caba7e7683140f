//! A refusal: the reason id and one human line (never token bytes). Every stage's error converts into
//! one with `From`, so the reason for an error is chosen in exactly one place; `reject` alone turns a
//! refusal into a status, a challenge and a body. No HTTP type here: the decision core builds these.

use std::borrow::Cow;

use crate::classify::{Classified, Unmatched};
use crate::policy::Denial;
use crate::reason::Reason;
use crate::token::claims::Claims;
use crate::token::extract::ExtractError;
use crate::token::verify::VerifyError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    reason: Reason,
    pub message: Cow<'static, str>,
}

impl Refusal {
    /// A refusal for `reason`; an allow reason becomes `internal_error` (fail closed, and visibly).
    pub fn new(reason: Reason, message: impl Into<Cow<'static, str>>) -> Refusal {
        let reason = if reason.refuses() { reason } else { Reason::InternalError };
        Refusal { reason, message: message.into() }
    }

    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// The policy's denial of `request` for the job behind `claims`.
    pub fn denied(denial: &Denial, claims: &Claims, request: &Classified) -> Refusal {
        Refusal::new(
            denial.reason,
            format!("jobs of {} may not use {} on {}", claims.project_path, denial.needed, request.target),
        )
    }
}

impl From<Unmatched> for Refusal {
    fn from(unmatched: Unmatched) -> Refusal {
        Refusal::new(Reason::UnmatchedRequest, unmatched.why)
    }
}

impl From<ExtractError> for Refusal {
    fn from(e: ExtractError) -> Refusal {
        let reason = match e {
            ExtractError::Conflicting => Reason::ConflictingCredentials,
            ExtractError::Malformed(_) => Reason::BadRequest,
        };
        Refusal::new(reason, e.to_string())
    }
}

impl From<VerifyError> for Refusal {
    fn from(e: VerifyError) -> Refusal {
        Refusal::new(e.reason(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_never_carries_an_allow_reason() {
        for reason in Reason::ALL {
            let refusal = Refusal::new(reason, "x");
            assert!(refusal.reason().refuses(), "{reason}");
            assert_eq!(refusal.reason() == reason, reason.refuses(), "{reason}");
        }
    }
}
