//! Validation errors and the checks shared by several kinds.
//!
//! Every message names the object (`ippool pool1`), the field
//! (`spec.blockSize`) and, where there is one, the fix.

use std::fmt;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::model::meta::AsNumber;
use crate::selector::Selector;

/// One problem with one field of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// `"<kind in lower case> <name>"`, e.g. `ippool pool1`.
    pub object: String,
    /// Dotted path of the field, e.g. `spec.blockSize`.
    pub field: String,
    /// What is wrong and how to fix it; reads after the field name.
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} {}", self.object, self.field, self.message)
    }
}

impl std::error::Error for ValidationError {}

/// Every problem found with an object (or a set of objects). Never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl ValidationErrors {
    /// The errors, one per problem.
    pub fn errors(&self) -> &[ValidationError] {
        &self.0
    }
}

/// The message for a field Manx accepts in Calico's schema but does not act
/// on yet: refused by name rather than stored and ignored.
pub const NOT_SUPPORTED: &str =
    "is not supported by Manx yet: Manx would not act on it, so it is refused; remove it";

/// `"<kind> <name>"` for messages, the name escaped (`escape_debug`) so
/// control characters never reach a terminal.
pub fn object_name(kind_lower: &str, name: &str) -> String {
    if name.is_empty() {
        format!("{kind_lower} <unnamed>")
    } else {
        format!("{kind_lower} {}", name.escape_debug())
    }
}

/// Kubernetes' total size limit for an object's annotations.
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// Kubernetes' qualified-name / label-value part: at most 63 characters,
/// `[A-Za-z0-9][-A-Za-z0-9_.]*` ending alphanumeric; empty allowed only for
/// values.
fn label_part_error(s: &str, empty_ok: bool) -> Option<&'static str> {
    if s.is_empty() {
        return (!empty_ok).then_some("is empty");
    }
    if s.len() > 63 {
        return Some("is longer than 63 characters");
    }
    let b = s.as_bytes();
    if !b
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
    {
        return Some("may only hold letters, digits, '-', '_' and '.'");
    }
    if !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return Some("must start and end with a letter or digit");
    }
    None
}

/// Label keys and values and annotation keys and size as Kubernetes
/// validates them; every message escapes what it quotes.
pub fn metadata_errors(
    object: &str,
    labels: &std::collections::BTreeMap<String, String>,
    annotations: &std::collections::BTreeMap<String, String>,
) -> Vec<ValidationError> {
    let mut out = Vec::new();
    let mut err = |field: String, message: String| {
        out.push(ValidationError {
            object: object.to_string(),
            field,
            message,
        })
    };
    let key_error = |key: &str| -> Option<String> {
        let (prefix, name) = match key.rsplit_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, key),
        };
        if let Some(p) = prefix
            && let Err(why) = dns1123_subdomain(p)
        {
            return Some(format!("prefix {:?} {why}", p));
        }
        label_part_error(name, false).map(|why| format!("name part {name:?} {why}"))
    };
    const KEY_RULE: &str = "(a key is an optional DNS-1123 subdomain prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)";
    for (k, v) in labels {
        if let Some(why) = key_error(k) {
            err(
                format!("metadata.labels[{k:?}]"),
                format!("key is not valid: {why} {KEY_RULE}"),
            );
        }
        if let Some(why) = label_part_error(v, true) {
            let shown: String = v.chars().take(64).collect();
            err(
                format!("metadata.labels[{k:?}]"),
                format!(
                    "value {shown:?}{} {why}: use at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit, or empty",
                    if shown.len() < v.len() { "..." } else { "" }
                ),
            );
        }
    }
    let mut total = 0usize;
    for (k, v) in annotations {
        total += k.len() + v.len();
        if let Some(why) = key_error(k) {
            err(
                format!("metadata.annotations[{k:?}]"),
                format!("key is not valid: {why} {KEY_RULE}"),
            );
        }
    }
    if total > MAX_ANNOTATIONS_BYTES {
        err(
            "metadata.annotations".to_string(),
            format!(
                "total {total} bytes is over Kubernetes' limit of {MAX_ANNOTATIONS_BYTES} bytes (256 KiB): move large data elsewhere"
            ),
        );
    }
    out
}

