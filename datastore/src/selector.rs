//! Calico's label selector language, parsed with `nom`.
//!
//! Grammar (the subset of libcalico-go's `selector` package that Manx needs,
//! plus the string operators):
//!
//! ```text
//! selector := ws [ or ] ws EOF          (empty selector = all())
//! or       := and ( "||" and )*
//! and      := unary ( "&&" unary )*
//! unary    := "!" unary | "(" or ")" | "all()" | "global()"
//!           | "has(" label ")" | label op
//! op       := "==" str | "!=" str | "in" set | "not" "in" set
//!           | "contains" str | "starts" "with" str | "ends" "with" str
//! set      := "{" [ str ( "," str )* ] "}"
//! str      := '...' | "..."                (no escapes, as in Calico)
//! label    := [A-Za-z0-9_./-]+
//! ```
//!
//! `&&` binds tighter than `||`. Matching follows Calico: `k != v` and
//! `k not in {..}` are true when the label is absent; `==`, `in` and the
//! string operators need the label present.
//!
//! [`Selector`]'s `Display` prints a canonical form that parses back to an
//! equal selector.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use nom::branch::alt;
use nom::bytes::complete::{tag, take_while, take_while1};
use nom::character::complete::{char, multispace0, multispace1};
use nom::combinator::{map, not, peek, value};
use nom::error::{ErrorKind, ParseError};
use nom::multi::separated_list1;
use nom::sequence::{delimited, preceded};
use nom::{IResult, Parser};

/// A parsed selector.
///
/// `And`/`Or` are n-ary and never directly contain a node of their own kind
/// (the parser flattens `a && (b && c)`), so a parsed selector prints and
/// re-parses to an equal value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Selector {
    /// `all()`: matches everything.
    All,
    /// `global()`: matches non-namespaced objects; Manx treats it like `all()`.
    Global,
    /// `has(k)`.
    Has(String),
    /// `k == 'v'`.
    Eq(String, String),
    /// `k != 'v'`.
    Ne(String, String),
    /// `k in {'a', 'b'}`.
    In(String, Vec<String>),
    /// `k not in {'a', 'b'}`.
    NotIn(String, Vec<String>),
    /// `k contains 's'`.
    Contains(String, String),
    /// `k starts with 's'`.
    StartsWith(String, String),
    /// `k ends with 's'`.
    EndsWith(String, String),
    /// `!x`.
    Not(Box<Selector>),
    /// `x && y && ...` (two or more terms).
    And(Vec<Selector>),
    /// `x || y || ...` (two or more terms).
    Or(Vec<Selector>),
}

/// A selector that failed to parse: the whole text, the 1-based column (in
/// characters) where parsing stopped, and what was expected there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("selector {text:?}: expected {expected} at column {column}")]
pub struct SelectorError {
    /// The selector as written.
    pub text: String,
    /// 1-based column, in characters; `len + 1` means "at the end".
    pub column: usize,
    /// What the parser wanted to see there.
    pub expected: &'static str,
}

impl Selector {
    /// Parse a selector. An empty (or all-blank) selector is `all()`, as in Calico.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        let to_error = |rest: &str, expected: &'static str| {
            let offset = text.len() - rest.len();
            SelectorError {
                text: text.to_string(),
                column: text[..offset].chars().count() + 1,
                expected,
            }
        };
        let (rest, _) = ws(text).map_err(|_| to_error(text, "a selector"))?;
        if rest.is_empty() {
            return Ok(Selector::All);
        }
        match expect("an expression", or_expr).parse(rest) {
            Ok((rest, sel)) => {
                let (rest, _) = ws(rest).map_err(|_| to_error(rest, "end of selector"))?;
                if rest.is_empty() {
                    Ok(sel)
                } else {
                    Err(to_error(rest, "'&&', '||' or the end of the selector"))
                }
            }
            Err(nom::Err::Error(e) | nom::Err::Failure(e)) => Err(to_error(e.input, e.expected)),
            Err(nom::Err::Incomplete(_)) => Err(to_error("", "more input")),
        }
    }

    /// Does this selector match a set of labels?
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let get = |k: &str| labels.get(k).map(String::as_str);
        match self {
            Selector::All | Selector::Global => true,
            Selector::Has(k) => labels.contains_key(k),
            Selector::Eq(k, v) => get(k) == Some(v.as_str()),
            Selector::Ne(k, v) => get(k) != Some(v.as_str()),
            Selector::In(k, set) => get(k).is_some_and(|v| set.iter().any(|s| s == v)),
            Selector::NotIn(k, set) => !get(k).is_some_and(|v| set.iter().any(|s| s == v)),
            Selector::Contains(k, s) => get(k).is_some_and(|v| v.contains(s.as_str())),
            Selector::StartsWith(k, s) => get(k).is_some_and(|v| v.starts_with(s.as_str())),
            Selector::EndsWith(k, s) => get(k).is_some_and(|v| v.ends_with(s.as_str())),
            Selector::Not(inner) => !inner.matches(labels),
            Selector::And(terms) => terms.iter().all(|t| t.matches(labels)),
            Selector::Or(terms) => terms.iter().any(|t| t.matches(labels)),
        }
    }

    /// True for `all()` (and `global()`): the selector matches everything.
    pub fn is_all(&self) -> bool {
        matches!(self, Selector::All | Selector::Global)
    }
}

