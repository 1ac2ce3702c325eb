//! Serving the description: `/openapi.json`, and `/docs`, a page that
//! renders it. The page is ours and self-contained (no CDN, no framework):
//! it must work where ember-api runs, often without internet access.

use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::response::IntoResponse;

use crate::routes::RouteTable;

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("page.js");
const STYLE: &str = include_str!("page.css");

/// Scripts and styles from this origin only: the page renders text from
/// the document, never markup, and loads nothing else.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'";

/// The description's routes; they need no credentials (routes are no secret).
pub fn routes<S: Clone + Send + Sync + 'static>() -> RouteTable<S> {
    RouteTable::new()
        .get("/openapi.json", || async { ([(CONTENT_TYPE, "application/json")], super::document_text()) })
        .get("/docs", || async { asset("text/html; charset=utf-8", PAGE) })
        .get("/docs/page.js", || async { asset("text/javascript; charset=utf-8", SCRIPT) })
        .get("/docs/page.css", || async { asset("text/css; charset=utf-8", STYLE) })
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    ([(CONTENT_TYPE, content_type), (CONTENT_SECURITY_POLICY, POLICY), (CACHE_CONTROL, "no-cache")], body)
}
