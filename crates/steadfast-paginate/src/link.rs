//! An RFC 8288 `Link` header parser.
//!
//! What it accepts (RFC 8288 §3, with the list rules of RFC 9110 §5.6.1):
//!
//! - several `Link` header lines ([`parse_link_headers`]) and several
//!   comma-separated links per line; empty list elements (`, ,`) and empty
//!   header values are skipped;
//! - commas inside `<…>` targets and inside quoted parameter values;
//! - parameter names in any case (stored lowercase), values as tokens or
//!   quoted strings with `\` escapes, and parameters without a value
//!   (`; crossorigin`, value `""`);
//! - `rel` with several space-separated relation types, compared
//!   case-insensitively; a second `rel` parameter is ignored (§3.3);
//! - the `anchor` parameter, which gives a link another context than the
//!   response it came in (§3.2): see [`Link::is_about`];
//! - header values as bytes: a quoted value may hold `obs-text` (bytes
//!   0x80-0xFF, RFC 9110 §5.5), decoded lossily; a target must be UTF-8.
//!
//! Anything else is a [`LinkError`] naming the byte offset, never a panic
//! and never a silent skip: a header the parser half-understood could hide
//! the `next` link and end a crawl early without anyone noticing.
//!
//! ```
//! use steadfast_paginate::link::parse_link_header;
//!
//! let links = parse_link_header(
//!     r#"</items?page=2>; rel="next", </items?page=1,2>; REL="first prev"; title="a, b""#,
//! ).unwrap();
//! assert_eq!(links[0].target(), "/items?page=2");
//! assert!(links[1].has_rel("PREV"));
//! assert_eq!(links[1].target(), "/items?page=1,2");
//! assert_eq!(links[1].param("title"), Some("a, b"));
//! ```

use std::fmt;

use http::{HeaderMap, Uri, header::LINK};

use crate::uri::{Origin, UriError, resolve};

/// One link of a `Link` header: a target URI reference and its parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    target: String,
    params: Vec<(String, String)>,
}

impl Link {
    /// A link to `target` with no parameters (handy in tests).
    pub fn new(target: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            params: Vec::new(),
        }
    }

    /// Adds a parameter; the name is stored lowercase.
    #[must_use]
    pub fn with_param(mut self, name: &str, value: impl Into<String>) -> Self {
        self.params.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// The target as written between `<` and `>` (a URI reference, possibly
    /// relative; see [`Link::resolve`]).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The first value of parameter `name` (case-insensitive), unquoted.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All parameters in order, names lowercase, values unquoted.
    pub fn params(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The relation types of the (first) `rel` parameter.
    pub fn rels(&self) -> impl Iterator<Item = &str> {
        self.param("rel").unwrap_or("").split_ascii_whitespace()
    }

    /// Whether `rel` is one of this link's relation types (case-insensitive).
    pub fn has_rel(&self, rel: &str) -> bool {
        self.rels().any(|r| r.eq_ignore_ascii_case(rel))
    }

    /// The target resolved against `base`, the URI of the request whose
    /// response carried the header (RFC 8288 §3.1, RFC 3986 §5.2).
    pub fn resolve(&self, base: &Uri) -> Result<Uri, UriError> {
        resolve(base, &self.target)
    }

    /// Whether the link is about `base`, the URI of the response that
    /// carried it: true unless an `anchor` parameter (RFC 8288 §3.2) names
    /// another context. An anchor is resolved against `base`; one with a
    /// fragment names a part of the page, not the page, and one that does
    /// not resolve names nothing this crawl knows.
    ///
    /// ```
    /// use steadfast_paginate::link::parse_link_header;
    ///
    /// let base = "http://api.test/items?page=1".parse().unwrap();
    /// let links = parse_link_header(
    ///     r#"</items?page=2>; rel=next, </other?page=9>; rel=next; anchor="/other?page=8""#,
    /// ).unwrap();
    /// assert!(links[0].is_about(&base));
    /// assert!(!links[1].is_about(&base));
    /// ```
    pub fn is_about(&self, base: &Uri) -> bool {
        let Some(anchor) = self.param("anchor") else {
            return true;
        };
        if anchor
            .split_once('#')
            .is_some_and(|(_, fragment)| !fragment.is_empty())
        {
            return false;
        }
        resolve(base, anchor).is_ok_and(|context| same_resource(&context, base))
    }
}

/// Whether two URIs name the same resource: same origin (case and default
/// ports aside), same path and query.
fn same_resource(a: &Uri, b: &Uri) -> bool {
    fn path(u: &Uri) -> &str {
        if u.path().is_empty() { "/" } else { u.path() }
    }
    Origin::of(a).matches(b) && path(a) == path(b) && a.query() == b.query()
}

/// A `Link` header that does not follow RFC 8288.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed Link header at byte {offset}: {kind}")]
pub struct LinkError {
    offset: usize,
    kind: LinkErrorKind,
}

impl LinkError {
    /// Byte offset in the header value where parsing stopped.
    pub const fn offset(&self) -> usize {
        self.offset
    }

    /// What was wrong.
    pub const fn kind(&self) -> LinkErrorKind {
        self.kind
    }
}

/// What was wrong with a `Link` header.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkErrorKind {
    /// A link must start with `<`.
    ExpectedTarget,
    /// A `<` without its `>`.
    UnterminatedTarget,
    /// Something other than `;` or `,` after a link or a parameter.
    UnexpectedChar,
    /// A `;` not followed by a parameter name.
    ExpectedParamName,
    /// A quoted string without its closing `"`.
    UnterminatedQuote,
    /// A link target (between `<` and `>`) is not UTF-8.
    NotUtf8,
}

