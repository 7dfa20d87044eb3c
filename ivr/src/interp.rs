//! Running a flow for one call, without I/O: events go in with the current time (a digit, a
//! prompt finished, an authorization answer, the bridge ended, a long pound, the credit
//! warning, a timer), actions come out (play these prompts, stop playing, set the language,
//! authorize, bridge, end the bridge, hang up). The call task in `b2bua` drives it; the tests
//! drive it directly with scripts of events.

use crate::flow::{Collect, Flow, Menu, SayKind, Step};
use prompts::say::{self, Lang};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the call knows before the flow starts.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The caller's number.
    pub ani: String,
    /// The access number dialled.
    pub access_number: String,
    /// Languages the access number offers, the first being its default.
    pub languages: Vec<String>,
    /// For pinless access numbers: the digits dialled after the access number.
    pub uri_destination: String,
    /// A softphone subscriber's card, which its digest already proved (empty for anyone
    /// else): the flow's `card` variable.
    pub card: String,
}

/// The authorizer's answer, as the flow uses it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthResult {
    /// The return code (seed 003, Table 7).
    pub code: u8,
    /// Money available, as `units.cents` (`32.91`).
    pub amount: String,
    /// Seconds of talk time (phase 2).
    pub credit_seconds: u64,
    /// The card's preferred language, if it has one.
    pub language: String,
    /// Where return codes 51 and 52 send the caller (called party or customer service).
    pub redirect: String,
}

/// What happens to the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A key (from any DTMF source).
    Digit(char),
    /// The prompts asked for have finished.
    PromptDone,
    /// The answer to an [`Action::Authorize`].
    Auth(AuthResult),
    /// The bridge ended, and why.
    BridgeEnded(crate::BridgeEnd),
    /// The caller held `#`.
    LongPound,
    /// The credit ends in `warning_seconds`.
    CreditWarning,
}

/// What the call must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Play prompts (names in the current language) to the caller.
    Play {
        prompts: Vec<String>,
        barge_in: bool,
    },
    /// Stop the prompt playing now.
    StopPlayback,
    /// Use this language from now on.
    SetLanguage(String),
    /// Ask the authorizer.
    Authorize {
        phase: u8,
        account: String,
        pin: Option<String>,
        destination: Option<String>,
    },
    /// Connect the caller to a destination.
    Bridge { destination: String },
    /// End the bridge (long pound); a [`Event::BridgeEnded`] follows.
    EndBridge,
    /// End the call.
    Hangup { cause: String },
}

#[derive(Debug, Clone)]
enum Wait {
    /// Running states; nothing to wait for.
    Nothing,
    /// A prompt is playing; then go to `next`.
    Prompt { barge_in: bool, next: String },
    /// Collecting digits.
    Digits { buf: String, prompt_playing: bool },
    /// Waiting for a menu key.
    Key { prompt_playing: bool },
    /// Waiting for the authorizer.
    Auth,
    /// Bridged.
    Bridge { ending: bool },
    /// The call is over.
    Done,
}

/// Keys kept ahead by default (see [`Session::on_event`]'s type-ahead): a 6-digit card with a
/// 4-digit PIN and a destination of up to 22 digits.
pub const TYPEAHEAD: u32 = 32;

/// One call's run of a flow.
pub struct Session {
    flow: Arc<Flow>,
    state: String,
    vars: BTreeMap<String, String>,
    lang: String,
    languages: Vec<String>,
    retries: HashMap<String, u32>,
    visits: HashMap<String, u32>,
    typeahead: VecDeque<char>,
    wait: Wait,
    deadline: Option<Instant>,
}

