//! Who may talk to the server. By default it binds to the loopback interface; binding to any
//! other address requires `--token`, and once a token is set every `/api` request must carry it
//! (`Authorization: Bearer T`, `X-Lmms-Token: T`, or `?token=T` for EventSource). Without a
//! token, the `Host` header must name the loopback address (no DNS rebinding), and a request
//! whose `Origin` is another site is refused (no cross-site requests from a browser).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::IpAddr;
use std::sync::Arc;

/// Shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 8;

/// The bind address from `--host`: an IP address or `localhost`.
pub fn parse_host(host: &str) -> Result<IpAddr, String> {
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::from([127, 0, 0, 1]));
    }
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| format!("--host `{host}`: not an IP address (e.g. 127.0.0.1 or 0.0.0.0)"))
}

/// Refuses a non-loopback bind without a token, and a token too short to guess-proof.
pub fn check_bind(host: IpAddr, token: Option<&str>) -> Result<(), String> {
    if let Some(t) = token
        && t.chars().count() < MIN_TOKEN_LEN
    {
        return Err(format!(
            "--token must have at least {MIN_TOKEN_LEN} characters"
        ));
    }
    if !host.is_loopback() && token.is_none() {
        return Err(format!(
            "--host {host} makes the server reachable from other machines: pass --token T \
             (every request must then carry it), or bind to 127.0.0.1"
        ));
    }
    Ok(())
}

/// What the guard checks on each request.
#[derive(Debug, Clone)]
pub struct Access {
    pub token: Option<String>,
    /// Accepted `Host` header values when there is no token (loopback names with the port).
    pub hosts: Vec<String>,
}

impl Access {
    pub fn new(token: Option<String>, port: u16) -> Self {
        let hosts = ["127.0.0.1", "localhost", "[::1]"]
            .iter()
            .map(|h| format!("{h}:{port}"))
            .collect();
        Access { token, hosts }
    }

    /// `Err((status, message))` when the request may not go on.
    pub fn check(
        &self,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<(), (StatusCode, String)> {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if self.token.is_none() && !self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return Err((
                StatusCode::FORBIDDEN,
                format!("Host `{host}` is not this server's loopback address"),
            ));
        }
        if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
            let same = origin
                .split_once("://")
                .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host));
            if !same {
                return Err((
                    StatusCode::FORBIDDEN,
                    format!("cross-site request from {origin} refused"),
                ));
            }
        }
        if let Some(expected) = &self.token
            && path.starts_with("/api/")
        {
            let given = request_token(query, headers);
            if !given.is_some_and(|g| token_matches(expected, &g)) {
                return Err((
                    StatusCode::UNAUTHORIZED,
                    "this server needs its token: open the URL it printed (…/?token=T)".into(),
                ));
            }
        }
        Ok(())
    }
}

/// The token a request carries, from the headers or the query string.
pub fn request_token(query: Option<&str>, headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(v.trim().to_string());
    }
    if let Some(v) = headers.get("x-lmms-token").and_then(|v| v.to_str().ok()) {
        return Some(v.trim().to_string());
    }
    let query = query?;
    let pairs: Vec<(String, String)> = serde_urlencoded_pairs(query);
    pairs
        .into_iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v)
}

fn serde_urlencoded_pairs(query: &str) -> Vec<(String, String)> {
    let uri: axum::http::Uri = match format!("/?{query}").parse() {
        Ok(u) => u,
        Err(_) => return vec![],
    };
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map(|q| q.0)
        .unwrap_or_default()
}

/// Compares in time independent of where the strings differ.
pub fn token_matches(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

/// The middleware that applies [`Access::check`] to every request.
pub async fn guard(State(access): State<Arc<Access>>, req: Request, next: Next) -> Response {
    let uri = req.uri().clone();
    match access.check(uri.path(), uri.query(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err((status, message)) => {
            (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_public_bind_needs_a_long_enough_token() {
        let lo = parse_host("127.0.0.1").unwrap();
        let any = parse_host("0.0.0.0").unwrap();
        assert!(check_bind(lo, None).is_ok());
        assert!(check_bind(parse_host("localhost").unwrap(), None).is_ok());
        assert!(check_bind(parse_host("::1").unwrap(), None).is_ok());
        let e = check_bind(any, None).unwrap_err();
        assert!(e.contains("--token"), "{e}");
        assert!(check_bind(parse_host("192.168.1.5").unwrap(), None).is_err());
        assert!(check_bind(any, Some("s3cret-token")).is_ok());
        assert!(
            check_bind(any, Some("short"))
                .unwrap_err()
                .contains("at least")
        );
        assert!(parse_host("example.com").is_err());
    }

    #[test]
    fn tokens_come_from_headers_or_the_query() {
        let h = headers(&[("authorization", "Bearer abc def")]);
        assert_eq!(request_token(None, &h).as_deref(), Some("abc def"));
        let h = headers(&[("x-lmms-token", "t1")]);
        assert_eq!(request_token(None, &h).as_deref(), Some("t1"));
        let h = HeaderMap::new();
        assert_eq!(
            request_token(Some("a=1&token=x%2By%20z"), &h).as_deref(),
            Some("x+y z")
        );
        assert_eq!(request_token(Some("a=1"), &h), None);
        assert!(token_matches("secret-1", "secret-1"));
        assert!(!token_matches("secret-1", "secret-2"));
        assert!(!token_matches("secret-1", "secret-12"));
        assert!(!token_matches("secret-1", ""));
    }

    #[test]
    fn with_a_token_every_api_request_needs_it() {
        let a = Access::new(Some("s3cret-token".into()), 8080);
        let host = ("host", "10.0.0.2:8080");
        let e = a.check("/api/info", None, &headers(&[host])).unwrap_err();
        assert_eq!(e.0, StatusCode::UNAUTHORIZED);
        assert!(
            a.check("/api/info", Some("token=wrong-token"), &headers(&[host]))
                .is_err()
        );
        assert!(
            a.check("/api/info", Some("token=s3cret-token"), &headers(&[host]))
                .is_ok()
        );
        assert!(
            a.check(
                "/api/train",
                None,
                &headers(&[host, ("authorization", "Bearer s3cret-token")])
            )
            .is_ok()
        );
        // The page itself holds no data; its script sends the token from the URL.
        assert!(a.check("/", None, &headers(&[host])).is_ok());
    }

    #[test]
    fn without_a_token_only_loopback_hosts_and_same_origin() {
        let a = Access::new(None, 7860);
        assert!(
            a.check("/api/info", None, &headers(&[("host", "127.0.0.1:7860")]))
                .is_ok()
        );
        assert!(
            a.check("/", None, &headers(&[("host", "localhost:7860")]))
                .is_ok()
        );
        let e = a
            .check(
                "/api/info",
                None,
                &headers(&[("host", "evil.example:7860")]),
            )
            .unwrap_err();
        assert_eq!(e.0, StatusCode::FORBIDDEN);
        let same = [
            ("host", "127.0.0.1:7860"),
            ("origin", "http://127.0.0.1:7860"),
        ];
        assert!(a.check("/api/train", None, &headers(&same)).is_ok());
        let cross = [
            ("host", "127.0.0.1:7860"),
            ("origin", "https://evil.example"),
        ];
        let e = a.check("/api/train", None, &headers(&cross)).unwrap_err();
        assert!(e.1.contains("cross-site"), "{}", e.1);
    }
}
