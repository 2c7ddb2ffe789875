//! Built templates, one row per team and name (the whole [`TemplateInfo`]
//! as JSON). A row is written only after every layer of the build is in
//! place, so a listed template is always whole.

use godel_core::{Result, TemplateInfo};
use rusqlite::{OptionalExtension, params};

use super::{Store, db_err, json_err};

/// The table (idempotent; run on every open).
pub(super) const TABLE: &str = r#"
CREATE TABLE IF NOT EXISTS templates (
    team TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (team, name)
);
"#;

impl Store {
    /// Register (or replace) a template.
    pub fn put_template(&self, t: &TemplateInfo) -> Result<()> {
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO templates (team, name, created_at, data) VALUES (?1, ?2, ?3, ?4)",
                params![
                    t.team,
                    t.name,
                    super::time_text(t.created_at),
                    serde_json::to_string(t).map_err(json_err)?
                ],
            )
            .map_err(db_err)?;
        Ok(())
    }

    pub fn get_template(&self, team: &str, name: &str) -> Result<Option<TemplateInfo>> {
        let data: Option<String> = self
            .conn()
            .query_row(
                "SELECT data FROM templates WHERE team = ?1 AND name = ?2",
                [team, name],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)?;
        data.map(|d| serde_json::from_str(&d).map_err(json_err))
            .transpose()
    }

    /// Templates by name, of one team or all.
    pub fn list_templates(&self, team: Option<&str>) -> Result<Vec<TemplateInfo>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT data FROM templates WHERE (?1 IS NULL OR team = ?1) ORDER BY team, name",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map([team], |r| r.get::<_, String>(0))
            .map_err(db_err)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_err)?;
        rows.iter()
            .map(|d| serde_json::from_str(d).map_err(json_err))
            .collect()
    }

    /// Remove a template; whether it existed.
    pub fn delete_template(&self, team: &str, name: &str) -> Result<bool> {
        let n = self
            .conn()
            .execute(
                "DELETE FROM templates WHERE team = ?1 AND name = ?2",
                [team, name],
            )
            .map_err(db_err)?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_list_delete_per_team() {
        let s = Store::open_in_memory().unwrap();
        let t = |team: &str, name: &str| TemplateInfo {
            name: name.into(),
            team: team.into(),
            runtime: "worktree".into(),
            key: "k".into(),
            layers: vec!["a".into()],
            env: Default::default(),
            workdir: None,
            start_cmd: None,
            created_at: chrono::Utc::now(),
            size_bytes: 1,
        };
        s.put_template(&t("a", "x")).unwrap();
        s.put_template(&t("b", "x")).unwrap();
        assert_eq!(s.get_template("a", "x").unwrap().unwrap().team, "a");
        assert!(s.get_template("c", "x").unwrap().is_none());
        assert_eq!(s.list_templates(Some("b")).unwrap().len(), 1);
        assert_eq!(s.list_templates(None).unwrap().len(), 2);
        assert!(s.delete_template("a", "x").unwrap());
        assert!(!s.delete_template("a", "x").unwrap());
    }
}