impl FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

/// Quote a string value: double quotes unless the value holds one.
fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    if s.contains('"') {
        write!(f, "'{s}'")
    } else {
        write!(f, "\"{s}\"")
    }
}

fn write_set(f: &mut fmt::Formatter<'_>, set: &[String]) -> fmt::Result {
    f.write_str("{")?;
    for (i, v) in set.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write_quoted(f, v)?;
    }
    f.write_str("}")
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::All => f.write_str("all()"),
            Selector::Global => f.write_str("global()"),
            Selector::Has(k) => write!(f, "has({k})"),
            Selector::Eq(k, v) => {
                write!(f, "{k} == ")?;
                write_quoted(f, v)
            }
            Selector::Ne(k, v) => {
                write!(f, "{k} != ")?;
                write_quoted(f, v)
            }
            Selector::In(k, set) => {
                write!(f, "{k} in ")?;
                write_set(f, set)
            }
            Selector::NotIn(k, set) => {
                write!(f, "{k} not in ")?;
                write_set(f, set)
            }
            Selector::Contains(k, v) => {
                write!(f, "{k} contains ")?;
                write_quoted(f, v)
            }
            Selector::StartsWith(k, v) => {
                write!(f, "{k} starts with ")?;
                write_quoted(f, v)
            }
            Selector::EndsWith(k, v) => {
                write!(f, "{k} ends with ")?;
                write_quoted(f, v)
            }
            Selector::Not(inner) => match **inner {
                Selector::And(_) | Selector::Or(_) => write!(f, "!({inner})"),
                // `!a == "x"` would read as `(!a) == ..`: always bracket operators.
                Selector::Eq(..)
                | Selector::Ne(..)
                | Selector::In(..)
                | Selector::NotIn(..)
                | Selector::Contains(..)
                | Selector::StartsWith(..)
                | Selector::EndsWith(..) => write!(f, "!({inner})"),
                _ => write!(f, "!{inner}"),
            },
            Selector::And(terms) => {
                for (i, t) in terms.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" && ")?;
                    }
                    match t {
                        Selector::Or(_) | Selector::And(_) => write!(f, "({t})")?,
                        _ => write!(f, "{t}")?,
                    }
                }
                Ok(())
            }
            Selector::Or(terms) => {
                for (i, t) in terms.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" || ")?;
                    }
                    match t {
                        Selector::Or(_) => write!(f, "({t})")?,
                        _ => write!(f, "{t}")?,
                    }
                }
                Ok(())
            }
        }
    }
}

// ---- parser ----------------------------------------------------------------

/// Parse error: where, and what was expected there.
#[derive(Debug)]
struct PErr<'a> {
    input: &'a str,
    expected: &'static str,
}

impl<'a> ParseError<&'a str> for PErr<'a> {
    fn from_error_kind(input: &'a str, _kind: ErrorKind) -> Self {
        PErr {
            input,
            expected: "a valid selector",
        }
    }
    fn append(_input: &'a str, _kind: ErrorKind, other: Self) -> Self {
        other
    }
}

type Res<'a, O> = IResult<&'a str, O, PErr<'a>>;

