//! E2B's sandbox network settings, enforced or refused by name:
//! - create: `allow_internet_access`, the `network` object (`allowOut`,
//!   `denyOut`, `dnsServers`, `allowPublicTraffic`, `maskRequestHost`) and
//!   `autoPauseMemory`;
//! - `PUT /sandboxes/{id}/network`: replace the egress rules of a running
//!   sandbox (in one nftables transaction for worktree sandboxes).
//!
//! An E2B sandbox has internet by default (network mode `nat` with
//! `internet`); `allowOut` entries are accepted first, then `denyOut` ones
//! rejected (E2B's precedence), `allow_internet_access: false` is `denyOut:
//! ["0.0.0.0/0"]`. Entries are IPv4 addresses or CIDRs; a domain name, an
//! entry that does not parse, and a setting godel cannot honour
//! (`egressProxy`, `rules`, `httpsPorts`) are `400` naming the field.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use godel_core::{Error, NetworkConfig, NetworkMode, SpawnSpec, parse_net_rules};
use serde_json::{Map, Value};

use super::proxy::PRIVATE_TRAFFIC_LABEL;
use super::{State, api_error};

/// Label holding `maskRequestHost` (`${PORT}` replaced per request).
pub const MASK_HOST_LABEL: &str = "e2b.mask_request_host";

pub(super) fn routes() -> Router<Arc<State>> {
    Router::new().route("/sandboxes/{id}/network", put(update))
}

/// The egress lists E2B's settings come to.
#[derive(Debug, Default)]
struct Egress {
    allow: Vec<String>,
    deny: Vec<String>,
}

fn strings(obj: &Map<String, Value>, key: &str) -> Result<Vec<String>, Error> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| Error::invalid(format!("network.{key}[{i}]: expected a string")))
            })
            .collect(),
        Some(_) => Err(Error::invalid(format!(
            "network.{key}: expected a list of strings"
        ))),
    }
}

fn is_set(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    }
}

/// The egress part of a `network` object (create or update), checked.
fn egress(obj: &Map<String, Value>, extra: &[&str]) -> Result<Egress, Error> {
    for (k, why) in [
        (
            "egressProxy",
            "godel sends sandbox traffic out directly, through no SOCKS5 proxy",
        ),
        ("rules", "godel does not transform egress HTTP requests"),
    ] {
        if is_set(obj.get(k)) {
            return Err(Error::invalid(format!(
                "network.{k} is not supported by godel: {why}; leave it out"
            )));
        }
    }
    let known = [
        "allowOut",
        "denyOut",
        "dnsServers",
        "egressProxy",
        "rules",
        "allow_internet_access",
    ];
    if let Some(k) = obj
        .keys()
        .find(|k| !known.contains(&k.as_str()) && !extra.contains(&k.as_str()))
    {
        return Err(Error::invalid(format!(
            "network.{k} is not supported by godel; leave it out"
        )));
    }
    let allow = strings(obj, "allowOut")?;
    let deny = strings(obj, "denyOut")?;
    parse_net_rules("network.allowOut", &allow)?;
    parse_net_rules("network.denyOut", &deny)?;
    let dns = strings(obj, "dnsServers")?;
    let dns_rules = parse_net_rules("network.dnsServers", &dns)?;
    if let Some((i, _)) = dns_rules
        .iter()
        .enumerate()
        .find(|(_, r)| r.prefix != 32 || r.port.is_some())
    {
        return Err(Error::invalid(format!(
            "network.dnsServers[{i}] {:?}: expected an IPv4 address",
            dns[i]
        )));
    }
    // E2B opens the DNS servers only for domain entries, which godel refuses;
    // traffic to a named server is allowed, as E2B documents.
    let mut allow = allow;
    allow.extend(dns);
    Ok(Egress { allow, deny })
}

fn network_of(eg: Egress, internet_access: Option<bool>) -> NetworkConfig {
    let mut deny = eg.deny;
    if internet_access == Some(false) {
        deny.push("0.0.0.0/0".into());
    }
    NetworkConfig {
        mode: NetworkMode::Nat,
        allow: eg.allow,
        deny,
        internet: true,
        dns: Vec::new(),
    }
}

fn bool_field(v: &Value, key: &str) -> Result<Option<bool>, Error> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(Error::invalid(format!("{key}: expected true or false"))),
    }
}

/// Apply a create body's network settings to the spec (or refuse them).
pub(super) fn apply_create(body: &[u8], spec: &mut SpawnSpec) -> Result<(), Response> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    apply_create_value(&v, spec).map_err(|e| api_error(&e))
}

