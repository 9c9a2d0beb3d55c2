//! Building the rskafka client from the config: brokers, client id, a bounded retry
//! deadline per request, TLS (rustls) and SASL; the runtime its connections run on.

use super::retry::{classify, Class};
use crate::config::kafka::{KafkaConfig, TlsConfig};
use rskafka::client::error::Error as ClientError;
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use rskafka::BackoffConfig;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::{Handle, Runtime};
use tokio_util::task::AbortOnDropHandle;

/// The runtime Kafka's connections live on, and the sender tasks that write requests to
/// them: a thread of its own, so that a request's bytes go out as the socket takes them
/// and its answer is read as it arrives, rather than when a worker busy reading files and
/// encoding gets to them. One thread serves every partition: the work left on it is the
/// kernel's copy into the sockets (and TLS). Measured in BENCHMARKS.md ("requests on a
/// thread of their own").
///
/// `sink::build` starts it for the Kafka sink, which owns it; tests run the sink on
/// their own runtime instead ([`Network::current`]).
pub struct Network {
    handle: Handle,
    /// The runtime when this started it, shut down when dropped.
    runtime: Option<Runtime>,
}

impl Network {
    /// Starts the `kafka-network` thread and its runtime.
    pub fn start() -> std::io::Result<Network> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kafka-network")
            .enable_all()
            .build()?;
        Ok(Network {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }

    /// The runtime this is called on, with no thread of its own (tests, examples).
    pub fn current() -> Network {
        Network {
            handle: Handle::current(),
            runtime: None,
        }
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for Network {
    /// The sink is dropped inside the agent's runtime, where waiting for another
    /// runtime's tasks is not allowed (a plain drop would panic): its tasks are dropped
    /// without waiting. By then the sink is flushed or given up on: what they hold is
    /// connections and requests not acknowledged, whose lines are read again at the next
    /// start.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Why connecting to Kafka failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("sink.kafka.tls.{field} {}: {source}", path.display())]
    TlsFile {
        field: &'static str,
        path: PathBuf,
        #[source]
        source: TlsFileError,
    },
    #[error("sink.kafka.tls: {0}")]
    Tls(#[source] rustls::Error),
    #[error("sink.kafka.sasl.password_file {}: {source}", path.display())]
    PasswordFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to {brokers}: {source}")]
    Kafka {
        brokers: String,
        #[source]
        source: ClientError,
    },
    #[error("cannot connect to {brokers} within {after:?}")]
    Timeout { brokers: String, after: Duration },
    /// The connecting task did not finish (its runtime shut down).
    #[error("connecting to kafka: {0}")]
    Task(#[source] tokio::task::JoinError),
}

impl ConnectError {
    /// What this failure calls for (connecting retries every class: see `Class::Fatal`).
    pub fn class(&self) -> Class {
        match self {
            ConnectError::TlsFile { .. }
            | ConnectError::Tls(_)
            | ConnectError::PasswordFile { .. } => Class::Fatal,
            ConnectError::Kafka { source, .. } => classify(source),
            ConnectError::Timeout { .. } | ConnectError::Task(_) => Class::Retry,
        }
    }
}

/// What is wrong with a TLS file: it does not parse, or rustls refuses what it holds.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    #[error(transparent)]
    Pem(#[from] rustls::pki_types::pem::Error),
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
}

/// Connects once, on the `network` runtime ([`Network`]: rskafka drives each connection
/// from a task spawned where it was made; the partition clients connect from the sender
/// tasks, which run there too). The deadline makes rskafka give up on a request after
/// `request_timeout` instead of retrying forever; the sink retries above it. The outer
/// bound is twice that, so that rskafka's own error (which names the cause: a refused
/// connection, an untrusted certificate, failed SASL) normally comes first, and only a
/// hanging attempt ends in the bare timeout.
pub async fn connect(config: &KafkaConfig, network: &Handle) -> Result<Client, ConnectError> {
    let config = config.clone();
    let connecting = network.spawn(async move { connect_here(&config).await });
    AbortOnDropHandle::new(connecting)
        .await
        .unwrap_or_else(|e| Err(ConnectError::Task(e)))
}

async fn connect_here(config: &KafkaConfig) -> Result<Client, ConnectError> {
    let mut builder = ClientBuilder::new(config.brokers.clone())
        .client_id(config.client_id.as_str())
        // Not a retry policy of ours (that is `retry::Backoff`): rskafka retries within
        // one request (a lost connection, a moved leader) and this deadline bounds that,
        // after which its error comes back to be classified by `retry::classify`.
        .backoff_config(BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            base: 2.0,
            deadline: Some(config.request_timeout),
        });
    if config.tls.enabled() {
        builder = builder.tls_config(Arc::new(tls_config(&config.tls)?));
    }
    if let Some(sasl) = sasl_config(config)? {
        builder = builder.sasl_config(sasl);
    }
    let connecting = builder.build();
    let brokers = || config.brokers.join(",");
    match tokio::time::timeout(config.request_timeout * 2, connecting).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(source)) => Err(ConnectError::Kafka {
            brokers: brokers(),
            source,
        }),
        Err(_) => Err(ConnectError::Timeout {
            brokers: brokers(),
            after: config.request_timeout * 2,
        }),
    }
}

/// Reads the password file at every attempt: a fixed file heals without a restart.
fn sasl_config(config: &KafkaConfig) -> Result<Option<SaslConfig>, ConnectError> {
    let sasl = &config.sasl;
    if sasl.mechanism.is_empty() {
        return Ok(None);
    }
    let password = std::fs::read_to_string(&sasl.password_file).map_err(|source| {
        ConnectError::PasswordFile {
            path: sasl.password_file.clone(),
            source,
        }
    })?;
    let credentials = Credentials::new(
        sasl.username.clone(),
        password.trim_end_matches(['\n', '\r']).to_string(),
    );
    Ok(Some(match sasl.mechanism.as_str() {
        "PLAIN" => SaslConfig::Plain(credentials),
        "SCRAM-SHA-256" => SaslConfig::ScramSha256(credentials),
        _ => SaslConfig::ScramSha512(credentials),
    }))
}

fn tls_config(tls: &TlsConfig) -> Result<rustls::ClientConfig, ConnectError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let TlsConfig {
        ca_file,
        cert_file,
        key_file,
    } = tls;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(tls_file("ca_file", ca_file))? {
        let cert = cert.map_err(tls_file("ca_file", ca_file))?;
        roots.add(cert).map_err(tls_file("ca_file", ca_file))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ConnectError::Tls)?
        .with_root_certificates(roots);
    if cert_file.as_os_str().is_empty() {
        return Ok(builder.with_no_client_auth());
    }
    let certs = CertificateDer::pem_file_iter(cert_file)
        .map_err(tls_file("cert_file", cert_file))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(tls_file("cert_file", cert_file))?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(tls_file("key_file", key_file))?;
    builder
        .with_client_auth_cert(certs, key)
        .map_err(tls_file("cert_file", cert_file))
}

/// The error of the TLS file `field` (below `sink.kafka.tls`) at `path`.
fn tls_file<E: Into<TlsFileError>>(
    field: &'static str,
    path: &Path,
) -> impl FnOnce(E) -> ConnectError {
    let path = path.to_path_buf();
    move |source| ConnectError::TlsFile {
        field,
        path,
        source: source.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sinks_own_files_should_be_fatal_and_the_rest_retried() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let brokers = || "127.0.0.1:9092".to_string();
        let table = [
            (
                ConnectError::PasswordFile {
                    path: "/etc/kafka.pass".into(),
                    source: io(),
                },
                Class::Fatal,
            ),
            (
                ConnectError::TlsFile {
                    field: "ca_file",
                    path: "/etc/ca.pem".into(),
                    source: rustls::Error::General("bad".into()).into(),
                },
                Class::Fatal,
            ),
            (
                ConnectError::Kafka {
                    brokers: brokers(),
                    source: ClientError::Request(io().into()),
                },
                Class::Retry,
            ),
            (
                ConnectError::Timeout {
                    brokers: brokers(),
                    after: Duration::from_secs(60),
                },
                Class::Retry,
            ),
        ];
        for (error, class) in table {
            assert_eq!(error.class(), class, "{error}");
        }
    }

    #[tokio::test]
    async fn a_started_network_should_run_tasks_on_its_thread_and_drop_inside_a_runtime() {
        let network = Network::start().expect("a runtime");
        let thread = network
            .handle()
            .spawn(async { std::thread::current().name().map(str::to_string) })
            .await
            .expect("the task ran");
        assert_eq!(thread.as_deref(), Some("kafka-network"));
        // A runtime dropped the plain way inside another one panics.
        drop(network);
    }

    #[test]
    fn a_missing_password_file_should_be_named_with_its_field_and_cause() {
        let config = KafkaConfig {
            sasl: crate::config::kafka::SaslConfig {
                mechanism: "PLAIN".into(),
                username: "shipper".into(),
                password_file: "/nonexistent/kafka.pass".into(),
            },
            ..KafkaConfig::default()
        };
        let error = sasl_config(&config).expect_err("no such file");
        assert!(matches!(error, ConnectError::PasswordFile { .. }));
        assert_eq!(
            error.to_string(),
            "sink.kafka.sasl.password_file /nonexistent/kafka.pass: No such file or directory (os error 2)"
        );
    }
}
