//! `mecctl`: the mecplane command-line client. Parses the command line, finds the API (see
//! [`config`]), runs the subcommand (see [`commands`]) and exits with the code a script can rely
//! on (see [`exit`] and `mecctl --help`).

mod cli;
mod client;
mod commands;
mod config;
mod dashboard;
mod exit;
mod kubeconfig;
mod output;
mod tfvars;

use clap::Parser;

use cli::{Cli, Command};
use commands::Ctx;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    if let Err(failure) = run(cli).await {
        eprintln!("mecctl: {failure}");
        std::process::exit(failure.code);
    }
}

async fn run(cli: Cli) -> Result<(), exit::Failure> {
    // A dry run sends nothing, so it needs no endpoint.
    if let Command::Create(args) = &cli.command {
        if args.dry_run {
            return commands::create_dry_run(args);
        }
    }
    let sources = config::Sources::load(
        cli.endpoint.clone(),
        cli.api_region.clone(),
        cli.config.clone(),
        cli.env_file.clone().or_else(|| {
            cli.local
                .then(|| std::path::PathBuf::from(".mecplane").join("local.env"))
        }),
    )?;
    let has_env_credentials = std::env::var_os("AWS_ACCESS_KEY_ID").is_some()
        || std::env::var_os("AWS_PROFILE").is_some();
    let target = sources.resolve(has_env_credentials)?;
    let ctx = Ctx {
        api: client::ApiClient::new(target).await?,
        format: cli.output,
    };
    match &cli.command {
        Command::Create(args) => commands::create(&ctx, args).await,
        Command::List(args) => commands::list(&ctx, args).await,
        Command::Get(args) => commands::get(&ctx, args).await,
        Command::Delete(args) => commands::delete(&ctx, args).await,
        Command::Scale(args) => commands::scale(&ctx, args).await,
        Command::Upgrade(args) => commands::upgrade(&ctx, args).await,
        Command::Addons(args) => commands::addons(&ctx, args).await,
        Command::Expose(args) => commands::expose(&ctx, args).await,
        Command::ReplaceNode(args) => commands::replace_node(&ctx, args).await,
        Command::Updates(args) => commands::updates(&ctx, args).await,
        Command::Reconcile(args) => commands::reconcile(&ctx, args).await,
        Command::Events(args) => commands::events(&ctx, args).await,
        Command::Kubeconfig(args) => commands::kubeconfig(&ctx, args).await,
        Command::Wait(args) => commands::wait(&ctx, args).await,
        Command::Dashboard(args) => dashboard::run(ctx.api, args).await,
    }
}