/// Collects problems for one object.
#[derive(Debug)]
pub(crate) struct Checker {
    object: String,
    errors: Vec<ValidationError>,
}

impl Checker {
    pub(crate) fn new(kind_lower: &str, name: &str) -> Self {
        Checker {
            object: object_name(kind_lower, name),
            errors: Vec::new(),
        }
    }

    pub(crate) fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(ValidationError {
            object: self.object.clone(),
            field: field.to_string(),
            message: message.into(),
        });
    }

    /// A field Manx does not act on yet, set to something that would need it.
    pub(crate) fn unsupported(&mut self, set: bool, field: &str) {
        if set {
            self.error(field, NOT_SUPPORTED);
        }
    }

    pub(crate) fn finish(self) -> Result<(), ValidationErrors> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(self.errors))
        }
    }

    /// Resource names: Kubernetes DNS-1123 subdomain (lower-case
    /// alphanumerics, `-` and `.`, start and end alphanumeric, <= 253), as
    /// libcalico-go validates names of cluster-scoped resources.
    pub(crate) fn name(&mut self, name: &str) {
        if let Err(why) = dns1123_subdomain(name) {
            self.error("metadata.name", why);
        }
    }

    /// Check a selector field parses.
    pub(crate) fn selector(&mut self, field: &str, text: &str) -> Option<Selector> {
        match Selector::parse(text) {
            Ok(s) => Some(s),
            Err(e) => {
                self.error(field, format!("is invalid: {e}"));
                None
            }
        }
    }

    pub(crate) fn as_number(&mut self, field: &str, asn: AsNumber) {
        if let Some(why) = asn.reserved_reason() {
            self.error(
                field,
                format!("{asn} cannot be used: {why}; pick a private AS like 64512"),
            );
        }
    }

    /// A CIDR must have no host bits set.
    pub(crate) fn network(&mut self, field: &str, net: &IpNetwork) {
        let base = IpNetwork::new(net.network(), net.prefix()).expect("same prefix is valid");
        if base.ip() != net.ip() {
            self.error(
                field,
                format!(
                    "{net} has host bits set; did you mean {}/{}?",
                    base.ip(),
                    base.prefix()
                ),
            );
        }
    }

    /// Parse a CIDR string (bare IPs are full-length prefixes) and check it.
    pub(crate) fn cidr_str(&mut self, field: &str, text: &str) -> Option<IpNetwork> {
        match parse_cidr_or_ip(text) {
            Ok(net) => {
                self.network(field, &net);
                Some(net)
            }
            Err(why) => {
                self.error(field, why);
                None
            }
        }
    }
}

/// Parse `"10.0.0.0/8"` or a bare IP (as a /32 or /128).
pub fn parse_cidr_or_ip(text: &str) -> Result<IpNetwork, String> {
    let t = text.trim();
    if t.contains('/') {
        t.parse::<IpNetwork>()
            .map_err(|e| format!("{text:?} is not a valid CIDR ({e}); write it like 10.0.0.0/16"))
    } else {
        t.parse::<IpAddr>()
            .map(IpNetwork::from)
            .map_err(|_| format!("{text:?} is not a valid IP address or CIDR"))
    }
}

/// DNS-1123 subdomain check, with the reason when it fails.
pub fn dns1123_subdomain(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty: every resource needs a name".to_string());
    }
    if name.len() > 253 {
        return Err(format!("{name:?} is longer than 253 characters"));
    }
    for label in name.split('.') {
        dns1123_label_chars(label).map_err(|why| format!("{name:?} {why}"))?;
    }
    Ok(())
}

