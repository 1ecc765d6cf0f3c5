//! TLS for tests: self-signed certificates made at test time with the
//! `openssl` command (present wherever the tests run; no key material is
//! committed), and a rustls client that trusts exactly one certificate, so a
//! successful handshake proves which certificate the gateway presented.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::WsClient;

/// A self-signed certificate for `localhost` and 127.0.0.1, and its key.
#[derive(Debug, Clone)]
pub struct TestCert {
    /// PEM certificate file.
    pub cert: PathBuf,
    /// PEM private key file (PKCS#8).
    pub key: PathBuf,
    /// The certificate, DER.
    pub der: Vec<u8>,
}

impl TestCert {
    /// Writes `dir/NAME.crt` and `dir/NAME.key`: P-256 (fast to make),
    /// `CA:FALSE` so webpki accepts it as the server's own certificate.
    pub fn generate(dir: &Path, name: &str) -> TestCert {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        let output = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec"])
            .args(["-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .args(["-days", "2", "-subj", &format!("/CN=localhost/O={name}")])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .output()
            .expect("the openssl command runs");
        assert!(
            output.status.success(),
            "openssl req failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let der = CertificateDer::from_pem_file(&cert)
            .expect("openssl wrote a PEM certificate")
            .to_vec();
        TestCert { cert, key, der }
    }

    /// Copies this pair over `target`'s files (a rotation on disk, as an
    /// operator's renewal job does before sending SIGHUP).
    pub fn copy_over(&self, target: &TestCert) {
        std::fs::copy(&self.cert, &target.cert).expect("copy certificate");
        std::fs::copy(&self.key, &target.key).expect("copy key");
    }
}

/// TLS to `addr` as `localhost`, trusting `trusted` only. An error means
/// the gateway presented another certificate (or no TLS at all).
pub async fn connect(
    addr: SocketAddr,
    trusted: &TestCert,
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(trusted.der.clone()))
        .map_err(std::io::Error::other)?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(std::io::Error::other)?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// The certificate the server presented on `stream`, DER.
pub fn peer_certificate(stream: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    let (_, connection) = stream.get_ref();
    connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|c| c.to_vec())
}

/// A WebSocket over TLS to `addr` (`wss://localhost/ws`), trusting
/// `trusted` only; also returns the certificate the gateway presented.
pub async fn connect_wss(
    addr: SocketAddr,
    trusted: &TestCert,
) -> (WsClient<TlsStream<TcpStream>>, Vec<u8>) {
    let tls = connect(addr, trusted).await.expect("TLS handshake");
    let presented = peer_certificate(&tls).expect("the server presents a certificate");
    let url = format!("wss://localhost:{}/ws", addr.port());
    let (stream, _) = tokio_tungstenite::client_async(url, tls)
        .await
        .expect("websocket over TLS connects");
    (WsClient::from_stream(stream), presented)
}
