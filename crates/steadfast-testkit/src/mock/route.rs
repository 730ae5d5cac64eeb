//! [`Route`]: which requests a script answers, and why a request was not matched.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::fmt::{self, Write as _};
use std::sync::Arc;

use bytes::Bytes;
use http::Method;
use serde_json::Value;

use super::record::{RecordedCall, percent_decode, query_pairs};

/// Which requests a script answers: method, path, host, query, headers, body
/// and custom predicates, all of which must match.
///
/// Build one from a method and a path, then narrow it:
///
/// ```
/// use steadfast_testkit::Route;
/// use serde_json::json;
///
/// let r = Route::get("/users/{id}")
///     .query("fields", "name")
///     .header("x-api-key", "k");
/// assert_eq!(r.to_string(), "GET /users/{id}?fields=name, header x-api-key: k");
///
/// let r = Route::post("https://api.test/orders").json_body(json!({"sku": 1}));
/// assert_eq!(r.to_string(), r#"POST /orders, host api.test, json {"sku":1}"#);
/// ```
///
/// # Paths
///
/// - Literal segments match exactly, after percent-decoding on both sides
///   (`/a%20b` and `/a b` are the same path); a trailing slash matters.
/// - `{name}` matches exactly one non-empty segment and captures it
///   ([`RecordedCall::param`]).
/// - `*` as the last segment matches the rest of the path, including
///   nothing: `/users/*` matches `/users`, `/users/`, `/users/7/posts`,
///   but not `/users2`. Elsewhere `*` matches one segment.
/// - A query string in the path (`/users?page=1`) adds [`Route::query`]
///   matchers; a full URL (`https://api.test/users`) adds a [`Route::host`]
///   matcher (the scheme is ignored).
///
/// # Matchers
///
/// Query and header matchers are subset matches: the request may carry
/// other parameters and headers, and a matcher passes when any of the
/// request's values for that name equals the expected one. Header names are
/// case-insensitive. A header line is also read as a comma-separated list
/// (RFC 9110 §5.3), so `.header("accept", "b")` matches `accept: a, b`;
/// commas inside quoted strings do not split, and a value that holds a
/// comma itself (a date) still matches the whole line.
/// [`Route::json_body`] compares JSON semantically (key order and `1` vs
/// `1.0` do not matter).
#[derive(Clone, Default)]
pub struct Route {
    method: Option<Method>,
    host: Option<HostPattern>,
    path: Option<PathPattern>,
    checks: Vec<Check>,
}

#[derive(Clone)]
enum Check {
    Query { name: String, value: String },
    Header { name: String, value: String },
    HeaderPresent { name: String },
    Json(Result<Value, String>),
    Body(Bytes),
    Custom(Arc<dyn Fn(&RecordedCall) -> bool + Send + Sync>),
}

impl Route {
    /// Any method, any path, any host: matches every request until narrowed.
    pub fn any() -> Self {
        Self::default()
    }

    /// Requests with `method` to `path` (a pattern; see [Paths](#paths)).
    pub fn method(method: Method, path: impl AsRef<str>) -> Self {
        let route = Self {
            method: Some(method),
            ..Self::default()
        };
        route.path(path)
    }

    /// `GET` requests to `path`.
    pub fn get(path: impl AsRef<str>) -> Self {
        Self::method(Method::GET, path)
    }

    /// `POST` requests to `path`.
    pub fn post(path: impl AsRef<str>) -> Self {
        Self::method(Method::POST, path)
    }

    /// `PUT` requests to `path`.
    pub fn put(path: impl AsRef<str>) -> Self {
        Self::method(Method::PUT, path)
    }

    /// `PATCH` requests to `path`.
    pub fn patch(path: impl AsRef<str>) -> Self {
        Self::method(Method::PATCH, path)
    }

    /// `DELETE` requests to `path`.
    pub fn delete(path: impl AsRef<str>) -> Self {
        Self::method(Method::DELETE, path)
    }

    /// `HEAD` requests to `path`.
    pub fn head(path: impl AsRef<str>) -> Self {
        Self::method(Method::HEAD, path)
    }

