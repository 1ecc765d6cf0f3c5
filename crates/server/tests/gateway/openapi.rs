//! `docs/openapi.json` held to the internal router (docs/protocol.md
//! "OpenAPI"):
//!
//! 1. the routes the router code declares (read from the sources under
//!    `src/api/`, see [`declared_routes`]) are exactly the described ones,
//!    so a route added without a description fails here, as does a
//!    description of a route that was removed;
//! 2. every described path and method is served by a running node (neither
//!    404 nor 405), and every other method on a described path is 405;
//! 3. every example (request bodies, answers, parameters, schemas)
//!    validates against its schema, and every request example sent to a
//!    running node gets a described status whose body validates against the
//!    described answer schema; so do the 401/403 answers to a missing or
//!    wrong key.
//!
//! The validator ([`validate`]) knows the JSON Schema keywords the document
//! uses and refuses any other, so a keyword it would silently ignore cannot
//! make an example pass.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chouquette_testkit::{ADMIN_KEY, API_KEY, TestNode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DOCUMENT: &str = include_str!("../../../../docs/openapi.json");

/// Methods an OpenAPI path item may hold that the router could serve.
const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

fn document() -> Value {
    serde_json::from_str(DOCUMENT).expect("docs/openapi.json is JSON")
}

/// `(method, path)` of every described operation.
fn described(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            assert!(
                METHODS.contains(&method.as_str()),
                "{path}: `{method}` is not a method this test knows"
            );
            out.insert((method.clone(), path.clone()));
        }
    }
    out
}

// ---------------------------------------------------------------- 1. routes

/// Files outside `src/api/` that may call `.route(`: the public listener's
/// router (`serve.rs`), the demo's, and the edge's own `route` method. Any
/// other file that does must be classified here: its routes are either
/// internal (move them under `api/`) or not.
const NOT_INTERNAL: [&str; 3] = ["serve.rs", "demo/mod.rs", "reverse_proxy.rs"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without `//` comments, so a doc example is not a route.
fn code_of(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `.route("<path>", <method router>)` calls of `code`: each path with
/// the methods (`get(`, `post(`, `.delete(`...) of its method router.
/// Anything this reading cannot follow is an error, never skipped.
fn routes_in(code: &str, file: &str) -> Result<Vec<(String, String)>, String> {
    for unsupported in [".nest(", ".nest_service(", ".route_service(", ".fallback("] {
        if code.contains(unsupported) {
            return Err(format!(
                "{file}: `{unsupported}` on the internal router: describe its routes in \
                 docs/openapi.json and teach tests/gateway/openapi.rs to read it"
            ));
        }
    }
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(".route(") {
        let call = &rest[at + ".route(".len()..];
        let args = call.trim_start();
        let Some(literal) = args.strip_prefix('"') else {
            return Err(format!(
                "{file}: a `.route(` whose path is not a string literal: {}",
                &args[..args.len().min(60)]
            ));
        };
        let end = literal
            .find('"')
            .ok_or(format!("{file}: unterminated path"))?;
        let path = &literal[..end];
        // The method router: up to the `)` closing `.route(`.
        let mut depth = 1usize;
        let mut close = None;
        for (i, c) in call.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(i);
                        break;
                    }
                }
                _ => {}
            }
        }
        let close = close.ok_or(format!("{file}: unbalanced `.route(`"))?;
        let router = &call[..close];
        let mut methods = Vec::new();
        for method in METHODS {
            let token = format!("{method}(");
            let mut from = 0;
            while let Some(i) = router[from..].find(&token) {
                let start = from + i;
                let before = router[..start].chars().last();
                let qualified = router[..start].ends_with("routing::");
                let is_call = match before {
                    Some(c) => !(c.is_alphanumeric() || c == '_' || c == ':') || qualified,
                    None => true,
                };
                if is_call {
                    methods.push(method);
                }
                from = start + token.len();
            }
        }
        if methods.is_empty() {
            return Err(format!("{file}: no method found for `{path}`"));
        }
        out.extend(
            methods
                .into_iter()
                .map(|m| (m.to_string(), path.to_string())),
        );
        rest = &call[close..];
    }
    Ok(out)
}

