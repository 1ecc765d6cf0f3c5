//! Column values from Postgres' text form to JSON, by type: booleans,
//! numbers and json/jsonb become their JSON selves, one-dimensional arrays
//! of those become JSON arrays; anything else (timestamps, text, uuid,
//! numeric values JSON cannot hold such as `NaN`) stays the string Postgres
//! wrote.

use serde_json::Value;

const BOOL: u32 = 16;
const INTS: [u32; 4] = [20, 21, 23, 26];
const FLOATS: [u32; 3] = [700, 701, 1700];
const JSON: [u32; 2] = [114, 3802];

/// The element type of an array type, for the arrays converted.
fn element_of(array_oid: u32) -> Option<u32> {
    Some(match array_oid {
        1000 => BOOL,
        1005 => 21,
        1007 => 23,
        1016 => 20,
        1021 => 700,
        1022 => 701,
        1231 => 1700,
        199 => 114,
        3807 => 3802,
        1009 | 1015 | 1014 => 25,
        _ => return None,
    })
}

/// `text` of type `oid` as JSON.
pub(super) fn to_json(oid: u32, text: &str) -> Value {
    if oid == BOOL {
        return match text {
            "t" => Value::Bool(true),
            "f" => Value::Bool(false),
            _ => Value::String(text.to_string()),
        };
    }
    if INTS.contains(&oid) || FLOATS.contains(&oid) {
        return text
            .parse::<serde_json::Number>()
            .map_or_else(|_| Value::String(text.to_string()), Value::Number);
    }
    if JSON.contains(&oid) {
        return serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()));
    }
    if let Some(element) = element_of(oid)
        && let Some(items) = array_items(text)
    {
        return Value::Array(
            items
                .into_iter()
                .map(|item| item.map_or(Value::Null, |t| to_json(element, &t)))
                .collect(),
        );
    }
    Value::String(text.to_string())
}

/// The items of a one-dimensional array literal (`{1,NULL,"a b"}`), or
/// `None` for anything else (nested arrays, explicit bounds).
fn array_items(text: &str) -> Option<Vec<Option<String>>> {
    let inner = text.strip_prefix('{')?.strip_suffix('}')?;
    let mut items = Vec::new();
    if inner.is_empty() {
        return Some(items);
    }
    let mut chars = inner.chars().peekable();
    loop {
        if chars.peek() == Some(&'{') {
            return None;
        }
        let (item, quoted) = if chars.peek() == Some(&'"') {
            chars.next();
            let mut item = String::new();
            loop {
                match chars.next()? {
                    '\\' => item.push(chars.next()?),
                    '"' => break,
                    c => item.push(c),
                }
            }
            (item, true)
        } else {
            let mut item = String::new();
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                item.push(c);
                chars.next();
            }
            (item, false)
        };
        items.push((quoted || item != "NULL").then_some(item));
        match chars.next() {
            None => return Some(items),
            Some(',') => {}
            Some(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_keep_their_json_type() {
        assert_eq!(to_json(16, "t"), json!(true));
        assert_eq!(to_json(23, "42"), json!(42));
        assert_eq!(to_json(1700, "1.50"), json!(1.5));
        assert_eq!(to_json(1700, "NaN"), json!("NaN"));
        assert_eq!(to_json(3802, r#"{"a": [1]}"#), json!({"a": [1]}));
        assert_eq!(
            to_json(1184, "2026-01-02 03:04:05+00"),
            json!("2026-01-02 03:04:05+00")
        );
        assert_eq!(to_json(1007, "{1,NULL,3}"), json!([1, null, 3]));
        assert_eq!(
            to_json(1009, r#"{a,"b c","NULL","q\"x"}"#),
            json!(["a", "b c", "NULL", "q\"x"])
        );
        assert_eq!(to_json(1007, "{{1,2},{3,4}}"), json!("{{1,2},{3,4}}"));
        assert_eq!(to_json(1007, "{}"), json!([]));
    }
}
