//! Splitting a pool key (`scheme://host:port`) into the OpenTelemetry
//! attributes `url.scheme`, `server.address` and `server.port`.

/// The parts of a pool key. Keys that do not look like
/// `scheme://host[:port]` keep the whole key as the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyParts<'a> {
    pub(crate) scheme: Option<&'a str>,
    pub(crate) address: &'a str,
    pub(crate) port: Option<u16>,
}

pub(crate) fn split(key: &str) -> KeyParts<'_> {
    let (scheme, rest) = match key.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, key),
    };
    let rest = rest.split('/').next().unwrap_or(rest);
    // `[::1]:443`: the port follows the closing bracket.
    let (address, port) = if let Some(inner) = rest.strip_prefix('[') {
        match inner.split_once(']') {
            Some((address, tail)) => (address, tail.strip_prefix(':')),
            None => (rest, None),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((address, port)) if !address.contains(':') => (address, Some(port)),
            _ => (rest, None),
        }
    };
    let port = port.and_then(|p| p.parse().ok()).or(match scheme {
        Some("http") => Some(80),
        Some("https") => Some(443),
        _ => None,
    });
    KeyParts {
        scheme,
        address,
        port,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_the_usual_forms() {
        let p = split("https://api.example.com:8443");
        assert_eq!(
            (p.scheme, p.address, p.port),
            (Some("https"), "api.example.com", Some(8443))
        );
        let p = split("http://127.0.0.1");
        assert_eq!((p.address, p.port), ("127.0.0.1", Some(80)));
        let p = split("https://[::1]:9000");
        assert_eq!((p.address, p.port), ("::1", Some(9000)));
        let p = split("https://[::1]");
        assert_eq!((p.address, p.port), ("::1", Some(443)));
        let p = split("unix-socket");
        assert_eq!((p.scheme, p.address, p.port), (None, "unix-socket", None));
        let p = split("http://host:notaport");
        assert_eq!((p.address, p.port), ("host", Some(80)));
    }

    proptest! {
        #[test]
        fn never_panics_and_address_is_part_of_the_key(key in ".{0,40}") {
            let p = split(&key);
            prop_assert!(key.contains(p.address));
        }
    }
}
