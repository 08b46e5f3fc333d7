//! Who may see the view, and what every answer carries.
//!
//! - A random token, in the URL `remotetool web` prints, is exchanged once
//!   for an `HttpOnly; SameSite=Strict` cookie (and the address bar loses
//!   it); both are compared in constant time. Without either, 401. On a
//!   unix socket (created 0600 in a 0700 folder) the file's permissions
//!   are the guard and no token is asked.
//! - The Host header must name the address listened on (a page of another
//!   site that resolves its own name to this address, DNS rebinding, is
//!   refused).
//! - A request that changes anything is a POST whose `Sec-Fetch-Site` says
//!   this same origin (or, from a browser that sends none, whose `Origin`
//!   is this one).
//! - Every answer: `Content-Security-Policy` (nothing but this origin's own
//!   styles and script, no frames), `nosniff`, `Referrer-Policy:
//!   no-referrer`, no caching.

use std::io::Read;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::App;

/// The cookie the token is exchanged for.
pub const COOKIE: &str = "offload_token";

/// 32 random bytes, hex: the token.
pub fn new_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// What the guard checks a request against.
#[derive(Debug, Clone)]
pub struct Rules {
    /// None on a unix socket.
    pub token: Option<String>,
    /// Host header values that name this server.
    pub hosts: Vec<String>,
}

impl Rules {
    /// The Host values of a TCP address: itself, and for a loopback one
    /// `localhost` and `127.0.0.1` at the same port. On a unix socket the
    /// browser reaches a forwarded local port: any loopback name.
    pub fn for_tcp(addr: std::net::SocketAddr, token: String) -> Rules {
        let port = addr.port();
        let mut hosts = vec![addr.to_string()];
        if addr.ip().is_loopback() {
            hosts.extend([
                format!("localhost:{port}"),
                format!("127.0.0.1:{port}"),
                format!("[::1]:{port}"),
            ]);
        }
        Rules {
            token: Some(token),
            hosts,
        }
    }

    pub fn for_unix() -> Rules {
        Rules {
            token: None,
            hosts: Vec::new(),
        }
    }

    fn host_ok(&self, host: &str) -> bool {
        if self.hosts.is_empty() {
            // A unix socket, reached through `ssh -L PORT:SOCKET`.
            let name = host.rsplit_once(':').map_or(host, |(n, _)| n);
            return matches!(name, "localhost" | "127.0.0.1" | "[::1]");
        }
        self.hosts.iter().any(|h| h == host)
    }

    fn token_ok(&self, given: &str) -> bool {
        match &self.token {
            None => true,
            Some(t) => t.as_bytes().ct_eq(given.as_bytes()).into(),
        }
    }
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == COOKIE).then(|| v.to_string())
        })
}

fn query_token(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == "token").then(|| v.to_string())
    })
}

/// The query without its token.
fn without_token(query: &str) -> String {
    query
        .split('&')
        .filter(|kv| !kv.starts_with("token=") && !kv.is_empty())
        .collect::<Vec<_>>()
        .join("&")
}

fn refuse(status: StatusCode, why: &str) -> Response {
    let mut r = (status, format!("{why}\n")).into_response();
    secure(r.headers_mut());
    r
}

/// The headers every answer carries.
fn secure(h: &mut HeaderMap) {
    let set = |h: &mut HeaderMap, k: header::HeaderName, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::CACHE_CONTROL, "no-store");
}

/// The guard in front of every route.
pub async fn guard(State(app): State<App>, req: Request, next: Next) -> Response {
    let rules = &app.rules;
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !rules.host_ok(host) {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            &format!("this server does not answer for host '{host}': open the address remotetool web printed"),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        if req.method() != Method::POST {
            return refuse(StatusCode::METHOD_NOT_ALLOWED, "GET and POST only");
        }
        let site = req
            .headers()
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok());
        if site.is_some_and(|s| s != "same-origin") {
            return refuse(StatusCode::FORBIDDEN, "refused: a change from another site");
        }
        // A browser that says where the request comes from (Sec-Fetch-Site)
        // is believed: under `Referrer-Policy: no-referrer` it sends
        // `Origin: null` for its own forms. Without it, an Origin must be
        // this one.
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        if let Some(origin) = origin.filter(|_| site.is_none()) {
            let same = origin
                .strip_prefix("http://")
                .is_some_and(|o| rules.host_ok(o) && o == host);
            if !same {
                return refuse(
                    StatusCode::FORBIDDEN,
                    &format!("refused: a change from another origin ({origin}, not http://{host})"),
                );
            }
        }
    }
    let by_cookie = cookie_token(req.headers()).is_some_and(|t| rules.token_ok(&t));
    if !by_cookie && rules.token.is_some() {
        let given = query_token(req.uri().query());
        if given.as_deref().is_some_and(|t| rules.token_ok(t)) && req.method() == Method::GET {
            // Exchanged once for the cookie; the address bar loses it.
            let rest = without_token(req.uri().query().unwrap_or(""));
            let to = if rest.is_empty() {
                req.uri().path().to_string()
            } else {
                format!("{}?{rest}", req.uri().path())
            };
            let token = rules.token.clone().unwrap_or_default();
            let mut r = Response::builder()
                .status(StatusCode::SEE_OTHER)
                .header(header::LOCATION, to)
                .header(
                    header::SET_COOKIE,
                    format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"),
                )
                .body(Body::empty())
                .unwrap_or_default();
            secure(r.headers_mut());
            return r;
        }
        return refuse(
            StatusCode::UNAUTHORIZED,
            "this view needs its token: open the URL remotetool web printed (with ?token=...)",
        );
    }
    let mut r = next.run(req).await;
    secure(r.headers_mut());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_a_loopback_address() {
        let r = Rules::for_tcp("127.0.0.1:8080".parse().unwrap(), "t".into());
        assert!(r.host_ok("127.0.0.1:8080") && r.host_ok("localhost:8080"));
        assert!(!r.host_ok("evil.example:8080") && !r.host_ok("localhost:8081"));
        let u = Rules::for_unix();
        assert!(u.host_ok("localhost:9000") && !u.host_ok("evil.example:9000"));
    }

    #[test]
    fn tokens_compare_whole() {
        let r = Rules::for_tcp("127.0.0.1:1".parse().unwrap(), "abcd".into());
        assert!(r.token_ok("abcd"));
        assert!(!r.token_ok("abc") && !r.token_ok("abcde") && !r.token_ok(""));
        assert_eq!(without_token("token=x&state=run"), "state=run");
        assert_eq!(query_token(Some("a=1&token=zz")), Some("zz".into()));
    }
}
