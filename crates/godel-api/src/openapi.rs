//! The OpenAPI 3.1 document, generated from the route table in
//! [`crate::routes::ROUTES`] (the same table the router is checked against),
//! and checked in as `docs/openapi.json`; a test fails when it is stale.

use serde_json::{Map, Value, json};

use crate::routes::ROUTES;

fn schema_ref(name: &str) -> Value {
    if let Some(inner) = name.strip_suffix("[]") {
        json!({"type": "array", "items": schema_ref(inner)})
    } else {
        json!({"$ref": format!("#/components/schemas/{name}")})
    }
}

fn body(kind: &str) -> Option<Value> {
    match kind {
        "" => None,
        "bytes" => Some(
            json!({"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}),
        ),
        "text" => Some(json!({"text/plain": {"schema": {"type": "string"}}})),
        "json" => Some(json!({"application/json": {"schema": {"type": "object"}}})),
        s if s.starts_with("sse:") => Some(json!({"text/event-stream": {
            "schema": {"type": "string", "description": format!("Server-sent events; each data line is a JSON {}", &s[4..])}
        }})),
        s => Some(json!({"application/json": {"schema": schema_ref(s)}})),
    }
}

/// Names of every schema the routes mention.
fn schema_names() -> Vec<String> {
    let mut names: Vec<String> = ROUTES
        .iter()
        .flat_map(|r| [r.request, r.response])
        .filter(|s| !s.is_empty() && !matches!(*s, "bytes" | "text" | "json"))
        .map(|s| {
            s.trim_start_matches("sse:")
                .trim_end_matches("[]")
                .to_string()
        })
        .collect();
    names.push("Error".into());
    names.sort();
    names.dedup();
    names
}

fn schema_of(name: &str) -> Value {
    match name {
        "Error" => json!({
            "type": "object",
            "required": ["code", "message", "retryable"],
            "properties": {
                "code": {"type": "string", "enum": godel_core::ErrorCode::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>()},
                "message": {"type": "string"},
                "retryable": {"type": "boolean"},
                "runtime_id": {"type": "string"}
            }
        }),
        "ForkRequest" => {
            json!({"type": "object", "required": ["count"], "additionalProperties": false,
            "properties": {"count": {"type": "integer", "minimum": 1}}})
        }
        "TtlRequest" => {
            json!({"type": "object", "required": ["ttl_secs"], "additionalProperties": false,
            "properties": {"ttl_secs": {"type": ["integer", "null"], "minimum": 0}}})
        }
        "TokenRequest" => json!({"type": "object", "additionalProperties": false,
            "properties": {"team": {"type": "string"}, "admin": {"type": "boolean"},
                "format": {"type": "string", "enum": ["e2b", "gdl"],
                    "description": "e2b: e2b_ + 40 hex (default for team tokens; every E2B SDK accepts it); gdl: gdl_ + 48 hex (default for admin tokens)"}}}),
        other => {
            json!({"type": "object", "description": format!("godel `{other}` (see crates/godel-core and godel-control for fields); request bodies reject unknown fields")})
        }
    }
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        let mut op = json!({
            "summary": r.summary,
            "operationId": format!("{}_{}", r.method, r.path.trim_start_matches('/').replace(['/', '{', '}', '.'], "_")),
            "responses": {
                r.status.to_string(): match body(r.response) {
                    Some(content) => json!({"description": "success", "content": content}),
                    None => json!({"description": "success"}),
                },
                "default": {"description": "error", "content": {"application/json": {"schema": schema_ref("Error")}}}
            }
        });
        let params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        if let Some(content) = body(r.request) {
            op["requestBody"] = json!({"required": true, "content": content});
        }
        entry[r.method] = op;
    }
    let schemas: Map<String, Value> = schema_names()
        .into_iter()
        .map(|n| (n.clone(), schema_of(&n)))
        .collect();
    json!({
        "openapi": "3.1.0",
        "info": {"title": "godel API", "version": "v1",
                 "description": "Native REST API of godel. Served on $GODEL_HOME/godel.sock (owner = admin) and optionally on TCP with bearer tokens."},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
        },
        "security": [{"bearer": []}],
        "paths": paths
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn checked_in_document_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let want = serde_json::to_string_pretty(&super::document()).unwrap() + "\n";
        if std::env::var("GODEL_UPDATE_OPENAPI").is_ok() {
            std::fs::write(path, &want).unwrap();
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            have == want,
            "docs/openapi.json is stale: run GODEL_UPDATE_OPENAPI=1 cargo test -p godel-api openapi"
        );
    }
}
