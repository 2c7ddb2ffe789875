//! envd's plain-HTTP file routes: `GET /files?path=` (download, gzip when the
//! client accepts it) and `POST /files` (multipart parts named `file` whose
//! filename is the target path, or a raw `application/octet-stream` body with
//! `?path=`, optionally `Content-Encoding: gzip`). Access needs the sandbox's
//! `X-Access-Token` or a valid `v1_` signature (signed URLs). Errors are
//! `{"code":<status>,"message":…}`, as envd answers. Per-file metadata
//! (`X-Metadata-*` headers, extended attributes in envd) is refused with 400.

use std::io::{Read, Write};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures::StreamExt;
use godel_core::{Error, workspace_relative};
use sha2::{Digest, Sha256};

use super::envd::{sandbox, target, token_ok};
use super::filesystem::sandbox_path;
use super::registry::{Entry, constant_time_eq};
use super::{State, api_error, api_error_status};
use godel_e2b::wire::WrittenEntry;

/// Upload headers carrying per-file metadata (`X-Metadata-<key>`), lowercase
/// as `HeaderMap` keys are.
const METADATA_HEADER_PREFIX: &str = "x-metadata-";

/// Largest file accepted or returned through `/files` (1 GiB).
const MAX_FILE: usize = 1 << 30;

#[derive(Default)]
struct FileQuery {
    path: Option<String>,
    username: Option<String>,
    signature: Option<String>,
    expiration: Option<i64>,
}

fn parse_query(raw: Option<&str>) -> FileQuery {
    let mut q = FileQuery::default();
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "path" => q.path = Some(v.into_owned()),
            "username" => q.username = Some(v.into_owned()),
            "signature" => q.signature = Some(v.into_owned()),
            "signature_expiration" => q.expiration = v.parse().ok(),
            _ => {}
        }
    }
    q
}

/// The `v1_` signature E2B SDKs put on download/upload URLs.
pub fn signature(path: &str, op: &str, user: &str, token: &str, exp: Option<i64>) -> String {
    let raw = match exp {
        Some(e) => format!("{path}:{op}:{user}:{token}:{e}"),
        None => format!("{path}:{op}:{user}:{token}"),
    };
    let digest = Sha256::digest(raw.as_bytes());
    format!(
        "v1_{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

/// Token header or a valid, unexpired signature.
fn authorised(entry: &Entry, headers: &HeaderMap, q: &FileQuery, op: &str) -> Result<(), Response> {
    if token_ok(entry, headers) {
        return Ok(());
    }
    let Some(sig) = &q.signature else {
        return Err(api_error_status(
            StatusCode::UNAUTHORIZED,
            "missing X-Access-Token header or signature",
        ));
    };
    if let Some(exp) = q.expiration
        && exp < chrono::Utc::now().timestamp()
    {
        return Err(api_error_status(
            StatusCode::UNAUTHORIZED,
            "signature is already expired",
        ));
    }
    let path = q.path.as_deref().unwrap_or("");
    let user = q.username.as_deref().unwrap_or("");
    let want = signature(path, op, user, &entry.token, q.expiration);
    if constant_time_eq(want.as_bytes(), sig.as_bytes()) {
        Ok(())
    } else {
        Err(api_error_status(
            StatusCode::UNAUTHORIZED,
            "invalid signature",
        ))
    }
}

/// The sandbox of a `/files` request, authorised. A signed URL built on a
/// single `E2B_SANDBOX_URL` carries no sandbox id: the sandbox is then the
/// running one whose token makes the signature valid.
async fn file_sandbox(
    state: &Arc<State>,
    headers: &HeaderMap,
    q: &FileQuery,
    op: &str,
) -> Result<Arc<Entry>, Response> {
    if target(state, headers).is_none() && q.signature.is_some() {
        if q.expiration
            .is_some_and(|exp| exp < chrono::Utc::now().timestamp())
        {
            return Err(api_error_status(
                StatusCode::UNAUTHORIZED,
                "signature is already expired",
            ));
        }
        let found =
            state.registry.all().into_iter().find(|e| {
                state.is_running(&e.id) && authorised(e, &HeaderMap::new(), q, op).is_ok()
            });
        return found.ok_or_else(|| {
            api_error_status(StatusCode::UNAUTHORIZED, "invalid or expired signature")
        });
    }
    let entry = sandbox(state, headers).await?;
    authorised(&entry, headers, q, op)?;
    Ok(entry)
}

pub(crate) fn gunzip(data: &[u8]) -> godel_core::Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .take(MAX_FILE as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::invalid(format!("invalid gzip body: {e}")))?;
    if out.len() > MAX_FILE {
        return Err(Error::exhausted("file too large"));
    }
    Ok(out)
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data)?;
    enc.finish()
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")))
}

