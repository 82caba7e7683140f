//! The one Redis client jobgate keeps (`revocations.redis`): a lazily made, shared multiplexed
//! connection, dropped on any error so the next command reconnects, and every step bounded by
//! [`TIMEOUT`]. Revocations (`revoke::shared`) and GitLab's answers (`gitlab`) go through it; the
//! request path never waits on it for a token it already knows.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo, RedisResult};

use crate::config::RedisConfig;

/// Connecting, each command, each ping.
pub const TIMEOUT: Duration = Duration::from_secs(2);

pub struct RedisLink {
    client: Client,
    /// Keys are named `<prefix>:…`.
    pub prefix: String,
    writer: tokio::sync::Mutex<Option<MultiplexedConnection>>,
}

/// HMAC-SHA-256 under the replicas' shared secret: what one replica puts in Redis for the others
/// to believe carries a tag only a replica can make.
pub struct Seal(ring::hmac::Key);

impl Seal {
    /// # Errors
    /// An unreadable file, or a secret under 32 bytes.
    pub fn load(file: &std::path::Path) -> Result<Seal, String> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("revocations.redis.answers_key_file {}: {e}", file.display()))?;
        let secret = text.trim();
        if secret.len() < 32 {
            return Err(format!("revocations.redis.answers_key_file {}: at least 32 bytes of secret", file.display()));
        }
        Ok(Seal(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes())))
    }

    /// `value` with its tag over `key` and `value` in front.
    pub fn seal(&self, key: &str, value: &[u8]) -> Vec<u8> {
        let tag = ring::hmac::sign(&self.0, &[key.as_bytes(), b"\0", value].concat());
        [tag.as_ref(), value].concat()
    }

    /// The value, when its tag is this secret's for `key`.
    pub fn open<'a>(&self, key: &str, sealed: &'a [u8]) -> Option<&'a [u8]> {
        let (tag, value) = sealed.split_at_checked(32)?;
        ring::hmac::verify(&self.0, &[key.as_bytes(), b"\0", value].concat(), tag).ok()?;
        Some(value)
    }
}

impl RedisLink {
    /// # Errors
    /// A URL that is not Redis's, or an unreadable password file.
    pub fn open(config: &RedisConfig) -> Result<RedisLink, String> {
        let mut info = config
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| format!("revocations.redis.url {:?}: {e}", config.url))?;
        if let Some(file) = &config.password_file {
            let password = std::fs::read_to_string(file)
                .map_err(|e| format!("revocations.redis.password_file {}: {e}", file.display()))?;
            info.redis.password = Some(password.trim().to_owned());
        }
        let client = Client::open(info).map_err(|e| format!("revocations.redis.url {:?}: {e}", config.url))?;
        Ok(RedisLink { client, prefix: config.key_prefix.clone(), writer: tokio::sync::Mutex::new(None) })
    }

    /// A connection of its own for a subscription.
    pub async fn pubsub(&self) -> RedisResult<redis::aio::PubSub> {
        within(self.client.get_async_pubsub()).await
    }

    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> RedisResult<T> {
        let mut connection = self.connection().await?;
        let result = within(cmd.query_async(&mut connection)).await;
        self.forget_on_error(&result).await;
        result
    }

    pub async fn pipe(&self, pipe: &redis::Pipeline) -> RedisResult<()> {
        let mut connection = self.connection().await?;
        let result = within(pipe.query_async::<()>(&mut connection)).await;
        self.forget_on_error(&result).await;
        result
    }

    /// The shared connection, made when there is none (a failed command drops it).
    async fn connection(&self) -> RedisResult<MultiplexedConnection> {
        let mut writer = self.writer.lock().await;
        if let Some(connection) = writer.as_ref() {
            return Ok(connection.clone());
        }
        let config = AsyncConnectionConfig::new().set_connection_timeout(TIMEOUT).set_response_timeout(TIMEOUT);
        let connection = within(self.client.get_multiplexed_async_connection_with_config(&config)).await?;
        *writer = Some(connection.clone());
        Ok(connection)
    }

    async fn forget_on_error<T>(&self, result: &RedisResult<T>) {
        if result.is_err() {
            *self.writer.lock().await = None;
        }
    }
}

/// A Redis step that gives up after [`TIMEOUT`].
pub async fn within<T>(future: impl std::future::Future<Output = RedisResult<T>>) -> RedisResult<T> {
    tokio::time::timeout(TIMEOUT, future)
        .await
        .unwrap_or_else(|_| Err(redis::RedisError::from((redis::ErrorKind::IoError, "timed out"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_under_its_key_and_secret() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (one, two) = (dir.path().join("one"), dir.path().join("two"));
        std::fs::write(&one, "0123456789abcdef0123456789abcdef").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&two, "fedcba9876543210fedcba9876543210").unwrap_or_else(|e| panic!("{e}"));
        let (a, b) =
            (Seal::load(&one).unwrap_or_else(|e| panic!("{e}")), Seal::load(&two).unwrap_or_else(|e| panic!("{e}")));
        let sealed = a.seal("k", b"value");
        assert_eq!(a.open("k", &sealed), Some(&b"value"[..]));
        assert_eq!(a.open("other", &sealed), None, "bound to its key");
        assert_eq!(b.open("k", &sealed), None, "another secret");
        let mut forged = sealed.clone();
        if let Some(last) = forged.last_mut() {
            *last ^= 1;
        }
        assert_eq!(a.open("k", &forged), None);
        assert_eq!(a.open("k", b"short"), None);
        std::fs::write(&two, "short").unwrap_or_else(|e| panic!("{e}"));
        assert!(Seal::load(&two).is_err());
    }
}
