//! A worker's copy of the policy: its own VM, with the hook functions looked
//! up once at load and called directly per request.

use crate::observe::metrics::Hook;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mlua::{Function, Table, Value};

use super::api::conn::ConnView;
use super::api::local::{LocalResponse, Reject, ScriptResponse};
use super::api::request::RequestView;
use super::api::response::ResponseView;
use super::errors::has_location;
use super::{describe_lua_error, sandbox, Limits, Vm};
use crate::config::Policy;
use crate::context::stamp::{Doing, Stamp};

/// What `on_request` decided.
pub enum Decision {
    /// Forward to this pool (an index into the policy's pools).
    Pool(usize),
    /// No decision: use the listener's default pool.
    Default,
    /// Answer locally.
    Respond(LocalResponse),
}

/// What `on_connect` decided for a connection on a `tcp` listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectVerdict {
    /// nil: the listener's pool.
    Default,
    /// A `tcp` pool, by index into the policy's pools.
    Pool(usize),
    /// `pocket.reject(reason)`: close the connection.
    Reject(String),
    /// `on_connect` read `conn.sni` or `conn.alpn` and the client sent no
    /// whole ClientHello within the listener's `timeouts.client_hello`
    /// (`timed_out`), or closed first: close it, open no server
    /// connection (nginx's `ssl_preread` and HAProxy's `inspect-delay` do
    /// the same). `reason` is for the log.
    Closed { reason: String, timed_out: bool },
}

/// What `on_connect` on a `tcp` listener may return, as errors say it.
const ON_CONNECT_TCP_RETURNS: &str =
    "a pool name, pocket.reject(reason) or nil (the listener's pool)";

/// A hook failed: the request gets a 500 (a tcp connection is closed),
/// the log gets this.
#[derive(Debug)]
pub struct HookError {
    pub hook: &'static str,
    pub message: String,
    /// The script met a resource limit (its time budget or its memory
    /// limit), not an error of its own: the access log's `RR`.
    pub limit: bool,
}

/// `err` is the time budget or the memory limit stopping the script.
fn met_a_limit(err: &mlua::Error) -> bool {
    match err {
        mlua::Error::MemoryError(_) => true,
        mlua::Error::RuntimeError(m) => m.contains(crate::script::vm::BUDGET_MESSAGE),
        mlua::Error::CallbackError { cause, .. } | mlua::Error::WithContext { cause, .. } => {
            met_a_limit(cause)
        }
        _ => false,
    }
}

pub struct WorkerScript {
    pub vm: Vm,
    pub policy: Arc<Policy>,
    /// The policy generation this script runs (the access log's
    /// `generation`); 0 outside a running Pocket (`pocket test`).
    pub generation: u64,
    /// This worker's handle on the policy's access log: its own `Arc`, so
    /// that each request's clone does not bounce one counter between the
    /// workers' cores.
    pub access_log: Option<Arc<crate::observe::access_log::Sink>>,
    /// Requests may take Pocket's own HTTP/1 path (`proxy::h1`): every
    /// pool is plain HTTP/1.1 (`proxy::h1::takes_policy`), decided at
    /// load (by the worker, server/worker.rs) so a connection reads a
    /// bool; false until then.
    pub direct_h1: bool,
    on_connect: Option<Function>,
    on_request: Option<Function>,
    on_response: Option<Function>,
    on_health: Option<Function>,
    /// `hash_key = function(req)` of each pool, by pool index.
    hash_keys: Vec<Option<Function>>,
    /// `balance = function(servers, req)` of each pool, by pool index.
    balancers: Vec<Option<Function>>,
    /// The scripted check of each pool, by pool index, guarded (see
    /// `sandbox::guard`), with the `path:line` of the script's own
    /// function for its messages.
    checks: Vec<Option<(Function, String)>>,
    /// `bypass = function(req)` of each pool, by pool index.
    bypasses: Vec<Option<Function>>,
    /// The table the script returned (for `pocket test`'s cases).
    root: Table,
    /// Lends `on_request` its `req` (see `api::lent`).
    lender: crate::script::api::lent::Lender,
    /// The http pools' names, told apart by address when `on_request`
    /// returns one (see `api::lent_call`).
    pool_names: crate::script::api::lent_call::PoolNames,
    /// On a worker: its pulse, stamped around each hook call so the
    /// watchdog can say which call a stuck worker is in.
    watch: Option<Watched>,
    /// `on_request` guarded for running as a coroutine, when the policy
    /// (or a module it required) names `http`: decided at load, so a
    /// policy without sub-requests keeps the plain synchronous call.
    waiting_on_request: Option<Function>,
    /// Set while that coroutine runs (see `subrequest::CanWait`).
    can_wait: crate::script::subrequest::CanWait,
    /// `on_connect` guarded for running as a coroutine on `tcp`
    /// listeners, when the policy (or a module it required) names `sni`
    /// or `alpn`: reading them may wait for the ClientHello. Decided at
    /// load: other policies keep the plain synchronous call.
    waiting_on_connect: Option<Function>,
    /// The policy (or a module it required) names `sni` or `alpn`: a
    /// `tcp` connection gets a ClientHello slot its hooks may wait on.
    reads_hello: bool,
    /// `hash_key = function(conn)` and `balance = function(servers,
    /// conn)` of each `tcp` pool, guarded for running as coroutines as
    /// `waiting_on_connect` is, in a policy that names `sni`/`alpn`.
    waiting_hash_keys: Vec<Option<Function>>,
    waiting_balancers: Vec<Option<Function>>,
    /// `balance = function(servers, req)` of each http pool, guarded for
    /// running as a coroutine, in a policy with Redis stores (a store
    /// call there may wait on Redis).
    waiting_http_balancers: Vec<Option<Function>>,
    /// Some http pool's `balance` may wait (see `waits`).
    waits_in_balance: bool,
}

/// Whether a policy's Lua text may make sub-requests: it names the
/// global `http` (as a Lua name, so an alias `local web = http` counts)
/// or requires `pocket.http` ([`crate::config::names_http`]). A false
/// positive only costs the coroutine; a sub-request in a policy found not
/// to use them gets `nil, "not run: ..."`.
fn may_wait(text: &str) -> bool {
    crate::config::names_http(text)
}

/// A worker's pulse and where each hook function is defined (indices into
/// the watchdog's places, found once at load).
struct Watched {
    pulse: Arc<Stamp>,
    on_connect: u32,
    on_request: u32,
    on_response: u32,
    hash_keys: Vec<u32>,
    balancers: Vec<u32>,
    bypasses: Vec<u32>,
}

/// Clears the stamp when the call returns (or unwinds), and counts the
/// call's time in `pocket_hook_duration_seconds`.
struct Busy<'a>(Option<&'a Stamp>, Option<Hook>, std::time::Instant);

