//! A backend's notification as it is written: the body of `POST
//! /api/v1/notify`, which a Redis inbox entry's `notification` field holds
//! too. Read and checked here, once, so that both ways in accept and refuse
//! exactly the same notifications with the same words.

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    MAX_BODY_BYTES, MAX_IDEMPOTENCY_BYTES, MAX_KIND_BYTES, MAX_LINK_BYTES, MAX_TITLE_BYTES,
    MAX_USERS_PER_NOTIFY, Notify,
};
use crate::user_mail::MAX_USER_BYTES;

/// The fields, as sent (unknown ones are refused: a misspelt `titel`
/// would otherwise vanish silently).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyRequest {
    /// The app whose users are notified.
    pub app_id: String,
    users: Vec<String>,
    kind: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    link: Option<String>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    id: Option<String>,
}

/// Why a notification is refused before anything is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyRefusal {
    /// A field missing, empty where it may not be, or past its bound
    /// (HTTP 400 `bad_message`; the message names the field).
    #[error("{0}")]
    Bad(String),
    /// `data` larger than `limits.max_publish_bytes` (HTTP 413), as a
    /// publish of it would be.
    #[error("`data` larger than {0} bytes")]
    DataTooLarge(usize),
}

fn check(name: &str, value: &str, max: usize, empty_ok: bool) -> Result<(), NotifyRefusal> {
    if (!empty_ok && value.is_empty()) || value.len() > max {
        let least = if empty_ok { 0 } else { 1 };
        return Err(NotifyRefusal::Bad(format!(
            "`{name}` must have {least} to {max} bytes"
        )));
    }
    Ok(())
}

impl NotifyRequest {
    /// Checks every field against its bound (`max_data_bytes` for `data`)
    /// and names each user once; answers the app and the notification.
    pub fn check(self, max_data_bytes: usize) -> Result<(String, Notify), NotifyRefusal> {
        if self.users.is_empty() || self.users.len() > MAX_USERS_PER_NOTIFY {
            return Err(NotifyRefusal::Bad(format!(
                "`users`: 1 to {MAX_USERS_PER_NOTIFY} user ids"
            )));
        }
        for user in &self.users {
            check("users", user, MAX_USER_BYTES, false)?;
        }
        check("kind", &self.kind, MAX_KIND_BYTES, false)?;
        check("title", &self.title, MAX_TITLE_BYTES, true)?;
        check("body", &self.body, MAX_BODY_BYTES, true)?;
        if let Some(link) = &self.link {
            check("link", link, MAX_LINK_BYTES, true)?;
        }
        if let Some(id) = &self.id {
            check("id", id, MAX_IDEMPOTENCY_BYTES, false)?;
        }
        if let Some(data) = &self.data
            && data.get().len() > max_data_bytes
        {
            return Err(NotifyRefusal::DataTooLarge(max_data_bytes));
        }
        let mut users = self.users;
        let mut seen = HashSet::new();
        users.retain(|u| seen.insert(u.clone()));
        Ok((
            self.app_id,
            Notify {
                users,
                kind: self.kind,
                title: self.title,
                body: self.body,
                link: self.link,
                data: self.data,
                idempotency: self.id,
                from: None,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Result<(String, Notify), NotifyRefusal> {
        serde_json::from_str::<NotifyRequest>(json)
            .expect("parses")
            .check(16)
    }

    #[test]
    fn users_are_named_once_and_fields_are_kept() {
        let (app, n) =
            read(r#"{"app_id":"a","users":["r","b","r"],"kind":"k","id":"x","data":[1]}"#)
                .expect("valid");
        assert_eq!(app, "a");
        assert_eq!(n.users, ["r", "b"]);
        assert_eq!(n.idempotency.as_deref(), Some("x"));
        assert_eq!(n.data.map(|d| d.get().to_string()).as_deref(), Some("[1]"));
    }

    #[test]
    fn each_bound_is_named() {
        let refused = |json: &str| read(json).expect_err("refused").to_string();
        assert!(refused(r#"{"app_id":"a","users":[],"kind":"k"}"#).contains("`users`"));
        assert!(refused(r#"{"app_id":"a","users":["r"],"kind":""}"#).contains("`kind`"));
        let long_id = format!(
            r#"{{"app_id":"a","users":["r"],"kind":"k","id":"{}"}}"#,
            "i".repeat(MAX_IDEMPOTENCY_BYTES + 1)
        );
        assert!(refused(&long_id).contains("`id`"));
        assert_eq!(
            read(r#"{"app_id":"a","users":["r"],"kind":"k","data":"0123456789abcdef"}"#)
                .expect_err("too large"),
            NotifyRefusal::DataTooLarge(16)
        );
        assert!(
            serde_json::from_str::<NotifyRequest>(
                r#"{"app_id":"a","users":["r"],"kind":"k","titel":"t"}"#
            )
            .is_err()
        );
    }
}
