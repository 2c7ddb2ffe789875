//! Teams and API tokens. Tokens are stored as SHA-256 hashes only; the
//! plaintext is shown once, when it is created. A token has one of two
//! shapes ([`TokenFormat`]): godel's own `gdl_<48 hex>` or E2B's
//! `e2b_<40 hex>` (which every official E2B SDK accepts, including the
//! versions that check the key's shape on the client). Both are looked up
//! by hash alike, so every listener accepts both and revocation covers both.

use godel_core::{Error, Result};
use serde::{Deserialize, Serialize};

use super::db::{Row, args};
use super::{Store, now_text, parse_time};
use crate::store::runtimes::Quota;

/// A team and its quota.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamRecord {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_agents: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cpu_millis: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_disk_bytes: Option<u64>,
    /// Default runtime for the team's spawns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// Fallback chain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback: Vec<String>,
}

impl TeamRecord {
    pub fn quota(&self) -> Quota {
        Quota {
            max_agents: self.max_agents,
            max_cpu_millis: self.max_cpu_millis,
            max_memory_bytes: self.max_memory_bytes,
            max_disk_bytes: self.max_disk_bytes,
        }
    }
}

/// A token as listed (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    pub admin: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The shape of a new token's plaintext.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenFormat {
    /// `e2b_` + 40 lowercase hex (160 random bits): E2B's API key shape.
    #[default]
    E2b,
    /// `gdl_` + 48 lowercase hex (192 random bits): godel's original shape.
    Gdl,
}

impl TokenFormat {
    /// The format a token gets when none is asked for: team tokens are E2B
    /// API keys (they work with every E2B SDK and with godel's own clients),
    /// admin tokens keep godel's shape.
    pub fn default_for(admin: bool) -> TokenFormat {
        if admin {
            TokenFormat::Gdl
        } else {
            TokenFormat::E2b
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TokenFormat::E2b => "e2b",
            TokenFormat::Gdl => "gdl",
        }
    }

    /// The format a plaintext token has, `None` for anything else.
    pub fn of(token: &str) -> Option<TokenFormat> {
        let hex_of = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        match token.split_at_checked(4) {
            Some(("e2b_", rest)) if hex_of(rest, 40) => Some(TokenFormat::E2b),
            Some(("gdl_", rest)) if hex_of(rest, 48) => Some(TokenFormat::Gdl),
            _ => None,
        }
    }

    /// A fresh random plaintext of this format.
    fn generate(self) -> String {
        use rand::RngCore;
        let mut secret = [0u8; 24];
        rand::rng().fill_bytes(&mut secret);
        match self {
            TokenFormat::E2b => format!("e2b_{}", hex::encode(&secret[..20])),
            TokenFormat::Gdl => format!("gdl_{}", hex::encode(secret)),
        }
    }
}

impl std::str::FromStr for TokenFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<TokenFormat> {
        match s {
            "e2b" => Ok(TokenFormat::E2b),
            "gdl" => Ok(TokenFormat::Gdl),
            other => Err(Error::invalid(format!(
                "unknown token format {other:?}: expected e2b (e2b_ + 40 hex, for E2B SDKs) or gdl (gdl_ + 48 hex)"
            ))),
        }
    }
}

