//! `create | apply | replace | delete | get | patch | label` over any kind.
//!
//! A manifest is parsed and validated whole before anything is written, and
//! written whole ([`Client::write_all`]): a mistake anywhere in the file,
//! or an object that exists (create) or changed (replace), writes nothing,
//! and every refused object is reported on its own line, with exit code 1.
//! Unlike calicoctl, which writes the others and reports a partial success,
//! Manx never leaves a file half-applied.

use std::io::Read;

use anyhow::{Context, Result, anyhow, bail};
use datastore::client::{BulkError, BulkVerb, Client, ClientError};
use datastore::model::{self, KindId, Resource};

use crate::cli::Output;

/// Read a manifest from a path or `-` (stdin).
pub fn read_manifest(file: &str) -> Result<(String, String)> {
    if file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the manifest from stdin")?;
        Ok((s, "<stdin>".into()))
    } else {
        let s = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
        Ok((s, file.to_string()))
    }
}

/// Parse and validate a whole manifest; any problem fails the whole file.
pub fn load_manifest(file: &str) -> Result<Vec<Resource>> {
    let (text, source) = read_manifest(file)?;
    let items = model::parse_manifests(&text, &source).map_err(|e| anyhow!("{e}"))?;
    if items.is_empty() {
        bail!("{source}: no resources found");
    }
    model::validate_all(&items).map_err(|e| anyhow!("{source}: {e}"))?;
    Ok(items)
}

/// The verb applied to each object of a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Create { skip_exists: bool },
    Apply,
    Replace,
    Delete { skip_not_exists: bool },
}

impl Verb {
    fn past(self) -> &'static str {
        match self {
            Verb::Create { .. } => "created",
            Verb::Apply => "applied",
            Verb::Replace => "replaced",
            Verb::Delete { .. } => "deleted",
        }
    }
}

impl Verb {
    fn bulk(self) -> BulkVerb {
        match self {
            Verb::Create { skip_exists } => BulkVerb::Create { skip_exists },
            Verb::Apply => BulkVerb::Apply,
            Verb::Replace => BulkVerb::Replace,
            Verb::Delete { skip_not_exists } => BulkVerb::Delete { skip_not_exists },
        }
    }
}

/// Apply `verb` to every object of `file`, all or nothing. Returns the
/// number of objects that failed (0: all written).
pub async fn from_file(client: &Client, verb: Verb, file: &str) -> Result<usize> {
    let items = load_manifest(file)?;
    let total = items.len();
    match client.write_all(verb.bulk(), &items).await {
        Ok(_) => {
            println!("Successfully {} {total} resource(s)", verb.past());
            Ok(0)
        }
        Err(BulkError::Refused(errors)) => {
            for e in &errors {
                eprintln!("Failed to {}: {e:#}", verb_word(verb));
            }
            eprintln!(
                "Nothing {}: {} of {total} resource(s) refused, so none was written",
                verb.past(),
                errors.len()
            );
            Ok(errors.len())
        }
        Err(BulkError::Failed(e)) => {
            eprintln!("Failed to {}: {e:#}", verb_word(verb));
            eprintln!("Nothing {}: the store is unchanged", verb.past());
            Ok(total)
        }
        Err(e @ BulkError::Partial { .. }) => {
            eprintln!("Failed to {}: {e:#}", verb_word(verb));
            Ok(total)
        }
    }
}

fn verb_word(verb: Verb) -> &'static str {
    match verb {
        Verb::Create { .. } => "create",
        Verb::Apply => "apply",
        Verb::Replace => "replace",
        Verb::Delete { .. } => "delete",
    }
}

/// Resolve a kind name as calicoctl accepts it.
pub fn kind_arg(name: &str) -> Result<KindId> {
    model::kind_from_name(name).ok_or_else(|| {
        anyhow!(
            "unknown resource kind {name:?}: use one of ippool, bgppeer, bgpconfig, node, \
             ipamconfig, ipreservation, workloadendpoint, felixconfig, bgpfilter (or their \
             plurals/short names)"
        )
    })
}