fn apply_create_value(v: &Value, spec: &mut SpawnSpec) -> Result<(), Error> {
    if is_set(v.get("autoPauseMemory")) {
        return Err(Error::invalid(
            "autoPauseMemory is not supported by godel: what a pause keeps is the runtime's (worktree sandboxes keep their files, microVMs their memory too); create without it",
        ));
    }
    let internet = bool_field(v, "allow_internet_access")?;
    let obj = match v.get("network") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(_) => return Err(Error::invalid("network: expected an object")),
    };
    if is_set(obj.get("httpsPorts")) {
        return Err(Error::invalid(
            "network.httpsPorts is not supported by godel: port URLs reach sandbox ports over plain HTTP; leave it out",
        ));
    }
    let eg = egress(
        &obj,
        &["allowPublicTraffic", "maskRequestHost", "httpsPorts"],
    )?;
    match obj.get("allowPublicTraffic") {
        None | Some(Value::Null) | Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => {
            spec.labels
                .insert(PRIVATE_TRAFFIC_LABEL.into(), "false".into());
        }
        Some(_) => {
            return Err(Error::invalid(
                "network.allowPublicTraffic: expected true or false",
            ));
        }
    }
    match obj.get("maskRequestHost") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.is_empty() => {}
        Some(Value::String(s)) => {
            if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(Error::invalid(format!(
                    "network.maskRequestHost {s:?}: expected a host name (with ${{PORT}} where the port goes)"
                )));
            }
            spec.labels.insert(MASK_HOST_LABEL.into(), s.clone());
        }
        Some(_) => return Err(Error::invalid("network.maskRequestHost: expected a string")),
    }
    spec.network = network_of(eg, internet);
    Ok(())
}

/// `PUT /sandboxes/{id}/network`: the whole egress configuration is
/// replaced (omitted lists are cleared), as E2B does. 204 on success.
async fn update(
    AxState(state): AxState<Arc<State>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let caller = match super::rest::caller(&state, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let v: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return api_error(&Error::invalid(format!("invalid request body: {e}"))),
        }
    };
    let Some(obj) = v.as_object() else {
        return api_error(&Error::invalid("the body must be a JSON object"));
    };
    let parsed = egress(obj, &[]).and_then(|eg| {
        let internet = bool_field(&v, "allow_internet_access")?;
        Ok(network_of(eg, internet))
    });
    let network = match parsed {
        Ok(n) => n,
        Err(e) => return api_error(&e),
    };
    if let Err(e) = state.record(&caller, &id) {
        return api_error(&e);
    }
    match state.control.update_network(&caller, &id, network).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => api_error(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(body: &str) -> Result<SpawnSpec, Error> {
        let mut spec = SpawnSpec::default();
        apply_create_value(&serde_json::from_str(body).unwrap(), &mut spec).map(|_| spec)
    }

    #[test]
    fn default_is_internet_and_rules_map_in_order() {
        let s = apply("{}").unwrap();
        assert_eq!(s.network.mode, NetworkMode::Nat);
        assert!(s.network.internet && s.network.allow.is_empty() && s.network.deny.is_empty());
        let s = apply(
            r#"{"network":{"allowOut":["10.1.0.2"],"denyOut":["0.0.0.0/0"],"allowPublicTraffic":false,"maskRequestHost":"${PORT}-app.example"}}"#,
        )
        .unwrap();
        assert_eq!(s.network.allow, vec!["10.1.0.2"]);
        assert_eq!(s.network.deny, vec!["0.0.0.0/0"]);
        assert_eq!(s.labels[PRIVATE_TRAFFIC_LABEL], "false");
        assert_eq!(s.labels[MASK_HOST_LABEL], "${PORT}-app.example");
        let s = apply(r#"{"allow_internet_access":false}"#).unwrap();
        assert_eq!(s.network.deny, vec!["0.0.0.0/0"]);
        s.validate().unwrap();
    }

    #[test]
    fn bad_and_unsupported_settings_are_refused_by_name() {
        for (body, field) in [
            (
                r#"{"network":{"allowOut":["example.com"]}}"#,
                "network.allowOut[0]",
            ),
            (
                r#"{"network":{"denyOut":["1.2.3.4","10.0.0.0/40"]}}"#,
                "network.denyOut[1]",
            ),
            (r#"{"network":{"denyOut":"1.2.3.4"}}"#, "network.denyOut"),
            (
                r#"{"network":{"egressProxy":{"address":"p:1080"}}}"#,
                "network.egressProxy",
            ),
            (r#"{"network":{"httpsPorts":[3000]}}"#, "network.httpsPorts"),
            (r#"{"network":{"bogus":1}}"#, "network.bogus"),
            (
                r#"{"network":{"dnsServers":["10.0.0.0/8"]}}"#,
                "network.dnsServers[0]",
            ),
            (r#"{"allow_internet_access":"no"}"#, "allow_internet_access"),
            (r#"{"autoPauseMemory":true}"#, "autoPauseMemory"),
        ] {
            let e = apply(body).unwrap_err();
            assert_eq!(e.code, godel_core::ErrorCode::InvalidArgument, "{body}");
            assert!(e.message.contains(field), "{body}: {}", e.message);
        }
    }
}
