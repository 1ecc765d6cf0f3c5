//! Kill switches: which subscriptions an operator has switched off.
//!
//! A [`Switch`] names a scope: everything (`global`), an app, one channel of
//! an app, a group (the `groups` claim of a subscription token or of the
//! connection's `connect` identity) or a user (the `sub` claim, likewise),
//! the last two optionally narrowed to one app. While a switch is in force,
//! subscriptions it covers are ended with `reset` reason `disabled` and new
//! ones are refused with error `disabled`; publishing is never blocked.
//!
//! This module is the pure rule: parsing, matching, the set in force. The
//! set changes only through `Node::apply_switch` (the local application,
//! which signals the connections a new switch covers: see `connections.rs`
//! for finding them); ending subscriptions is the session's job. The
//! operator actions that decide a change, persist it and carry it to the
//! other nodes live in the server (`operator`).

use std::collections::BTreeSet;
use std::fmt;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use crate::publication::valid_name;

/// Longest group or user name a switch may name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// What a switch covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every subscription.
    Global,
    /// Every subscription of one app.
    App,
    /// One channel of one app.
    Channel,
    /// Subscriptions whose token or connection identity lists a group.
    Group,
    /// Subscriptions whose token or connection identity is a user (`sub`).
    User,
    /// Notifications to users (of one app, or of every app): never a
    /// subscription; while in force nothing is delivered, everything is
    /// stored (see [`crate::notifications`]).
    Notifications,
}

impl Scope {
    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<Scope> {
        Some(match s {
            "global" => Scope::Global,
            "app" => Scope::App,
            "channel" => Scope::Channel,
            "group" => Scope::Group,
            "user" => Scope::User,
            "notifications" => Scope::Notifications,
            _ => return None,
        })
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Global => "global",
            Scope::App => "app",
            Scope::Channel => "channel",
            Scope::Group => "group",
            Scope::User => "user",
            Scope::Notifications => "notifications",
        }
    }

    /// Which of `app`, `channel`, `group`, `user` the scope requires and allows.
    fn fields(self) -> Fields {
        use Need::{Forbidden, Optional, Required};
        let (app, channel, group, user) = match self {
            Scope::Global => (Forbidden, Forbidden, Forbidden, Forbidden),
            Scope::App => (Required, Forbidden, Forbidden, Forbidden),
            Scope::Channel => (Required, Required, Forbidden, Forbidden),
            Scope::Group => (Optional, Forbidden, Required, Forbidden),
            Scope::User => (Optional, Forbidden, Forbidden, Required),
            Scope::Notifications => (Optional, Forbidden, Forbidden, Forbidden),
        };
        Fields {
            app,
            channel,
            group,
            user,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    Required,
    Optional,
    Forbidden,
}

struct Fields {
    app: Need,
    channel: Need,
    group: Need,
    user: Need,
}

/// Why a switch description was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SwitchError {
    /// `scope` is not one of the five.
    #[error("unknown scope `{0}`: expected global, app, channel, group, user or notifications")]
    UnknownScope(String),
    /// A field the scope needs is missing.
    #[error("scope `{scope}` needs `{field}`")]
    Missing {
        /// The scope.
        scope: &'static str,
        /// The missing field.
        field: &'static str,
    },
    /// A field the scope does not use was given.
    #[error("scope `{scope}` does not take `{field}`")]
    NotApplicable {
        /// The scope.
        scope: &'static str,
        /// The extra field.
        field: &'static str,
    },
    /// A name is empty, too long, or not a valid app or channel name.
    #[error("`{0}` is not a valid name")]
    InvalidName(&'static str),
}

/// One kill switch, normalized: only the fields its scope uses are set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Switch {
    /// What it covers.
    pub scope: Scope,
    /// The app (required for `app` and `channel`, optional for `group` and `user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// The channel (`channel` scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The group (`group` scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The user (`user` scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// A switch as described from outside, before validation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SwitchSpec<'a> {
    /// `global`, `app`, `channel`, `group` or `user`.
    pub scope: &'a str,
    /// The app.
    pub app: Option<&'a str>,
    /// The channel.
    pub channel: Option<&'a str>,
    /// The group.
    pub group: Option<&'a str>,
    /// The user.
    pub user: Option<&'a str>,
}

fn field(
    scope: Scope,
    name: &'static str,
    need: Need,
    value: Option<&str>,
    valid: fn(&str) -> bool,
) -> Result<Option<String>, SwitchError> {
    match (need, value) {
        (Need::Required, None) => Err(SwitchError::Missing {
            scope: scope.as_str(),
            field: name,
        }),
        (Need::Forbidden, Some(_)) => Err(SwitchError::NotApplicable {
            scope: scope.as_str(),
            field: name,
        }),
        (_, Some(v)) if !valid(v) => Err(SwitchError::InvalidName(name)),
        (_, v) => Ok(v.map(str::to_string)),
    }
}