/// The internal router's routes as its code declares them: every `.route(`
/// of every file under `src/api/`. A file elsewhere that calls `.route(`
/// and is not in [`NOT_INTERNAL`] is an error.
fn declared_routes() -> Result<BTreeSet<(String, String)>, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut routes = BTreeSet::new();
    for file in files {
        let name = file
            .strip_prefix(&src)
            .expect("under src")
            .to_string_lossy()
            .replace('\\', "/");
        let code = code_of(&std::fs::read_to_string(&file).expect("read source"));
        if name.starts_with("api/") {
            for route in routes_in(&code, &name)? {
                if !routes.insert(route.clone()) {
                    return Err(format!("{name}: {route:?} declared twice"));
                }
            }
        } else if code.contains(".route(") && !NOT_INTERNAL.contains(&name.as_str()) {
            return Err(format!(
                "{name} calls `.route(`: if it serves the internal listener, move it under \
                 src/api/ and describe it in docs/openapi.json; if not, add it to \
                 NOT_INTERNAL in tests/gateway/openapi.rs"
            ));
        }
    }
    Ok(routes)
}

#[test]
fn every_route_of_the_router_is_described_and_nothing_else() {
    let declared = declared_routes().unwrap_or_else(|e| panic!("{e}"));
    let described = described(&document());
    let undescribed: Vec<_> = declared.difference(&described).collect();
    let gone: Vec<_> = described.difference(&declared).collect();
    assert!(
        undescribed.is_empty(),
        "routes of the internal router missing from docs/openapi.json: {undescribed:?}"
    );
    assert!(
        gone.is_empty(),
        "described in docs/openapi.json but not in the router: {gone:?}"
    );
}