impl Session {
    /// Starts a flow; the first actions come back.
    pub fn start(flow: Arc<Flow>, ctx: &Context, now: Instant) -> (Session, Vec<Action>) {
        let mut vars = BTreeMap::new();
        vars.insert("ani".into(), ctx.ani.clone());
        vars.insert("dnis".into(), ctx.access_number.clone());
        vars.insert("uri_destination".into(), ctx.uri_destination.clone());
        vars.insert("card".into(), ctx.card.clone());
        let languages = if ctx.languages.is_empty() {
            vec!["en".to_string()]
        } else {
            ctx.languages.clone()
        };
        let mut s = Session {
            state: flow.start.clone(),
            flow,
            vars,
            lang: languages[0].clone(),
            languages,
            retries: HashMap::new(),
            visits: HashMap::new(),
            typeahead: VecDeque::new(),
            wait: Wait::Nothing,
            deadline: None,
        };
        let mut out = vec![Action::SetLanguage(s.lang.clone())];
        s.enter(now, &mut out);
        (s, out)
    }

    /// The flow being run.
    pub fn flow(&self) -> &Flow {
        &self.flow
    }

    /// The state the call is in.
    pub fn state(&self) -> &str {
        &self.state
    }

    /// A variable (`account`, `destination`, `balance` …).
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// The language in use.
    pub fn language(&self) -> &str {
        &self.lang
    }

    /// Whether the flow has hung up.
    pub fn is_done(&self) -> bool {
        matches!(self.wait, Wait::Done)
    }

    /// When [`Session::on_timer`] must be called.
    pub fn next_wake(&self) -> Option<Instant> {
        self.deadline
    }

    fn step(&self) -> Step {
        self.flow
            .states
            .get(&self.state)
            .cloned()
            .unwrap_or(Step::Hangup {
                cause: format!("no state `{}`", self.state),
            })
    }

    fn go(&mut self, to: &str, now: Instant, out: &mut Vec<Action>) {
        self.state = to.to_string();
        self.enter(now, out);
    }

    fn value(&self, name: &str) -> String {
        self.vars.get(name).cloned().unwrap_or_default()
    }

    fn say_lang(&self) -> Lang {
        Lang::from_code(&self.lang).unwrap_or(Lang::En)
    }

    /// Runs states until one waits.
    fn enter(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.deadline = None;
        for _ in 0..1000 {
            if let Some((max, then)) = self.flow.limits.get(&self.state) {
                let n = self.visits.entry(self.state.clone()).or_insert(0);
                *n += 1;
                if *n > *max {
                    self.state = then.clone();
                    continue;
                }
            }
            let step = self.step();
            match step {
                Step::Play {
                    prompts,
                    barge_in,
                    next,
                } => {
                    out.push(Action::Play { prompts, barge_in });
                    self.wait = Wait::Prompt { barge_in, next };
                    return;
                }
                Step::Say {
                    kind,
                    value,
                    before,
                    after,
                    next,
                } => {
                    let v = self.value(&value);
                    let lang = self.say_lang();
                    let said: Vec<&str> = match kind {
                        SayKind::Amount => {
                            let (u, c) = v.split_once('.').unwrap_or((&v, "0"));
                            let cents = format!("{c:0<2}");
                            say::say_money(
                                lang,
                                u.parse().unwrap_or(0),
                                cents[..2].parse().unwrap_or(0),
                            )
                        }
                        SayKind::Time => say::say_duration(lang, v.parse().unwrap_or(0)),
                        SayKind::Number => say::say_number(lang, v.parse().unwrap_or(0)),
                        SayKind::Digits => say::say_digits(lang, &v),
                    };
                    let prompts = before
                        .into_iter()
                        .chain(said.into_iter().map(str::to_string))
                        .chain(after)
                        .collect();
                    out.push(Action::Play {
                        prompts,
                        barge_in: true,
                    });
                    self.wait = Wait::Prompt {
                        barge_in: true,
                        next,
                    };
                    return;
                }
                Step::Collect(c) => {
                    let prompt = c.prompt.clone();
                    self.start_collect(&c, prompt, now, out);
                    return;
                }
                Step::Menu(m) => {
                    if m.languages && self.languages.len() <= 1 {
                        // One language: nothing to choose.
                        let next = m.next.clone().unwrap_or_default();
                        self.state = next;
                        continue;
                    }
                    let prompt = m.prompt.clone();
                    self.start_menu(&m, prompt, now, out);
                    return;
                }
                Step::Authorize {
                    phase,
                    account,
                    pin,
                    destination,
                    ..
                } => {
                    out.push(Action::Authorize {
                        phase,
                        account: self.value(&account),
                        pin: pin.map(|p| self.value(&p)),
                        destination: destination.map(|d| self.value(&d)),
                    });
                    self.wait = Wait::Auth;
                    return;
                }
                Step::Set {
                    vars,
                    split,
                    clear_retries,
                    next,
                } => {
                    for (k, v) in vars {
                        // `$name` copies a variable; anything else is a literal.
                        let v = match v.strip_prefix('$') {
                            Some(src) => self.value(src),
                            None => v,
                        };
                        if k == "language" {
                            self.lang = v.clone();
                            out.push(Action::SetLanguage(v.clone()));
                        }
                        self.vars.insert(k, v);
                    }
                    if let Some((var, at, [a, b])) = split {
                        let v = self.value(&var);
                        let at = (at as usize).min(v.len());
                        self.vars.insert(a, v[..at].to_string());
                        self.vars.insert(b, v[at..].to_string());
                    }
                    if clear_retries {
                        self.retries.clear();
                    }
                    self.state = next;
                }
                Step::Bridge { destination, .. } => {
                    out.push(Action::Bridge {
                        destination: self.value(&destination),
                    });
                    self.wait = Wait::Bridge { ending: false };
                    return;
                }
                Step::Hangup { cause } => {
                    out.push(Action::Hangup { cause });
                    self.wait = Wait::Done;
                    return;
                }
                Step::Goto(next) => self.state = next,
            }
        }
        out.push(Action::Hangup {
            cause: "flow ran without waiting for input".into(),
        });
        self.wait = Wait::Done;
    }

