//! Static files on the public listener: the demo page, or an app's own
//! `public/` folder (`[static] dir`).
//!
//! Only files below the configured folder are served: the request path is
//! split into plain segments and any `..`, hidden or absolute component is
//! refused. HTML is revalidated on every load (`no-cache`) so a deploy shows
//! at once; other assets are cached for an hour.

use std::path::{Component, Path, PathBuf};

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

/// The content type for a file name.
pub fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("ico") => "image/x-icon",
        Some("txt") => "text/plain; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// The cache policy for a content type.
pub fn cache_control(content_type: &str) -> &'static str {
    if content_type.starts_with("text/html") {
        "no-cache"
    } else {
        "public, max-age=3600"
    }
}

/// Maps a URL path to a file below `root`, or `None` if it would leave it.
pub fn resolve(root: &Path, url_path: &str) -> Option<PathBuf> {
    let relative = url_path.trim_start_matches('/');
    let relative = if relative.is_empty() || relative.ends_with('/') {
        format!("{relative}index.html")
    } else {
        relative.to_string()
    };
    let mut path = root.to_path_buf();
    for component in Path::new(&relative).components() {
        match component {
            Component::Normal(part) if !part.to_string_lossy().starts_with('.') => path.push(part),
            _ => return None,
        }
    }
    Some(path)
}

/// A response with a body, its content type and cache headers.
pub fn file_response(name: &str, body: impl Into<Body>) -> Response {
    let kind = content_type(name);
    let mut response = (StatusCode::OK, body.into()).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control(kind)),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Serves `uri` from `root`, read from disk at each request (an edit
/// shows at the next load). Without `cache_assets` (`chouquette dev`),
/// every file is revalidated, not only HTML.
pub async fn serve(root: &Path, uri: &Uri, cache_assets: bool) -> Response {
    let not_found = || (StatusCode::NOT_FOUND, "not found\n").into_response();
    let Some(path) = resolve(root, uri.path()) else {
        return not_found();
    };
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            let mut response = file_response(&path.to_string_lossy(), bytes);
            if !cache_assets {
                response
                    .headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            }
            response
        }
        Err(_) => not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_below_the_root() {
        let root = Path::new("/srv/public");
        assert_eq!(
            resolve(root, "/"),
            Some(PathBuf::from("/srv/public/index.html"))
        );
        assert_eq!(
            resolve(root, "/js/app.js"),
            Some(PathBuf::from("/srv/public/js/app.js"))
        );
        assert_eq!(resolve(root, "/../etc/passwd"), None);
        assert_eq!(resolve(root, "/a/../../b"), None);
        assert_eq!(resolve(root, "/.env"), None);
    }

    #[test]
    fn types_and_caching() {
        assert_eq!(content_type("a/B.JS"), "text/javascript; charset=utf-8");
        assert_eq!(cache_control(content_type("index.html")), "no-cache");
        assert_eq!(cache_control(content_type("x.svg")), "public, max-age=3600");
    }
}
