//! The finance command line, run as a clerk would run it, against a fresh SQLite file.

use std::path::Path;
use std::process::{Command, Output};

struct Cli {
    dir: tempfile::TempDir,
}

impl Cli {
    fn new() -> Cli {
        Cli {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_b2bua"))
            .args(args)
            .env(
                "B2BUA_DB",
                format!("sqlite://{}", self.dir.path().join("b2bua.db").display()),
            )
            .env("RUST_LOG", "warn")
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail with one clear line; returns that line.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "{args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        err
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }
}

/// Kills a `serve` process when dropped, so that a failed assertion does not leave it
/// holding its ports.
struct Reap(u32);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}

/// What `serve` printed up to "press Ctrl-C" (it is ready then).
fn until_ready(stdout: &mut impl std::io::Read) -> String {
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("press Ctrl-C") {
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0, "serve exited early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    seen
}

#[test]
fn a_clerks_day() {
    let cli = Cli::new();
    let out = cli.ok(&[
        "card",
        "create",
        "000070",
        "--pin",
        "1234",
        "--balance",
        "32.91",
        "--expires",
        "2030-12-31",
    ]);
    assert!(out.contains("balance       32.91 USD"), "{out}");
    assert!(out.contains("expires       2030-12-31"), "{out}");
    let out = cli.ok(&["topup", "000070", "10", "--reference", "RCPT-1"]);
    assert!(out.contains("balance 42.91 USD"), "{out}");
    let out = cli.ok(&["topup", "000070", "10", "--reference", "RCPT-1"]);
    assert!(
        out.contains("already applied") && out.contains("nothing changed"),
        "{out}"
    );
    assert!(cli
        .ok(&["card", "show", "000070"])
        .contains("balance       42.91 USD"));
    cli.ok(&[
        "adjust",
        "000070",
        "-2.91",
        "--reference",
        "ADJ-1",
        "--note",
        "goodwill reversal",
    ]);
    let ledger = cli.ok(&["ledger", "000070"]);
    assert_eq!(
        ledger
            .lines()
            .filter(|l| l.contains("topup") || l.contains("adjustment"))
            .count(),
        3,
        "{ledger}"
    );
    assert!(ledger.contains("balance 40.00 USD"), "{ledger}");
    assert!(cli.ok(&["ledger", "check"]).contains("ledger check: OK"));
    cli.ok(&["card", "block", "000070"]);
    assert!(cli
        .ok(&["card", "show", "000070"])
        .contains("status        blocked"));
    cli.ok(&["card", "unblock", "000070"]);
    let out = cli.ok(&[
        "card",
        "redirect",
        "000070",
        "--to",
        "customer-service",
        "--number",
        "18005550100",
    ]);
    assert!(out.contains("redirected to 18005550100"), "{out}");
    assert!(cli
        .ok(&["card", "show", "000070"])
        .contains("redirect      52 (redirect to customer service) to 18005550100"));
    cli.ok(&["card", "redirect", "000070", "--clear"]);
    assert!(!cli.ok(&["card", "show", "000070"]).contains("redirect"));

    let deck = cli.file(
        "rates.csv",
        "prefix,description,rate_per_minute,connect_fee,initial_increment,increment,minimum_seconds\n44,UK,0.60,0,60,60,0\n",
    );
    assert!(cli
        .ok(&["rates", "import", &deck])
        .contains("imported 1 rows into deck 'default'"));
    let out = cli.ok(&["rate", "000070", "4420123"]);
    assert!(out.contains("credit time now: 3960 s (1 h 6 min)"), "{out}");
    let blocked = cli.file("blocked.csv", "prefix,description\n1900,premium\n");
    cli.ok(&["rates", "blocked", &blocked]);
    assert!(cli
        .ok(&["rate", "000070", "19005551234"])
        .contains("return code 9"));
}

#[test]
fn bad_input_gets_one_clear_line_and_changes_nothing() {
    let cli = Cli::new();
    cli.ok(&[
        "card",
        "create",
        "000070",
        "--pin",
        "1234",
        "--balance",
        "5",
    ]);
    for (args, says) in [
        (
            vec!["topup", "000070", "-5", "--reference", "R"],
            "must be greater than zero",
        ),
        (
            vec!["topup", "000070", "abc", "--reference", "R"],
            "is not an amount",
        ),
        (
            vec!["topup", "000070", "1.0000001", "--reference", "R"],
            "never rounded",
        ),
        (
            vec!["topup", "000070", "1e3", "--reference", "R"],
            "is not an amount",
        ),
        (
            vec!["topup", "999999", "5", "--reference", "R"],
            "no account 999999",
        ),
        (
            vec!["card", "create", "000070", "--pin", "1234"],
            "already exists",
        ),
        (
            vec!["card", "create", "12ab", "--pin", "1234"],
            "must be 4 to 20 digits",
        ),
        (
            vec!["card", "create", "100001", "--pin", "12"],
            "PIN must be 4 to 12 digits",
        ),
        (
            vec![
                "card",
                "create",
                "100001",
                "--pin",
                "1234",
                "--currency",
                "dollars",
            ],
            "ISO 4217",
        ),
        (
            vec![
                "card",
                "create",
                "100001",
                "--pin",
                "1234",
                "--expires",
                "31/12/2030",
            ],
            "is not a date",
        ),
        (vec!["card", "show", "424242"], "no account 424242"),
        (vec!["rate", "000070", "12x"], "must be 1 to 32 digits"),
        (
            vec![
                "card",
                "redirect",
                "000070",
                "--to",
                "called-party",
                "--number",
                "1-800",
            ],
            "redirect number '1-800' must be 1 to 32 digits",
        ),
        (
            vec!["--db", "mysql://x", "card", "show", "000070"],
            "unsupported database URL",
        ),
    ] {
        let err = cli.fails(&args);
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(
            err.lines().count(),
            1,
            "{args:?}: more than one line: {err}"
        );
    }
    // Usage mistakes get clap's message, which names the argument.
    let err = cli.fails(&["topup", "000070", "5"]);
    assert!(err.contains("--reference"), "{err}");
    let err = cli.fails(&[
        "card", "redirect", "000070", "--to", "nowhere", "--number", "1",
    ]);
    assert!(err.contains("invalid value 'nowhere'"), "{err}");
    let err = cli.fails(&["card", "redirect", "000070"]);
    assert!(err.contains("--to"), "{err}");
    // A deck with bad rows names each line and imports nothing.
    let bad = cli.file(
        "bad.csv",
        "prefix,description,rate_per_minute,connect_fee,initial_increment,increment,minimum_seconds\n44,UK,0.6,0,60,60,0\n4x,Bad,0.6,0,60,60,0\n45,Bad,zero,0,60,60,0\n",
    );
    let err = cli.fails(&["rates", "import", &bad]);
    assert!(
        err.contains("line 3: prefix '4x'") && err.contains("line 4: rate_per_minute 'zero'"),
        "{err}"
    );
    assert!(cli.ok(&["rate", "000070", "4420"]).contains("no rate"));
    assert!(cli
        .fails(&["rates", "import", "missing.csv"])
        .contains("reading missing.csv"));
    assert!(cli
        .ok(&["card", "show", "000070"])
        .contains("balance       5.00 USD"));
    assert!(cli.ok(&["ledger", "check"]).contains("OK"));
}

#[test]
fn batch_cards_csv_is_the_only_copy_of_the_pins() {
    let cli = Cli::new();
    let out = cli.ok(&[
        "card",
        "batch",
        "--count",
        "25",
        "--balance",
        "5",
        "--name",
        "Kiosk run",
        "--out",
        "cards.csv",
    ]);
    assert!(
        out.contains("created batch B-") && out.contains(": 25 cards"),
        "{out}"
    );
    let csv = std::fs::read_to_string(cli.dir.path().join("cards.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(rows.len(), 25);
    for r in &rows {
        assert_eq!(r[0].len(), 12);
        assert!(rating::rules::luhn_valid(r[0]), "{} fails Luhn", r[0]);
        assert_eq!(r[1].len(), 4);
    }
    assert!(cli
        .ok(&["card", "show", rows[0][0]])
        .contains("balance       5.00 USD"));
    // The PINs are not in the database in clear.
    let db = std::fs::read(cli.dir.path().join("b2bua.db")).unwrap();
    let needle = format!("{},{}", rows[0][0], rows[0][1]);
    assert!(!db.windows(needle.len()).any(|w| w == needle.as_bytes()));
    // Never overwrites a PIN file.
    assert!(cli
        .fails(&[
            "card",
            "batch",
            "--count",
            "1",
            "--balance",
            "5",
            "--out",
            "cards.csv"
        ])
        .contains("already exists"));
    assert!(cli
        .fails(&[
            "card",
            "batch",
            "--count",
            "0",
            "--balance",
            "5",
            "--out",
            "x.csv"
        ])
        .contains("--count"));
    assert!(!Path::new(&cli.dir.path().join("x.csv")).exists());
    // A name that is not one line of text is refused, and neither cards nor file are made.
    assert!(cli
        .fails(&[
            "card",
            "batch",
            "--count",
            "2",
            "--balance",
            "5",
            "--name",
            "two\nlines",
            "--out",
            "y.csv"
        ])
        .contains("batch name"));
    assert!(!Path::new(&cli.dir.path().join("y.csv")).exists());
    assert!(cli
        .ok(&["ledger", "check"])
        .contains("25 cards, 25 ledger rows"));
}

#[test]
fn serve_creates_the_demo_once_and_keeps_it() {
    let cli = Cli::new();
    let log_path = cli.dir.path().join("serve.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_b2bua"))
        .arg("serve")
        .current_dir(cli.dir.path())
        .env(
            "B2BUA_DB",
            format!("sqlite://{}", cli.dir.path().join("b2bua.db").display()),
        )
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    // A failed assertion must not leave the service holding the demo's ports.
    let _reap = Reap(child.id());
    let mut stdout = child.stdout.take().unwrap();
    let seen = until_ready(&mut stdout);
    // The demo answers RADIUS with the seed's secret: radclient works against a fresh install.
    let radclient = std::process::Command::new("radclient")
        .arg("-v")
        .output()
        .is_ok();
    if radclient {
        std::fs::write(cli.dir.path().join("dictionary"), "").unwrap();
        let mut rc = Command::new("radclient")
            .args([
                "-x",
                "-t",
                "2",
                "-r",
                "1",
                "-D",
                "/usr/share/freeradius",
                "-d",
            ])
            .arg(cli.dir.path())
            .args(["127.0.0.1", "auth", "testing123"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(
            rc.stdin.as_mut().unwrap(),
            b"User-Name = \"000070\", User-Password = \"1234\", Called-Station-Id = \"\", Message-Authenticator = 0x00",
        )
        .unwrap();
        drop(rc.stdin.take());
        let out = String::from_utf8_lossy(&rc.wait_with_output().unwrap().stdout).into_owned();
        assert!(out.contains("Received Access-Accept"), "{out}");
        assert!(out.contains("h323-credit-amount=32.91"), "{out}");
    } else if std::env::var_os("B2BUA_REQUIRE_PEERS").is_some() {
        panic!("radclient is not installed (freeradius-utils) and B2BUA_REQUIRE_PEERS is set");
    }
    // The admin API answers with the token printed at start.
    let token = seen
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("admin token for this run (role admin): ")
        })
        .expect("serve prints an admin token")
        .to_string();
    assert!(
        seen.contains("admin API on http://127.0.0.1:8080/api/v1/"),
        "{seen}"
    );
    assert!(
        seen.contains("finance console on http://127.0.0.1:8080/console"),
        "{seen}"
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .get("http://127.0.0.1:8080/api/v1/accounts/000070")
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body = r.body_mut().read_to_string().unwrap();
    assert!(body.contains("\"balance\":\"32.91\""), "{body}");
    // The log level changes at run time: a garbage datagram is logged only once at debug.
    let log = || std::fs::read_to_string(&log_path).unwrap();
    let sip = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sip.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let garbage = |n: u8| {
        sip.send_to(&[b'#', n, b'\r', b'\n'], "127.0.0.1:5060")
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    let level = |body: &str| {
        let mut r = agent
            .put("http://127.0.0.1:8080/api/v1/log-level")
            .header("Authorization", &format!("Bearer {token}"))
            .header("Content-Type", "application/json")
            .send(body)
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    };
    garbage(1);
    assert!(!log().contains("unparseable SIP datagram"), "{}", log());
    assert_eq!(
        level(r#"{"level": "info,b2bua::transport=debug"}"#),
        (
            200,
            r#"{"level":"info,b2bua::transport=debug"}"#.to_string()
        )
    );
    garbage(2);
    assert!(log().contains("unparseable SIP datagram"), "{}", log());
    let (status, body) = level(r#"{"level": "degub"}"#);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("`degub` is not a level"), "{body}");
    // A pinless call to an access number an admin adds through the API, which this node
    // serves at once (before, the number is unknown). Every line about the call carries its
    // session, conference id and account; the demo gateway is not running, so the call fails
    // over and ends.
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
               m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    let port = sip.local_addr().unwrap().port();
    let call = |n: u32| {
        let invite = format!(
            "INVITE sip:55512995555233@127.0.0.1:5060 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-span-{n}\r\n\
             From: <sip:4085551234@127.0.0.1>;tag=span{n}\r\nTo: <sip:55512995555233@127.0.0.1>\r\n\
             Call-ID: span-test-{n}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n\
             Contact: <sip:4085551234@127.0.0.1:{port}>\r\nContent-Type: application/sdp\r\n\
             Content-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        );
        sip.send_to(invite.as_bytes(), "127.0.0.1:5060").unwrap();
        let mut buf = [0u8; 4096];
        loop {
            let (len, _) = sip
                .recv_from(&mut buf)
                .expect("the B2BUA answers the INVITE");
            let text = String::from_utf8_lossy(&buf[..len]).into_owned();
            let code: u16 = text[8..11].parse().unwrap();
            if code >= 200 && text.contains(&format!("Call-ID: span-test-{n}\r\n")) {
                // The ACK that ends the INVITE transaction of a refused call (RFC 3261 17.1.1.3).
                let to = text.lines().find(|l| l.starts_with("To:")).unwrap();
                let ack = format!(
                    "ACK sip:55512995555233@127.0.0.1:5060 SIP/2.0\r\n\
                     Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-span-{n}\r\n\
                     From: <sip:4085551234@127.0.0.1>;tag=span{n}\r\n{to}\r\n\
                     Call-ID: span-test-{n}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\n\
                     Content-Length: 0\r\n\r\n"
                );
                sip.send_to(ack.as_bytes(), "127.0.0.1:5060").unwrap();
                break (code, text);
            }
        }
    };
    let (code, text) = call(1);
    assert_eq!(code, 404, "{text}");
    assert!(text.contains("unknown access number"), "{text}");
    let mut r = agent
        .put("http://127.0.0.1:8080/api/v1/access-numbers/5551299")
        .header("Authorization", &format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .send(r#"{"tenant": "default", "pinless": true, "trust_ani": true, "trusted_only": true, "languages": ["en"]}"#)
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        201,
        "{}",
        r.body_mut().read_to_string().unwrap()
    );
    let (final_code, text) = call(2);
    assert!(final_code >= 400 && final_code != 404, "{text}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let ended = log()
        .lines()
        .find(|l| l.contains("call ended"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no call ended line: {}", log()));
    assert!(ended.contains("call{id=1 session="), "{ended}");
    assert!(
        ended.contains("account=4085551234 access=5551299"),
        "{ended}"
    );
    let conf = ended
        .split("conf=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    assert_eq!(conf.len(), 36, "the conference id: {ended}");
    // SIGTERM (systemd's stop) is a clean stop, as Ctrl-C is.
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}: {rest}");
    assert!(rest.contains("stopped after 1 calls (0 answered"), "{rest}");
    assert!(seen.contains("created the demo data"), "{seen}");
    assert!(
        seen.contains("RADIUS AAA server: auth 127.0.0.1:1812, accounting 127.0.0.1:1813"),
        "{seen}"
    );
    assert!(
        seen.contains("demo card 000070 (PIN 1234): 32.91 USD available"),
        "{seen}"
    );
    assert!(seen.contains("to 5555233 it buys 20900 s"), "{seen}");
    assert!(seen.contains("SIP UDP on 127.0.0.1:5060"), "{seen}");
    assert!(seen.contains("SIP TCP on 127.0.0.1:5060"), "{seen}");
    cli.ok(&["topup", "000070", "1", "--reference", "demo-1"]);
    let out = cli.ok(&["serve", "--help"]);
    assert!(out.contains("node-id"));
    // A restart does not reset what happened to the demo card.
    assert!(cli.ok(&["card", "show", "000070"]).contains("33.91"));
    assert!(cli
        .ok(&["card", "show", "4085551234"])
        .contains("pin-less      yes"));
}

#[test]
fn config_check_names_the_line_and_key_of_each_mistake() {
    let cli = Cli::new();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../b2bua.example.yaml");
    assert!(cli
        .ok(&["config", "check", example])
        .contains(": ok (2 listen addresses, 4 access numbers"));
    let bad = cli.file(
        "bad.yaml",
        "sip:\n  listen: [udp:127.0.0.1:5060]\ngateways:\n  - name: gw\n    address: nowhere\nroutes:\n  - name: r\n    patterns: [\"1x\"]\n    gateways: [{gateway: gw9}]\n",
    );
    let err = cli.fails(&["config", "check", &bad]);
    assert!(
        err.contains("bad.yaml:5: gateways[0].address: `nowhere` is not ADDR:PORT"),
        "{err}"
    );
    assert!(err.contains("bad.yaml:8: routes[0].patterns[0]"), "{err}");
    assert!(
        err.contains("bad.yaml:9: routes[0].gateways[0].gateway: no gateway named `gw9`"),
        "{err}"
    );
    let broken = cli.file("broken.yaml", "sip: [\n");
    assert!(cli
        .fails(&["config", "check", &broken])
        .contains("broken.yaml:"));
    assert!(cli
        .fails(&["config", "check", "/nonexistent.yaml"])
        .contains("cannot read"));
    assert!(cli
        .fails(&["serve", "--config", &bad])
        .contains("no gateway named `gw9`"));
    // A flow that does not load stops the start, naming its file, line and state.
    let flows = cli.dir.path().join("flows");
    std::fs::create_dir(&flows).unwrap();
    std::fs::write(
        flows.join("debitcard.yaml"),
        "name: debitcard\nstart: a\nstates:\n  a:\n    goto: b\n",
    )
    .unwrap();
    let cfg = cli.file(
        "flows.yaml",
        &format!("flows: {}\nsip:\n  listen: [udp:127.0.0.1:0]\naccess_numbers:\n  - {{number: \"5551200\", flow: debitcard}}\n", flows.display()),
    );
    let err = cli.fails(&["serve", "--config", &cfg]);
    assert!(
        err.contains("starting the engine") && err.contains("debitcard.yaml:5: a: goes to `b`"),
        "{err}"
    );
}

#[test]
fn flows_check_names_file_line_and_state() {
    let cli = Cli::new();
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../flows");
    let out = cli.ok(&["flows", "check", shipped]);
    for f in [
        "debitcard",
        "debitcard_acct_pin",
        "clid_authen_collect",
        "clid_col_npw_3",
        "pinless",
    ] {
        assert!(out.contains(&format!("{f}: ok (")), "{out}");
    }
    let prompts = concat!(env!("CARGO_MANIFEST_DIR"), "/../prompts/sets/default");
    assert!(cli
        .ok(&["flows", "check", shipped, "--prompts", prompts])
        .contains("debitcard: ok"));
    let bad = cli.file(
        "bad.yaml",
        "name: bad\nstart: a\nstates:\n  a:\n    play: {prompts: [no_such_prompt]}\n    next: b\n",
    );
    let err = cli.fails(&["flows", "check", &bad]);
    assert!(
        err.contains("bad.yaml:5: a: prompt `no_such_prompt` is not in the loaded prompt set"),
        "{err}"
    );
    assert!(
        err.contains("bad.yaml:5: a: goes to `b`, which is not a state"),
        "{err}"
    );
    let broken = cli.file("broken.yaml", "states: [\n");
    assert!(cli
        .fails(&["flows", "check", &broken])
        .contains("broken.yaml:"));
}

#[test]
fn a_critical_task_that_dies_takes_the_process_down() {
    // Each of these tasks runs for the life of the process; the debug-build hook
    // B2BUA_TEST_FAULT makes one panic shortly after the start.
    for task in ["engine", "sip-udp", "sip-tcp", "media-relay"] {
        let cli = Cli::new();
        let cfg = cli.file(
            "c.yaml",
            "sip:\n  listen: [\"udp:127.0.0.1:0\", \"tcp:127.0.0.1:0\"]\n",
        );
        let mut child = Command::new(env!("CARGO_BIN_EXE_b2bua"))
            .args(["serve", "--config", &cfg])
            .current_dir(cli.dir.path())
            .env(
                "B2BUA_DB",
                format!("sqlite://{}", cli.dir.path().join("b2bua.db").display()),
            )
            .env("B2BUA_TEST_FAULT", task)
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("{task}: the process lived on after its task died");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert_eq!(status.code(), Some(70), "{task}: {err}");
        assert!(
            err.contains(&format!("critical task {task} panicked")),
            "{task}: {err}"
        );
    }
}

/// CPU seconds a process has used (user and system), from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 of stat, counted from the state (field 3).
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

#[test]
fn out_of_descriptors_the_tcp_listener_backs_off_instead_of_spinning() {
    use std::io::{Read, Write};
    let cli = Cli::new();
    let cfg = cli.file(
        "c.yaml",
        "sip:\n  listen: [\"tcp:127.0.0.1:0\"]\nlimits: {tcp_connections: 1000, tcp_connections_per_source: 1000}\n",
    );
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 96 && exec {} serve --config {cfg}",
            env!("CARGO_BIN_EXE_b2bua")
        ))
        .current_dir(cli.dir.path())
        .env(
            "B2BUA_DB",
            format!("sqlite://{}", cli.dir.path().join("b2bua.db").display()),
        )
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _reap = Reap(child.id());
    let mut stdout = child.stdout.take().unwrap();
    let seen = until_ready(&mut stdout);
    let mut buf = [0u8; 4096];
    let addr: std::net::SocketAddr = seen
        .lines()
        .find_map(|l| l.trim().strip_prefix("SIP TCP on "))
        .expect("the TCP address")
        .parse()
        .unwrap();
    // More connections than the process has descriptors: accept fails with EMFILE, and the
    // pending ones stay readable on the listener.
    let conns: Vec<std::net::TcpStream> = (0..150)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let before = cpu_seconds(child.id());
    std::thread::sleep(std::time::Duration::from_secs(2));
    let used = cpu_seconds(child.id()) - before;
    assert!(
        used < 0.5,
        "{used} CPU seconds in 2 s while out of descriptors"
    );
    // Once descriptors are free again, connections are served.
    drop(conns);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKemfile\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: emfile\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").unwrap();
    let n = s.read(&mut buf).unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 200 OK"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Softphone subscribers from the command line: an account made on a card with a drawn
/// password shown once, listed with the card, barred, blocked, given a new password and
/// deleted; each mistake a clerk can make is one clear line and changes nothing.
#[test]
fn sip_accounts_are_made_on_cards_and_managed() {
    let cli = Cli::new();
    cli.ok(&[
        "card",
        "create",
        "4000000001",
        "--pin",
        "1234",
        "--balance",
        "10",
    ]);
    let made = cli.ok(&[
        "sip-account",
        "create",
        "alice@voip.example.com",
        "--card",
        "4000000001",
        "--caller-id",
        "+14085551234",
    ]);
    assert!(
        made.contains("created sip account alice@voip.example.com"),
        "{made}"
    );
    let password = made
        .lines()
        .find_map(|l| l.strip_prefix("password      "))
        .and_then(|l| l.split_whitespace().next())
        .expect("the drawn password is shown");
    assert_eq!(password.len(), 16);
    let shown = cli.ok(&["sip-account", "show", "alice@voip.example.com"]);
    assert!(
        shown.contains("card          4000000001 (tenant default)"),
        "{shown}"
    );
    assert!(shown.contains("registered    no"), "{shown}");
    assert!(
        !shown.contains(password),
        "the password is never shown again"
    );
    let card = cli.ok(&["card", "show", "4000000001"]);
    assert!(
        card.contains("sip account   alice@voip.example.com"),
        "{card}"
    );
    let barred = cli.ok(&[
        "sip-account",
        "bar",
        "alice@voip.example.com",
        "--international",
        "on",
    ]);
    assert!(barred.contains("barred        international"), "{barred}");
    cli.ok(&["sip-account", "block", "alice@voip.example.com"]);
    assert!(cli
        .ok(&["sip-account", "list", "--card", "4000000001"])
        .contains("blocked"));
    cli.ok(&["sip-account", "unblock", "alice@voip.example.com"]);
    let again = cli.ok(&[
        "sip-account",
        "password",
        "alice@voip.example.com",
        "--password",
        "battery staple",
    ]);
    assert!(!again.contains("shown only now"), "{again}");

    for (args, says) in [
        (
            &["sip-account", "create", "alice", "--card", "4000000001"][..],
            "USER@DOMAIN",
        ),
        (
            &[
                "sip-account",
                "create",
                "bob@voip.example.com",
                "--card",
                "4999999999",
            ][..],
            "no account",
        ),
        (
            &[
                "sip-account",
                "create",
                "alice@voip.example.com",
                "--card",
                "4000000001",
            ][..],
            "exists already",
        ),
        (
            &[
                "sip-account",
                "create",
                "bob@voip.example.com",
                "--card",
                "4000000001",
                "--password",
                "short",
            ][..],
            "8 to 128",
        ),
        (
            &["sip-account", "bar", "alice@voip.example.com"][..],
            "say what to bar",
        ),
        (
            &["sip-account", "show", "nobody@voip.example.com"][..],
            "no SIP account",
        ),
        (
            &[
                "sip-account",
                "create",
                "bob@Voip..x",
                "--card",
                "4000000001",
            ][..],
            "not a SIP domain",
        ),
    ] {
        let err = cli.fails(args);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert!(cli.ok(&["sip-account", "list"]).contains("1 SIP accounts"));
    cli.ok(&["sip-account", "delete", "alice@voip.example.com"]);
    assert!(cli
        .fails(&["sip-account", "delete", "alice@voip.example.com"])
        .contains("no SIP account"));
    assert!(cli
        .ok(&["card", "show", "4000000001"])
        .contains("balance       10"));
}
