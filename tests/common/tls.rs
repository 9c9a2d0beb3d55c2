//! TLS for tests: a throwaway CA with a server certificate for 127.0.0.1 (rcgen), and a
//! TLS-terminating TCP proxy (tokio-rustls) for servers that cannot speak TLS themselves.

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_rustls::rustls;

/// PEM files of a test CA and a server certificate it signed (for `localhost` and
/// `127.0.0.1`).
pub struct TestPki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// Signs client certificates ([`TestPki::client_cert`]).
    issuer: Issuer<'static, KeyPair>,
    dir: PathBuf,
    name: String,
}

impl TestPki {
    /// Writes `NAME-ca.pem`, `NAME-server.pem` and `NAME-server.key` into `dir`.
    pub fn new(dir: &Path, name: &str) -> TestPki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("logcatch test CA {name}"),
        );
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let server_params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();

        let pki = TestPki {
            ca: dir.join(format!("{name}-ca.pem")),
            server_cert: dir.join(format!("{name}-server.pem")),
            server_key: dir.join(format!("{name}-server.key")),
            issuer,
            dir: dir.to_path_buf(),
            name: name.to_string(),
        };
        std::fs::write(&pki.ca, ca_cert.pem()).unwrap();
        std::fs::write(&pki.server_cert, server_cert.pem()).unwrap();
        std::fs::write(&pki.server_key, server_key.serialize_pem()).unwrap();
        pki
    }

    /// A new client certificate (common name `client`) and its key, signed by this CA,
    /// written to `NAME-client.pem` / `NAME-client.key` (replacing an earlier one, as a
    /// rotation does). `valid_for`: it expires that long from now (default: years).
    pub fn client_cert(&self, client: &str, valid_for: Option<Duration>) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, client);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        if let Some(valid_for) = valid_for {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            let epoch = rcgen::date_time_ymd(1970, 1, 1);
            params.not_before = epoch + (now - Duration::from_secs(60));
            params.not_after = epoch + (now + valid_for);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let paths = (
            self.dir.join(format!("{}-{client}.pem", self.name)),
            self.dir.join(format!("{}-{client}.key", self.name)),
        );
        // Written aside and renamed, as a secret mount swaps its files.
        for (path, pem) in [(&paths.0, cert.pem()), (&paths.1, key.serialize_pem())] {
            let temp = path.with_extension("new");
            std::fs::write(&temp, pem).unwrap();
            std::fs::rename(&temp, path).unwrap();
        }
        paths
    }

    fn server_config(&self) -> rustls::ServerConfig {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_file_iter(&self.server_cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&self.server_key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap()
    }

    /// A client config trusting this CA (for test clients reading back through TLS).
    pub fn client_config(&self) -> rustls::ClientConfig {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::CertificateDer;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&self.ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth()
    }
}

/// Listens with TLS on `port` and forwards every connection in plain TCP to `upstream`.
/// Stopped (with its connections) on drop.
pub struct TlsProxy {
    _runtime: tokio::runtime::Runtime,
    pub port: u16,
    /// TLS handshakes that failed (e.g. a client that does not trust the CA).
    pub failed_handshakes: Arc<std::sync::atomic::AtomicUsize>,
}

impl TlsProxy {
    pub fn start(pki: &TestPki, port: u16, upstream: SocketAddr) -> TlsProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(pki.server_config()));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
            .unwrap();
        let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let failed_handshakes = failed.clone();
        runtime.spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (acceptor, failed) = (acceptor.clone(), failed.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(socket).await else {
                        failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return;
                    };
                    let Ok(mut plain) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = plain.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        TlsProxy {
            _runtime: runtime,
            port,
            failed_handshakes,
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}
