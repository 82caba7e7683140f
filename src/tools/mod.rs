//! Operator tools (`jobgate <subcommand>`), never on the request path: `suggest` turns audit lines into allowlist entries, `import` turns GitLab's allowlists into
//! policy, `generate` makes certificates and keys, `demo` runs everything locally.

pub mod demo;
pub mod generate;
pub mod import;
pub mod suggest;
