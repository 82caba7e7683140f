//! What the decision core cannot know by itself. Instead of refusing, `enforce` and the realms answer
//! [`Step::Need`]: the edge's one driver meets the need (a key refetch, a question to GitLab, a peek at
//! a body), records what it learned in [`Known`] or in the caches the core reads, and runs the core
//! again, bounded in rounds. A caller that asks nobody (`explain`) turns a need into the refusal it
//! would come to ([`Need::unmet`]).

use crate::classify::lfs::BatchOperation;
use crate::classify::Classified;
use crate::reason::Reason;
use crate::refusal::Refusal;
use crate::token::gitlab::RoleKey;
use crate::token::verify::VerifiedClaims;

/// One thing the core needs before it can decide.
pub enum Need {
    /// The issuer (by index) whose key set lacks the token's `kid`: worth one refetch per request.
    Keys { issuer: usize },
    /// Whose GitLab job token is this? GitLab's answer lands in the cache `enforce` reads.
    JobToken(String),
    /// The user's role in a project other than their job's, from GitLab.
    Role(RoleKey),
    /// A verified job's LFS batch body: which operation it asks for. The request and the job go on
    /// the record if the body cannot be read.
    LfsBatch { request: Classified, claims: VerifiedClaims },
}

impl std::fmt::Debug for Need {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Need::Keys { issuer } => write!(f, "Need::Keys({issuer})"),
            // A token is never printed.
            Need::JobToken(_) => f.write_str("Need::JobToken(…)"),
            Need::Role(key) => write!(f, "Need::Role({key:?})"),
            Need::LfsBatch { .. } => f.write_str("Need::LfsBatch"),
        }
    }
}

impl Need {
    /// The refusal this need comes to when nobody meets it.
    pub fn unmet(&self) -> Refusal {
        match self {
            Need::Keys { .. } => {
                Refusal::new(Reason::UnknownKid, "the issuer's key set has no key with the token's kid")
            }
            Need::JobToken(_) => Refusal::new(Reason::GitlabUnavailable, "this job token must be looked up at GitLab"),
            Need::Role(_) => {
                Refusal::new(Reason::GitlabUnavailable, "the user's role in the target must be looked up at GitLab")
            }
            Need::LfsBatch { .. } => Refusal::new(Reason::BadRequest, "the LFS batch body was not read"),
        }
    }
}

/// The core's answer: decided, or what it needs first.
#[derive(Debug)]
pub enum Step<T> {
    Decided(T),
    Need(Need),
}

impl<T> Step<T> {
    /// The decision, if there is one.
    pub fn decided(self) -> Option<T> {
        match self {
            Step::Decided(done) => Some(done),
            Step::Need(_) => None,
        }
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Step<U> {
        match self {
            Step::Decided(done) => Step::Decided(f(done)),
            Step::Need(need) => Step::Need(need),
        }
    }
}

/// The decided value of a [`Step`], or return its need from the enclosing function (`?` for needs).
macro_rules! decided {
    ($step:expr) => {
        match $step {
            $crate::enforce::Step::Decided(done) => done,
            $crate::enforce::Step::Need(need) => return $crate::enforce::Step::Need(need),
        }
    };
}
pub(crate) use decided;

/// What the driver has learned for this request so far.
#[derive(Debug, Default, Clone)]
pub struct Known {
    /// The operation an LFS batch body asks for, once read.
    pub batch: Option<BatchOperation>,
    /// Issuers whose key set was refetched for this request: not asked for again.
    pub refetched: Vec<usize>,
}

impl Known {
    /// What a caller that asks nobody knows: an LFS batch of `batch` (`None`: an upload, as a batch
    /// counts before its body is read).
    pub fn offline(batch: Option<BatchOperation>) -> Known {
        Known { batch: Some(batch.unwrap_or(BatchOperation(crate::classify::Action::Write))), refetched: Vec::new() }
    }
}