impl Drop for Busy<'_> {
    #[inline]
    fn drop(&mut self) {
        if let Some(p) = self.0 {
            p.leave();
        }
        if let Some(hook) = self.1 {
            crate::observe::metrics::hook_ran(hook, self.2);
        }
    }
}

/// The metrics' name for what the watchdog stamps (loading a policy is
/// no request-path hook: not timed here).
fn hook_of(doing: Doing) -> Option<Hook> {
    Some(match doing {
        Doing::OnConnect => Hook::OnConnect,
        Doing::OnRequest => Hook::OnRequest,
        Doing::OnResponse => Hook::OnResponse,
        Doing::HashKey | Doing::ConnHashKey => Hook::HashKey,
        Doing::Balance | Doing::ConnBalance => Hook::Balance,
        Doing::Bypass => Hook::Bypass,
        Doing::Loading => return None,
    })
}

impl WorkerScript {
    /// Runs the (already validated) policy again in a fresh VM of this
    /// worker's and caches its hooks.
    pub fn new(policy: Arc<Policy>, limits: Limits) -> Result<WorkerScript, String> {
        let path = policy.path.clone();
        // A policy with `admin.explain_from` gets `pocket.match`'s route
        // reporting behind a closed gate (crate::explain::routes).
        let live = policy
            .admin
            .as_ref()
            .is_some_and(|a| !a.explain_from.is_empty());
        let vm = crate::explain::routes::building_live(live, || {
            let vm = Vm::new(&path, limits)?;
            // `pocket.store(name)` of a store kept in Redis is shared.
            vm.lua.set_app_data(crate::script::api::store::Declared(
                policy.stores.iter().map(|s| s.name.clone()).collect(),
            ));
            let root = vm.run_main_chunk(&path, &policy.source);
            Ok::<_, mlua::Error>((vm, root))
        })
        .map_err(|e| describe_lua_error(&e))?;
        let (vm, root) = vm;
        let root = match root {
            Ok(Value::Table(t)) => t,
            Ok(other) => return Err(format!("the script returned a {}", other.type_name())),
            Err(e) => return Err(describe_lua_error(&e)),
        };
        let hook = |t: &Table, name: &str| t.get::<Option<Function>>(name).ok().flatten();
        let pools: Option<Table> = root.get("pools").ok();
        let pool_fn = |key: &str| -> Vec<Option<Function>> {
            policy
                .pools
                .iter()
                .map(|p| {
                    let t: Option<Table> = pools.as_ref().and_then(|ps| ps.get(&*p.name).ok());
                    t.and_then(|t| hook(&t, key))
                })
                .collect()
        };
        let hash_keys = pool_fn("hash_key");
        let balancers = pool_fn("balance");
        let bypasses = pool_fn("bypass");
        let on_check = hook(&root, "on_check");
        let checks = policy
            .pools
            .iter()
            .map(|p| {
                let t: Option<Table> = pools.as_ref().and_then(|ps| ps.get(&*p.name).ok());
                let check: Option<Value> = t.and_then(|t| t.get("check").ok());
                let f = match check {
                    Some(Value::Function(f)) => Some(f),
                    Some(Value::Table(c)) => hook(&c, "run").or_else(|| {
                        matches!(c.get::<Value>("script"), Ok(Value::Boolean(true)))
                            .then(|| on_check.clone())
                            .flatten()
                    }),
                    _ => None,
                };
                // Run as coroutines: guarded, see `sandbox::guard`.
                f.map(|f| Ok((sandbox::guard(&vm.lua, &f)?, place_of(&f))))
                    .transpose()
            })
            .collect::<mlua::Result<_>>()
            .map_err(|e| describe_lua_error(&e))?;
        let on_request = hook(&root, "on_request");
        // A policy with Redis stores: its store calls may wait on Redis.
        let shares = !policy.stores.is_empty();
        let waits = on_request.is_some()
            && (shares
                || may_wait(&policy.source)
                || crate::script::stdlib::module_files(&vm.lua)
                    .iter()
                    .any(|(_, file)| std::fs::read_to_string(file).is_ok_and(|t| may_wait(&t))));
        let waiting_on_request = match (&on_request, waits) {
            (Some(f), true) => Some(
                crate::script::subrequest::marked(&vm.lua, f)
                    .and_then(|m| sandbox::guard(&vm.lua, &m))
                    .map_err(|e| describe_lua_error(&e))?,
            ),
            _ => None,
        };
        let on_connect = hook(&root, "on_connect");
        let reads_hello = policy
            .listeners
            .iter()
            .any(|l| l.mode == crate::config::Mode::Tcp)
            && (crate::config::names_client_hello(&policy.source)
                || crate::script::stdlib::module_files(&vm.lua)
                    .iter()
                    .any(|(_, file)| {
                        std::fs::read_to_string(file)
                            .is_ok_and(|t| crate::config::names_client_hello(&t))
                    }));
        // Marked (the coroutine's thread is noted at its first resume:
        // only that thread may wait, see `api::conn`) and guarded.
        let waiting = |f: &Function| {
            crate::script::subrequest::marked(&vm.lua, f)
                .and_then(|m| sandbox::guard(&vm.lua, &m))
                .map_err(|e| describe_lua_error(&e))
        };
        let waiting_on_connect = match (&on_connect, reads_hello) {
            (Some(f), true) => Some(waiting(f)?),
            _ => None,
        };
        let waiting_pool_fns = |fns: &[Option<Function>]| -> Result<Vec<Option<Function>>, String> {
            fns.iter()
                .zip(policy.pools.iter())
                .map(|(f, p)| match f {
                    Some(f) if reads_hello && p.mode == crate::config::Mode::Tcp => {
                        waiting(f).map(Some)
                    }
                    _ => Ok(None),
                })
                .collect()
        };
        let waiting_hash_keys = waiting_pool_fns(&hash_keys)?;
        let waiting_balancers = waiting_pool_fns(&balancers)?;
        // An http pool's `balance` function may wait on a Redis store
        // (`pocket.sticky`'s lookup of a session made on another Pocket).
        let waiting_http_balancers = balancers
            .iter()
            .zip(policy.pools.iter())
            .map(|(f, p)| match f {
                Some(f) if shares && p.mode == crate::config::Mode::Http => waiting(f).map(Some),
                _ => Ok(None),
            })
            .collect::<Result<Vec<_>, String>>()?;
        vm.lua
            .set_app_data(crate::script::subrequest::PoolsOf(policy.clone()));
        let lender =
            crate::script::api::lent::Lender::new(&vm.lua).map_err(|e| describe_lua_error(&e))?;
        let pool_names = crate::script::api::lent_call::PoolNames::new(
            &vm.lua,
            policy
                .pools
                .iter()
                .enumerate()
                .filter(|(_, p)| p.mode == crate::config::Mode::Http)
                .map(|(i, p)| (i, &*p.name)),
        )
        .map_err(|e| describe_lua_error(&e))?;
        let can_wait = vm
            .lua
            .app_data_ref::<crate::script::subrequest::CanWait>()
            .map(|c| c.clone())
            .unwrap_or_default();
        Ok(WorkerScript {
            waiting_on_request,
            can_wait,
            generation: 0,
            // Set by the worker that loads it (server/worker.rs), from
            // `proxy::h1::takes_policy`: the hooks do not know the paths.
            direct_h1: false,
            access_log: policy
                .log
                .as_ref()
                .and_then(|l| l.sink())
                .map(|s| s.for_worker()),
            on_connect,
            waiting_on_connect,
            reads_hello,
            waiting_hash_keys,
            waiting_balancers,
            waits_in_balance: waiting_http_balancers.iter().any(Option::is_some),
            waiting_http_balancers,
            on_request,
            on_response: hook(&root, "on_response"),
            on_health: hook(&root, "on_health"),
            hash_keys,
            balancers,
            checks,
            bypasses,
            root,
            lender,
            pool_names,
            vm,
            policy,
            watch: None,
        })
    }

