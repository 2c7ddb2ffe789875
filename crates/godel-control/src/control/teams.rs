//! Teams and tokens: creation, listing, revocation, and turning a presented
//! token into a `Caller`.

use godel_core::{Error, Event, Result};
use serde::Serialize;
use serde_json::json;

use super::{Caller, Control};
use crate::store::{TeamRecord, TokenFormat, TokenRecord};

/// A token just created: the only time its plaintext exists.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub record: TokenRecord,
    pub token: String,
    /// The shape of `token`.
    pub format: TokenFormat,
}

impl Control {
    /// Make every team of the config file exist (quotas and chains stay in
    /// the file, merged at each spawn; fields set with `godel team create` win).
    pub fn ensure_config_teams(&self) -> Result<()> {
        for name in self.settings.config.teams.keys() {
            if self.store.get_team(name)?.is_none() {
                self.store.upsert_team(&TeamRecord {
                    name: name.clone(),
                    ..Default::default()
                })?;
            }
        }
        Ok(())
    }

    /// Map a bearer token to a caller; `UNAUTHENTICATED` when unknown or revoked.
    pub fn authenticate(&self, token: &str) -> Result<Caller> {
        match self.store.find_token(token.trim())? {
            Some(t) if t.admin => Ok(Caller::Admin),
            Some(TokenRecord {
                team: Some(team), ..
            }) => Ok(Caller::Team(team)),
            _ => Err(Error::unauthenticated("invalid or revoked token")),
        }
    }

    pub fn create_team(&self, caller: &Caller, team: TeamRecord) -> Result<TeamRecord> {
        caller.require_admin("creating a team")?;
        godel_core::validate_name("team", &team.name)?;
        if let Some(r) = &team.runtime {
            self.provider(r).map(|_| ()).or_else(|e| {
                if e.code == godel_core::ErrorCode::Unavailable {
                    Ok(())
                } else {
                    Err(e)
                }
            })?;
        }
        if self.store.get_team(&team.name)?.is_some() {
            return Err(Error::conflict(format!(
                "team {} already exists",
                team.name
            )));
        }
        self.store.upsert_team(&team)?;
        self.emit(
            Event::new(godel_core::EventKind::TeamCreated)
                .team(&team.name)
                .data(json!(team)),
        );
        self.store
            .get_team(&team.name)?
            .ok_or_else(|| Error::internal("team vanished"))
    }

    pub fn list_teams(&self, caller: &Caller) -> Result<Vec<TeamRecord>> {
        let teams = self.store.list_teams()?;
        Ok(teams.into_iter().filter(|t| caller.sees(&t.name)).collect())
    }

    pub fn delete_team(&self, caller: &Caller, name: &str) -> Result<()> {
        caller.require_admin("removing a team")?;
        self.store.delete_team(name)?;
        self.emit(Event::new(godel_core::EventKind::TeamDeleted).team(name));
        Ok(())
    }

    /// New token for a team (created on first use with no quota) or an admin
    /// token, in the default format (team tokens are E2B-shaped keys).
    pub fn create_token(
        &self,
        caller: &Caller,
        team: Option<&str>,
        admin: bool,
    ) -> Result<CreatedToken> {
        self.create_token_as(caller, team, admin, None)
    }

    /// [`Control::create_token`] with an explicit format (`None`: the default).
    pub fn create_token_as(
        &self,
        caller: &Caller,
        team: Option<&str>,
        admin: bool,
        format: Option<TokenFormat>,
    ) -> Result<CreatedToken> {
        caller.require_admin("creating a token")?;
        if admin == team.is_some() {
            return Err(Error::invalid(
                "a token is either for one team (--team T) or an admin token (--admin)",
            ));
        }
        if let Some(t) = team {
            godel_core::validate_name("team", t)?;
            if self.store.get_team(t)?.is_none() {
                self.store.upsert_team(&TeamRecord {
                    name: t.to_string(),
                    ..Default::default()
                })?;
            }
        }
        let format = format.unwrap_or(TokenFormat::default_for(admin));
        let (record, token) = self.store.create_token_as(team, admin, format)?;
        self.emit(
            Event::new(godel_core::EventKind::TokenCreated)
                .data(json!({"id": record.id, "team": team, "admin": admin, "format": format})),
        );
        Ok(CreatedToken {
            record,
            token,
            format,
        })
    }

    pub fn list_tokens(&self, caller: &Caller) -> Result<Vec<TokenRecord>> {
        self.store.list_tokens(caller.team_filter())
    }

    pub fn revoke_token(&self, caller: &Caller, id_or_token: &str) -> Result<TokenRecord> {
        caller.require_admin("revoking a token")?;
        let rec = self.store.revoke_token(id_or_token)?;
        self.emit(Event::new(godel_core::EventKind::TokenRevoked).data(json!({"id": rec.id})));
        Ok(rec)
    }
}
