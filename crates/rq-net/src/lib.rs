//! Serving and calling over the network, for both ports: the accept loop with its limits, and
//! TLS as rqlite configures it (server configurations whose certificate and key are reloaded
//! when their files change, client configurations for calls between nodes).
//!
//! Certificates and keys are PEM files. A CA file given for verification replaces the system's
//! roots; without one, the system's roots are used, as Go's `crypto/tls` does.

pub mod idle_poll;
mod serve;
mod sliced;
mod stream;
#[cfg(feature = "test-certs")]
pub mod testing;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme};

pub use rustls;
pub use serve::{ServeOptions, serve};
pub use stream::{MaybeTls, connect};
pub use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Why a TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{0} holds no PEM certificate")]
    NoCert(PathBuf),
    #[error("{path} holds no usable private key: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("certificate {cert} and key {key} do not go together: {reason}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("{0}")]
    Config(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read_err(path: &Path, e: impl fmt::Display) -> TlsError {
    TlsError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Every certificate in the PEM file at `path`.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_err(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_err(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCert(path.to_path_buf()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Key {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// The roots to verify peers with: the CA file's certificates, or the system's.
fn roots(ca: Option<&Path>) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    match ca {
        Some(path) => {
            for cert in load_certs(path)? {
                store
                    .add(cert)
                    .map_err(|e| TlsError::Config(format!("CA certificate in {}: {e}", path.display())))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = store.add(cert);
            }
        }
    }
    Ok(Arc::new(store))
}

/// A certificate and its key, as files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl KeyPair {
    fn load(&self, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, TlsError> {
        let certs = load_certs(&self.cert)?;
        let key = load_key(&self.key)?;
        CertifiedKey::from_der(certs, key, provider)
            .map(Arc::new)
            .map_err(|e| TlsError::Mismatch {
                cert: self.cert.clone(),
                key: self.key.clone(),
                reason: e.to_string(),
            })
    }

    /// The files' modification times.
    fn stamp(&self) -> (Option<SystemTime>, Option<SystemTime>) {
        let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        (mtime(&self.cert), mtime(&self.key))
    }
}

/// A certificate that is read again when its files change: each handshake looks at their
/// modification times. A new pair that does not load (a half-written file, a key that does not
/// match) leaves the old one in use and is logged; the next change is tried again.
#[derive(Debug)]
struct Reloading {
    files: KeyPair,
    provider: Arc<CryptoProvider>,
    state: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    stamp: (Option<SystemTime>, Option<SystemTime>),
    key: Arc<CertifiedKey>,
}

impl Reloading {
    fn new(files: KeyPair, provider: Arc<CryptoProvider>) -> Result<Reloading, TlsError> {
        let stamp = files.stamp();
        let key = files.load(&provider)?;
        Ok(Reloading {
            files,
            provider,
            state: RwLock::new(Loaded { stamp, key }),
        })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        let stamp = self.files.stamp();
        {
            let s = self.state.read().unwrap_or_else(|e| e.into_inner());
            if s.stamp == stamp {
                return s.key.clone();
            }
        }
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        if s.stamp != stamp {
            s.stamp = stamp;
            match self.files.load(&self.provider) {
                Ok(key) => {
                    tracing::info!(cert = %self.files.cert.display(), "reloaded TLS certificate and key");
                    s.key = key;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "changed TLS certificate not loaded; the previous one stays in use")
                }
            }
        }
        s.key.clone()
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for Reloading {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// How a server side is set up: `-http-cert`/`-http-key`, `-http-ca-cert`,
/// `-http-verify-client`, `-http-verify-common-name` (or the `-node-` ones).
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub pair: KeyPair,
    pub ca: Option<PathBuf>,
    pub verify_client: bool,
    pub verify_common_name: Option<String>,
    /// ALPN protocols to offer, most preferred first.
    pub alpn: Vec<Vec<u8>>,
}

/// A server configuration: TLS 1.2 and 1.3, the certificate reloaded when its files change,
/// client certificates required and verified when asked for.
pub fn server_config(opts: &ServerOptions) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let resolver = Arc::new(Reloading::new(opts.pair.clone(), provider.clone())?);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = if opts.verify_client {
        let inner = WebPkiClientVerifier::builder_with_provider(roots(opts.ca.as_deref())?, provider)
            .build()
            .map_err(|e| TlsError::Config(format!("client verification: {e}")))?;
        let verifier: Arc<dyn ClientCertVerifier> = match &opts.verify_common_name {
            Some(cn) => Arc::new(CommonName {
                inner,
                name: cn.clone(),
            }),
            None => inner,
        };
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = opts.alpn.clone();
    Ok(Arc::new(config))
}

/// How this node calls others: `-node-ca-cert`, `-node-no-verify`, `-node-verify-server-name`,
/// and its own certificate, shown when the other side asks for one.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    pub ca: Option<PathBuf>,
    pub no_verify: bool,
    pub server_name: Option<String>,
    pub pair: Option<KeyPair>,
}

/// A client configuration for calls to other nodes.
pub fn client_config(opts: &ClientOptions) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let verifier = server_verifier(
        &provider,
        roots(opts.ca.as_deref())?,
        opts.no_verify,
        opts.server_name.as_deref(),
        "-node-verify-server-name",
    )?;
    let builder = client_builder(&provider, verifier)?;
    let config = match &opts.pair {
        Some(pair) => builder.with_client_cert_resolver(Arc::new(Reloading::new(pair.clone(), provider)?)),
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// A client's trust and identity given as PEM text, for services whose configurations hold
/// certificates inline (or read from files by the caller).
#[derive(Debug, Clone, Default)]
pub struct PemClientOptions {
    /// Roots to verify the server with, replacing the system's when given.
    pub ca: Option<Vec<u8>>,
    /// This client's certificate chain and key, shown when the server asks for one.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    pub no_verify: bool,
    /// The name the server's certificate must carry, instead of the host called.
    pub server_name: Option<String>,
}

/// A client configuration for calls to a service outside the cluster.
pub fn client_config_from_pem(opts: &PemClientOptions) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let roots = match &opts.ca {
        Some(pem) => {
            let mut store = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| TlsError::Config(format!("CA certificate: {e}")))?;
                store
                    .add(cert)
                    .map_err(|e| TlsError::Config(format!("CA certificate: {e}")))?;
            }
            if store.is_empty() {
                return Err(TlsError::Config("the CA certificates hold no PEM certificate".into()));
            }
            Arc::new(store)
        }
        None => roots(None)?,
    };
    let verifier = server_verifier(
        &provider,
        roots,
        opts.no_verify,
        opts.server_name.as_deref(),
        "server name",
    )?;
    let builder = client_builder(&provider, verifier)?;
    let config = match &opts.identity {
        Some((cert, key)) => {
            let certs = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TlsError::Config(format!("client certificate: {e}")))?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::Config(format!("client key: {e}")))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| TlsError::Config(format!("client certificate and key: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// How a client checks servers: against `roots`, under `server_name` if given, or not at all.
fn server_verifier(
    provider: &Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
    no_verify: bool,
    server_name: Option<&str>,
    what: &str,
) -> Result<Arc<dyn ServerCertVerifier>, TlsError> {
    if no_verify {
        return Ok(Arc::new(AnyServer {
            algorithms: provider.signature_verification_algorithms,
        }));
    }
    let inner = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| TlsError::Config(format!("server verification: {e}")))?;
    Ok(match server_name {
        Some(name) => Arc::new(NamedServer {
            inner,
            name: ServerName::try_from(name.to_string())
                .map_err(|e| TlsError::Config(format!("{what} {name}: {e}")))?,
        }),
        None => inner,
    })
}

fn client_builder(
    provider: &Arc<CryptoProvider>,
    verifier: Arc<dyn ServerCertVerifier>,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>, TlsError> {
    Ok(ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier))
}

/// The common name of a certificate's subject, if it has one.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// Client certificates verified by `inner`, whose leaf must also carry the common name `name`.
#[derive(Debug)]
struct CommonName {
    inner: Arc<dyn ClientCertVerifier>,
    name: String,
}

impl ClientCertVerifier for CommonName {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner.verify_client_cert(end_entity, intermediates, now)?;
        match common_name(end_entity) {
            Some(cn) if cn == self.name => Ok(ClientCertVerified::assertion()),
            found => Err(rustls::Error::General(format!(
                "client certificate common name {:?} is not the required {:?}",
                found.unwrap_or_default(),
                self.name
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Server certificates verified against a fixed name (`-node-verify-server-name`) rather than
/// the address dialled, so that nodes can share one certificate.
#[derive(Debug)]
struct NamedServer {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for NamedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _dialled: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `-node-no-verify`: any server certificate is accepted; the handshake's signatures are still
/// checked, so the connection is encrypted to whoever holds the certificate's key.
#[derive(Debug)]
struct AnyServer {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The name to verify a node's certificate against when dialling `addr` (`host:port`).
pub fn server_name_of(addr: &str) -> Result<ServerName<'static>, TlsError> {
    let host = match addr.rsplit_once(':') {
        Some((h, _)) => h,
        None => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| TlsError::Config(format!("{addr}: {e}")))
}

#[cfg(test)]
mod tests;