    /// Stamps this worker's `pulse` around every hook call from now on.
    /// Looks up where each hook function is defined (`path:line`, from
    /// Lua's debug info): load-time work, so the call itself stores only
    /// a number.
    pub fn watch_with(&mut self, pulse: Arc<Stamp>) {
        let places = pulse.places();
        let place = |f: &Option<Function>| -> u32 {
            let Some(f) = f else { return 0 };
            let info = f.info();
            places.index(format!(
                "{}:{}",
                info.short_src.unwrap_or_else(|| "?".into()),
                info.line_defined.unwrap_or(0)
            ))
        };
        let many = |fs: &[Option<Function>]| fs.iter().map(place).collect();
        self.watch = Some(Watched {
            on_connect: place(&self.on_connect),
            on_request: place(&self.on_request),
            on_response: place(&self.on_response),
            hash_keys: many(&self.hash_keys),
            balancers: many(&self.balancers),
            bypasses: many(&self.bypasses),
            pulse,
        });
    }

    /// Stamps the pulse for a hook call (two relaxed stores in all).
    #[inline]
    fn busy(&self, doing: Doing, place: impl Fn(&Watched) -> u32, seq: u64) -> Busy<'_> {
        match &self.watch {
            Some(w) => {
                w.pulse.enter(doing, place(w), seq);
                Busy(Some(&w.pulse), hook_of(doing), std::time::Instant::now())
            }
            None => Busy(None, hook_of(doing), std::time::Instant::now()),
        }
    }

    /// The policy table as this VM built it.
    pub fn root(&self) -> &Table {
        &self.root
    }

    pub fn has_on_connect(&self) -> bool {
        self.on_connect.is_some()
    }

    pub fn has_on_response(&self) -> bool {
        self.on_response.is_some()
    }

    /// A hook's Lua error as the log shows it: `path:line: message`. An
    /// error that lost its line (the memory limit met while a table grew)
    /// is placed at the hook's function.
    fn failed(&self, hook: &'static str, f: &Function, err: &mlua::Error) -> HookError {
        let message = describe_lua_error(err);
        let message = if has_location(&message) {
            message
        } else {
            format!("{}: {hook}: {message}", place_of(f))
        };
        HookError {
            hook,
            message,
            limit: met_a_limit(err),
        }
    }

    /// `hook` returned `got`, which is not one of `expected`.
    fn bad_return(
        &self,
        hook: &'static str,
        f: &Function,
        got: &Value,
        expected: &str,
    ) -> HookError {
        HookError {
            hook,
            limit: false,
            message: format!(
                "{}: {hook} returned {}; expected {expected}",
                place_of(f),
                returned(got)
            ),
        }
    }

    /// `Ok(Some(reason))` when the script rejects the connection.
    pub fn on_connect(&self, conn: &mut ConnView) -> Result<Option<String>, HookError> {
        let Some(f) = &self.on_connect else {
            return Ok(None);
        };
        let _busy = self.busy(Doing::OnConnect, |w| w.on_connect, 0);
        let lua = &self.vm.lua;
        lua.scope(|scope| {
            let ud = scope.create_userdata_ref_mut(conn)?;
            let out: Value = self.vm.call(f, ud)?;
            Ok(match out {
                Value::UserData(ud) => ud.borrow::<Reject>().ok().map(|r| r.0.clone()),
                _ => None,
            })
        })
        .map_err(|e| self.failed("on_connect", f, &e))
    }

    /// `on_connect` for a connection on a `tcp` listener: where it goes.
    /// Returns a pool name (looked up here: an unknown one, or one whose
    /// mode is not `tcp`, is an error placed at the hook), `pocket.reject`
    /// or nil (the listener's pool).
    ///
    /// In a policy that names `conn.sni`/`conn.alpn` (decided at load),
    /// `on_connect` runs as a coroutine, and its first read of either
    /// waits, at most the listener's `timeouts.client_hello`, for the
    /// ClientHello peeked from `stream` (left in the socket for the
    /// server). Its time budget, the watchdog's stamp and its timing count
    /// only the time its Lua runs. A client that sends nothing whole in
    /// time, or closes, gets [`ConnectVerdict::Closed`]. Other policies
    /// get the plain call, which never waits for client bytes.
    pub async fn on_connect_tcp(
        &self,
        conn: &mut ConnView,
        stream: &tokio::net::TcpStream,
    ) -> Result<ConnectVerdict, HookError> {
        if self.reads_hello {
            // Shared by every hook of this connection (on_connect, then its
            // pool's hash_key and balance): the first to read waits.
            conn.hello = Some(std::rc::Rc::new(
                crate::script::api::conn::HelloSlot::default(),
            ));
        }
        let Some(f) = &self.on_connect else {
            return Ok(ConnectVerdict::Default);
        };
        let out = match &self.waiting_on_connect {
            Some(guarded) => {
                let pulse = self.watch.as_ref().map(|w| (&*w.pulse, w.on_connect, 0));
                let run = (Doing::OnConnect, pulse);
                match self
                    .conn_waiting("on_connect", f, guarded, None, conn, stream, run)
                    .await?
                {
                    Ok(out) => out,
                    Err(closed) => return Ok(closed),
                }
            }
            None => {
                let _busy = self.busy(Doing::OnConnect, |w| w.on_connect, 0);
                self.vm
                    .lua
                    .scope(|scope| {
                        let ud = scope.create_userdata_ref_mut(conn)?;
                        self.vm.call::<_, Value>(f, ud)
                    })
                    .map_err(|e| self.failed("on_connect", f, &e))?
            }
        };
        self.connect_verdict(f, out)
    }

    /// `on_connect` for a connection on a `tcp` listener whose ClientHello
    /// is given rather than read from a socket (`pocket explain
    /// tcp://LISTENER --sni ...`, `pocket test`'s `conn` cases): a plain
    /// call that never waits. `hello` None is a client that sent no TLS
    /// ClientHello: `conn.sni` and `conn.alpn` are nil, as for plain text
    /// on a live listener. The verdict is read as for a live connection
    /// ([`WorkerScript::on_connect_tcp`]); `conn.hello` tells afterwards
    /// whether the script read the ClientHello. The ClientHello is set on
    /// `conn` with or without `on_connect`: the pool's `hash_key` and
    /// `balance` read it from there.
    pub fn on_connect_given(
        &self,
        conn: &mut ConnView,
        hello: Option<crate::tcp::client_hello::ClientHello>,
    ) -> Result<ConnectVerdict, HookError> {
        let slot = std::rc::Rc::new(crate::script::api::conn::HelloSlot::default());
        slot.set(hello);
        conn.hello = Some(slot);
        let Some(f) = &self.on_connect else {
            return Ok(ConnectVerdict::Default);
        };
        let _busy = self.busy(Doing::OnConnect, |w| w.on_connect, 0);
        let out = self
            .vm
            .lua
            .scope(|scope| {
                let ud = scope.create_userdata_ref_mut(conn)?;
                self.vm.call::<_, Value>(f, ud)
            })
            .map_err(|e| self.failed("on_connect", f, &e))?;
        self.connect_verdict(f, out)
    }

    /// What `on_connect` (function `f`) returning `out` means for a
    /// connection on a `tcp` listener.
    fn connect_verdict(&self, f: &Function, out: Value) -> Result<ConnectVerdict, HookError> {
        match out {
            Value::Nil => Ok(ConnectVerdict::Default),
            Value::String(s) => self
                .returned_pool("on_connect", f, &s, crate::config::Mode::Tcp)
                .map(ConnectVerdict::Pool),
            Value::UserData(ref ud) => match ud.borrow::<Reject>() {
                Ok(r) => Ok(ConnectVerdict::Reject(r.0.clone())),
                Err(_) => Err(self.bad_return("on_connect", f, &out, ON_CONNECT_TCP_RETURNS)),
            },
            ref other => Err(self.bad_return("on_connect", f, other, ON_CONNECT_TCP_RETURNS)),
        }
    }

    /// A hook of a `tcp` connection (`on_connect`, a pool's `hash_key` or
    /// `balance`: `guarded`, the script's `f` for messages) as a
    /// coroutine whose first read of `conn.sni`/`conn.alpn` waits, at
    /// most the listener's `timeouts.client_hello`, for the ClientHello
    /// peeked from `stream` (see [`WorkerScript::on_connect_tcp`]); `list`:
    /// `balance`'s servers, passed before `conn`. Its time budget, the
    /// watchdog's stamp and its timing count only the time its Lua runs.
    /// `Ok(Err(verdict))`: the client sent no ClientHello in time.
    #[allow(clippy::too_many_arguments)]
    async fn conn_waiting(
        &self,
        hook: &'static str,
        f: &Function,
        guarded: &Function,
        list: Option<Table>,
        conn: &mut ConnView,
        stream: &tokio::net::TcpStream,
        (doing, pulse): (Doing, Option<(&Stamp, u32, u64)>),
    ) -> Result<Result<Value, ConnectVerdict>, HookError> {
        use crate::tcp::client_hello::{self, Peeked};
        use std::future::Future as _;
        let Some(slot) = conn.hello.clone() else {
            return Err(self.failed(hook, f, &mlua::Error::runtime("no ClientHello slot")));
        };
        // An owned copy for the coroutine (it outlives any borrow); the
        // slot is shared, so the caller's `conn` knows the ClientHello too.
        let ud = self
            .vm
            .lua
            .create_userdata(conn.clone())
            .map_err(|e| self.failed(hook, f, &e))?;
        let metric = hook_of(doing);
        let call = match list {
            Some(list) => guarded.call_async::<Value>((list, ud.clone())),
            None => guarded.call_async::<Value>(ud.clone()),
        };
        let mut call = crate::script::subrequest::Metered::new(
            &self.vm,
            &self.can_wait,
            pulse,
            self.vm.limits.hook_budget,
            crate::script::subrequest::Origin::default(),
            call,
        )
        .doing(doing);
        let out = loop {
            // Runs the script until it returns, or until it waits for the
            // ClientHello; then peeks it and lets the script go on.
            let step = std::future::poll_fn(|cx| match std::pin::Pin::new(&mut call).poll(cx) {
                std::task::Poll::Ready(out) => std::task::Poll::Ready(Some(out)),
                std::task::Poll::Pending if slot.wanted() => std::task::Poll::Ready(None),
                std::task::Poll::Pending => std::task::Poll::Pending,
            })
            .await;
            if let Some(out) = step {
                break out;
            }
            let wait = self
                .policy
                .listener(&conn.listener)
                .map_or(crate::config::DEFAULT_CLIENT_HELLO, |l| {
                    l.timeouts.client_hello
                });
            let (why, timed_out) = match client_hello::peek(stream, wait).await {
                Peeked::Hello(h) => {
                    slot.set(Some(h));
                    continue;
                }
                Peeked::NotTls => {
                    slot.set(None);
                    continue;
                }
                Peeked::TimedOut { got } => (
                    format!(
                        "no TLS ClientHello within timeouts.client_hello ({}s; {got} {} received)",
                        wait.as_secs_f64(),
                        if got == 1 { "byte" } else { "bytes" }
                    ),
                    true,
                ),
                Peeked::Closed { got } => (
                    format!(
                        "the client closed before its TLS ClientHello was whole ({got} {} received)",
                        if got == 1 { "byte" } else { "bytes" }
                    ),
                    false,
                ),
            };
            if let Some(m) = metric {
                crate::observe::metrics::hook_ran_for(m, call.ran.as_nanos() as u64);
            }
            // Dropping the call ends the coroutine where it waits.
            drop(call);
            let _ = ud.take::<ConnView>();
            return Ok(Err(ConnectVerdict::Closed {
                reason: why,
                timed_out,
            }));
        };
        if let Some(m) = metric {
            crate::observe::metrics::hook_ran_for(m, call.ran.as_nanos() as u64);
        }
        drop(call);
        let out = self.vm.settle(out);
        self.vm.tally();
        // Taken back: a script that kept `conn` finds it empty later.
        let _ = ud.take::<ConnView>();
        out.map(Ok).map_err(|e| self.failed(hook, f, &e))
    }

    /// Whether the policy has this hook (`on_request`), or this pool has
    /// this function (`bypass`, `hash_key`, `balance`): `pocket explain`
    /// lists the hooks that ran. Not for the request path.
    pub fn runs(&self, hook: &str, pool: usize) -> bool {
        let of = |fns: &[Option<Function>]| fns.get(pool).is_some_and(Option::is_some);
        match hook {
            "on_request" => self.on_request.is_some(),
            "bypass" => of(&self.bypasses),
            "hash_key" => of(&self.hash_keys),
            "balance" => of(&self.balancers),
            _ => false,
        }
    }

    pub fn on_request(&self, req: &mut RequestView) -> Result<Decision, HookError> {
        let Some(f) = &self.on_request else {
            return Ok(Decision::Default);
        };
        let busy = self.busy(Doing::OnRequest, |w| w.on_request, req.id.seq);
        // The budget starts when the stamp's clock does: one clock read.
        let out = self.vm.with_lent_budget(busy.2, || {
            self.lender.call_hook(
                &self.vm.lua,
                f,
                req,
                &self.pool_names,
                self.vm.notes_lines(),
            )
        });
        use crate::script::api::lent_call::Returned;
        match out {
            Ok(Returned::Nil) => Ok(Decision::Default),
            Ok(Returned::Pool(i)) => Ok(Decision::Pool(i)),
            Ok(Returned::Other(out)) => self.decision_of(f, out),
            Err(e) => Err(self.failed("on_request", f, &e)),
        }
    }

    /// `on_request` may wait on sub-requests or a Redis store, or an http
    /// pool's `balance` on a Redis store (decided at load, see
    /// [`may_wait`]): then `proxy::decide::decide_waiting` runs them.
    #[inline]
    pub fn waits(&self) -> bool {
        self.waiting_on_request.is_some() || self.waits_in_balance
    }

    /// `on_request` as a coroutine that may wait on sub-requests while the
    /// worker serves other requests. The request is lent to the script as
    /// an owned object for the call and taken back after (a coroutine
    /// outlives any borrow). Its time budget, the watchdog's stamp and the
    /// hook's timing count only the time it runs (see
    /// `subrequest::Metered`). Dropping the future (the client went away)
    /// drops its sub-requests.
    pub async fn on_request_waiting(
        &self,
        req: &mut RequestView,
        local: SocketAddr,
    ) -> Result<Decision, HookError> {
        let (Some(f), Some(guarded)) = (&self.on_request, &self.waiting_on_request) else {
            return self.on_request(req);
        };
        let lua = &self.vm.lua;
        let origin = crate::script::subrequest::Origin {
            client: Some((req.peer, local)),
            depth: crate::script::subrequest::depth_of(&req.head.headers),
            request: Some(req.id),
        };
        let ud = lend(lua, req).map_err(|e| self.failed("on_request", f, &e))?;
        let pulse = self
            .watch
            .as_ref()
            .map(|w| (&*w.pulse, w.on_request, req.id.seq));
        let mut call = crate::script::subrequest::Metered::new(
            &self.vm,
            &self.can_wait,
            pulse,
            self.vm.limits.hook_budget,
            origin,
            guarded.call_async::<Value>(ud.clone()),
        );
        let out = (&mut call).await;
        crate::observe::metrics::hook_ran_for(Hook::OnRequest, call.ran.as_nanos() as u64);
        drop(call);
        let out = self.vm.settle(out);
        self.vm.tally();
        take_back(&ud, req);
        match out {
            Ok(out) => self.decision_of(f, out),
            Err(e) => Err(self.failed("on_request", f, &e)),
        }
    }

    /// What `on_request`'s returned value decides.
    fn decision_of(&self, f: &Function, out: Value) -> Result<Decision, HookError> {
        match out {
            Value::Nil => Ok(Decision::Default),
            Value::String(s) => self
                .returned_pool("on_request", f, &s, crate::config::Mode::Http)
                .map(Decision::Pool),
            Value::UserData(ref ud) => match ud.borrow::<ScriptResponse>() {
                Ok(r) => Ok(Decision::Respond(r.response.clone())),
                Err(_) => Err(self.bad_return("on_request", f, &out, ON_REQUEST_RETURNS)),
            },
            ref other => Err(self.bad_return("on_request", f, other, ON_REQUEST_RETURNS)),
        }
    }

    /// The pool a hook returned by name: `on_request` (for an http
    /// listener: `mode` Http) or `on_connect` on a tcp listener (`mode`
    /// Tcp). Looked up in place: no copy of the name per request or
    /// connection. A name no pool has, or a pool of the other mode (an
    /// http request sent to a Redis server, say), is an error placed, as
    /// every bad hook result is, at the hook's own function (never a
    /// search of the text for the name, which finds the wrong line or
    /// none); the pools it lists are the ones this hook may return.
    fn returned_pool(
        &self,
        hook: &'static str,
        f: &Function,
        s: &mlua::LuaString,
        mode: crate::config::Mode,
    ) -> Result<usize, HookError> {
        use crate::config::Mode;
        let bytes = s.as_bytes();
        let found = std::str::from_utf8(&bytes)
            .ok()
            .and_then(|n| self.policy.pool_by_name(n));
        if let Some(idx) = found.filter(|&i| self.policy.pools[i].mode == mode) {
            return Ok(idx);
        }
        let name = String::from_utf8_lossy(&bytes);
        let message = match (found, mode) {
            (Some(_), Mode::Tcp) => format!(
                "{}: {hook} returned pool \"{name}\", an http pool; a tcp listener needs a pool with mode = \"tcp\"",
                place_of(f)
            ),
            (Some(_), Mode::Http) => format!(
                "{}: {hook} returned pool \"{name}\", a tcp pool; an http listener needs an http pool (one without mode = \"tcp\")",
                place_of(f)
            ),
            (None, _) => {
                let known: Vec<&str> = self
                    .policy
                    .pools
                    .iter()
                    .filter(|p| p.mode == mode)
                    .map(|p| &*p.name)
                    .collect();
                let known = if known.is_empty() {
                    format!("the policy has no {} pool", mode.name())
                } else {
                    format!("pools: {}", known.join(", "))
                };
                format!(
                    "{}: {hook} returned pool \"{name}\", which is not defined ({known})",
                    place_of(f)
                )
            }
        };
        Err(HookError {
            hook,
            limit: false,
            message,
        })
    }

    /// The key a `hash` pool with a script key hashes for this request;
    /// None when the function returns nil.
    pub fn hash_key(
        &self,
        pool: usize,
        req: &mut RequestView,
    ) -> Result<Option<Vec<u8>>, HookError> {
        let seq = req.id.seq;
        self.hash_key_of(pool, req, (Doing::HashKey, seq))
    }

    /// The key a tcp `hash` pool with `hash_key = function(conn)` hashes
    /// for this connection (`seq`: the connection's number, for the
    /// watchdog); None when the function returns nil. A plain call: a
    /// first read of `conn.sni` there is an error unless the ClientHello
    /// is known (`pocket explain`); a live connection uses
    /// [`WorkerScript::hash_key_conn_waiting`].
    pub fn hash_key_conn(
        &self,
        pool: usize,
        conn: &mut ConnView,
        seq: u64,
    ) -> Result<Option<Vec<u8>>, HookError> {
        self.hash_key_of(pool, conn, (Doing::ConnHashKey, seq))
    }

    /// [`WorkerScript::hash_key_conn`] for a live connection: in a policy
    /// that names `sni`/`alpn` it runs as `on_connect` does, a coroutine
    /// that may wait for the ClientHello on `stream`: `Ok(Err(verdict))`
    /// when none came in time (the connection is closed).
    pub async fn hash_key_conn_waiting(
        &self,
        pool: usize,
        conn: &mut ConnView,
        stream: &tokio::net::TcpStream,
        seq: u64,
    ) -> Result<Result<Option<Vec<u8>>, ConnectVerdict>, HookError> {
        let (Some(Some(f)), Some(Some(guarded))) =
            (self.hash_keys.get(pool), self.waiting_hash_keys.get(pool))
        else {
            return self.hash_key_conn(pool, conn, seq).map(Ok);
        };
        let pulse = self.watch.as_ref().map(|w| {
            let at = w.hash_keys.get(pool).copied().unwrap_or(0);
            (&*w.pulse, at, seq)
        });
        let run = (Doing::ConnHashKey, pulse);
        match self
            .conn_waiting("hash_key", f, guarded, None, conn, stream, run)
            .await?
        {
            Ok(out) => self.key_of(f, out).map(Ok),
            Err(closed) => Ok(Err(closed)),
        }
    }

    /// What a `hash_key` function returned, as the bytes hashed.
    fn key_of(&self, f: &Function, out: Value) -> Result<Option<Vec<u8>>, HookError> {
        match out {
            Value::Nil => Ok(None),
            Value::String(s) => Ok(Some(s.as_bytes().to_vec())),
            Value::Integer(n) => Ok(Some(n.to_string().into_bytes())),
            Value::Number(n) => Ok(Some(n.to_string().into_bytes())),
            ref other => Err(self.bad_return("hash_key", f, other, "a string, a number or nil")),
        }
    }

    /// `hash_key(view)`: a request's or a connection's (`doing`: which,
    /// and its number, for the watchdog).
    fn hash_key_of<T: mlua::UserData + 'static>(
        &self,
        pool: usize,
        view: &mut T,
        (doing, seq): (Doing, u64),
    ) -> Result<Option<Vec<u8>>, HookError> {
        let Some(Some(f)) = self.hash_keys.get(pool) else {
            return Ok(None);
        };
        let at = |w: &Watched| w.hash_keys.get(pool).copied().unwrap_or(0);
        let _busy = self.busy(doing, at, seq);
        let out = self.vm.lua.scope(|scope| {
            let ud = scope.create_userdata_ref_mut(view)?;
            let out: Value = self.vm.call(f, ud)?;
            Ok(self.key_of(f, out))
        });
        match out {
            Ok(key) => key,
            Err(e) => Err(self.failed("hash_key", f, &e)),
        }
    }

    /// Where a pool with `bypass = function(req)` sends this request: its
    /// fallback pool when the function says so (Some), else None.
    pub fn bypass(&self, pool: usize, req: &mut RequestView) -> Result<Option<usize>, HookError> {
        let Some(Some(f)) = self.bypasses.get(pool) else {
            return Ok(None);
        };
        let at = |w: &Watched| w.bypasses.get(pool).copied().unwrap_or(0);
        let busy = self.busy(Doing::Bypass, at, req.id.seq);
        let go_around = self
            .vm
            .lua
            .scope(|scope| {
                let ud = scope.create_userdata_ref_mut(req)?;
                let out: Value = self.vm.call(f, ud)?;
                Ok(!matches!(out, Value::Nil | Value::Boolean(false)))
            })
            .map_err(|e| self.failed("bypass", f, &e))?;
        drop(busy);
        Ok(go_around
            .then(|| self.policy.pools[pool].fallback_pool())
            .flatten())
    }

    /// The server a `balance = function(servers, req)` pool's script
    /// chooses: an index into the pool, or None (round robin decides).
    pub fn choose_server(
        &self,
        pool_index: usize,
        req: &mut RequestView,
    ) -> Result<Option<usize>, HookError> {
        let seq = req.id.seq;
        self.choose_server_of(pool_index, req, (Doing::Balance, seq))
    }

    /// This http pool's `balance` function runs as a coroutine (see
    /// [`WorkerScript::choose_server_waiting`]).
    #[inline]
    pub fn balance_waits(&self, pool_index: usize) -> bool {
        matches!(self.waiting_http_balancers.get(pool_index), Some(Some(_)))
    }

    /// [`WorkerScript::choose_server`] as a coroutine that may wait on a
    /// Redis store within its timeout, while the worker serves other
    /// requests. The request is lent as an owned object for the call and
    /// taken back after, as `on_request_waiting` does.
    pub async fn choose_server_waiting(
        &self,
        pool_index: usize,
        req: &mut RequestView,
    ) -> Result<Option<usize>, HookError> {
        let (Some(Some(f)), Some(Some(guarded))) = (
            self.balancers.get(pool_index),
            self.waiting_http_balancers.get(pool_index),
        ) else {
            return self.choose_server(pool_index, req);
        };
        let pool = &self.policy.pools[pool_index];
        let candidates = pool.candidates();
        if candidates.is_empty() {
            return Ok(None);
        }
        let lua = &self.vm.lua;
        let list = self
            .servers_table(pool, &candidates)
            .map_err(|e| self.failed("balance", f, &e))?;
        let ud = lend(lua, req).map_err(|e| self.failed("balance", f, &e))?;
        let pulse = self.watch.as_ref().map(|w| {
            let at = w.balancers.get(pool_index).copied().unwrap_or(0);
            (&*w.pulse, at, req.id.seq)
        });
        let mut call = crate::script::subrequest::Metered::new(
            &self.vm,
            &self.can_wait,
            pulse,
            self.vm.limits.hook_budget,
            crate::script::subrequest::Origin::default(),
            guarded.call_async::<Value>((list, ud.clone())),
        )
        .doing(Doing::Balance);
        let out = (&mut call).await;
        crate::observe::metrics::hook_ran_for(Hook::Balance, call.ran.as_nanos() as u64);
        drop(call);
        let out = self.vm.settle(out);
        self.vm.tally();
        take_back(&ud, req);
        out.map(|v| chosen(pool, &candidates, v))
            .map_err(|e| self.failed("balance", f, &e))
    }

    /// The server a tcp pool's `balance = function(servers, conn)`
    /// chooses for this connection (`seq`: its number, for the watchdog),
    /// as a plain call (see [`WorkerScript::hash_key_conn`]).
    pub fn choose_server_conn(
        &self,
        pool_index: usize,
        conn: &mut ConnView,
        seq: u64,
    ) -> Result<Option<usize>, HookError> {
        self.choose_server_of(pool_index, conn, (Doing::ConnBalance, seq))
    }

    /// [`WorkerScript::choose_server_conn`] for a live connection: in a
    /// policy that names `sni`/`alpn` it runs as `on_connect` does (see
    /// [`WorkerScript::hash_key_conn_waiting`]).
    pub async fn choose_server_conn_waiting(
        &self,
        pool_index: usize,
        conn: &mut ConnView,
        stream: &tokio::net::TcpStream,
        seq: u64,
    ) -> Result<Result<Option<usize>, ConnectVerdict>, HookError> {
        let (Some(Some(f)), Some(Some(guarded))) = (
            self.balancers.get(pool_index),
            self.waiting_balancers.get(pool_index),
        ) else {
            return self.choose_server_conn(pool_index, conn, seq).map(Ok);
        };
        let pool = &self.policy.pools[pool_index];
        let candidates = pool.candidates();
        if candidates.is_empty() {
            return Ok(Ok(None));
        }
        let list = self
            .servers_table(pool, &candidates)
            .map_err(|e| self.failed("balance", f, &e))?;
        let pulse = self.watch.as_ref().map(|w| {
            let at = w.balancers.get(pool_index).copied().unwrap_or(0);
            (&*w.pulse, at, seq)
        });
        let run = (Doing::ConnBalance, pulse);
        match self
            .conn_waiting("balance", f, guarded, Some(list), conn, stream, run)
            .await?
        {
            Ok(out) => Ok(Ok(chosen(pool, &candidates, out))),
            Err(closed) => Ok(Err(closed)),
        }
    }

    /// The `servers` a `balance` function gets: one table per candidate.
    fn servers_table(&self, pool: &crate::lb::Pool, candidates: &[usize]) -> mlua::Result<Table> {
        let lua = &self.vm.lua;
        let list = lua.create_table_with_capacity(candidates.len(), 0)?;
        for &i in candidates {
            let s = &pool.servers[i];
            let t = lua.create_table_with_capacity(0, 5)?;
            t.set("addr", &*s.addr_text)?;
            t.set("weight", s.weight)?;
            t.set("backup", s.backup)?;
            t.set(
                "active",
                s.state.active.load(std::sync::atomic::Ordering::Relaxed),
            )?;
            t.set(
                "requests",
                s.state.requests.load(std::sync::atomic::Ordering::Relaxed),
            )?;
            list.raw_push(t)?;
        }
        Ok(list)
    }

    /// `balance(servers, view)`: for a request or a connection (`doing`:
    /// which, and its number, for the watchdog).
    fn choose_server_of<T: mlua::UserData + 'static>(
        &self,
        pool_index: usize,
        req: &mut T,
        (doing, seq): (Doing, u64),
    ) -> Result<Option<usize>, HookError> {
        let Some(Some(f)) = self.balancers.get(pool_index) else {
            return Ok(None);
        };
        let pool = &self.policy.pools[pool_index];
        let candidates = pool.candidates();
        if candidates.is_empty() {
            return Ok(None);
        }
        let at = |w: &Watched| w.balancers.get(pool_index).copied().unwrap_or(0);
        let _busy = self.busy(doing, at, seq);
        let lua = &self.vm.lua;
        lua.scope(|scope| {
            let list = self.servers_table(pool, &candidates)?;
            let ud = scope.create_userdata_ref_mut(req)?;
            let out: Value = self.vm.call(f, (list, ud))?;
            Ok(chosen(pool, &candidates, out))
        })
        .map_err(|e| self.failed("balance", f, &e))
    }

    /// Runs a pool's scripted check against `addr` as a coroutine: the
    /// script may wait on `http.get(path)`, `http.request(method, path,
    /// host)` or `http.tcp(send)`. Ok(why it passed) or Err(why not).
    pub async fn run_check(
        &self,
        pool_index: usize,
        addr: SocketAddr,
        budget: Duration,
    ) -> Result<String, String> {
        let Some(Some((f, place))) = self.checks.get(pool_index) else {
            return Err("no check function".into());
        };
        let pool = &self.policy.pools[pool_index];
        let lua = &self.vm.lua;
        let build = || -> mlua::Result<(Table, Table)> {
            let server = lua.create_table()?;
            server.set("addr", addr.to_string())?;
            server.set("pool", &*pool.name)?;
            let http = lua.create_table()?;
            let answer = |lua: &mlua::Lua, a: crate::health::HttpAnswer| -> mlua::Result<Table> {
                let t = lua.create_table()?;
                t.set("status", a.status)?;
                t.set("body", a.body)?;
                let h = lua.create_table()?;
                for (k, v) in a.headers {
                    h.set(k, v)?;
                }
                t.set("headers", h)?;
                Ok(t)
            };
            http.set(
                "get",
                lua.create_async_function(move |lua, (path, host): (Value, Value)| async move {
                    let path = check_arg("http.get", 1, "a path", path)?;
                    let host = check_opt("http.get", 2, "a host", host)?;
                    let a = crate::health::http(addr, "GET", &path, host.as_deref())
                        .await
                        .map_err(mlua::Error::RuntimeError)?;
                    answer(&lua, a)
                })?,
            )?;
            http.set(
                "request",
                lua.create_async_function(
                    move |lua, (method, path, host): (Value, Value, Value)| async move {
                        let method = check_arg("http.request", 1, "a method", method)?;
                        let path = check_arg("http.request", 2, "a path", path)?;
                        let host = check_opt("http.request", 3, "a host", host)?;
                        let a = crate::health::http(addr, &method, &path, host.as_deref())
                            .await
                            .map_err(mlua::Error::RuntimeError)?;
                        answer(&lua, a)
                    },
                )?,
            )?;
            http.set(
                "tcp",
                lua.create_async_function(move |lua, send: Value| async move {
                    // Bytes as they are (not text): no lossy conversion.
                    let bytes = match send {
                        Value::String(s) => s.as_bytes().to_vec(),
                        other => check_opt("http.tcp", 1, "the bytes to send", other)?
                            .map(String::into_bytes)
                            .unwrap_or_default(),
                    };
                    let got = crate::health::exchange_until(addr, &bytes, true)
                        .await
                        .map_err(mlua::Error::RuntimeError)?;
                    lua.create_string(got)
                })?,
            )?;
            Ok((server, http))
        };
        let (server, http) = build().map_err(|e| describe_lua_error(&e))?;
        // Each stretch of Lua (a poll) is armed with what is left of the
        // check's Lua time: the budget is the VM's, and other checks arm it
        // while this one waits on the network. Disarmed after each poll,
        // also when the future is dropped at the check's timeout.
        let mut call = std::pin::pin!(f.call_async::<(Value, Value)>((server, http)));
        let mut left = budget;
        let out = std::future::poll_fn(|cx| {
            self.vm.arm_check(left);
            let _armed = self.vm.armed();
            let start = std::time::Instant::now();
            let out = std::future::Future::poll(call.as_mut(), cx);
            left = left.saturating_sub(start.elapsed());
            out
        })
        .await;
        let out: mlua::Result<(Value, Value)> = self.vm.settle(out);
        let (ok, why) = match out {
            Ok(pair) => pair,
            Err(e) => {
                let message = describe_lua_error(&e);
                return Err(if has_location(&message) {
                    message
                } else {
                    format!("{place}: {message}")
                });
            }
        };
        let why = match why {
            Value::Nil => None,
            Value::String(s) => Some(s.to_string_lossy()),
            Value::Integer(n) => Some(n.to_string()),
            Value::Number(n) => Some(n.to_string()),
            // A reason Pocket cannot show fails the check, saying so.
            other => {
                return Err(format!(
                    "{place}: the check returned {} as its reason; expected a string or nil",
                    returned(&other)
                ))
            }
        };
        match ok {
            Value::Nil | Value::Boolean(false) => {
                Err(why.unwrap_or_else(|| "the check returned false".into()))
            }
            _ => Ok(why.unwrap_or_else(|| "the check passed".into())),
        }
    }

    /// Tells the script a server changed state (control thread only).
    pub fn on_health(
        &self,
        pool: &str,
        addr: &str,
        up: bool,
        reason: &str,
    ) -> Result<(), HookError> {
        let Some(f) = &self.on_health else {
            return Ok(());
        };
        let run = || -> mlua::Result<()> {
            let server = self.vm.lua.create_table()?;
            server.set("pool", pool)?;
            server.set("addr", addr)?;
            self.vm.call::<_, ()>(f, (server, up, reason))
        };
        run().map_err(|e| self.failed("on_health", f, &e))
    }

    pub fn on_response(
        &self,
        req: &mut RequestView,
        res: &mut ResponseView,
    ) -> Result<(), HookError> {
        let Some(f) = &self.on_response else {
            return Ok(());
        };
        let _busy = self.busy(Doing::OnResponse, |w| w.on_response, req.id.seq);
        let lua = &self.vm.lua;
        lua.scope(|scope| {
            let r = scope.create_userdata_ref_mut(req)?;
            let s = scope.create_userdata_ref_mut(res)?;
            self.vm.call::<_, ()>(f, (r, s))
        })
        .map_err(|e| self.failed("on_response", f, &e))
    }
}