impl fmt::Display for LinkErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ExpectedTarget => "expected '<' to start a link",
            Self::UnterminatedTarget => "'<' without a closing '>'",
            Self::UnexpectedChar => "expected ';' or ',' after a link or parameter",
            Self::ExpectedParamName => "expected a parameter name after ';'",
            Self::UnterminatedQuote => "quoted string without a closing '\"'",
            Self::NotUtf8 => "the link target is not valid UTF-8",
        })
    }
}

/// Parses every `Link` header line of `headers`, in order.
///
/// Header values are bytes: a quoted parameter value may hold `obs-text`
/// (bytes 0x80-0xFF, RFC 9110 §5.5, e.g. a Latin-1 `title`), which is
/// decoded lossily rather than failing the crawl. Targets stay strict: a
/// target that is not UTF-8 is [`LinkErrorKind::NotUtf8`].
pub fn parse_link_headers(headers: &HeaderMap) -> Result<Vec<Link>, LinkError> {
    let mut links = Vec::new();
    for value in headers.get_all(LINK) {
        parse_into(value.as_bytes(), &mut links)?;
    }
    Ok(links)
}

/// Parses one `Link` header value.
pub fn parse_link_header(value: &str) -> Result<Vec<Link>, LinkError> {
    let mut links = Vec::new();
    parse_into(value.as_bytes(), &mut links)?;
    Ok(links)
}

/// The first link of `headers` whose `rel` includes `rel`, whatever its
/// context (its `anchor` parameter); [`LinkHeader`](crate::LinkHeader)
/// also checks that the link is about the page, see [`Link::is_about`].
pub fn find_rel(headers: &HeaderMap, rel: &str) -> Result<Option<Link>, LinkError> {
    Ok(parse_link_headers(headers)?
        .into_iter()
        .find(|link| link.has_rel(rel)))
}

fn parse_into(s: &[u8], links: &mut Vec<Link>) -> Result<(), LinkError> {
    let mut p = Cursor { s, i: 0 };
    loop {
        p.skip(|b| matches!(b, b' ' | b'\t' | b','));
        let Some(b) = p.peek() else {
            return Ok(());
        };
        if b != b'<' {
            return Err(p.error(LinkErrorKind::ExpectedTarget));
        }
        let open = p.i;
        let Some(len) = s[open + 1..].iter().position(|&b| b == b'>') else {
            return Err(LinkError {
                offset: open,
                kind: LinkErrorKind::UnterminatedTarget,
            });
        };
        let target = std::str::from_utf8(&s[open + 1..open + 1 + len]).map_err(|e| LinkError {
            offset: open + 1 + e.valid_up_to(),
            kind: LinkErrorKind::NotUtf8,
        })?;
        p.i = open + len + 2;
        let mut link = Link::new(target.trim_matches([' ', '\t']));
        parse_params(&mut p, &mut link)?;
        links.push(link);
    }
}

fn parse_params(p: &mut Cursor<'_>, link: &mut Link) -> Result<(), LinkError> {
    loop {
        p.skip(is_ows);
        match p.peek() {
            None | Some(b',') => return Ok(()),
            Some(b';') => p.i += 1,
            Some(_) => return Err(p.error(LinkErrorKind::UnexpectedChar)),
        }
        p.skip(is_ows);
        if matches!(p.peek(), None | Some(b';' | b',')) {
            // `<a>;` or `<a>; ; rel=x`: an empty parameter, tolerated.
            continue;
        }
        let name = p.take(is_tchar);
        if name.is_empty() {
            return Err(p.error(LinkErrorKind::ExpectedParamName));
        }
        // `tchar` is ASCII.
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        p.skip(is_ows);
        let value = if p.peek() == Some(b'=') {
            p.i += 1;
            p.skip(is_ows);
            if p.peek() == Some(b'"') {
                p.quoted()?
            } else {
                let token = p.take(|b| !matches!(b, b';' | b',' | b' ' | b'\t' | b'"'));
                String::from_utf8_lossy(token).into_owned()
            }
        } else {
            String::new()
        };
        link.params.push((name, value));
    }
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip(&mut self, pred: impl Fn(u8) -> bool) {
        while self.peek().is_some_and(&pred) {
            self.i += 1;
        }
    }

    /// Takes the run of bytes matching `pred`.
    fn take(&mut self, pred: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.i;
        self.skip(pred);
        &self.s[start..self.i]
    }

    /// A quoted string starting at the current `"`, escapes removed, bytes
    /// that are not UTF-8 (obs-text) replaced by U+FFFD.
    fn quoted(&mut self) -> Result<String, LinkError> {
        let open = self.i;
        let bytes = self.s;
        let mut out = Vec::new();
        self.i += 1;
        loop {
            match bytes.get(self.i) {
                None => break,
                Some(b'"') => {
                    self.i += 1;
                    return Ok(String::from_utf8(out)
                        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()));
                }
                Some(b'\\') => match bytes.get(self.i + 1) {
                    Some(&escaped) => {
                        out.push(escaped);
                        self.i += 2;
                    }
                    None => break,
                },
                Some(&b) => {
                    out.push(b);
                    self.i += 1;
                }
            }
        }
        Err(LinkError {
            offset: open,
            kind: LinkErrorKind::UnterminatedQuote,
        })
    }

    fn error(&self, kind: LinkErrorKind) -> LinkError {
        LinkError {
            offset: self.i,
            kind,
        }
    }
}

const fn is_ows(b: u8) -> bool {
    matches!(b, b' ' | b'\t')
}

/// RFC 9110 §5.6.2 `tchar`.
const fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

#[cfg(test)]
mod tests;