    /// Sets the path pattern (replacing any earlier one); a query string or a
    /// full URL in it adds query and host matchers. See [Paths](#paths).
    pub fn path(mut self, path: impl AsRef<str>) -> Self {
        let mut target = path.as_ref();
        for scheme in ["http://", "https://"] {
            if target
                .get(..scheme.len())
                .is_some_and(|prefix| prefix.eq_ignore_ascii_case(scheme))
            {
                let rest = &target[scheme.len()..];
                let end = rest.find(['/', '?']).unwrap_or(rest.len());
                self.host = Some(HostPattern::parse(&rest[..end]));
                target = &rest[end..];
                break;
            }
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        self.path = Some(PathPattern::parse(path));
        for (name, value) in query_pairs(Some(query)) {
            // Decoded already: pushed as they are.
            self.checks.push(Check::Query {
                name: name.into_owned(),
                value: value.into_owned(),
            });
        }
        self
    }

    /// Requests to `host` (case-insensitive), read from the URI or else the
    /// `Host` header. With a port (`api.test:8080`) the port must match too
    /// (80 and 443 are implied by `http` and `https` URIs).
    pub fn host(mut self, host: impl AsRef<str>) -> Self {
        self.host = Some(HostPattern::parse(host.as_ref()));
        self
    }

    /// Requests whose query carries `name=value` (other parameters are
    /// allowed). Both sides are compared percent-decoded, `+` as a space,
    /// as a URL's query reads: `.query("q", "a b")`, `.query("q", "a%20b")`
    /// and `.query("q", "a+b")` all match `?q=a%20b` and `?q=a+b`; a
    /// literal `+` is `%2B`.
    pub fn query(mut self, name: impl AsRef<str>, value: impl AsRef<str>) -> Self {
        self.checks.push(Check::Query {
            name: percent_decode(name.as_ref(), true).into_owned(),
            value: percent_decode(value.as_ref(), true).into_owned(),
        });
        self
    }

    /// Requests with header `name` (case-insensitive) set to `value`, or
    /// listing it in a comma-separated value (see [Matchers](#matchers)).
    pub fn header(mut self, name: impl AsRef<str>, value: impl Into<String>) -> Self {
        self.checks.push(Check::Header {
            name: name.as_ref().to_ascii_lowercase(),
            value: value.into(),
        });
        self
    }

    /// Requests that carry header `name`, whatever its value.
    pub fn header_present(mut self, name: impl AsRef<str>) -> Self {
        self.checks.push(Check::HeaderPresent {
            name: name.as_ref().to_ascii_lowercase(),
        });
        self
    }

    /// Requests whose body is JSON equal to `expected`: object key order and
    /// number spelling (`1` vs `1.0`) do not matter.
    pub fn json_body(mut self, expected: impl serde::Serialize) -> Self {
        let expected = serde_json::to_value(expected).map_err(|e| e.to_string());
        self.checks.push(Check::Json(expected));
        self
    }

    /// Requests whose body is exactly `body`.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.checks.push(Check::Body(body.into()));
        self
    }

    /// Requests for which `predicate` returns `true`.
    ///
    /// The predicate sees the whole request; it runs outside the mock's
    /// locks, once per request for every route tried.
    pub fn matching(
        mut self,
        predicate: impl Fn(&RecordedCall) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.checks.push(Check::Custom(Arc::new(predicate)));
        self
    }

    /// Checks every matcher against `req`: how many passed, which failed and
    /// why, and the captured path parameters.
    pub(crate) fn evaluate(&self, req: &RequestView<'_>) -> Verdict {
        let mut v = Verdict::default();
        if let Some(method) = &self.method {
            v.check(*method == req.call.method, || {
                format!("method was `{}`, expected `{method}`", req.call.method)
            });
        }
        if let Some(host) = &self.host {
            match &req.host {
                Some(actual) => v.check(host.matches(actual), || {
                    format!("host was `{actual}`, expected `{host}`")
                }),
                None => v.fail(format!(
                    "request has no host (neither an absolute URI nor a Host header), expected `{host}`"
                )),
            }
        }
        if let Some(path) = &self.path {
            match path.captures(&req.segments) {
                Some(params) => {
                    v.passed += 1;
                    v.params = params;
                }
                None => v.fail(format!(
                    "path was `{}`, expected `{}`",
                    req.call.uri.path(),
                    path.raw
                )),
            }
        }
        let mut custom = 0;
        for check in &self.checks {
            if matches!(check, Check::Custom(_)) {
                custom += 1;
            }
            check.evaluate(req, &mut v, custom);
        }
        v
    }
}