/// What `on_request` may return, as docs/lua-api.md says it.
const ON_REQUEST_RETURNS: &str = "a pool name (a string), pocket.respond(...) or nil";

/// Argument `n` of a check's `func` (`http.get`), which must be a string
/// (`what` it is); else the error names the function as the docs do.
/// The server a `balance` function's answer names: an index into
/// `candidates` (1-based) or a server's address; None (round robin
/// decides) for anything else.
fn chosen(pool: &crate::lb::Pool, candidates: &[usize], out: Value) -> Option<usize> {
    match out {
        Value::Nil => None,
        Value::Integer(n) if n >= 1 && (n as usize) <= candidates.len() => {
            Some(candidates[n as usize - 1])
        }
        Value::String(a) => {
            let a = a.to_string_lossy();
            candidates
                .iter()
                .copied()
                .find(|&i| *pool.servers[i].addr_text == *a)
        }
        _ => None,
    }
}

fn check_arg(func: &str, n: u8, what: &str, v: Value) -> mlua::Result<String> {
    match check_opt(func, n, what, v)? {
        Some(text) => Ok(text),
        None => Err(mlua::Error::RuntimeError(format!(
            "bad argument #{n} to '{func}': expected a string ({what}), got nil"
        ))),
    }
}

/// Like [`check_arg`], nil allowed.
fn check_opt(func: &str, n: u8, what: &str, v: Value) -> mlua::Result<Option<String>> {
    match v {
        Value::Nil => Ok(None),
        Value::String(s) => Ok(Some(s.to_string_lossy())),
        Value::Integer(_) | Value::Number(_) => Ok(Some(v.to_string()?)),
        other => Err(mlua::Error::RuntimeError(format!(
            "bad argument #{n} to '{func}': expected a string ({what}), got {}",
            returned(&other)
        ))),
    }
}

