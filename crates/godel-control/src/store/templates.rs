//! Built templates, one row per team and name (the whole [`TemplateInfo`]
//! as JSON). A row is written only after every layer of the build is in
//! place, so a listed template is always whole.

use godel_core::{Result, TemplateInfo};

use super::db::args;
use super::{Store, json_err};

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
        let data = serde_json::to_string(t).map_err(json_err)?;
        self.write(|tx| {
            tx.execute(
                "INSERT INTO templates (team, name, created_at, data) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(team, name) DO UPDATE SET created_at = excluded.created_at, data = excluded.data",
                args![&t.team, &t.name, super::time_text(t.created_at), data],
            )
        })
        .map(drop)
    }

    pub fn get_template(&self, team: &str, name: &str) -> Result<Option<TemplateInfo>> {
        self.read(|db| {
            db.query_opt(
                "SELECT data FROM templates WHERE team = ?1 AND name = ?2",
                args![team, name],
            )
        })?
        .map(|r| serde_json::from_str(&r.str(0)?).map_err(json_err))
        .transpose()
    }

    /// Templates by name, of one team or all.
    pub fn list_templates(&self, team: Option<&str>) -> Result<Vec<TemplateInfo>> {
        self.read(|db| {
            db.query(
                "SELECT data FROM templates WHERE (CAST(?1 AS TEXT) IS NULL OR team = ?1) ORDER BY team, name",
                args![team],
            )
        })?
        .iter()
        .map(|r| serde_json::from_str(&r.str(0)?).map_err(json_err))
        .collect()
    }

    /// Remove a template; whether it existed.
    pub fn delete_template(&self, team: &str, name: &str) -> Result<bool> {
        let n = self.write(|tx| {
            tx.execute(
                "DELETE FROM templates WHERE team = ?1 AND name = ?2",
                args![team, name],
            )
        })?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_list_delete_per_team() {
        let s = Store::open_scratch().unwrap();
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
