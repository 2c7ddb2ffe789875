//! Token shapes: team tokens are E2B API keys (`e2b_` + 40 hex) by default,
//! godel's `gdl_` + 48 hex on request; both are stored hashed, found and
//! revoked alike, and a database from before the E2B shape keeps its tokens.

use godel_control::{Caller, Control, Settings, Store, TokenFormat};
use godel_core::ErrorCode;

fn is_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// What the E2B SDKs that check the key's shape accept (`^e2b_[0-9a-f]+$`).
fn e2b_sdk_accepts(key: &str) -> bool {
    key.strip_prefix("e2b_")
        .is_some_and(|h| !h.is_empty() && is_hex(h))
}

#[test]
fn both_formats_are_hashed_found_and_revocable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("godel.db");
    let s = Store::open(&path).unwrap();

    let (e2b_rec, e2b) = s.create_token(Some("alpha"), false).unwrap();
    assert_eq!(e2b.len(), 44, "{e2b}");
    assert!(e2b_sdk_accepts(&e2b), "{e2b}");
    assert_eq!(TokenFormat::of(&e2b), Some(TokenFormat::E2b));
    let (gdl_rec, gdl) = s
        .create_token_as(Some("alpha"), false, TokenFormat::Gdl)
        .unwrap();
    assert!(gdl.starts_with("gdl_") && gdl.len() == 52 && is_hex(&gdl[4..]));
    assert_eq!(TokenFormat::of(&gdl), Some(TokenFormat::Gdl));
    let (_, admin) = s.create_token(None, true).unwrap();
    assert!(admin.starts_with("gdl_"), "admin tokens keep godel's shape");
    let (_, admin_e2b) = s.create_token_as(None, true, TokenFormat::E2b).unwrap();
    assert!(e2b_sdk_accepts(&admin_e2b));

    for (tok, id) in [(&e2b, &e2b_rec.id), (&gdl, &gdl_rec.id)] {
        let found = s.find_token(tok).unwrap().expect("found");
        assert_eq!((&found.id, found.team.as_deref()), (id, Some("alpha")));
    }
    // Not a prefix match, not case-insensitive.
    assert!(s.find_token(&e2b.to_uppercase()).unwrap().is_none());
    assert!(s.find_token(&e2b[..43]).unwrap().is_none());

    // Neither plaintext is in the database files.
    drop(s);
    let raw = std::fs::read(&path).unwrap();
    let wal = std::fs::read(path.with_extension("db-wal")).unwrap_or_default();
    for tok in [&e2b, &gdl] {
        let n = tok.as_bytes();
        assert!(!raw.windows(n.len()).any(|w| w == n));
        assert!(!wal.windows(n.len()).any(|w| w == n));
    }

    // Revocation by plaintext (e2b) and by id (gdl).
    let s = Store::open(&path).unwrap();
    assert_eq!(s.revoke_token(&e2b).unwrap().id, e2b_rec.id);
    assert_eq!(s.revoke_token(&gdl_rec.id).unwrap().id, gdl_rec.id);
    assert!(s.find_token(&e2b).unwrap().is_none());
    assert!(s.find_token(&gdl).unwrap().is_none());
}

#[test]
fn formats_parse_and_refuse_unknown_names() {
    assert_eq!("e2b".parse::<TokenFormat>().unwrap(), TokenFormat::E2b);
    assert_eq!("gdl".parse::<TokenFormat>().unwrap(), TokenFormat::Gdl);
    let e = "hex".parse::<TokenFormat>().unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    assert!(
        e.message.contains("e2b") && e.message.contains("gdl"),
        "{}",
        e.message
    );
    assert_eq!(TokenFormat::of("e2b_00"), None);
    assert_eq!(TokenFormat::of("sk_e2b_0"), None);
    assert_eq!(TokenFormat::default_for(false), TokenFormat::E2b);
    assert_eq!(TokenFormat::default_for(true), TokenFormat::Gdl);
}

/// The control plane authenticates both shapes to the same team and a
/// revoked one of either shape is refused.
#[test]
fn the_control_plane_accepts_both_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let control = Control::with_store(
        dir.path(),
        godel_control::Store::open_scratch().unwrap(),
        Settings::default(),
    )
    .unwrap();
    let admin = Caller::Admin;
    let e2b = control
        .create_token_as(&admin, Some("alpha"), false, None)
        .unwrap();
    assert_eq!(e2b.format, TokenFormat::E2b);
    let gdl = control
        .create_token_as(&admin, Some("alpha"), false, Some(TokenFormat::Gdl))
        .unwrap();
    for t in [&e2b.token, &gdl.token] {
        assert_eq!(
            control.authenticate(t).unwrap(),
            Caller::Team("alpha".into())
        );
    }
    control.revoke_token(&admin, &e2b.record.id).unwrap();
    assert_eq!(
        control.authenticate(&e2b.token).unwrap_err().code,
        ErrorCode::Unauthenticated
    );
    assert!(control.authenticate(&gdl.token).is_ok());
}

/// A version-1 database (from before E2B-shaped tokens) keeps its `gdl_`
/// token; new tokens of both shapes are made next to it, and revoking the
/// old one leaves the new ones working.
#[test]
fn a_version_1_database_keeps_its_tokens_and_takes_new_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("godel.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(include_str!("fixtures/schema_v1.sql"))
        .unwrap();
    let s = Store::open(&path).unwrap();
    let old = "gdl_0123456789abcdef0123456789abcdef0123456789abcdef";
    assert_eq!(
        s.find_token(old).unwrap().expect("old").team.as_deref(),
        Some("alpha")
    );
    let (_, e2b) = s.create_token(Some("alpha"), false).unwrap();
    let (_, gdl) = s
        .create_token_as(Some("alpha"), false, TokenFormat::Gdl)
        .unwrap();
    assert!(e2b_sdk_accepts(&e2b));
    drop(s);
    let s = Store::open(&path).unwrap();
    for t in [old, &e2b, &gdl] {
        assert!(s.find_token(t).unwrap().is_some(), "{t}");
    }
    s.revoke_token(old).unwrap();
    assert!(s.find_token(old).unwrap().is_none());
    assert!(s.find_token(&e2b).unwrap().is_some());
    assert!(s.find_token(&gdl).unwrap().is_some());
    assert_eq!(s.list_tokens(Some("alpha")).unwrap().len(), 3);
}
