//! `[apps.notifications.fallback]`: pending notifications of a user who
//! has had no connection for `after` go out by e-mail (`.email`) or by a
//! signed webhook to the backend (`.webhook`), one digest per user per
//! `period` (docs/notifications.md "Offline fallback").

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::problem::Problems;
use super::value::{duration, http_backend, opt_duration};

/// Default of `period`: one digest per user per hour.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(3_600);
/// Default of `timeout` (an SMTP exchange or a webhook call).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest template accepted, in bytes.
pub const MAX_TEMPLATE_BYTES: usize = 16 * 1024;
/// Default `to`: the user id is the address.
pub const DEFAULT_TO: &str = "{user}";
/// Default `subject`.
pub const DEFAULT_SUBJECT: &str = "{count} unread notification(s)";
/// Default `body`.
pub const DEFAULT_BODY: &str =
    "Hello {user},\n\nYou have {count} unread notification(s):\n\n{items}\n";
/// Default `item`: one pending notification in `{items}`.
pub const DEFAULT_ITEM: &str = "- {title}\n  {body}\n  {link}\n";

/// `[apps.notifications.fallback]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackConfig {
    /// No connection of the user on any node for this long: their pending
    /// notifications go out by the fallback.
    #[serde(deserialize_with = "duration")]
    pub after: Duration,
    /// At most one digest per user per period (default 1 hour).
    #[serde(default, deserialize_with = "opt_duration")]
    pub period: Option<Duration>,
    /// Whether a notification sent by the fallback stays pending (a later
    /// connect still delivers it): default true.
    #[serde(default)]
    pub keep_pending: Option<bool>,
    /// By e-mail.
    #[serde(default)]
    pub email: Option<EmailConfig>,
    /// By a signed POST to the backend.
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text (a relay on loopback).
    None,
    /// Plain, then `STARTTLS` (required): port 587.
    #[default]
    Starttls,
    /// TLS from the first byte: port 465.
    Tls,
}

/// A value never written to logs or `Debug` output.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// `[apps.notifications.fallback.email]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The SMTP server's host name (checked against its certificate).
    pub host: String,
    /// Its port (default 25, 587 with `starttls`, 465 with `tls`).
    #[serde(default)]
    pub port: Option<u16>,
    /// `none`, `starttls` (default) or `tls`.
    #[serde(default)]
    pub tls: SmtpTls,
    /// A PEM file of extra CA certificates trusted for the server (a
    /// private CA); the public roots are trusted anyway.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// SMTP AUTH user name.
    #[serde(default)]
    pub username: Option<String>,
    /// SMTP AUTH password (never logged).
    #[serde(default)]
    pub password: Option<Secret>,
    /// The sender, e.g. `Bluelib <noreply@bluelib.example>`.
    pub from: String,
    /// The recipient's address, a template (`{user}`, `{app}`); default
    /// `{user}`: the user id is the address.
    #[serde(default)]
    pub to: Option<String>,
    /// Subject template (`{user}`, `{app}`, `{count}`).
    #[serde(default)]
    pub subject: Option<String>,
    /// Body template (`{user}`, `{app}`, `{count}`, `{items}`).
    #[serde(default)]
    pub body: Option<String>,
    /// One notification in `{items}` (`{id}`, `{kind}`, `{title}`,
    /// `{body}`, `{link}`, `{created}`, `{count}`).
    #[serde(default)]
    pub item: Option<String>,
    /// Longest SMTP exchange (default 30s).
    #[serde(default, deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
}

/// `[apps.notifications.fallback.webhook]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where the signed POST goes (plain `http`, like RPC routes).
    pub url: String,
    /// Longest call (default 30s).
    #[serde(default, deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
}

impl FallbackConfig {
    /// Its problems, for app `id` (`at` finds its line).
    pub(super) fn problems(&self, id: &str, at: &str, out: &mut Problems<'_>) {
        let mut say = |m: &str| out.at(at, format!("app `{id}`: notifications.fallback {m}"));
        if self.after < Duration::from_secs(1) {
            say("after must be at least 1s");
        }
        if self.period.is_some_and(|p| p < Duration::from_secs(1)) {
            say("period must be at least 1s");
        }
        match (&self.email, &self.webhook) {
            (None, None) | (Some(_), Some(_)) => {
                say("needs exactly one of [..fallback.email] or [..fallback.webhook]");
            }
            (Some(email), None) => {
                if email.host.is_empty() {
                    say("email.host is empty");
                }
                if email.from.parse::<lettre::message::Mailbox>().is_err() {
                    say("email.from is not an address");
                }
                if let Some(path) = &email.ca_file {
                    let pem = std::fs::read(path).map_err(|e| e.to_string());
                    let cert = pem.and_then(|pem| {
                        lettre::transport::smtp::client::Certificate::from_pem(&pem)
                            .map_err(|e| e.to_string())
                    });
                    if let Err(e) = cert {
                        say(&format!("email.ca_file {}: {e}", path.display()));
                    }
                }
                if email.username.is_some() != email.password.is_some() {
                    say("email.username and email.password go together");
                }
                let templates = [&email.to, &email.subject, &email.body, &email.item];
                if templates
                    .iter()
                    .any(|t| t.as_ref().is_some_and(|t| t.len() > MAX_TEMPLATE_BYTES))
                {
                    say(&format!(
                        "templates have at most {MAX_TEMPLATE_BYTES} bytes"
                    ));
                }
            }
            (None, Some(webhook)) => {
                if let Err(e) = http_backend(&webhook.url, "http://host:port/path") {
                    say(&format!("webhook.url: {e}"));
                }
            }
        }
    }

    /// The digest period.
    pub fn period(&self) -> Duration {
        self.period.unwrap_or(DEFAULT_PERIOD)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, ConfigError};

    const APP: &str = "[[apps]]\nid = \"bluelib\"\nsecrets = [\"s\"]\n";

    fn load(extra: &str) -> Result<Config, ConfigError> {
        Config::from_toml(&format!("{APP}{extra}"), std::iter::empty())
    }

    #[test]
    fn an_email_fallback_is_read_and_its_password_never_printed() {
        let c = load(
            "[apps.notifications.fallback]\nafter = \"15m\"\n\
             [apps.notifications.fallback.email]\nhost = \"smtp.example\"\n\
             from = \"noreply@example.org\"\nusername = \"u\"\npassword = \"hunter2\"\n",
        )
        .expect("valid");
        let fallback = c.apps[0].notifications.fallback.as_ref().expect("set");
        assert_eq!(fallback.after.as_secs(), 900);
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn bad_fallbacks_are_problems() {
        for (extra, needle) in [
            (
                "[apps.notifications.fallback]\nafter = \"1m\"\n",
                "exactly one",
            ),
            (
                "[apps.notifications.fallback]\nafter = \"10ms\"\n\
                 [apps.notifications.fallback.webhook]\nurl = \"http://127.0.0.1:1/x\"\n",
                "after",
            ),
            (
                "[apps.notifications.fallback]\nafter = \"1m\"\n\
                 [apps.notifications.fallback.webhook]\nurl = \"ftp://x\"\n",
                "webhook.url",
            ),
            (
                "[apps.notifications.fallback]\nafter = \"1m\"\n\
                 [apps.notifications.fallback.email]\nhost = \"h\"\nfrom = \"not an address\"\n",
                "email.from",
            ),
        ] {
            match load(extra) {
                Err(ConfigError::Invalid(problems)) => assert!(
                    problems.iter().any(|p| p.message.contains(needle)),
                    "{extra}: {problems:?}"
                ),
                other => panic!("{extra}: expected problems, got {other:?}"),
            }
        }
    }
}
