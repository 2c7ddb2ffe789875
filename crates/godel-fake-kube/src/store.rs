//! The fake API server's object store: every object as JSON, one global
//! `resourceVersion` counter, an event history for watch resumption and a
//! registry of live watches, indexed by object name where the watch
//! selects one (`metadata.name=`), so a change reaches only its watchers. Also the resource kinds it
//! serves and label/field selector matching.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::mpsc;

/// A resource kind the fake serves.
#[derive(Debug)]
pub(crate) struct Kind {
    /// `api/v1` or `apis/<group>/<version>`.
    pub prefix: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub api_version: &'static str,
    pub namespaced: bool,
}

pub(crate) const KINDS: &[Kind] = &[
    Kind {
        prefix: "api/v1",
        plural: "namespaces",
        kind: "Namespace",
        api_version: "v1",
        namespaced: false,
    },
    Kind {
        prefix: "api/v1",
        plural: "pods",
        kind: "Pod",
        api_version: "v1",
        namespaced: true,
    },
    Kind {
        prefix: "api/v1",
        plural: "resourcequotas",
        kind: "ResourceQuota",
        api_version: "v1",
        namespaced: true,
    },
    Kind {
        prefix: "api/v1",
        plural: "limitranges",
        kind: "LimitRange",
        api_version: "v1",
        namespaced: true,
    },
    Kind {
        prefix: "api/v1",
        plural: "serviceaccounts",
        kind: "ServiceAccount",
        api_version: "v1",
        namespaced: true,
    },
    Kind {
        prefix: "apis/networking.k8s.io/v1",
        plural: "networkpolicies",
        kind: "NetworkPolicy",
        api_version: "networking.k8s.io/v1",
        namespaced: true,
    },
    Kind {
        prefix: "apis/rbac.authorization.k8s.io/v1",
        plural: "roles",
        kind: "Role",
        api_version: "rbac.authorization.k8s.io/v1",
        namespaced: true,
    },
    Kind {
        prefix: "apis/rbac.authorization.k8s.io/v1",
        plural: "rolebindings",
        kind: "RoleBinding",
        api_version: "rbac.authorization.k8s.io/v1",
        namespaced: true,
    },
    Kind {
        prefix: "apis/node.k8s.io/v1",
        plural: "runtimeclasses",
        kind: "RuntimeClass",
        api_version: "node.k8s.io/v1",
        namespaced: false,
    },
];

pub(crate) fn find_kind(prefix: &str, plural: &str) -> Option<&'static Kind> {
    KINDS
        .iter()
        .find(|k| k.prefix == prefix && k.plural == plural)
}

/// One stored object and who owns which of its fields (server-side apply).
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub obj: Value,
    /// manager → JSON pointers of the leaf fields it applied.
    pub owners: BTreeMap<String, BTreeSet<String>>,
}

/// One change, as sent to watches.
#[derive(Debug)]
pub(crate) struct Change {
    pub rv: u64,
    pub plural: &'static str,
    pub namespace: String,
    pub etype: &'static str,
    pub obj: Value,
}

