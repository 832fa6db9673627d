//! `pocket lab SCENARIO.lua`: every "what if" as a scenario anyone can run,
//! watch and repeat. It starts the origins the scenario declares, each
//! behind a userspace fault proxy, Pocket with the scenario's policy, and a
//! bounded load; injects the faults at their times; prints a live timeline;
//! checks the expectations; writes a report.

mod balancers;
mod chart;
mod failover;
mod faults;
mod keepalived;
mod load;
mod real;
mod report;
mod same_ip;
mod scenario;
mod segment;
mod stats;
mod tcp_load;
mod tls;
mod tunnel_load;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use faults::{FaultProxy, Mode};
pub use real::NS_PREFIX as REAL_NS_PREFIX;
pub use real::{free_subnets, ip, veth_pair};
pub use report::{failure_lines, Event};
pub use scenario::{load as load_scenario, FaultKind, Scenario};

use crate::origin::{self, OriginHandle};

/// How `pocket lab` was asked to run.
#[derive(Debug, Clone, Default)]
pub struct LabOptions {
    pub out: Option<PathBuf>,
    /// `--real`: kernel faults in network namespaces.
    pub real: bool,
    /// `--userspace`: the fault proxy, whatever the scenario's `mode`.
    pub userspace: bool,
    pub quiet: bool,
}

/// A Pocket process the lab owns; stopped when dropped (also on failure).
struct Balancer {
    child: Child,
    /// Its policy file, to find its pid and status files.
    policy: PathBuf,
}

/// How long a stopping lab Pocket gets: its `--grace` of 2 s, plus the
/// second Pocket gives itself to exit.
const BALANCER_STOP: Duration = Duration::from_secs(4);

impl Drop for Balancer {
    /// SIGTERM, as an operator stops it, so it removes its pid and status
    /// files itself; SIGKILL only if it has not ended in [`BALANCER_STOP`],
    /// and then the lab removes them.
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid, not yet waited for.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + BALANCER_STOP;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        crate::reload::RunFiles::for_process(&self.policy, self.child.id()).remove();
    }
}

/// The run's folder (policy, TLS certificate and key): removed on drop.
struct RunDir(PathBuf);

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

type Events = Arc<Mutex<Vec<Event>>>;

fn push(events: &Events, start: Instant, kind: &'static str, text: String) {
    let t = start.elapsed().as_secs_f64();
    push_at(events, t, kind, text);
}

fn push_at(events: &Events, t: f64, kind: &'static str, text: String) {
    events
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Event { t, kind, text });
}

/// When Pocket wrote its log `line`, on the lab's clock (seconds since
/// `start`): the line's own timestamp (tracing's default format starts
/// each line with RFC 3339 UTC, `2026-11-30T08:48:00.123456Z`) taken back
/// from the moment the lab reads it. Under load the lab reads a line
/// well after Pocket wrote it; the lag is measured on the wall clock
/// alone, so a clock step between runs does not matter. A line without a
/// timestamp: when it was read.
fn logged_at(line: &str, start: Instant) -> f64 {
    let read = start.elapsed().as_secs_f64();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    match line.split_whitespace().next().and_then(unix_seconds) {
        Some(written) => read - (now - written).clamp(0.0, read),
        None => read,
    }
}

/// Seconds since the Unix epoch of an RFC 3339 UTC timestamp
/// (`YYYY-MM-DDTHH:MM:SS[.fraction]Z`), as Pocket's log writes them.
fn unix_seconds(text: &str) -> Option<f64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|v| v.parse::<i64>().ok());
    let (y, m, d) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.splitn(3, ':');
    let (hh, mm) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    let ss = t.next()?.parse::<f64>().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Howard Hinnant's days_from_civil (proleptic Gregorian).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + hh * 3600.0 + mm * 60.0 + ss)
}

/// A retry from Pocket's log line `WARN request=.. pool=.. server=ADDR
/// REASON; trying another server` (fields before or after the message),
/// or a TCP connection's `WARN connection=.. listener=.. peer=.. pool=..
/// server=ADDR REASON; trying the next server`.
fn retry_of(line: &str, names: &[(String, String)], start: Instant) -> load::Retry {
    let body = line.split_once(" WARN ").map_or(line, |(_, b)| b);
    let (mut server, mut addr) = (String::from("?"), String::new());
    let mut words = Vec::new();
    for w in body.split_whitespace() {
        let field = |k: &str| {
            w.strip_prefix(k)
                .map(|v| v.trim_end_matches(':').to_string())
        };
        if let Some(v) = field("server=") {
            server = names
                .iter()
                .find(|(a, _)| *a == v)
                .map_or(v.clone(), |(_, name)| name.clone());
            addr = v;
        } else if !["request=", "pool=", "connection=", "listener=", "peer="]
            .iter()
            .any(|k| field(k).is_some())
        {
            words.push(w);
        }
    }
    let why = words.join(" ");
    let why = why
        .trim_end_matches("; trying another server")
        .trim_end_matches("; trying the next server")
        .to_string();
    load::Retry {
        t: start.elapsed().as_secs_f64(),
        server,
        addr,
        why,
    }
}