/// Run `p`; if it fails without committing, fail hard (no backtracking) at
/// this position, saying what was expected.
fn expect<'a, O>(
    expected: &'static str,
    mut p: impl Parser<&'a str, Output = O, Error = PErr<'a>>,
) -> impl Parser<&'a str, Output = O, Error = PErr<'a>> {
    move |i: &'a str| match p.parse(i) {
        // Point past blanks: the missing thing would start there.
        Err(nom::Err::Error(_)) => Err(nom::Err::Failure(PErr {
            input: i.trim_start(),
            expected,
        })),
        other => other,
    }
}

fn ws(i: &str) -> Res<'_, &str> {
    multispace0(i)
}

fn is_label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-')
}

fn label(i: &str) -> Res<'_, String> {
    map(take_while1(is_label_char), str::to_string).parse(i)
}

/// A keyword not followed by a label character (so `in` does not eat `inx`).
fn keyword<'a>(word: &'static str) -> impl Parser<&'a str, Output = &'a str, Error = PErr<'a>> {
    move |i: &'a str| {
        let (rest, kw) = tag(word).parse(i)?;
        let (rest, _) = not(peek(nom::character::complete::satisfy(is_label_char))).parse(rest)?;
        Ok((rest, kw))
    }
}

fn quoted(i: &str) -> Res<'_, String> {
    map(
        alt((
            delimited(char('"'), take_while(|c| c != '"'), char('"')),
            delimited(char('\''), take_while(|c| c != '\''), char('\'')),
        )),
        str::to_string,
    )
    .parse(i)
}

fn string_value(i: &str) -> Res<'_, String> {
    preceded(ws, expect("a quoted string", quoted)).parse(i)
}

fn set(i: &str) -> Res<'_, Vec<String>> {
    let (i, _) = preceded(ws, expect("'{'", char('{'))).parse(i)?;
    if let Ok((rest, _)) = preceded(ws, char::<_, PErr<'_>>('}')).parse(i) {
        return Ok((rest, Vec::new()));
    }
    let (i, items) = separated_list1(
        preceded(ws, char(',')),
        preceded(ws, expect("a quoted string", quoted)),
    )
    .parse(i)?;
    let (i, _) = preceded(ws, expect("',' or '}'", char('}'))).parse(i)?;
    Ok((i, items))
}

fn label_op(i: &str) -> Res<'_, Selector> {
    let (i, k) = label(i)?;
    let (i, _) = ws(i)?;
    let op = alt((
        map(preceded(tag("=="), string_value), |v| (0u8, vec![v])),
        map(preceded(tag("!="), string_value), |v| (1, vec![v])),
        map(preceded(keyword("in"), set), |s| (2, s)),
        map(
            preceded(
                (keyword("not"), multispace1, expect("'in'", keyword("in"))),
                set,
            ),
            |s| (3, s),
        ),
        map(preceded(keyword("contains"), string_value), |v| {
            (4, vec![v])
        }),
        map(
            preceded(
                (
                    keyword("starts"),
                    multispace1,
                    expect("'with'", keyword("with")),
                ),
                string_value,
            ),
            |v| (5, vec![v]),
        ),
        map(
            preceded(
                (
                    keyword("ends"),
                    multispace1,
                    expect("'with'", keyword("with")),
                ),
                string_value,
            ),
            |v| (6, vec![v]),
        ),
    ));
    let (i, (code, mut vals)) = expect(
        "an operator (==, !=, in, not in, contains, starts with, ends with)",
        op,
    )
    .parse(i)?;
    let sel = match code {
        0 => Selector::Eq(k, vals.remove(0)),
        1 => Selector::Ne(k, vals.remove(0)),
        2 => Selector::In(k, vals),
        3 => Selector::NotIn(k, vals),
        4 => Selector::Contains(k, vals.remove(0)),
        5 => Selector::StartsWith(k, vals.remove(0)),
        _ => Selector::EndsWith(k, vals.remove(0)),
    };
    Ok((i, sel))
}

fn has(i: &str) -> Res<'_, Selector> {
    let (i, _) = (tag("has"), ws, char('(')).parse(i)?;
    let (i, k) = preceded(ws, expect("a label name", label)).parse(i)?;
    let (i, _) = preceded(ws, expect("')'", char(')'))).parse(i)?;
    Ok((i, Selector::Has(k)))
}

