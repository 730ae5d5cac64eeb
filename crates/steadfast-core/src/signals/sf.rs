//! A small, tolerant reader of HTTP Structured Field Values (RFC 9651)
//! covering what the RateLimit fields need: Lists and Dictionaries of items
//! with parameters. Inner lists are parsed and kept opaque.
//!
//! Input is raw header bytes, so nothing here can panic on non-UTF-8 or
//! hostile input: every index is checked, every number bounded.

use std::borrow::Cow;

/// A bare item. Strings keep their unescaped text.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Bare<'a> {
    Integer(i64),
    Decimal(f64),
    Str(Cow<'a, str>),
    Token(&'a str),
    Bytes,
    Bool(bool),
    Date(i64),
    InnerList,
}

impl Bare<'_> {
    /// The item as a non-negative number of (possibly fractional) units.
    pub(crate) fn as_non_negative(&self) -> Option<f64> {
        match *self {
            Bare::Integer(i) if i >= 0 => Some(i as f64),
            Bare::Decimal(d) if d >= 0.0 && d.is_finite() => Some(d),
            _ => None,
        }
    }

    pub(crate) fn as_name(&self) -> Option<&str> {
        match self {
            Bare::Str(s) => Some(s),
            Bare::Token(t) => Some(t),
            _ => None,
        }
    }
}

/// One list or dictionary member: `key` is set for dictionary members.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Member<'a> {
    pub(crate) key: Option<&'a str>,
    pub(crate) item: Bare<'a>,
    pub(crate) params: Vec<(&'a str, Bare<'a>)>,
}

impl Member<'_> {
    pub(crate) fn param(&self, key: &str) -> Option<&Bare<'_>> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    }
}

/// Why a field value is not a valid structured field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SyntaxError(pub(crate) &'static str);

pub(crate) fn parse_list(input: &[u8]) -> Result<Vec<Member<'_>>, SyntaxError> {
    Parser::new(input)?.members(false)
}

