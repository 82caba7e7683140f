//! The process: `preflight` loads and checks everything `serve` needs (and `check` validates),
//! `serve` runs the listeners and the background work, `reload` swaps configuration in (keeping the
//! last good), `watch` notices changed files, `admin` serves the admin listener.

pub mod admin;
pub mod preflight;
pub mod reload;
pub mod serve;
pub mod view;
pub mod watch;