    fn start_collect(
        &mut self,
        c: &Collect,
        prompt: Vec<String>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let playing = !prompt.is_empty();
        if playing {
            out.push(Action::Play {
                prompts: prompt,
                barge_in: true,
            });
        }
        self.wait = Wait::Digits {
            buf: String::new(),
            prompt_playing: playing,
        };
        if !playing {
            self.deadline = Some(now + Duration::from_secs(c.first_timeout as u64));
        }
        // Type-ahead: keys pressed before this field was asked for belong to it.
        while let Some(d) = self.typeahead.pop_front() {
            if !matches!(self.wait, Wait::Digits { .. }) || self.state_is_not_collect() {
                self.typeahead.push_front(d);
                break;
            }
            self.collect_digit(d, now, out);
        }
    }

    fn state_is_not_collect(&self) -> bool {
        !matches!(self.step(), Step::Collect(_))
    }

    fn start_menu(&mut self, m: &Menu, prompt: Vec<String>, now: Instant, out: &mut Vec<Action>) {
        let playing = !prompt.is_empty();
        if playing {
            out.push(Action::Play {
                prompts: prompt,
                barge_in: true,
            });
        }
        self.wait = Wait::Key {
            prompt_playing: playing,
        };
        if !playing {
            self.deadline = Some(now + Duration::from_secs(m.timeout as u64));
        }
        if let Some(d) = self.typeahead.pop_front() {
            self.menu_key(d, now, out);
        }
    }

    /// Counts a failed attempt at the current field; true when the retries are spent.
    fn spend_retry(&mut self, allowed: u32) -> bool {
        let n = self.retries.entry(self.state.clone()).or_insert(0);
        *n += 1;
        *n > allowed
    }

