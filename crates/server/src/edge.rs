//! What the public listener serves besides the gateway's transports: the
//! `[[proxy]]` routes first (the longest matching prefix), then the
//! `[static]` folder, else 404. One origin can so serve a whole app — its
//! page, its backend's API and its push — as Swindon's edge server did.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::config::{ProxyRoute, StaticFiles};
use crate::reverse_proxy::ReverseProxy;
use crate::static_files;

/// The public listener's fallback.
#[derive(Debug)]
pub struct Edge {
    proxy: Option<ReverseProxy>,
    static_dir: Option<PathBuf>,
    cache_assets: bool,
}

impl Edge {
    /// The fallback for this config, `None` when it serves nothing (no
    /// proxy route, no static folder): unknown paths then get axum's 404.
    pub fn new(
        static_files: &StaticFiles,
        routes: &[ProxyRoute],
        https: bool,
    ) -> Option<Arc<Edge>> {
        let proxy = ReverseProxy::new(routes, https);
        if proxy.is_none() && static_files.dir.is_none() {
            return None;
        }
        Some(Arc::new(Edge {
            proxy,
            static_dir: static_files.dir.clone(),
            cache_assets: static_files.cache_assets,
        }))
    }

    /// Answers a request no transport route took, from `client`.
    pub async fn handle(&self, client: Option<IpAddr>, request: Request<Body>) -> Response {
        if let Some(proxy) = &self.proxy
            && proxy.takes(request.uri().path())
        {
            return proxy.forward(client, request).await;
        }
        match &self.static_dir {
            Some(dir) => static_files::serve(dir, request.uri(), self.cache_assets).await,
            None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
        }
    }
}
