//! Keyword and key templates: text with `{column}` placeholders, filled
//! from a row's values (`borne:{uid}`).

use std::collections::HashMap;

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Column(String),
}

/// Why a template does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("`{{` without its `}}`")]
    Unclosed,
    #[error("`}}` without its `{{`")]
    Unopened,
    #[error("empty or invalid column name in `{{}}`")]
    BadColumn,
}

impl Template {
    /// Parses `text`; a column name is letters, digits and `_`.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let open = rest.find('{');
            let close = rest.find('}');
            match (open, close) {
                (None, None) => {
                    parts.push(Part::Text(rest.to_string()));
                    break;
                }
                (Some(o), Some(c)) if o < c => {
                    if o > 0 {
                        parts.push(Part::Text(rest[..o].to_string()));
                    }
                    let name = &rest[o + 1..c];
                    if name.is_empty() || !name.chars().all(|ch| ch.is_alphanumeric() || ch == '_')
                    {
                        return Err(TemplateError::BadColumn);
                    }
                    parts.push(Part::Column(name.to_string()));
                    rest = &rest[c + 1..];
                }
                (Some(_), None) => return Err(TemplateError::Unclosed),
                (_, Some(_)) => return Err(TemplateError::Unopened),
            }
        }
        Ok(Template { parts })
    }

    /// The columns it reads.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Column(c) => Some(c.as_str()),
            Part::Text(_) => None,
        })
    }

    /// The text with each column's value, or `None` when a column it reads
    /// has no value in `row` (NULL, not sent, or unknown).
    pub fn render(&self, row: &HashMap<&str, &str>) -> Option<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Column(c) => out.push_str(row.get(c.as_str())?),
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_columns_and_refuse_broken_braces() {
        let t = Template::parse("borne:{uid}-{n}").unwrap_or_else(|e| panic!("{e}"));
        let row = HashMap::from([("uid", "B1"), ("n", "2")]);
        assert_eq!(t.render(&row).as_deref(), Some("borne:B1-2"));
        assert_eq!(t.render(&HashMap::from([("uid", "B1")])), None);
        assert_eq!(Template::parse("a:{uid"), Err(TemplateError::Unclosed));
        assert_eq!(Template::parse("a:uid}"), Err(TemplateError::Unopened));
        assert_eq!(Template::parse("a:{}"), Err(TemplateError::BadColumn));
        assert_eq!(Template::parse("a:{u id}"), Err(TemplateError::BadColumn));
    }
}
