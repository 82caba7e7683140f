//! The one driver of the decision core's needs, for the proxy path and both registry realms: run the
//! core, meet what it says it needs (a key refetch, a question to GitLab, a peek at the LFS batch
//! body), run it again. Each kind of need is met at most once per request (a GitLab answer the core
//! still cannot find — a full cache — is not asked again); a need that cannot be met ends the request
//! with the refusal it comes to.

use std::net::IpAddr;
use std::time::Instant;

use super::body::{self, Body};
use super::exit::Exit;
use super::gateway::Gateway;
use crate::classify::Family;
use crate::clock::unix_now;
use crate::enforce::{Known, Need, Step};
use crate::gitlab::GitLab;
use crate::reason::Reason;
use crate::refusal::Refusal;

impl Gateway {
    /// Runs `step` until it decides, meeting its needs in between. Returns the decision and how long
    /// its deciding round took (the verification time the record keeps; the core reads no clock).
    ///
    /// # Errors
    /// The refusal of a need that could not be met, or of a core that did not settle.
    pub(super) async fn drive<T>(
        &self,
        body: &mut Body,
        client: IpAddr,
        mut step: impl FnMut(&Known) -> Step<T>,
    ) -> Result<(T, f64), Exit> {
        let mut known = Known::default();
        let mut met = Vec::new();
        loop {
            let started = Instant::now();
            let need = match step(&known) {
                Step::Decided(done) => return Ok((done, started.elapsed().as_secs_f64())),
                Step::Need(need) => need,
            };
            let kind = std::mem::discriminant(&need);
            if met.contains(&kind) {
                return Err(Exit::new(need.unmet()));
            }
            met.push(kind);
            self.meet(need, &mut known, body, client).await?;
        }
    }

    /// Meets one need; `client` (the peer's address) is charged for a question about a token GitLab
    /// has not answered yet.
    async fn meet(&self, need: Need, known: &mut Known, body: &mut Body, client: IpAddr) -> Result<(), Exit> {
        match need {
            Need::Keys { issuer } => {
                // Refetched or not (its cooldown), the next round decides with the keys there are.
                if let Some(source) = self.key_sources.get(issuer) {
                    source.refetch_for_unknown_kid().await;
                }
                known.refetched.push(issuer);
            }
            Need::JobToken(token) => {
                self.gitlab_to_ask()?.resolve(&token, unix_now(), client).await.map_err(Refusal::from)?
            }
            Need::Role(key) => self.gitlab_to_ask()?.resolve_role(&key, unix_now()).await.map_err(Refusal::from)?,
            Need::LfsBatch { request, claims } => {
                let (peeked, operation) =
                    self.peek_lfs_batch(std::mem::replace(body, body::empty())).await.map_err(|refusal| {
                        Exit::new(refusal).family(Family::Lfs).request(request).claims(Some(claims), None)
                    })?;
                *body = peeked;
                known.batch = Some(operation);
            }
        }
        Ok(())
    }

    fn gitlab_to_ask(&self) -> Result<&GitLab, Refusal> {
        self.gitlab.as_ref().ok_or_else(|| Refusal::new(Reason::GitlabUnavailable, "no GitLab is configured to ask"))
    }
}
