//! Process infrastructure the edge and the app share: metrics (handles resolved at start), the audit
//! writer, TLS configuration and certificates, the Redis link between replicas, and the decision log
//! the admin page reads.

pub mod audit;

pub mod metrics;
pub mod redis_link;
pub mod tls;