/// `path:line` of a function's definition, as Lua names its chunk.
fn place_of(f: &Function) -> String {
    let info = f.info();
    let path = info
        .source
        .as_deref()
        .and_then(|s| s.strip_prefix('@'))
        .or(info.short_src.as_deref())
        .unwrap_or("?")
        .to_string();
    match info.line_defined {
        Some(line) if line > 0 => format!("{path}:{line}"),
        _ => path,
    }
}

/// The most characters of a string value a message shows.
const SHOWN_CHARS: usize = 80;

/// A returned value in a user's words: `a number (5)`, `a table`, `a
/// request (req)`.
pub(crate) fn returned(v: &Value) -> String {
    match v {
        Value::Integer(n) => format!("a number ({n})"),
        Value::Number(n) => format!("a number ({})", crate::config::lua_float(*n)),
        Value::Boolean(b) => format!("a boolean ({b})"),
        Value::String(s) => {
            // On one line and short: a returned body must not flood the log.
            let text = s.to_string_lossy();
            let shown: String = text.chars().take(SHOWN_CHARS).collect();
            let cut = shown.len() < text.len();
            let shown = shown.replace('\n', "\\n");
            if cut {
                format!("a string (\"{shown}...\", {} bytes)", s.as_bytes().len())
            } else {
                format!("a string (\"{shown}\")")
            }
        }
        Value::Table(_) => "a table".into(),
        Value::Function(_) => "a function".into(),
        Value::UserData(ud) => match crate::script::api::userdata_name(ud) {
            Some(name) => name.to_string(),
            None => "a Pocket object".into(),
        },
        // The only light userdata a script has: `on_request`'s `req`
        // (see `api::lent_call::light_metatable`).
        Value::LightUserData(_) => "a request (req)".into(),
        other => format!("a {}", other.type_name()),
    }
}

