//! jobgate's own container-registry tokens (`token`: issue, verify, what `access` grants) and the
//! realm that hands them out (`realm`: `GET /jwt/auth`), deciding each requested action with the
//! pipeline's own functions.

pub mod realm;
pub mod token;

pub use token::RegistryTokens;
