//! Certificates: where the edge's TLS identity comes from.
//!
//! [`CertSource`] is the seam the ACME and custom-domain work will implement later. Today:
//! - [`LocalCa`] (`--tls local-ca`): a CA generated once in `<data-dir>/tls/` (users trust
//!   `ca.pem`) issuing, at every start, one certificate for the base domain, `*.<base-domain>`,
//!   `localhost` and the loopback addresses;
//! - [`files`] (`--tls files`): an operator certificate chain and key in PEM.

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why the edge has no certificate.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read or write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
    #[error("{path} holds no usable {what}")]
    Parse { path: PathBuf, what: &'static str },
    #[error("the certificate and key are not usable by TLS: {0}")]
    Rustls(String),
}

/// Picks the certificate for a TLS handshake.
pub trait CertSource: Send + Sync + std::fmt::Debug + 'static {
    /// The certificate for this SNI name (None when the client sent none).
    fn cert_for(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>>;
}

/// One certificate for every name.
#[derive(Debug)]
pub struct Single(pub Arc<CertifiedKey>);

impl CertSource for Single {
    fn cert_for(&self, _sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

#[derive(Debug)]
struct Resolver(Arc<dyn CertSource>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.cert_for(hello.server_name())
    }
}

/// The rustls server configuration of the edge: HTTP/2 and HTTP/1.1 by ALPN; sessions resume
/// with stateless tickets (TLS 1.3; a cache of session IDs for TLS 1.2); AES-128-GCM with
/// SHA-256 is chosen whenever the client offers it (every TLS 1.3 client must), because SHA-384
/// has no hardware path in *ring* and cost ~8% of a handshake where SHA-256 has one (SHA-NI).
pub fn server_config(source: Arc<dyn CertSource>) -> Arc<rustls::ServerConfig> {
    use rustls::crypto::ring::cipher_suite as cs;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ];
    let provider = Arc::new(provider);
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|_| {
            // The ring provider supports the default versions; this cannot fail.
            rustls::ServerConfig::builder()
        })
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver(source)));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    cfg.ignore_client_order = true;
    match rustls::crypto::ring::Ticketer::new() {
        Ok(t) => cfg.ticketer = t,
        Err(e) => tracing::warn!(error = %e, "TLS session tickets off"),
    }
    cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
    Arc::new(cfg)
}

fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider)
        .map(Arc::new)
        .map_err(|e| TlsError::Rustls(e.to_string()))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The local CA of one-machine mode.
#[derive(Debug)]
pub struct LocalCa {
    /// `ca.pem`, for users to trust.
    pub ca_cert: PathBuf,
    /// The edge's certificate, issued at start.
    pub leaf: Arc<CertifiedKey>,
}

const CA_NAME: &str = "Rigbox local CA";

fn ca_params() -> Result<rcgen::CertificateParams, TlsError> {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    p.distinguished_name
        .push(rcgen::DnType::CommonName, CA_NAME);
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(3650);
    Ok(p)
}

impl LocalCa {
    /// Loads the CA from `dir` (creating it on first use, files 0600 in a 0700 directory) and
    /// issues the edge's certificate for `base_domain`.
    pub fn load_or_create(dir: &Path, base_domain: &str) -> Result<Self, TlsError> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
        let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
        let gen = |e: rcgen::Error| TlsError::Generate(e.to_string());
        let ca_key = if key_path.exists() && cert_path.exists() {
            let pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
            rcgen::KeyPair::from_pem(&pem).map_err(|_| TlsError::Parse {
                path: key_path.clone(),
                what: "private key",
            })?
        } else {
            let key = rcgen::KeyPair::generate().map_err(gen)?;
            let cert = ca_params()?.self_signed(&key).map_err(gen)?;
            let write = |path: &Path, text: String, mode: u32| -> Result<(), TlsError> {
                std::fs::write(path, text).map_err(io(path))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                    .map_err(io(path))
            };
            write(&key_path, key.serialize_pem(), 0o600)?;
            write(&cert_path, cert.pem(), 0o644)?;
            key
        };
        // The issuer is rebuilt from the same name and key each start, so certificates it signs
        // chain to the stored `ca.pem`.
        let issuer = rcgen::Issuer::new(ca_params()?, ca_key);
        let mut leaf = rcgen::CertificateParams::new(vec![
            base_domain.to_owned(),
            format!("*.{base_domain}"),
            "localhost".to_owned(),
        ])
        .map_err(gen)?;
        leaf.subject_alt_names
            .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
        leaf.subject_alt_names.push(rcgen::SanType::IpAddress(
            std::net::Ipv6Addr::LOCALHOST.into(),
        ));
        leaf.distinguished_name
            .push(rcgen::DnType::CommonName, base_domain);
        leaf.use_authority_key_identifier_extension = true;
        leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let now = time::OffsetDateTime::now_utc();
        leaf.not_before = now - time::Duration::days(1);
        leaf.not_after = now + time::Duration::days(397);
        let leaf_key = rcgen::KeyPair::generate().map_err(gen)?;
        let cert = leaf.signed_by(&leaf_key, &issuer).map_err(gen)?;
        let chain = vec![cert.der().clone()];
        let key = PrivateKeyDer::try_from(leaf_key.serialize_der())
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        Ok(Self {
            ca_cert: cert_path,
            leaf: certified(chain, key)?,
        })
    }
}

/// `--tls files`: a PEM certificate chain and its PEM private key.
pub fn files(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|_| TlsError::Parse {
            path: cert.to_path_buf(),
            what: "certificate",
        })?
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::Parse {
            path: cert.to_path_buf(),
            what: "certificate",
        })?;
    if chain.is_empty() {
        return Err(TlsError::Parse {
            path: cert.to_path_buf(),
            what: "certificate",
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|_| TlsError::Parse {
        path: key.to_path_buf(),
        what: "private key",
    })?;
    certified(chain, key)
}