#[cfg(test)]
#[path = "conn_hello_tests.rs"]
mod conn_hello_tests;
#[cfg(test)]
#[path = "on_connect_tcp_tests.rs"]
mod on_connect_tcp_tests;

/// Lends `req` to a hook run as a coroutine: an owned userdata (a
/// coroutine outlives any borrow) made first and swapped in, so if Lua
/// cannot make it the request is still the caller's. [`take_back`] ends
/// the loan.
fn lend(lua: &mlua::Lua, req: &mut RequestView) -> mlua::Result<mlua::AnyUserData> {
    let blank = RequestView {
        head: http::Request::new(()).into_parts().0,
        raw_target: None,
        peer: req.peer,
        listener: req.listener.clone(),
        id: req.id,
        growth: 0,
        tls: None,
    };
    let ud = lua.create_userdata(blank)?;
    std::mem::swap(&mut *ud.borrow_mut::<RequestView>()?, req);
    Ok(ud)
}

/// Takes a lent request back; a script that kept it finds it empty later.
fn take_back(ud: &mlua::AnyUserData, req: &mut RequestView) {
    match ud.take::<RequestView>() {
        Ok(view) => *req = view,
        Err(_) => {
            if let Ok(mut lent) = ud.borrow_mut::<RequestView>() {
                std::mem::swap(&mut *lent, req);
            }
        }
    }
}
