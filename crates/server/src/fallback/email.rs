//! The e-mail digest: templates rendered ([`super::template`]) and sent
//! over SMTP by `lettre` (tokio, rustls), with `STARTTLS` or TLS and AUTH
//! as configured. The password lives in `lettre`'s credentials only: it is
//! never logged.

use chouquette_core::notifications::Entry;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::template::render;
use crate::config::fallback::{
    DEFAULT_BODY, DEFAULT_ITEM, DEFAULT_SUBJECT, DEFAULT_TIMEOUT, DEFAULT_TO,
};
use crate::config::{EmailConfig, SmtpTls};

/// Why a digest was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Worth trying again later (server down, refused for now, timeout).
    #[error("{0}")]
    Retry(String),
    /// Never going to work for this user (no valid address): counted,
    /// logged, and the notifications are marked as handled.
    #[error("{0}")]
    Undeliverable(String),
}

/// One app's mailer.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: String,
    subject: String,
    body: String,
    item: String,
}

impl Mailer {
    /// From the config (checked already: only a CA file that became
    /// unreadable since fails here).
    pub fn new(config: &EmailConfig) -> Result<Mailer, String> {
        let port = config.port.unwrap_or(match config.tls {
            SmtpTls::None => 25,
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
        });
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            .port(port)
            .timeout(Some(config.timeout.unwrap_or(DEFAULT_TIMEOUT)));
        if config.tls != SmtpTls::None {
            let mut params = TlsParameters::builder(config.host.clone());
            if let Some(path) = &config.ca_file {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("email.ca_file {}: {e}", path.display()))?;
                let cert = Certificate::from_pem(&pem)
                    .map_err(|e| format!("email.ca_file {}: {e}", path.display()))?;
                params = params.add_root_certificate(cert);
            }
            let params = params.build().map_err(|e| e.to_string())?;
            builder = builder.tls(match config.tls {
                SmtpTls::Tls => Tls::Wrapper(params),
                _ => Tls::Required(params),
            });
        }
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.0.clone()));
        }
        Ok(Mailer {
            transport: builder.build(),
            from: config
                .from
                .parse()
                .map_err(|e| format!("email.from: {e}"))?,
            to: config.to.clone().unwrap_or_else(|| DEFAULT_TO.into()),
            subject: config
                .subject
                .clone()
                .unwrap_or_else(|| DEFAULT_SUBJECT.into()),
            body: config.body.clone().unwrap_or_else(|| DEFAULT_BODY.into()),
            item: config.item.clone().unwrap_or_else(|| DEFAULT_ITEM.into()),
        })
    }

    /// The message for `user` of `app` listing `entries`.
    pub fn message(&self, app: &str, user: &str, entries: &[Entry]) -> Result<Message, SendError> {
        let count: u64 = entries.iter().map(Entry::count).sum();
        let count = count.to_string();
        let common = |name: &str| -> Option<&str> {
            match name {
                "app" => Some(app),
                "user" => Some(user),
                "count" => Some(&count),
                _ => None,
            }
        };
        let to = render(&self.to, common);
        let to: Mailbox = to
            .parse()
            .map_err(|e| SendError::Undeliverable(format!("no address for the user: {e}")))?;
        let items: String = entries.iter().map(|e| self.item(e)).collect();
        let subject = render(&self.subject, common);
        let body = render(&self.body, |name| match name {
            "items" => Some(items.as_str()),
            other => common(other),
        });
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| SendError::Undeliverable(e.to_string()))
    }

    fn item(&self, entry: &Entry) -> String {
        let created = chouquette_protocol::server::timestamp(
            std::time::UNIX_EPOCH + std::time::Duration::from_micros(entry.created),
        );
        let count = entry.count().to_string();
        render(&self.item, |name| match name {
            "id" => Some(&entry.id),
            "kind" => Some(&entry.kind),
            "title" => Some(&entry.title),
            "body" => Some(&entry.body),
            "link" => Some(entry.link.as_deref().unwrap_or("")),
            "created" => Some(&created),
            "count" => Some(&count),
            _ => None,
        })
    }

    /// Sends the digest of `entries` to `user` of `app`.
    pub async fn send(&self, app: &str, user: &str, entries: &[Entry]) -> Result<(), SendError> {
        let message = self.message(app, user, entries)?;
        // Every SMTP failure is retried, a permanent one (5xx) too: it may
        // come from the gateway's side (credentials, sender), which an
        // operator fixes; the notifications stay pending meanwhile.
        self.transport
            .send(message)
            .await
            .map(drop)
            .map_err(|e| SendError::Retry(e.to_string()))
    }
}
