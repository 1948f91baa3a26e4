//! Reading and writing manifests, as calicoctl does.
//!
//! Input: YAML (one or more `---` documents; a document may be a `kind: List`
//! (or `kind: <Kind>List`) with `items`, or a YAML sequence of resources) or
//! JSON (an object, a `List` object or an array). Output: one object, or a
//! list wrapped as `kind: <Kind>List` with `items` as calicoctl prints.
//!
//! Errors carry the source name, line, column and field path:
//!
//! ```text
//! pools.yaml:7:5: IPPool default-ipv4-ippool: spec.blockSzie: unknown field (did you mean blockSize?)
//! ```
//!
//! Validation errors point at the line of the field where it can be found
//! (else the document's first line).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::validate::closest;
use crate::model::{API_VERSION, KindId, Resource, ValidationErrors, validate_all};

/// One problem found in a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestProblem {
    /// 1-based line in the source.
    pub line: usize,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// `IPPool default-ipv4-ippool`, when the object could be identified.
    pub object: Option<String>,
    /// Field path such as `spec.blockSize`, when known.
    pub path: Option<String>,
    pub message: String,
}

impl fmt::Display for ManifestProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.line)?;
        if let Some(c) = self.column {
            write!(f, ":{c}")?;
        }
        f.write_str(": ")?;
        if let Some(o) = &self.object {
            write!(f, "{o}: ")?;
        }
        if let Some(p) = &self.path {
            write!(f, "{p}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Everything wrong with one manifest source. Never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestError {
    /// File name (or `<stdin>`) as given by the caller.
    pub source_name: String,
    pub problems: Vec<ManifestProblem>,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}:{p}", self.source_name)?;
        }
        Ok(())
    }
}

/// Parse and validate (each object, plus duplicate names and overlapping
/// pools within the manifest).
pub fn parse_manifests(text: &str, source_name: &str) -> Result<Vec<Resource>, ManifestError> {
    let (resources, docs) = decode(text, source_name)?;
    match validate_all(&resources) {
        Ok(()) => Ok(resources),
        Err(errors) => Err(ManifestError {
            source_name: source_name.to_string(),
            problems: locate_validation_errors(&resources, &docs, &errors),
        }),
    }
}

/// Parse without validating (for `delete -f`, which only needs names).
pub fn parse_manifests_unvalidated(
    text: &str,
    source_name: &str,
) -> Result<Vec<Resource>, ManifestError> {
    decode(text, source_name).map(|(r, _)| r)
}

/// One resource as YAML.
pub fn to_yaml<T: Serialize + ?Sized>(value: &T) -> String {
    // Our types serialize to plain maps/strings/numbers: cannot fail.
    serde_norway::to_string(value).expect("resources always serialize to YAML")
}

/// One resource as pretty JSON.
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("resources always serialize to JSON")
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListOut<'a> {
    api_version: &'static str,
    kind: String,
    items: &'a [Resource],
}

fn list_out(items: &[Resource]) -> ListOut<'_> {
    let kind = match items.first() {
        Some(first) if items.iter().all(|r| r.kind() == first.kind()) => {
            format!("{}List", first.kind())
        }
        _ => "List".to_string(),
    };
    ListOut {
        api_version: API_VERSION,
        kind,
        items,
    }
}

/// Several resources as a calicoctl-style list (`kind: IPPoolList` when all
/// share a kind, else `kind: List`).
pub fn list_to_yaml(items: &[Resource]) -> String {
    to_yaml(&list_out(items))
}

/// Several resources as a JSON list object.
pub fn list_to_json(items: &[Resource]) -> String {
    to_json(&list_out(items))
}

// ---- decoding --------------------------------------------------------------

/// A `kind: List` / `kind: XList` document.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListDoc {
    #[serde(default)]
    #[allow(dead_code)]
    api_version: Option<String>,
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    #[allow(dead_code)]
    metadata: Option<serde_json::Value>,
    #[serde(default)]
    items: Vec<Resource>,
}

