//! Selector language: parse, match, error columns, and a display → parse
//! round trip over generated selectors.

use std::collections::BTreeMap;

use datastore::selector::Selector;
use proptest::prelude::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn m(sel: &str, pairs: &[(&str, &str)]) -> bool {
    Selector::parse(sel)
        .unwrap_or_else(|e| panic!("{e}"))
        .matches(&labels(pairs))
}

#[test]
fn matching_follows_calico() {
    assert!(m("all()", &[]));
    assert!(m("", &[]));
    assert!(m("global()", &[("a", "b")]));
    assert!(m("has(rr)", &[("rr", "")]));
    assert!(!m("has(rr)", &[]));
    assert!(m("!has(rr)", &[]));
    assert!(m("rack == 'r1'", &[("rack", "r1")]));
    assert!(!m("rack == 'r1'", &[]));
    assert!(m("rack == \"r1\"", &[("rack", "r1")]));
    // != and not in match when the label is absent.
    assert!(m("rack != 'r1'", &[]));
    assert!(!m("rack != 'r1'", &[("rack", "r1")]));
    assert!(m("zone in {'a', 'b'}", &[("zone", "b")]));
    assert!(!m("zone in {'a', 'b'}", &[]));
    assert!(m("zone not in {'a','b'}", &[]));
    assert!(!m("zone not in {'a','b'}", &[("zone", "a")]));
    assert!(m("name contains 'gin'", &[("name", "nginx")]));
    assert!(m("name starts with 'ng'", &[("name", "nginx")]));
    assert!(m("name ends with 'nx'", &[("name", "nginx")]));
    assert!(!m("name ends with 'nx'", &[]));
    assert!(m(
        "(rack == 'r1' || rack == 'r2') && !has(route-reflector)",
        &[("rack", "r2")]
    ));
    assert!(!m(
        "(rack == 'r1' || rack == 'r2') && !has(route-reflector)",
        &[("rack", "r2"), ("route-reflector", "true")]
    ));
    assert!(m(
        "kubernetes.io/hostname == 'node-1'",
        &[("kubernetes.io/hostname", "node-1")]
    ));
    assert!(m("  rack   ==   'r1'  ", &[("rack", "r1")]));
}

#[track_caller]
fn error(sel: &str, column: usize, expected: &str) {
    let e = Selector::parse(sel).unwrap_err();
    assert_eq!((e.column, e.expected), (column, expected), "{e}");
}

#[test]
fn errors_point_at_the_column() {
    let e = Selector::parse("a == 'x' &&").unwrap_err();
    assert_eq!(
        e.to_string(),
        "selector \"a == 'x' &&\": expected an expression at column 12"
    );
    error("a ==", 5, "a quoted string");
    error("a == x", 6, "a quoted string");
    error("a == 'x", 6, "a quoted string");
    error("has(", 5, "a label name");
    error("has(a", 6, "')'");
    error("(a == 'x'", 10, "')'");
    error(
        "a",
        2,
        "an operator (==, !=, in, not in, contains, starts with, ends with)",
    );
    error("a in 'x'", 6, "'{'");
    error("a in {'x' 'y'}", 11, "',' or '}'");
    error("a not 'x'", 7, "'in'");
    error("a == 'x' b", 10, "'&&', '||' or the end of the selector");
    error("!", 2, "an expression");
    error("&& a == 'b'", 1, "an expression");
    error("a == 'x' || ", 13, "an expression");
    // Columns count characters, not bytes.
    error("é == 'x' &&", 1, "an expression");
    error("a == 'é' &&", 12, "an expression");
}

#[test]
fn canonical_display() {
    let s = Selector::parse("a=='x'&&(b in {'1','2'}||!has(c))").unwrap();
    assert_eq!(
        s.to_string(),
        "a == \"x\" && (b in {\"1\", \"2\"} || !has(c))"
    );
    let s = Selector::parse("!(a == 'x' && b == 'y')").unwrap();
    assert_eq!(s.to_string(), "!(a == \"x\" && b == \"y\")");
    // A value holding a double quote prints with single quotes.
    let s = Selector::parse("a == 'say \"hi\"'").unwrap();
    assert_eq!(s.to_string(), "a == 'say \"hi\"'");
}

// ---- generated round trips ---------------------------------------------------

fn key() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_./-]{0,8}".prop_filter("keywords are not keys", |k| {
        ![
            "all", "global", "has", "in", "not", "contains", "starts", "ends", "with",
        ]
        .contains(&k.as_str())
    })
}

fn val() -> impl Strategy<Value = String> {
    // Anything but a string holding both quote kinds (not expressible).
    prop_oneof![" ?[a-zA-Z0-9 ._\"-]{0,8}", "[a-zA-Z0-9 ._'-]{0,8}"]
}

fn leaf() -> impl Strategy<Value = Selector> {
    prop_oneof![
        Just(Selector::All),
        Just(Selector::Global),
        key().prop_map(Selector::Has),
        (key(), val()).prop_map(|(k, v)| Selector::Eq(k, v)),
        (key(), val()).prop_map(|(k, v)| Selector::Ne(k, v)),
        (key(), prop::collection::vec(val(), 0..4)).prop_map(|(k, v)| Selector::In(k, v)),
        (key(), prop::collection::vec(val(), 0..4)).prop_map(|(k, v)| Selector::NotIn(k, v)),
        (key(), val()).prop_map(|(k, v)| Selector::Contains(k, v)),
        (key(), val()).prop_map(|(k, v)| Selector::StartsWith(k, v)),
        (key(), val()).prop_map(|(k, v)| Selector::EndsWith(k, v)),
    ]
}

/// Flatten nested same-kind n-ary nodes, as the parser does.
fn normalize(s: Selector) -> Selector {
    match s {
        Selector::Not(x) => Selector::Not(Box::new(normalize(*x))),
        Selector::And(v) => Selector::And(
            v.into_iter()
                .map(normalize)
                .flat_map(|t| match t {
                    Selector::And(inner) => inner,
                    other => vec![other],
                })
                .collect(),
        ),
        Selector::Or(v) => Selector::Or(
            v.into_iter()
                .map(normalize)
                .flat_map(|t| match t {
                    Selector::Or(inner) => inner,
                    other => vec![other],
                })
                .collect(),
        ),
        other => other,
    }
}

fn selector() -> impl Strategy<Value = Selector> {
    leaf().prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|s| Selector::Not(Box::new(s))),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Selector::And),
            prop::collection::vec(inner, 2..4).prop_map(Selector::Or),
        ]
    })
}

fn random_labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map("[a-c]", "[xy ]{0,2}", 0..4)
}

proptest! {
    #[test]
    fn display_parses_back_equal(s in selector()) {
        let s = normalize(s);
        let text = s.to_string();
        let parsed = Selector::parse(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&parsed, &s, "printed as {}", text);
        prop_assert_eq!(parsed.to_string(), text);
    }

    #[test]
    fn matching_survives_the_round_trip(s in selector(), l in random_labels()) {
        let again = Selector::parse(&s.to_string()).unwrap();
        prop_assert_eq!(again.matches(&l), s.matches(&l));
    }

    #[test]
    fn parser_never_panics(text in "[ a-c!&|()='{},\"hasin]{0,24}") {
        match Selector::parse(&text) {
            Ok(s) => { Selector::parse(&s.to_string()).unwrap(); }
            Err(e) => prop_assert!(e.column >= 1 && e.column <= text.chars().count() + 1),
        }
    }
}
