//! The e-mail templates' placeholder syntax, small on purpose: `{name}` is
//! replaced by the value of `name` when the template knows it, left as
//! written otherwise (so a brace in the text needs no escape), and `{{` /
//! `}}` write a single brace. One pass: a value containing `{user}` (a
//! notification's title, say) is written as is, never expanded again.

/// Renders `template`, asking `value` for each `{name}`.
pub fn render<'a>(template: &str, value: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find(['{', '}']) {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("{{") {
            out.push('{');
            rest = after;
            continue;
        }
        if let Some(after) = rest.strip_prefix("}}") {
            out.push('}');
            rest = after;
            continue;
        }
        let name = rest[1..].find('}').map(|end| &rest[1..=end]);
        match name.and_then(|n| value(n).map(|v| (n, v))) {
            Some((name, v)) => {
                out.push_str(v);
                rest = &rest[name.len() + 2..];
            }
            None => {
                out.push_str(&rest[..1]);
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(name: &str) -> Option<&'static str> {
        match name {
            "user" => Some("roger"),
            "title" => Some("{user} said {hi}"),
            _ => None,
        }
    }

    #[test]
    fn placeholders_are_replaced_once_and_unknown_ones_kept() {
        assert_eq!(render("Hi {user}!", values), "Hi roger!");
        assert_eq!(render("{title}", values), "{user} said {hi}");
        assert_eq!(render("{other} {user", values), "{other} {user");
        assert_eq!(render("{{user}} }", values), "{user} }");
        assert_eq!(render("", values), "");
        assert_eq!(render("é{user}é", values), "érogeré");
    }
}
