//! The shipped flows, table-driven: an event script in, the exact prompts and actions out.
//! Each script covers one path through a flow; together they cover every return-code branch
//! the flows handle and their retry limits.

use ivr::{Action, AuthResult, Context, Event, Flow, Session};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn flow(name: &str) -> Arc<Flow> {
    let text = std::fs::read_to_string(ivr::shipped_dir().join(format!("{name}.yaml"))).unwrap();
    Arc::new(Flow::parse(&text, name, &ivr::catalogue_prompts()).unwrap_or_else(|e| panic!("{e}")))
}

/// One step of a script.
#[derive(Clone, Copy)]
enum S {
    /// Keys pressed.
    Keys(&'static str),
    /// The prompt finished.
    Done,
    /// The authorizer answers: code, amount, seconds.
    Auth(u8, &'static str, u64),
    /// The bridge ends for this reason.
    Ended(&'static str),
    /// Seconds pass (timeouts).
    Wait(u64),
    /// The caller holds #.
    LongPound,
    /// The credit warning.
    Warning,
}

/// Runs a script and renders every action as one short line.
fn run(name: &str, ctx: &Context, script: &[S]) -> Vec<String> {
    let mut now = Instant::now();
    let (mut s, first) = Session::start(flow(name), ctx, now);
    let mut log: Vec<String> = first.iter().map(render).collect();
    for step in script {
        let acts: Vec<Action> = match *step {
            S::Keys(k) => k
                .chars()
                .flat_map(|c| s.on_event(Event::Digit(c), now))
                .collect(),
            S::Done => s.on_event(Event::PromptDone, now),
            S::Auth(code, amount, secs) => s.on_event(
                Event::Auth(AuthResult {
                    code,
                    amount: amount.to_string(),
                    credit_seconds: secs,
                    language: String::new(),
                    redirect: "18005550100".into(),
                }),
                now,
            ),
            S::Ended(r) => s.on_event(
                Event::BridgeEnded(ivr::BridgeEnd::from_name(r).unwrap()),
                now,
            ),
            S::Wait(secs) => {
                now += Duration::from_secs(secs);
                s.on_timer(now)
            }
            S::LongPound => s.on_event(Event::LongPound, now),
            S::Warning => s.on_event(Event::CreditWarning, now),
        };
        log.extend(acts.iter().map(render));
    }
    log
}

fn render(a: &Action) -> String {
    match a {
        Action::Play { prompts, .. } => format!("play {}", prompts.join(" ")),
        Action::StopPlayback => "stop".into(),
        Action::SetLanguage(l) => format!("lang {l}"),
        Action::Authorize {
            phase,
            account,
            pin,
            destination,
        } => format!(
            "auth{phase} {account}{}{}",
            pin.as_ref()
                .map(|p| format!(" pin={p}"))
                .unwrap_or_default(),
            destination
                .as_ref()
                .map(|d| format!(" dest={d}"))
                .unwrap_or_default()
        ),
        Action::Bridge { destination } => format!("bridge {destination}"),
        Action::EndBridge => "end-bridge".into(),
        Action::Hangup { cause } => format!("hangup {cause}"),
    }
}

fn en() -> Context {
    Context {
        ani: "4085551234".into(),
        access_number: "5551200".into(),
        languages: vec!["en".into()],
        uri_destination: String::new(),
        card: String::new(),
    }
}

fn check(name: &str, ctx: &Context, script: &[S], want: &[&str]) {
    let got = run(name, ctx, script);
    assert_eq!(got, want, "\n{name}: got\n  {}", got.join("\n  "));
}

const BALANCE: &str = "play you_have thirty two dollars and ninety one cents";
const TIME: &str = "play you_have five hours and forty eight minutes";

#[test]
fn debitcard_the_seeds_walk_through() {
    use S::*;
    check(
        "debitcard",
        &en(),
        &[
            Done,
            Keys("0000701234"),
            Auth(0, "32.91", 0),
            Done,
            Keys("5555233#"),
            Auth(0, "32.91", 20900),
            Done,
            Warning,
            Ended("credit_exhausted"),
            Done,
        ],
        &[
            "lang en",
            "play welcome",
            // One language: no menu.
            "play enter_card_num",
            "stop",
            "auth1 000070 pin=1234",
            BALANCE,
            "play enter_dest",
            "stop",
            "auth2 000070 pin=1234 dest=5555233",
            TIME,
            "bridge 5555233",
            "play disconnect",
            "play disconnected",
            "hangup normal",
        ],
    );
}

#[test]
fn debitcard_language_menu_and_its_retries() {
    use S::*;
    let three = Context {
        languages: vec!["en".into(), "es".into(), "zh".into()],
        ..en()
    };
    check(
        "debitcard",
        &three,
        &[Done, Done, Keys("2"), Done],
        &[
            "lang en",
            "play welcome",
            "play lang_select",
            "lang es",
            "play enter_card_num",
        ],
    );
    check(
        "debitcard",
        &three,
        &[Done, Keys("9"), Done, Wait(10), Keys("7"), Keys("8")],
        &[
            "lang en",
            "play welcome",
            "play lang_select",
            "stop",
            "play wrong_lang_sel",
            "play no_lang_sel",
            "stop",
            "play wrong_lang_sel",
            "stop",
            "play final",
        ],
    );
}

#[test]
fn debitcard_no_input_wrong_length_and_the_retry_key() {
    use S::*;
    check(
        "debitcard",
        &en(),
        &[
            Done,
            Done,
            Wait(10),
            Done,
            Keys("123#"),
            Done,
            Keys("99*"),
            Keys("0000701234"),
            Auth(0, "1", 0),
        ],
        &[
            "lang en",
            "play welcome",
            "play enter_card_num",
            "play no_card_entered",
            "play invalid_digits",
            // The retry key starts the field again with its prompt.
            "play enter_card_num",
            "stop",
            "auth1 000070 pin=1234",
            "play you_have one dollar",
        ],
    );
    // Four wrong lengths: three retries, then the final prompt.
    check(
        "debitcard",
        &en(),
        &[Done, Keys("1#"), Keys("1#"), Keys("1#"), Keys("1#"), Done],
        &[
            "lang en",
            "play welcome",
            "play enter_card_num",
            "stop",
            "play invalid_digits",
            "stop",
            "play invalid_digits",
            "stop",
            "play invalid_digits",
            "stop",
            "play final",
            "hangup normal",
        ],
    );
}

#[test]
fn debitcard_failed_authentication_is_retried_three_times() {
    use S::*;
    check(
        "debitcard",
        &en(),
        &[
            Done,
            Keys("1111111111"),
            Auth(2, "", 0),
            Keys("2222222222"),
            Auth(1, "", 0),
            Keys("3333333333"),
            Auth(14, "", 0),
            Keys("4444444444"),
            Auth(2, "", 0),
            Done,
        ],
        &[
            "lang en",
            "play welcome",
            "play enter_card_num",
            "stop",
            "auth1 111111 pin=1111",
            "play auth_fail",
            "stop",
            "auth1 222222 pin=2222",
            "play auth_fail",
            "stop",
            "auth1 333333 pin=3333",
            "play auth_fail",
            "stop",
            "auth1 444444 pin=4444",
            "play final",
            "hangup normal",
        ],
    );
}

#[test]
fn debitcard_every_phase_one_refusal() {
    use S::*;
    for (code, prompt) in [
        (3, "account_in_use"),
        (4, "zero_bal"),
        (6, "zero_bal"),
        (5, "card_expired"),
        (10, "final"),
        (8, "technical_problem"),
        (7, "technical_problem"),
    ] {
        check(
            "debitcard",
            &en(),
            &[Done, Keys("0000701234"), Auth(code, "", 0), Done],
            &[
                "lang en",
                "play welcome",
                "play enter_card_num",
                "stop",
                "auth1 000070 pin=1234",
                &format!("play {prompt}"),
                "hangup normal",
            ],
        );
    }
    // 51/52: the caller is connected to the redirect (customer service) number.
    check(
        "debitcard",
        &en(),
        &[
            Done,
            Keys("0000701234"),
            Auth(52, "", 0),
            Done,
            Ended("called_hangup"),
        ],
        &[
            "lang en",
            "play welcome",
            "play enter_card_num",
            "stop",
            "auth1 000070 pin=1234",
            "play connect_cust_ser",
            "bridge 18005550100",
            "hangup normal",
        ],
    );
}

#[test]
fn debitcard_every_phase_two_answer_and_bridge_end() {
    use S::*;
    let to_destination = [
        Done,
        Keys("0000701234"),
        Auth(0, "32.91", 0),
        Done,
        Keys("1900555#"),
    ];
    let head = [
        "lang en",
        "play welcome",
        "play enter_card_num",
        "stop",
        "auth1 000070 pin=1234",
        BALANCE,
        "play enter_dest",
        "stop",
        "auth2 000070 pin=1234 dest=1900555",
    ];
    for (code, prompt, back_to_dest) in [
        (9, "dest_collect_fail", true),
        (12, "insufficient_funds", true),
        (13, "toll_free", true),
        (3, "account_in_use", false),
        (4, "zero_bal", false),
        (5, "card_expired", false),
        (8, "technical_problem", false),
    ] {
        let mut script = to_destination.to_vec();
        script.extend([Auth(code, "", 0), Done]);
        let mut want: Vec<String> = head.iter().map(|s| s.to_string()).collect();
        want.push(format!("play {prompt}"));
        want.push(if back_to_dest {
            "play enter_dest".into()
        } else {
            "hangup normal".into()
        });
        assert_eq!(run("debitcard", &en(), &script), want, "code {code}");
    }
    // 51 (a hotline card): the call goes to the redirect number instead, with no prompt.
    let mut script = to_destination.to_vec();
    script.extend([Auth(51, "", 0), Ended("called_hangup")]);
    let mut want: Vec<String> = head.iter().map(|s| s.to_string()).collect();
    want.extend(["bridge 18005550100".into(), "hangup normal".into()]);
    assert_eq!(run("debitcard", &en(), &script), want, "code 51");
    // Busy, unreachable and no answer go back to destination entry with their prompts.
    for (end, prompt) in [
        ("busy", "dest_busy"),
        ("unreachable", "dest_unreachable"),
        ("no_answer", "dest_unreachable"),
        ("failed", "dest_unreachable"),
    ] {
        let mut script = to_destination.to_vec();
        script.extend([Auth(0, "32.91", 20900), Done, Ended(end), Done]);
        let got = run("debitcard", &en(), &script);
        let tail: Vec<&str> = got[got.len() - 3..].iter().map(String::as_str).collect();
        assert_eq!(
            tail,
            [
                "bridge 1900555",
                &format!("play {prompt}"),
                "play enter_dest"
            ],
            "{end}"
        );
    }
}

#[test]
fn long_pound_and_called_hang_up_return_to_destination_with_a_fresh_balance() {
    use S::*;
    check(
        "debitcard",
        &en(),
        &[
            Done,
            Keys("0000701234"),
            Auth(0, "32.91", 0),
            Done,
            Keys("5555233#"),
            Auth(0, "32.91", 20900),
            Done,
            LongPound,
            Ended("long_pound"),
            Auth(0, "30.00", 0),
            Done,
            Keys("4420#"),
            Auth(0, "30.00", 3600),
            Done,
            Ended("called_hangup"),
            Auth(0, "29.50", 0),
        ],
        &[
            "lang en",
            "play welcome",
            "play enter_card_num",
            "stop",
            "auth1 000070 pin=1234",
            BALANCE,
            "play enter_dest",
            "stop",
            "auth2 000070 pin=1234 dest=5555233",
            TIME,
            "bridge 5555233",
            "end-bridge",
            // No card entry again: phase 1 with the card already known, then a fresh balance.
            "auth1 000070 pin=1234",
            "play you_have thirty dollars",
            "play enter_dest",
            "stop",
            "auth2 000070 pin=1234 dest=4420",
            "play you_have one hour",
            "bridge 4420",
            "auth1 000070 pin=1234",
            "play you_have twenty nine dollars and fifty cents",
        ],
    );
}

#[test]
fn debitcard_acct_pin_two_prompts_and_invalid_account() {
    use S::*;
    check(
        "debitcard_acct_pin",
        &en(),
        &[
            Done,
            Keys("000070"),
            Keys("9999"),
            Auth(2, "", 0),
            Keys("000070"),
            Keys("1234"),
            Auth(0, "32.91", 0),
        ],
        &[
            "lang en",
            "play welcome",
            "play enter_acct",
            "stop",
            "play enter_pin",
            "stop",
            "auth1 000070 pin=9999",
            "play invalid_account",
            "stop",
            "play enter_pin",
            "stop",
            "auth1 000070 pin=1234",
            BALANCE,
        ],
    );
    // Typed ahead during the welcome prompt: the fields take the digits at once.
    check(
        "debitcard_acct_pin",
        &en(),
        &[Keys("0000701234"), Done, Auth(0, "32.91", 0)],
        &[
            "lang en",
            "play welcome",
            "play enter_acct",
            "stop",
            "play enter_pin",
            "stop",
            "auth1 000070 pin=1234",
            BALANCE,
        ],
    );
}

#[test]
fn clid_authen_collect_uses_the_caller_number_first() {
    use S::*;
    check(
        "clid_authen_collect",
        &en(),
        &[Done, Auth(0, "10.00", 0)],
        &[
            "lang en",
            "play welcome",
            "auth1 4085551234",
            "play you_have ten dollars",
        ],
    );
    check(
        "clid_authen_collect",
        &en(),
        &[
            Done,
            Auth(1, "", 0),
            Keys("000070"),
            Keys("1234"),
            Auth(0, "32.91", 0),
        ],
        &[
            "lang en",
            "play welcome",
            "auth1 4085551234",
            "play enter_acct",
            "stop",
            "play enter_pin",
            "stop",
            "auth1 000070 pin=1234",
            BALANCE,
        ],
    );
    check(
        "clid_authen_collect",
        &en(),
        &[Done, Auth(4, "", 0), Done],
        &[
            "lang en",
            "play welcome",
            "auth1 4085551234",
            "play zero_bal",
            "hangup normal",
        ],
    );
}

#[test]
fn clid_col_npw_3_gives_three_tries_at_a_pin() {
    use S::*;
    check(
        "clid_col_npw_3",
        &en(),
        &[
            Done,
            Auth(2, "", 0),
            Keys("1111"),
            Auth(2, "", 0),
            Keys("2222"),
            Auth(2, "", 0),
            Keys("3333"),
            Auth(2, "", 0),
            Done,
        ],
        &[
            "lang en",
            "play welcome",
            "auth1 4085551234",
            "play enter_pin",
            "stop",
            "auth1 4085551234 pin=1111",
            "play enter_pin",
            "stop",
            "auth1 4085551234 pin=2222",
            "play enter_pin",
            "stop",
            "auth1 4085551234 pin=3333",
            "play final",
            "hangup normal",
        ],
    );
    check(
        "clid_col_npw_3",
        &en(),
        &[Done, Auth(0, "0.01", 0)],
        &[
            "lang en",
            "play welcome",
            "auth1 4085551234",
            "play you_have one cent",
        ],
    );
}

#[test]
fn pinless_dials_the_destination_after_the_access_number() {
    use S::*;
    let ctx = Context {
        access_number: "5551201".into(),
        uri_destination: "5555233".into(),
        ..en()
    };
    check(
        "pinless",
        &ctx,
        &[
            Auth(0, "10.00", 0),
            Auth(0, "10.00", 6350),
            Done,
            LongPound,
            Ended("long_pound"),
            Auth(0, "9.00", 0),
            Done,
            Keys("4420#"),
            Auth(13, "", 0),
            Done,
        ],
        &[
            "lang en",
            "auth1 4085551234",
            "auth2 4085551234 pin= dest=5555233",
            "play you_have one hour and forty five minutes",
            "bridge 5555233",
            "end-bridge",
            "auth1 4085551234 pin=",
            "play you_have nine dollars",
            "play enter_dest",
            "stop",
            "auth2 4085551234 pin= dest=4420",
            "play toll_free",
            "play enter_dest",
        ],
    );
    check(
        "pinless",
        &ctx,
        &[Auth(10, "", 0), Done],
        &["lang en", "auth1 4085551234", "play final", "hangup normal"],
    );
}

#[test]
fn the_spanish_and_mandarin_callers_hear_their_grammar() {
    use S::*;
    let three = Context {
        languages: vec!["en".into(), "es".into(), "zh".into()],
        ..en()
    };
    let got = run(
        "debitcard",
        &three,
        &[
            Done,
            Done,
            Keys("3"),
            Keys("0000701234"),
            Auth(0, "32.91", 0),
        ],
    );
    assert_eq!(
        got.last().unwrap(),
        "play you_have san shi er yuan jiu jiao yi fen"
    );
    let got = run(
        "debitcard",
        &three,
        &[
            Done,
            Done,
            Keys("2"),
            Keys("0000701234"),
            Auth(0, "32.91", 0),
        ],
    );
    assert_eq!(
        got.last().unwrap(),
        "play you_have treinta y dos dolares y noventa y un centavos"
    );
}

#[test]
fn every_flow_answers_every_phase_one_code_it_handles() {
    use S::*;
    // (flow, keys to reach the first authorization, that authorization's rendering)
    let fronts: [(&str, &[S], &str); 4] = [
        (
            "debitcard_acct_pin",
            &[Done, Keys("000070"), Keys("1234")],
            "auth1 000070 pin=1234",
        ),
        ("clid_authen_collect", &[Done], "auth1 4085551234"),
        ("clid_col_npw_3", &[Done], "auth1 4085551234"),
        ("pinless", &[], "auth1 4085551234"),
    ];
    for (flow, front, auth) in fronts {
        for (code, then) in [
            (3, "play account_in_use"),
            (4, "play zero_bal"),
            (6, "play zero_bal"),
            (5, "play card_expired"),
            (10, "play final"),
        ] {
            let mut script = front.to_vec();
            script.push(Auth(code, "", 0));
            let got = run(flow, &en(), &script);
            let i = got
                .iter()
                .position(|a| a == auth)
                .unwrap_or_else(|| panic!("{flow}: {got:?}"));
            assert_eq!(
                got.get(i + 1).map(String::as_str),
                Some(then),
                "{flow} code {code}: {got:?}"
            );
        }
    }
    // Failed authentication: each flow's own recovery.
    let got = run("clid_authen_collect", &en(), &[Done, Auth(2, "", 0)]);
    assert_eq!(got.last().unwrap(), "play enter_acct");
    let got = run("clid_col_npw_3", &en(), &[Done, Auth(1, "", 0), Done]);
    assert_eq!(
        got[got.len() - 2..],
        ["play final", "hangup normal"],
        "an unknown number gets no PIN tries"
    );
    let got = run("pinless", &en(), &[Auth(1, "", 0), Done]);
    assert_eq!(
        got[got.len() - 2..],
        ["play technical_problem", "hangup normal"]
    );
}

#[test]
fn debitcard_acct_pin_gives_up_after_the_retry_limit() {
    use S::*;
    let mut script = vec![Done, Keys("000070"), Keys("1111"), Auth(2, "", 0)];
    for _ in 0..3 {
        script.extend([Keys("000070"), Keys("1111"), Auth(2, "", 0)]);
    }
    script.push(Done);
    let got = run("debitcard_acct_pin", &en(), &script);
    assert_eq!(got.iter().filter(|a| a.starts_with("auth1")).count(), 4);
    assert_eq!(
        got.iter().filter(|a| *a == "play invalid_account").count(),
        3
    );
    assert_eq!(got[got.len() - 2..], ["play final", "hangup normal"]);
}

#[test]
fn type_ahead_keeps_a_card_a_pin_and_a_destination_and_no_more() {
    use S::*;
    // A peer streams a thousand digits over the welcome prompt, which cannot be interrupted.
    let flood: &'static str = Box::leak("0000701234".repeat(100).into_boxed_str());
    let log = run(
        "debitcard",
        &en(),
        &[Keys(flood), Done, Auth(0, "32.91", 0), Done, Wait(6)],
    );
    assert!(
        log.contains(&"auth1 000070 pin=1234".to_string()),
        "{log:?}"
    );
    // 32 keys were kept: 10 for the card, 22 become the destination; the rest were dropped.
    let dest = log
        .iter()
        .find_map(|l| l.strip_prefix("auth2 000070 pin=1234 dest="))
        .unwrap_or_else(|| panic!("{log:?}"));
    assert_eq!(dest, &"0000701234".repeat(4)[10..32]);
}