/// Starts Pocket on `policy`, waits until it is ready, and turns its log's
/// health and reload lines into events.
/// Whether the policy Pocket runs (written at `path`) has a `mode = "tcp"`
/// listener on `listen`, the address the load connects to. Loaded as
/// `pocket check` loads it; a policy that does not load says false.
fn listens_tcp(path: &Path, listen: std::net::SocketAddr) -> bool {
    crate::config::load_policy(path, &crate::lb::StateRegistry::default()).is_ok_and(|p| {
        p.listeners
            .iter()
            .any(|l| l.bind == listen && l.mode == crate::config::Mode::Tcp)
    })
}

#[allow(clippy::too_many_arguments)]
fn start_balancer(
    dir: &Path,
    policy: &str,
    workers: usize,
    names: Arc<Vec<(String, String)>>,
    events: Events,
    start: Instant,
    timeline: load::Timeline,
    // One of several balancers: (its namespace, its name for the events).
    place: Option<(&str, &str)>,
) -> Result<Balancer, String> {
    let path = dir.join("policy.lua");
    std::fs::write(&path, policy).map_err(|e| format!("cannot write the policy: {e}"))?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = match place {
        Some((ns, _)) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(exe);
            // SAFETY: prctl(2) is async-signal-safe; `ip netns exec` execs
            // Pocket in this same process, so it dies with the lab.
            unsafe {
                use std::os::unix::process::CommandExt;
                c.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            c
        }
        None => Command::new(exe),
    };
    let label = place.map(|(_, name)| format!("{name}: "));
    let mut child = cmd
        .args([
            "run",
            &path.display().to_string(),
            "--workers",
            &workers.to_string(),
            "--grace",
            "2s",
            "--lab-faults",
        ])
        .env("POCKET_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start pocket: {e}"))?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut ready = Some(ready_tx);
        // Pocket's refusal and the lines after it (`pocket: refusing to
        // start:` then each `path:line: ...`), sent whole when it exits.
        let mut refusal: Option<String> = None;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(r) = refusal.as_mut() {
                r.push('\n');
                r.push_str(line.trim_end());
                continue;
            }
            let mut text = line.clone();
            for (addr, name) in names.iter() {
                text = text.replace(addr.as_str(), name);
            }
            let body = text
                .split_once(" INFO ")
                .or_else(|| text.split_once(" WARN "))
                .or_else(|| text.split_once(" ERROR "))
                .map(|(_, b)| b.trim().to_string())
                .unwrap_or(text.clone());
            let body = format!("{}{body}", label.as_deref().unwrap_or(""));
            // HTTP: "trying another server"; TCP: "trying the next server".
            if line.contains("trying another server") || line.contains("trying the next server") {
                timeline.add_retry(retry_of(&line, &names, start));
            } else if let Some((port, cause)) = tcp_load::pocket_end_of(&text) {
                // Why Pocket ended a TCP connection: the cut's cause, timed
                // as Pocket wrote it (this thread may read it late).
                let t = logged_at(&line, start);
                timeline.tcp.pocket_ended(port, t, cause);
            } else if line.contains(" is DOWN") || line.contains(" is UP") {
                // Timed as Pocket wrote it: connections_to_down compares
                // it with when each connection's banner came.
                push_at(&events, logged_at(&line, start), "health", body);
            } else if line.contains("is live") || line.contains("refused, generation") {
                push(&events, start, "reload", body);
            } else if line.contains("broke off its response")
                || line.contains("closing the client connection")
            {
                // Why a client's connection closed with no status.
                push(&events, start, report::BROKEN, body);
            } else if line.contains(" is stuck: ") || line.contains("in place of stuck worker") {
                push(&events, start, "watchdog", body);
            } else if line.contains("pocket ready") {
                if let Some(r) = ready.take() {
                    let _ = r.send(Ok(()));
                }
            } else if (line.contains("refusing to start") || line.contains("pocket: "))
                && ready.is_some()
            {
                refusal = Some(line.trim_end().to_string());
            }
        }
        if let Some(r) = ready.take() {
            let _ = r.send(Err(refusal.unwrap_or_else(|| "pocket exited".into())));
        }
    });
    let balancer = Balancer {
        child,
        policy: path,
    };
    match ready_rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(())) => Ok(balancer),
        Ok(Err(e)) => Err(format!("pocket did not start: {e}")),
        Err(_) => Err("pocket did not start within 30s".into()),
    }
}

struct Origin {
    name: String,
    /// An echo origin (a TCP load), else the built-in HTTP origin.
    tcp: bool,
    addr: SocketAddr,
    handle: Option<OriginHandle>,
    proxy: FaultProxy,
    flapping: Arc<AtomicBool>,
}

