//! Reading the file section by section, so that one pass reports a type
//! error (or unknown key) in every section, each at its line, rather than
//! stopping at the first one in the file.
//!
//! Each top-level section is deserialized on its own from the spanned
//! document, so its errors keep their position in the text. A section that
//! does not deserialize is left at its defaults, so the semantic checks of
//! the others can still run; the [`Config`] built here is only good for
//! reporting unless no problem was found.

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::Config;
use super::problem::{Problem, line_at};

/// The top-level keys a file may have, as written in it.
const SECTIONS: &[&str] = &[
    "listen",
    "node",
    "admin",
    "broker",
    "limits",
    "transports",
    "tokens",
    "static",
    "proxy",
    "shutdown",
    "log",
    "apps",
    "sources",
];

/// The config in `text` and every type problem found in it. `text` must
/// already be known to be valid TOML (the syntax error is reported before).
pub(super) fn read(text: &str) -> (Config, Vec<Problem>) {
    let mut found = Vec::new();
    let mut doc = match DeTable::parse(text) {
        Ok(doc) => doc.into_inner(),
        Err(e) => {
            found.push(Problem::toml(text, &e));
            return (Config::default(), found);
        }
    };
    let mut take = |name: &str| doc.remove(name);
    let mut sections = Reader {
        text,
        found: &mut found,
    };
    let config = Config {
        listen: sections.section(take("listen")),
        node: sections.section(take("node")),
        admin: sections.section(take("admin")),
        broker: sections.section(take("broker")),
        limits: sections.section(take("limits")),
        transports: sections.section(take("transports")),
        tokens: sections.section(take("tokens")),
        static_files: sections.section(take("static")),
        proxy: sections.section(take("proxy")),
        shutdown: sections.section(take("shutdown")),
        log: sections.section(take("log")),
        apps: sections.section(take("apps")),
        sources: sections.section(take("sources")),
    };
    for (key, _) in doc {
        found.push(Problem {
            line: Some(line_at(text, key.span().start)),
            message: format!(
                "unknown section `{}`, expected one of {}",
                key.get_ref(),
                SECTIONS.join(", ")
            ),
        });
    }
    (config, found)
}

/// Deserializes sections of one file, collecting their problems.
struct Reader<'t, 'f> {
    text: &'t str,
    found: &'f mut Vec<Problem>,
}

impl Reader<'_, '_> {
    /// The section, or its defaults when absent or when it has a problem
    /// (then recorded).
    fn section<T: DeserializeOwned + Default>(&mut self, value: Option<Spanned<DeValue<'_>>>) -> T {
        let Some(value) = value else {
            return T::default();
        };
        T::deserialize(ValueDeserializer::from(value)).unwrap_or_else(|e| {
            self.found.push(Problem::toml(self.text, &e));
            T::default()
        })
    }
}
