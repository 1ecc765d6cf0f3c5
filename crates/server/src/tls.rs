//! TLS on the public listener: the certificate, its reload, and a listener
//! that never lets a slow handshake hold up the others.
//!
//! - **Provider.** ring, given explicitly to every rustls builder (and
//!   installed as the process default at start), so no code path depends on
//!   which provider features happen to be unified into the build.
//! - **Reload.** The certificate lives behind a resolver that rustls asks at
//!   each handshake. [`Certificates::reload`] reads the same two files again
//!   and swaps the pair in one step: new handshakes get the new certificate,
//!   connections already open keep the session they negotiated, and a bad
//!   new file leaves the old pair in place.
//! - **Handshakes off the accept loop.** [`Handshakes`] runs each handshake
//!   in the connection's own task with a deadline; at most `max_handshakes`
//!   run at once (more connections wait in the kernel's accept queue), so a
//!   client that stalls mid-handshake delays nobody.

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use chouquette_core::telemetry::Telemetry;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Why a certificate and key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A file is not the PEM it should be.
    #[error("{what} {path} is not usable PEM: {reason}")]
    Pem {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the PEM reader said, or that nothing was found.
        reason: String,
    },
    /// The key is not one rustls can sign with, or not the certificate's.
    #[error("key {key} does not fit certificate {cert}: {reason}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
    /// rustls refused to build a server configuration.
    #[error("cannot set up TLS: {0}")]
    Setup(String),
    /// A reload was asked for on a node without `[listen.tls]`.
    #[error("the public listener has no TLS to reload")]
    NotConfigured,
}

impl TlsError {
    /// Whether the problem is in the key file (else the certificate), so
    /// `check-config` can point at the right line.
    pub fn is_about_key(&self) -> bool {
        match self {
            TlsError::Read { what, .. } | TlsError::Pem { what, .. } => *what == KEY,
            TlsError::Mismatch { .. } => true,
            TlsError::Setup(_) | TlsError::NotConfigured => false,
        }
    }
}

const CERT: &str = "certificate";
const KEY: &str = "key";

/// The public listener's TLS settings (from `[listen.tls]`).
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// PEM certificate chain, end-entity first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// Longest handshake before the connection is dropped.
    pub handshake_timeout: Duration,
    /// Handshakes running at once.
    pub max_handshakes: usize,
}

/// The crypto provider every TLS builder here is given.
fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Installs ring as the process-wide rustls provider. rustls panics at the
/// first handshake when no default can be chosen (none or several provider
/// features in the build), so the binary installs one explicitly at start;
/// a second call (tests starting many nodes) is harmless.
pub fn install_provider() {
    let _ = provider().install_default();
}

/// Reads a certificate chain and its key, and checks they belong together.
pub fn load_key_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let read = |what: &'static str, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            what,
            path: path.to_path_buf(),
            source,
        })
    };
    let pem_error = |what: &'static str, path: &Path, reason: String| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let cert_pem = read(CERT, cert)?;
    let key_pem = read(KEY, key)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(CERT, cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_error(CERT, cert, "no CERTIFICATE section".into()));
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        let reason = match e {
            rustls::pki_types::pem::Error::NoItemsFound => "no PRIVATE KEY section".into(),
            other => other.to_string(),
        };
        pem_error(KEY, key, reason)
    })?;
    CertifiedKey::from_der(chain, private, &provider()).map_err(|e| TlsError::Mismatch {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        reason: e.to_string(),
    })
}

/// SHA-256 of the end-entity certificate, as `openssl x509 -fingerprint
/// -sha256` prints it, so an operator can tell which certificate is served.
fn fingerprint(pair: &CertifiedKey) -> String {
    let Some(cert) = pair.cert.first() else {
        return String::new();
    };
    let mut out = String::with_capacity(95);
    for (i, byte) in Sha256::digest(cert.as_ref()).iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{byte:02X}");
    }
    out
}

