//! Templates built from a Dockerfile: the control plane resolves the team,
//! hands the build to the runtime that builds (the worktree runtime,
//! registered with [`Control::set_template_builder`]), and registers the
//! result in the store only once it is whole. Spawns naming a built template
//! are pinned to that runtime; another runtime asked for one is refused.

use std::sync::Arc;

use godel_core::{
    Error, Result, SpawnSpec, TemplateBuild, TemplateBuildRequest, TemplateBuilder, TemplateInfo,
    TemplateResolver,
};

use super::{Caller, Control};

/// The runtime whose builder makes templates (and that starts them).
pub const TEMPLATE_RUNTIME: &str = "worktree";

/// What a caller asks to build.
#[derive(Debug, Clone, Default)]
pub struct BuildTemplate {
    pub name: String,
    pub team: Option<String>,
    pub dockerfile: String,
    pub context_tar: bytes::Bytes,
    pub network: bool,
}

impl Control {
    /// The runtime that builds templates.
    pub fn set_template_builder(&self, b: Arc<dyn TemplateBuilder>) {
        let _ = self.templates.set(b);
    }

    /// A resolver for the runtime that starts templates (holds the control
    /// plane weakly).
    pub fn template_resolver(&self) -> TemplateResolver {
        let me = self.me.clone();
        Arc::new(move |team: &str, name: &str| {
            me.upgrade()
                .and_then(|c| c.store.get_template(team, name).ok().flatten())
        })
    }

    /// Build and register a template of the caller's team.
    pub async fn build_template(
        &self,
        caller: &Caller,
        req: BuildTemplate,
    ) -> Result<TemplateBuild> {
        let team = caller.spawn_team(req.team.as_deref(), &self.settings.default_team)?;
        godel_core::validate_name("team", &team)?;
        let builder = self.templates.get().cloned().ok_or_else(|| {
            Error::unavailable(format!(
                "no runtime builds templates here: the {TEMPLATE_RUNTIME} runtime with the process sandbox is needed"
            ))
            .retryable(false)
        })?;
        let templates = self
            .store
            .list_templates(Some(&team))?
            .into_iter()
            .map(|t| (t.name.clone(), t))
            .collect();
        let built = builder
            .build(TemplateBuildRequest {
                name: req.name,
                team,
                dockerfile: req.dockerfile,
                context_tar: req.context_tar,
                network: req.network,
                templates,
            })
            .await?;
        self.store.put_template(&built.template)?;
        Ok(built)
    }

    /// Templates the caller sees (its team's; all for an admin).
    pub fn list_templates(&self, caller: &Caller) -> Result<Vec<TemplateInfo>> {
        self.store.list_templates(caller.team_filter())
    }

    /// One template of the caller's team (`team` for an admin; default team otherwise).
    pub fn get_template(
        &self,
        caller: &Caller,
        team: Option<&str>,
        name: &str,
    ) -> Result<TemplateInfo> {
        let team = caller.spawn_team(team, &self.settings.default_team)?;
        self.store
            .get_template(&team, name)?
            .ok_or_else(|| Error::not_found(format!("template {name} not found in team {team}")))
    }

    /// Unregister a template (its layers stay as build cache).
    pub fn delete_template(&self, caller: &Caller, team: Option<&str>, name: &str) -> Result<()> {
        let team = caller.spawn_team(team, &self.settings.default_team)?;
        if self.store.delete_template(&team, name)? {
            Ok(())
        } else {
            Err(Error::not_found(format!(
                "template {name} not found in team {team}"
            )))
        }
    }

    /// A spawn naming a template: a built one pins the runtime that starts
    /// it (another runtime asked for is refused); a name neither built in
    /// nor built is refused unless the runtime is `e2b` (which forwards it).
    pub(crate) fn check_template(
        &self,
        team: &str,
        default_runtime: &str,
        spec: &mut SpawnSpec,
    ) -> Result<()> {
        let Some(name) = spec.template.clone() else {
            return Ok(());
        };
        if godel_core::BUILTIN_TEMPLATES.contains(&name.as_str()) {
            return Ok(());
        }
        let runtime = spec
            .runtime
            .clone()
            .unwrap_or_else(|| default_runtime.to_string());
        if self.store.get_template(team, &name)?.is_some() {
            if spec
                .runtime
                .as_deref()
                .is_some_and(|r| r != TEMPLATE_RUNTIME)
            {
                return Err(Error::invalid(format!(
                    "template {name} is a built template, which only the {TEMPLATE_RUNTIME} runtime starts; runtime {runtime} cannot"
                )));
            }
            spec.runtime = Some(TEMPLATE_RUNTIME.into());
            return Ok(());
        }
        if runtime == "e2b" {
            return Ok(());
        }
        Err(Error::not_found(format!(
            "template {name} not found: not built in ({}), and team {team} built no template of that name",
            godel_core::BUILTIN_TEMPLATES.join(", ")
        )))
    }
}