fn unary(i: &str) -> Res<'_, Selector> {
    let (i, _) = ws(i)?;
    alt((
        map(preceded(char('!'), expect("an expression", unary)), |s| {
            Selector::Not(Box::new(s))
        }),
        |i| {
            let (i, _) = char('(').parse(i)?;
            let (i, inner) = expect("an expression", or_expr).parse(i)?;
            let (i, _) = preceded(ws, expect("')'", char(')'))).parse(i)?;
            Ok((i, inner))
        },
        value(Selector::All, (tag("all"), ws, char('('), ws, char(')'))),
        value(
            Selector::Global,
            (tag("global"), ws, char('('), ws, char(')')),
        ),
        has,
        label_op,
    ))
    .parse(i)
}

/// Parse `first (sep next)*` and flatten same-kind children.
fn nary<'a>(
    i: &'a str,
    sep: &'static str,
    term: fn(&'a str) -> Res<'a, Selector>,
    build: fn(Vec<Selector>) -> Selector,
    is_same: fn(&Selector) -> Option<&Vec<Selector>>,
) -> Res<'a, Selector> {
    let (mut i, first) = term(i)?;
    let mut terms = vec![first];
    loop {
        let (rest, _) = ws(i)?;
        match tag::<_, _, PErr<'a>>(sep).parse(rest) {
            Ok((rest, _)) => {
                let (rest, t) = expect("an expression", term).parse(rest)?;
                terms.push(t);
                i = rest;
            }
            Err(_) => break,
        }
    }
    if terms.len() == 1 {
        return Ok((i, terms.pop().expect("one term")));
    }
    let mut flat = Vec::with_capacity(terms.len());
    for t in terms {
        match is_same(&t) {
            Some(children) => flat.extend(children.iter().cloned()),
            None => flat.push(t),
        }
    }
    Ok((i, build(flat)))
}

fn and_expr(i: &str) -> Res<'_, Selector> {
    nary(i, "&&", unary, Selector::And, |s| match s {
        Selector::And(v) => Some(v),
        _ => None,
    })
}

fn or_expr(i: &str) -> Res<'_, Selector> {
    nary(i, "||", and_expr, Selector::Or, |s| match s {
        Selector::Or(v) => Some(v),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_calico_examples() {
        // Examples from Calico's selector documentation.
        for s in [
            "all()",
            "has(route-reflector)",
            "!has(route-reflector)",
            "rack == 'rack-1'",
            "rack != \"rack-1\"",
            "zone in {'a', \"b\"}",
            "zone not in {}",
            "(a == 'x' || b == 'y') && !has(c)",
            "kubernetes.io/hostname == 'node-1'",
            "global()",
            "a contains 'x' && b starts with 'y' || c ends with 'z'",
        ] {
            let sel = Selector::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            let again = Selector::parse(&sel.to_string()).unwrap();
            assert_eq!(sel, again, "{s} -> {sel}");
        }
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let s = Selector::parse("a == 'x' || b == 'y' && c == 'z'").unwrap();
        assert!(matches!(&s, Selector::Or(v) if matches!(v[1], Selector::And(_))));
        assert!(s.matches(&labels(&[("a", "x")])));
        assert!(!s.matches(&labels(&[("b", "y")])));
    }

    #[test]
    fn flattens_nested_same_ops() {
        let s = Selector::parse("a == 'x' && (b == 'y' && c == 'z')").unwrap();
        assert!(matches!(&s, Selector::And(v) if v.len() == 3));
    }

    #[test]
    fn empty_is_all() {
        assert_eq!(Selector::parse("  ").unwrap(), Selector::All);
    }

    #[test]
    fn keyword_boundary() {
        // `inx` is not `in`.
        let err = Selector::parse("a inx {'b'}").unwrap_err();
        assert_eq!(err.column, 3);
    }

    #[test]
    fn not_of_operator_prints_brackets() {
        let s = Selector::Not(Box::new(Selector::Eq("a".into(), "b".into())));
        assert_eq!(s.to_string(), "!(a == \"b\")");
        assert_eq!(Selector::parse(&s.to_string()).unwrap(), s);
    }
}
