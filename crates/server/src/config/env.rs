//! Environment overrides, merged over the file before it is deserialized.
//!
//! `CHOUQUETTE_<SECTION>__<KEY>`: double underscore between levels,
//! lower-cased, array items by index (`CHOUQUETTE_APPS__0__API_KEY`).
//! Values are read as TOML when they parse, as strings otherwise, except
//! secrets: `apps.N.api_key`, `admin.key`, `broker.url` and
//! `sources.postgres.N.url`, `sources.mqtt.N.url` and `sources.mqtt.N.password` (they may carry a password) are always the variable's text as it is, so an all-digit
//! key stays a string and quotes stay part of it; the secret lists
//! `apps.N.secrets`, `broker.sentinel.addresses` and `broker.cluster.nodes`
//! are comma-separated (items trimmed, empty ones dropped; a value that
//! starts with `[` is refused, not read as a secret), and one of
//! their items set by index is text too. Variables
//! without a double underscore (`CHOUQUETTE_SECRET`) belong to the CLI and
//! are not overrides. Overrides apply in variable-name order, so the result
//! does not depend on the order the environment lists them in.

use super::ConfigError;

/// The environment prefix for overrides.
pub const ENV_PREFIX: &str = "CHOUQUETTE_";

/// One override: the variable, the lower-cased path it sets, its raw value.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Override {
    var: String,
    path: Vec<String>,
    raw: String,
}

/// The overrides among `vars`, sorted by variable name.
pub(super) fn overrides(vars: impl Iterator<Item = (String, String)>) -> Vec<Override> {
    let mut out: Vec<_> = vars
        .filter_map(|(var, raw)| {
            let rest = var.strip_prefix(ENV_PREFIX)?;
            rest.contains("__").then(|| Override {
                path: rest.split("__").map(str::to_lowercase).collect(),
                var: var.clone(),
                raw,
            })
        })
        .collect();
    out.sort();
    out
}

/// The names of `overrides`, for messages about their combined result.
pub(super) fn names(overrides: &[Override]) -> Vec<&str> {
    overrides.iter().map(|o| o.var.as_str()).collect()
}

/// Sets every override in `table`; the first that cannot be set is the error.
pub(super) fn apply(table: &mut toml::Value, overrides: &[Override]) -> Result<(), ConfigError> {
    for o in overrides {
        value(&o.path, &o.raw)
            .and_then(|v| set(table, &o.path, v))
            .map_err(|e| ConfigError::unplaced(format!("{}: {e}", o.var)))?;
    }
    Ok(())
}

/// Keys whose value is a secret (or holds one): taken as text.
const TEXT_KEYS: [&str; 7] = [
    "apps.#.api_key",
    "admin.key",
    "broker.url",
    "sources.postgres.#.url",
    "sources.mqtt.#.url",
    "sources.mqtt.#.password",
    "apps.#.notifications.fallback.email.password",
];

/// Lists of secrets (or of URLs that may hold a password): comma-separated.
const LIST_KEYS: [&str; 3] = [
    "apps.#.secrets",
    "broker.sentinel.addresses",
    "broker.cluster.nodes",
];

/// The value a variable sets at `path`: see the module header. A list of
/// secrets written as a TOML array (the form these keys once took) is
/// refused rather than read as items with brackets and quotes in them.
fn value(path: &[String], raw: &str) -> Result<toml::Value, String> {
    let shape: Vec<&str> = path
        .iter()
        .map(|k| {
            if k.bytes().all(|b| b.is_ascii_digit()) {
                "#"
            } else {
                k.as_str()
            }
        })
        .collect();
    let key = shape.join(".");
    let item_of = key.strip_suffix(".#").unwrap_or_default();
    if TEXT_KEYS.contains(&key.as_str()) || LIST_KEYS.contains(&item_of) {
        Ok(toml::Value::String(raw.to_string()))
    } else if LIST_KEYS.contains(&key.as_str()) {
        if raw.trim_start().starts_with('[') {
            return Err("a list of secrets is comma-separated: a,b (not a TOML array)".into());
        }
        Ok(toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ))
    } else {
        Ok(parsed(raw))
    }
}

/// A variable's value as TOML when it parses (`8192`, `true`, `["a"]`),
/// else as the string it is.
fn parsed(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

/// Sets `value` at `path` below `node`, creating tables on the way.
fn set(node: &mut toml::Value, path: &[String], value: toml::Value) -> Result<(), String> {
    let Some((key, rest)) = path.split_first() else {
        *node = value;
        return Ok(());
    };
    let child = match node {
        toml::Value::Table(t) => t
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new())),
        toml::Value::Array(a) => {
            let i: usize = key
                .parse()
                .map_err(|_| format!("`{key}` is not an index"))?;
            a.get_mut(i).ok_or_else(|| format!("no item {i}"))?
        }
        _ => return Err(format!("`{key}` is under a value that is not a table")),
    };
    set(child, rest, value)
}