type Key = (&'static str, String, String);

/// Quota resources whose usage is tracked.
const TRACKED: [&str; 8] = [
    "requests.cpu",
    "limits.cpu",
    "requests.memory",
    "limits.memory",
    "cpu",
    "memory",
    "pods",
    "count/pods",
];

/// The sending side of one live watch.
pub(crate) type WatchTx = mpsc::UnboundedSender<Arc<Change>>;

/// How many past changes are kept for watches resuming from a resourceVersion.
const HISTORY: usize = 200_000;

pub(crate) struct Store {
    objects: BTreeMap<Key, Entry>,
    rv: u64,
    history: VecDeque<Arc<Change>>,
    /// Watches of one object: (plural, namespace, name) → senders.
    by_name: HashMap<(&'static str, String, String), Vec<WatchTx>>,
    /// Quota usage of live (non-terminal) pods: namespace → resource → amount.
    usage: HashMap<String, HashMap<&'static str, u64>>,
    /// Other watches: (plural, namespace or all) → senders.
    general: Vec<(&'static str, Option<String>, WatchTx)>,
}

impl Store {
    pub fn new() -> Self {
        Store {
            objects: BTreeMap::new(),
            rv: 1000,
            history: VecDeque::new(),
            by_name: HashMap::new(),
            usage: HashMap::new(),
            general: Vec::new(),
        }
    }

    pub fn rv(&self) -> u64 {
        self.rv
    }

    pub fn get(&self, plural: &'static str, ns: &str, name: &str) -> Option<&Entry> {
        self.objects
            .get(&(plural, ns.to_string(), name.to_string()))
    }

    /// Objects of a kind, in one namespace or all, ordered by namespace and name.
    pub fn list(&self, plural: &'static str, ns: Option<&str>) -> Vec<&Value> {
        self.objects
            .range((plural, String::new(), String::new())..)
            .take_while(|((p, _, _), _)| *p == plural)
            .filter(|((_, n, _), _)| ns.is_none_or(|want| want == n))
            .map(|(_, e)| &e.obj)
            .collect()
    }

    /// Store `obj` (added or modified), stamping a new resourceVersion. Returns the stored object.
    pub fn put(
        &mut self,
        plural: &'static str,
        ns: &str,
        name: &str,
        mut obj: Value,
        owners: BTreeMap<String, BTreeSet<String>>,
    ) -> Value {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let key = (plural, ns.to_string(), name.to_string());
        let etype = if self.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        if plural == "pods" {
            if let Some(prev) = self.objects.get(&key).map(|e| e.obj.clone()) {
                self.account(ns, &prev, false);
            }
            self.account(ns, &obj, true);
        }
        self.objects.insert(
            key,
            Entry {
                obj: obj.clone(),
                owners,
            },
        );
        self.emit(plural, ns, etype, obj.clone());
        obj
    }

    /// Remove an object; watches see DELETED with a new resourceVersion.
    pub fn remove(&mut self, plural: &'static str, ns: &str, name: &str) -> Option<Value> {
        let mut entry = self
            .objects
            .remove(&(plural, ns.to_string(), name.to_string()))?;
        if plural == "pods" {
            let obj = entry.obj.clone();
            self.account(ns, &obj, false);
        }
        self.rv += 1;
        entry.obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.emit(plural, ns, "DELETED", entry.obj.clone());
        Some(entry.obj)
    }

    fn emit(&mut self, plural: &'static str, ns: &str, etype: &'static str, obj: Value) {
        let change = Arc::new(Change {
            rv: self.rv,
            plural,
            namespace: ns.to_string(),
            etype,
            obj,
        });
        if self.history.len() >= HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(change.clone());
        let name = change.obj["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let key = (plural, ns.to_string(), name);
        if let Some(txs) = self.by_name.get_mut(&key) {
            txs.retain(|tx| tx.send(change.clone()).is_ok());
            if txs.is_empty() {
                self.by_name.remove(&key);
            }
        }
        self.general.retain(|(p, n, tx)| {
            if *p != plural || n.as_deref().is_some_and(|n| n != ns) {
                return !tx.is_closed();
            }
            tx.send(change.clone()).is_ok()
        });
    }

    /// Register a live watch of a kind (in one namespace or all; of one object when `name` is set).
    pub fn subscribe(
        &mut self,
        plural: &'static str,
        ns: Option<&str>,
        name: Option<&str>,
    ) -> mpsc::UnboundedReceiver<Arc<Change>> {
        let (tx, rx) = mpsc::unbounded_channel();
        match (ns, name) {
            (Some(ns), Some(name)) => self
                .by_name
                .entry((plural, ns.to_string(), name.to_string()))
                .or_default()
                .push(tx),
            _ => self.general.push((plural, ns.map(str::to_string), tx)),
        }
        rx
    }

    /// Add (or take away) a live pod's resources to its namespace's usage.
    fn account(&mut self, ns: &str, pod: &Value, add: bool) {
        if super::pods::terminal(pod) {
            return;
        }
        let usage = self.usage.entry(ns.to_string()).or_default();
        for res in TRACKED {
            let n = super::pods::pod_usage(pod, res);
            let slot = usage.entry(res).or_insert(0);
            *slot = if add {
                *slot + n
            } else {
                slot.saturating_sub(n)
            };
        }
    }

    /// Quota usage of a resource (`requests.cpu`, `pods`, ...) in a namespace.
    pub fn usage(&self, ns: &str, resource: &str) -> u64 {
        self.usage
            .get(ns)
            .and_then(|u| u.get(resource))
            .copied()
            .unwrap_or(0)
    }

    /// Changes after `rv`, or `None` when `rv` is older than the history kept (410 Gone).
    pub fn since(&self, rv: u64) -> Option<Vec<Arc<Change>>> {
        if let Some(first) = self.history.front()
            && first.rv > rv + 1
            && rv < self.rv
        {
            return None;
        }
        let start = self.history.partition_point(|c| c.rv <= rv);
        Some(self.history.range(start..).cloned().collect())
    }
}

/// One requirement of a label selector.
#[derive(Debug, Clone)]
enum Req {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label or field selector (comma-separated requirements, all must hold).
#[derive(Debug, Clone, Default)]
pub(crate) struct Selector(Vec<Req>);

impl Selector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        let mut rest = s.trim();
        while !rest.is_empty() {
            // split at the next comma outside parentheses
            let mut depth = 0;
            let mut end = rest.len();
            for (i, c) in rest.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    ',' if depth == 0 => {
                        end = i;
                        break;
                    }
                    _ => {}
                }
            }
            let part = rest[..end].trim();
            rest = rest.get(end + 1..).unwrap_or("").trim();
            if part.is_empty() {
                continue;
            }
            reqs.push(parse_req(part)?);
        }
        Ok(Selector(reqs))
    }

    /// The value `key` must equal, if the selector pins it.
    pub fn exact(&self, key: &str) -> Option<&str> {
        self.0.iter().find_map(|r| match r {
            Req::Eq(k, v) if k == key => Some(v.as_str()),
            _ => None,
        })
    }

    /// Whether a label/field map satisfies every requirement.
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => get(k).as_deref() == Some(v.as_str()),
            Req::Ne(k, v) => get(k).as_deref() != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.contains(&x)),
            Req::NotIn(k, vs) => get(k).is_none_or(|x| !vs.contains(&x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        })
    }
}

