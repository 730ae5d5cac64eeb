use proptest::prelude::*;

use super::*;

const RFC_BASE: &str = "http://a/b/c/d;p?q";

/// RFC 3986 §5.4.1 and §5.4.2, verbatim.
const RFC_EXAMPLES: &[(&str, &str)] = &[
    // 5.4.1 normal examples
    ("g:h", "g:h"),
    ("g", "http://a/b/c/g"),
    ("./g", "http://a/b/c/g"),
    ("g/", "http://a/b/c/g/"),
    ("/g", "http://a/g"),
    ("//g", "http://g"),
    ("?y", "http://a/b/c/d;p?y"),
    ("g?y", "http://a/b/c/g?y"),
    ("#s", "http://a/b/c/d;p?q#s"),
    ("g#s", "http://a/b/c/g#s"),
    ("g?y#s", "http://a/b/c/g?y#s"),
    (";x", "http://a/b/c/;x"),
    ("g;x", "http://a/b/c/g;x"),
    ("g;x?y#s", "http://a/b/c/g;x?y#s"),
    ("", "http://a/b/c/d;p?q"),
    (".", "http://a/b/c/"),
    ("./", "http://a/b/c/"),
    ("..", "http://a/b/"),
    ("../", "http://a/b/"),
    ("../g", "http://a/b/g"),
    ("../..", "http://a/"),
    ("../../", "http://a/"),
    ("../../g", "http://a/g"),
    // 5.4.2 abnormal examples
    ("../../../g", "http://a/g"),
    ("../../../../g", "http://a/g"),
    ("/./g", "http://a/g"),
    ("/../g", "http://a/g"),
    ("g.", "http://a/b/c/g."),
    (".g", "http://a/b/c/.g"),
    ("g..", "http://a/b/c/g.."),
    ("..g", "http://a/b/c/..g"),
    ("./../g", "http://a/b/g"),
    ("./g/.", "http://a/b/c/g/"),
    ("g/./h", "http://a/b/c/g/h"),
    ("g/../h", "http://a/b/c/h"),
    ("g;x=1/./y", "http://a/b/c/g;x=1/y"),
    ("g;x=1/../y", "http://a/b/c/y"),
    ("g?y/./x", "http://a/b/c/g?y/./x"),
    ("g?y/../x", "http://a/b/c/g?y/../x"),
    ("g#s/./x", "http://a/b/c/g#s/./x"),
    ("g#s/../x", "http://a/b/c/g#s/../x"),
    ("http:g", "http:g"),
];

#[test]
fn rfc3986_section_5_4_examples_resolve_exactly() {
    let base = split(RFC_BASE);
    for &(reference, expected) in RFC_EXAMPLES {
        assert_eq!(
            resolve_str(&base, reference),
            expected,
            "reference {reference:?}"
        );
    }
}

#[test]
fn rfc3986_examples_through_http_uri() {
    let base: Uri = RFC_BASE.parse().unwrap();
    for &(reference, expected) in RFC_EXAMPLES {
        let expected = expected.split('#').next().unwrap();
        match resolve(&base, reference) {
            // `http` writes an empty path as "/" (equivalent in HTTP).
            Ok(uri) => assert_eq!(
                uri,
                expected.parse::<Uri>().unwrap(),
                "reference {reference:?}"
            ),
            Err(UriError::UnsupportedScheme { uri }) => {
                assert_eq!((reference, uri.as_str()), ("g:h", "g:h"));
            }
            Err(UriError::MissingHost { uri }) => {
                assert_eq!((reference, uri.as_str()), ("http:g", "http:g"));
            }
            Err(e) => panic!("reference {reference:?}: {e}"),
        }
    }
}

#[test]
fn remove_dot_segments_matches_the_rfc_walkthrough() {
    // RFC 3986 §5.2.4 worked examples.
    assert_eq!(remove_dot_segments("/a/b/c/./../../g"), "/a/g");
    assert_eq!(remove_dot_segments("mid/content=5/../6"), "mid/6");
    assert_eq!(remove_dot_segments(""), "");
    assert_eq!(remove_dot_segments("/.."), "/");
    assert_eq!(remove_dot_segments("../a"), "a");
}

#[test]
fn relative_bases_stay_relative() {
    let base: Uri = "/items?style=link&page=1".parse().unwrap();
    assert_eq!(resolve(&base, "/items?page=2").unwrap(), "/items?page=2");
    assert_eq!(resolve(&base, "?page=3").unwrap(), "/items?page=3");
    assert_eq!(
        resolve(&base, "http://other.test/x").unwrap(),
        "http://other.test/x"
    );
}

#[test]
fn base_without_path_merges_under_root() {
    let base: Uri = "http://api.test".parse().unwrap();
    assert_eq!(
        resolve(&base, "items?page=2").unwrap(),
        "http://api.test/items?page=2"
    );
}

#[test]
fn unusable_targets_are_typed_errors() {
    let base: Uri = "http://a/b".parse().unwrap();
    assert!(matches!(
        resolve(&base, "ftp://a/b"),
        Err(UriError::UnsupportedScheme { .. })
    ));
    assert!(matches!(
        resolve(&base, "a b"),
        Err(UriError::Invalid { .. })
    ));
    assert!(matches!(
        resolve(&base, "https:"),
        Err(UriError::MissingHost { .. })
    ));
    let msg = resolve(&base, "a b").unwrap_err().to_string();
    assert!(msg.contains("not a valid request URI"), "{msg}");
}