/// The certificate the public listener presents, reloadable from its files.
#[derive(Debug)]
pub struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Current>,
    telemetry: Arc<Telemetry>,
}

#[derive(Debug)]
struct Current {
    pair: Arc<CertifiedKey>,
    fingerprint: String,
}

impl Certificates {
    /// Loads the pair once; an error here stops the start.
    pub fn load(
        cert: &Path,
        key: &Path,
        telemetry: Arc<Telemetry>,
    ) -> Result<Arc<Certificates>, TlsError> {
        let pair = load_key_pair(cert, key)?;
        let fingerprint = fingerprint(&pair);
        tracing::info!(cert = %cert.display(), %fingerprint, "TLS certificate loaded");
        Ok(Arc::new(Certificates {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Current {
                pair: Arc::new(pair),
                fingerprint,
            }),
            telemetry,
        }))
    }

    /// Reads both files again. On success new handshakes use the new pair;
    /// on failure the old pair stays and the error is logged and counted
    /// (`chouquette_tls_reloads_total{result="error"}`). Open connections
    /// are never touched either way.
    pub fn reload(&self) -> Result<(), TlsError> {
        match load_key_pair(&self.cert, &self.key) {
            Ok(pair) => {
                let fingerprint = fingerprint(&pair);
                tracing::info!(cert = %self.cert.display(), %fingerprint,
                    "TLS certificate reloaded: new connections use it");
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Current {
                    pair: Arc::new(pair),
                    fingerprint,
                };
                self.telemetry.tls.reloaded(true);
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS certificate reload refused: still serving the previous certificate");
                self.telemetry.tls.reloaded(false);
                Err(e)
            }
        }
    }

    /// The SHA-256 fingerprint of the certificate new connections get.
    pub fn fingerprint(&self) -> String {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .fingerprint
            .clone()
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .pair
                .clone(),
        )
    }
}

/// The TLS side of the public listener: the server configuration and the
/// bound on handshakes running at once. The accept loop (`accept/`) takes a
/// [`Handshakes::slot`] before accepting each TCP connection, so a flood of
/// clients that never finish waits in the kernel's accept queue instead of
/// holding sockets here, and runs each handshake in the connection's own
/// task with [`Handshakes::handshake`], so a stalled client delays nobody.
#[derive(Clone)]
pub struct Handshakes {
    acceptor: TlsAcceptor,
    slots: Arc<Semaphore>,
    timeout: Duration,
    telemetry: Arc<Telemetry>,
}

impl std::fmt::Debug for Handshakes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshakes")
            .field("timeout", &self.timeout)
            .field("free_slots", &self.slots.available_permits())
            .finish_non_exhaustive()
    }
}

impl Handshakes {
    /// Serves TLS with the pair in `certificates`.
    pub fn new(
        certificates: Arc<Certificates>,
        settings: &TlsSettings,
    ) -> Result<Handshakes, TlsError> {
        let telemetry = certificates.telemetry.clone();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(certificates);
        // The public listener serves HTTP/1.1 only (WebSocket upgrades, SSE,
        // long-polling).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Handshakes {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            slots: Arc::new(Semaphore::new(settings.max_handshakes.max(1))),
            timeout: settings.handshake_timeout,
            telemetry,
        })
    }

    /// A place among the handshakes running at once; held until the
    /// handshake ends. `None` only if the bound was closed (never here).
    pub async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().acquire_owned().await.ok()
    }

    /// The handshake on `stream`, within `handshake_timeout`; `None` (failure
    /// or deadline, logged at debug and counted) drops the connection.
    pub async fn handshake<S>(&self, stream: S, peer: SocketAddr) -> Option<TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match tokio::time::timeout(self.timeout, self.acceptor.accept(stream)).await {
            Ok(Ok(tls)) => Some(tls),
            Ok(Err(e)) => {
                self.telemetry.tls.handshake_failed(false);
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                self.telemetry.tls.handshake_failed(true);
                tracing::debug!(%peer, timeout = ?self.timeout, "TLS handshake timed out");
                None
            }
        }
    }
}
