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
//!   case-insensitively; a second `rel` parameter is ignored (§3.3).
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

use crate::uri::{UriError, resolve};

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
    /// The header value is not UTF-8.
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
            Self::NotUtf8 => "the header value is not valid UTF-8",
        })
    }
}

/// Parses every `Link` header line of `headers`, in order.
pub fn parse_link_headers(headers: &HeaderMap) -> Result<Vec<Link>, LinkError> {
    let mut links = Vec::new();
    for value in headers.get_all(LINK) {
        let text = std::str::from_utf8(value.as_bytes()).map_err(|e| LinkError {
            offset: e.valid_up_to(),
            kind: LinkErrorKind::NotUtf8,
        })?;
        parse_into(text, &mut links)?;
    }
    Ok(links)
}

/// Parses one `Link` header value.
pub fn parse_link_header(value: &str) -> Result<Vec<Link>, LinkError> {
    let mut links = Vec::new();
    parse_into(value, &mut links)?;
    Ok(links)
}

/// The first link of `headers` whose `rel` includes `rel`.
pub fn find_rel(headers: &HeaderMap, rel: &str) -> Result<Option<Link>, LinkError> {
    Ok(parse_link_headers(headers)?
        .into_iter()
        .find(|link| link.has_rel(rel)))
}

fn parse_into(s: &str, links: &mut Vec<Link>) -> Result<(), LinkError> {
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
        let Some(len) = s[open + 1..].find('>') else {
            return Err(LinkError {
                offset: open,
                kind: LinkErrorKind::UnterminatedTarget,
            });
        };
        let target = s[open + 1..open + 1 + len].trim_matches([' ', '\t']);
        p.i = open + len + 2;
        let mut link = Link::new(target);
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
        p.skip(is_ows);
        let value = if p.peek() == Some(b'=') {
            p.i += 1;
            p.skip(is_ows);
            if p.peek() == Some(b'"') {
                p.quoted()?
            } else {
                p.take(|b| !matches!(b, b';' | b',' | b' ' | b'\t' | b'"'))
                    .to_owned()
            }
        } else {
            String::new()
        };
        link.params.push((name.to_ascii_lowercase(), value));
    }
}

struct Cursor<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    fn skip(&mut self, pred: impl Fn(u8) -> bool) {
        while self.peek().is_some_and(&pred) {
            self.i += 1;
        }
    }

    /// Takes the run of bytes matching `pred`; `pred` only accepts ASCII or
    /// rejects only ASCII, so the slice ends on a char boundary.
    fn take(&mut self, pred: impl Fn(u8) -> bool) -> &'a str {
        let start = self.i;
        self.skip(pred);
        &self.s[start..self.i]
    }

    /// A quoted string starting at the current `"`, escapes removed.
    fn quoted(&mut self) -> Result<String, LinkError> {
        let open = self.i;
        let bytes = self.s.as_bytes();
        let mut out = Vec::new();
        self.i += 1;
        loop {
            match bytes.get(self.i) {
                None => break,
                Some(b'"') => {
                    self.i += 1;
                    // Escapes only ever drop an ASCII backslash, so `out`
                    // is valid UTF-8; the lossy conversion cannot alter it.
                    return Ok(String::from_utf8_lossy(&out).into_owned());
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
