//! URI helpers every strategy needs: RFC 3986 reference resolution,
//! origins, and query parameters.
//!
//! Written here rather than pulled from the `url` crate: pagination only
//! ever resolves a reference against an [`http::Uri`] it already holds and
//! edits one query parameter, and the `url` crate (with its IDNA tables)
//! would be the largest dependency of the crate for ~150 lines of a
//! well-specified algorithm. The resolver follows RFC 3986 §5.2 to the
//! letter and is tested against every example of §5.4.

use std::borrow::Cow;
use std::fmt;

use http::Uri;

/// A URI could not be built or resolved.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum UriError {
    /// The text is not a valid request URI.
    #[error("{uri:?} is not a valid request URI: {source}")]
    Invalid {
        /// The offending text.
        uri: String,
        /// Why `http` rejected it.
        #[source]
        source: http::uri::InvalidUri,
    },
    /// The URI has a scheme but no host (`http:g`).
    #[error("{uri:?} has a scheme but no host")]
    MissingHost {
        /// The offending URI.
        uri: String,
    },
    /// The URI has a scheme other than `http` or `https`.
    #[error("{uri:?} uses a scheme other than http or https, which pagination cannot follow")]
    UnsupportedScheme {
        /// The offending URI.
        uri: String,
    },
    /// The URI has a port that is not a number from 0 to 65535
    /// (`http://api.test:99999/`), which `http::Uri` accepts.
    #[error("{uri:?} has a port that is not a number from 0 to 65535, so it names no origin")]
    InvalidPort {
        /// The offending URI.
        uri: String,
    },
}

impl UriError {
    fn invalid(uri: String, source: http::uri::InvalidUri) -> Self {
        Self::Invalid { uri, source }
    }
}

/// Resolves `reference` (absolute or relative, as found in a Link header)
/// against `base` (the URI of the request that returned it), following RFC
/// 3986 §5.2 strictly.
///
/// A fragment in the reference is dropped: it is never sent in a request.
/// The result must be an `http`/`https` URI (or, when `base` itself is
/// relative, a relative one) whose port, if any, is a number from 0 to
/// 65535 ([`UriError::InvalidPort`] otherwise).
///
/// ```
/// use steadfast_paginate::uri::resolve;
///
/// let base = "http://api.test/v1/items?page=1".parse().unwrap();
/// assert_eq!(resolve(&base, "?page=2").unwrap(), "http://api.test/v1/items?page=2");
/// assert_eq!(resolve(&base, "../v2/items").unwrap(), "http://api.test/v2/items");
/// assert_eq!(resolve(&base, "//cdn.test/x").unwrap(), "http://cdn.test/x");
/// ```
pub fn resolve(base: &Uri, reference: &str) -> Result<Uri, UriError> {
    let base_parts = Parts {
        scheme: base.scheme_str(),
        authority: base.authority().map(http::uri::Authority::as_str),
        path: base.path(),
        query: base.query(),
        fragment: None,
    };
    let mut target = resolve_str(&base_parts, reference);
    if let Some(hash) = target.find('#') {
        target.truncate(hash);
    }
    let parts = split(&target);
    if let Some(scheme) = parts.scheme {
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(UriError::UnsupportedScheme { uri: target });
        }
        if parts.authority.is_none_or(str::is_empty) {
            return Err(UriError::MissingHost { uri: target });
        }
    }
    match Uri::try_from(target.as_str()) {
        Ok(uri) if has_invalid_port(&uri) => Err(UriError::InvalidPort { uri: target }),
        Ok(uri) => Ok(uri),
        Err(source) => Err(UriError::invalid(target, source)),
    }
}

/// Whether `uri` has a port that does not fit a `u16` (`http::Uri` takes
/// any digits, and then reports no port at all). An empty port
/// (`http://h:/`) is the default port, as RFC 3986 §3.2.3 says.
pub(crate) fn has_invalid_port(uri: &Uri) -> bool {
    let Some(authority) = uri.authority() else {
        return false;
    };
    let authority = authority.as_str();
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, rest)| rest);
    // An IP literal's colons are inside its brackets.
    let after_host = host_port
        .rfind(']')
        .map_or(host_port, |i| &host_port[i + 1..]);
    after_host
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.is_empty() && port.parse::<u16>().is_err())
}

/// The five components of a URI reference (RFC 3986 §3); `None` is
/// "undefined", which differs from empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Parts<'a> {
    scheme: Option<&'a str>,
    authority: Option<&'a str>,
    path: &'a str,
    query: Option<&'a str>,
    fragment: Option<&'a str>,
}

