//! Percent-decoding shared by the mock's matchers and the fault server's
//! query parsing: one implementation, so both read a URL the same way.

use std::borrow::Cow;

/// Decodes `%XX` escapes to bytes (and `+` to a space when
/// `plus_is_space`, as `application/x-www-form-urlencoded` wants); a
/// malformed escape stays as it is, never a panic.
pub(crate) fn decode_bytes(s: &str, plus_is_space: bool) -> Cow<'_, [u8]> {
    if !(s.contains('%') || (plus_is_space && s.contains('+'))) {
        return Cow::Borrowed(s.as_bytes());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push((hi << 4) | lo);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(out)
}

/// [`decode_bytes`] as text: invalid UTF-8 becomes `�`.
pub(crate) fn decode(s: &str, plus_is_space: bool) -> Cow<'_, str> {
    match decode_bytes(s, plus_is_space) {
        Cow::Borrowed(_) => Cow::Borrowed(s),
        Cow::Owned(bytes) => match String::from_utf8(bytes) {
            Ok(text) => Cow::Owned(text),
            Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
        },
    }
}

const fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}
