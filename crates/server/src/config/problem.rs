//! What can be wrong with a configuration, and where: a [`Problem`] names
//! its line in the file when one is known; [`ConfigError`] is what loading
//! answers. Sections report into a [`Problems`] collector, which finds the
//! line for them, so every section points at its lines the same way.

/// One problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl Problem {
    /// A parse or type error, at the line its span starts on.
    pub(super) fn toml(text: &str, e: &toml::de::Error) -> Problem {
        Problem {
            line: e.span().map(|s| line_at(text, s.start)),
            message: e.message().trim().to_string(),
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read. The OS error is the source, not part of
    /// the message, so a chain printed with `{:#}` says it once.
    #[error("cannot read {path}")]
    Read {
        /// The path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// One or more problems in its content.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// One problem, not tied to a line (e.g. from an environment variable).
    pub(super) fn unplaced(message: String) -> ConfigError {
        ConfigError::Invalid(vec![Problem {
            line: None,
            message,
        }])
    }

    /// A parse or type error, at the line its span starts on.
    pub(super) fn toml(text: &str, e: &toml::de::Error) -> ConfigError {
        ConfigError::Invalid(vec![Problem::toml(text, e)])
    }
}

/// The semantic problems sections find in one file, in the order found.
#[derive(Debug)]
pub(crate) struct Problems<'a> {
    text: &'a str,
    found: Vec<Problem>,
}

impl<'a> Problems<'a> {
    /// None yet, for the file `text`.
    pub(super) fn new(text: &'a str) -> Problems<'a> {
        Problems {
            text,
            found: Vec::new(),
        }
    }

    /// The file's text, for sections that find their own lines.
    pub(super) fn text(&self) -> &'a str {
        self.text
    }

    /// A problem at the first line that contains `needle` (none when no
    /// line does, e.g. a value that came from the defaults).
    pub(super) fn at(&mut self, needle: &str, message: String) {
        let line = line_of(self.text, needle);
        self.at_line(line, message);
    }

    /// A problem at a line the section found itself.
    pub(super) fn at_line(&mut self, line: Option<usize>, message: String) {
        self.found.push(Problem { line, message });
    }

    /// Everything found.
    pub(super) fn into_vec(self) -> Vec<Problem> {
        self.found
    }
}

/// 1-based line of a byte offset.
pub(super) fn line_at(text: &str, offset: usize) -> usize {
    text.get(..offset.min(text.len()))
        .map_or(1, |t| t.bytes().filter(|b| *b == b'\n').count() + 1)
}

/// The first line that contains `needle`, to point validation errors at.
fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}
