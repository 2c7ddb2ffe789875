//! Server-side apply in the fake: field ownership per manager, conflicts
//! (another manager owns a field this apply sets to a different value, no
//! `force` → 409), removal of fields a manager stopped applying, and
//! `metadata.managedFields` in FieldsV1 form. Lists are atomic, as for
//! `x-kubernetes-list-type: atomic` fields.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

/// Fields never owned through apply.
const SKIP: [&str; 9] = [
    "/apiVersion",
    "/kind",
    "/metadata/name",
    "/metadata/namespace",
    "/metadata/resourceVersion",
    "/metadata/managedFields",
    "/metadata/uid",
    "/metadata/creationTimestamp",
    "/status",
];

fn esc(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}

fn unesc(k: &str) -> String {
    k.replace("~1", "/").replace("~0", "~")
}

/// JSON pointers of the leaves (scalars, lists, empty objects) of an applied object.
pub(crate) fn leaf_paths(v: &Value) -> BTreeSet<String> {
    fn walk(v: &Value, path: String, out: &mut BTreeSet<String>) {
        if SKIP.contains(&path.as_str()) {
            return;
        }
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, child) in m {
                    walk(child, format!("{path}/{}", esc(k)), out);
                }
            }
            _ if !path.is_empty() => {
                out.insert(path);
            }
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(v, String::new(), &mut out);
    out
}

fn set_path(obj: &mut Value, path: &str, val: Value) {
    let mut cur = obj;
    let parts: Vec<String> = path.split('/').skip(1).map(unesc).collect();
    for (i, p) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Some(m) = cur.as_object_mut() else { return };
        if i + 1 == parts.len() {
            m.insert(p.clone(), val);
            return;
        }
        cur = m
            .entry(p.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

fn remove_path(obj: &mut Value, path: &str) {
    let parts: Vec<String> = path.split('/').skip(1).map(unesc).collect();
    fn rec(v: &mut Value, parts: &[String]) {
        let Some(m) = v.as_object_mut() else { return };
        if parts.len() == 1 {
            m.remove(&parts[0]);
            return;
        }
        if let Some(child) = m.get_mut(&parts[0]) {
            rec(child, &parts[1..]);
            if child.as_object().is_some_and(|c| c.is_empty()) {
                m.remove(&parts[0]);
            }
        }
    }
    rec(obj, &parts);
}

/// A refused apply: the conflicting fields and their owners.
#[derive(Debug)]
pub(crate) struct Conflicts(pub Vec<(String, String)>);

impl Conflicts {
    pub fn message(&self, api_version: &str) -> String {
        let list: Vec<String> = self
            .0
            .iter()
            .map(|(mgr, p)| {
                let dotted: String = p
                    .split('/')
                    .skip(1)
                    .map(|s| format!(".{}", unesc(s)))
                    .collect();
                format!("conflict with \"{mgr}\" using {api_version}: {dotted}")
            })
            .collect();
        let plural = if self.0.len() == 1 { "" } else { "s" };
        format!(
            "Apply failed with {} conflict{plural}: {}",
            self.0.len(),
            list.join("\n")
        )
    }
}

/// Apply `applied` by `manager` onto `existing` (None = create). Returns the
/// new object (without managedFields) and the new ownership.
pub(crate) fn apply(
    existing: Option<(&Value, &BTreeMap<String, BTreeSet<String>>)>,
    applied: &Value,
    manager: &str,
    force: bool,
) -> Result<(Value, BTreeMap<String, BTreeSet<String>>), Conflicts> {
    let fields = leaf_paths(applied);
    let Some((old, old_owners)) = existing else {
        let owners = BTreeMap::from([(manager.to_string(), fields)]);
        return Ok((applied.clone(), owners));
    };
    let mut owners = old_owners.clone();
    let mut conflicts = Vec::new();
    for (other, owned) in old_owners.iter().filter(|(m, _)| m.as_str() != manager) {
        for p in fields.intersection(owned) {
            if old.pointer(p) != applied.pointer(p) {
                conflicts.push((other.clone(), p.clone()));
            }
        }
    }
    if !conflicts.is_empty() {
        if !force {
            return Err(Conflicts(conflicts));
        }
        for (other, p) in &conflicts {
            if let Some(set) = owners.get_mut(other) {
                set.remove(p);
            }
        }
    }
    let mut obj = old.clone();
    let previously = owners.remove(manager).unwrap_or_default();
    for gone in previously.difference(&fields) {
        if !owners.values().any(|s| s.contains(gone)) {
            remove_path(&mut obj, gone);
        }
    }
    for p in &fields {
        if let Some(v) = applied.pointer(p) {
            set_path(&mut obj, p, v.clone());
        }
    }
    owners.retain(|_, s| !s.is_empty());
    owners.insert(manager.to_string(), fields);
    Ok((obj, owners))
}

/// `metadata.managedFields` for the ownership map (FieldsV1 form).
pub(crate) fn managed_fields(
    owners: &BTreeMap<String, BTreeSet<String>>,
    api_version: &str,
    time: &str,
) -> Value {
    let entries: Vec<Value> = owners
        .iter()
        .map(|(mgr, paths)| {
            let mut tree = Value::Object(Map::new());
            for p in paths {
                let parts: Vec<String> = p
                    .split('/')
                    .skip(1)
                    .map(|s| format!("f:{}", unesc(s)))
                    .collect();
                let mut cur = &mut tree;
                for part in parts {
                    let Some(m) = cur.as_object_mut() else { break };
                    cur = m.entry(part).or_insert_with(|| Value::Object(Map::new()));
                }
            }
            json!({
                "manager": mgr,
                "operation": "Apply",
                "apiVersion": api_version,
                "time": time,
                "fieldsType": "FieldsV1",
                "fieldsV1": tree,
            })
        })
        .collect();
    Value::Array(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_tracks_owners_and_conflicts() {
        let a = json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q", "labels": {"godel.io/team": "t"}}, "spec": {"hard": {"pods": "10"}}});
        let (obj, owners) = apply(None, &a, "godel", false).unwrap();
        assert!(owners["godel"].contains("/metadata/labels/godel.io~1team"));
        // same manager, same content: same object
        let (again, _) = apply(Some((&obj, &owners)), &a, "godel", false).unwrap();
        assert_eq!(again, obj);
        // another manager changing an owned field conflicts
        let b = json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"}, "spec": {"hard": {"pods": "5"}}});
        let err = apply(Some((&obj, &owners)), &b, "kubectl", false).unwrap_err();
        assert_eq!(err.0[0].1, "/spec/hard/pods");
        assert!(err.message("v1").contains("conflict with \"godel\""));
        // same value is shared ownership, no conflict
        let c = json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"}, "spec": {"hard": {"pods": "10"}}});
        assert!(apply(Some((&obj, &owners)), &c, "kubectl", false).is_ok());
        // force takes the field over
        let (forced, o2) = apply(Some((&obj, &owners)), &b, "kubectl", true).unwrap();
        assert_eq!(forced["spec"]["hard"]["pods"], "5");
        assert!(!o2["godel"].contains("/spec/hard/pods"));
        // a manager dropping a field removes it
        let d = json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"}});
        let (dropped, _) = apply(Some((&obj, &owners)), &d, "godel", false).unwrap();
        assert!(dropped.pointer("/spec/hard/pods").is_none());
        let mf = managed_fields(&owners, "v1", "t");
        assert_eq!(mf[0]["fieldsV1"]["f:spec"]["f:hard"]["f:pods"], json!({}));
    }
}
