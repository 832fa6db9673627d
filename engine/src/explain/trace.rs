//! The record of one request's decision, printed in full by `pocket
//! explain` and in one line ([`Trace::compact`]) for logs and headers.

use std::fmt::{self, Write as _};
use std::time::Duration;

use super::routes::RouteHit;
use super::{Candidate, Skip, Tracer};

/// One hook call.
#[derive(Debug, Clone)]
pub struct HookCall {
    pub name: String,
    /// The pool whose function it is (`hash_key`, `bypass`, `balance`).
    pub pool: Option<String>,
    pub took: Duration,
    pub returned: String,
    /// The `pocket.match` routes this call matched (or fell through).
    pub routes: Vec<RouteHit>,
}

/// One step of the decision, in the order it happened.
#[derive(Debug, Clone)]
pub enum Step {
    Hook(HookCall),
    Answered {
        status: u16,
        by_script: bool,
        why: String,
    },
    /// A connection closed with no server connection.
    Closed {
        by_script: bool,
        why: String,
    },
    Pool {
        name: String,
        algorithm: &'static str,
        why: String,
    },
    HashKey {
        what: String,
        value: Option<String>,
    },
    Pick {
        pool: String,
        candidates: Vec<Candidate>,
        chosen: Option<usize>,
    },
    /// The chosen server failed; the request was retried.
    Failed {
        server: String,
        cause: String,
    },
}

/// Everything recorded for one request.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    pub steps: Vec<Step>,
}

impl Tracer for Trace {
    const ON: bool = true;

    fn hook(&mut self, name: &str, pool: Option<&str>, took: Duration, returned: String) {
        self.steps.push(Step::Hook(HookCall {
            name: name.into(),
            pool: pool.map(Into::into),
            took,
            returned,
            routes: super::routes::take(),
        }));
    }

    fn answered(&mut self, status: u16, by_script: bool, why: &str) {
        self.steps.push(Step::Answered {
            status,
            by_script,
            why: why.into(),
        });
    }

    fn closed(&mut self, by_script: bool, why: &str) {
        self.steps.push(Step::Closed {
            by_script,
            why: why.into(),
        });
    }

    fn pool(&mut self, name: &str, algorithm: &'static str, why: &str) {
        self.steps.push(Step::Pool {
            name: name.into(),
            algorithm,
            why: why.into(),
        });
    }

    fn hash_key(&mut self, what: String, value: Option<String>) {
        self.steps.push(Step::HashKey { what, value });
    }

    fn pick(&mut self, pool: &str, candidates: Vec<Candidate>, chosen: Option<usize>) {
        self.steps.push(Step::Pick {
            pool: pool.into(),
            candidates,
            chosen,
        });
    }

    fn failed(&mut self, server: &str, cause: &str) {
        self.steps.push(Step::Failed {
            server: server.into(),
            cause: cause.into(),
        });
    }
}

/// Milliseconds with three decimals: hooks take micro- to milliseconds.
fn ms(d: Duration) -> String {
    format!("{:.3}ms", d.as_secs_f64() * 1000.0)
}

/// A value for the compact form: no spaces (they separate fields), no
/// quotes (`pool "app"` is `pool:app`).
fn token(text: &str) -> String {
    text.replace(" \"", ":")
        .replace('"', "")
        .replace(char::is_whitespace, "_")
}

impl Trace {
    /// The server finally chosen, if any.
    pub fn chosen(&self) -> Option<&Candidate> {
        self.steps.iter().rev().find_map(|s| match s {
            Step::Pick {
                candidates, chosen, ..
            } => chosen.map(|c| &candidates[c]),
            _ => None,
        })
    }