fn parse_req(part: &str) -> Result<Req, String> {
    let set = |v: &str| -> Vec<String> {
        v.trim()
            .trim_start_matches('(')
            .trim_end_matches(')')
            .split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect()
    };
    if let Some((k, v)) = part.split_once("!=") {
        return Ok(Req::Ne(k.trim().into(), v.trim().into()));
    }
    if let Some((k, v)) = part.split_once("==") {
        return Ok(Req::Eq(k.trim().into(), v.trim().into()));
    }
    if let Some((k, v)) = part.split_once('=') {
        return Ok(Req::Eq(k.trim().into(), v.trim().into()));
    }
    if let Some((k, v)) = part.split_once(" notin ") {
        return Ok(Req::NotIn(k.trim().into(), set(v)));
    }
    if let Some((k, v)) = part.split_once(" in ") {
        return Ok(Req::In(k.trim().into(), set(v)));
    }
    if let Some(k) = part.strip_prefix('!') {
        return Ok(Req::NotExists(k.trim().into()));
    }
    if part
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    {
        return Ok(Req::Exists(part.into()));
    }
    Err(format!("unable to parse requirement: {part:?}"))
}

/// The value of a label of an object.
pub(crate) fn label(obj: &Value, key: &str) -> Option<String> {
    obj["metadata"]["labels"][key].as_str().map(str::to_string)
}

/// The value of a selectable field of an object.
pub(crate) fn field(obj: &Value, key: &str) -> Option<String> {
    let v = match key {
        "metadata.name" => &obj["metadata"]["name"],
        "metadata.namespace" => &obj["metadata"]["namespace"],
        "status.phase" => &obj["status"]["phase"],
        "spec.nodeName" => &obj["spec"]["nodeName"],
        _ => return None,
    };
    Some(v.as_str().unwrap_or("").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        let obj = json!({"metadata": {"name": "p", "labels": {"app": "godel-agent", "godel.io/team": "a"}}});
        let m = |s: &str| Selector::parse(s).unwrap().matches(|k| label(&obj, k));
        assert!(m("app=godel-agent"));
        assert!(m("app==godel-agent,godel.io/team"));
        assert!(!m("app!=godel-agent"));
        assert!(m("godel.io/team in (a,b)"));
        assert!(!m("godel.io/team notin (a)"));
        assert!(m("!missing"));
        assert!(!m("missing"));
        let f = Selector::parse("metadata.name=p").unwrap();
        assert!(f.matches(|k| field(&obj, k)));
    }

    #[test]
    fn history_and_gone() {
        let mut s = Store::new();
        let start = s.rv();
        s.put(
            "pods",
            "n",
            "a",
            json!({"metadata": {"name": "a"}}),
            BTreeMap::new(),
        );
        s.put(
            "pods",
            "n",
            "a",
            json!({"metadata": {"name": "a"}}),
            BTreeMap::new(),
        );
        let ch = s.since(start).unwrap();
        assert_eq!(ch.len(), 2);
        assert_eq!(ch[0].etype, "ADDED");
        assert_eq!(ch[1].etype, "MODIFIED");
        assert_eq!(s.since(start + 1).unwrap().len(), 1);
        assert!(s.remove("pods", "n", "a").is_some());
        assert_eq!(s.list("pods", None).len(), 0);
    }
}