    fn collect_digit(&mut self, d: char, now: Instant, out: &mut Vec<Action>) {
        let Step::Collect(c) = self.step() else {
            return;
        };
        let Wait::Digits {
            buf,
            prompt_playing,
        } = &mut self.wait
        else {
            return;
        };
        if *prompt_playing {
            *prompt_playing = false;
            out.push(Action::StopPlayback);
        }
        if Some(d) == c.retry_key {
            buf.clear();
            let prompt = c.prompt.clone();
            return self.start_collect(&c, prompt, now, out);
        }
        if Some(d) == c.terminator {
            return self.finish_collect(&c, now, out);
        }
        if !d.is_ascii_digit() {
            return;
        }
        buf.push(d);
        if buf.len() as u32 >= c.max {
            return self.finish_collect(&c, now, out);
        }
        self.deadline = Some(now + Duration::from_secs(c.inter_timeout as u64));
    }

    fn finish_collect(&mut self, c: &Collect, now: Instant, out: &mut Vec<Action>) {
        let Wait::Digits { buf, .. } = &self.wait else {
            return;
        };
        let buf = buf.clone();
        self.deadline = None;
        let len = buf.len() as u32;
        if len >= c.min && len <= c.max && !buf.is_empty() {
            self.vars.insert(c.into.clone(), buf);
            self.retries.remove(&self.state);
            let next = c.next.clone();
            return self.go(&next, now, out);
        }
        let prompt = if buf.is_empty() {
            c.no_input.clone()
        } else {
            c.wrong_length.clone()
        };
        if self.spend_retry(c.retries) {
            let fail = c.fail.clone();
            return self.go(&fail, now, out);
        }
        // The error prompt asks again; the main prompt is not repeated.
        self.typeahead.clear();
        self.start_collect(c, prompt, now, out);
    }

    fn menu_key(&mut self, d: char, now: Instant, out: &mut Vec<Action>) {
        let Step::Menu(m) = self.step() else { return };
        if let Wait::Key {
            prompt_playing: true,
        } = self.wait
        {
            out.push(Action::StopPlayback);
            self.wait = Wait::Key {
                prompt_playing: false,
            };
        }
        self.deadline = None;
        if m.languages {
            let idx = d.to_digit(10).map(|n| n as usize);
            if let Some(lang) = idx
                .filter(|i| *i >= 1)
                .and_then(|i| self.languages.get(i - 1))
                .cloned()
            {
                self.lang = lang.clone();
                self.vars.insert("language".into(), lang.clone());
                out.push(Action::SetLanguage(lang));
                self.retries.remove(&self.state);
                let next = m.next.clone().unwrap_or_default();
                return self.go(&next, now, out);
            }
        } else if let Some(next) = m.options.get(&d).cloned() {
            self.retries.remove(&self.state);
            return self.go(&next, now, out);
        }
        self.menu_retry(&m, m.invalid.clone(), now, out);
    }

    fn menu_retry(&mut self, m: &Menu, prompt: Vec<String>, now: Instant, out: &mut Vec<Action>) {
        if self.spend_retry(m.retries) {
            let fail = m.fail.clone();
            return self.go(&fail, now, out);
        }
        self.typeahead.clear();
        self.start_menu(m, prompt, now, out);
    }

    /// Keeps a key pressed before it was asked for, up to the flow's `typeahead` parameter
    /// (default [`TYPEAHEAD`]): enough for a card, a PIN and a destination typed over a
    /// prompt, and no more, so a peer streaming digits cannot grow a call's memory.
    fn type_ahead(&mut self, d: char) {
        let cap = self.flow.param("typeahead", TYPEAHEAD) as usize;
        if self.typeahead.len() < cap {
            self.typeahead.push_back(d);
        }
    }

