//! `[tokens]`: how subscription and `connect` tokens are checked beyond
//! their signature.
//!
//! `leeway` is the clock skew tolerated between the backend that signs a
//! token and this gateway: a token is still accepted `leeway` after its
//! `exp`, and already `leeway` before its `nbf`, and an active subscription
//! (or a `connect` identity) ends `leeway` after its `exp`. It is bounded
//! (at most [`MAX_LEEWAY`]) because every second of it is a second an
//! expired token keeps working; it counts in whole seconds, as `exp` does.

use std::time::Duration;

use serde::Deserialize;

use super::problem::Problems;
use super::value::duration;

/// The largest `leeway` accepted: beyond it, clocks need fixing (NTP), not
/// tolerating.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// `[tokens]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tokens {
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(deserialize_with = "duration")]
    pub leeway: Duration,
}

impl Default for Tokens {
    fn default() -> Self {
        Tokens {
            leeway: Duration::from_secs(5),
        }
    }
}

impl Tokens {
    /// The leeway in the whole seconds token claims count in.
    pub fn leeway_secs(&self) -> u64 {
        self.leeway.as_secs()
    }

    pub(super) fn problems(&self, out: &mut Problems<'_>) {
        if self.leeway > MAX_LEEWAY {
            out.at(
                "leeway",
                format!(
                    "tokens.leeway `{}` is more than {}: fix the clocks (NTP) instead",
                    humantime::format_duration(self.leeway),
                    humantime::format_duration(MAX_LEEWAY)
                ),
            );
        } else if self.leeway.subsec_nanos() != 0 {
            out.at(
                "leeway",
                format!(
                    "tokens.leeway `{}` must be whole seconds, as token times are",
                    humantime::format_duration(self.leeway)
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, ConfigError};

    fn leeway_problems(value: &str) -> Vec<String> {
        let text = format!("[tokens]\nleeway = \"{value}\"\n");
        match Config::from_toml(&text, std::iter::empty()) {
            Ok(config) => {
                assert_eq!(
                    config.session_limits().token_leeway,
                    config.tokens.leeway_secs()
                );
                Vec::new()
            }
            Err(ConfigError::Invalid(p)) => p.into_iter().map(|p| p.message).collect(),
            Err(other) => panic!("{other}"),
        }
    }

    #[test]
    fn leeway_is_whole_seconds_up_to_five_minutes() {
        let config = Config::from_toml("", std::iter::empty()).expect("defaults");
        assert_eq!(config.session_limits().token_leeway, 5);
        for ok in ["0s", "5s", "5m"] {
            assert_eq!(leeway_problems(ok), Vec::<String>::new(), "{ok}");
        }
        for bad in ["5m 1s", "1500ms"] {
            let found = leeway_problems(bad);
            assert_eq!(found.len(), 1, "{bad}: {found:?}");
            assert!(found[0].contains("tokens.leeway"), "{found:?}");
        }
    }
}