/// The reading of the router code finds what it must, and refuses what it
/// cannot follow (so the test above cannot pass by reading nothing).
#[test]
fn the_route_reader_reads_method_routers_and_refuses_the_rest() {
    let code = r#"Router::new()
        .route("/a", post(crate::x::publish).layer(limit))
        .route(
            "/b/{id}",
            get(list).delete(users::remove).post(axum::routing::post(x)),
        )"#;
    let routes = routes_in(code, "t.rs").unwrap();
    assert_eq!(
        routes,
        [
            ("post", "/a"),
            ("get", "/b/{id}"),
            ("post", "/b/{id}"),
            ("post", "/b/{id}"),
            ("delete", "/b/{id}"),
        ]
        .map(|(m, p)| (m.to_string(), p.to_string()))
    );
    assert!(routes_in(r#".route(PATH, get(x))"#, "t.rs").is_err());
    assert!(routes_in(r#".route("/x", handler)"#, "t.rs").is_err());
    assert!(routes_in(r#".nest("/v2", other())"#, "t.rs").is_err());
    // The real tree has routes, the OpenAPI one among them.
    let declared = declared_routes().unwrap();
    assert!(declared.contains(&("get".into(), "/api/v1/openapi.json".into())));
    assert!(declared.len() >= 10, "{declared:?}");
}

// ------------------------------------------------------------ 3. validation

/// Keywords that only annotate.
const ANNOTATIONS: [&str; 4] = ["description", "title", "examples", "format"];

/// Validates `value` against `schema` (a JSON Schema 2020-12 subset: the
/// keywords below; `$ref` to `#/components/...` of `doc`). Any other keyword
/// is an error, so an unsupported constraint cannot pass unchecked.
fn validate(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let Some(schema) = schema.as_object() else {
        return match schema {
            Value::Bool(true) => Ok(()),
            _ => Err(format!("{at}: schema is not an object")),
        };
    };
    for (keyword, rule) in schema {
        match keyword.as_str() {
            k if ANNOTATIONS.contains(&k) => {}
            "$ref" => {
                let target = rule
                    .as_str()
                    .and_then(|r| r.strip_prefix('#'))
                    .and_then(|pointer| doc.pointer(pointer))
                    .ok_or(format!("{at}: bad $ref {rule}"))?;
                validate(doc, target, value, at)?;
            }
            "type" => {
                let types: Vec<&str> = match rule {
                    Value::String(t) => vec![t.as_str()],
                    Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                    _ => return Err(format!("{at}: bad type {rule}")),
                };
                let ok = types.iter().any(|t| match *t {
                    "object" => value.is_object(),
                    "array" => value.is_array(),
                    "string" => value.is_string(),
                    "boolean" => value.is_boolean(),
                    "null" => value.is_null(),
                    "number" => value.is_number(),
                    "integer" => value.is_i64() || value.is_u64(),
                    _ => false,
                });
                if !ok {
                    return Err(format!("{at}: {value} is not of type {rule}"));
                }
            }
            "enum" => {
                let options = rule.as_array().ok_or(format!("{at}: bad enum"))?;
                if !options.contains(value) {
                    return Err(format!("{at}: {value} is not one of {rule}"));
                }
            }
            "const" => {
                if rule != value {
                    return Err(format!("{at}: {value} is not {rule}"));
                }
            }
            "required" => {
                if let Some(object) = value.as_object() {
                    for field in rule.as_array().ok_or(format!("{at}: bad required"))? {
                        let field = field.as_str().unwrap_or_default();
                        if !object.contains_key(field) {
                            return Err(format!("{at}: `{field}` is missing"));
                        }
                    }
                }
            }
            "properties" => {
                if let Some(object) = value.as_object() {
                    for (field, sub) in rule.as_object().ok_or(format!("{at}: bad properties"))? {
                        if let Some(v) = object.get(field) {
                            validate(doc, sub, v, &format!("{at}.{field}"))?;
                        }
                    }
                }
            }
            "additionalProperties" => {
                if let Some(object) = value.as_object() {
                    let known = schema.get("properties").and_then(Value::as_object);
                    for (field, v) in object {
                        if known.is_some_and(|k| k.contains_key(field)) {
                            continue;
                        }
                        match rule {
                            Value::Bool(false) => {
                                return Err(format!("{at}: unexpected field `{field}`"));
                            }
                            sub => validate(doc, sub, v, &format!("{at}.{field}"))?,
                        }
                    }
                }
            }
            "items" => {
                if let Some(items) = value.as_array() {
                    for (i, item) in items.iter().enumerate() {
                        validate(doc, rule, item, &format!("{at}[{i}]"))?;
                    }
                }
            }
            "minItems" => {
                let min = rule.as_u64().ok_or(format!("{at}: bad minItems"))?;
                if value.as_array().is_some_and(|a| (a.len() as u64) < min) {
                    return Err(format!("{at}: fewer than {min} items"));
                }
            }
            "minLength" | "maxLength" => {
                let bound = rule.as_u64().ok_or(format!("{at}: bad {keyword}"))?;
                if let Some(s) = value.as_str() {
                    let n = s.chars().count() as u64;
                    if (keyword == "minLength" && n < bound)
                        || (keyword == "maxLength" && n > bound)
                    {
                        return Err(format!("{at}: length {n} breaks {keyword} {bound}"));
                    }
                }
            }
            "minimum" => {
                let min = rule.as_f64().ok_or(format!("{at}: bad minimum"))?;
                if value.as_f64().is_some_and(|v| v < min) {
                    return Err(format!("{at}: {value} < {min}"));
                }
            }
            "oneOf" | "anyOf" => {
                let options = rule.as_array().ok_or(format!("{at}: bad {keyword}"))?;
                let passing = options
                    .iter()
                    .filter(|o| validate(doc, o, value, at).is_ok())
                    .count();
                let ok = if keyword == "oneOf" {
                    passing == 1
                } else {
                    passing >= 1
                };
                if !ok {
                    return Err(format!(
                        "{at}: {value} matches {passing} of the {keyword} options"
                    ));
                }
            }
            other => return Err(format!("{at}: keyword `{other}` is not supported here")),
        }
    }
    Ok(())
}

#[test]
fn the_validator_refuses_what_it_must() {
    let doc = json!({"components": {"schemas": {"P": {"type": "object", "required": ["n"],
        "additionalProperties": false, "properties": {"n": {"type": "integer", "minimum": 1}}}}}});
    let p = json!({"$ref": "#/components/schemas/P"});
    assert!(validate(&doc, &p, &json!({"n": 1}), "$").is_ok());
    assert!(validate(&doc, &p, &json!({"n": 0}), "$").is_err());
    assert!(validate(&doc, &p, &json!({"n": 1.5}), "$").is_err());
    assert!(validate(&doc, &p, &json!({}), "$").is_err());
    assert!(validate(&doc, &p, &json!({"n": 1, "x": 2}), "$").is_err());
    let either = json!({"oneOf": [p, {"type": "array", "items": p, "minItems": 1}]});
    assert!(validate(&doc, &either, &json!([{"n": 2}]), "$").is_ok());
    assert!(validate(&doc, &either, &json!([]), "$").is_err());
    assert!(validate(&doc, &json!({"enum": ["a"]}), &json!("b"), "$").is_err());
    assert!(validate(&doc, &json!({"const": true}), &json!(false), "$").is_err());
    assert!(validate(&doc, &json!({"maxLength": 2}), &json!("abc"), "$").is_err());
    assert!(
        validate(
            &doc,
            &json!({"type": ["string", "null"]}),
            &json!(null),
            "$"
        )
        .is_ok()
    );
    assert!(validate(&doc, &json!({"pattern": "^a$"}), &json!("a"), "$").is_err());
}

/// Every example with the schema it must satisfy: media-type `examples` and
/// `example`, parameter examples, and component schemas' `examples`.
fn examples(doc: &Value) -> Vec<(String, Value, Value)> {
    let mut out = Vec::new();
    let mut media = |at: String, content: &Value| {
        for (ctype, m) in content.as_object().into_iter().flatten() {
            let schema = m["schema"].clone();
            if let Some(example) = m.get("example") {
                out.push((
                    format!("{at} {ctype} example"),
                    schema.clone(),
                    example.clone(),
                ));
            }
            for (name, e) in m["examples"].as_object().into_iter().flatten() {
                let value = e.get("value").expect("an example has a value").clone();
                out.push((format!("{at} {ctype} {name}"), schema.clone(), value));
            }
        }
    };
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("item") {
            let at = format!("{} {path}", method.to_uppercase());
            if let Some(content) = op.pointer("/requestBody/content") {
                media(format!("{at} request"), content);
            }
            for (status, answer) in op["responses"].as_object().expect("responses") {
                if let Some(content) = answer.get("content") {
                    media(format!("{at} {status}"), content);
                }
            }
        }
    }
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("item") {
            for param in op["parameters"].as_array().into_iter().flatten() {
                if let Some(example) = param.get("example") {
                    let at = format!(
                        "{} {path} parameter {}",
                        method.to_uppercase(),
                        param["name"]
                    );
                    out.push((at, param["schema"].clone(), example.clone()));
                }
            }
        }
    }
    for (name, schema) in doc["components"]["schemas"].as_object().expect("schemas") {
        for (i, example) in schema["examples"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            out.push((
                format!("schema {name} example {i}"),
                schema.clone(),
                example.clone(),
            ));
        }
    }
    out
}

#[test]
fn every_example_validates_against_its_schema() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let all = examples(&doc);
    assert!(all.len() > 40, "only {} examples", all.len());
    let failures: Vec<String> = all
        .iter()
        .filter_map(|(at, schema, value)| validate(&doc, schema, value, at).err())
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

// ----------------------------------------------------- 2. and 3. on a node

/// One HTTP/1.0 answer (no chunking, the server closes).
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

async fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> Answer {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut head = format!(
        "{method} {target} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    if let Some(key) = key {
        head.push_str(&format!("Authorization: Bearer {key}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(body.as_bytes()).await.expect("write body");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("answer within 10 s")
        .expect("read answer");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// The key an operation's security asks for, if any.
fn key_for(op: &Value) -> Option<&'static str> {
    let security = op["security"].as_array()?;
    let scheme = security.first()?.as_object()?.keys().next()?.clone();
    match scheme.as_str() {
        "appApiKey" => Some(API_KEY),
        "adminKey" => Some(ADMIN_KEY),
        other => panic!("unknown security scheme {other}"),
    }
}

/// Asserts `answer` is one the operation describes: its status is listed,
/// its content type is the described one, a JSON body validates.
fn check_described(doc: &Value, op: &Value, at: &str, answer: &Answer) {
    let described = op["responses"]
        .get(answer.status.to_string())
        .unwrap_or_else(|| {
            panic!(
                "{at}: answered {} which is not described: {}",
                answer.status, answer.body
            )
        });
    let Some(content) = described.get("content").and_then(Value::as_object) else {
        return;
    };
    let ctype = answer.header("content-type").unwrap_or_default();
    let (media, spec) = content
        .iter()
        .find(|(media, _)| ctype.starts_with(media.as_str()))
        .unwrap_or_else(|| panic!("{at}: content type {ctype:?} is not described"));
    if media == "application/json" {
        let body: Value = serde_json::from_str(&answer.body)
            .unwrap_or_else(|e| panic!("{at}: answer is not JSON ({e}): {}", answer.body));
        if let Err(e) = validate(doc, &spec["schema"], &body, at) {
            panic!("{at}: the real answer does not match its schema: {e}\n{body}");
        }
    }
}

/// The request target of an operation: its path with the example of each
/// required query parameter.
fn target(path: &str, op: &Value) -> String {
    let query: Vec<(String, String)> = op["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["in"] == "query")
        .map(|p| {
            let example = p["example"]
                .as_str()
                .expect("query parameters have an example");
            (
                p["name"].as_str().expect("name").to_string(),
                example.to_string(),
            )
        })
        .collect();
    if query.is_empty() {
        path.to_string()
    } else {
        format!(
            "{path}?{}",
            serde_urlencoded::to_string(&query).expect("query")
        )
    }
}

#[tokio::test]
async fn every_described_route_is_served_and_answers_as_described() {
    let doc = document();
    let node = TestNode::base().await;
    let addr = node.running.internal;
    let mut sent = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        assert!(
            !path.contains('{'),
            "{path}: path parameters need example values here"
        );
        let item = item.as_object().expect("item");
        for (method, op) in item {
            let verb = method.to_uppercase();
            let target = target(path, op);
            let key = key_for(op);
            let bodies: Vec<(String, Value)> =
                match op.pointer("/requestBody/content/application~1json/examples") {
                    Some(examples) => examples
                        .as_object()
                        .expect("examples")
                        .iter()
                        .map(|(name, e)| (name.clone(), e["value"].clone()))
                        .collect(),
                    None => Vec::new(),
                };
            if bodies.is_empty() {
                let answer = send(addr, &verb, &target, key, None).await;
                let at = format!("{verb} {target}");
                assert!(
                    ![404, 405].contains(&answer.status),
                    "{at}: {}",
                    answer.status
                );
                check_described(&doc, op, &at, &answer);
                sent += 1;
            }
            // A request example is a working request: 200, or the status
            // its operation names in `x-example-status` when a fresh node
            // cannot answer it otherwise (a call to a user who has no
            // connection is `404 not_connected`, at once); that 404 is the
            // route's own JSON answer, checked against its description.
            let expected = op
                .get("x-example-status")
                .and_then(Value::as_u64)
                .unwrap_or(200);
            for (name, body) in &bodies {
                let answer = send(addr, &verb, &target, key, Some(body)).await;
                let at = format!("{verb} {target} example {name}");
                assert!(
                    answer.status != 405 && (answer.status != 404 || expected == 404),
                    "{at}: {}",
                    answer.status
                );
                assert_eq!(u64::from(answer.status), expected, "{at}: {}", answer.body);
                check_described(&doc, op, &at, &answer);
                sent += 1;
            }
            if key.is_some() {
                let body = bodies.first().map(|(_, b)| b);
                let at = format!("{verb} {target} without a key");
                let answer = send(addr, &verb, &target, None, body).await;
                assert_eq!(answer.status, 401, "{at}: {}", answer.body);
                check_described(&doc, op, &at, &answer);
                let at = format!("{verb} {target} with a wrong key");
                let answer = send(addr, &verb, &target, Some("wrong-key"), body).await;
                assert_eq!(answer.status, 403, "{at}: {}", answer.body);
                check_described(&doc, op, &at, &answer);
            }
        }
        // Every method not described on a described path is not served.
        for method in METHODS {
            if !item.contains_key(method) {
                let verb = method.to_uppercase();
                let answer = send(addr, &verb, path, Some(ADMIN_KEY), None).await;
                assert_eq!(
                    answer.status, 405,
                    "{verb} {path} is served but not described"
                );
            }
        }
    }
    assert!(sent >= 18, "only {sent} requests");
}

#[tokio::test]
async fn the_description_is_served_open_as_json() {
    let node = TestNode::base().await;
    let answer = send(
        node.running.internal,
        "GET",
        "/api/v1/openapi.json",
        None,
        None,
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(answer.body, DOCUMENT);
    // The description's version is the binary's (bump both together).
    assert_eq!(document()["info"]["version"], env!("CARGO_PKG_VERSION"));
}