pub(crate) fn parse_dictionary(input: &[u8]) -> Result<Vec<Member<'_>>, SyntaxError> {
    Parser::new(input)?.members(true)
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(input: &'a [u8]) -> Result<Self, SyntaxError> {
        // Structured fields are ASCII; anything else is invalid.
        if !input.is_ascii() {
            return Err(SyntaxError("non-ASCII byte"));
        }
        let s = std::str::from_utf8(input).map_err(|_| SyntaxError("non-ASCII byte"))?;
        Ok(Self { s, pos: 0 })
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn skip_sp(&mut self) {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        &self.s[start..self.pos]
    }

    fn members(mut self, dictionary: bool) -> Result<Vec<Member<'a>>, SyntaxError> {
        let mut out = Vec::new();
        self.skip_ows();
        if self.peek().is_none() {
            return Ok(out);
        }
        loop {
            let member = if dictionary {
                let key = self.key()?;
                if self.eat(b'=') {
                    let item = self.item_or_inner_list()?;
                    let params = self.params()?;
                    Member {
                        key: Some(key),
                        item,
                        params,
                    }
                } else {
                    let params = self.params()?;
                    Member {
                        key: Some(key),
                        item: Bare::Bool(true),
                        params,
                    }
                }
            } else {
                let item = self.item_or_inner_list()?;
                let params = self.params()?;
                Member {
                    key: None,
                    item,
                    params,
                }
            };
            out.push(member);
            self.skip_ows();
            match self.bump() {
                None => return Ok(out),
                Some(b',') => {}
                Some(_) => return Err(SyntaxError("expected ',' between members")),
            }
            self.skip_ows();
            if self.peek().is_none() {
                return Err(SyntaxError("trailing ','"));
            }
        }
    }

    fn item_or_inner_list(&mut self) -> Result<Bare<'a>, SyntaxError> {
        if self.eat(b'(') {
            loop {
                self.skip_sp();
                if self.eat(b')') {
                    return Ok(Bare::InnerList);
                }
                self.bare()?;
                self.params()?;
                match self.peek() {
                    Some(b' ' | b')') => {}
                    _ => return Err(SyntaxError("bad inner list")),
                }
            }
        }
        self.bare()
    }

    fn params(&mut self) -> Result<Vec<(&'a str, Bare<'a>)>, SyntaxError> {
        let mut params: Vec<(&str, Bare<'_>)> = Vec::new();
        while self.eat(b';') {
            self.skip_sp();
            let key = self.key()?;
            let value = if self.eat(b'=') {
                self.bare()?
            } else {
                Bare::Bool(true)
            };
            // Later duplicates override earlier ones (RFC 9651 §4.2.3.2).
            if let Some(slot) = params.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(key)) {
                slot.1 = value;
            } else {
                params.push((key, value));
            }
        }
        Ok(params)
    }

    fn key(&mut self) -> Result<&'a str, SyntaxError> {
        // Tolerate upper-case keys: servers send them, and matching is
        // case-insensitive anyway.
        match self.peek() {
            Some(c) if c.is_ascii_alphabetic() || c == b'*' => {}
            _ => return Err(SyntaxError("expected a key")),
        }
        Ok(
            self.take_while(|c| {
                c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b'*')
            }),
        )
    }

    fn bare(&mut self) -> Result<Bare<'a>, SyntaxError> {
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'"') => self.string(),
            Some(b'*' | b'A'..=b'Z' | b'a'..=b'z') => {
                Ok(Bare::Token(self.take_while(is_token_char)))
            }
            Some(b':') => {
                self.pos += 1;
                self.take_while(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'='));
                if self.eat(b':') {
                    Ok(Bare::Bytes)
                } else {
                    Err(SyntaxError("unterminated byte sequence"))
                }
            }
            Some(b'?') => {
                self.pos += 1;
                match self.bump() {
                    Some(b'1') => Ok(Bare::Bool(true)),
                    Some(b'0') => Ok(Bare::Bool(false)),
                    _ => Err(SyntaxError("bad boolean")),
                }
            }
            Some(b'@') => {
                self.pos += 1;
                match self.number()? {
                    Bare::Integer(i) => Ok(Bare::Date(i)),
                    _ => Err(SyntaxError("bad date")),
                }
            }
            Some(b'%') => {
                self.pos += 1;
                self.string()
            }
            _ => Err(SyntaxError("expected an item")),
        }
    }

    fn number(&mut self) -> Result<Bare<'a>, SyntaxError> {
        let negative = self.eat(b'-');
        let int = self.take_while(|c| c.is_ascii_digit());
        if int.is_empty() {
            return Err(SyntaxError("expected a digit"));
        }
        if self.eat(b'.') {
            let frac = self.take_while(|c| c.is_ascii_digit());
            if int.len() > 12 || frac.is_empty() || frac.len() > 3 {
                return Err(SyntaxError("decimal out of range"));
            }
            let text = &self.s[self.pos - int.len() - frac.len() - 1..self.pos];
            let v: f64 = text.parse().map_err(|_| SyntaxError("bad decimal"))?;
            return Ok(Bare::Decimal(if negative { -v } else { v }));
        }
        if int.len() > 15 {
            return Err(SyntaxError("integer out of range"));
        }
        let v: i64 = int.parse().map_err(|_| SyntaxError("bad integer"))?;
        Ok(Bare::Integer(if negative { -v } else { v }))
    }

    fn string(&mut self) -> Result<Bare<'a>, SyntaxError> {
        if !self.eat(b'"') {
            return Err(SyntaxError("expected '\"'"));
        }
        let start = self.pos;
        let mut owned: Option<String> = None;
        loop {
            match self.bump() {
                None => return Err(SyntaxError("unterminated string")),
                Some(b'"') => {
                    let text = match owned {
                        Some(s) => Cow::Owned(s),
                        None => Cow::Borrowed(&self.s[start..self.pos - 1]),
                    };
                    return Ok(Bare::Str(text));
                }
                Some(b'\\') => {
                    let Some(escaped @ (b'"' | b'\\')) = self.bump() else {
                        return Err(SyntaxError("bad escape"));
                    };
                    let s = owned.get_or_insert_with(|| self.s[start..self.pos - 2].to_owned());
                    s.push(char::from(escaped));
                }
                Some(c) if (0x20..0x7f).contains(&c) => {
                    if let Some(s) = owned.as_mut() {
                        s.push(char::from(c));
                    }
                }
                Some(_) => return Err(SyntaxError("control character in string")),
            }
        }
    }
}

fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
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
                | b':'
                | b'/'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_with_params() {
        let m = parse_list(br#""default";r=50;t=30, "day";r=0;t=3600"#).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].item.as_name(), Some("default"));
        assert_eq!(m[0].param("r"), Some(&Bare::Integer(50)));
        assert_eq!(m[1].param("T"), Some(&Bare::Integer(3600)));
    }

    #[test]
    fn dictionary_and_escapes() {
        let m =
            parse_dictionary(br#"limit=100, remaining=5, reset=1.5, flag, s="a\"b";x"#).unwrap();
        let keys: Vec<_> = m.iter().map(|m| m.key.unwrap()).collect();
        assert_eq!(keys, ["limit", "remaining", "reset", "flag", "s"]);
        assert_eq!(m[2].item, Bare::Decimal(1.5));
        assert_eq!(m[3].item, Bare::Bool(true));
        assert_eq!(m[4].item.as_name(), Some("a\"b"));
    }

    #[test]
    fn rejects_bad_syntax() {
        for bad in [
            &b"a,"[..],
            b"\"open",
            b"1.2345",
            b"1234567890123456",
            b"a b",
            b"(1 2",
            b"\xff",
            b"?2",
        ] {
            assert!(
                parse_list(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(parse_list(b"  ").unwrap().is_empty());
        assert_eq!(parse_list(b"(1 2);a, :AQ==:, @17, ?0").unwrap().len(), 4);
    }
}