/// DNS-1123 label check (<= 63, lower-case alphanumerics and `-`).
pub fn dns1123_label(name: &str) -> Result<(), String> {
    if name.len() > 63 {
        return Err(format!("{name:?} is longer than 63 characters"));
    }
    dns1123_label_chars(name).map_err(|why| format!("{name:?} {why}"))
}

fn dns1123_label_chars(label: &str) -> Result<(), String> {
    const FIX: &str =
        "use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit";
    if label.is_empty() {
        return Err(format!("has an empty part between dots; {FIX}"));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!("contains {c:?}; {FIX}"));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!("starts or ends with '-'; {FIX}"));
    }
    Ok(())
}

/// Levenshtein distance, for "did you mean" hints.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest candidate to `word`, if it is close enough to be a typo.
pub(crate) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Issue 18: labels and annotations as Kubernetes validates them.
    #[test]
    fn labels_and_annotations_follow_kubernetes_rules() {
        let none = labels(&[]);
        let good = labels(&[
            ("app", "web"),
            ("projectcalico.org/zone", "Zone_A.1"),
            ("empty", ""),
        ]);
        assert!(metadata_errors("ippool p", &good, &good).is_empty());
        // A NUL in a value or a key is refused, and escaped in the message.
        let e = metadata_errors("ippool p", &labels(&[("app", "a\0b")]), &none);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].to_string().contains("\\0"), "{}", e[0]);
        assert!(!e[0].to_string().contains('\0'));
        let e = metadata_errors("ippool p", &labels(&[("a\0", "x")]), &none);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(!e[0].to_string().contains('\0'));
        // A 1 MiB value is refused (and not printed whole).
        let big = "a".repeat(1 << 20);
        let e = metadata_errors("ippool p", &labels(&[("app", &big)]), &none);
        assert_eq!(e.len(), 1);
        assert!(e[0].message.contains("longer than 63"), "{}", e[0]);
        assert!(e[0].to_string().len() < 1000);
        // 63 characters pass, 64 do not; bad prefixes are refused.
        let v63 = "a".repeat(63);
        assert!(metadata_errors("o", &labels(&[("k", &v63)]), &none).is_empty());
        let v64 = "a".repeat(64);
        assert_eq!(
            metadata_errors("o", &labels(&[("k", &v64)]), &none).len(),
            1
        );
        assert_eq!(
            metadata_errors("o", &labels(&[("Bad_Prefix/k", "v")]), &none).len(),
            1
        );
        assert_eq!(
            metadata_errors("o", &labels(&[("-k", "v")]), &none).len(),
            1
        );
        // Annotations: any value, 256 KiB in all.
        let ok = labels(&[("note", "free text\nwith lines")]);
        assert!(metadata_errors("o", &none, &ok).is_empty());
        let e = metadata_errors("o", &none, &labels(&[("note", &big)]));
        assert!(e[0].message.contains("256 KiB"), "{e:?}");
        // Object names are escaped too.
        assert_eq!(object_name("ippool", "a\u{1b}[2J"), "ippool a\\u{1b}[2J");
    }

    #[test]
    fn names() {
        assert!(dns1123_subdomain("my.ippool-1").is_ok());
        assert!(dns1123_subdomain("default-ipv4-ippool").is_ok());
        assert!(dns1123_subdomain("Pool").unwrap_err().contains("'P'"));
        assert!(dns1123_subdomain("-a").is_err());
        assert!(dns1123_subdomain("a..b").is_err());
        assert!(dns1123_subdomain("").is_err());
        assert!(dns1123_label("a.b").is_err());
    }

    #[test]
    fn typo_hints() {
        assert_eq!(
            closest("blockSzie", &["cidr", "blockSize"]),
            Some("blockSize")
        );
        assert_eq!(closest("zzzzzz", &["cidr", "blockSize"]), None);
    }
}
