//! Loading whole files: sections together, environment overrides, and
//! problems pointed at their lines.

use chouquette_core::limits::Rate;
use chouquette_testkit::BASE_CONFIG;

use super::*;

/// The test kit's [`BASE_CONFIG`] as an operator completes it: addresses,
/// a node id, the broker, and where switches and the audit log are kept.
fn example() -> String {
    let key = "key = \"admin-key\"";
    let admin = format!(
        "{key}\nstate_file = \"/var/lib/chouquette/switches.json\"\n\
         audit_file = \"/var/log/chouquette/audit.jsonl\""
    );
    format!(
        "[listen]\npublic = \"127.0.0.1:8080\"\ninternal = \"127.0.0.1:8081\"\n\n\
         [node]\nid = \"gw-1\"\n\n[broker]\nkind = \"memory\"\n{}",
        BASE_CONFIG.replacen(key, &admin, 1)
    )
}

fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_toml(
        text,
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
}

fn problems(text: &str) -> Vec<Problem> {
    match load(text, &[]) {
        Err(ConfigError::Invalid(p)) => p,
        other => panic!("expected problems, got {other:?}"),
    }
}

#[test]
fn presence_is_a_channel_setting_and_its_timeout_is_checked() {
    let with = example().replace("keep_state = true", "keep_state = true\npresence = true");
    let c = load(&with, &[]).expect("valid");
    let apps = c.apps();
    let app = apps.get("bluelib").expect("app");
    assert!(app.channel_policy("bornes").presence);
    assert!(!app.channel_policy("other").presence);
    let redis = example().replace(
        "kind = \"memory\"",
        "kind = \"redis\"\npresence_timeout = \"500ms\"",
    );
    let p = problems(&redis);
    assert!(
        p.iter().any(|p| p.message.contains("presence_timeout")),
        "{p:?}"
    );
}

#[test]
fn operating_example_loads() {
    let c = load(&example(), &[]).expect("valid");
    let apps = c.apps();
    let app = apps.get("bluelib").expect("app");
    assert!(app.channel_policy("bornes").keep_state);
    assert!(!app.channel_policy("other").keep_state);
    assert_eq!(app.secrets.len(), 2);
    assert_eq!(c.node.id_or_default(), "gw-1");
    assert!(c.admin.state_file.is_some());
}

#[test]
fn node_id_defaults_to_host_and_pid() {
    let c = load("", &[]).expect("valid");
    let id = c.node.id_or_default();
    assert!(id.ends_with(&format!("-{}", std::process::id())), "{id}");
    let p = problems("[node]\nid = \"two words\"\n");
    assert_eq!(p[0].line, Some(2), "{p:?}");
}

#[test]
fn unknown_keys_name_their_line() {
    let p = problems("[listen]\npublic = \"127.0.0.1:1\"\nbogus = 1\n");
    assert_eq!(p[0].line, Some(3), "{p:?}");
    assert!(p[0].message.contains("bogus"), "{p:?}");
}

#[test]
fn bad_values_name_their_line() {
    let p = problems("[limits]\nwrite_timeout = \"soon\"\n");
    assert_eq!(p[0].line, Some(2));
    let p = problems("\n[listen]\npublic = \"nowhere\"\n");
    assert_eq!(p[0].line, Some(3));
    let p = problems("[[apps]]\nid = \"a\"\nsecrets = []\n");
    assert_eq!(p[0].line, Some(2));
    assert!(p[0].message.contains("secret"));
}

#[test]
fn app_limits_inherit_and_override_the_defaults() {
    let text = "[limits]\nmax_connections_per_user = 7\npublishes_per_second = 10\n\
                publish_burst = 20\n\n[[apps]]\nid = \"a\"\nsecrets = [\"s\"]\n\n\
                [apps.limits]\npublishes_per_second = 0\nclient_messages_burst = 9\n\n\
                [[apps]]\nid = \"b\"\nsecrets = [\"s\"]\n";
    let c = load(text, &[]).expect("valid");
    let apps = c.apps();
    let a = &apps.get("a").expect("a").limits;
    assert_eq!(a.publishes, Rate::new(0, 20));
    assert_eq!(a.client_messages, Rate::new(50, 9));
    assert_eq!(a.max_connections_per_user, 7);
    let b = &apps.get("b").expect("b").limits;
    assert_eq!(b.publishes, Rate::new(10, 20));
    assert_eq!(b.max_subscriptions, 256);
    let c = load(
        text,
        &[("CHOUQUETTE_APPS__1__LIMITS__MAX_CONNECTIONS_PER_USER", "1")],
    )
    .expect("valid");
    let apps = c.apps();
    assert_eq!(apps.get("b").expect("b").limits.max_connections_per_user, 1);
}

#[test]
fn bad_limits_are_problems() {
    let p = problems("[limits]\nnew_connections_per_address = 5\nnew_connections_burst = 0\n");
    assert_eq!(p[0].line, Some(3), "{p:?}");
    assert!(p[0].message.contains("new_connections_burst"), "{p:?}");
    let p = problems("[[apps]]\nid = \"a\"\nsecrets = [\"s\"]\n[apps.limits]\npublish_burst = 0\n");
    assert!(p[0].message.contains("publish_burst"), "{p:?}");
    assert_eq!(p[0].line, Some(2), "{p:?}");
    let p = problems("[[apps]]\nid = \"a\"\nsecrets = [\"s\"]\n[apps.limits]\nbogus = 1\n");
    assert!(p[0].message.contains("bogus"), "{p:?}");
}

#[test]
fn environment_overrides_the_file() {
    let c = load(
        &example(),
        &[
            ("CHOUQUETTE_LISTEN__PUBLIC", "127.0.0.1:9999"),
            ("CHOUQUETTE_APPS__0__API_KEY", "other"),
            ("CHOUQUETTE_LIMITS__OUTBOX_CAPACITY", "7"),
            ("CHOUQUETTE_SECRET", "not an override"),
        ],
    )
    .expect("valid");
    assert_eq!(c.listen.public.port(), 9999);
    assert_eq!(c.apps[0].api_key.as_deref(), Some("other"));
    assert_eq!(c.limits.outbox_capacity, 7);
    let bad = load(&example(), &[("CHOUQUETTE_LISTEN__NOPE", "1")]);
    assert!(
        matches!(bad, Err(ConfigError::Invalid(p)) if p[0].message.contains("CHOUQUETTE_LISTEN__NOPE"))
    );
}

#[test]
fn secrets_from_the_environment_are_text_and_lists_are_comma_separated() {
    let c = load(
        &example(),
        &[
            ("CHOUQUETTE_APPS__0__API_KEY", "\"007\""),
            ("CHOUQUETTE_APPS__0__SECRETS", "0042, b,"),
            ("CHOUQUETTE_ADMIN__KEY", "123"),
            ("CHOUQUETTE_BROKER__URL", "12"),
        ],
    )
    .expect("valid");
    assert_eq!(c.apps[0].api_key.as_deref(), Some("\"007\""));
    assert_eq!(c.apps[0].secrets, ["0042", "b"]);
    assert_eq!(c.admin.key.as_deref(), Some("123"));
    assert_eq!(c.broker.url.as_deref(), Some("12"));
    let c = load(&example(), &[("CHOUQUETTE_APPS__0__SECRETS__1", "7")]).expect("valid");
    assert_eq!(c.apps[0].secrets[1], "7");
    let array = load(&example(), &[("CHOUQUETTE_APPS__0__SECRETS", "[\"a\"]")]);
    assert!(
        matches!(array, Err(ConfigError::Invalid(p)) if p[0].message.contains("comma-separated"))
    );
}
