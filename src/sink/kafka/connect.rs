//! Building the rskafka client from the config: brokers, client id, a bounded retry
//! deadline per request, TLS (rustls) and SASL.

use crate::config::kafka::{KafkaConfig, TlsConfig};
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use rskafka::BackoffConfig;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_util::task::AbortOnDropHandle;

/// The runtime Kafka's connections live on, and the sender tasks that write requests to
/// them: a thread of its own, so that a request's bytes go out as the socket takes them
/// and its answer is read as it arrives, rather than when a worker busy reading files and
/// encoding gets to them. One thread serves every partition: the work left on it is the
/// kernel's copy into the sockets (and TLS). Measured in BENCHMARKS.md ("requests on a
/// thread of their own").
pub fn network() -> &'static tokio::runtime::Handle {
    static NETWORK: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    NETWORK
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("kafka-network")
                .enable_all()
                .build()
                .expect("a runtime for Kafka connections")
        })
        .handle()
}

/// Connects once, on the `network` runtime (rskafka drives each connection from a task
/// spawned where it was made; the partition clients connect from the sender tasks, which
/// run there too). The deadline makes rskafka give up on a request after
/// `request_timeout` instead of retrying forever; the sink retries above it. The outer
/// bound is twice that, so that rskafka's own error (which names the cause: a refused
/// connection, an untrusted certificate, failed SASL) normally comes first, and only a
/// hanging attempt ends in the bare timeout.
pub async fn connect(config: &KafkaConfig) -> Result<Client, String> {
    let config = config.clone();
    let connecting = network().spawn(async move { connect_here(&config).await });
    AbortOnDropHandle::new(connecting)
        .await
        .unwrap_or_else(|e| Err(format!("connecting to kafka: {e}")))
}

async fn connect_here(config: &KafkaConfig) -> Result<Client, String> {
    let mut builder = ClientBuilder::new(config.brokers.clone())
        .client_id(config.client_id.as_str())
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
    match tokio::time::timeout(config.request_timeout * 2, connecting).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(format!(
            "cannot connect to {}: {e}",
            config.brokers.join(",")
        )),
        Err(_) => Err(format!(
            "cannot connect to {} within {:?}",
            config.brokers.join(","),
            config.request_timeout * 2
        )),
    }
}

fn sasl_config(config: &KafkaConfig) -> Result<Option<SaslConfig>, String> {
    let sasl = &config.sasl;
    if sasl.mechanism.is_empty() {
        return Ok(None);
    }
    let password = std::fs::read_to_string(&sasl.password_file).map_err(|e| {
        format!(
            "sink.kafka.sasl.password_file {}: {e}",
            sasl.password_file.display()
        )
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

fn tls_config(tls: &TlsConfig) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let field = |name: &str, path: &std::path::Path, e: &dyn std::fmt::Display| {
        format!("sink.kafka.tls.{name} {}: {e}", path.display())
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&tls.ca_file)
        .map_err(|e| field("ca_file", &tls.ca_file, &e))?
    {
        let cert = cert.map_err(|e| field("ca_file", &tls.ca_file, &e))?;
        roots
            .add(cert)
            .map_err(|e| field("ca_file", &tls.ca_file, &e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("sink.kafka.tls: {e}"))?
        .with_root_certificates(roots);
    if tls.cert_file.as_os_str().is_empty() {
        return Ok(builder.with_no_client_auth());
    }
    let certs = CertificateDer::pem_file_iter(&tls.cert_file)
        .map_err(|e| field("cert_file", &tls.cert_file, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| field("cert_file", &tls.cert_file, &e))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key_file)
        .map_err(|e| field("key_file", &tls.key_file, &e))?;
    builder
        .with_client_auth_cert(certs, key)
        .map_err(|e| field("cert_file", &tls.cert_file, &e))
}
