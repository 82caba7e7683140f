//! The scope policy: YAML documents (`model`), loaded and indexed from a folder (`load`), and the pure
//! decision function (`decide`). Scopes and roles live in `crate::scope`.

pub mod decide;
pub mod load;
pub mod model;

pub use decide::{decide, Decision, Denial, Permit};
pub use load::{Policy, PolicyError};