/// Splits a reference into components, as the regular expression of RFC
/// 3986 Appendix B does, except that a scheme must be a valid scheme name
/// (otherwise the colon belongs to a relative path).
fn split(reference: &str) -> Parts<'_> {
    let (rest, fragment) = match reference.split_once('#') {
        Some((rest, fragment)) => (rest, Some(fragment)),
        None => (reference, None),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let (scheme, rest) = match rest.find([':', '/']) {
        Some(colon) if rest.as_bytes()[colon] == b':' && is_scheme(&rest[..colon]) => {
            (Some(&rest[..colon]), &rest[colon + 1..])
        }
        _ => (None, rest),
    };
    let (authority, path) = match rest.strip_prefix("//") {
        Some(after) => {
            let end = after.find('/').unwrap_or(after.len());
            (Some(&after[..end]), &after[end..])
        }
        None => (None, rest),
    };
    Parts {
        scheme,
        authority,
        path,
        query,
        fragment,
    }
}

fn is_scheme(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// RFC 3986 §5.2.2 (transform references) and §5.3 (recomposition).
fn resolve_str(base: &Parts<'_>, reference: &str) -> String {
    let r = split(reference);
    let (scheme, authority, path, query);
    if r.scheme.is_some() {
        scheme = r.scheme;
        authority = r.authority;
        path = remove_dot_segments(r.path);
        query = r.query;
    } else {
        if r.authority.is_some() {
            authority = r.authority;
            path = remove_dot_segments(r.path);
            query = r.query;
        } else {
            if r.path.is_empty() {
                path = base.path.to_owned();
                query = r.query.or(base.query);
            } else {
                path = if r.path.starts_with('/') {
                    remove_dot_segments(r.path)
                } else {
                    remove_dot_segments(&merge(base, r.path))
                };
                query = r.query;
            }
            authority = base.authority;
        }
        scheme = base.scheme;
    }

    let mut out = String::with_capacity(reference.len() + base.path.len() + 32);
    if let Some(scheme) = scheme {
        out.push_str(scheme);
        out.push(':');
    }
    if let Some(authority) = authority {
        out.push_str("//");
        out.push_str(authority);
    }
    out.push_str(&path);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    if let Some(fragment) = r.fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// RFC 3986 §5.2.3.
fn merge(base: &Parts<'_>, path: &str) -> String {
    if base.authority.is_some() && base.path.is_empty() {
        format!("/{path}")
    } else {
        match base.path.rfind('/') {
            Some(slash) => format!("{}{path}", &base.path[..=slash]),
            None => path.to_owned(),
        }
    }
}

/// RFC 3986 §5.2.4, the buffer algorithm, step letters as in the RFC.
fn remove_dot_segments(path: &str) -> String {
    let mut input = path;
    let mut output = String::with_capacity(path.len());
    while !input.is_empty() {
        if let Some(rest) = input
            .strip_prefix("../")
            .or_else(|| input.strip_prefix("./"))
        {
            // A
            input = rest;
        } else if input.starts_with("/./") || input == "/." {
            // B: "/./x" -> "/x", "/." -> "/"
            input = if input == "/." { "/" } else { &input[2..] };
        } else if input.starts_with("/../") || input == "/.." {
            // C: as B, and drop the last segment of the output
            input = if input == "/.." { "/" } else { &input[3..] };
            output.truncate(output.rfind('/').unwrap_or(0));
        } else if input == "." || input == ".." {
            // D
            input = "";
        } else {
            // E: move the first segment, with its leading "/", to the output
            let start = usize::from(input.starts_with('/'));
            let end = input[start..].find('/').map_or(input.len(), |i| i + start);
            output.push_str(&input[..end]);
            input = &input[end..];
        }
    }
    output
}

/// The origin of a URI (RFC 6454): scheme, host and port, compared
/// case-insensitively with default ports filled in.
///
/// A relative URI (no scheme, no authority) has the "unknown" origin, equal
/// only to other relative URIs. A URI whose port is not a number from 0 to
/// 65535 (`http://api.test:99999/`) is on no origin: it matches nothing,
/// not even itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    scheme: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    invalid_port: bool,
}

impl Origin {
    /// The origin of `uri`.
    pub fn of(uri: &Uri) -> Self {
        Self {
            scheme: uri.scheme_str().map(str::to_ascii_lowercase),
            host: uri.host().map(str::to_ascii_lowercase),
            port: effective_port(uri),
            invalid_port: has_invalid_port(uri),
        }
    }

    /// Whether the URI it was taken from has a port out of range, so that
    /// nothing is on it.
    pub(crate) const fn has_invalid_port(&self) -> bool {
        self.invalid_port
    }

    /// Whether `uri` is on this origin (no allocation: this runs per page).
    pub fn matches(&self, uri: &Uri) -> bool {
        fn same(a: Option<&str>, b: Option<&str>) -> bool {
            match (a, b) {
                (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                (None, None) => true,
                _ => false,
            }
        }
        !self.invalid_port
            && same(self.scheme.as_deref(), uri.scheme_str())
            && same(self.host.as_deref(), uri.host())
            && self.port == effective_port(uri)
            && !has_invalid_port(uri)
    }
}

fn effective_port(uri: &Uri) -> Option<u16> {
    uri.port_u16().or_else(|| {
        let scheme = uri.scheme_str()?;
        if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("ws") {
            Some(80)
        } else if scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("wss") {
            Some(443)
        } else {
            None
        }
    })
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.scheme, &self.host) {
            (None, None) => f.write_str("(relative)"),
            (scheme, host) => {
                write!(
                    f,
                    "{}://{}",
                    scheme.as_deref().unwrap_or(""),
                    host.as_deref().unwrap_or("")
                )?;
                match self.port {
                    _ if self.invalid_port => f.write_str(":<invalid port>"),
                    Some(port) => write!(f, ":{port}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// The first value of query parameter `name` in `uri`, percent-decoded
/// (`+` reads as a space, as in HTML forms).
///
/// ```
/// use steadfast_paginate::uri::query_param;
///
/// let uri = "/items?page=2&cursor=a%2Bb".parse().unwrap();
/// assert_eq!(query_param(&uri, "cursor").as_deref(), Some("a+b"));
/// assert_eq!(query_param(&uri, "limit"), None);
/// ```
pub fn query_param<'a>(uri: &'a Uri, name: &str) -> Option<Cow<'a, str>> {
    uri.query()?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(key) == name).then(|| decode(value))
    })
}

/// `uri` with query parameter `name` set to `value` (percent-encoded):
/// the first occurrence is replaced in place, later ones are removed, and
/// the parameter is appended when absent. Every other parameter is kept
/// byte for byte.
///
/// ```
/// use steadfast_paginate::uri::with_query_param;
///
/// let uri = "http://api.test/items?per_page=10&page=1".parse().unwrap();
/// let next = with_query_param(&uri, "page", "2").unwrap();
/// assert_eq!(next, "http://api.test/items?per_page=10&page=2");
/// let next = with_query_param(&next, "cursor", "a b/c").unwrap();
/// assert_eq!(next, "http://api.test/items?per_page=10&page=2&cursor=a%20b%2Fc");
/// ```
pub fn with_query_param(uri: &Uri, name: &str, value: &str) -> Result<Uri, UriError> {
    // Built straight into the final buffer, which the `Uri` then owns
    // without a copy; the rare error path rebuilds the text for its message.
    Uri::try_from(build_with_param(uri, name, value))
        .map_err(|source| UriError::invalid(build_with_param(uri, name, value), source))
}

fn build_with_param(uri: &Uri, name: &str, value: &str) -> String {
    let old_query = uri.query().unwrap_or("");
    let mut target = String::with_capacity(
        uri.authority().map_or(0, |a| a.as_str().len())
            + uri.path().len()
            + old_query.len()
            + name.len()
            + 3 * value.len()
            + 16,
    );
    if let Some(scheme) = uri.scheme_str() {
        target.push_str(scheme);
        target.push_str("://");
    }
    if let Some(authority) = uri.authority() {
        target.push_str(authority.as_str());
    }
    target.push_str(if uri.path().is_empty() {
        "/"
    } else {
        uri.path()
    });
    target.push('?');
    let query_start = target.len();
    let mut replaced = false;
    for pair in old_query.split('&').filter(|p| !p.is_empty()) {
        let key = pair.split_once('=').map_or(pair, |(key, _)| key);
        if decode(key) == name {
            if replaced {
                continue;
            }
            replaced = true;
            push_pair(&mut target, query_start, name, value);
        } else {
            if target.len() > query_start {
                target.push('&');
            }
            target.push_str(pair);
        }
    }
    if !replaced {
        push_pair(&mut target, query_start, name, value);
    }
    target
}

fn push_pair(query: &mut String, query_start: usize, name: &str, value: &str) {
    if query.len() > query_start {
        query.push('&');
    }
    encode_into(query, name);
    query.push('=');
    encode_into(query, value);
}

/// Percent-encodes everything but the RFC 3986 unreserved characters.
fn encode_into(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
    // Names and most cursors need no escapes: copied whole.
    if s.bytes().all(unreserved) {
        out.push_str(s);
        return;
    }
    for &b in s.as_bytes() {
        if unreserved(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

/// Percent-decodes `s` (`+` is a space); malformed escapes stay literal and
/// invalid UTF-8 is replaced, so decoding never fails.
fn decode(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

const fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
