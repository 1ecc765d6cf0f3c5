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
//! - **Handshakes off the accept loop.** [`TlsListener`] accepts TCP in one
//!   task and runs each handshake in a task of its own with a deadline; at
//!   most `max_handshakes` run at once (more connections wait in the
//!   kernel's accept queue). Finished streams reach axum through a bounded
//!   channel, in the order they finish, so a client that stalls mid-handshake
//!   delays nobody.

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
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
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

/// Streams whose handshake finished, waiting for axum to take them. Small:
/// axum takes each at once; the bound only matters if it stops taking.
const READY_QUEUE: usize = 64;

/// An [`axum::serve::Listener`] that yields TLS streams whose handshake has
/// finished (see the module doc). Dropping it (axum does on stop) closes the
/// TCP listener; handshakes still running end at their deadline.
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: JoinHandle<()>,
}

impl TlsListener {
    /// Serves TLS on `tcp` with the pair in `certificates`.
    pub fn new(
        tcp: TcpListener,
        certificates: Arc<Certificates>,
        settings: &TlsSettings,
    ) -> Result<TlsListener, TlsError> {
        let local = tcp
            .local_addr()
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        let telemetry = certificates.telemetry.clone();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(certificates);
        // axum serves HTTP/1.1 only (WebSocket upgrades, SSE, long-polling).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let accepting = tokio::spawn(accept_loop(
            tcp,
            TlsAcceptor::from(Arc::new(config)),
            Arc::new(Semaphore::new(settings.max_handshakes.max(1))),
            settings.handshake_timeout,
            tx,
            telemetry,
        ));
        Ok(TlsListener {
            ready,
            local,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            // The accept loop only ends when this listener is dropped; never
            // hand axum a made-up stream.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Accepts TCP connections and starts one handshake task each, at most
/// `handshakes` at once.
async fn accept_loop(
    mut tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: Arc<Semaphore>,
    timeout: Duration,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    telemetry: Arc<Telemetry>,
) {
    loop {
        // Wait for a free handshake slot before accepting, so a flood of
        // clients that never finish waits in the kernel's queue instead of
        // holding sockets here.
        let Ok(slot) = handshakes.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = tokio::select! {
            // axum's accept retries by itself on errors (EMFILE: after 1 s).
            accepted = axum::serve::Listener::accept(&mut tcp) => accepted,
            () = ready.closed() => return,
        };
        // Events are small and latency-bound: never hold them back for Nagle.
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        let telemetry = telemetry.clone();
        tokio::spawn(async move {
            // The slot is held until axum has the stream, so handshakes
            // done but not yet taken count against the bound too.
            let _slot = slot;
            match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Err(e)) => {
                    telemetry.tls.handshake_failed(false);
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    telemetry.tls.handshake_failed(true);
                    tracing::debug!(%peer, ?timeout, "TLS handshake timed out");
                }
            }
        });
    }
}