/// SHA-256 of a token, hex.
pub fn hash_token(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

impl Store {
    pub fn upsert_team(&self, t: &TeamRecord) -> Result<()> {
        let fallback = serde_json::to_string(&t.fallback).unwrap_or_else(|_| "[]".into());
        self.write(|tx| {
            tx.execute(
                "INSERT INTO teams (name, created_at, max_agents, max_cpu_millis, max_memory_bytes, max_disk_bytes, runtime, fallback)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(name) DO UPDATE SET max_agents = excluded.max_agents, max_cpu_millis = excluded.max_cpu_millis,
                    max_memory_bytes = excluded.max_memory_bytes, max_disk_bytes = excluded.max_disk_bytes,
                    runtime = excluded.runtime, fallback = excluded.fallback",
                args![
                    &t.name,
                    now_text(),
                    t.max_agents,
                    t.max_cpu_millis,
                    t.max_memory_bytes,
                    t.max_disk_bytes,
                    t.runtime.as_deref(),
                    fallback,
                ],
            )
        })
        .map(drop)
    }

    pub fn get_team(&self, name: &str) -> Result<Option<TeamRecord>> {
        Ok(self.list_teams()?.into_iter().find(|t| t.name == name))
    }

    pub fn list_teams(&self) -> Result<Vec<TeamRecord>> {
        self.read(|db| {
            db.query(
                "SELECT name, created_at, max_agents, max_cpu_millis, max_memory_bytes, max_disk_bytes, runtime, fallback
                 FROM teams ORDER BY name",
                &[],
            )
        })?
        .iter()
        .map(|r| {
            let quota = |i| r.opt_i64(i).map(|v| v.map(|v| v.max(0) as u64));
            Ok(TeamRecord {
                name: r.str(0)?,
                created_at: Some(parse_time(&r.str(1)?)),
                max_agents: quota(2)?,
                max_cpu_millis: quota(3)?,
                max_memory_bytes: quota(4)?,
                max_disk_bytes: quota(5)?,
                runtime: r.opt_str(6)?,
                fallback: r
                    .opt_str(7)?
                    .and_then(|f| serde_json::from_str(&f).ok())
                    .unwrap_or_default(),
            })
        })
        .collect()
    }

    /// Remove a team; refused while it has live runtimes. Revokes its tokens.
    pub fn delete_team(&self, name: &str) -> Result<()> {
        let live = self.team_usage(name)?.agents;
        if live > 0 {
            return Err(Error::conflict(format!(
                "team {name} still has {live} live runtime(s); remove them first"
            )));
        }
        self.write(|tx| {
            let n = tx.execute("DELETE FROM teams WHERE name = ?1", args![name])?;
            if n == 0 {
                return Err(Error::not_found(format!("team {name} not found")));
            }
            tx.execute(
                "UPDATE tokens SET revoked_at = ?2 WHERE team = ?1 AND revoked_at IS NULL",
                args![name, now_text()],
            )?;
            Ok(())
        })
    }

    /// Create a token in its default format ([`TokenFormat::default_for`]);
    /// returns (record, plaintext). The plaintext is not stored.
    pub fn create_token(&self, team: Option<&str>, admin: bool) -> Result<(TokenRecord, String)> {
        self.create_token_as(team, admin, TokenFormat::default_for(admin))
    }

    /// Create a token of the given format; returns (record, plaintext).
    pub fn create_token_as(
        &self,
        team: Option<&str>,
        admin: bool,
        format: TokenFormat,
    ) -> Result<(TokenRecord, String)> {
        let token = format.generate();
        let id = format!("tok_{}", &token[4..12]);
        let now = now_text();
        self.write(|tx| {
            tx.execute(
                "INSERT INTO tokens (id, team, admin, hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                args![&id, team, admin, hash_token(&token), &now],
            )
        })?;
        Ok((
            TokenRecord {
                id,
                team: team.map(String::from),
                admin,
                created_at: parse_time(&now),
                revoked_at: None,
            },
            token,
        ))
    }

    /// Look up a live token by its plaintext.
    pub fn find_token(&self, token: &str) -> Result<Option<TokenRecord>> {
        self.read(|db| {
            db.query_opt(
                "SELECT id, team, admin, created_at, revoked_at FROM tokens WHERE hash = ?1 AND revoked_at IS NULL",
                args![hash_token(token)],
            )?
            .map(|r| token_row(&r))
            .transpose()
        })
    }

    pub fn list_tokens(&self, team: Option<&str>) -> Result<Vec<TokenRecord>> {
        self.read(|db| {
            db.query(
                "SELECT id, team, admin, created_at, revoked_at FROM tokens WHERE (CAST(?1 AS TEXT) IS NULL OR team = ?1) ORDER BY created_at",
                args![team],
            )?
            .iter()
            .map(token_row)
            .collect()
        })
    }

    /// Revoke by id (`tok_...`) or by the token itself.
    pub fn revoke_token(&self, id_or_token: &str) -> Result<TokenRecord> {
        self.write(|tx| {
            let rec = tx
                .query_opt(
                    "SELECT id, team, admin, created_at, revoked_at FROM tokens WHERE id = ?1 OR hash = ?2",
                    args![id_or_token, hash_token(id_or_token)],
                )?
                .map(|r| token_row(&r))
                .transpose()?
                .ok_or_else(|| Error::not_found("token not found"))?;
            tx.execute(
                "UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
                args![&rec.id, now_text()],
            )?;
            Ok(rec)
        })
    }
}

fn token_row(r: &Row) -> Result<TokenRecord> {
    Ok(TokenRecord {
        id: r.str(0)?,
        team: r.opt_str(1)?,
        admin: r.bool(2)?,
        created_at: parse_time(&r.str(3)?),
        revoked_at: r.opt_str(4)?.map(|t| parse_time(&t)),
    })
}
