//! Building blocks the layers share instead of copies: a bounded map whose entries expire
//! ([`Expiring`], pure: the caller says what time it is) and single flight per key
//! ([`flight::SingleFlight`], async: the core never names it).

mod expiring;
pub mod flight;

pub use expiring::Expiring;
