//! The flow format: YAML files of named states, each doing one thing (play, say, collect,
//! menu, authorize, set, bridge, hangup, goto), loaded and checked before any call uses them.
//! Every error names the file, the line and the state, because ITSPs write these files.

use crate::BridgeEnd;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

/// A number in a flow: a literal, a parameter name, or a sum of them (`uid_len+pin_len`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Num {
    /// A literal.
    Lit(u32),
    /// Parameter names added up.
    Expr(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlayFile {
    prompts: Vec<String>,
    #[serde(default = "yes")]
    barge_in: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SayFile {
    /// amount, time, number or digits.
    what: String,
    /// The variable holding the value.
    value: String,
    #[serde(default)]
    before: Vec<String>,
    #[serde(default)]
    after: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CollectFile {
    into: String,
    #[serde(default)]
    prompt: Vec<String>,
    min: Num,
    max: Num,
    #[serde(default = "pound")]
    terminator: Option<char>,
    #[serde(default)]
    retry_key: Option<char>,
    #[serde(default = "first_timeout")]
    first_digit_timeout_s: u32,
    #[serde(default = "inter_timeout")]
    inter_digit_timeout_s: u32,
    #[serde(default)]
    no_input: Vec<String>,
    #[serde(default)]
    wrong_length: Vec<String>,
    #[serde(default)]
    retries: Option<Num>,
    next: String,
    fail: String,
}

fn pound() -> Option<char> {
    Some('#')
}
fn first_timeout() -> u32 {
    10
}
fn inter_timeout() -> u32 {
    5
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct MenuFile {
    prompt: Vec<String>,
    /// Key → state to go to.
    #[serde(default)]
    options: BTreeMap<String, String>,
    /// A language menu: keys 1, 2, 3 … choose the access number's languages in order; skipped
    /// when it offers only one.
    #[serde(default)]
    languages: bool,
    #[serde(default)]
    invalid: Vec<String>,
    #[serde(default)]
    no_input: Vec<String>,
    #[serde(default = "first_timeout")]
    timeout_s: u32,
    #[serde(default)]
    retries: Option<Num>,
    #[serde(default)]
    next: Option<String>,
    fail: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorizeFile {
    phase: u8,
    account: String,
    #[serde(default)]
    pin: Option<String>,
    #[serde(default)]
    destination: Option<String>,
    /// Return code (or codes, comma-separated) → state; `default` for the rest.
    on: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SplitFile {
    var: String,
    at: Num,
    into: [String; 2],
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetFile {
    #[serde(default)]
    vars: BTreeMap<String, String>,
    #[serde(default)]
    split: Option<SplitFile>,
    #[serde(default)]
    clear_retries: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct BridgeFile {
    destination: String,
    /// Prompts played to the caller `warning_seconds` before the credit ends.
    #[serde(default)]
    warning: Vec<String>,
    /// End reason → state: busy, no_answer, unreachable, called_hangup, long_pound,
    /// credit_exhausted, failed.
    on: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct HangupFile {
    cause: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitFile {
    visits: Num,
    then: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    /// Entered more than `visits` times in one call, the state sends the call to `then`
    /// instead (retry limits across states, such as failed authentications).
    #[serde(default)]
    limit: Option<LimitFile>,
    #[serde(default)]
    play: Option<PlayFile>,
    #[serde(default)]
    say: Option<SayFile>,
    #[serde(default)]
    collect: Option<CollectFile>,
    #[serde(default)]
    menu: Option<MenuFile>,
    #[serde(default)]
    authorize: Option<AuthorizeFile>,
    #[serde(default)]
    set: Option<SetFile>,
    #[serde(default)]
    bridge: Option<BridgeFile>,
    #[serde(default)]
    hangup: Option<HangupFile>,
    #[serde(default)]
    goto: Option<String>,
    #[serde(default)]
    next: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlowFile {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    params: BTreeMap<String, u32>,
    start: Spanned<String>,
    states: BTreeMap<String, Spanned<StateFile>>,
}

/// What the caller is told to say a value as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SayKind {
    /// Money (`32.91`).
    Amount,
    /// Seconds, said as hours and minutes.
    Time,
    /// A number.
    Number,
    /// Digit by digit.
    Digits,
}

/// One state's action, resolved (parameters are numbers, targets are checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Play prompts.
    Play {
        prompts: Vec<String>,
        barge_in: bool,
        next: String,
    },
    /// Say a variable's value.
    Say {
        kind: SayKind,
        value: String,
        before: Vec<String>,
        after: Vec<String>,
        next: String,
    },
    /// Collect digits into a variable.
    Collect(Collect),
    /// A menu of keys.
    Menu(Menu),
    /// Ask the authorizer.
    Authorize {
        phase: u8,
        account: String,
        pin: Option<String>,
        destination: Option<String>,
        on: BTreeMap<u8, String>,
        default: Option<String>,
    },
    /// Set variables.
    Set {
        vars: BTreeMap<String, String>,
        split: Option<(String, u32, [String; 2])>,
        clear_retries: bool,
        next: String,
    },
    /// Connect the caller to the destination.
    Bridge {
        destination: String,
        warning: Vec<String>,
        on: BTreeMap<BridgeEnd, String>,
    },
    /// End the call.
    Hangup { cause: String },
    /// Go to another state.
    Goto(String),
}

/// A resolved `collect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collect {
    /// Variable to fill.
    pub into: String,
    /// Prompt played first (barge-in).
    pub prompt: Vec<String>,
    /// Fewest digits.
    pub min: u32,
    /// Most digits; reaching it ends the field without `#`.
    pub max: u32,
    /// The key that ends the field.
    pub terminator: Option<char>,
    /// The key that restarts the field.
    pub retry_key: Option<char>,
    /// Seconds to wait for the first digit after the prompt.
    pub first_timeout: u32,
    /// Seconds to wait between digits.
    pub inter_timeout: u32,
    /// Played when nothing was entered.
    pub no_input: Vec<String>,
    /// Played when too few or too many digits were entered.
    pub wrong_length: Vec<String>,
    /// Attempts after the first.
    pub retries: u32,
    /// Where to go with the digits.
    pub next: String,
    /// Where to go when the retries are spent.
    pub fail: String,
}

/// A resolved `menu`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Menu {
    /// The prompt.
    pub prompt: Vec<String>,
    /// Key → state.
    pub options: BTreeMap<char, String>,
    /// Keys choose the access number's languages.
    pub languages: bool,
    /// Played on a key that is not an option.
    pub invalid: Vec<String>,
    /// Played when no key was pressed.
    pub no_input: Vec<String>,
    /// Seconds to wait.
    pub timeout: u32,
    /// Attempts after the first.
    pub retries: u32,
    /// Where a language menu goes next.
    pub next: Option<String>,
    /// Where to go when the retries are spent.
    pub fail: String,
}

/// A loaded, checked flow.
#[derive(Debug, Clone)]
pub struct Flow {
    /// Its name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Parameters (`uid_len`, `pin_len`, `retries`, `warning_seconds`, `long_pound` …).
    pub params: BTreeMap<String, u32>,
    /// The first state.
    pub start: String,
    /// The states.
    pub states: BTreeMap<String, Step>,
    /// Per state: how many visits a call may make, and where it goes after.
    pub limits: BTreeMap<String, (u32, String)>,
}

/// Everything wrong with a flow file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowError {
    /// The file.
    pub file: String,
    /// `line: state: what`, one per mistake.
    pub errors: Vec<String>,
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_file_errors(f, &self.file, &self.errors)
    }
}

/// Every mistake in a YAML file, one per line as `file:line: where: what` (flows and the
/// daemon's configuration report the same way).
pub fn write_file_errors(f: &mut fmt::Formatter<'_>, file: &str, errors: &[String]) -> fmt::Result {
    for (i, e) in errors.iter().enumerate() {
        if i > 0 {
            writeln!(f)?;
        }
        write!(f, "{file}:{e}")?;
    }
    Ok(())
}

impl std::error::Error for FlowError {}

/// A YAML parse error as `line: what`, without the parser's own repetition of the position
/// (it words it "error: line L column C: what at line L, column C"). Flow files and the
/// daemon's configuration report their syntax errors this way.
pub fn yaml_error(e: &serde_saphyr::Error) -> String {
    let line = e.location().map(|l| l.line()).unwrap_or(0);
    let msg = e.to_string();
    let first = msg.lines().next().unwrap_or("");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let first = first
        .split_once(": ")
        .filter(|(p, _)| p.starts_with("line "))
        .map(|(_, m)| m)
        .unwrap_or(first);
    let first = first
        .rsplit_once(" at line ")
        .map(|(m, _)| m)
        .unwrap_or(first);
    format!("{line}: {first}")
}

/// Return codes each phase can answer (the store's rules; the redirects 50–53 come from
/// RADIUS billing servers). A branch on any other code could never be taken.
pub fn possible_codes(phase: u8) -> BTreeSet<u8> {
    let mut codes: BTreeSet<u8> = [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 14, 50, 51, 52, 53].into();
    if phase == 2 {
        codes.extend([9, 12, 13]);
    }
    codes
}

impl Flow {
    /// Parses and checks a flow. `prompts` is the set of prompt names a loaded prompt set has
    /// (every prompt the flow plays must be in it).
    pub fn parse(text: &str, file: &str, prompts: &HashSet<String>) -> Result<Flow, FlowError> {
        let fail = |errors| FlowError {
            file: file.to_string(),
            errors,
        };
        let raw: FlowFile = serde_saphyr::from_str(text).map_err(|e| fail(vec![yaml_error(&e)]))?;
        let mut errors = Vec::new();
        let mut states = BTreeMap::new();
        let mut limits = BTreeMap::new();
        let mut lines = BTreeMap::new();
        for (name, st) in &raw.states {
            let line = st.referenced.line();
            lines.insert(name.clone(), line);
            let mut err = |msg: String| errors.push(format!("{line}: {name}: {msg}"));
            if let Some(l) = &st.value.limit {
                let visits = eval(&l.visits, &raw.params, &mut err);
                limits.insert(name.clone(), (visits, l.then.clone()));
            }
            match resolve(&st.value, &raw.params, prompts, &mut err) {
                Some(step) => {
                    states.insert(name.clone(), step);
                }
                None => continue,
            }
        }
        if !raw.states.contains_key(&raw.start.value) {
            errors.push(format!(
                "{}: start: no state named `{}`",
                raw.start.referenced.line(),
                raw.start.value
            ));
        }
        // Every target exists.
        for (name, step) in &states {
            for t in targets(step)
                .into_iter()
                .chain(limits.get(name).map(|l| l.1.as_str()))
            {
                if !raw.states.contains_key(t) {
                    errors.push(format!(
                        "{}: {name}: goes to `{t}`, which is not a state",
                        lines[name]
                    ));
                }
            }
        }
        // Every state is reachable from the start.
        let mut seen = BTreeSet::new();
        let mut todo = vec![raw.start.value.clone()];
        while let Some(s) = todo.pop() {
            if !seen.insert(s.clone()) {
                continue;
            }
            if let Some(step) = states.get(&s) {
                todo.extend(targets(step).into_iter().map(str::to_string));
            }
            if let Some((_, then)) = limits.get(&s) {
                todo.push(then.clone());
            }
        }
        for name in states.keys() {
            if !seen.contains(name) {
                errors.push(format!(
                    "{}: {name}: unreachable from `{}`",
                    lines[name], raw.start.value
                ));
            }
        }
        // No loop without input: a cycle through states that neither wait for the caller nor
        // for the network would spin (or replay prompts) forever.
        for name in states.keys() {
            if let Some(cycle) = silent_cycle(name, &states) {
                errors.push(format!(
                    "{}: {name}: loops without input ({})",
                    lines[name],
                    cycle.join(" → ")
                ));
                break;
            }
        }
        if !errors.is_empty() {
            errors.sort_by_key(|e| {
                e.split(':')
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0)
            });
            errors.dedup();
            return Err(fail(errors));
        }
        Ok(Flow {
            name: raw.name,
            description: raw.description,
            params: raw.params,
            start: raw.start.value,
            states,
            limits,
        })
    }

    /// A parameter, or `default`.
    pub fn param(&self, name: &str, default: u32) -> u32 {
        self.params.get(name).copied().unwrap_or(default)
    }
}

fn eval(n: &Num, params: &BTreeMap<String, u32>, err: &mut impl FnMut(String)) -> u32 {
    match n {
        Num::Lit(v) => *v,
        Num::Expr(e) => e
            .split('+')
            .map(|p| {
                let p = p.trim();
                p.parse::<u32>()
                    .ok()
                    .or_else(|| params.get(p).copied())
                    .unwrap_or_else(|| {
                        err(format!("parameter `{p}` is not defined in params"));
                        0
                    })
            })
            .sum(),
    }
}

fn resolve(
    st: &StateFile,
    params: &BTreeMap<String, u32>,
    prompts: &HashSet<String>,
    err: &mut impl FnMut(String),
) -> Option<Step> {
    let kinds = [
        st.play.is_some(),
        st.say.is_some(),
        st.collect.is_some(),
        st.menu.is_some(),
        st.authorize.is_some(),
        st.set.is_some(),
        st.bridge.is_some(),
        st.hangup.is_some(),
        st.goto.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() != 1 {
        err("a state does exactly one of play, say, collect, menu, authorize, set, bridge, hangup, goto".into());
        return None;
    }
    let check_prompts = |list: &[String], err: &mut dyn FnMut(String)| {
        for p in list {
            if !prompts.contains(p) {
                err(format!("prompt `{p}` is not in the loaded prompt set"));
            }
        }
    };
    let need_next = |err: &mut dyn FnMut(String)| -> String {
        st.next.clone().unwrap_or_else(|| {
            err("`next` is required here".into());
            String::new()
        })
    };
    let retries_default = params.get("retries").copied().unwrap_or(3);
    if let Some(p) = &st.play {
        check_prompts(&p.prompts, err);
        return Some(Step::Play {
            prompts: p.prompts.clone(),
            barge_in: p.barge_in,
            next: need_next(err),
        });
    }
    if let Some(s) = &st.say {
        let kind = match s.what.as_str() {
            "amount" => SayKind::Amount,
            "time" => SayKind::Time,
            "number" => SayKind::Number,
            "digits" => SayKind::Digits,
            other => {
                err(format!(
                    "say what `{other}`? (amount, time, number or digits)"
                ));
                return None;
            }
        };
        check_prompts(&s.before, err);
        check_prompts(&s.after, err);
        return Some(Step::Say {
            kind,
            value: s.value.clone(),
            before: s.before.clone(),
            after: s.after.clone(),
            next: need_next(err),
        });
    }
    if let Some(c) = &st.collect {
        check_prompts(&c.prompt, err);
        check_prompts(&c.no_input, err);
        check_prompts(&c.wrong_length, err);
        let (min, max) = (eval(&c.min, params, err), eval(&c.max, params, err));
        if max == 0 || min > max || max > 32 {
            err(format!(
                "collect needs 0 < min ≤ max ≤ 32 digits (min {min}, max {max})"
            ));
        }
        if st.next.is_some() {
            err("collect takes `next` and `fail` inside it".into());
        }
        let retries = c
            .retries
            .as_ref()
            .map(|r| eval(r, params, err))
            .unwrap_or(retries_default);
        return Some(Step::Collect(Collect {
            into: c.into.clone(),
            prompt: c.prompt.clone(),
            min,
            max,
            terminator: c.terminator,
            retry_key: c.retry_key,
            first_timeout: c.first_digit_timeout_s,
            inter_timeout: c.inter_digit_timeout_s,
            no_input: c.no_input.clone(),
            wrong_length: c.wrong_length.clone(),
            retries,
            next: c.next.clone(),
            fail: c.fail.clone(),
        }));
    }
    if let Some(m) = &st.menu {
        check_prompts(&m.prompt, err);
        check_prompts(&m.invalid, err);
        check_prompts(&m.no_input, err);
        let mut options = BTreeMap::new();
        for (k, v) in &m.options {
            let mut chars = k.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) if c.is_ascii_digit() || c == '*' || c == '#' => {
                    options.insert(c, v.clone());
                }
                _ => err(format!("menu option `{k}` is not one key")),
            }
        }
        if m.languages && m.next.is_none() {
            err("a language menu needs `next`".into());
        }
        if !m.languages && options.is_empty() {
            err("a menu needs options (or `languages: true`)".into());
        }
        let retries = m
            .retries
            .as_ref()
            .map(|r| eval(r, params, err))
            .unwrap_or(retries_default);
        return Some(Step::Menu(Menu {
            prompt: m.prompt.clone(),
            options,
            languages: m.languages,
            invalid: m.invalid.clone(),
            no_input: m.no_input.clone(),
            timeout: m.timeout_s,
            retries,
            next: m.next.clone(),
            fail: m.fail.clone(),
        }));
    }
    if let Some(a) = &st.authorize {
        if !(1..=2).contains(&a.phase) {
            err(format!("authorize phase {} (1 or 2)", a.phase));
        }
        if a.phase == 2 && a.destination.is_none() {
            err("phase 2 needs a destination".into());
        }
        let possible = possible_codes(a.phase);
        let mut on = BTreeMap::new();
        let mut default = None;
        for (k, v) in &a.on {
            if k == "default" {
                default = Some(v.clone());
                continue;
            }
            for code in k.split(',') {
                match code.trim().parse::<u8>() {
                    Ok(c) if possible.contains(&c) => {
                        on.insert(c, v.clone());
                    }
                    Ok(c) => err(format!(
                        "branch on return code {c} can never be taken in phase {}",
                        a.phase
                    )),
                    Err(_) => err(format!("`{code}` is not a return code")),
                }
            }
        }
        if !on.contains_key(&0) {
            err("authorize needs a branch for 0 (success)".into());
        }
        if default.is_none() && on.len() < possible.len() {
            err("authorize needs `default` for the return codes it does not list".into());
        }
        return Some(Step::Authorize {
            phase: a.phase,
            account: a.account.clone(),
            pin: a.pin.clone(),
            destination: a.destination.clone(),
            on,
            default,
        });
    }
    if let Some(s) = &st.set {
        let split = s
            .split
            .as_ref()
            .map(|sp| (sp.var.clone(), eval(&sp.at, params, err), sp.into.clone()));
        return Some(Step::Set {
            vars: s.vars.clone(),
            split,
            clear_retries: s.clear_retries,
            next: need_next(err),
        });
    }
    if let Some(b) = &st.bridge {
        check_prompts(&b.warning, err);
        let mut on = BTreeMap::new();
        for (k, target) in &b.on {
            match BridgeEnd::from_name(k) {
                Some(end) => {
                    on.insert(end, target.clone());
                }
                None => {
                    let names: Vec<&str> = BridgeEnd::ALL.iter().map(|e| e.name()).collect();
                    err(format!(
                        "bridge end `{k}` is not one of {}",
                        names.join(", ")
                    ))
                }
            }
        }
        return Some(Step::Bridge {
            destination: b.destination.clone(),
            warning: b.warning.clone(),
            on,
        });
    }
    if let Some(h) = &st.hangup {
        return Some(Step::Hangup {
            cause: h.cause.clone(),
        });
    }
    st.goto.clone().map(Step::Goto)
}

/// The states a step can go to.
pub fn targets(step: &Step) -> Vec<&str> {
    match step {
        Step::Play { next, .. }
        | Step::Say { next, .. }
        | Step::Set { next, .. }
        | Step::Goto(next) => vec![next.as_str()],
        Step::Collect(c) => vec![c.next.as_str(), c.fail.as_str()],
        Step::Menu(m) => m
            .options
            .values()
            .map(String::as_str)
            .chain(m.next.as_deref())
            .chain([m.fail.as_str()])
            .collect(),
        Step::Authorize { on, default, .. } => on
            .values()
            .map(String::as_str)
            .chain(default.as_deref())
            .collect(),
        Step::Bridge { on, .. } => on.values().map(String::as_str).collect(),
        Step::Hangup { .. } => Vec::new(),
    }
}

/// Steps that wait for the caller (or the called party) before going on.
fn waits_for_input(step: &Step) -> bool {
    matches!(step, Step::Collect(_) | Step::Menu(_) | Step::Bridge { .. })
}

/// A cycle from `start` back to itself through states that never wait for input.
fn silent_cycle(start: &str, states: &BTreeMap<String, Step>) -> Option<Vec<String>> {
    fn walk(
        at: &str,
        start: &str,
        states: &BTreeMap<String, Step>,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        let Some(step) = states.get(at) else {
            return false;
        };
        if waits_for_input(step) {
            return false;
        }
        for t in targets(step) {
            if t == start {
                path.push(t.to_string());
                return true;
            }
            if seen.insert(t.to_string()) {
                path.push(t.to_string());
                if walk(t, start, states, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    walk(start, start, states, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompts() -> HashSet<String> {
        ["welcome", "enter_dest", "final"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn errors(text: &str) -> String {
        Flow::parse(text, "t.yaml", &prompts())
            .unwrap_err()
            .to_string()
    }

    const OK: &str = "name: t\nparams: {len: 4}\nstart: a\nstates:\n  a:\n    play: {prompts: [welcome]}\n    next: b\n  b:\n    collect: {into: d, prompt: [enter_dest], min: 1, max: len, next: c, fail: c}\n  c:\n    hangup: {cause: normal}\n";

    #[test]
    fn a_good_flow_loads() {
        let f = Flow::parse(OK, "t.yaml", &prompts()).unwrap();
        assert_eq!(f.states.len(), 3);
        let Step::Collect(c) = &f.states["b"] else {
            panic!()
        };
        assert_eq!((c.min, c.max, c.retries), (1, 4, 3));
    }

    #[test]
    fn every_mistake_names_file_line_and_state() {
        let e = errors(&OK.replace("next: b", "next: nowhere"));
        assert!(
            e.contains("t.yaml:6: a: goes to `nowhere`, which is not a state"),
            "{e}"
        );
        assert!(e.contains("t.yaml:9: b: unreachable from `a`"), "{e}");
        let e = errors(&OK.replace("max: len", "max: pin_len"));
        assert!(
            e.contains("t.yaml:9: b: parameter `pin_len` is not defined in params"),
            "{e}"
        );
        let e = errors(&OK.replace("prompts: [welcome]", "prompts: [welcom]"));
        assert!(
            e.contains("t.yaml:6: a: prompt `welcom` is not in the loaded prompt set"),
            "{e}"
        );
        let e = errors(&OK.replace("start: a", "start: z"));
        assert!(e.contains("t.yaml:3: start: no state named `z`"), "{e}");
        let e = errors(&OK.replace(
            "    hangup: {cause: normal}\n",
            "    hangup: {cause: normal}\n    goto: a\n",
        ));
        assert!(e.contains("c: a state does exactly one of"), "{e}");
    }

    #[test]
    fn impossible_return_code_branches_are_refused() {
        let auth = |phase: u8, on: &str| {
            format!("name: t\nstart: a\nstates:\n  a:\n    authorize: {{phase: {phase}, account: ani, destination: d, on: {{{on}}}}}\n  ok:\n    hangup: {{cause: x}}\n")
        };
        let e = errors(&auth(1, "\"0\": ok, \"9\": ok, default: ok"));
        assert!(
            e.contains("t.yaml:5: a: branch on return code 9 can never be taken in phase 1"),
            "{e}"
        );
        let e = errors(&auth(2, "\"0\": ok, \"99\": ok, default: ok"));
        assert!(e.contains("return code 99 can never be taken"), "{e}");
        let e = errors(&auth(2, "\"1\": ok"));
        assert!(
            e.contains("needs a branch for 0") && e.contains("needs `default`"),
            "{e}"
        );
        assert!(Flow::parse(
            &auth(2, "\"0\": ok, \"9,12,13\": ok, default: ok"),
            "t.yaml",
            &prompts()
        )
        .is_ok());
    }

    #[test]
    fn loops_without_input_are_refused() {
        let text = "name: t\nstart: a\nstates:\n  a:\n    play: {prompts: [welcome]}\n    next: b\n  b:\n    goto: a\n";
        let e = errors(text);
        assert!(e.contains("loops without input (a → b → a)"), "{e}");
        // The same loop through a collect is fine.
        let text = "name: t\nstart: a\nstates:\n  a:\n    play: {prompts: [welcome]}\n    next: b\n  b:\n    collect: {into: d, min: 1, max: 2, next: a, fail: a}\n";
        assert!(Flow::parse(text, "t.yaml", &prompts()).is_ok());
    }

    #[test]
    fn malformed_yaml_is_an_error_with_a_line_never_a_panic() {
        for bad in ["states: [", "name: t\nstart: a\nstates:\n  a:\n    colour: red\n", "\u{0}\u{1}", "name: [1, 2]\n", "- - - -", "name: t\nstart: a\nstates: {a: {collect: {into: d, min: -1, max: 2, next: a, fail: a}}}\n"] {
            let e = Flow::parse(bad, "bad.yaml", &prompts()).unwrap_err();
            assert!(e.to_string().starts_with("bad.yaml:"), "{e}");
        }
    }
}
