//! Building an etcd client from the `etcd:` config. `Client::connect` is lazy (it never
//! proves reachability), so every call is bounded: keep-alive 10s/5s ends a watch on a
//! silent server, the leader is required (a member without one cancels its watches),
//! `request_timeout` bounds unary calls. A client holds the credentials it was built with
//! (password, certificate): [`credentials_digest`] tells when the files changed, and
//! [`is_refusal`] when etcd refused them, so that the caller builds a new one.

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

impl ClientError {
    /// The credentials could not be read or etcd refused them: no other endpoint helps.
    pub fn is_refusal(&self) -> bool {
        match self {
            ClientError::ReadFile { .. } => true,
            ClientError::Connect { source, .. } => is_refusal(source),
        }
    }
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
        .with_keep_alive_while_idle(true)
        // A member cut off from its cluster's leader answers no linearizable read, and
        // its watches would stay open delivering nothing: with the leader required
        // (gRPC metadata `hasleader: true`) it refuses such requests and cancels such
        // watches ("no leader"), so the watcher re-lists through another member.
        .with_require_leader(true)
        // etcd's simple tokens expire when unused for `--auth-token-ttl` (5 min by default)
        // and when the user's password changes: a request refused with "invalid auth
        // token" logs in again and is retried (a new password is read by a new client).
        .with_auto_token_refresh(true);
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

/// A digest of the credential files' contents (password, CA, certificate, key): a client
/// built before the digest changed uses credentials that are no longer the configured ones.
/// A file that cannot be read counts by its error, so that it reading again changes it.
pub fn credentials_digest(config: &EtcdConfig) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let tls = &config.tls;
    for path in [
        &config.password_file,
        &tls.ca_file,
        &tls.cert_file,
        &tls.key_file,
    ] {
        if path.as_os_str().is_empty() {
            hasher.update(b"-");
            continue;
        }
        match std::fs::read(path) {
            Ok(bytes) => {
                hasher.update(&(bytes.len() as u64).to_le_bytes());
                hasher.update(&bytes);
            }
            Err(e) => hasher.update(format!("error {:?}", e.kind()).as_bytes()),
        }
    }
    hasher.digest()
}

/// etcd refused the credentials: a wrong password, an expired or unknown token, or a user
/// without permission on the key. Retrying with the same client cannot help; a new one
/// reads the files and logs in again.
pub fn is_refusal(error: &etcd_client::Error) -> bool {
    let refused = match error {
        etcd_client::Error::GRpcStatus(status) => {
            status_is_refusal(status.code(), status.message())
        }
        _ => false,
    };
    // A TLS alert from the server about the client certificate (it shows only in the
    // transport error's text).
    refused
        || CERTIFICATE_ALERTS
            .iter()
            .any(|a| error.to_string().contains(a))
}

/// etcd answered while electing a leader ("leader changed"): every member does, so
/// another one would not help.
pub fn is_election(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(status)
        if status.code() == tonic::Code::Unavailable && status.message().contains("leader changed"))
}

/// The member `error` came from failed (it did not answer, broke the connection, has no
/// leader): another member may serve. Not a refusal (every member refuses alike), nor an
/// election.
pub fn is_member_failure(error: &etcd_client::Error) -> bool {
    !is_refusal(error) && !is_election(error)
}

const CERTIFICATE_ALERTS: [&str; 5] = [
    "received fatal alert: BadCertificate",
    "received fatal alert: CertificateExpired",
    "received fatal alert: CertificateRevoked",
    "received fatal alert: CertificateUnknown",
    "received fatal alert: UnknownCA",
];

fn status_is_refusal(code: tonic::Code, message: &str) -> bool {
    use tonic::Code;
    match code {
        Code::Unauthenticated | Code::PermissionDenied => true,
        // etcd answers a wrong password with InvalidArgument; services built on its
        // in-process client lose the code of an invalid token (Unknown).
        Code::InvalidArgument | Code::Unknown => reason_is_refusal(message),
        _ => false,
    }
}

/// A watch canceled with this reason (etcd cancels a watch whose token it does not accept
/// with "permission denied" instead of failing the call) was refused for its credentials.
pub fn reason_is_refusal(reason: &str) -> bool {
    [
        "authentication failed",
        "invalid auth token",
        "permission denied",
    ]
    .iter()
    .any(|r| reason.contains(r))
}

/// A (lazily connecting, unless it logs in) client for `config`'s settings that talks to
/// `endpoints` (all of `config.endpoints`, or one of them).
pub async fn connect(config: &EtcdConfig, endpoints: &[String]) -> Result<Client, ClientError> {
    let options = options(config)?;
    Client::connect(endpoints, Some(options))
        .await
        .map_err(|source| ClientError::Connect {
            endpoints: endpoints.join(","),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::{Code, Status};

    fn status(code: Code, message: &str) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(Status::new(code, message))
    }

    #[test]
    fn is_refusal_should_tell_refused_credentials_from_a_lost_server() {
        let refused = [
            status(Code::Unauthenticated, "etcdserver: invalid auth token"),
            status(Code::Unknown, "etcdserver: invalid auth token"),
            status(
                Code::InvalidArgument,
                "etcdserver: authentication failed, invalid user ID or password",
            ),
            status(Code::PermissionDenied, "etcdserver: permission denied"),
            status(
                Code::Unknown,
                "transport error: received fatal alert: BadCertificate",
            ),
        ];
        for error in &refused {
            assert!(is_refusal(error), "{error}");
        }
        let lost = [
            status(Code::Unavailable, "tcp connect error: Connection refused"),
            status(Code::Unknown, "h2 protocol error: error reading a body"),
            status(Code::Cancelled, "operation was canceled"),
            status(Code::InvalidArgument, "etcdserver: key is not provided"),
        ];
        for error in &lost {
            assert!(!is_refusal(error), "{error}");
        }
        assert!(reason_is_refusal("etcdserver: permission denied"));
        assert!(!reason_is_refusal(""));
    }

    #[test]
    fn is_election_should_tell_an_election_from_a_failed_member() {
        assert!(is_election(&status(
            Code::Unavailable,
            "etcdserver: leader changed"
        )));
        for failed in [
            status(Code::Unavailable, "tcp connect error: Connection refused"),
            status(Code::Unavailable, "etcdserver: no leader"),
            status(Code::Cancelled, "Timeout expired"),
        ] {
            assert!(!is_election(&failed), "{failed}");
        }
    }

    #[test]
    fn credentials_digest_should_follow_the_files_contents_not_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let password_file = dir.path().join("pass");
        std::fs::write(&password_file, "one\n").unwrap();
        let config = EtcdConfig {
            username: "u".into(),
            password_file: password_file.clone(),
            ..EtcdConfig::default()
        };
        let first = credentials_digest(&config);
        assert_eq!(credentials_digest(&config), first);
        std::fs::write(&password_file, "two\n").unwrap();
        let second = credentials_digest(&config);
        assert_ne!(second, first);
        std::fs::remove_file(&password_file).unwrap();
        assert_ne!(credentials_digest(&config), second, "a missing file counts");
    }
}
