//! `b2bua serve` and `b2bua config check`: loading the configuration, opening the store,
//! starting the engine, and the housekeeping (heartbeat, sweeper) around it.

use anyhow::{Context, Result};
use b2bua::config::Config;
use b2bua::routing::Proto;
use chrono::Utc;
use clap::{Args, Subcommand};
use rating::{Store, StoreConfig};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Options for `serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// YAML configuration (see b2bua.example.yaml). Without it: the embedded demo.
    #[arg(long)]
    config: Option<PathBuf>,
    /// This node's name in reservations (default: the configuration's, else random per start).
    #[arg(long)]
    node_id: Option<String>,
}

/// `config …`
#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file; every error names its line and key.
    Check {
        /// The YAML file.
        file: PathBuf,
    },
}

/// `flows …`
#[derive(Subcommand)]
pub enum FlowsCommand {
    /// Validate IVR flows; every error names its file, line and state.
    Check {
        /// A directory of `*.yaml` flows, or one flow file (default: `flows`).
        #[arg(default_value = "flows")]
        path: PathBuf,
        /// A prompt-set directory (`<lang>/<lang>_<name>.au`) whose prompts the flows may
        /// play (default: the shipped catalogue).
        #[arg(long)]
        prompts: Option<PathBuf>,
    },
}

/// `flows check`: one line per flow, or every mistake and exit 1.
pub fn flows(cmd: FlowsCommand) -> Result<ExitCode> {
    let FlowsCommand::Check { path, prompts } = cmd;
    let names = match prompts {
        Some(dir) => {
            let (set, report) =
                prompts::set::PromptSet::load(&dir).map_err(|e| anyhow::anyhow!("{e}"))?;
            for e in &report.errors {
                eprintln!("warning: {e}");
            }
            let mut names = std::collections::HashSet::new();
            for lang in set.languages() {
                let Some(l) = prompts::say::Lang::from_code(lang) else {
                    continue;
                };
                for n in prompts::catalogue::names(l) {
                    if set.get(lang, n).is_some() {
                        names.insert(n.to_string());
                    }
                }
            }
            names
        }
        None => ivr::catalogue_prompts(),
    };
    let loaded = if path.is_dir() {
        ivr::load_dir(&path, &names)
    } else {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        ivr::Flow::parse(&text, &path.display().to_string(), &names)
            .map(|f| vec![f])
            .map_err(|e| vec![e])
    };
    match loaded {
        Ok(flows) => {
            for f in &flows {
                println!("{}: ok ({} states)", f.name, f.states.len());
            }
            if flows.is_empty() {
                anyhow::bail!("no flows (*.yaml) in {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            let all: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            Err(anyhow::anyhow!("{}", all.join("\n")))
        }
    }
}

/// `config check FILE`: prints a summary, or fails with one line per mistake.
pub fn config(cmd: ConfigCommand) -> Result<ExitCode> {
    match cmd {
        ConfigCommand::Check { file } => match Config::load(&file) {
            Ok(c) => {
                println!(
                    "{}: ok ({} listen addresses, {} access numbers, {} gateways, {} routes)",
                    file.display(),
                    c.listen.len(),
                    c.access_numbers.len(),
                    c.router.gateways.len(),
                    c.router.routes.len()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => Err(anyhow::anyhow!("{e}")),
        },
    }
}

/// Runs the service until Ctrl-C.
pub async fn serve(db: &str, db_from_cli: bool, args: ServeArgs) -> Result<ExitCode> {
    // Installed first, so that a critical task failing at any point afterwards stops us.
    let mut watchdog = b2bua::supervise::watchdog().context("a second watchdog")?;
    let demo = args.config.is_none();
    let cfg = match &args.config {
        Some(path) => Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => Config::demo(),
    };
    let db = match (&cfg.database, db_from_cli) {
        (Some(d), false) => d.clone(),
        _ => db.to_string(),
    };
    let mut store_cfg = StoreConfig::default();
    if let Some(id) = args.node_id.clone().or(cfg.node_id.clone()) {
        store_cfg.node_id = id;
    }
    store_cfg.chunk_seconds = cfg.calls.hold_chunk.as_secs();
    store_cfg.reservation_grace = cfg.calls.hold_grace;
    store_cfg.group_commit = cfg.store.group_commit;
    store_cfg.batch_max = cfg.store.batch_max;
    store_cfg.batch_delay = cfg.store.batch_delay;
    store_cfg.writer_queue = cfg.store.writer_queue;
    store_cfg.writers = cfg.store.writers;
    // Calls this node sweeps for a dead one get the Stop records the dead node never wrote.
    store_cfg.account_swept_calls = cfg.radius_accounting.is_some();
    let store = Arc::new(
        Store::open(&db, store_cfg)
            .await
            .with_context(|| format!("opening {db}"))?,
    );
    let now = Utc::now();
    // Calls this node had up in its last life (it crashed, or was killed) ended with it; they
    // must not count against their subscribers' calls at once any longer.
    let gone = store
        .forget_own_sip_calls()
        .await
        .context("forgetting the subscriber calls of this node's last run")?;
    if gone > 0 {
        tracing::info!(
            calls = gone,
            "forgot subscriber calls this node had before it started"
        );
    }
    if demo && rating::demo::seed(&store, now).await? {
        println!("created the demo data in {db}");
    }
    let running = b2bua::engine::start(cfg.clone(), store.clone())
        .await
        .context("starting the engine (prompt sets, flows, sockets)")?;
    println!("b2bua serving on {db} as {}", store.config().node_id);
    for (proto, addr) in &running.bound {
        println!("  SIP {proto} on {addr}");
    }
    let aaa = match &cfg.radius_server {
        Some(r) => {
            let aaa = b2bua::radius::start(r, store.clone())
                .await
                .with_context(|| format!("binding the RADIUS sockets {} and {}", r.auth, r.acct))?;
            println!(
                "  RADIUS AAA server: auth {}, accounting {}",
                aaa.auth, aaa.acct
            );
            Some(aaa)
        }
        None => None,
    };
    let acct = match &cfg.radius_accounting {
        Some(a) => {
            let client = b2bua::radius_acct::start(a, store.clone())
                .await
                .with_context(|| {
                    format!("opening the RADIUS accounting socket toward {}", a.server)
                })?;
            println!("  RADIUS accounting to {} from {}", a.server, client.local);
            Some(client)
        }
        None => None,
    };
    let admin = match &cfg.admin {
        Some(a) => {
            let mut tokens = a.tokens.clone();
            if tokens.is_empty() {
                // No tokens configured (the demo): one admin token for this run, printed once.
                let token: String = (0..32)
                    .map(|_| char::from(b"0123456789abcdef"[rand::random_range(0..16usize)]))
                    .collect();
                println!("  admin token for this run (role admin): {token}");
                tokens.push(("startup-admin".into(), b2bua::config::Role::Admin, token));
            }
            let server = b2bua::admin::start(
                a,
                tokens,
                store.clone(),
                running.assets.clone(),
                running.gateways.clone(),
            )
            .await
            .with_context(|| format!("binding the admin API on {}", a.listen))?;
            println!("  admin API on http://{}/api/v1/", server.addr);
            println!(
                "  metrics on http://{}/metrics ({})",
                server.metrics,
                if a.metrics_token.is_some() {
                    "bearer token admin.metrics_token"
                } else {
                    "open to whoever reaches that address: keep it private, or set admin.metrics_token"
                }
            );
            println!(
                "  finance console on http://{}/console (sign in with a token)",
                server.addr
            );
            Some(server)
        }
        None => None,
    };
    if demo {
        if let Ok(c) = store.account(rating::demo::CARD).await {
            println!(
                "demo card {} (PIN {}): {} {} available",
                c.account,
                rating::demo::PIN,
                c.available(),
                c.currency
            );
            let q = store.quote(&c.account, "5555233", now).await?;
            println!(
                "  to 5555233 it buys {} s; try: b2bua rate {} 5555233",
                q.credit_time, c.account
            );
        }
        if let Ok(c) = store.account(rating::demo::PINLESS).await {
            println!(
                "pinless account {} (its caller number): {} {} available",
                c.account,
                c.available(),
                c.currency
            );
        }
        let sip = running
            .addr(Proto::Udp)
            .map(|a| a.to_string())
            .unwrap_or_default();
        println!("place a test call (pinless: access number 5551201, then the destination):");
        println!("  sipp -sn uas -i 127.0.0.1 -p 5062 &                     # the demo gateway");
        println!("  sipp -sf tests/sipp/uac_pinless.xml -key ani 4085551234 -s 55512015555233 -m 1 {sip}");
        println!(
            "access numbers 5551200 (English) and 5551202 (language menu) run the debit-card IVR:"
        );
        println!(
            "  card 000070, PIN 1234 as RFC 4733 digits, then the destination (5555233) and #"
        );
    }
    println!("press Ctrl-C to stop");
    // systemd and kill stop us with SIGTERM: end calls and settle them as for Ctrl-C.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    // The heartbeat must come well within the grace, or live nodes would look dead; the same
    // tick picks up access numbers changed on other nodes.
    let beat = Duration::from_secs(5).min(cfg.calls.hold_grace / 3);
    let mut tick = tokio::time::interval(beat);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = Utc::now();
                if let Err(e) = store.heartbeat(now).await {
                    tracing::warn!(error = %e, "heartbeat failed");
                }
                // Access numbers another node's API changed (this node's own apply at once).
                if let Err(e) = running.assets.refresh_access(&store).await {
                    tracing::warn!(error = %e, "reading the access numbers failed; keeping the last ones");
                }
                match store.sweep(now).await {
                    Ok(r) if r.settled + r.released > 0 => tracing::info!(settled = r.settled, released = r.released, "swept abandoned reservations"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "sweep failed"),
                }
                match store.sweep_sip_calls(now).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(calls = n, "forgot subscriber calls of nodes that stopped"),
                    Err(e) => tracing::warn!(error = %e, "sweeping subscriber calls failed"),
                }
                // Closed days into the report summaries, a few at a time (a backlog of years
                // is worked off over a minute or so, never holding the heartbeat up long).
                match store.roll_up(now, 3).await {
                    Ok(0) => {}
                    Ok(days) => tracing::info!(days, "rolled up closed days for the reports"),
                    Err(e) => tracing::warn!(error = %e, "rolling up the reports failed"),
                }
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            Some(failure) = watchdog.recv() => {
                // Calls cannot be ended cleanly without the task that died: exit at once and
                // let the supervisor restart us; the holds of our calls are swept by the next
                // sweeper (ours after the restart, or another node's) once the grace is over.
                eprintln!("error: {failure}; exiting so that the supervisor restarts the service");
                std::process::exit(70);
            }
        }
    }
    b2bua::supervise::stopping();
    let stats = running.stop().await;
    if let Some(aaa) = aaa {
        aaa.stop().await;
    }
    if let Some(acct) = acct {
        acct.stop().await;
    }
    if let Some(admin) = admin {
        admin.stop().await;
    }
    println!(
        "stopped after {} calls ({} answered, {} cut off by credit)",
        stats.calls, stats.answered, stats.cutoffs
    );
    store.close().await;
    Ok(ExitCode::SUCCESS)
}
