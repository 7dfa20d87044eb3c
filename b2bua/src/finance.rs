//! The finance and operator commands: each opens the store, does one thing, and prints a
//! result a clerk can read. Errors come back to `main`, which prints them as one line.

use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use rating::batch::{draw_cards, expires_after, last_day, write_batch_csv};
use rating::deck::{parse_prefix_csv, parse_rates_csv};
use rating::store::{Account, LedgerKind, NewAccount, NewBatch, Posting, RecordFilter, Redirect};
use rating::{Money, ReturnCode, Store, StoreConfig};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

async fn open(db: &str) -> Result<Store> {
    Store::open(db, StoreConfig::default())
        .await
        .with_context(|| format!("opening {db}"))
}

fn amount(text: &str) -> Result<Money> {
    Money::parse_positive(text).map_err(|e| anyhow!("amount {e}"))
}

/// `--expires YYYY-MM-DD`: the card works through the end of that day (UTC).
fn expiry(text: &str) -> Result<DateTime<Utc>> {
    expires_after(text).map_err(|e| anyhow!("--expires '{text}' {e}"))
}

/// `card …`
#[derive(Subcommand)]
pub enum CardCommand {
    /// Create one card.
    Create {
        account: String,
        #[arg(long)]
        pin: Option<String>,
        #[arg(long, default_value = "0")]
        balance: String,
        #[arg(long, default_value = "USD")]
        currency: String,
        #[arg(long, default_value = "en")]
        language: String,
        /// Last day the card works (UTC), YYYY-MM-DD.
        #[arg(long)]
        expires: Option<String>,
        #[arg(long, default_value_t = 1)]
        max_calls: i64,
        #[arg(long, default_value = "default")]
        tenant: String,
        #[arg(long, default_value = "0")]
        credit_limit: String,
        /// Authorized by calling number (the account is the ANI); no PIN needed.
        #[arg(long)]
        pinless: bool,
        /// Usable on every tenant's access numbers (by default only on its own tenant's).
        #[arg(long)]
        any_tenant: bool,
    },
    /// Create many cards with random numbers and PINs; the CSV is the only copy of the PINs.
    Batch(BatchSpec),
    /// Balance, holds, status and expiry of a card.
    Show { account: String },
    /// Refuse every call on the card (return code 7).
    Block { account: String },
    /// Allow calls again (also clears a wrong-PIN lock).
    Unblock { account: String },
    /// Send the card's callers to customer service (52) or every call to one number (51),
    /// free of charge; `--clear` returns the card to normal.
    Redirect {
        account: String,
        /// `customer-service` (return code 52) or `called-party` (51, a hotline card).
        #[arg(long, value_enum, required_unless_present = "clear")]
        to: Option<RedirectKind>,
        /// The number the calls are connected to.
        #[arg(long, required_unless_present = "clear")]
        number: Option<String>,
        #[arg(long, conflicts_with_all = ["to", "number"])]
        clear: bool,
    },
}

/// Where `card redirect` sends a card's calls.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RedirectKind {
    CustomerService,
    CalledParty,
}

fn print_account(a: &Account) {
    let c = &a.currency;
    println!("account       {}", a.account);
    println!("status        {}", a.status.as_str());
    println!("balance       {} {c}", a.balance);
    println!(
        "reserved      {} {c} ({} of {} calls running)",
        a.reserved, a.active_calls, a.max_calls
    );
    println!("available     {} {c}", a.available());
    println!("credit limit  {} {c}", a.credit_limit);
    let last = last_day(a.expires_at);
    println!(
        "expires       {}",
        if last.is_empty() { "never" } else { &last }
    );
    println!("language      {}", a.language);
    println!(
        "tenant        {}{}",
        a.tenant,
        if a.any_tenant {
            " (usable on every tenant's numbers)"
        } else {
            ""
        }
    );
    println!("rate deck     {}", a.rate_deck);
    println!("pin-less      {}", if a.pinless { "yes" } else { "no" });
    if let Some(r) = &a.redirect {
        println!(
            "redirect      {} ({}) to {}",
            r.code.code(),
            r.code.meaning(),
            r.number
        );
    }
    println!(
        "created       {}",
        a.created_at.format("%Y-%m-%d %H:%M:%S UTC")
    );
}