pub(super) async fn download(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = parse_query(raw.as_deref());
    let entry = match file_sandbox(&state, &headers, &q, "read").await {
        Ok(e) => e,
        Err(r) => return r,
    };
    let Some(path) = q.path.clone() else {
        return api_error_status(StatusCode::BAD_REQUEST, "missing path");
    };
    let data = match state
        .control
        .read_file(&entry.caller, &entry.id, &path)
        .await
    {
        Ok(d) => d,
        Err(e) if e.code == godel_core::ErrorCode::NotFound => {
            return api_error_status(
                StatusCode::NOT_FOUND,
                &format!("path '{path}' does not exist"),
            );
        }
        Err(e) => return api_error(&e),
    };
    let name = path.rsplit('/').next().unwrap_or("file").replace('"', "");
    let disposition = format!("attachment; filename=\"{name}\"");
    if accepts_gzip(&headers)
        && let Ok(z) = gzip(&data)
    {
        return (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (header::CONTENT_ENCODING, "gzip".to_string()),
                (header::CONTENT_DISPOSITION, disposition),
            ],
            z,
        )
            .into_response();
    }
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        data,
    )
        .into_response()
}

/// Write one file and describe it for the response.
async fn write_one(
    state: &State,
    entry: &Entry,
    path: &str,
    data: Bytes,
) -> godel_core::Result<WrittenEntry> {
    let rel = workspace_relative(path)?;
    if rel.is_empty() {
        return Err(Error::invalid("cannot write to the home directory itself"));
    }
    state
        .control
        .write_file(&entry.caller, &entry.id, path, data)
        .await?;
    Ok(WrittenEntry {
        name: rel.rsplit('/').next().unwrap_or(&rel).to_string(),
        kind: "file".into(),
        path: sandbox_path(&rel),
    })
}

pub(super) async fn upload(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Body,
) -> Response {
    let q = parse_query(raw.as_deref());
    let entry = match file_sandbox(&state, &headers, &q, "write").await {
        Ok(e) => e,
        Err(r) => return r,
    };
    if let Some(name) = headers
        .keys()
        .find(|k| k.as_str().starts_with(METADATA_HEADER_PREFIX))
    {
        // envd ≥ 0.6.2 stores these as extended attributes; godel's runtimes
        // have no per-file metadata, so the upload is refused, not stripped.
        return api_error_status(
            StatusCode::BAD_REQUEST,
            &format!(
                "file metadata is not supported by godel: the upload carries {name}; \
                 write the file without `metadata`"
            ),
        );
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let res = if ct.starts_with("multipart/form-data") {
        upload_multipart(&state, &entry, &q, &ct, body).await
    } else {
        upload_raw(&state, &entry, &q, &headers, body).await
    };
    match res {
        Ok(written) if written.is_empty() => {
            api_error_status(StatusCode::BAD_REQUEST, "no file in the request")
        }
        Ok(written) => (StatusCode::OK, axum::Json(written)).into_response(),
        Err(e) => api_error(&e),
    }
}

async fn upload_raw(
    state: &State,
    entry: &Entry,
    q: &FileQuery,
    headers: &HeaderMap,
    body: Body,
) -> godel_core::Result<Vec<WrittenEntry>> {
    let path = q
        .path
        .as_deref()
        .ok_or_else(|| Error::invalid("an octet-stream upload needs ?path="))?;
    let data = axum::body::to_bytes(body, MAX_FILE)
        .await
        .map_err(|e| Error::invalid(format!("cannot read the upload: {e}")))?;
    let gz = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let data = if gz {
        Bytes::from(gunzip(&data)?)
    } else {
        data
    };
    Ok(vec![write_one(state, entry, path, data).await?])
}

async fn upload_multipart(
    state: &State,
    entry: &Entry,
    q: &FileQuery,
    ct: &str,
    body: Body,
) -> godel_core::Result<Vec<WrittenEntry>> {
    let boundary = multer::parse_boundary(ct)
        .map_err(|e| Error::invalid(format!("bad multipart content type: {e}")))?;
    let stream = body
        .into_data_stream()
        .map(|r| r.map_err(std::io::Error::other));
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(MAX_FILE as u64)
            .per_field(MAX_FILE as u64),
    );
    let mut mp = multer::Multipart::with_constraints(stream, boundary, constraints);
    let mut written = Vec::new();
    let mut first = true;
    while let Some(field) = mp
        .next_field()
        .await
        .map_err(|e| Error::invalid(format!("bad multipart body: {e}")))?
    {
        if field.name().is_some_and(|n| n != "file") {
            continue;
        }
        // `?path=` names the single file; otherwise each part's filename is its path.
        let path = match (&q.path, field.file_name()) {
            (Some(p), _) if first => p.clone(),
            (_, Some(f)) => f.to_string(),
            (Some(p), None) => p.clone(),
            (None, None) => return Err(Error::invalid("multipart file part without a filename")),
        };
        first = false;
        let data = field
            .bytes()
            .await
            .map_err(|e| Error::invalid(format!("cannot read the upload: {e}")))?;
        written.push(write_one(state, entry, &path, data).await?);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_python_sdk() {
        // Computed with e2b 2.63's e2b.sandbox.signature.get_signature.
        let s = signature("/home/user/a.txt", "read", "", "tok", None);
        assert_eq!(s, "v1_Zkbb3914oLJLvMBzCAHQhm2ydBLxbSx2eQUR/kLdvIY");
        assert_ne!(s, signature("/home/user/a.txt", "write", "", "tok", None));
        assert_ne!(s, signature("/home/user/a.txt", "read", "", "tok", Some(1)));
    }

    #[test]
    fn gzip_round_trip() {
        let z = gzip(b"hello").unwrap();
        assert_eq!(gunzip(&z).unwrap(), b"hello");
        assert!(gunzip(b"nope").is_err());
    }
}