/// Where each decoded resource came from.
#[derive(Debug, Clone)]
struct Origin {
    /// 0-based line offset of the document's text in the source.
    line_offset: usize,
    /// 1-based line of the document's first content line.
    first_line: usize,
    /// The document text (for locating fields), if the resource is the
    /// whole document (not a list item).
    text: Option<String>,
}

/// One YAML document cut out of the stream.
struct Doc {
    line_offset: usize,
    text: String,
}

fn split_yaml_documents(text: &str) -> Vec<Doc> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut offset = 0;
    for (i, line) in text.lines().enumerate() {
        let is_start =
            line.starts_with("---") && line[3..].chars().next().is_none_or(char::is_whitespace);
        let is_end =
            line.starts_with("...") && line[3..].chars().next().is_none_or(char::is_whitespace);
        if is_start || is_end {
            docs.push(Doc {
                line_offset: offset,
                text: std::mem::take(&mut current),
            });
            offset = i;
            // Keep columns: blank out the marker, keep what follows it.
            current.push_str("   ");
            current.push_str(&line[3..]);
            current.push('\n');
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs.push(Doc {
        line_offset: offset,
        text: current,
    });
    docs.retain(|d| {
        d.text.lines().any(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        })
    });
    docs
}

fn first_content_line(text: &str) -> usize {
    text.lines()
        .position(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        })
        .unwrap_or(0)
        + 1
}

fn is_list_kind(kind: Option<&str>) -> bool {
    kind.is_some_and(|k| k == "List" || (k.ends_with("List") && k.len() > 4))
}

/// Identify the object a path points into, from the untyped document.
fn object_label(value: &serde_json::Value, path: Option<&str>) -> Option<String> {
    let mut v = value;
    if let Some(p) = path {
        // `items[3].spec` / `[3].spec` select a list element.
        let p = p.strip_prefix("items").unwrap_or(p);
        if let Some(rest) = p.strip_prefix('[')
            && let Some((idx, _)) = rest.split_once(']')
        {
            let idx: usize = idx.parse().ok()?;
            v = match v {
                serde_json::Value::Array(a) => a.get(idx)?,
                other => other.get("items")?.get(idx)?,
            };
        }
    }
    let kind = v.get("kind")?.as_str()?;
    if is_list_kind(Some(kind)) {
        return None;
    }
    let name = v
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or("<unnamed>");
    Some(format!("{kind} {name}"))
}

