use std::fmt::Write as _;

use http::HeaderValue;
use proptest::prelude::*;

use super::*;

fn links(s: &str) -> Vec<Link> {
    parse_link_header(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

#[test]
fn github_style_header() {
    let l = links(
        r#"<https://api.github.com/repositories/1/issues?page=2>; rel="next", <https://api.github.com/repositories/1/issues?page=5>; rel="last""#,
    );
    assert_eq!(l.len(), 2);
    assert!(l[0].has_rel("next"));
    assert_eq!(
        l[1].target(),
        "https://api.github.com/repositories/1/issues?page=5"
    );
}

#[test]
fn commas_and_semicolons_inside_targets_and_quotes() {
    let l = links(r#"</a?x=1,2;3>; title="x, y; z", </b>;rel=next"#);
    assert_eq!(l[0].target(), "/a?x=1,2;3");
    assert_eq!(l[0].param("title"), Some("x, y; z"));
    assert!(l[1].has_rel("next"));
}

#[test]
fn parameter_names_are_case_insensitive_and_rel_is_a_list() {
    let l = links(r#"</p>; REL="Next  prev"; Title=hi; rel=other"#);
    assert!(l[0].has_rel("next"));
    assert!(l[0].has_rel("PREV"));
    assert!(
        !l[0].has_rel("other"),
        "a second rel is ignored (RFC 8288 §3.3)"
    );
    assert_eq!(l[0].param("TITLE"), Some("hi"));
    assert_eq!(l[0].params().next(), Some(("rel", "Next  prev")));
}

#[test]
fn empty_values_elements_and_params_are_allowed() {
    assert_eq!(links(""), vec![]);
    assert_eq!(links(" , ,\t"), vec![]);
    let l = links(r#"<>; rel=""; anchor=; crossorigin;, ,<x>;"#);
    assert_eq!(l.len(), 2);
    assert_eq!(l[0].target(), "");
    assert_eq!(l[0].param("rel"), Some(""));
    assert_eq!(l[0].param("anchor"), Some(""));
    assert_eq!(l[0].param("crossorigin"), Some(""));
    assert_eq!(l[0].rels().count(), 0);
    assert_eq!(l[1].target(), "x");
}

#[test]
fn escapes_in_quoted_strings() {
    let l = links(r#"<x>; title="a \"quoted\" \\ word""#);
    assert_eq!(l[0].param("title"), Some(r#"a "quoted" \ word"#));
}

#[test]
fn several_header_lines_in_order() {
    let mut headers = HeaderMap::new();
    headers.append(
        LINK,
        HeaderValue::from_static(r#"</p2>; rel="next", </p0>; rel="prev""#),
    );
    headers.append(
        LINK,
        HeaderValue::from_static(r#"</p1>; rel="first", </p9>; rel="last""#),
    );
    let all = parse_link_headers(&headers).unwrap();
    let targets: Vec<_> = all.iter().map(Link::target).collect();
    assert_eq!(targets, ["/p2", "/p0", "/p1", "/p9"]);
    assert_eq!(find_rel(&headers, "LAST").unwrap().unwrap().target(), "/p9");
    assert_eq!(find_rel(&headers, "up").unwrap(), None);
}

#[test]
fn anchors_give_a_link_another_context() {
    let base: Uri = "http://h.test/items?page=1".parse().unwrap();
    let l = links(concat!(
        r#"</a>; rel=next, </b>; rel=next; anchor="/other?page=8", "#,
        r#"</c>; rel=next; anchor="", </d>; rel=next; anchor="?page=1", "#,
        r#"</e>; rel=next; anchor="HTTP://H.TEST:80/items?page=1", "#,
        r##"</f>; rel=next; anchor="#part", </g>; rel=next; anchor="mailto:x@y", "##,
        r#"</h>; rel=next; anchor="http://h.test/items?page=2""#,
    ));
    let about: Vec<_> = l.iter().map(|l| l.is_about(&base)).collect();
    assert_eq!(about, [true, false, true, true, true, false, false, false]);
}

#[test]
fn relative_targets_resolve_against_the_request() {
    let base: Uri = "http://h.test/v1/items?page=1".parse().unwrap();
    let l = links("<?page=2>; rel=next, <../v2/items>; rel=alternate");
    assert_eq!(
        l[0].resolve(&base).unwrap(),
        "http://h.test/v1/items?page=2"
    );
    assert_eq!(l[1].resolve(&base).unwrap(), "http://h.test/v2/items");
}

#[test]
fn malformed_headers_are_typed_errors_with_offsets() {
    let cases: &[(&str, usize, LinkErrorKind)] = &[
        ("/p; rel=next", 0, LinkErrorKind::ExpectedTarget),
        ("<a>, <b", 5, LinkErrorKind::UnterminatedTarget),
        ("<a> rel=next", 4, LinkErrorKind::UnexpectedChar),
        ("<a>; =x", 5, LinkErrorKind::ExpectedParamName),
        ("<a>; t=\"x", 7, LinkErrorKind::UnterminatedQuote),
        ("<a>; t=\"x\\", 7, LinkErrorKind::UnterminatedQuote),
        ("<a>; t=x\"y\"", 8, LinkErrorKind::UnexpectedChar),
        ("<a>; rel next", 9, LinkErrorKind::UnexpectedChar),
    ];
    for &(input, offset, kind) in cases {
        let err = parse_link_header(input).unwrap_err();
        assert_eq!((err.offset(), err.kind()), (offset, kind), "{input:?}");
    }
    let msg = parse_link_header("<a").unwrap_err().to_string();
    assert_eq!(
        msg,
        "malformed Link header at byte 0: '<' without a closing '>'"
    );
}

#[test]
fn obs_text_in_values_is_decoded_lossily_but_targets_stay_strict() {
    // RFC 9110 §5.5: a quoted string may hold bytes 0x80-0xFF (obs-text).
    let mut headers = HeaderMap::new();
    headers.append(
        LINK,
        HeaderValue::from_bytes(b"</a>; rel=next; title=\"caf\xe9\"; x=\xff").unwrap(),
    );
    let links = parse_link_headers(&headers).unwrap();
    assert_eq!(links[0].target(), "/a");
    assert!(links[0].has_rel("next"));
    assert_eq!(links[0].param("title"), Some("caf\u{fffd}"));
    assert_eq!(links[0].param("x"), Some("\u{fffd}"));
    let mut headers = HeaderMap::new();
    headers.append(
        LINK,
        HeaderValue::from_bytes(b"</a\xff>; rel=next").unwrap(),
    );
    let err = parse_link_headers(&headers).unwrap_err();
    assert_eq!((err.kind(), err.offset()), (LinkErrorKind::NotUtf8, 3));
    assert_eq!(
        err.to_string(),
        "malformed Link header at byte 3: the link target is not valid UTF-8"
    );
    let mut headers = HeaderMap::new();
    headers.append(
        LINK,
        HeaderValue::from_bytes("<a>; title=\"é\"".as_bytes()).unwrap(),
    );
    assert_eq!(
        parse_link_headers(&headers).unwrap()[0].param("title"),
        Some("é")
    );
}

// ---------------------------------------------------------------------------
// Reference model: the same grammar, written independently over chars as a
// small recursive-descent parser that returns `None` on any error.

mod model {
    use std::iter::Peekable;
    use std::str::Chars;

    pub(super) type Links = Vec<(String, Vec<(String, String)>)>;

    fn ows(c: char) -> bool {
        c == ' ' || c == '\t'
    }

    fn tchar(c: char) -> bool {
        c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
    }

    fn skip_while(it: &mut Peekable<Chars<'_>>, f: impl Fn(char) -> bool) {
        while it.next_if(|&c| f(c)).is_some() {}
    }

    fn take_while(it: &mut Peekable<Chars<'_>>, f: impl Fn(char) -> bool) -> String {
        let mut s = String::new();
        while let Some(c) = it.next_if(|&c| f(c)) {
            s.push(c);
        }
        s
    }

    pub(super) fn parse(s: &str) -> Option<Links> {
        let mut it = s.chars().peekable();
        let mut out = Vec::new();
        loop {
            skip_while(&mut it, |c| ows(c) || c == ',');
            match it.next() {
                None => return Some(out),
                Some('<') => {}
                Some(_) => return None,
            }
            let mut target = String::new();
            loop {
                match it.next()? {
                    '>' => break,
                    c => target.push(c),
                }
            }
            let target = target.trim_matches(ows).to_string();
            let mut params = Vec::new();
            loop {
                skip_while(&mut it, ows);
                match it.peek() {
                    None | Some(',') => break,
                    Some(';') => {
                        it.next();
                    }
                    Some(_) => return None,
                }
                skip_while(&mut it, ows);
                if matches!(it.peek(), None | Some(';' | ',')) {
                    continue;
                }
                let name = take_while(&mut it, tchar);
                if name.is_empty() {
                    return None;
                }
                skip_while(&mut it, ows);
                let mut value = String::new();
                if it.next_if_eq(&'=').is_some() {
                    skip_while(&mut it, ows);
                    if it.next_if_eq(&'"').is_some() {
                        loop {
                            match it.next()? {
                                '"' => break,
                                '\\' => value.push(it.next()?),
                                c => value.push(c),
                            }
                        }
                    } else {
                        value = take_while(&mut it, |c| !";, \t\"".contains(c));
                    }
                }
                params.push((name.to_ascii_lowercase(), value));
            }
            out.push((target, params));
        }
    }
}

fn as_model(links: &[Link]) -> model::Links {
    links
        .iter()
        .map(|l| {
            let params = l
                .params()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect();
            (l.target().to_owned(), params)
        })
        .collect()
}

/// A link as the generator sees it, and how to render each piece.
#[derive(Clone, Debug)]
struct GenLink {
    target: String,
    params: Vec<(String, String, Style)>,
    pad: (String, String),
}

#[derive(Clone, Copy, Debug)]
enum Style {
    Quoted,
    Token,
    Bare,
    Upper,
}

fn gen_link() -> impl Strategy<Value = GenLink> {
    let target =
        "[a-z0-9/?=&,;:.\"<é %-]{0,12}".prop_map(|t| t.trim_matches([' ', '\t']).to_owned());
    let value = "[a-zA-Z0-9 ,;=\"\\\\/é<>.-]{0,10}";
    let style = prop_oneof![
        Just(Style::Quoted),
        Just(Style::Token),
        Just(Style::Bare),
        Just(Style::Upper)
    ];
    let param = ("[a-z][a-z0-9*!.-]{0,5}", value, style);
    (
        target,
        prop::collection::vec(param, 0..4),
        ("[ \t]{0,2}", "[ \t]{0,2}"),
    )
        .prop_map(|(target, params, pad)| GenLink {
            target,
            params,
            pad,
        })
}

impl GenLink {
    /// The parameters a correct parser reports, after rendering decisions.
    fn expected(&self) -> (String, Vec<(String, String)>) {
        let params = self
            .params
            .iter()
            .map(|(n, v, style)| match style {
                Style::Bare => (n.clone(), String::new()),
                _ => (n.clone(), v.clone()),
            })
            .collect();
        (self.target.clone(), params)
    }

    fn render(&self) -> String {
        let (a, b) = &self.pad;
        let mut s = format!("<{}>", self.target);
        for (name, value, style) in &self.params {
            let quoted = format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""));
            let rendered = match style {
                Style::Bare => name.clone(),
                Style::Token if token_safe(value) => format!("{name}{a}={b}{value}"),
                Style::Upper => format!("{}={quoted}", name.to_ascii_uppercase()),
                _ => format!("{name}{b}={a}{quoted}"),
            };
            let _ = write!(s, "{a};{b}{rendered}");
        }
        s
    }
}

fn token_safe(v: &str) -> bool {
    !v.contains([';', ',', ' ', '\t', '"'])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Structured links rendered with varied spacing, quoting, case, empty
    /// list elements and several header lines parse back to the structure.
    #[test]
    fn generated_headers_parse_back_to_the_model(
        lines in prop::collection::vec(prop::collection::vec(gen_link(), 0..4), 1..3),
        sep in prop_oneof![Just(","), Just(", "), Just(" ,\t"), Just(", ,")],
    ) {
        let mut headers = HeaderMap::new();
        let mut expected = Vec::new();
        for line in &lines {
            let rendered: Vec<String> = line.iter().map(GenLink::render).collect();
            headers.append(LINK, HeaderValue::from_str(&rendered.join(sep)).unwrap());
            expected.extend(line.iter().map(GenLink::expected));
        }
        let parsed = parse_link_headers(&headers).unwrap();
        prop_assert_eq!(as_model(&parsed), expected);
    }

    /// On hostile input from the grammar's own alphabet, the parser agrees
    /// with the reference model: same links, or both reject.
    #[test]
    fn agrees_with_the_reference_model(s in "[<>;,=\" \t\\\\a-cRELé]{0,40}") {
        let ours = parse_link_header(&s).ok().map(|l| as_model(&l));
        prop_assert_eq!(ours, model::parse(&s));
    }

    #[test]
    fn never_panics(s in any::<String>()) {
        let ours = parse_link_header(&s).ok().map(|l| as_model(&l));
        prop_assert_eq!(ours, model::parse(&s));
    }

    #[test]
    fn never_panics_on_header_bytes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(value) = HeaderValue::from_bytes(&bytes) {
            let mut headers = HeaderMap::new();
            headers.append(LINK, value);
            let _ = parse_link_headers(&headers);
        }
    }
}
