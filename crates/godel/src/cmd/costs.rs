//! usage, budget, migrate, rollout and events: costs and moves, each a thin
//! client of one `/v1` route.

use futures::StreamExt;
use godel_control::control::{BudgetStatus, MigrationReport, Rollout, UsageReport, UsageRow};
use godel_core::{Error, Event, Result};
use http::Method;
use serde_json::json;

use crate::Ctx;
use crate::cli::{BudgetCmd, MigrateArgs, RolloutCmd, UsageArgs};
use crate::client::enc;
use crate::output;

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let q: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", enc(v))))
        .collect();
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

pub async fn usage(ctx: &Ctx, a: UsageArgs) -> Result<i32> {
    let path = format!(
        "/v1/usage{}",
        query(&[
            ("team", a.team.clone()),
            ("since", a.since.clone()),
            ("by", Some(a.by.clone())),
        ])
    );
    let r: UsageReport = ctx.client.json(Method::GET, &path, None::<&()>).await?;
    let format = a
        .format
        .unwrap_or_else(|| if ctx.json { "json" } else { "table" }.into());
    match format.as_str() {
        "json" => output::json(&r),
        "csv" => {
            println!(
                "{},team,runtime,run_seconds,vcpu_seconds,gib_seconds,execs,bytes,cost_usd",
                r.by
            );
            for row in r.rows.iter().chain(std::iter::once(&r.total)) {
                println!(
                    "{},{},{},{:.3},{:.6},{:.6},{},{},{:.9}",
                    row.key,
                    row.team.as_deref().unwrap_or(""),
                    row.runtime.as_deref().unwrap_or(""),
                    row.run_seconds,
                    row.vcpu_seconds,
                    row.gib_seconds,
                    row.execs,
                    row.bytes,
                    row.cost
                );
            }
        }
        _ => {
            let line = |r: &UsageRow| {
                println!(
                    "{:<22} {:<12} {:<9} {:>12.1} {:>14.3} {:>14.3} {:>7} {:>12} {:>12.6}",
                    r.key,
                    r.team.as_deref().unwrap_or("-"),
                    r.runtime.as_deref().unwrap_or("-"),
                    r.run_seconds,
                    r.vcpu_seconds,
                    r.gib_seconds,
                    r.execs,
                    r.bytes,
                    r.cost
                )
            };
            println!(
                "{:<22} {:<12} {:<9} {:>12} {:>14} {:>14} {:>7} {:>12} {:>12}",
                r.by.to_uppercase(),
                "TEAM",
                "RUNTIME",
                "RUN_S",
                "VCPU_S",
                "GIB_S",
                "EXECS",
                "BYTES",
                "COST_USD"
            );
            r.rows.iter().for_each(line);
            line(&r.total);
        }
    }
    Ok(0)
}

pub async fn budget(ctx: &Ctx, cmd: BudgetCmd) -> Result<i32> {
    match cmd {
        BudgetCmd::Set {
            team,
            limit,
            period,
            policy,
            agent,
        } => {
            let body = json!({"team": team, "limit_usd": limit, "period": period,
                              "policy": policy, "agent": agent});
            let s: BudgetStatus = ctx
                .client
                .json(Method::POST, "/v1/budgets", Some(&body))
                .await?;
            if ctx.json {
                output::json(&s);
            } else {
                print_budgets(&[s]);
            }
        }
        BudgetCmd::Ls { team } => {
            let path = format!("/v1/budgets{}", query(&[("team", team)]));
            let list: Vec<BudgetStatus> = ctx.client.json(Method::GET, &path, None::<&()>).await?;
            if ctx.json {
                output::json(&list);
            } else {
                print_budgets(&list);
            }
        }
        BudgetCmd::Rm { team, agent } => {
            let path = format!("/v1/budgets/{}{}", enc(&team), query(&[("agent", agent)]));
            ctx.client
                .call(
                    Method::DELETE,
                    &path,
                    bytes::Bytes::new(),
                    "application/json",
                )
                .await?;
            if ctx.json {
                output::json(&json!({"deleted": team}));
            } else {
                println!("budget of {team} removed");
            }
        }
    }
    Ok(0)
}

fn print_budgets(list: &[BudgetStatus]) {
    println!(
        "{:<14} {:<20} {:>12} {:<9} {:<18} {:>12} {:>7} LEVEL",
        "TEAM", "AGENT", "LIMIT_USD", "PERIOD", "POLICY", "SPENT_USD", "PCT"
    );
    for b in list {
        println!(
            "{:<14} {:<20} {:>12.4} {:<9} {:<18} {:>12.6} {:>6.1}% {}",
            b.team,
            b.agent.as_deref().unwrap_or("-"),
            b.limit_usd,
            b.period.as_str(),
            b.policy.as_str(),
            b.spent_usd,
            b.percent,
            serde_json::to_value(b.level)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        );
    }
}

pub async fn migrate(ctx: &Ctx, a: MigrateArgs) -> Result<i32> {
    let body = json!({"agents": a.agents, "team": a.team, "from": a.from, "to": a.to,
                      "dry_run": a.dry_run});
    let r: MigrationReport = ctx
        .client
        .json(Method::POST, "/v1/migrations", Some(&body))
        .await?;
    if ctx.json {
        output::json(&r);
    } else {
        let verb = if r.dry_run { "would move" } else { "moves" };
        println!("{verb} {} agent(s) to {}", r.moves.len(), r.to);
        for m in &r.moves {
            let outcome = match (&m.new_id, &m.error) {
                (Some(n), _) => format!("→ {n} ({} files verified)", m.files),
                (None, Some(e)) => format!("FAILED, still running: {}: {}", e.code, e.message),
                (None, None) => "planned".into(),
            };
            println!(
                "  {} [{}] {} → {}  ${:.4}/h → ${:.4}/h  {outcome}",
                m.id, m.team, m.from, m.to, m.hourly_before_usd, m.hourly_after_usd
            );
        }
        println!(
            "estimated cost change: {:+.4} USD per hour",
            r.estimated_hourly_change_usd
        );
    }
    if let Some(e) = r.moves.iter().find_map(|m| m.error.as_ref()) {
        if !ctx.json {
            output::print_error(e, false);
        }
        return Ok(e.code.exit_code());
    }
    Ok(0)
}

