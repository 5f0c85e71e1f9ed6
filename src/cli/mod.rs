//! The `switchyard` command line: one file per subcommand, each an argument struct and a `run`.
//! The binary's only place for `anyhow`.

use clap::{Parser, Subcommand};

mod api;
mod campaign;
mod check_config;
mod demo;
mod migrate;
mod policy;
mod run;
mod token;

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Remote connect / disconnect orchestration for electric utilities"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the service (embedded defaults when no --config is given).
    Run(run::RunArgs),
    /// Generate a synthetic day into embedded Kafka, run it to completion, print a summary.
    Demo(demo::DemoArgs),
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCmd,
    },
    /// Campaign tools.
    Campaign {
        #[command(subcommand)]
        command: CampaignCmd,
    },
    /// Load and validate a config file, print the effective configuration as TOML.
    CheckConfig(check_config::CheckConfigArgs),
    /// Create the ScyllaDB keyspace and apply the schema migrations not applied yet
    /// (store.backend = "scylla"; nothing to do for the embedded store).
    Migrate(migrate::MigrateArgs),
    /// Operator API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCmd,
    },
    /// Orders through the operator API (token in SWITCHYARD_TOKEN).
    Orders {
        #[command(flatten)]
        api: api::ApiArgs,
        #[command(subcommand)]
        command: api::OrdersCmd,
    },
    /// The approvals queue through the operator API (token in SWITCHYARD_TOKEN).
    Approvals {
        #[command(flatten)]
        api: api::ApiArgs,
        #[command(subcommand)]
        command: api::ApprovalsCmd,
    },
    /// Campaigns through the operator API (token in SWITCHYARD_TOKEN).
    Campaigns {
        #[command(flatten)]
        api: api::ApiArgs,
        #[command(subcommand)]
        command: api::CampaignsCmd,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Read a token from stdin and print its `http.auth` entry (`name:role:sha256-hex`).
    Hash(token::HashArgs),
}

#[derive(Subcommand)]
enum CampaignCmd {
    /// Print a campaign's schedule (per day, hour and zone, expected finish, what policy holds
    /// today and why) and optionally draw it against the call-center capacity.
    Plan(campaign::PlanArgs),
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Print the decision for one order and the rule trace behind it.
    Explain(policy::ExplainArgs),
}

/// Parses the command line and runs the subcommand.
pub(crate) fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Run(a) => run::run(a),
        Cmd::Demo(a) => demo::run(a),
        Cmd::Policy {
            command: PolicyCmd::Explain(a),
        } => policy::run(a),
        Cmd::Campaign {
            command: CampaignCmd::Plan(a),
        } => campaign::run(a),
        Cmd::CheckConfig(a) => check_config::run(a),
        Cmd::Migrate(a) => migrate::run(a),
        Cmd::Token {
            command: TokenCmd::Hash(a),
        } => token::hash(a),
        Cmd::Orders { api, command } => api::orders(api, command),
        Cmd::Approvals { api, command } => api::approvals(api, command),
        Cmd::Campaigns { api, command } => api::campaigns(api, command),
    }
}