/// Runs a scenario; Ok(true) when every expectation held.
pub fn run(path: &Path, opts: &LabOptions) -> Result<bool, String> {
    let scenario = load_scenario(path).map_err(|errs| errs.join("\n"))?;
    // `--userspace` wins over the scenario's `mode = "real"`.
    let want_real = opts.real || (scenario.real && !opts.userspace);
    if !want_real && !scenario.same_ip.is_empty() {
        return Err(format!("{}: {}", scenario.same_ip_at, same_ip::NEEDS_REAL));
    }
    let lbs_wanted = !scenario.balancers.is_empty();
    if lbs_wanted && !scenario.same_ip.is_empty() {
        return Err(format!(
            "{}: same_ip and balancers are two separate lab scenarios; one scenario cannot have both",
            scenario.same_ip_at
        ));
    }
    if lbs_wanted {
        // Refused before anything is made, as below.
        balancers::check_host(&scenario, want_real && !opts.userspace)?;
    }
    if want_real {
        // Refused before anything is made: no half-made namespace.
        if let Some(e) = real::unsupported(&scenario) {
            return Err(e);
        }
        real::check_host(&scenario)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let _guard = runtime.enter();

    // Ctrl-C, SIGTERM (`kill`, a service manager) and SIGHUP (the
    // terminal closed): stop early; everything below still cleans up (its
    // Pocket, its files and folder; the real layer's namespace goes when
    // `net` drops, also on an early return). Registered before anything
    // is made, so no signal finds a half-made lab with its default action.
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        let interrupted = interrupted.clone();
        runtime.spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = hup.recv() => {}
                _ = int.recv() => {}
            }
            interrupted.store(true, Ordering::Relaxed);
        });
    }

    let tcp = scenario.load.tcp.is_some();
    let mut net: Option<real::RealNet> = None;
    let mut origins: Vec<Origin> = Vec::new();
    let mut addrs: Vec<(String, SocketAddr)> = Vec::new();
    if want_real {
        let own: Vec<String> = (scenario.origins.iter())
            .filter(|o| !scenario.same_ip.contains(o))
            .cloned()
            .collect();
        let mut built = real::RealNet::build(&own, tcp)?;
        addrs = built.addrs();
        if !scenario.same_ip.is_empty() {
            let x = free_subnets(std::process::id()).into_iter().next();
            let x = x.ok_or("real mode: no free 10.213.x.0/24 left for the same_ip segment")?;
            let seg = same_ip::SameIp::build(&scenario.same_ip, x, tcp)?;
            addrs.extend(seg.addrs());
            built.segment = Some(seg);
        }
        net = Some(built);
    }
    for name in scenario.origins.iter().filter(|_| !want_real) {
        let handle = spawn_origin(name, "127.0.0.1:0".parse().map_err(|_| "addr")?, tcp)
            .map_err(|e| format!("origin {name}: {e}"))?;
        let proxy =
            FaultProxy::start(handle.addr).map_err(|e| format!("fault proxy for {name}: {e}"))?;
        origins.push(Origin {
            name: name.clone(),
            tcp,
            addr: handle.addr,
            handle: Some(handle),
            proxy,
            flapping: Arc::new(AtomicBool::new(false)),
        });
        addrs.push((
            name.clone(),
            origins.last().map(|o| o.proxy.addr).ok_or("origin")?,
        ));
    }
    let layer = if want_real {
        "real (network namespaces)"
    } else {
        "userspace"
    };
    // Balancers listen on all their namespace's addresses (the virtual
    // one when they hold it).
    let listen = if lbs_wanted {
        SocketAddr::from(([0, 0, 0, 0], balancers::PORT))
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
    };
    let placeholders: Vec<(String, String)> = addrs
        .iter()
        .map(|(name, addr)| (format!("{{{{{name}}}}}"), addr.to_string()))
        .collect();
    let fill = move |text: &str| {
        let mut t = text.replace("{{listen}}", &listen.to_string());
        for (p, addr) in &placeholders {
            t = t.replace(p, addr);
        }
        t
    };
    // An address two origins share (same_ip) is named by both: `A|B`.
    let names: Arc<Vec<(String, String)>> = Arc::new(same_ip::address_names(&addrs));
    let dir = std::env::temp_dir().join(format!("pocket-lab-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    // Removed however the run ends (a Pocket that would not start, too):
    // it holds the run's TLS key. Declared before the balancer, so it is
    // dropped after it.
    let run_dir = RunDir(dir.clone());
    // Written before Pocket starts: the policy names them.
    let connector = if scenario.tls {
        Some(tls::make_cert(&dir)?)
    } else {
        None
    };
    let events: Events = Arc::default();
    let timeline: load::Timeline = Arc::default();
    // One clock for the load, the faults and Pocket's log lines.
    let start = Instant::now();
    if let Some(seg) = net.as_mut().and_then(|n| n.segment.as_mut()) {
        seg.watch(events.clone(), start);
    }
    let mut lbs: Option<balancers::Balancers> = None;
    if let (true, Some(ns)) = (lbs_wanted, net.as_ref().and_then(|n| n.namespace())) {
        lbs = Some(balancers::Balancers::build(
            ns,
            &scenario,
            &dir,
            fill(&scenario.policy),
            names.clone(),
            events.clone(),
            start,
            timeline.clone(),
        )?);
    }
    // Several balancers: the load and the faults' times start once the
    // first holds the virtual address.
    let offset = if lbs.is_some() {
        push(&events, start, "load", "the load starts".into());
        start.elapsed()
    } else {
        Duration::ZERO
    };
    let mut balancer = if lbs_wanted {
        None
    } else {
        Some(
            start_balancer(
                &dir,
                &fill(&scenario.policy),
                scenario.workers,
                names.clone(),
                events.clone(),
                start,
                timeline.clone(),
                None,
            )
            .map_err(|e| {
                if !scenario.tls && e.contains(tls::CERT_FILE) {
                    format!(
                        "{e}\n(the lab writes {} and {} for a scenario with tls = true)",
                        tls::CERT_FILE,
                        tls::KEY_FILE
                    )
                } else {
                    e
                }
            })?,
        )
    };
    let mut load_conf = scenario.load.clone();
    let target = match &lbs {
        Some(b) => {
            load_conf.via = b.via();
            b.vip()
        }
        None => listen,
    };

    if !opts.quiet {
        println!(
            "lab: {} ({:?}, {layer} faults, {}{})",
            scenario.name,
            scenario.duration,
            if scenario.tls { "TLS, " } else { "" },
            crate::words::count(scenario.load.concurrency as u64, "client")
        );
    }
    let until = start + offset + scenario.duration;
    let stop = Arc::new(AtomicBool::new(false));
    let load_task = match scenario.load.tcp.clone() {
        Some(mut t) => {
            t.listener_tcp = listens_tcp(&dir.join("policy.lua"), listen);
            runtime.spawn(tcp_load::run(
                listen,
                scenario.load.clone(),
                t,
                start,
                until,
                stop.clone(),
                timeline.clone(),
            ))
        }
        None => runtime.spawn(load::run(
            tls::Dial::new(target, connector),
            load_conf,
            start,
            until,
            stop.clone(),
            timeline.clone(),
        )),
    };

    let mut pending: Vec<Option<scenario::Fault>> =
        scenario.faults.iter().cloned().map(Some).collect();
    let mut printed = 0usize;
    let mut live = Live::new((offset + scenario.duration).as_secs_f64(), tcp);
    while Instant::now() < until && !interrupted.load(Ordering::Relaxed) {
        let received = timeline.bytes.load(Ordering::Relaxed);
        let now = start.elapsed();
        let due: Vec<scenario::Fault> = pending
            .iter_mut()
            .filter(|f| {
                f.as_ref().is_some_and(|f| {
                    now >= f.at.saturating_add(offset)
                        || f.after_bytes.is_some_and(|b| received >= b)
                })
            })
            .filter_map(Option::take)
            .collect();
        for f in due {
            push(&events, start, "fault", f.text.clone());
            if let (Some(b), Some(name)) = (lbs.as_mut(), &f.balancer) {
                if let Err(e) = b.apply(name, &f.kind) {
                    push(&events, start, "fault", format!("{} failed: {e}", f.text));
                }
                continue;
            }
            if let Err(e) = apply(
                &f,
                &mut origins,
                net.as_mut(),
                &mut balancer,
                &scenario,
                &fill,
                &dir,
                &names,
                &events,
                start,
                &timeline,
            ) {
                push(&events, start, "fault", format!("{} failed: {e}", f.text));
            }
        }
        let elapsed = start.elapsed().as_secs() as usize;
        if !opts.quiet {
            while printed < elapsed {
                live.print_second(printed, &timeline, &events);
                printed += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // When the load stopped sending: the run's end when interrupted.
    let stopped_at = start.elapsed().as_secs_f64();
    let was_interrupted = interrupted.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let _ = runtime.block_on(load_task);
    for o in &origins {
        o.flapping.store(false, Ordering::Relaxed);
    }
    drop(balancer.take());
    let mut same_view = net
        .as_mut()
        .and_then(|n| n.segment.as_mut())
        .map(|s| s.view());
    let layout = lbs.as_ref().map(balancers::Balancers::layout);
    drop(lbs.take());
    drop(net.take());
    if let Some(v) = same_view.as_mut() {
        v.read_access_log(&dir);
    }
    drop(run_dir);

    let planned = (offset + scenario.duration).as_secs_f64();
    let end = if was_interrupted {
        stopped_at.min(planned)
    } else {
        planned
    };
    // An interrupted run's last, partial second is not printed as a
    // second with nothing in it.
    let last = if was_interrupted { end.floor() } else { end };
    if !opts.quiet {
        while (printed as f64) < last {
            live.print_second(printed, &timeline, &events);
            printed += 1;
        }
    }
    let mut events = events.lock().unwrap_or_else(|e| e.into_inner()).clone();
    // In order of time: a health event is timed by Pocket's log line,
    // before the lab read it.
    events.sort_by(|a, b| a.t.total_cmp(&b.t));
    // A TCP run's cut connections say what Pocket's log said of them.
    let conns = timeline.tcp.conns_with_causes();
    let samples = if tcp {
        conns.iter().map(tcp_load::sample_of).collect()
    } else {
        timeline.samples()
    };
    let retries = timeline.retries();
    let tcp_bytes = timeline.tcp.bytes();
    let tcp_opened = timeline.tcp.opened();
    let mut verdicts = judge(&scenario, &samples, &events, was_interrupted);
    if tcp {
        verdicts.extend(judge_tcp(
            &scenario,
            &conns,
            &tcp_bytes,
            &events,
            was_interrupted,
        ));
    }
    if let Some(v) = &same_view {
        verdicts.extend(v.judge(
            &scenario,
            &same_ip::answered(&samples, tcp.then_some(&conns[..])),
        ));
    }
    if !scenario.balancers.is_empty() {
        verdicts.extend(failover::judge(
            &scenario,
            &samples,
            &events,
            end,
            was_interrupted,
        ));
    }
    let out = opts.out.clone().unwrap_or_else(|| report_dir(path));
    let run = report::Run {
        title: &scenario.name,
        file: path,
        mode: layer,
        end,
        planned: scenario.duration.as_secs_f64(),
        offset: offset.as_secs_f64(),
        interrupted: was_interrupted,
        clients: scenario.load.concurrency,
        tls: scenario.tls,
        samples: &samples,
        retries: &retries,
        events: &events,
        verdicts: &verdicts,
        names: &same_ip::address_names(&addrs),
        tcp: tcp.then_some(report::TcpView {
            conns: &conns,
            opened: &tcp_opened,
            bytes: &tcp_bytes,
        }),
        same_ip: same_view.as_ref(),
    };
    report::write_all(&out, &run)
        .map_err(|e| format!("cannot write the report to {}: {e}", out.display()))?;
    let lb_lines = layout
        .map(|l| failover::summary(&scenario, &l, &samples, &events, end))
        .unwrap_or_default();
    failover::add_to_summary(&out.join("summary.md"), &lb_lines)
        .map_err(|e| format!("cannot write the report to {}: {e}", out.display()))?;
    let failed = samples.iter().filter(|s| s.failure.is_some()).count();
    match &run.tcp {
        Some(t) => println!(
            "lab: {}; {} retried by Pocket; report in {}",
            report::tcp_outcome_line(t),
            retries.len(),
            out.display()
        ),
        None => println!(
            "lab: {} answered, {} failed, {} retried by Pocket; report in {}",
            samples.len() - failed,
            failed,
            retries.len(),
            out.display()
        ),
    }
    for line in lb_lines.iter().skip(1) {
        println!("  {line}");
    }
    for line in failure_lines(&run) {
        // A TCP line starts with its outcome: `cut: connection reset ×2: ...`.
        match run.tcp {
            Some(_) => println!("  {line}"),
            None => println!("  failed: {line}"),
        }
    }
    for (v, met) in &verdicts {
        let head = match met {
            Some(true) => "met:    ",
            Some(false) => "NOT MET:",
            None => "not reached (interrupted):",
        };
        println!("  {head} {v}");
    }
    if was_interrupted {
        return Err("interrupted".into());
    }
    Ok(verdicts.iter().all(|(_, met)| *met == Some(true)))
}

/// Where a report goes by default: `lab-report/` and the scenario file's
/// name without `.lua` (server-dies.lua: lab-report/server-dies/), so each
/// file has its own folder whatever its `name` says.
pub fn report_dir(scenario: &Path) -> PathBuf {
    let stem = scenario
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "scenario".into());
    PathBuf::from("lab-report").join(stem)
}

/// The live timeline's one-second buckets, filled as samples arrive: each
/// second copies only the samples and retries that came since the last,
/// not the whole run (which grew quadratically and held the lock every
/// client takes to record a sample).
struct Live {
    buckets: Vec<stats::Bucket>,
    samples: usize,
    retries: usize,
    end: f64,
    /// A TCP load: each line counts connections and bytes.
    tcp: bool,
    /// Which events (by index) a line has shown: a health event is timed
    /// by Pocket's log, so it may come in after its second was printed;
    /// the next line shows it.
    shown: Vec<bool>,
}

impl Live {
    /// For a run `end` seconds long.
    fn new(end: f64, tcp: bool) -> Live {
        Live {
            buckets: stats::empty(1.0, end),
            samples: 0,
            retries: 0,
            end,
            tcp,
            shown: Vec::new(),
        }
    }

    /// What happened by second `i` and was not shown yet, as a line says
    /// it.
    fn happened(&mut self, i: usize, events: &Events) -> String {
        let events = events.lock().unwrap_or_else(|e| e.into_inner());
        self.shown.resize(events.len(), false);
        let mut out = Vec::new();
        for (e, shown) in events.iter().zip(self.shown.iter_mut()) {
            if !*shown && e.t as usize <= i && e.kind != report::BROKEN {
                *shown = true;
                out.push(format!("[{}] {}", e.kind, e.text));
            }
        }
        out.join("; ")
    }

    /// One line of the live timeline: second `i`.
    fn print_second(&mut self, i: usize, timeline: &load::Timeline, events: &Events) {
        if self.tcp {
            // Short runs, few connections: counted afresh each second.
            let conns = timeline.tcp.conns();
            let opened = timeline.tcp.opened();
            let bytes = timeline.tcp.bytes();
            let seconds = report::tcp_seconds(&conns, &opened, &bytes, self.end);
            let s = seconds.get(i).cloned().unwrap_or_default();
            let happened = self.happened(i, events);
            print_tcp_line(i, &s, &happened);
            return;
        }
        let samples = timeline.samples_from(self.samples);
        let retries = timeline.retries_from(self.retries);
        self.samples += samples.len();
        self.retries += retries.len();
        stats::add(&mut self.buckets, &samples, &retries, 1.0, self.end);
        let mut s = self.buckets.get(i).cloned().unwrap_or_default();
        s.sort();
        let happened = self.happened(i, events);
        print_line(i, &s, &happened);
    }
}

/// One line of a TCP run's live timeline: connections opened, ended each
/// way, bytes echoed by each server.
fn print_tcp_line(i: usize, s: &report::TcpSecond, happened: &str) {
    let opened: u64 = s.opened.values().sum();
    let by: Vec<String> = s.opened.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let opened = if by.is_empty() {
        opened.to_string()
    } else {
        format!("{opened} ({})", by.join(", "))
    };
    let bytes: Vec<String> = s
        .bytes
        .iter()
        .map(|(k, v)| format!("{k}:{}", report::human_bytes(*v)))
        .collect();
    println!(
        "{:>4}s  opened {:<18}  completed {:>4}  failed {:>3}  cut {:>3}  bytes {}  {}",
        i,
        opened,
        s.completed,
        s.failed,
        s.cut,
        if bytes.is_empty() {
            "-".into()
        } else {
            bytes.join(" ")
        },
        happened
    );
}

fn print_line(i: usize, s: &stats::Bucket, happened: &str) {
    let causes: Vec<String> = s.failed.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let servers: Vec<String> = s.servers.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    println!(
        "{:>4}s  ok {:>6}  retried {:>3}  failed {:>4}{}  p50 {:>6.2}ms  p99 {:>7.2}ms  {}  {}",
        i,
        s.ok(),
        s.retried,
        s.failed_total(),
        if causes.is_empty() {
            String::new()
        } else {
            format!(" ({})", causes.join(", "))
        },
        s.quantile_ms(0.5).unwrap_or(0.0),
        s.quantile_ms(0.99).unwrap_or(0.0),
        servers.join(" "),
        happened
    );
}

#[allow(clippy::too_many_arguments)]
fn apply(
    f: &scenario::Fault,
    origins: &mut [Origin],
    net: Option<&mut real::RealNet>,
    balancer: &mut Option<Balancer>,
    scenario: &Scenario,
    fill: &dyn Fn(&str) -> String,
    dir: &Path,
    names: &Arc<Vec<(String, String)>>,
    events: &Events,
    start: Instant,
    timeline: &load::Timeline,
) -> Result<(), String> {
    let Some(server) = &f.server else {
        return match &f.kind {
            FaultKind::Reload(name) => {
                let text = scenario.policies.get(name).ok_or("no such policy")?;
                let tmp = dir.join("policy.lua.new");
                std::fs::write(&tmp, fill(text)).map_err(|e| e.to_string())?;
                std::fs::rename(&tmp, dir.join("policy.lua")).map_err(|e| e.to_string())
            }
            FaultKind::RestartBalancer => {
                let policy =
                    std::fs::read_to_string(dir.join("policy.lua")).map_err(|e| e.to_string())?;
                // Dropping it drains it (SIGTERM), as an operator would
                // restart it.
                drop(balancer.take());
                *balancer = Some(start_balancer(
                    dir,
                    &policy,
                    scenario.workers,
                    names.clone(),
                    events.clone(),
                    start,
                    timeline.clone(),
                    None,
                )?);
                Ok(())
            }
            FaultKind::HangWorker => {
                let Some(b) = balancer.as_ref() else {
                    return Err("the balancer is not running".into());
                };
                // SAFETY: kill(2) on our own child's pid; it runs with
                // --lab-faults, so SIGUSR2 arms the fault.
                unsafe { libc::kill(b.child.id() as i32, libc::SIGUSR2) };
                Ok(())
            }
            FaultKind::FlushArp => net
                .and_then(|n| n.segment.as_ref())
                .ok_or("no same_ip segment")?
                .flush_arp(),
            _ => Err("not a balancer fault".into()),
        };
    };
    if let Some(net) = net {
        return net.apply(server, &f.kind);
    }
    let o = origins
        .iter_mut()
        .find(|o| &o.name == server)
        .ok_or("no such server")?;
    o.flapping.store(false, Ordering::Relaxed);
    match &f.kind {
        FaultKind::Kill => {
            o.proxy.set(Mode::Refuse);
            o.handle = None;
        }
        FaultKind::Restart => {
            if o.handle.is_none() {
                o.handle = Some(spawn_origin(&o.name, o.addr, o.tcp).map_err(|e| e.to_string())?);
            }
            o.proxy.set(Mode::Pass);
        }
        FaultKind::Refuse => o.proxy.set(Mode::Refuse),
        FaultKind::Blackhole => o.proxy.set(Mode::Blackhole),
        FaultKind::Drop => o.proxy.set(Mode::Drop),
        FaultKind::Cut(n) => o.proxy.set(Mode::Cut(*n)),
        FaultKind::ResetAfterHeaders => o.proxy.set(Mode::ResetAfterHeaders),
        FaultKind::Slow { latency, bandwidth } => o.proxy.set(Mode::Slow {
            latency: *latency,
            bandwidth: *bandwidth,
        }),
        FaultKind::Lie(status) => {
            if let Some(h) = &o.handle {
                h.set_fail_status(Some(*status));
            }
        }
        FaultKind::Flap { period } => {
            let flag = Arc::new(AtomicBool::new(true));
            o.flapping = flag.clone();
            let proxy_mode = o.proxy.handle();
            let period = *period;
            std::thread::spawn(move || {
                let mut down = true;
                while flag.load(Ordering::Relaxed) {
                    proxy_mode.send_replace(if down { Mode::Refuse } else { Mode::Pass });
                    down = !down;
                    std::thread::sleep(period);
                }
            });
        }
        FaultKind::Heal => {
            o.proxy.set(Mode::Pass);
            if let Some(h) = &o.handle {
                h.set_fail_status(None);
            }
        }
        FaultKind::Reload(_)
        | FaultKind::RestartBalancer
        | FaultKind::HangWorker
        | FaultKind::StopKeepalived
        | FaultKind::StartKeepalived
        | FaultKind::DropVrrp => return Err("a balancer fault".into()),
        FaultKind::Announce | FaultKind::FlushArp => {
            return Err("a same_ip fault needs the real layer".into())
        }
    }
    Ok(())
}

/// The built-in origin for a scenario: an echo server for a TCP load.
fn spawn_origin(name: &str, addr: SocketAddr, tcp: bool) -> std::io::Result<OriginHandle> {
    if tcp {
        origin::echo::spawn_echo(name, addr)
    } else {
        origin::spawn(name, addr)
    }
}

/// Checks the expectations of a TCP load (`expect.failed_connections`,
/// `cut_connections`, `cut_connections_min`, `connections_to_down`,
/// `bytes_after_fault`).
fn judge_tcp(
    scenario: &Scenario,
    conns: &[tcp_load::Conn],
    bytes: &std::collections::BTreeMap<(u32, String), u64>,
    events: &[Event],
    interrupted: bool,
) -> Vec<(String, Option<bool>)> {
    let mut out = Vec::new();
    let e = &scenario.expect;
    let (_, failed, cut) = report::tcp_counts(conns);
    if let Some(max) = e.failed_connections {
        out.push((
            format!("failed connections: {failed} (at most {max})"),
            Some(failed as u64 <= max),
        ));
    }
    if let Some(max) = e.cut_connections {
        out.push((
            format!("cut connections: {cut} (at most {max})"),
            Some(cut as u64 <= max),
        ));
    }
    if let Some(min) = e.cut_connections_min {
        out.push((
            format!("cut connections: {cut} (at least {min})"),
            (cut as u64 >= min || !interrupted).then_some(cut as u64 >= min),
        ));
    }
    if let Some(max) = e.connections_to_down {
        let (n, downs) = connections_to_down(conns, events, &scenario.origins);
        out.push((
            format!(
                "connections to a server while it was marked down: {n} (at most {max}; {} seen)",
                crate::words::count(downs as u64, "down period")
            ),
            Some(n <= max),
        ));
    }
    if let Some(min) = e.bytes_after_fault {
        let fault_t = events.iter().find(|e| e.kind == "fault").map(|e| e.t);
        match fault_t {
            Some(t) => {
                let after: u64 = bytes
                    .iter()
                    .filter(|((i, _), _)| *i as f64 * tcp_load::BYTE_BUCKET >= t)
                    .map(|(_, n)| n)
                    .sum();
                let by = report::tcp_bytes_by_server(
                    &bytes
                        .iter()
                        .filter(|((i, _), _)| *i as f64 * tcp_load::BYTE_BUCKET >= t)
                        .map(|(k, v)| (k.clone(), *v))
                        .collect(),
                );
                let by: Vec<String> = by
                    .iter()
                    .map(|(k, v)| format!("{k} {}", report::human_bytes(*v)))
                    .collect();
                out.push((
                    format!(
                        "bytes echoed after the first fault: {} ({}; at least {})",
                        report::human_bytes(after),
                        if by.is_empty() {
                            "none".into()
                        } else {
                            by.join(", ")
                        },
                        report::human_bytes(min)
                    ),
                    (after >= min || !interrupted).then_some(after >= min),
                ));
            }
            None => out.push((
                format!(
                    "bytes echoed after the first fault (at least {}): no fault fired",
                    report::human_bytes(min)
                ),
                if interrupted { None } else { Some(false) },
            )),
        }
    }
    out
}

/// Connections whose server's banner came while Pocket had that server
/// marked down (from its DOWN health line to its next UP line, timed by
/// the lines' own timestamps, see [`logged_at`]), and how many down
/// periods there were. A connection is timed by its banner, the first
/// moment the lab knows which server took it, not by when the client
/// began to connect: under load Pocket may pick the server well after
/// that, on the other side of a health change.
fn connections_to_down(
    conns: &[tcp_load::Conn],
    events: &[Event],
    origins: &[String],
) -> (u64, usize) {
    let mut n = 0;
    let mut periods = 0;
    for name in origins {
        let who = format!("server {name} ");
        let mut down_since: Option<f64> = None;
        let mut spans = Vec::new();
        for e in events
            .iter()
            .filter(|e| e.kind == "health" && e.text.contains(&who))
        {
            if e.text.contains(" is DOWN") {
                down_since.get_or_insert(e.t);
            } else if let Some(from) = down_since.take() {
                spans.push((from, e.t));
            }
        }
        if let Some(from) = down_since {
            spans.push((from, f64::INFINITY));
        }
        periods += spans.len();
        n += conns
            .iter()
            .filter(|c| c.server.as_deref() == Some(name.as_str()))
            .filter_map(|c| c.banner)
            .filter(|t| spans.iter().any(|(a, b)| t > a && t < b))
            .count() as u64;
    }
    (n, periods)
}

/// Checks the scenario's expectations against what happened.
/// Each expectation as (what, Some(met)); None: the run was interrupted
/// before it could be judged (its fault never fired, or too few requests
/// were sent yet).
fn judge(
    scenario: &Scenario,
    samples: &[load::Sample],
    events: &[Event],
    interrupted: bool,
) -> Vec<(String, Option<bool>)> {
    let mut out = Vec::new();
    let failed = samples.iter().filter(|s| s.failure.is_some()).count() as u64;
    let ok = samples.len() as u64 - failed;
    if let Some(max) = scenario.expect.failed {
        out.push((
            format!("failed requests: {failed} (at most {max})"),
            Some(failed <= max),
        ));
    }
    if let Some(min) = scenario.expect.ok_min {
        out.push((
            format!("answered requests: {ok} (at least {min})"),
            (ok >= min || !interrupted).then_some(ok >= min),
        ));
    }
    let first_fault = scenario
        .faults
        .iter()
        .find(|f| f.server.is_some() && !matches!(f.kind, FaultKind::Heal | FaultKind::Restart));
    if let (Some(within), Some(f)) = (scenario.expect.detected_within, first_fault) {
        out.push(state_change_within(
            events,
            f,
            "DOWN",
            "marked down",
            within,
            interrupted,
        ));
    }
    let heal = scenario
        .faults
        .iter()
        .find(|f| matches!(f.kind, FaultKind::Heal | FaultKind::Restart) && f.server.is_some());
    if let (Some(within), Some(f)) = (scenario.expect.recovered_within, heal) {
        out.push(state_change_within(
            events,
            f,
            " UP",
            "back up",
            within,
            interrupted,
        ));
    }
    out
}

/// How long after fault `f` its server's health line containing `marker`
/// came, as a verdict against `within`.
fn state_change_within(
    events: &[Event],
    f: &scenario::Fault,
    marker: &str,
    what: &str,
    within: Duration,
    interrupted: bool,
) -> (String, Option<bool>) {
    let name = f.server.clone().unwrap_or_default();
    let fault_t = events
        .iter()
        .find(|e| e.kind == "fault" && e.text == f.text)
        .map(|e| e.t);
    let change_t = events
        .iter()
        .find(|e| {
            e.kind == "health"
                && e.text.contains(&format!("server {name} "))
                && e.text.contains(marker)
                && fault_t.is_some_and(|t| e.t >= t)
        })
        .map(|e| e.t);
    match (fault_t, change_t) {
        (Some(a), Some(b)) => (
            format!(
                "{name} {what} {:.2}s after \"{}\" (within {within:?})",
                b - a,
                f.text
            ),
            Some(b - a <= within.as_secs_f64()),
        ),
        // The fault never fired: the run stopped first.
        (None, _) if interrupted => (
            format!("{name} {what} after \"{}\" (within {within:?})", f.text),
            None,
        ),
        _ => (
            format!(
                "{name} {what} after \"{}\" (within {within:?}): never",
                f.text
            ),
            Some(false),
        ),
    }
}