impl Check {
    /// Adds this matcher's result to `v`; `custom` numbers the
    /// `.matching(..)` predicates for messages.
    fn evaluate(&self, req: &RequestView<'_>, v: &mut Verdict, custom: usize) {
        match self {
            Self::Query { name, value } => {
                let mut seen = req.query.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
                let found = seen.clone().any(|v| v == value);
                v.check(found, || match seen.next() {
                    None => format!("query `{name}` missing, expected `{value}`"),
                    Some(first) => {
                        let mut was = format!("`{first}`");
                        for more in seen {
                            let _ = write!(was, ", `{more}`");
                        }
                        format!("query `{name}` was {was}, expected `{value}`")
                    }
                });
            }
            Self::Header { name, value } => {
                let all = req.call.headers.get_all(name.as_str());
                let found = all
                    .iter()
                    .any(|v| header_value_matches(v.as_bytes(), value));
                v.check(found, || {
                    let mut seen = all.iter().map(|v| String::from_utf8_lossy(v.as_bytes()));
                    match seen.next() {
                        None => format!("header `{name}` missing, expected `{value}`"),
                        Some(first) => {
                            let mut was = format!("`{}`", snippet(&first));
                            for more in seen {
                                let _ = write!(was, ", `{}`", snippet(&more));
                            }
                            format!("header `{name}` was {was}, expected `{value}`")
                        }
                    }
                });
            }
            Self::HeaderPresent { name } => {
                let found = req.call.headers.contains_key(name.as_str());
                v.check(found, || format!("header `{name}` missing"));
            }
            Self::Json(Err(e)) => {
                v.fail(format!("the expected JSON could not be serialized: {e}"));
            }
            Self::Json(Ok(expected)) => match req.json() {
                Ok(actual) => match json_diff(actual, expected, &mut "$".to_owned()) {
                    None => v.passed += 1,
                    Some(diff) => v.fail(format!("json body differs at {diff}")),
                },
                Err(e) => v.fail(format!(
                    "body is not JSON ({e}), expected `{}`",
                    snippet(&expected.to_string())
                )),
            },
            Self::Body(expected) => {
                let body = &req.call.body;
                v.check(body == expected, || {
                    format!(
                        "body was `{}` ({} bytes), expected `{}` ({} bytes)",
                        snippet(&body.escape_ascii().to_string()),
                        body.len(),
                        snippet(&expected.escape_ascii().to_string()),
                        expected.len()
                    )
                });
            }
            Self::Custom(predicate) => {
                v.check(predicate(req.call), || {
                    format!("`.matching(..)` predicate #{custom} returned false")
                });
            }
        }
    }
}

/// Whether one header field line carries `expected`: the whole line, or one
/// element of it read as a comma-separated list (RFC 9110 §5.3: `a, b` on
/// one line is the same as `a` and `b` on two). Commas inside quoted strings
/// do not separate; elements are compared without their surrounding spaces
/// and tabs. The whole-line comparison keeps values that themselves hold a
/// comma, such as an HTTP date, matching.
fn header_value_matches(line: &[u8], expected: &str) -> bool {
    let expected = expected.as_bytes();
    line == expected || list_elements(line).any(|element| element == expected)
}

/// The elements of a comma-separated field value, trimmed of OWS; commas in
/// a quoted string (with `\` escapes) are part of the element.
fn list_elements(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(line);
    std::iter::from_fn(move || {
        let text = rest?;
        let mut quoted = false;
        let mut escaped = false;
        let mut end = text.len();
        for (i, &b) in text.iter().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                b',' if !quoted => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        rest = text.get(end + 1..);
        Some(text[..end].trim_ascii())
    })
}

