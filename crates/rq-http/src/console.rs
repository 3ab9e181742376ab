//! The web console at `/console/`: plain HTML, CSS and JavaScript embedded in the binary,
//! with uPlot (MIT, `console/vendor/uPlot.LICENSE`) for the charts. The pages use the node's
//! own API (`/db/request`, `/status`, `/nodes`, `/metrics`, `/db/backup`, `/db/load`), so the
//! permissions of whoever uses the console apply to what it does; the pages themselves need
//! `ui`.

use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Path under `/console/`, content type, bytes.
const FILES: &[(&str, &str, &[u8])] = &[
    ("", "text/html; charset=utf-8", include_bytes!("../console/index.html")),
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../console/index.html"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../console/console.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("../console/console.css"),
    ),
    (
        "vendor/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../console/vendor/uPlot.iife.min.js"),
    ),
    (
        "vendor/uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../console/vendor/uPlot.min.css"),
    ),
    (
        "vendor/uPlot.LICENSE",
        "text/plain; charset=utf-8",
        include_bytes!("../console/vendor/uPlot.LICENSE"),
    ),
];

/// Answers `GET /console/<file>`.
pub(crate) fn serve(path: &str, method: &Method) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let file = path.strip_prefix("/console/").unwrap_or_default();
    let Some((_, kind, bytes)) = FILES.iter().find(|(p, _, _)| *p == file) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut r = (StatusCode::OK, *bytes).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("X-Content-Type-Options", HeaderValue::from_static("nosniff"));
    r
}
