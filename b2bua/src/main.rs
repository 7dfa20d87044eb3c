//! `b2bua`: the calling-card B2BUA daemon (`serve`) and the command line finance staff and
//! operators use against the same database (cards, top-ups, ledgers, rate decks).

mod daemon;
mod finance;
mod subscribers;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// The prepaid calling-card B2BUA and its finance tools.
#[derive(Parser)]
#[command(name = "b2bua", version, about)]
struct Cli {
    /// Database URL: sqlite://FILE (created if missing) or postgres://USER@HOST/DB.
    #[arg(
        long,
        global = true,
        env = "B2BUA_DB",
        default_value = "sqlite://b2bua.db"
    )]
    db: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (with no configuration: the embedded demo on SQLite).
    Serve(daemon::ServeArgs),
    /// Check a configuration file.
    Config {
        #[command(subcommand)]
        command: daemon::ConfigCommand,
    },
    /// Check IVR flows.
    Flows {
        #[command(subcommand)]
        command: daemon::FlowsCommand,
    },
    /// Create, inspect, block and unblock cards.
    Card {
        #[command(subcommand)]
        command: finance::CardCommand,
    },
    /// Add money to a card, once per reference.
    Topup(finance::TopupArgs),
    /// Correct a card's balance (either sign), once per reference.
    Adjust(finance::AdjustArgs),
    /// Refund money to a card, once per reference.
    Refund(finance::TopupArgs),
    /// A card's ledger, or `ledger check` to prove every balance against its ledger.
    Ledger(finance::LedgerArgs),
    /// Import rate decks and the blocked and toll-free prefix lists.
    Rates {
        #[command(subcommand)]
        command: finance::RatesCommand,
    },
    /// The rate row that applies to a destination and the credit time a card would get now.
    Rate(finance::RateArgs),
    /// Call records and refused attempts, newest first.
    Records(finance::RecordsArgs),
    /// Softphone subscribers: SIP accounts that spend from a card.
    SipAccount {
        #[command(subcommand)]
        command: subscribers::SipAccountCommand,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let db_from_cli = matches!(
        matches.value_source("db"),
        Some(clap::parser::ValueSource::CommandLine | clap::parser::ValueSource::EnvVariable)
    );
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    b2bua::logging::init();
    let result = match cli.command {
        Command::Serve(a) => daemon::serve(&cli.db, db_from_cli, a).await,
        Command::Config { command } => daemon::config(command),
        Command::Flows { command } => daemon::flows(command),
        Command::Card { command } => finance::card(&cli.db, command).await,
        Command::Topup(a) => finance::topup(&cli.db, a, rating::store::LedgerKind::TopUp).await,
        Command::Refund(a) => finance::topup(&cli.db, a, rating::store::LedgerKind::Refund).await,
        Command::Adjust(a) => finance::adjust(&cli.db, a).await,
        Command::Ledger(a) => finance::ledger(&cli.db, a).await,
        Command::Rates { command } => finance::rates(&cli.db, command).await,
        Command::Rate(a) => finance::rate(&cli.db, a).await,
        Command::Records(a) => finance::records(&cli.db, a).await,
        Command::SipAccount { command } => subscribers::sip_account(&cli.db, command).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