/// Fetch objects of `kind`: the named ones, or all.
pub async fn fetch(
    client: &Client,
    kind: KindId,
    names: &[String],
    namespace: Option<&str>,
) -> Result<Vec<Resource>> {
    if names.is_empty() {
        return Ok(client.list_resources(kind, namespace).await?.0);
    }
    let mut out = Vec::new();
    for name in names {
        match client.get_resource(kind, namespace, name).await? {
            Some(obj) => out.push(obj),
            None => bail!("{} {name} not found", kind.lower()),
        }
    }
    Ok(out)
}

/// `manxctl get`.
pub fn render_get(items: &[Resource], output: Output, single: bool) -> String {
    match output {
        Output::Table => crate::table::resources_table(items, false).render(),
        Output::Wide => crate::table::resources_table(items, true).render(),
        Output::Yaml if single && items.len() == 1 => model::to_yaml(&items[0]),
        Output::Json if single && items.len() == 1 => model::to_json(&items[0]),
        Output::Yaml => model::list_to_yaml(items),
        Output::Json => model::list_to_json(items),
    }
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    if let serde_json::Value::Object(p) = patch {
        if !target.is_object() {
            *target = serde_json::Value::Object(Default::default());
        }
        let t = target.as_object_mut().expect("object");
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
            }
        }
    } else {
        *target = patch.clone();
    }
}

/// `manxctl patch`: read, merge, validate, CAS-write (retrying on conflict).
pub async fn patch(
    client: &Client,
    kind: KindId,
    name: &str,
    namespace: Option<&str>,
    patch: &str,
) -> Result<()> {
    let patch: serde_json::Value = serde_json::from_str(patch)
        .with_context(|| format!("--patch {patch:?} is not JSON: give a JSON merge patch"))?;
    modify(client, kind, name, namespace, |v| {
        merge_patch(v, &patch);
        Ok(())
    })
    .await
}

/// Read-modify-write one object through its JSON form, with CAS retries.
pub async fn modify(
    client: &Client,
    kind: KindId,
    name: &str,
    namespace: Option<&str>,
    f: impl Fn(&mut serde_json::Value) -> Result<()>,
) -> Result<()> {
    for _ in 0..5 {
        let Some(obj) = client.get_resource(kind, namespace, name).await? else {
            bail!("{} {name} not found", kind.lower());
        };
        let mut v: serde_json::Value = serde_json::from_str(&model::to_json(&obj))?;
        f(&mut v)?;
        let text = serde_json::to_string(&v)?;
        let new = model::parse_manifests(&text, &format!("{} {name} (patched)", kind.lower()))
            .map_err(|e| anyhow!("{e}"))?
            .pop()
            .ok_or_else(|| anyhow!("{} {name}: the patch removed the object", kind.lower()))?;
        match client.update_resource(&new).await {
            Ok(_) => return Ok(()),
            Err(ClientError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    bail!(
        "{} {name}: changed by someone else five times in a row; try again",
        kind.lower()
    )
}

/// `manxctl label`.
pub async fn label(
    client: &Client,
    kind: KindId,
    name: &str,
    label: &str,
    remove: bool,
    overwrite: bool,
) -> Result<()> {
    let (key, value) = match label.split_once('=') {
        Some((k, v)) => (k.to_string(), Some(v.to_string())),
        None if remove => (label.to_string(), None),
        None => bail!("label {label:?}: write key=value (or key with --remove)"),
    };
    modify(client, kind, name, None, |v| {
        let labels = &mut v["metadata"]["labels"];
        if labels.is_null() {
            *labels = serde_json::json!({});
        }
        let map = labels
            .as_object_mut()
            .ok_or_else(|| anyhow!("metadata.labels is not a map"))?;
        match &value {
            None => {
                map.remove(&key);
            }
            Some(val) => {
                if let Some(old) = map.get(&key)
                    && old.as_str() != Some(val)
                    && !overwrite
                {
                    bail!(
                        "{} {name} already has label {key}={old}: pass --overwrite to change it",
                        kind.lower()
                    );
                }
                map.insert(key.clone(), serde_json::Value::String(val.clone()));
            }
        }
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut t = serde_json::json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &serde_json::json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, serde_json::json!({"a": "z", "c": {"d": "e"}}));
    }
}
