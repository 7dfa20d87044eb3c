//! The `sip-account` commands: softphone subscribers (PC-to-phone) made, shown, blocked,
//! barred, given a new password and removed by the same staff and against the same database
//! as the cards they spend from. A password is shown once, when it is set; the store keeps
//! only its digest HA1s.

use anyhow::{anyhow, Context, Result};
use chrono::Utc;
use clap::Subcommand;
use rating::store::{random_password, NewSipAccount, SipAccount, SipStatus};
use rating::{Store, StoreConfig};
use std::process::ExitCode;

/// Who the command line is, in the accounts' `updated_by`.
const BY: &str = "cli";

/// `sip-account …`
#[derive(Subcommand)]
pub enum SipAccountCommand {
    /// Create a SIP account that spends from a card; without --password one is drawn and
    /// shown once.
    Create {
        /// USER@DOMAIN (the domain is ours, and the digest realm).
        aor: String,
        /// The card it spends from.
        #[arg(long)]
        card: String,
        #[arg(long)]
        password: Option<String>,
        /// The number presented on its calls (digits, optionally after +).
        #[arg(long)]
        caller_id: Option<String>,
        /// Its calls at once (the card's own limit applies too).
        #[arg(long, default_value_t = 1)]
        max_calls: i64,
    },
    /// One account, and where it is registered.
    Show { aor: String },
    /// Accounts, all of them or one card's or one tenant's.
    List {
        #[arg(long, conflicts_with = "tenant")]
        card: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Refuse its REGISTERs and calls (403); its registrations end now.
    Block { aor: String },
    /// Allow it again.
    Unblock { aor: String },
    /// A new password (drawn and shown once without --password); the old one stops working.
    Password {
        aor: String,
        #[arg(long)]
        password: Option<String>,
    },
    /// Call barring: international and premium-rate calls, each on or off.
    Bar {
        aor: String,
        #[arg(long)]
        international: Option<OnOff>,
        #[arg(long)]
        premium: Option<OnOff>,
    },
    /// Remove the account and its registrations (its card and money stay).
    Delete { aor: String },
}

/// A barring flag on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

impl OnOff {
    fn on(self) -> bool {
        matches!(self, OnOff::On)
    }
}

/// `USER@DOMAIN`, split.
fn split_aor(aor: &str) -> Result<(&str, &str)> {
    let (user, domain) = aor
        .split_once('@')
        .ok_or_else(|| anyhow!("`{aor}` is not USER@DOMAIN"))?;
    rating::store::check_sip_username(user)?;
    rating::store::check_sip_domain(domain)?;
    Ok((user, domain))
}

fn print_sip(s: &SipAccount) {
    println!("sip account   {}", s.aor());
    println!(
        "status        {}",
        match s.status {
            SipStatus::Active => "active",
            SipStatus::Blocked => "blocked",
        }
    );
    println!("card          {} (tenant {})", s.card, s.tenant);
    println!(
        "caller id     {}",
        s.caller_id.as_deref().unwrap_or("(the carrier's default)")
    );
    println!("max calls     {}", s.max_calls);
    let barred: Vec<&str> = [
        (s.bar_international, "international"),
        (s.bar_premium, "premium"),
    ]
    .into_iter()
    .filter_map(|(on, what)| on.then_some(what))
    .collect();
    println!(
        "barred        {}",
        if barred.is_empty() {
            "nothing".to_string()
        } else {
            barred.join(", ")
        }
    );
    println!(
        "changed       {} by {}",
        s.updated_at.format("%Y-%m-%d %H:%M:%S UTC"),
        s.updated_by
    );
}

/// Runs one `sip-account` command.
pub async fn sip_account(db: &str, cmd: SipAccountCommand) -> Result<ExitCode> {
    let store = Store::open(db, StoreConfig::default())
        .await
        .with_context(|| format!("opening {db}"))?;
    let now = Utc::now();
    match cmd {
        SipAccountCommand::Create {
            aor,
            card,
            password,
            caller_id,
            max_calls,
        } => {
            let (user, domain) = split_aor(&aor)?;
            let drawn = password.is_none();
            let password = password.unwrap_or_else(random_password);
            let n = NewSipAccount {
                username: user.into(),
                domain: domain.into(),
                password: password.clone(),
                card,
                caller_id,
                max_calls,
            };
            let s = store.create_sip_account(&n, BY, now).await?;
            println!("created sip account {}", s.aor());
            print_sip(&s);
            if drawn {
                println!("password      {password}   (shown only now)");
            }
        }
        SipAccountCommand::Show { aor } => {
            let (user, domain) = split_aor(&aor)?;
            let s = store
                .sip_account(user, domain)
                .await?
                .ok_or_else(|| anyhow!("no SIP account {aor}"))?;
            print_sip(&s);
            let bindings = store.bindings(s.id, now).await?;
            if bindings.is_empty() {
                println!("registered    no");
            }
            for b in bindings {
                println!(
                    "registered    {} from {} until {}",
                    b.contact,
                    b.source,
                    b.expires_at.format("%Y-%m-%d %H:%M:%S UTC")
                );
            }
        }
        SipAccountCommand::List { card, tenant } => {
            let all = match card {
                Some(c) => store.sip_accounts_of_card(&c).await?,
                None => store.sip_accounts(tenant.as_deref()).await?,
            };
            for s in &all {
                println!(
                    "{:<40} {:<8} card {} tenant {}",
                    s.aor(),
                    match s.status {
                        SipStatus::Active => "active",
                        SipStatus::Blocked => "blocked",
                    },
                    s.card,
                    s.tenant
                );
            }
            println!("{} SIP accounts", all.len());
        }
        SipAccountCommand::Block { aor } => {
            let (user, domain) = split_aor(&aor)?;
            store.set_sip_blocked(user, domain, true, BY, now).await?;
            println!("sip account {aor} blocked");
        }
        SipAccountCommand::Unblock { aor } => {
            let (user, domain) = split_aor(&aor)?;
            store.set_sip_blocked(user, domain, false, BY, now).await?;
            println!("sip account {aor} unblocked");
        }
        SipAccountCommand::Password { aor, password } => {
            let (user, domain) = split_aor(&aor)?;
            let drawn = password.is_none();
            let password = password.unwrap_or_else(random_password);
            store
                .set_sip_password(user, domain, &password, BY, now)
                .await?;
            println!("sip account {aor} has a new password");
            if drawn {
                println!("password      {password}   (shown only now)");
            }
        }
        SipAccountCommand::Bar {
            aor,
            international,
            premium,
        } => {
            let (user, domain) = split_aor(&aor)?;
            if international.is_none() && premium.is_none() {
                return Err(anyhow!(
                    "say what to bar: --international on|off and/or --premium on|off"
                ));
            }
            let s = store
                .set_sip_barring(
                    user,
                    domain,
                    international.map(OnOff::on),
                    premium.map(OnOff::on),
                    BY,
                    now,
                )
                .await?;
            print_sip(&s);
        }
        SipAccountCommand::Delete { aor } => {
            let (user, domain) = split_aor(&aor)?;
            match store.delete_sip_account(user, domain).await? {
                Some(_) => println!("sip account {aor} deleted"),
                None => return Err(anyhow!("no SIP account {aor}")),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