impl fmt::Display for Route {
    /// `GET /users/{id}?page=1, host api.test, header x-api-key: k, json {"a":1}`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.method {
            Some(m) => write!(f, "{m} ")?,
            None => f.write_str("ANY ")?,
        }
        match &self.path {
            Some(p) => f.write_str(&p.raw)?,
            None => f.write_str("*")?,
        }
        let mut sep = '?';
        for check in &self.checks {
            if let Check::Query { name, value } = check {
                write!(f, "{sep}{name}={value}")?;
                sep = '&';
            }
        }
        if let Some(host) = &self.host {
            write!(f, ", host {host}")?;
        }
        for check in &self.checks {
            match check {
                Check::Query { .. } => {}
                Check::Header { name, value } => write!(f, ", header {name}: {value}")?,
                Check::HeaderPresent { name } => write!(f, ", header {name} present")?,
                Check::Json(Ok(v)) => write!(f, ", json {}", snippet(&v.to_string()))?,
                Check::Json(Err(_)) => f.write_str(", json <unserializable>")?,
                Check::Body(b) => write!(f, ", body `{}`", snippet(&b.escape_ascii().to_string()))?,
                Check::Custom(_) => f.write_str(", matching(..)")?,
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Route")
            .field(&format_args!("{self}"))
            .finish()
    }
}

/// The outcome of checking one route against one request.
#[derive(Debug, Default)]
pub(crate) struct Verdict {
    /// How many matchers passed.
    pub(crate) passed: usize,
    /// One explanation per failed matcher; empty means the route matches.
    pub(crate) mismatches: Vec<String>,
    /// `{name}` captures of the path.
    pub(crate) params: Vec<(String, String)>,
}

impl Verdict {
    pub(crate) fn is_match(&self) -> bool {
        self.mismatches.is_empty()
    }

    fn check(&mut self, ok: bool, why: impl FnOnce() -> String) {
        if ok {
            self.passed += 1;
        } else {
            self.mismatches.push(why());
        }
    }

    fn fail(&mut self, why: String) {
        self.mismatches.push(why);
    }
}

/// A request decoded once for matching against every route.
pub(crate) struct RequestView<'a> {
    call: &'a RecordedCall,
    segments: Vec<Cow<'a, str>>,
    query: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    host: Option<HostPattern>,
    json: OnceCell<Result<Value, String>>,
}

impl<'a> RequestView<'a> {
    pub(crate) fn new(call: &'a RecordedCall) -> Self {
        let uri = &call.uri;
        let host = match uri.authority() {
            Some(authority) => {
                let default_port = match uri.scheme_str() {
                    Some(s) if s.eq_ignore_ascii_case("https") => Some(443),
                    Some(s) if s.eq_ignore_ascii_case("http") => Some(80),
                    _ => None,
                };
                Some(HostPattern {
                    host: authority.host().to_ascii_lowercase(),
                    port: authority.port_u16().or(default_port),
                })
            }
            None => call
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(HostPattern::parse),
        };
        Self {
            call,
            segments: segments(uri.path())
                .map(|s| percent_decode(s, false))
                .collect(),
            query: query_pairs(uri.query()).collect(),
            host,
            json: OnceCell::new(),
        }
    }

    fn json(&self) -> Result<&Value, &str> {
        self.json
            .get_or_init(|| serde_json::from_slice(&self.call.body).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(String::as_str)
    }
}

/// The segments of a path: `/a/b/` is `["a", "b", ""]`, `/` is `[""]`.
fn segments(path: &str) -> std::str::Split<'_, char> {
    path.strip_prefix('/').unwrap_or(path).split('/')
}

#[derive(Clone, Debug)]
struct PathPattern {
    raw: String,
    segments: Vec<Segment>,
}

#[derive(Clone, Debug)]
enum Segment {
    Literal(String),
    Param(String),
    /// `*` before the last segment: exactly one segment.
    One,
    /// `*` as the last segment: the rest of the path, possibly nothing.
    Rest,
}

impl PathPattern {
    fn parse(raw: &str) -> Self {
        let raw = if raw.starts_with('/') {
            raw.to_owned()
        } else {
            format!("/{raw}")
        };
        let parts: Vec<&str> = segments(&raw).collect();
        let last = parts.len() - 1;
        let segments = parts
            .iter()
            .enumerate()
            .map(|(i, s)| match *s {
                "*" if i == last => Segment::Rest,
                "*" => Segment::One,
                s if s.len() > 2 && s.starts_with('{') && s.ends_with('}') => {
                    Segment::Param(s[1..s.len() - 1].to_owned())
                }
                s => Segment::Literal(percent_decode(s, false).into_owned()),
            })
            .collect();
        Self { raw, segments }
    }