    /// Something happened.
    pub fn on_event(&mut self, ev: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match (ev, self.wait.clone()) {
            (_, Wait::Done) => {}
            (Event::Digit(d), Wait::Prompt { barge_in, next }) => {
                self.type_ahead(d);
                if barge_in {
                    out.push(Action::StopPlayback);
                    self.go(&next, now, &mut out);
                }
            }
            (Event::PromptDone, Wait::Prompt { next, .. }) => self.go(&next, now, &mut out),
            (Event::Digit(d), Wait::Digits { .. }) => self.collect_digit(d, now, &mut out),
            (
                Event::PromptDone,
                Wait::Digits {
                    buf,
                    prompt_playing: true,
                },
            ) => {
                let Step::Collect(c) = self.step() else {
                    return out;
                };
                let wait = if buf.is_empty() {
                    c.first_timeout
                } else {
                    c.inter_timeout
                };
                self.wait = Wait::Digits {
                    buf,
                    prompt_playing: false,
                };
                self.deadline = Some(now + Duration::from_secs(wait as u64));
            }
            (Event::Digit(d), Wait::Key { .. }) => self.menu_key(d, now, &mut out),
            (
                Event::PromptDone,
                Wait::Key {
                    prompt_playing: true,
                },
            ) => {
                let Step::Menu(m) = self.step() else {
                    return out;
                };
                self.wait = Wait::Key {
                    prompt_playing: false,
                };
                self.deadline = Some(now + Duration::from_secs(m.timeout as u64));
            }
            (Event::Auth(r), Wait::Auth) => {
                let Step::Authorize { on, default, .. } = self.step() else {
                    return out;
                };
                self.vars.insert("return_code".into(), r.code.to_string());
                if !r.redirect.is_empty() {
                    self.vars
                        .insert("redirect_number".into(), r.redirect.clone());
                }
                if r.code == 0 {
                    self.vars.insert("balance".into(), r.amount.clone());
                    self.vars
                        .insert("credit_time".into(), r.credit_seconds.to_string());
                    if !r.language.is_empty()
                        && r.language != self.lang
                        && self.languages.len() <= 1
                    {
                        // The card's language applies when the caller was not asked to choose.
                        self.lang = r.language.clone();
                        out.push(Action::SetLanguage(r.language.clone()));
                    }
                }
                let next = on.get(&r.code).cloned().or(default);
                match next {
                    Some(n) => self.go(&n, now, &mut out),
                    None => {
                        out.push(Action::Hangup {
                            cause: format!("unhandled return code {}", r.code),
                        });
                        self.wait = Wait::Done;
                    }
                }
            }
            (Event::LongPound, Wait::Bridge { ending: false })
                if self.flow.param("long_pound", 1) != 0 =>
            {
                out.push(Action::EndBridge);
                self.wait = Wait::Bridge { ending: true };
            }
            (Event::CreditWarning, Wait::Bridge { .. }) => {
                if let Step::Bridge { warning, .. } = self.step() {
                    if !warning.is_empty() {
                        out.push(Action::Play {
                            prompts: warning,
                            barge_in: false,
                        });
                    }
                }
            }
            (Event::BridgeEnded(reason), Wait::Bridge { .. }) => {
                let Step::Bridge { on, .. } = self.step() else {
                    return out;
                };
                match on
                    .get(&reason)
                    .or_else(|| on.get(&crate::BridgeEnd::Failed))
                    .cloned()
                {
                    Some(n) => self.go(&n, now, &mut out),
                    None => {
                        out.push(Action::Hangup {
                            cause: format!("call ended: {reason}"),
                        });
                        self.wait = Wait::Done;
                    }
                }
            }
            // A key while waiting for the network (or for a bridge the caller ended to wind
            // down) is type-ahead for the next field.
            (Event::Digit(d), Wait::Auth | Wait::Nothing | Wait::Bridge { ending: true }) => {
                self.type_ahead(d)
            }
            _ => {}
        }
        out
    }

    /// Time passes: a collect or menu timeout fires.
    pub fn on_timer(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.deadline.is_none_or(|d| d > now) {
            return out;
        }
        self.deadline = None;
        match (self.step(), self.wait.clone()) {
            (Step::Collect(c), Wait::Digits { .. }) => self.finish_collect(&c, now, &mut out),
            (Step::Menu(m), Wait::Key { .. }) => {
                self.menu_retry(&m, m.no_input.clone(), now, &mut out)
            }
            _ => {}
        }
        out
    }
}
