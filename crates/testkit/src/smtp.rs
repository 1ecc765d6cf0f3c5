//! A real SMTP server of the test's own (`scripts/smtp_sink.py`, on
//! aiosmtpd), on a free loopback port: each message it accepts is written
//! to its folder as JSON, which [`SmtpServer::mails`] reads back. Optional
//! STARTTLS (required) with a test certificate and AUTH (required). The
//! test may kill it and start it again on the same port. A missing
//! `aiosmtpd` fails the test, naming the package.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};

use super::tls::TestCert;
use super::{free_port, process};

/// The AUTH user name of [`SmtpServer::start_secure`].
pub const SMTP_USER: &str = "gateway";
/// The AUTH password of [`SmtpServer::start_secure`].
pub const SMTP_PASSWORD: &str = "smtp-pw";

/// A running SMTP sink, killed and its folder deleted when dropped.
#[derive(Debug)]
pub struct SmtpServer {
    port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
    /// The certificate it presents after STARTTLS, when secure.
    pub cert: Option<TestCert>,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/smtp_sink.py")
}

impl SmtpServer {
    /// Plain SMTP, no AUTH.
    pub async fn start() -> SmtpServer {
        SmtpServer::launch_new(scratch(), Vec::new(), None).await
    }

    /// Plain SMTP, answering each message's data only after `delay` (a
    /// slow relay: two senders at once would both be in flight).
    pub async fn start_slow(delay: Duration) -> SmtpServer {
        let extra = vec!["--delay".into(), delay.as_secs_f64().to_string()];
        SmtpServer::launch_new(scratch(), extra, None).await
    }

    /// STARTTLS required (a certificate for `localhost` made now) and AUTH
    /// required ([`SMTP_USER`], [`SMTP_PASSWORD`]).
    pub async fn start_secure() -> SmtpServer {
        let dir = scratch();
        let cert = TestCert::generate(&dir, "smtp");
        let extra = vec![
            "--tls-cert".into(),
            cert.cert.display().to_string(),
            "--tls-key".into(),
            cert.key.display().to_string(),
            "--auth".into(),
            format!("{SMTP_USER}:{SMTP_PASSWORD}"),
        ];
        SmtpServer::launch_new(dir, extra, Some(cert)).await
    }

    async fn launch_new(
        scratch: PathBuf,
        extra: Vec<String>,
        cert: Option<TestCert>,
    ) -> SmtpServer {
        let has_aiosmtpd = std::process::Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            has_aiosmtpd,
            "python3 with aiosmtpd is needed (pip install -r examples/python/requirements.txt, \
             or Debian python3-aiosmtpd)"
        );
        let port = free_port();
        let dir = scratch.join("mails");
        std::fs::create_dir_all(&dir).expect("a folder for the mails");
        let mut server = SmtpServer {
            port,
            dir,
            extra,
            child: None,
            cert,
        };
        server.launch().await;
        server
    }

    async fn launch(&mut self) {
        let mut command = Command::new("python3");
        command
            .arg(script())
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let within = Duration::from_secs(15);
        let what = "the SMTP sink (python3)";
        let child = process::spawn_listening(command, self.port, within, what, "").await;
        self.child = Some(child);
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops it (connections refused until [`SmtpServer::restart`]).
    pub async fn kill(&mut self) {
        process::kill(&mut self.child).await;
    }

    /// Starts it again on the same port, keeping the mails received.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.launch().await;
    }

    /// Every mail received so far, as the sink wrote it: `from`, `to`,
    /// `subject`, `body` (decoded), `rcpt_tos`, `authenticated`, `tls`.
    pub fn mails(&self) -> Vec<Value> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut mails: Vec<(std::time::SystemTime, Value)> = entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| {
                let at = e.metadata().and_then(|m| m.modified()).ok()?;
                let text = std::fs::read_to_string(e.path()).ok()?;
                Some((at, serde_json::from_str(&text).ok()?))
            })
            .collect();
        mails.sort_by_key(|(at, _)| *at);
        mails.into_iter().map(|(_, m)| m).collect()
    }
}

fn scratch() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("chq-smtp-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch folder for the SMTP sink");
    dir
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        if let Some(parent) = self.dir.parent() {
            let _ = std::fs::remove_dir_all(parent);
        }
    }
}