    /// The trace on one line, fields separated by spaces, no spaces inside
    /// a field: `on_request=api(0.041ms) route=policy.lua:12 pool=api
    /// balance=hash key=cookie:sid pick[a:down,b:drain] chose=c`.
    pub fn compact(&self) -> String {
        let mut out = String::new();
        for step in &self.steps {
            if !out.is_empty() {
                out.push(' ');
            }
            match step {
                Step::Hook(h) => {
                    let _ = write!(out, "{}={}({})", h.name, token(&h.returned), ms(h.took));
                    for r in &h.routes {
                        let _ = write!(out, " route={}", token(&r.compact()));
                    }
                }
                Step::Answered {
                    status, by_script, ..
                } => {
                    let who = if *by_script { "script" } else { "pocket" };
                    let _ = write!(out, "answer={status}/{who}");
                }
                Step::Closed { by_script, .. } => {
                    let who = if *by_script { "script" } else { "pocket" };
                    let _ = write!(out, "closed={who}");
                }
                Step::Pool {
                    name, algorithm, ..
                } => {
                    let _ = write!(out, "pool={} balance={algorithm}", token(name));
                }
                Step::HashKey { what, value } => {
                    let _ = match value {
                        Some(_) => write!(out, "key={}", token(what)),
                        None => write!(out, "key={}:none", token(what)),
                    };
                }
                Step::Pick {
                    candidates, chosen, ..
                } => {
                    // Skipped servers with their reason; servers that could
                    // have taken it but were not chosen apart, in `others`.
                    let (mut skipped, mut others) = (Vec::new(), Vec::new());
                    for c in candidates {
                        match &c.skip {
                            Some(Skip::NotPicked) => others.push(c.addr.as_str()),
                            Some(s) => skipped.push(format!("{}:{}", c.addr, s.word())),
                            None => {}
                        }
                    }
                    if let Some(o) = candidates.iter().find(|c| c.key_owner) {
                        let _ = write!(out, "owner={} ", o.addr);
                    }
                    let _ = write!(out, "skip[{}]", skipped.join(","));
                    if !others.is_empty() {
                        let _ = write!(out, " others[{}]", others.join(","));
                    }
                    let _ = match chosen {
                        Some(c) => write!(out, " chose={}", candidates[*c].addr),
                        None => write!(out, " chose=none"),
                    };
                }
                Step::Failed { server, cause } => {
                    let _ = write!(out, "failed={server}:{}", token(cause));
                }
            }
        }
        out
    }
}

impl fmt::Display for Trace {
    /// The full trace, one step per paragraph, for `pocket explain`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for step in &self.steps {
            match step {
                Step::Hook(h) => {
                    let whose = h
                        .pool
                        .as_ref()
                        .map(|p| format!(" (pool \"{p}\")"))
                        .unwrap_or_default();
                    writeln!(
                        f,
                        "hook {}{whose}: returned {} in {}",
                        h.name,
                        h.returned,
                        ms(h.took)
                    )?;
                    for r in &h.routes {
                        writeln!(f, "  {r}")?;
                    }
                }
                Step::Answered {
                    status,
                    by_script,
                    why,
                } => {
                    if *by_script {
                        writeln!(f, "answered by the script: {status} {why}")?;
                    } else {
                        writeln!(f, "refused by Pocket: {status} {why}")?;
                    }
                }
                Step::Closed { by_script, why } => {
                    if *by_script {
                        writeln!(f, "closed by the script: {why}")?;
                    } else {
                        writeln!(f, "closed by Pocket: {why}")?;
                    }
                }
                Step::Pool {
                    name,
                    algorithm,
                    why,
                } => writeln!(f, "pool \"{name}\" ({why}), balance {algorithm}")?,
                Step::HashKey { what, value } => match value {
                    Some(v) => writeln!(f, "hash key: {what} = {v}")?,
                    None => writeln!(
                        f,
                        "hash key: {what}, which this request does not have: round robin instead"
                    )?,
                },
                Step::Pick {
                    pool,
                    candidates,
                    chosen,
                } => {
                    writeln!(f, "servers of pool \"{pool}\":")?;
                    for c in candidates {
                        let mut what = c.addr.clone();
                        if c.backup {
                            what.push_str(" (backup)");
                        }
                        if c.key_owner {
                            what.push_str(" (key's server)");
                        }
                        match &c.skip {
                            None => writeln!(f, "  {what:<31} chosen")?,
                            Some(s) => writeln!(f, "  {what:<31} {}", s.sentence())?,
                        }
                    }
                    match chosen {
                        Some(c) => writeln!(f, "chosen: {}", candidates[*c].addr)?,
                        None => {
                            writeln!(f, "chosen: none (no server of pool \"{pool}\" can take it)")?
                        }
                    }
                }
                Step::Failed { server, cause } => {
                    writeln!(f, "server {server} failed ({cause}): the next pick retries")?
                }
            }
        }
        Ok(())
    }
}