/// Remove `at line N column M` / `at position N` from a message (we report
/// the location ourselves, in source coordinates).
fn scrub_locations(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(pos) = rest.find(" at ") {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 4..];
        let skip = strip_location(after);
        match skip {
            Some(n) => rest = &after[n..],
            None => {
                out.push_str(" at ");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Length of a leading `line N column M` or `position N`, if present.
fn strip_location(s: &str) -> Option<usize> {
    let digits = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if let Some(r) = s.strip_prefix("line ") {
        let n = digits(r);
        let r2 = r[n..].strip_prefix(" column ")?;
        let m = digits(r2);
        (n > 0 && m > 0).then_some(5 + n + 8 + m)
    } else if let Some(r) = s.strip_prefix("position ") {
        let n = digits(r);
        (n > 0).then_some(9 + n)
    } else {
        None
    }
}

/// Names between backticks: "expected one of `a`, `b`".
fn backticked(s: &str) -> Vec<&str> {
    s.split('`').skip(1).step_by(2).collect()
}

/// Turn a serde message into (path, message) with friendlier wording.
fn humanize(raw: &str) -> (Option<String>, String) {
    let msg = scrub_locations(raw);
    let (path, msg) = match msg.split_once(": ") {
        Some((p, m)) if !p.is_empty() && !p.contains(' ') && !p.contains('`') => {
            (Some(p.to_string()), m.to_string())
        }
        _ => (None, msg),
    };
    for (prefix, what) in [("unknown field `", "field"), ("unknown variant `", "value")] {
        if let Some(rest) = msg.strip_prefix(prefix) {
            let Some((name, tail)) = rest.split_once('`') else {
                continue;
            };
            let expected = backticked(tail);
            let hint = match closest(name, &expected) {
                Some(c) => format!(" (did you mean {c}?)"),
                None if expected.is_empty() => String::new(),
                None => format!("; expected one of: {}", expected.join(", ")),
            };
            return if what == "field" {
                let full = match &path {
                    Some(p) => format!("{p}.{name}"),
                    None => name.to_string(),
                };
                (Some(full), format!("unknown field{hint}"))
            } else {
                (path, format!("unknown value {name:?}{hint}"))
            };
        }
    }
    (path, msg)
}

fn problem_from_yaml(
    err: &serde_norway::Error,
    line_offset: usize,
    doc_first_line: usize,
    value: Option<&serde_json::Value>,
) -> ManifestProblem {
    let (path, message) = humanize(&err.to_string());
    let (line, column) = match err.location() {
        Some(loc) => (line_offset + loc.line(), Some(loc.column())),
        None => (line_offset + doc_first_line, None),
    };
    ManifestProblem {
        line,
        column,
        object: value.and_then(|v| object_label(v, path.as_deref())),
        path,
        message,
    }
}

type Decoded = (Vec<Resource>, Vec<Origin>);

fn decode(text: &str, source_name: &str) -> Result<Decoded, ManifestError> {
    let trimmed = text.trim_start();
    let (resources, origins, problems) = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        decode_json(text)
    } else {
        decode_yaml(text)
    };
    if problems.is_empty() {
        Ok((resources, origins))
    } else {
        Err(ManifestError {
            source_name: source_name.to_string(),
            problems,
        })
    }
}

fn decode_yaml(text: &str) -> (Vec<Resource>, Vec<Origin>, Vec<ManifestProblem>) {
    let mut resources = Vec::new();
    let mut origins = Vec::new();
    let mut problems = Vec::new();
    for doc in split_yaml_documents(text) {
        let first = first_content_line(&doc.text);
        // Untyped pass: syntax errors, and the kind/name for messages.
        let value: serde_json::Value = match serde_norway::from_str(&doc.text) {
            Ok(v) => v,
            Err(e) => {
                problems.push(problem_from_yaml(&e, doc.line_offset, first, None));
                continue;
            }
        };
        let kind = value.get("kind").and_then(|k| k.as_str());
        let typed: Result<Vec<Resource>, _> = if value.is_array() {
            serde_norway::from_str::<Vec<Resource>>(&doc.text)
        } else if is_list_kind(kind) {
            serde_norway::from_str::<ListDoc>(&doc.text).map(|l| l.items)
        } else {
            serde_norway::from_str::<Resource>(&doc.text).map(|r| vec![r])
        };
        match typed {
            Ok(items) => {
                let whole = items.len() == 1 && !value.is_array() && !is_list_kind(kind);
                for r in items {
                    resources.push(r);
                    origins.push(Origin {
                        line_offset: doc.line_offset,
                        first_line: doc.line_offset + first,
                        text: whole.then(|| doc.text.clone()),
                    });
                }
            }
            Err(e) => problems.push(problem_from_yaml(&e, doc.line_offset, first, Some(&value))),
        }
    }
    (resources, origins, problems)
}

fn decode_json(text: &str) -> (Vec<Resource>, Vec<Origin>, Vec<ManifestProblem>) {
    let json_problem = |e: &serde_json::Error, value: Option<&serde_json::Value>| {
        let (path, message) = humanize(&e.to_string());
        ManifestProblem {
            line: e.line().max(1),
            column: (e.column() > 0).then_some(e.column()),
            object: value.and_then(|v| object_label(v, path.as_deref())),
            path,
            message,
        }
    };
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return (Vec::new(), Vec::new(), vec![json_problem(&e, None)]),
    };
    let kind = value.get("kind").and_then(|k| k.as_str());
    let typed: Result<Vec<Resource>, _> = if value.is_array() {
        serde_json::from_str::<Vec<Resource>>(text)
    } else if is_list_kind(kind) {
        serde_json::from_str::<ListDoc>(text).map(|l| l.items)
    } else {
        serde_json::from_str::<Resource>(text).map(|r| vec![r])
    };
    match typed {
        Ok(items) => {
            let first = first_content_line(text);
            let whole = items.len() == 1 && !value.is_array() && !is_list_kind(kind);
            let origins = items
                .iter()
                .map(|_| Origin {
                    line_offset: 0,
                    first_line: first,
                    text: whole.then(|| text.to_string()),
                })
                .collect();
            (items, origins, Vec::new())
        }
        Err(e) => {
            // A single object can still be named; list elements cannot
            // (serde_json reports no path).
            let v = (!value.is_array() && !is_list_kind(kind)).then_some(&value);
            (Vec::new(), Vec::new(), vec![json_problem(&e, v)])
        }
    }
}

// ---- locating validation errors --------------------------------------------

/// Find the line/column of a dotted field path (`spec.bgp.asNumber`,
/// `spec.reservedCIDRs[1]`, `spec.importV4[2].cidr`) in a YAML or JSON
/// document: each component must appear as a key, more indented than the
/// previous one, after it; an index picks that item of a block sequence
/// (`- ...` lines; a flow sequence `[..]` gives the key's place).
fn locate_field(text: &str, path: &str) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut from = 0;
    let mut min_indent = 0;
    let mut found = None;
    for comp in path.split('.') {
        let key = comp.split('[').next().unwrap_or(comp);
        let mut hit = None;
        for (i, line) in lines.iter().enumerate().skip(from) {
            let content = line.trim_start();
            let content = content.trim_start_matches("- ");
            let indent_after_dash = line.len() - content.len();
            let matches = content.starts_with(&format!("{key}:"))
                || content.starts_with(&format!("\"{key}\":"))
                || content.starts_with(&format!("\"{key}\" :"));
            if matches && (found.is_none() || indent_after_dash >= min_indent) {
                hit = Some((i, indent_after_dash));
                break;
            }
        }
        let (i, col) = hit?;
        found = Some((i, col));
        from = i + 1;
        min_indent = col + 1;
        let index = comp
            .split_once('[')
            .and_then(|(_, r)| r.strip_suffix(']'))
            .and_then(|n| n.parse::<usize>().ok());
        if let Some(n) = index
            && let Some((line, content_col)) = sequence_item(&lines, i, col, n)
        {
            found = Some((line, content_col));
            // The item's first key is on its `- ` line.
            from = line;
            min_indent = content_col;
        }
    }
    found.map(|(i, col)| (i + 1, col + 1))
}

