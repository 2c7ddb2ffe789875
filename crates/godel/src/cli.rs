//! Command-line definitions (clap). Every command takes `--json`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "godel",
    version,
    about = "Self-hosted sandbox runtime for AI agents"
)]
pub struct Cli {
    /// godel's state directory (default: ~/.godel).
    #[arg(long, global = true, env = "GODEL_HOME")]
    pub home: Option<PathBuf>,
    /// Reach the daemon over TCP instead of the Unix socket (http://HOST:PORT).
    #[arg(long, global = true, env = "GODEL_URL")]
    pub url: Option<String>,
    /// Bearer token for TCP.
    #[arg(long, global = true, env = "GODEL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: API on $GODEL_HOME/godel.sock (and TCP with --listen).
    Serve(ServeArgs),
    /// Spawn a runtime; prints its id as the last line.
    Spawn(Box<SpawnArgs>),
    /// Run a command in a runtime; exits with the command's exit code.
    Exec(ExecArgs),
    /// Print a file of a runtime to stdout.
    Read { id: String, path: String },
    /// Write stdin to a file of a runtime (parents created).
    Write { id: String, path: String },
    /// Copy files or directories; `ID:PATH` on either side.
    Cp { src: String, dst: String },
    /// List runtimes.
    Ls {
        /// Include terminated and failed runtimes.
        #[arg(long, short)]
        all: bool,
    },
    /// Status of a runtime, with usage.
    Status { id: String },
    /// Terminate a runtime.
    Rm {
        id: String,
        /// Snapshot the runtime before stopping it.
        #[arg(long)]
        snapshot: bool,
    },
    /// Pause a runtime.
    Pause { id: String },
    /// Resume a paused runtime (a parked one is restored under its own id).
    Resume { id: String },
    /// Set a runtime's time to live from now, in seconds (`none` clears it).
    Ttl { id: String, secs: String },
    /// Snapshots: create, ls, rm.
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// Templates from a Dockerfile: build, ls, rm.
    #[command(subcommand)]
    Template(TemplateCmd),
    /// A new runtime from a snapshot; prints its id.
    Restore { snapshot: String },
    /// N new runtimes from a snapshot; prints their ids, one a line.
    Fork {
        snapshot: String,
        #[arg(short = 'n', long = "count", default_value_t = 1)]
        count: usize,
    },
    /// Whether a port inside a runtime answers (a server a process runs there).
    Port { id: String, port: u32 },
    /// Forward a local TCP port to a port inside a runtime (Ctrl-C stops).
    Forward {
        id: String,
        port: u32,
        /// Local PORT or ADDR:PORT (default: the same port on 127.0.0.1).
        local: Option<String>,
    },
    /// API tokens: create, ls, revoke.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Teams: create, ls, rm.
    #[command(subcommand)]
    Team(TeamCmd),
    /// Stored events (of a team, of a kind); `--follow` streams live ones too.
    Events {
        /// Only events after this sequence number.
        #[arg(long)]
        since: Option<i64>,
        /// Stop after this many events.
        #[arg(long)]
        limit: Option<usize>,
        /// Only this team's events (a team token sees only its own anyway).
        #[arg(long)]
        team: Option<String>,
        /// Only events of this kind (e.g. budget_alert).
        #[arg(long)]
        kind: Option<String>,
        /// Keep following the live stream (server-sent events).
        #[arg(long, short)]
        follow: bool,
    },
    /// Usage and cost per agent, runtime or day.
    Usage(UsageArgs),
    /// Budgets: set, ls, rm.
    #[command(subcommand)]
    Budget(BudgetCmd),
    /// Move running agents to another runtime (snapshot, restore, verify, switch).
    Migrate(MigrateArgs),
    /// Canary rollouts of a team's new spawns to another runtime.
    #[command(subcommand)]
    Rollout(RolloutCmd),
    /// Which runtimes are available on this machine, and why not; the state database.
    Doctor,
    /// The replicas sharing the daemon's store: leases and what each owns (admin).
    Replicas,
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Fault injection under load, then a tally; non-zero exit when anything is unaccounted for.
    Chaos(ChaosArgs),
    /// Configuration file tools.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// MicroVM guest images.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Kubernetes: render the manifests godel applies.
    #[command(subcommand)]
    Kube(KubeCmd),
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    #[arg(long)]
    pub team: Option<String>,
    /// First UTC day included (YYYY-MM-DD).
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long, default_value = "agent", value_parser = ["agent", "runtime", "day"])]
    pub by: String,
    /// table (default; `--json` means json), json or csv.
    #[arg(long, value_parser = ["table", "json", "csv"])]
    pub format: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum BudgetCmd {
    /// Set a team's (or one agent's) budget.
    Set {
        #[arg(long)]
        team: String,
        /// Limit in USD for the period.
        #[arg(long)]
        limit: f64,
        /// daily, weekly or monthly (default monthly).
        #[arg(long)]
        period: Option<String>,
        /// At 100 %: keep (default), snapshot-and-stop or stop the running agents.
        #[arg(long)]
        policy: Option<String>,
        /// A budget of this agent (sandbox id) alone.
        #[arg(long)]
        agent: Option<String>,
    },
    /// Budgets with their spend this period.
    Ls {
        #[arg(long)]
        team: Option<String>,
    },
    /// Remove a budget.
    Rm {
        #[arg(long)]
        team: String,
        #[arg(long)]
        agent: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Sandbox ids, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub agents: Vec<String>,
    /// Every running agent of this team.
    #[arg(long)]
    pub team: Option<String>,
    /// Only agents on this runtime.
    #[arg(long)]
    pub from: Option<String>,
    #[arg(long)]
    pub to: String,
    /// Print the plan and the estimated cost change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum RolloutCmd {
    /// Route a growing share of the team's new spawns to a runtime.
    Start {
        #[arg(long)]
        team: Option<String>,
        #[arg(long)]
        to: String,
        /// Where routing returns on rollback (default: the team's runtime).
        #[arg(long)]
        from: Option<String>,
        #[arg(long, default_value = "1,5,25,100")]
        steps: String,
        #[arg(long, default_value = "10m")]
        interval: String,
        #[arg(long, default_value = "2%")]
        max_error_rate: String,
        /// Spawns on the target in a step before its error rate counts.
        #[arg(long)]
        min_samples: Option<u64>,
    },
    /// Rollouts with per-step counters.
    Status {
        #[arg(long)]
        team: Option<String>,
    },
    /// Stop moving through the steps (the current share stays).
    Pause {
        #[arg(long)]
        team: String,
    },
    Resume {
        #[arg(long)]
        team: String,
    },
    /// Route every new spawn back to the previous runtime.
    Rollback {
        #[arg(long)]
        team: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Build (or reuse) a guest image: kernel, initramfs, ext4 root filesystem.
    Build {
        /// Image name (default `default`).
        #[arg(long)]
        name: Option<String>,
        /// Build the root file system from this directory.
        #[arg(long)]
        from_dir: Option<PathBuf>,
        /// Build it from an OCI image layout, `LAYOUT[:TAG]` (e.g. made by `skopeo copy ... oci:LAYOUT:TAG`).
        #[arg(long)]
        from_oci: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KubeCmd {
    /// Print every manifest godel applies for a team (multi-document YAML).
    Render {
        #[arg(long)]
        team: String,
        /// Print the agent Pod as godel would create it instead.
        #[arg(long)]
        pod_template: bool,
        /// Configuration file with a `[kube]` table (default: $GODEL_HOME/godel.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Load and validate a configuration file; names the bad key on error.
    Check {
        /// The file (default: $GODEL_HOME/godel.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Also listen on TCP (bearer token required), e.g. 127.0.0.1:7070.
    #[arg(long)]
    pub listen: Option<String>,
    /// Serve the E2B-compatible API on this address.
    #[arg(long)]
    pub e2b_listen: Option<String>,
    /// Domain of sandbox hosts on the E2B listener: port URLs are
    /// `<port>-<sandbox-id>.<domain>` (E2B's `get_host`).
    #[arg(long, default_value = "localhost")]
    pub e2b_domain: String,
    /// Configuration file (default: $GODEL_HOME/godel.toml if present).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Process isolation for local runtimes: `sandbox` (default) or `none` (trusted use only).
    #[arg(long)]
    pub isolation: Option<String>,
    /// On SIGTERM, snapshot and stop every running runtime; restore them on the next start.
    #[arg(long)]
    pub preserve: bool,
    /// Where the state lives: `postgres://user@host:port/db[?schema=NAME]`
    /// (shared by several replicas) or a SQLite path. Default: SQLite at
    /// $GODEL_HOME/godel.db (or `[database] url` in the config file).
    #[arg(long, env = "GODEL_DATABASE_URL")]
    pub database: Option<String>,
    /// The native API address other replicas forward requests to
    /// (default: http:// + --listen, with this machine's name for 0.0.0.0).
    #[arg(long)]
    pub advertise: Option<String>,
    /// The E2B API address other replicas forward E2B requests to
    /// (default: http:// + --e2b-listen).
    #[arg(long)]
    pub advertise_e2b: Option<String>,
    /// Seconds a replica's lease lasts without renewal; other replicas take
    /// over its sandboxes after it runs out (default 10).
    #[arg(long)]
    pub lease_secs: Option<f64>,
    /// This replica's id (default: kept in $GODEL_HOME/replica-id, made once).
    #[arg(long)]
    pub replica_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct SpawnArgs {
    /// Runtime: worktree, microvm, kata, e2b (default: the team's).
    #[arg(long)]
    pub runtime: Option<String>,
    /// Git repository (path) for the workspace.
    #[arg(long)]
    pub repo: Option<String>,
    /// Git ref (default HEAD).
    #[arg(long = "ref")]
    pub git_ref: Option<String>,
    #[arg(long)]
    pub team: Option<String>,
    /// CPU cores (0.5, 2, 500m).
    #[arg(long)]
    pub cpu: Option<String>,
    /// Memory (512Mi, 2Gi).
    #[arg(long)]
    pub memory: Option<String>,
    /// Disk (10Gi).
    #[arg(long)]
    pub disk: Option<String>,
    /// Image (microvm guest image or container image).
    #[arg(long)]
    pub image: Option<String>,
    /// Template (e2b, warm pools).
    #[arg(long)]
    pub template: Option<String>,
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    #[arg(long = "label", value_name = "K=V")]
    pub label: Vec<String>,
    /// Network: none (default) or nat.
    #[arg(long)]
    pub network: Option<String>,
    /// Egress allowlist for nat (CIDR or CIDR:PORT), repeatable.
    #[arg(long = "allow")]
    pub allow: Vec<String>,
    /// Egress to allow (IPv4 address or CIDR, optionally :PORT), repeatable;
    /// implies --network nat. Alone, nothing else is reachable.
    #[arg(long = "allow-out", value_name = "CIDR")]
    pub allow_out: Vec<String>,
    /// Egress to deny, repeatable; implies --network nat with the rest of
    /// the internet reachable (--allow-out entries are matched first).
    #[arg(long = "deny-out", value_name = "CIDR")]
    pub deny_out: Vec<String>,
    /// Isolation: sandbox (default) or none.
    #[arg(long)]
    pub isolation: Option<String>,
    /// Workspace: cow (default) or git-worktree.
    #[arg(long)]
    pub workspace: Option<String>,
    /// Spawn deadline in seconds.
    #[arg(long)]
    pub timeout: Option<u64>,
    /// When the team's quota is full, wait up to this many seconds in its fair queue.
    #[arg(long)]
    pub wait: Option<u64>,
    /// Restart policy: `never` or `on-failure` (brought back from its latest snapshot or re-created).
    #[arg(long)]
    pub restart: Option<String>,
    /// Time to live in seconds: then the sandbox is killed (or paused, with `--on-timeout pause`).
    #[arg(long)]
    pub ttl: Option<u64>,
    /// What happens when `--ttl` runs out: `kill` (default) or `pause` (snapshot and stop; `godel resume` brings it back).
    #[arg(long)]
    pub on_timeout: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    pub id: String,
    /// Kill the command after this many seconds (fractions allowed).
    #[arg(long)]
    pub timeout: Option<f64>,
    #[arg(long)]
    pub cwd: Option<String>,
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Send this process's stdin to the command.
    #[arg(long, short = 'i')]
    pub stdin: bool,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, required = true, allow_hyphen_values = true)]
    pub cmd: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCmd {
    /// Snapshot a runtime; prints the snapshot id last.
    Create {
        id: String,
        #[arg(long)]
        name: Option<String>,
    },
    /// List snapshots (of one runtime).
    Ls { id: Option<String> },
    /// Delete a snapshot.
    Rm { snapshot: String },
}

#[derive(Debug, Subcommand)]
pub enum TemplateCmd {
    /// Build a template from a Dockerfile (FROM host or a template, RUN,
    /// COPY/ADD, ENV, WORKDIR, ARG, USER root, CMD); prints its name last.
    Build {
        /// The Dockerfile (default: CONTEXT_DIR/Dockerfile).
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
        /// Template name (default: the context directory's name).
        #[arg(long)]
        name: Option<String>,
        /// Give RUN steps NAT network access (default: no network).
        #[arg(long)]
        network: bool,
        /// Team (admin tokens only; team tokens build for their own team).
        #[arg(long)]
        team: Option<String>,
        /// The build context: the directory COPY reads from.
        #[arg(default_value = ".")]
        context: PathBuf,
    },
    /// List templates.
    Ls,
    /// Remove a template (its layers stay as build cache).
    Rm { name: String },
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a token; prints it as the last line (shown once).
    Create {
        #[arg(long)]
        team: Option<String>,
        /// An admin token instead of a team token.
        #[arg(long)]
        admin: bool,
        /// The token's shape: `e2b` (`e2b_` + 40 hex, what every E2B SDK
        /// accepts; the default for team tokens) or `gdl` (`gdl_` + 48 hex;
        /// the default for admin tokens). Both work on every listener.
        #[arg(long, value_parser = ["e2b", "gdl"])]
        format: Option<String>,
    },
    Ls,
    /// Revoke a token (by value or id).
    Revoke {
        token: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TeamCmd {
    Create {
        name: String,
        #[arg(long)]
        max_agents: Option<u64>,
        #[arg(long)]
        max_cpu: Option<String>,
        #[arg(long)]
        max_memory: Option<String>,
        #[arg(long)]
        max_disk: Option<String>,
        /// Default runtime for the team.
        #[arg(long)]
        runtime: Option<String>,
        /// Fallback chain, comma separated.
        #[arg(long, value_delimiter = ',')]
        fallback: Vec<String>,
    },
    Ls,
    Rm {
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Spawn/exec latency through the API against a `git worktree add` baseline.
    Spawn(BenchSpawnArgs),
    /// Sandboxed exec/spawn latency against bwrap and no isolation.
    Sandbox {
        #[arg(long, short = 'n', default_value_t = 200)]
        iterations: usize,
    },
    /// MicroVM boot, restore, warm claim, exec, files, forks, density (TCG or KVM).
    Microvm {
        #[arg(long, default_value_t = 5)]
        samples: usize,
        #[arg(long, default_value_t = 10)]
        forks: usize,
        /// Idle VMs to keep alive at once (0 skips the density test).
        #[arg(long, default_value_t = 200)]
        idle: usize,
    },
    /// Usage report latency over a seeded history (1,000 agents × 30 days).
    Usage {
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        #[arg(long, default_value_t = 30)]
        days: usize,
        #[arg(long, short = 'n', default_value_t = 50)]
        iterations: usize,
    },
    /// Exec `true` through a real daemon against host `sh -c true`.
    Exec(BenchExecArgs),
    /// File write + read through a real daemon against the host file system.
    Files(BenchFilesArgs),
    /// List/status/exec latency at a request rate with N live agents.
    Api(BenchApiArgs),
    /// N agents alive at once: spawn, API load, exec in all, teardown; RSS and CPU.
    Scale(BenchScaleArgs),
    /// Render the latest results as docs/benchmarks/<name>.md with SVG plots.
    Report(BenchReportArgs),
    /// First byte through a port URL vs direct in the sandbox's namespace.
    Ports {
        #[arg(long, short = 'n', default_value_t = 200)]
        iterations: usize,
    },
    /// Template builds from a Dockerfile, cold and cached, vs the same RUNs as one exec.
    Template {
        #[arg(long, short = 'n', default_value_t = 10)]
        iterations: usize,
    },
    /// Three replicas over PostgreSQL: owner vs forwarded latency, take-over after SIGKILL.
    Replicas(BenchReplicasArgs),
    /// godel's own overhead per pod spawn against the in-repo fake API server.
    Kube {
        #[arg(long, default_value_t = 1000)]
        pods: usize,
        #[arg(long, default_value_t = 1000)]
        concurrency: usize,
    },
}

#[derive(Debug, Args)]
pub struct BenchSpawnArgs {
    #[arg(long, default_value = "worktree")]
    pub runtime: String,
    /// Files in the generated repository.
    #[arg(long, default_value_t = 10_000)]
    pub files: usize,
    /// Spawn iterations.
    #[arg(long, short = 'n', default_value_t = 30)]
    pub iterations: usize,
    /// Exec iterations.
    #[arg(long, default_value_t = 200)]
    pub execs: usize,
    /// Baseline iterations (`git worktree add` + `sh -c true` + remove).
    #[arg(long, default_value_t = 10)]
    pub baseline: usize,
    /// Isolation for the spawned runtimes: sandbox or none.
    #[arg(long, default_value = "sandbox")]
    pub isolation: String,
    /// Forks of one snapshot in one request (`godel fork SNAP -n N`); 0 skips.
    #[arg(long, default_value_t = 50)]
    pub forks: usize,
    /// Workspace mode: cow or git-worktree.
    #[arg(long, default_value = "cow")]
    pub workspace: String,
}

/// Flags of the benchmarks that start their own `godel serve`.
#[derive(Debug, Args)]
pub struct BenchDaemonArgs {
    /// Isolation of the daemon's local runtimes: sandbox or none.
    #[arg(long, default_value = "sandbox")]
    pub isolation: String,
    /// Files in the generated repository.
    #[arg(long, default_value_t = 100)]
    pub files: usize,
}

#[derive(Debug, Args)]
pub struct BenchExecArgs {
    #[command(flatten)]
    pub daemon: BenchDaemonArgs,
    #[arg(long, short = 'n', default_value_t = 200)]
    pub iterations: usize,
}

#[derive(Debug, Args)]
pub struct BenchFilesArgs {
    #[command(flatten)]
    pub daemon: BenchDaemonArgs,
    #[arg(long, short = 'n', default_value_t = 100)]
    pub iterations: usize,
    /// Bytes per file.
    #[arg(long, default_value_t = 1 << 20)]
    pub size: usize,
}

#[derive(Debug, Args)]
pub struct BenchApiArgs {
    #[command(flatten)]
    pub daemon: BenchDaemonArgs,
    /// Live agents.
    #[arg(long, short = 'n', default_value_t = 50)]
    pub agents: usize,
    /// Requests per second (list 10 %, status 45 %, exec 45 %; health on top).
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    #[arg(long, default_value_t = 10.0)]
    pub secs: f64,
}

#[derive(Debug, Args)]
pub struct BenchScaleArgs {
    #[command(flatten)]
    pub daemon: BenchDaemonArgs,
    /// worktree or microvm.
    #[arg(long, default_value = "worktree")]
    pub runtime: String,
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub agents: usize,
    /// Spawns in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Seconds of API load with all agents alive.
    #[arg(long, default_value_t = 20.0)]
    pub secs: f64,
    /// Stop spawning after this many seconds.
    #[arg(long, default_value_t = 1800)]
    pub spawn_timeout: u64,
    /// Built microVM images to use (default ~/.godel/images, else built).
    #[arg(long)]
    pub images: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchReplicasArgs {
    /// Samples per path (spawn, status, exec; owner and forwarded each).
    #[arg(long, short = 'n', default_value_t = 200)]
    pub samples: usize,
    /// PostgreSQL URL (default: $GODEL_TEST_POSTGRES_URL); the run uses a
    /// fresh schema in it and drops it at the end.
    #[arg(long)]
    pub database: Option<String>,
    /// The replicas' lease, seconds.
    #[arg(long, default_value_t = 2.0)]
    pub lease_secs: f64,
    /// Take-over rounds (replica A restarted between them).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Isolation of the replicas' local runtimes: sandbox or none.
    #[arg(long, default_value = "sandbox")]
    pub isolation: String,
}

#[derive(Debug, Args)]
pub struct BenchReportArgs {
    /// The report's name: docs/benchmarks/<name>.md.
    #[arg(long, default_value = "latest")]
    pub name: String,
    /// Output directory.
    #[arg(long, default_value = "docs/benchmarks")]
    pub out: PathBuf,
}

/// `godel chaos`: faults under load, then the tally.
#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// The bounded CI mode (a few minutes, fewer agents).
    #[arg(long)]
    pub short: bool,
    /// Agents to run through the faults (default 12 short, 60 full).
    #[arg(long, short = 'n')]
    pub agents: Option<usize>,
    /// Isolation of the daemon's local runtimes: sandbox or none.
    #[arg(long, default_value = "sandbox")]
    pub isolation: String,
    /// Built microVM images for the VM faults (default ~/.godel/images); none skips them.
    #[arg(long)]
    pub images: Option<PathBuf>,
}
