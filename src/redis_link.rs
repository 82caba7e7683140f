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

impl RedisLink {
    /// # Errors
    /// A URL that is not Redis's, or an unreadable password file.
    pub fn open(config: &RedisConfig) -> Result<RedisLink, String> {
        let mut info = config.url.as_str().into_connection_info().map_err(|e| format!("revocations.redis.url {:?}: {e}", config.url))?;
        if let Some(file) = &config.password_file {
            let password = std::fs::read_to_string(file).map_err(|e| format!("revocations.redis.password_file {}: {e}", file.display()))?;
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
    tokio::time::timeout(TIMEOUT, future).await.unwrap_or_else(|_| Err(redis::RedisError::from((redis::ErrorKind::IoError, "timed out"))))
}
