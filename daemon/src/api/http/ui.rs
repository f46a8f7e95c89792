//! `/ui/`: the web dashboard's static files, built into the binary (see `daemon/build.rs`).
//! Served without a token: they hold no data; every call the page makes carries the token the
//! operator types in. Only names in the built-in table are served (no filesystem behind it).

use std::sync::OnceLock;

use hyper::header::{HeaderValue, CACHE_CONTROL, ETAG, IF_NONE_MATCH, LOCATION};
use hyper::{HeaderMap, Method, StatusCode};
use sha2::{Digest, Sha256};

use super::response::{full, with_type, Response};

/// (path under /ui/, contents).
const ASSETS: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));

/// The page loads only its own scripts and styles and talks only to this daemon. Inline styles
/// are allowed because xterm.js sizes its rows with a `<style>` element it creates; no inline
/// script is.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' blob: data:; font-src 'self'; connect-src 'self'; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Whether a request is for the dashboard (answered by [`serve`], before any token check).
pub fn is_ui(method: &Method, path: &str) -> bool {
    (method == Method::GET || method == Method::HEAD) && (path == "/ui" || path.starts_with("/ui/"))
}

pub fn serve(path: &str, headers: &HeaderMap) -> Response {
    if path == "/ui" {
        let mut r = with_type(StatusCode::PERMANENT_REDIRECT, "text/plain", "/ui/\n");
        r.headers_mut()
            .insert(LOCATION, HeaderValue::from_static("/ui/"));
        return r;
    }
    let name = match path.strip_prefix("/ui/").unwrap_or_default() {
        "" => "index.html",
        name => name,
    };
    let Some((index, body)) = ASSETS
        .iter()
        .enumerate()
        .find(|(_, (n, _))| *n == name)
        .map(|(i, (_, b))| (i, *b))
    else {
        return with_type(
            StatusCode::NOT_FOUND,
            "text/plain",
            "no such file in /ui/\n",
        );
    };
    let etag = &etags()[index];
    let mut r = if headers
        .get(IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        let mut r = hyper::Response::new(full(Vec::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        with_type(StatusCode::OK, content_type(name), body)
    };
    let h = r.headers_mut();
    // Paths carry no version: the browser must ask each time, and gets 304 while unchanged.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(ETAG, v);
    }
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    r
}

/// One strong ETag per asset: a digest of its contents, computed once.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|(_, body)| {
                let d = Sha256::digest(body);
                let hex: String = d[..12].iter().map(|b| format!("{b:02x}")).collect();
                format!("\"{hex}\"")
            })
            .collect()
    })
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "text/plain; charset=utf-8",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_have_types_and_unknown_names_are_404() {
        let r = serve("/ui/", &HeaderMap::new());
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
        assert!(r.headers().contains_key("content-security-policy"));
        let r = serve("/ui/app.js", &HeaderMap::new());
        assert_eq!(
            r.headers()["content-type"],
            "text/javascript; charset=utf-8"
        );
        let etag = r.headers()[ETAG].clone();
        let mut h = HeaderMap::new();
        h.insert(IF_NONE_MATCH, etag);
        assert_eq!(serve("/ui/app.js", &h).status(), StatusCode::NOT_MODIFIED);
        for bad in ["/ui/../Cargo.toml", "/ui/nothing.js", "/ui//etc/passwd"] {
            assert_eq!(
                serve(bad, &HeaderMap::new()).status(),
                StatusCode::NOT_FOUND,
                "{bad}"
            );
        }
        assert_eq!(
            serve("/ui", &HeaderMap::new()).status(),
            StatusCode::PERMANENT_REDIRECT
        );
    }
}