fn valid_free_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME_BYTES
}

impl Switch {
    /// Validates a description: known scope, the fields it needs, no others.
    pub fn parse(spec: &SwitchSpec<'_>) -> Result<Switch, SwitchError> {
        let scope =
            Scope::parse(spec.scope).ok_or_else(|| SwitchError::UnknownScope(clip(spec.scope)))?;
        let need = scope.fields();
        Ok(Switch {
            scope,
            app: field(scope, "app", need.app, spec.app, valid_name)?,
            channel: field(scope, "channel", need.channel, spec.channel, valid_name)?,
            group: field(scope, "group", need.group, spec.group, valid_free_name)?,
            user: field(scope, "user", need.user, spec.user, valid_free_name)?,
        })
    }

    /// Checks a switch read back from storage as [`Switch::parse`] would.
    pub fn validated(self) -> Result<Switch, SwitchError> {
        Switch::parse(&SwitchSpec {
            scope: self.scope.as_str(),
            app: self.app.as_deref(),
            channel: self.channel.as_deref(),
            group: self.group.as_deref(),
            user: self.user.as_deref(),
        })
    }

    /// Whether this switch covers `subject`.
    pub fn covers(&self, subject: &Subject<'_>) -> bool {
        let app = self.app.as_deref().is_none_or(|a| a == subject.app);
        match self.scope {
            Scope::Global => true,
            Scope::App => app,
            Scope::Channel => app && self.channel.as_deref() == Some(subject.channel),
            Scope::Group => app && self.group.as_deref().is_some_and(|g| subject.in_group(g)),
            Scope::User => app && self.user.as_deref().is_some_and(|u| subject.is_user(u)),
            Scope::Notifications => false,
        }
    }
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

impl fmt::Display for Switch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.scope.as_str())?;
        for (name, value) in [
            ("app", &self.app),
            ("channel", &self.channel),
            ("group", &self.group),
            ("user", &self.user),
        ] {
            if let Some(v) = value {
                write!(f, " {name}={v}")?;
            }
        }
        Ok(())
    }
}

/// One subscription as switches see it: its channel, and the users and
/// groups of its token and of its connection's identity (same app only).
#[derive(Debug, Clone, Copy, Default)]
pub struct Subject<'a> {
    /// The app.
    pub app: &'a str,
    /// The channel.
    pub channel: &'a str,
    /// The token's `sub`, and the identity's user.
    pub users: [Option<&'a str>; 2],
    /// The token's `groups`, and the identity's groups.
    pub groups: [&'a [String]; 2],
}

impl Subject<'_> {
    fn is_user(&self, user: &str) -> bool {
        self.users.iter().flatten().any(|u| *u == user)
    }

    fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|gs| gs.iter().any(|g| g == group))
    }
}

/// The switches in force on this node.
#[derive(Debug, Default)]
pub struct Switches {
    set: RwLock<BTreeSet<Switch>>,
}