/// The `n`th item of the block sequence under the key at line `key_line`
/// (column `key_col`): its line and the column of its content.
fn sequence_item(
    lines: &[&str],
    key_line: usize,
    key_col: usize,
    n: usize,
) -> Option<(usize, usize)> {
    let mut seen = 0;
    let mut item_indent = None;
    for (i, line) in lines.iter().enumerate().skip(key_line + 1) {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let dash = trimmed == "-" || trimmed.starts_with("- ");
        // The sequence ends at the next key at the key's level or above
        // (items may sit at the key's own indent, as YAML allows).
        if indent < key_col || (indent == key_col && !dash) {
            return None;
        }
        // Items are the dashes at the first one's indent (deeper ones
        // belong to a sequence inside an item).
        if dash && *item_indent.get_or_insert(indent) == indent {
            if seen == n {
                let content = trimmed.trim_start_matches('-').trim_start();
                return Some((i, line.len() - content.len()));
            }
            seen += 1;
        }
    }
    None
}

fn locate_validation_errors(
    resources: &[Resource],
    origins: &[Origin],
    errors: &ValidationErrors,
) -> Vec<ManifestProblem> {
    errors
        .errors()
        .iter()
        .map(|e| {
            // The object the error is about: match on "kind name" label.
            let found = resources.iter().zip(origins).find(|(r, _)| {
                e.object == format!("{} {}", r.kind().lower(), r.name())
                    || e.object == r.to_string()
            });
            let origin = found.map(|(_, o)| o);
            // Name the object as the manifest does (`BGPConfiguration
            // default`), as decode errors do.
            let (object, message) = match found {
                Some((r, _)) => (
                    Some(match r.namespace() {
                        Some(ns) => format!("{} {ns}/{}", r.kind(), r.name()),
                        None => format!("{} {}", r.kind(), r.name()),
                    }),
                    format!("{} {}", e.field, e.message),
                ),
                None => (None, e.to_string()),
            };
            let (line, column) = match origin {
                Some(o) => match o.text.as_deref().and_then(|t| locate_field(t, &e.field)) {
                    Some((l, c)) => (o.line_offset + l, Some(c)),
                    None => (o.first_line, None),
                },
                None => (1, None),
            };
            ManifestProblem {
                line,
                column,
                object,
                path: None,
                message,
            }
        })
        .collect()
}