pub async fn rollout(ctx: &Ctx, cmd: RolloutCmd) -> Result<i32> {
    let (method, path, body) = match cmd {
        RolloutCmd::Start {
            team,
            to,
            from,
            steps,
            interval,
            max_error_rate,
            min_samples,
        } => (
            Method::POST,
            "/v1/rollouts".to_string(),
            Some(json!({"team": team, "to": to, "from": from, "steps": steps,
                        "interval": interval, "max_error_rate": max_error_rate,
                        "min_samples": min_samples})),
        ),
        RolloutCmd::Status { team } => {
            let list: Vec<Rollout> = ctx
                .client
                .json(Method::GET, "/v1/rollouts", None::<&()>)
                .await?;
            let list: Vec<Rollout> = list
                .into_iter()
                .filter(|r| team.as_ref().is_none_or(|t| *t == r.team))
                .collect();
            if let Some(t) = &team
                && list.is_empty()
            {
                return Err(Error::not_found(format!("no rollout for team {t}")));
            }
            if ctx.json {
                output::json(&list);
            } else {
                list.iter().for_each(print_rollout);
            }
            return Ok(0);
        }
        RolloutCmd::Pause { team } => (
            Method::POST,
            format!("/v1/rollouts/{}/pause", enc(&team)),
            None,
        ),
        RolloutCmd::Resume { team } => (
            Method::POST,
            format!("/v1/rollouts/{}/resume", enc(&team)),
            None,
        ),
        RolloutCmd::Rollback { team } => (
            Method::POST,
            format!("/v1/rollouts/{}/rollback", enc(&team)),
            None,
        ),
    };
    let r: Rollout = ctx.client.json(method, &path, body.as_ref()).await?;
    if ctx.json {
        output::json(&r);
    } else {
        print_rollout(&r);
    }
    Ok(0)
}

fn print_rollout(r: &Rollout) {
    let state = serde_json::to_value(r.state)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    println!(
        "team {}: {} → {}, {state}, step {}/{} at {}% (interval {} s, max error rate {:.1}%)",
        r.team,
        r.from,
        r.to,
        r.step + 1,
        r.steps.len(),
        r.share(),
        r.plan.interval_secs,
        r.plan.max_error_rate * 100.0
    );
    for (i, s) in r.steps.iter().enumerate() {
        println!(
            "  step {} {:>3}%: {} spawns, {} to {}, {} errors",
            i + 1,
            s.percent,
            s.spawns,
            s.target,
            r.to,
            s.errors
        );
    }
    if let Some(why) = &r.reason {
        println!("  reason: {why}");
    }
}

fn print_event(ctx: &Ctx, ev: &Event) {
    if ctx.json {
        println!("{}", serde_json::to_string(ev).unwrap_or_default());
        return;
    }
    println!(
        "{:>6} {} {:<20} {:<12} {:<20} {}",
        ev.seq,
        ev.time.format("%Y-%m-%d %H:%M:%S%.3f"),
        ev.kind,
        ev.team.as_deref().unwrap_or("-"),
        ev.runtime_id.as_deref().unwrap_or(""),
        if ev.data.is_null() {
            String::new()
        } else {
            ev.data.to_string()
        }
    );
}

/// Stored events, then (with `--follow`) the live stream.
pub async fn events(
    ctx: &Ctx,
    since: Option<i64>,
    limit: Option<usize>,
    team: Option<String>,
    kind: Option<String>,
    follow: bool,
) -> Result<i32> {
    let path = format!(
        "/v1/events/log{}",
        query(&[
            ("since", since.map(|s| s.to_string())),
            ("team", team.clone()),
            ("kind", kind.clone()),
            ("limit", limit.map(|l| l.to_string())),
        ])
    );
    let stored: Vec<Event> = ctx.client.json(Method::GET, &path, None::<&()>).await?;
    if !follow {
        if ctx.json {
            output::json(&stored);
        } else {
            stored.iter().for_each(|e| print_event(ctx, e));
        }
        return Ok(0);
    }
    stored.iter().for_each(|e| print_event(ctx, e));
    let mut n = stored.len();
    if limit.is_some_and(|l| n >= l) {
        return Ok(0);
    }
    let last = stored.last().map(|e| e.seq).or(since).unwrap_or(0);
    let mut stream = Box::pin(
        ctx.client
            .sse(
                Method::GET,
                &format!("/v1/events?since={last}"),
                None::<&()>,
            )
            .await?,
    );
    while let Some(item) = stream.next().await {
        let (_, data) = item?;
        let Ok(ev) = serde_json::from_str::<Event>(&data) else {
            continue;
        };
        if team.as_ref().is_some_and(|t| ev.team.as_ref() != Some(t))
            || kind.as_ref().is_some_and(|k| ev.kind != k.as_str())
        {
            continue;
        }
        print_event(ctx, &ev);
        n += 1;
        if limit.is_some_and(|l| n >= l) {
            break;
        }
    }
    Ok(0)
}