    /// The captured parameters when `actual` matches, `None` otherwise.
    fn captures(&self, actual: &[Cow<'_, str>]) -> Option<Vec<(String, String)>> {
        let mut params = Vec::new();
        let mut actual = actual.iter();
        for seg in &self.segments {
            if matches!(seg, Segment::Rest) {
                return Some(params);
            }
            let part = actual.next()?;
            match seg {
                Segment::Literal(lit) if lit == part => {}
                Segment::One if !part.is_empty() => {}
                Segment::Param(name) if !part.is_empty() => {
                    params.push((name.clone(), part.clone().into_owned()));
                }
                _ => return None,
            }
        }
        actual.next().is_none().then_some(params)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct HostPattern {
    host: String,
    port: Option<u16>,
}

impl HostPattern {
    /// `api.test`, `api.test:8080`, `[::1]:8080`; an unparsable port stays
    /// part of the host name (and simply never matches).
    fn parse(s: &str) -> Self {
        let split = if s.starts_with('[') {
            s.find(']')
                .map(|end| (&s[..=end], s[end + 1..].strip_prefix(':')))
        } else {
            Some(match s.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            })
        };
        match split {
            Some((host, port)) => match port.map(str::parse::<u16>) {
                None => Self {
                    host: host.to_ascii_lowercase(),
                    port: None,
                },
                Some(Ok(port)) => Self {
                    host: host.to_ascii_lowercase(),
                    port: Some(port),
                },
                Some(Err(_)) => Self {
                    host: s.to_ascii_lowercase(),
                    port: None,
                },
            },
            None => Self {
                host: s.to_ascii_lowercase(),
                port: None,
            },
        }
    }

    /// `self` is the expectation: a port is compared only when it names one.
    fn matches(&self, actual: &Self) -> bool {
        self.host == actual.host && (self.port.is_none() || self.port == actual.port)
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

/// The first difference between `actual` and `expected`, as
/// ``"`$.path`: was X, expected Y"``; `None` when they are equal as JSON.
fn json_diff(actual: &Value, expected: &Value, path: &mut String) -> Option<String> {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => {
            for (key, e_val) in e {
                let len = path.len();
                let _ = write!(path, ".{key}");
                let diff = match a.get(key) {
                    Some(a_val) => json_diff(a_val, e_val, path),
                    None => Some(format!(
                        "`{path}`: missing, expected `{}`",
                        snippet(&e_val.to_string())
                    )),
                };
                path.truncate(len);
                if diff.is_some() {
                    return diff;
                }
            }
            a.keys()
                .find(|k| !e.contains_key(*k))
                .map(|k| format!("`{path}`: unexpected key `{k}`"))
        }
        (Value::Array(a), Value::Array(e)) => {
            if a.len() != e.len() {
                return Some(format!(
                    "`{path}`: array has {} items, expected {}",
                    a.len(),
                    e.len()
                ));
            }
            a.iter().zip(e).enumerate().find_map(|(i, (a, e))| {
                let len = path.len();
                let _ = write!(path, "[{i}]");
                let diff = json_diff(a, e, path);
                path.truncate(len);
                diff
            })
        }
        (Value::Number(a), Value::Number(e)) if numbers_equal(a, e) => None,
        (a, e) if a == e => None,
        (a, e) => Some(format!(
            "`{path}`: was `{}`, expected `{}`",
            snippet(&a.to_string()),
            snippet(&e.to_string())
        )),
    }
}

fn numbers_equal(a: &serde_json::Number, b: &serde_json::Number) -> bool {
    if let (Some(a), Some(b)) = (a.as_i64(), b.as_i64()) {
        return a == b;
    }
    if let (Some(a), Some(b)) = (a.as_u64(), b.as_u64()) {
        return a == b;
    }
    // JSON has one number type: 1 and 1.0 are the same value.
    #[expect(
        clippy::float_cmp,
        reason = "exact equality is the JSON semantics wanted here"
    )]
    match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// `s` cut to a readable length for one-line messages.
fn snippet(s: &str) -> Cow<'_, str> {
    const MAX: usize = 80;
    match s.char_indices().nth(MAX) {
        None => Cow::Borrowed(s),
        Some((cut, _)) => Cow::Owned(format!("{}…", &s[..cut])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn path_captures(pattern: &str, path: &str) -> Option<Vec<(String, String)>> {
        let segs: Vec<_> = segments(path).map(|s| percent_decode(s, false)).collect();
        PathPattern::parse(pattern).captures(&segs)
    }

    #[test]
    fn path_patterns() {
        assert_eq!(path_captures("/users", "/users"), Some(vec![]));
        assert_eq!(path_captures("/users", "/users/"), None);
        assert_eq!(path_captures("users", "/users"), Some(vec![]));
        assert_eq!(path_captures("/", "/"), Some(vec![]));
        assert_eq!(path_captures("/", "/x"), None);
        assert_eq!(
            path_captures("/users/{id}/posts/{post}", "/users/7/posts/a%20b"),
            Some(vec![
                ("id".into(), "7".into()),
                ("post".into(), "a b".into())
            ])
        );
        assert_eq!(path_captures("/users/{id}", "/users/"), None);
        assert_eq!(path_captures("/users/{id}", "/users/7/x"), None);
        for ok in ["/users", "/users/", "/users/7", "/users/7/posts"] {
            assert!(path_captures("/users/*", ok).is_some(), "{ok}");
        }
        assert_eq!(path_captures("/users/*", "/users2"), None);
        assert_eq!(path_captures("/*/x", "/a/x"), Some(vec![]));
        assert_eq!(path_captures("/*/x", "/a/b/x"), None);
        assert_eq!(path_captures("/a%20b", "/a b"), Some(vec![]));
        assert_eq!(
            path_captures("/{}", "/{}"),
            Some(vec![]),
            "`{{}}` is a literal"
        );
    }

    #[test]
    fn host_patterns() {
        let p = HostPattern::parse;
        assert!(p("API.test").matches(&p("api.test:8080")));
        assert!(p("api.test:8080").matches(&p("api.test:8080")));
        assert!(!p("api.test:8080").matches(&p("api.test:80")));
        assert!(!p("api.test:8080").matches(&p("api.test")));
        assert_eq!(p("[::1]:8080").to_string(), "[::1]:8080");
        assert_eq!(p("[::1]").to_string(), "[::1]");
        assert_eq!(p("a:b:c").to_string(), "a:b:c");
        assert_eq!(p("[::1").to_string(), "[::1");
    }

    #[test]
    fn json_is_compared_semantically() {
        let diff = |a: Value, e: Value| json_diff(&a, &e, &mut "$".to_owned());
        assert_eq!(
            diff(
                json!({"a": 1, "b": [1.0, 2]}),
                json!({"b": [1, 2.0], "a": 1.0})
            ),
            None
        );
        assert_eq!(
            diff(
                json!({"items": [{"sku": 2}]}),
                json!({"items": [{"sku": 1}]})
            )
            .unwrap(),
            "`$.items[0].sku`: was `2`, expected `1`"
        );
        assert_eq!(
            diff(json!({"a": 1}), json!({"a": 1, "b": null})).unwrap(),
            "`$.b`: missing, expected `null`"
        );
        assert_eq!(
            diff(json!({"a": 1, "z": 0}), json!({"a": 1})).unwrap(),
            "`$`: unexpected key `z`"
        );
        assert_eq!(
            diff(json!([1]), json!([1, 2])).unwrap(),
            "`$`: array has 1 items, expected 2"
        );
        assert_eq!(
            diff(json!(u64::MAX), json!(-1)).unwrap(),
            format!("`$`: was `{}`, expected `-1`", u64::MAX)
        );
        assert_eq!(
            diff(json!("1"), json!(1)).unwrap(),
            "`$`: was `\"1\"`, expected `1`"
        );
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            // Quarters print and parse back exactly; whole ones test `1` vs `1.0`.
            (-1_000_000_i32..1_000_000).prop_map(|n| Value::from(f64::from(n) / 4.0)),
            "[a-z0-9 ]{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::btree_map("[a-z]{1,4}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn header_lists_split_outside_quotes() {
        let elements = |line: &str| -> Vec<String> {
            list_elements(line.as_bytes())
                .map(|e| String::from_utf8_lossy(e).into_owned())
                .collect()
        };
        assert_eq!(elements("a, b ,\tc"), ["a", "b", "c"]);
        assert_eq!(elements(""), [""]);
        assert_eq!(elements("a,,b,"), ["a", "", "b", ""]);
        assert_eq!(elements(r#""x, y", z"#), [r#""x, y""#, "z"]);
        assert_eq!(elements(r#""x\", y", z"#), [r#""x\", y""#, "z"]);
        assert!(header_value_matches(b"a, b", "b"));
        assert!(header_value_matches(b"a, b", "a, b"));
        assert!(!header_value_matches(b"a, b", "a,b"));
        assert!(!header_value_matches(br#""a, b""#, "b"));
    }

    proptest! {
        /// Any list of plain tokens, however spaced, yields each token.
        #[test]
        fn every_listed_token_matches(
            tokens in prop::collection::vec("[a-z0-9/*;=.+-]{1,8}", 1..6),
            spaces in prop::collection::vec("[ \t]{0,2}", 12),
        ) {
            let mut line = String::new();
            for (i, token) in tokens.iter().enumerate() {
                if i > 0 {
                    line.push(',');
                }
                line.push_str(&spaces[2 * i]);
                line.push_str(token);
                line.push_str(&spaces[2 * i + 1]);
            }
            for token in &tokens {
                prop_assert!(header_value_matches(line.as_bytes(), token), "{line:?} {token:?}");
            }
            prop_assert!(!header_value_matches(line.as_bytes(), "not,listed"));
        }

        #[test]
        fn splitting_never_panics(line in proptest::collection::vec(any::<u8>(), 0..40)) {
            let total: usize = list_elements(&line).map(<[u8]>::len).sum();
            prop_assert!(total <= line.len());
        }

        #[test]
        fn json_equals_itself_and_its_reordering(v in arb_json()) {
            prop_assert_eq!(json_diff(&v, &v, &mut "$".to_owned()), None);
            // Round trip through text (which may respell floats) stays equal.
            let reparsed: Value = serde_json::from_str(&v.to_string()).unwrap();
            prop_assert_eq!(json_diff(&reparsed, &v, &mut "$".to_owned()), None);
        }

        #[test]
        fn json_diff_finds_any_changed_leaf(v in arb_json(), extra in "[a-z]{5}") {
            // Wrapping adds a key the expectation lacks: always reported.
            let actual = serde_json::json!({"v": v.clone(), extra.clone(): 1});
            let expected = serde_json::json!({"v": v});
            let diff = json_diff(&actual, &expected, &mut "$".to_owned());
            prop_assert_eq!(diff, Some(format!("`$`: unexpected key `{extra}`")));
        }

        #[test]
        fn literal_paths_match_themselves_and_params_capture(
            segs in prop::collection::vec("[a-zA-Z0-9._~-]{1,6}", 0..6),
            at in any::<prop::sample::Index>(),
        ) {
            let path = format!("/{}", segs.join("/"));
            prop_assert_eq!(path_captures(&path, &path), Some(vec![]));
            prop_assert!(path_captures("/*", &path).is_some());
            prop_assert_eq!(path_captures(&format!("{path}/x"), &path), None);
            if !segs.is_empty() {
                let i = at.index(segs.len());
                let mut pattern = segs.clone();
                pattern[i] = "{p}".to_owned();
                let captured = path_captures(&format!("/{}", pattern.join("/")), &path);
                prop_assert_eq!(captured, Some(vec![("p".to_owned(), segs[i].clone())]));
            }
        }

        #[test]
        fn hostile_patterns_never_panic(pattern in ".{0,40}", path in ".{0,40}", host in ".{0,30}") {
            let _ = path_captures(&pattern, &path);
            let _ = Route::get(&pattern).to_string();
            let h = HostPattern::parse(&host);
            prop_assert!(h.matches(&h));
        }
    }

    #[test]
    fn snippets_cut_on_char_boundaries() {
        let long = "é".repeat(100);
        let s = snippet(&long);
        assert_eq!(s.chars().count(), 81);
        assert!(s.ends_with('…'));
        assert_eq!(snippet("short"), "short");
    }
}

/// Path and query matching against reference models, through the same
/// `Route::evaluate` the mock uses.
#[cfg(test)]
mod model {
    use http::{Extensions, HeaderMap, Uri, Version};
    use proptest::prelude::*;

    use super::*;

    fn call(method: Method, uri: &str) -> RecordedCall {
        RecordedCall {
            method,
            uri: uri.parse::<Uri>().unwrap(),
            version: Version::HTTP_11,
            headers: HeaderMap::new(),
            extensions: Extensions::new(),
            body: Bytes::new(),
            at: tokio::time::Instant::now(),
            route: None,
            params: Vec::new(),
        }
    }

    fn verdict(route: &Route, uri: &str) -> Verdict {
        let call = call(Method::GET, uri);
        route.evaluate(&RequestView::new(&call))
    }

    /// A pattern segment: a literal (possibly empty) or a `{param}`.
    fn pattern_segment() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            3 => "[ab]{0,2}".prop_map(Some),
            1 => Just(None),
        ]
    }

    /// A request segment, sometimes spelled with an escape (`%61` is `a`).
    fn path_segment() -> impl Strategy<Value = String> {
        prop_oneof![4 => "[ab]{0,2}", 1 => Just("%61".to_owned()), 1 => Just("b%62".to_owned())]
    }

    fn unescape(s: &str) -> String {
        s.replace("%61", "a").replace("%62", "b")
    }

    proptest! {
        /// `{param}` matches one non-empty segment, literals match equal
        /// (decoded) segments, and the segment counts must agree.
        #[test]
        fn path_patterns_match_a_segment_model(
            pattern in prop::collection::vec(pattern_segment(), 1..5),
            path in prop::collection::vec(path_segment(), 1..5),
        ) {
            let pattern_text = format!(
                "/{}",
                pattern
                    .iter()
                    .enumerate()
                    .map(|(i, s)| s.clone().unwrap_or_else(|| format!("{{p{i}}}")))
                    .collect::<Vec<_>>()
                    .join("/")
            );
            let path_text = format!("/{}", path.join("/"));
            let decoded: Vec<String> = path.iter().map(|s| unescape(s)).collect();
            let want = (pattern.len() == decoded.len())
                .then(|| {
                    pattern
                        .iter()
                        .zip(&decoded)
                        .enumerate()
                        .map(|(i, (p, actual))| match p {
                            Some(lit) => (lit == actual).then_some(None),
                            None => (!actual.is_empty()).then(|| Some((format!("p{i}"), actual.clone()))),
                        })
                        .collect::<Option<Vec<_>>>()
                })
                .flatten()
                .map(|caps| caps.into_iter().flatten().collect::<Vec<_>>());
            let v = verdict(&Route::get(&pattern_text), &path_text);
            prop_assert_eq!(v.is_match(), want.is_some(), "{} vs {}", pattern_text, path_text);
            if let Some(caps) = want {
                prop_assert_eq!(v.params, caps);
            }
        }

        /// Query matchers are a subset match, whatever the order of the
        /// request's parameters and whatever else it carries.
        #[test]
        fn query_matching_ignores_order_and_extras(
            wanted in prop::collection::btree_map("[a-d]{1,2}", "[a-z +]{0,3}", 0..4),
            extras in prop::collection::vec(("[x-z]{1,2}", "[a-z]{0,2}"), 0..3),
            order in prop::collection::vec(any::<u32>(), 8),
            drop_one in any::<prop::sample::Index>(),
        ) {
            let encode = |s: &str| s.replace('+', "%2B").replace(' ', "+");
            let mut route = Route::get("/q");
            for (k, v) in &wanted {
                route = route.query(k, encode(v));
            }
            let params: Vec<String> = wanted
                .iter()
                .map(|(k, v)| format!("{k}={}", encode(v)))
                .chain(extras.iter().map(|(k, v)| format!("{k}={v}")))
                .collect();
            // An arbitrary order: sorted by random keys.
            let mut keyed: Vec<(u32, String)> = order.iter().copied().zip(params).collect();
            keyed.sort();
            let params: Vec<String> = keyed.into_iter().map(|(_, p)| p).collect();
            let uri = format!("/q?{}", params.join("&"));
            prop_assert!(verdict(&route, &uri).is_match(), "{}", uri);

            if !wanted.is_empty() {
                // Without one of the wanted pairs, the route must not match.
                let gone = wanted.keys().nth(drop_one.index(wanted.len())).unwrap();
                let kept: Vec<&String> = params
                    .iter()
                    .filter(|p| p.split_once('=').map(|(k, _)| k) != Some(gone.as_str()))
                    .collect();
                let uri = format!("/q?{}", kept.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("&"));
                prop_assert!(!verdict(&route, &uri).is_match(), "{}", uri);
            }
        }
    }
}