pub async fn card(db: &str, cmd: CardCommand) -> Result<ExitCode> {
    let store = open(db).await?;
    let now = Utc::now();
    match cmd {
        CardCommand::Create {
            account,
            pin,
            balance,
            currency,
            language,
            expires,
            max_calls,
            tenant,
            credit_limit,
            pinless,
            any_tenant,
        } => {
            let mut n = NewAccount::new(
                &account,
                pin.as_deref(),
                Money::parse(&balance, false).map_err(|e| anyhow!("--balance {e}"))?,
            );
            n.currency = currency;
            n.language = language;
            n.expires_at = expires.as_deref().map(expiry).transpose()?;
            n.max_calls = max_calls;
            n.tenant = tenant;
            n.credit_limit =
                Money::parse(&credit_limit, false).map_err(|e| anyhow!("--credit-limit {e}"))?;
            n.pinless = pinless;
            n.any_tenant = any_tenant;
            let a = store.create_account(&n, now).await?;
            println!("created card {}", a.account);
            print_account(&a);
        }
        CardCommand::Batch(spec) => batch(&store, spec).await?,
        CardCommand::Show { account } => {
            print_account(&store.account(&account).await?);
            for s in store.sip_accounts_of_card(&account).await? {
                println!("sip account   {}", s.aor());
            }
        }
        CardCommand::Block { account } => {
            store.set_blocked(&account, true).await?;
            println!("card {account} blocked");
        }
        CardCommand::Unblock { account } => {
            store.set_blocked(&account, false).await?;
            println!("card {account} unblocked");
        }
        CardCommand::Redirect {
            account,
            to,
            number,
            clear,
        } => {
            let redirect = match (clear, to, number) {
                (false, Some(kind), Some(number)) => Some(Redirect {
                    code: match kind {
                        RedirectKind::CustomerService => ReturnCode::RedirectCustomerService,
                        RedirectKind::CalledParty => ReturnCode::RedirectCalledParty,
                    },
                    number,
                }),
                _ => None,
            };
            let a = store.set_redirect(&account, redirect).await?;
            match &a.redirect {
                Some(r) => println!(
                    "card {account} redirected to {} ({})",
                    r.number,
                    r.code.meaning()
                ),
                None => println!("card {account} no longer redirected"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Options for `card batch`.
#[derive(Args)]
pub struct BatchSpec {
    #[arg(long)]
    count: u32,
    #[arg(long)]
    balance: String,
    #[arg(long)]
    out: PathBuf,
    /// Card number length, Luhn check digit included.
    #[arg(long, default_value_t = 12)]
    digits: usize,
    #[arg(long, default_value_t = 4)]
    pin_digits: usize,
    #[arg(long, default_value = "USD")]
    currency: String,
    #[arg(long, default_value = "en")]
    language: String,
    /// Last day the cards work (UTC), YYYY-MM-DD.
    #[arg(long)]
    expires: Option<String>,
    #[arg(long, default_value = "default")]
    tenant: String,
    /// What finance calls the batch (default: its id).
    #[arg(long, default_value = "")]
    name: String,
}

/// Generates the cards and writes the CSV beside its final name first; only when the database
/// has taken every card is the file moved into place, so a failure leaves neither.
async fn batch(store: &Store, spec: BatchSpec) -> Result<()> {
    if !(1..=1_000_000).contains(&spec.count) {
        bail!("--count must be 1 to 1000000");
    }
    if !(6..=20).contains(&spec.digits) || !(4..=12).contains(&spec.pin_digits) {
        bail!("--digits must be 6 to 20 and --pin-digits 4 to 12");
    }
    if spec.out.exists() {
        bail!(
            "{} already exists; it would hold PINs, so it is never overwritten",
            spec.out.display()
        );
    }
    let balance = Money::parse(&spec.balance, false).map_err(|e| anyhow!("--balance {e}"))?;
    let expires_at = spec.expires.as_deref().map(expiry).transpose()?;
    let dir = spec
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut template = NewAccount::new("", None, balance);
    template.currency = spec.currency.clone();
    template.language = spec.language.clone();
    template.expires_at = expires_at;
    template.tenant = spec.tenant.clone();
    for attempt in 1..=3 {
        let cards = draw_cards(spec.count as usize, spec.digits, spec.pin_digits, &template);
        let mut tmp = tempfile::Builder::new()
            .prefix(".batch-")
            .tempfile_in(dir)
            .context("creating the CSV")?;
        write_batch_csv(tmp.as_file_mut(), &cards)?;
        tmp.as_file().sync_all()?;
        let bar = ProgressBar::new(u64::from(spec.count));
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} cards {eta}")
                .expect("valid template"),
        );
        let batch = NewBatch {
            name: spec.name.clone(),
            created_by: "cli".into(),
        };
        match store
            .create_batch(&batch, &cards, Utc::now(), || bar.inc(1), None)
            .await
        {
            Ok(id) => {
                bar.finish_and_clear();
                tmp.persist_noclobber(&spec.out)
                    .map_err(|e| anyhow!("the cards exist but the CSV could not be saved: {e}"))?;
                println!(
                    "created batch {id}: {} cards with {balance} {} each; numbers and PINs are in {} (the only copy of the PINs)",
                    spec.count,
                    spec.currency,
                    spec.out.display()
                );
                return Ok(());
            }
            Err(rating::StoreError::Conflict(m)) if attempt < 3 => {
                bar.finish_and_clear();
                tracing::info!("{m}: drawing new numbers");
            }
            Err(e) => return Err(e.into()),
        }
    }
    bail!("could not draw unused card numbers; use more --digits")
}

/// Options for `topup` and `refund`.
#[derive(Args)]
pub struct TopupArgs {
    account: String,
    #[arg(allow_hyphen_values = true)]
    amount: String,
    /// Your reference (receipt, transfer id): repeating it never moves money twice.
    #[arg(long)]
    reference: String,
    #[arg(long, default_value = "")]
    note: String,
}

pub async fn topup(db: &str, a: TopupArgs, kind: LedgerKind) -> Result<ExitCode> {
    let money = amount(&a.amount)?;
    let store = open(db).await?;
    let posting = store
        .post(&a.account, kind, money, &a.reference, &a.note, Utc::now())
        .await?;
    report_posting(&store, &a.account, posting).await
}

async fn report_posting(store: &Store, account: &str, posting: Posting) -> Result<ExitCode> {
    let acct = store.account(account).await?;
    match posting {
        Posting::Applied(e) => println!(
            "{} of {} {} on {} (reference {}): balance {} {}",
            e.kind, e.amount, acct.currency, account, e.reference, e.balance_after, acct.currency
        ),
        Posting::AlreadyApplied(e) => println!(
            "reference {} was already applied on {} ({} {} {}): nothing changed; balance is {} {}",
            e.reference,
            e.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
            e.kind,
            e.amount,
            acct.currency,
            acct.balance,
            acct.currency
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// Options for `adjust`.
#[derive(Args)]
pub struct AdjustArgs {
    account: String,
    /// Signed amount, e.g. -2.50 or 5.
    #[arg(allow_hyphen_values = true)]
    amount: String,
    #[arg(long)]
    reference: String,
    /// Why (kept in the ledger).
    #[arg(long)]
    note: String,
}

pub async fn adjust(db: &str, a: AdjustArgs) -> Result<ExitCode> {
    let money = Money::parse(&a.amount, true).map_err(|e| anyhow!("amount {e}"))?;
    let store = open(db).await?;
    let posting = store
        .post(
            &a.account,
            LedgerKind::Adjustment,
            money,
            &a.reference,
            &a.note,
            Utc::now(),
        )
        .await?;
    report_posting(&store, &a.account, posting).await
}

/// Options for `ledger`.
#[derive(Args)]
pub struct LedgerArgs {
    /// A card number, or `check`.
    target: String,
    #[arg(long, default_value_t = 100)]
    limit: i64,
}

pub async fn ledger(db: &str, a: LedgerArgs) -> Result<ExitCode> {
    let store = open(db).await?;
    if a.target == "check" {
        let r = store.ledger_check().await?;
        if r.problems.is_empty() {
            println!(
                "ledger check: OK — {} cards, {} ledger rows, {} calls holding money; every balance agrees with its ledger",
                r.accounts, r.entries, r.reservations
            );
            return Ok(ExitCode::SUCCESS);
        }
        eprintln!("error: ledger check found {} problem(s):", r.problems.len());
        for p in &r.problems {
            eprintln!("  {p}");
        }
        return Ok(ExitCode::FAILURE);
    }
    let acct = store.account(&a.target).await?;
    let rows = store.ledger(&a.target, a.limit).await?;
    println!(
        "{:>6}  {:<20}  {:<10}  {:>14}  {:>14}  reference / note",
        "#", "when (UTC)", "kind", "amount", "balance"
    );
    for e in &rows {
        println!(
            "{:>6}  {:<20}  {:<10}  {:>14}  {:>14}  {}{}",
            e.id,
            e.created_at.format("%Y-%m-%d %H:%M:%S"),
            e.kind,
            e.amount.to_string(),
            e.balance_after.to_string(),
            e.reference,
            if e.note.is_empty() {
                String::new()
            } else {
                format!(" — {}", e.note)
            }
        );
    }
    println!(
        "balance {} {}, {} held by running calls",
        acct.balance, acct.currency, acct.reserved
    );
    Ok(ExitCode::SUCCESS)
}

/// `rates …`
#[derive(Subcommand)]
pub enum RatesCommand {
    /// Replace a rate deck from CSV (all rows or none).
    Import {
        file: PathBuf,
        #[arg(long, default_value = "default")]
        deck: String,
        /// Currency of rows without a currency column.
        #[arg(long, default_value = "USD")]
        currency: String,
    },
    /// Replace the blocked-prefix list (return code 9) from CSV `prefix,description`.
    Blocked { file: PathBuf },
    /// Replace the toll-free prefix list from CSV `prefix,description`.
    Tollfree { file: PathBuf },
}

pub async fn rates(db: &str, cmd: RatesCommand) -> Result<ExitCode> {
    let read =
        |f: &PathBuf| std::fs::File::open(f).with_context(|| format!("reading {}", f.display()));
    match cmd {
        RatesCommand::Import {
            file,
            deck,
            currency,
        } => {
            let rows = parse_rates_csv(read(&file)?, &currency.to_ascii_uppercase())
                .map_err(|e| anyhow!("{}: {e}", file.display()))?;
            let store = open(db).await?;
            let s = store
                .import_rates(&deck, &rows, &file.display().to_string(), Utc::now())
                .await?;
            println!(
                "imported {} rows into deck '{}' (version {})",
                s.rows, s.name, s.version
            );
        }
        RatesCommand::Blocked { file } => prefix_list(db, "blocked", &file, read(&file)?).await?,
        RatesCommand::Tollfree { file } => prefix_list(db, "tollfree", &file, read(&file)?).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn prefix_list(
    db: &str,
    list: &str,
    file: &std::path::Path,
    input: std::fs::File,
) -> Result<()> {
    let entries = parse_prefix_csv(input).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    let store = open(db).await?;
    let s = store.import_prefix_list(list, &entries).await?;
    println!("imported {} prefixes into the {list} list", s.rows);
    Ok(())
}

/// Options for `rate`.
#[derive(Args)]
pub struct RateArgs {
    account: String,
    destination: String,
}

pub async fn rate(db: &str, a: RateArgs) -> Result<ExitCode> {
    let store = open(db).await?;
    let q = store.quote(&a.account, &a.destination, Utc::now()).await?;
    let c = &q.account.currency;
    println!(
        "card {} has {} {c} available",
        q.account.account, q.available
    );
    if let Some(b) = &q.blocked {
        println!(
            "{} is blocked ({b}): calls are refused with return code 9",
            a.destination
        );
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(t) = &q.tollfree {
        println!("{} is toll-free ({t}): calls cost nothing", a.destination);
        return Ok(ExitCode::SUCCESS);
    }
    match &q.rate {
        None => println!(
            "no rate in deck '{}' for {} in {c}: calls are refused with return code 9",
            q.account.rate_deck, a.destination
        ),
        Some(r) => {
            let t = &r.tariff;
            println!(
                "rate: prefix {} ({}) in deck '{}': {} {c}/min, connect fee {} {c}, billed {}/{} s, minimum {} s",
                r.prefix, r.description, r.deck, t.rate_per_minute(), t.connect_fee(), t.initial_increment(), t.increment(), t.minimum_seconds()
            );
            println!(
                "credit time now: {} s ({} h {} min){}",
                q.credit_time,
                q.credit_time / 3600,
                q.credit_time % 3600 / 60,
                if q.credit_time == 0 {
                    " — insufficient funds (return code 12)"
                } else {
                    ""
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Options for `records`.
#[derive(Args)]
pub struct RecordsArgs {
    #[arg(long)]
    account: Option<String>,
    #[arg(long)]
    session: Option<String>,
    #[arg(long, default_value_t = 50)]
    limit: i64,
}

pub async fn records(db: &str, a: RecordsArgs) -> Result<ExitCode> {
    let store = open(db).await?;
    let recs = store
        .call_records(&RecordFilter {
            account: a.account,
            session_id: a.session,
            limit: Some(a.limit),
        })
        .await?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<20}  {:<12}  {:<16}  {:>4}  {:>7}  {:>12}  session / cause",
        "setup (UTC)", "account", "destination", "code", "billed", "cost"
    )?;
    for r in &recs {
        writeln!(
            out,
            "{:<20}  {:<12}  {:<16}  {:>4}  {:>6}s  {:>12}  {} / {}",
            r.setup_at.format("%Y-%m-%d %H:%M:%S"),
            r.account,
            r.destination,
            r.return_code,
            r.billed_seconds,
            format!("{} {}", r.cost, r.currency),
            r.session_id,
            r.disconnect_cause
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
