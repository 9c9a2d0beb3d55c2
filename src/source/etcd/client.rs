//! Building an etcd client from the `etcd:` config. `Client::connect` is lazy (it never
//! proves reachability), so every call is bounded: keep-alive 2s/2s ends a watch on a
//! silent server, `request_timeout` bounds unary calls.

use crate::config::EtcdConfig;
use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use std::path::Path;
use std::time::Duration;

/// HTTP/2 pings every this long, even while idle, so that a dead member is noticed: not
/// more often than etcd allows (its `--grpc-keepalive-min-time`, 5 s by default; a client
/// that pings sooner is disconnected with "too many pings", which broke every idle watch).
const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// How long a ping may go unanswered before the connection is taken for dead.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("etcd.{field} {path}: cannot read: {source}")]
    ReadFile {
        field: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("etcd {endpoints}: {source}")]
    Connect {
        endpoints: String,
        #[source]
        source: etcd_client::Error,
    },
}

fn read(field: &'static str, path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::ReadFile {
        field,
        path: path.display().to_string(),
        source,
    })
}

/// Connect options for `config`: timeouts, keep-alive, auth and TLS.
pub fn options(config: &EtcdConfig) -> Result<ConnectOptions, ClientError> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(config.dial_timeout)
        .with_timeout(config.request_timeout)
        .with_keep_alive(KEEP_ALIVE, KEEP_ALIVE_TIMEOUT)
        .with_keep_alive_while_idle(true);
    if !config.username.is_empty() {
        let password = read("password_file", &config.password_file)?;
        let password = String::from_utf8_lossy(&password).trim_end().to_string();
        options = options.with_user(config.username.clone(), password);
    }
    if config.tls.is_enabled() {
        let mut tls = TlsOptions::new();
        if !config.tls.ca_file.as_os_str().is_empty() {
            tls = tls.ca_certificate(Certificate::from_pem(read(
                "tls.ca_file",
                &config.tls.ca_file,
            )?));
        }
        if !config.tls.cert_file.as_os_str().is_empty() {
            let cert = read("tls.cert_file", &config.tls.cert_file)?;
            let key = read("tls.key_file", &config.tls.key_file)?;
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        options = options.with_tls(tls);
    }
    Ok(options)
}

/// A (lazily connecting) client for `config`.
pub async fn connect(config: &EtcdConfig) -> Result<Client, ClientError> {
    let options = options(config)?;
    Client::connect(&config.endpoints, Some(options))
        .await
        .map_err(|source| ClientError::Connect {
            endpoints: config.endpoints.join(","),
            source,
        })
}
