//! Operator tools (`jobgate <subcommand>`), never on the request path: `suggest` turns audit lines
//! (`audit_lines`) into allowlist entries, `import` turns GitLab's allowlists into policy,
//! `generate` and `mint` make certificates, keys and tokens, `demo` runs everything locally.

pub mod audit_lines;
pub mod demo;
pub mod generate;
pub mod import;
pub mod mint;
pub mod suggest;