/// The kinds a manifest reader accepts, for messages.
pub fn known_kinds() -> Vec<&'static str> {
    KindId::ALL.iter().map(|k| k.as_str()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_locations() {
        assert_eq!(
            scrub_locations("spec: unknown field `x` at line 3 column 5"),
            "spec: unknown field `x`"
        );
        assert_eq!(scrub_locations("look at this"), "look at this");
    }

    #[test]
    fn humanizes_unknown_fields() {
        let (p, m) =
            humanize("spec: unknown field `blockSzie`, expected one of `cidr`, `blockSize`");
        assert_eq!(p.as_deref(), Some("spec.blockSzie"));
        assert_eq!(m, "unknown field (did you mean blockSize?)");
        let (p, m) = humanize(
            "spec.ipipMode: unknown variant `Alwys`, expected one of `Always`, `CrossSubnet`, `Never`",
        );
        assert_eq!(p.as_deref(), Some("spec.ipipMode"));
        assert_eq!(m, "unknown value \"Alwys\" (did you mean Always?)");
    }

    #[test]
    fn locates_fields() {
        let doc = "apiVersion: v\nkind: IPPool\nmetadata:\n  name: a\nspec:\n  cidr: x\n  blockSize: 33\n";
        assert_eq!(locate_field(doc, "spec.blockSize"), Some((7, 3)));
        assert_eq!(locate_field(doc, "metadata.name"), Some((4, 3)));
        assert_eq!(locate_field(doc, "spec.nope"), None);
        let rules = "spec:\n  importV4:\n  - action: Accept\n    cidr: 10.0.0.0/8\n  - action: Reject\n    communities:\n      - 1:2\n    cidr: 10.1.0.0/16\n  exportV4:\n    - action: Reject\n      cidr: 10.2.0.0/16\n";
        assert_eq!(locate_field(rules, "spec.importV4[0].cidr"), Some((4, 5)));
        assert_eq!(locate_field(rules, "spec.importV4[1].cidr"), Some((8, 5)));
        assert_eq!(locate_field(rules, "spec.importV4[1]"), Some((5, 5)));
        assert_eq!(locate_field(rules, "spec.exportV4[0].cidr"), Some((11, 7)));
    }

    #[test]
    fn splits_documents() {
        let docs = split_yaml_documents("# c\n---\na: 1\n---\n\n---\nb: 2\n...\n");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].line_offset, 1);
        assert_eq!(docs[1].line_offset, 5);
    }
}