impl Switches {
    /// A set holding `switches` (read back at start).
    pub fn new(switches: impl IntoIterator<Item = Switch>) -> Switches {
        Switches {
            set: RwLock::new(switches.into_iter().collect()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeSet<Switch>> {
        // Every update is one insert or remove: a poisoned set is consistent.
        self.set.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The switches in force, in a stable order.
    pub fn list(&self) -> Vec<Switch> {
        self.read().iter().cloned().collect()
    }

    /// The list after switching `switch` off (`enabled` false) or on, or
    /// `None` when that changes nothing. Nothing changes until the switch is
    /// applied (`Node::apply_switch`).
    pub fn with_change(&self, switch: &Switch, enabled: bool) -> Option<Vec<Switch>> {
        let set = self.read();
        if set.contains(switch) != enabled {
            return None;
        }
        let mut next: BTreeSet<Switch> = set.clone();
        if enabled {
            next.remove(switch);
        } else {
            next.insert(switch.clone());
        }
        Some(next.into_iter().collect())
    }

    /// Switches `switch` off (`enabled` false: in force) or on; true if that
    /// changed anything. Private to the core: outside it, switches change
    /// only through `Node::apply_switch`, which also signals the
    /// connections a new switch covers.
    pub(crate) fn set(&self, switch: Switch, enabled: bool) -> bool {
        let mut set = self.set.write().unwrap_or_else(|p| p.into_inner());
        if enabled {
            set.remove(&switch)
        } else {
            set.insert(switch)
        }
    }

    /// The first switch in force that covers `subject`, if any.
    pub fn blocking(&self, subject: &Subject<'_>) -> Option<Switch> {
        self.read().iter().find(|s| s.covers(subject)).cloned()
    }

    /// Whether a `notifications` switch covering `app` is in force.
    pub fn notifications_off(&self, app: &str) -> bool {
        self.read()
            .iter()
            .any(|s| s.scope == Scope::Notifications && s.app.as_deref().is_none_or(|a| a == app))
    }

    /// Switches in force.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// True when none is in force.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(scope: &'a str) -> SwitchSpec<'a> {
        SwitchSpec {
            scope,
            ..SwitchSpec::default()
        }
    }

    fn subject<'a>(
        app: &'a str,
        channel: &'a str,
        user: Option<&'a str>,
        groups: &'a [String],
    ) -> Subject<'a> {
        Subject {
            app,
            channel,
            users: [user, None],
            groups: [groups, &[]],
        }
    }

    #[test]
    fn each_scope_needs_its_fields_and_no_others() {
        assert!(Switch::parse(&spec("global")).is_ok());
        assert_eq!(
            Switch::parse(&spec("galaxy")),
            Err(SwitchError::UnknownScope("galaxy".into()))
        );
        assert_eq!(
            Switch::parse(&spec("app")),
            Err(SwitchError::Missing {
                scope: "app",
                field: "app"
            })
        );
        let channel_without_name = SwitchSpec {
            app: Some("a"),
            ..spec("channel")
        };
        assert!(matches!(
            Switch::parse(&channel_without_name),
            Err(SwitchError::Missing {
                field: "channel",
                ..
            })
        ));
        let global_with_app = SwitchSpec {
            app: Some("a"),
            ..spec("global")
        };
        assert!(matches!(
            Switch::parse(&global_with_app),
            Err(SwitchError::NotApplicable { field: "app", .. })
        ));
        let group = SwitchSpec {
            group: Some("north"),
            ..spec("group")
        };
        assert!(Switch::parse(&group).is_ok());
        let empty_user = SwitchSpec {
            user: Some(""),
            ..spec("user")
        };
        assert_eq!(
            Switch::parse(&empty_user),
            Err(SwitchError::InvalidName("user"))
        );
        let bad_channel = SwitchSpec {
            app: Some("a"),
            channel: Some("no spaces"),
            ..spec("channel")
        };
        assert_eq!(
            Switch::parse(&bad_channel),
            Err(SwitchError::InvalidName("channel"))
        );
    }

    #[test]
    fn scopes_match_what_they_name() {
        let groups = vec!["north".to_string()];
        let s = subject("a", "c", Some("u1"), &groups);
        let other = subject("b", "c", Some("u2"), &[]);
        let parse = |sp: SwitchSpec<'_>| Switch::parse(&sp).expect("valid");
        let global = parse(spec("global"));
        assert!(global.covers(&s) && global.covers(&other));
        let app = parse(SwitchSpec {
            app: Some("a"),
            ..spec("app")
        });
        assert!(app.covers(&s) && !app.covers(&other));
        let channel = parse(SwitchSpec {
            app: Some("a"),
            channel: Some("c"),
            ..spec("channel")
        });
        assert!(channel.covers(&s) && !channel.covers(&other));
        assert!(!channel.covers(&subject("a", "d", None, &[])));
        let group = parse(SwitchSpec {
            group: Some("north"),
            ..spec("group")
        });
        assert!(group.covers(&s) && !group.covers(&other));
        let group_elsewhere = parse(SwitchSpec {
            app: Some("b"),
            group: Some("north"),
            ..spec("group")
        });
        assert!(!group_elsewhere.covers(&s));
        let user = parse(SwitchSpec {
            user: Some("u2"),
            ..spec("user")
        });
        assert!(user.covers(&other) && !user.covers(&s));
        let by_identity = Subject {
            users: [None, Some("u2")],
            ..s
        };
        assert!(user.covers(&by_identity));
    }

    #[test]
    fn set_and_lift() {
        let switches = Switches::default();
        let g = Switch::parse(&spec("global")).expect("valid");
        assert_eq!(switches.with_change(&g, true), None);
        assert_eq!(switches.with_change(&g, false), Some(vec![g.clone()]));
        assert!(switches.set(g.clone(), false));
        assert!(!switches.set(g.clone(), false));
        assert!(switches.blocking(&Subject::default()).is_some());
        assert!(switches.set(g.clone(), true));
        assert!(switches.is_empty());
    }

    #[test]
    fn stored_form_round_trips() {
        let s = Switch::parse(&SwitchSpec {
            app: Some("a"),
            user: Some("u"),
            ..spec("user")
        })
        .expect("valid");
        let json = serde_json::to_string(&s).expect("serializes");
        assert_eq!(json, r#"{"scope":"user","app":"a","user":"u"}"#);
        let back: Switch = serde_json::from_str(&json).expect("parses");
        assert_eq!(back.validated(), Ok(s));
        let bad: Switch = serde_json::from_str(r#"{"scope":"app"}"#).expect("parses");
        assert!(bad.validated().is_err());
    }
}
