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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use std::fmt::Write as _;

    use super::*;

    /// A reference encoder: every byte outside RFC 3986 `unreserved` as
    /// `%XX`, in upper or lower case hex as `lower` says per byte.
    fn encode(bytes: &[u8], lower: &[bool]) -> String {
        let mut out = String::new();
        for (i, &b) in bytes.iter().enumerate() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(char::from(b));
            } else if lower.get(i).copied().unwrap_or(false) {
                let _ = write!(out, "%{b:02x}");
            } else {
                let _ = write!(out, "%{b:02X}");
            }
        }
        out
    }

    /// A reference decoder, written from the doc comment: a `%` followed
    /// by two hex digits is a byte, anything else is itself.
    fn model(s: &str, plus_is_space: bool) -> Vec<u8> {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            let escape = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match (b[i], escape) {
                (b'%', Some(byte)) => {
                    out.push(byte);
                    i += 3;
                }
                (b'+', _) if plus_is_space => {
                    out.push(b' ');
                    i += 1;
                }
                (c, _) => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        out
    }

    #[test]
    fn escapes_at_the_very_end_decode() {
        assert_eq!(&*decode_bytes("a%41", false), b"aA");
        assert_eq!(&*decode_bytes("%4", false), b"%4");
        assert_eq!(&*decode_bytes("%", false), b"%");
        assert_eq!(&*decode_bytes("%%41", false), b"%A");
        assert_eq!(decode("a+b", false), "a+b");
        assert_eq!(decode("a+b", true), "a b");
    }

    proptest! {
        #[test]
        fn encoded_bytes_decode_back(
            bytes in prop::collection::vec(any::<u8>(), 0..48),
            lower in prop::collection::vec(any::<bool>(), 48),
            plus_is_space: bool,
        ) {
            let encoded = encode(&bytes, &lower);
            prop_assert_eq!(&*decode_bytes(&encoded, plus_is_space), &bytes[..]);
        }

        #[test]
        fn encoded_text_decodes_back(text in "\\PC{0,24}", plus_is_space: bool) {
            let encoded = encode(text.as_bytes(), &[]);
            prop_assert_eq!(decode(&encoded, plus_is_space), text.as_str());
        }

        #[test]
        fn agrees_with_a_reference_decoder(
            s in "([%+a-zA-Z0-9 é]|%[0-9a-fA-Fg]{0,2}){0,24}",
            plus_is_space: bool,
        ) {
            let got = decode_bytes(&s, plus_is_space);
            let want = model(&s, plus_is_space);
            prop_assert_eq!(&*got, &want[..]);
            let text = decode(&s, plus_is_space);
            let lossy = String::from_utf8_lossy(&want);
            prop_assert_eq!(text.as_ref(), lossy.as_ref());
        }

        #[test]
        fn never_panics_on_any_string(s in "\\PC{0,40}|.{0,40}", plus_is_space: bool) {
            let bytes = decode_bytes(&s, plus_is_space);
            prop_assert!(bytes.len() <= s.len());
            let _ = decode(&s, plus_is_space);
        }
    }
}
