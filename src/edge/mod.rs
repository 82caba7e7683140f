//! The request edge: everything between a parsed HTTP request and the decision core, and between
//! the decision and the upstream. `gateway` routes and records; `proxy` is the proxy path's phases;
//! `drive` meets the core's needs (for the proxy path and both realms); `realms` the registry token
//! realms and passed-through hosts; `peek` reads what GitLab would read from a body; `upstream`
//! forwards (and its `credential` plans what credential goes); `exit`, `reject` and `record` answer
//! and keep the record. The edge never imports the process (`app`) or the operator tools (`tools`).

pub mod body;
pub mod body_credentials;
mod body_scan;
mod drive;
pub mod exit;
pub mod gateway;
mod peek;
mod proxy;
mod realms;
pub mod record;
pub mod reject;
pub mod upstream;

pub use gateway::{BodyPeek, Gateway, GatewayParts};