#[test]
fn origins_compare_scheme_host_and_effective_port() {
    let o = |s: &str| {
        let uri: Uri = s.parse().unwrap();
        let origin = Origin::of(&uri);
        assert!(origin.matches(&uri), "{s}");
        origin
    };
    assert_eq!(o("http://API.test/a"), o("http://api.test:80/b?c"));
    assert_eq!(o("https://a.test/"), o("HTTPS://a.test:443/x"));
    assert_ne!(o("http://a.test/"), o("https://a.test/"));
    assert_ne!(o("http://a.test/"), o("http://a.test:8080/"));
    assert_ne!(o("http://a.test/"), o("http://b.test/"));
    assert_eq!(o("/x"), o("/y?z"));
    assert_ne!(o("/x"), o("http://a.test/x"));
    assert_eq!(o("http://a.test:8080/x").to_string(), "http://a.test:8080");
    assert_eq!(o("/x").to_string(), "(relative)");
    let api = o("http://API.test/a");
    assert!(api.matches(&"HTTP://api.TEST:80/b".parse().unwrap()));
    assert!(!api.matches(&"https://api.test/b".parse().unwrap()));
    assert!(!api.matches(&"http://api.test:81/b".parse().unwrap()));
    assert!(!api.matches(&"/b".parse().unwrap()));
}

#[test]
fn query_params_round_trip_and_keep_their_neighbours() {
    let uri: Uri = "http://h/p?a=1&page=1&b=%2F&page=9".parse().unwrap();
    let next = with_query_param(&uri, "page", "2").unwrap();
    assert_eq!(next, "http://h/p?a=1&page=2&b=%2F");
    assert_eq!(query_param(&next, "b").as_deref(), Some("/"));
    let appended = with_query_param(&"http://h".parse().unwrap(), "c", "x y").unwrap();
    assert_eq!(appended, "http://h/?c=x%20y");
    let relative = with_query_param(&"/items".parse().unwrap(), "offset", "10").unwrap();
    assert_eq!(relative, "/items?offset=10");
    assert_eq!(
        query_param(&"/i?q=a+b%zz%4".parse().unwrap(), "q").as_deref(),
        Some("a b%zz%4")
    );
    assert_eq!(
        query_param(&"/i?flag&x=1".parse().unwrap(), "flag").as_deref(),
        Some("")
    );
}

proptest! {
    #[test]
    fn set_then_get_returns_the_value(
        name in "[a-z_\\[\\]]{1,8}",
        value in any::<String>(),
        other in "[a-z]{1,4}=[a-z0-9]{0,4}",
    ) {
        prop_assume!(!other.starts_with(&format!("{name}=")));
        let uri: Uri = format!("http://h/p?{other}").parse().unwrap();
        let next = with_query_param(&uri, &name, &value).unwrap();
        let got = query_param(&next, &name);
        prop_assert_eq!(got.as_deref(), Some(value.as_str()));
        let other_name = other.split('=').next().unwrap();
        prop_assert_eq!(query_param(&next, other_name), query_param(&uri, other_name));
    }

    #[test]
    fn remove_dot_segments_leaves_no_dot_segments(path in "(/|\\.|\\.\\.|[ab]){0,16}") {
        let out = remove_dot_segments(&path);
        if path.starts_with('/') {
            prop_assert!(out.is_empty() || out.starts_with('/'));
            prop_assert!(!out.split('/').any(|seg| seg == "." || seg == ".."), "{out:?}");
        }
        prop_assert_eq!(remove_dot_segments(&out), out.clone());
    }

    #[test]
    fn resolve_never_panics(reference in any::<String>(), path in "(/[a-z.]{0,3}){0,4}") {
        let base: Uri = format!("http://a.test{path}?q").parse().unwrap();
        let _ = resolve(&base, &reference);
    }

    #[test]
    fn resolved_absolute_paths_ignore_the_base_path(
        reference in "(/[a-z]{1,3}){1,4}(\\?[a-z=&]{0,6})?",
        path in "(/[a-z]{1,3}){0,4}",
    ) {
        let base: Uri = format!("http://a.test{path}").parse().unwrap();
        let uri = resolve(&base, &reference).unwrap();
        prop_assert_eq!(uri.to_string(), format!("http://a.test{reference}"));
    }
}

// Review 2, finding 2: `http::Uri` takes a port beyond 65535 and then
// reports none, so it passed the origin check as the default port.
#[test]
fn a_port_out_of_range_is_an_error_and_on_no_origin() {
    let base: Uri = "http://api.test/items".parse().unwrap();
    for reference in [
        "http://api.test:99999/items?page=2",
        "//api.test:65536/x",
        "http://u@api.test:123456/",
        "http://[::1]:70000/",
    ] {
        let err = resolve(&base, reference).unwrap_err();
        assert!(matches!(err, UriError::InvalidPort { .. }), "{reference}");
        assert!(err.to_string().contains("port"), "{err}");
    }
    // In range, empty (the default port), or an IP literal without one.
    for reference in [
        "http://api.test:65535/",
        "http://api.test:/",
        "http://[::1]/",
        "http://[::1]:8080/",
    ] {
        assert!(resolve(&base, reference).is_ok(), "{reference}");
    }

    let hostile: Uri = "http://api.test:99999/items".parse().unwrap();
    assert_eq!(hostile.port_u16(), None, "what http::Uri says");
    let api = Origin::of(&base);
    assert!(!api.matches(&hostile));
    let elsewhere = Origin::of(&hostile);
    assert!(!elsewhere.matches(&hostile), "not even itself");
    assert!(!elsewhere.matches(&base));
    assert_ne!(api, elsewhere);
    assert_eq!(elsewhere.to_string(), "http://api.test:<invalid port>");
    assert!(api.matches(&"http://api.test:/x".parse().unwrap()));
}
