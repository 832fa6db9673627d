//! The real fault layer (`pocket lab --real`, or `mode = "real"`): every
//! origin runs as its own `pocket origin` process inside one network
//! namespace the lab makes, each behind its own veth pair and /30 in
//! 10.213.x.0/30; Pocket stays in the root namespace and reaches the
//! origins by their namespace addresses. The kernel makes the faults:
//!
//! - kill / restart: SIGKILL the origin process / start it again;
//! - refuse: the origin process is stopped, so the kernel answers every
//!   connect to its port with a RST (heal starts it again);
//! - blackhole: `ip link set down` on the host end of the origin's veth, a
//!   pulled cable (silence for open connections, no route for new ones);
//! - slow with `bandwidth` only: `tc tbf` on the origin's side of the link
//!   (this kernel has no netem, so no added latency);
//! - flap: the link goes down and up every `period`.
//!
//! cut, reset_after_headers, slow with latency and lie have no kernel
//! counterpart here: a real-mode scenario that uses them is refused before
//! anything starts, naming the fault.
//!
//! Safety: each /30 gets an `unreachable` route (metric 4000) before its
//! link exists, so while a link is down packets for the namespace fail at
//! once on this machine instead of following the default route out.
//! Everything made (processes, routes, links, the namespace) is undone by
//! `Drop`, which runs on success, on errors, on Ctrl-C (the runner stops
//! its loop and returns) and on panic; origin processes also get
//! PDEATHSIG so they die with the lab even if it is killed outright.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::scenario::{FaultKind, Scenario};

/// Name prefix of everything the real layer makes (namespace, links).
pub const NS_PREFIX: &str = "pktlab";
/// The port every origin listens on, on its own namespace address.
const PORT: u16 = 8080;
/// The safety route's metric (above any connected route).
const SAFETY_METRIC: &str = "4000";

/// Runs a command; Err(its stderr) when it fails or cannot start.
fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `ip ARGS`; Err(what it said) when it fails or cannot start.
pub fn ip(args: &[&str]) -> Result<String, String> {
    run("ip", args)
}

/// Starts `pocket origin` named `name` on `ip`:[`PORT`] inside namespace
/// `ns` (an echo origin when `echo`); it dies with the lab's thread
/// (PDEATHSIG). Err: why it could not start.
pub fn spawn_origin(
    exe: &std::path::Path,
    ns: &str,
    name: &str,
    ip: std::net::IpAddr,
    echo: bool,
) -> Result<Child, String> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(exe)
        .args(["origin", "--name", name, "--bind"])
        .arg(ip.to_string())
        .args(["--port", &PORT.to_string()])
        .args(echo.then_some("--echo"))
        .env("POCKET_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: prctl(2) is async-signal-safe; `ip netns exec` execs the
    // origin in this same process, so it dies with the lab's thread.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| format!("cannot start origin {name}: {e}"))
}

/// The x of every 10.213.x.0/30 that no address or route on this machine
/// uses yet, starting from one derived from `seed` (a pid), so that two
/// processes setting up at once rarely pick the same.
pub fn free_subnets(seed: u32) -> Vec<u32> {
    let taken = ip(&["-o", "-4", "addr", "show"]).unwrap_or_default()
        + &ip(&["-4", "route", "show", "table", "all"]).unwrap_or_default();
    (0..254u32)
        .map(|i| (seed + i) % 254 + 1)
        .filter(|x| !taken.contains(&format!("10.213.{x}.")))
        .collect()
}

/// A veth pair from the host (`host_if`, 10.213.x.1/30) into namespace `ns`
/// (`ns_if`, 10.213.x.2/30), both ends up. Removing the namespace removes
/// the pair.
pub fn veth_pair(ns: &str, host_if: &str, ns_if: &str, x: u32) -> Result<(), String> {
    ip(&[
        "link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", ns,
    ])?;
    ip(&["addr", "add", &format!("10.213.{x}.1/30"), "dev", host_if])?;
    ip(&["link", "set", host_if, "up"])?;
    ip(&[
        "-n",
        ns,
        "addr",
        "add",
        &format!("10.213.{x}.2/30"),
        "dev",
        ns_if,
    ])?;
    ip(&["-n", ns, "link", "set", ns_if, "up"])?;
    Ok(())
}

/// The faults of `scenario` the kernel layer cannot make, as one message;
/// None when every fault can be made for real.
pub fn unsupported(scenario: &Scenario) -> Option<String> {
    let mut bad = Vec::new();
    for f in &scenario.faults {
        let why = match &f.kind {
            FaultKind::Cut(_) => Some("cutting a response after N bytes is not a kernel fault"),
            FaultKind::ResetAfterHeaders => Some("resetting after the headers needs to see HTTP"),
            FaultKind::Slow { latency, .. } if !latency.is_zero() => {
                Some("added latency needs netem, which this kernel does not have")
            }
            FaultKind::Slow {
                bandwidth: None, ..
            } => Some("slow without bandwidth does nothing in the kernel layer"),
            FaultKind::Lie(_) => Some("a lying health check is the application's doing"),
            _ => None,
        };
        if let Some(why) = why {
            bad.push(format!("\"{}\" at {:?} ({why})", f.text, f.at));
        }
    }
    if bad.is_empty() {
        None
    } else {
        Some(format!(
            "real mode (--real or mode = \"real\") cannot make {}; run it with --userspace",
            bad.join(", ")
        ))
    }
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// Whether this host can run the real layer for `scenario`: root, `ip`,
/// and `tc` when a fault needs it. Nothing is made here.
pub fn check_host(scenario: &Scenario) -> Result<(), String> {
    if effective_uid() != 0 {
        // same_ip has no userspace form: two origins cannot share 127.0.0.1.
        let instead = if scenario.same_ip.is_empty() {
            " or with --userspace"
        } else {
            " (same_ip has no userspace form)"
        };
        return Err(format!(
            "real mode (--real or mode = \"real\") needs root for network namespaces; run as root{instead}"
        ));
    }
    ip(&["-V"]).map_err(|e| {
        format!("real mode (--real or mode = \"real\") needs `ip` (iproute2): {e}; install it or run with --userspace")
    })?;
    let shapes = scenario
        .faults
        .iter()
        .any(|f| matches!(f.kind, FaultKind::Slow { .. }));
    if shapes {
        run("tc", &["-V"]).map_err(|e| {
            format!(
                "real mode (--real or mode = \"real\"): the slow fault needs `tc` (iproute2): {e}"
            )
        })?;
    }
    if !scenario.same_ip.is_empty() {
        super::same_ip::check_host()?;
    }
    Ok(())
}

/// Deletes namespaces left by a lab that was killed outright (SIGKILL, no
/// Drop): `pktlabPID` whose PID no longer runs, and those named after it
/// (`pktlabPID-L1`, a balancer's). Their veth pairs go with them; their
/// origins, Pockets and keepalived died with the lab (PDEATHSIG).
fn sweep_stale() {
    let list = ip(&["netns", "list"]).unwrap_or_default();
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        // `pktlabPID`, and what a lab names after it (`pktlabPID-L1`, a
        // balancer's; `pktlabPIDs0`, a same_ip origin's).
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if pid.parse::<u32>().is_ok() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// One origin: its process, its veth pair and its /30.
struct Link {
    name: String,
    host_if: String,
    ns_if: String,
    addr: SocketAddr,
    /// The /30 while its safety route is in place.
    net: Option<String>,
    child: Option<Child>,
    /// Stopped by `refuse` (so `heal` starts it again).
    refused: bool,
    shaped: bool,
    flap: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

/// The namespace, links and origin processes of one lab run; all removed
/// when dropped.
pub struct RealNet {
    ns: Option<String>,
    exe: PathBuf,
    /// The origins are echo servers (`pocket origin --echo`): a TCP load.
    echo: bool,
    links: Vec<Link>,
    /// The `same_ip` origins' segment, if the scenario has one.
    pub(super) segment: Option<super::same_ip::SameIp>,
}

impl RealNet {
    /// Makes the namespace and one link and origin per name; on any error
    /// what was made so far is removed before returning.
    pub fn build(names: &[String], echo: bool) -> Result<RealNet, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let pid = std::process::id();
        let ns = format!("{NS_PREFIX}{pid}");
        sweep_stale();
        ip(&["netns", "add", &ns])
            .map_err(|e| format!("real mode: cannot make a network namespace: {e}"))?;
        let mut net = RealNet {
            ns: Some(ns.clone()),
            exe,
            echo,
            links: Vec::new(),
            segment: None,
        };
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        let mut free = free_subnets(pid).into_iter();
        for (i, name) in names.iter().enumerate() {
            let x = free
                .next()
                .ok_or("real mode: no free 10.213.x.0/30 left for an origin")?;
            let host_if = format!("plh{pid}x{i}");
            let ns_if = format!("pln{pid}x{i}");
            let cidr = format!("10.213.{x}.0/30");
            // The safety route first: nothing for this /30 ever leaves.
            ip(&[
                "route",
                "add",
                "unreachable",
                &cidr,
                "metric",
                SAFETY_METRIC,
            ])?;
            net.links.push(Link {
                name: name.clone(),
                host_if: host_if.clone(),
                ns_if: ns_if.clone(),
                addr: SocketAddr::new(format!("10.213.{x}.2").parse().map_err(|_| "addr")?, PORT),
                net: Some(cidr),
                child: None,
                refused: false,
                shaped: false,
                flap: None,
            });
            veth_pair(&ns, &host_if, &ns_if, x)?;
        }
        for i in 0..net.links.len() {
            net.start(i)?;
        }
        for i in 0..net.links.len() {
            net.wait_listening(i)?;
        }
        Ok(net)
    }

    /// The namespace the origins run in.
    pub fn namespace(&self) -> Option<&str> {
        self.ns.as_deref()
    }

    /// Where Pocket reaches each origin, by name.
    pub fn addrs(&self) -> Vec<(String, SocketAddr)> {
        self.links
            .iter()
            .map(|l| (l.name.clone(), l.addr))
            .collect()
    }

    /// Starts origin `i` in the namespace (if it is not running).
    fn start(&mut self, i: usize) -> Result<(), String> {
        let ns = self.ns.clone().ok_or("no namespace")?;
        let l = &mut self.links[i];
        if let Some(c) = l.child.as_mut() {
            if c.try_wait().ok().flatten().is_none() {
                return Ok(());
            }
        }
        let child = spawn_origin(&self.exe, &ns, &l.name, l.addr.ip(), self.echo)?;
        l.child = Some(child);
        l.refused = false;
        Ok(())
    }

    /// Until a connect from the host to origin `i` succeeds (10s at most).
    fn wait_listening(&mut self, i: usize) -> Result<(), String> {
        let start = Instant::now();
        let l = &mut self.links[i];
        loop {
            if TcpStream::connect_timeout(&l.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Some(c) = l.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    return Err(format!("origin {} exited at start: {status}", l.name));
                }
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err(format!("origin {} never listened on {}", l.name, l.addr));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.links[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn stop_flapping(&mut self, i: usize) {
        if let Some((flag, thread)) = self.links[i].flap.take() {
            flag.store(false, Ordering::Relaxed);
            let _ = thread.join();
        }
    }

    fn set_link(&self, i: usize, up: bool) -> Result<(), String> {
        let state = if up { "up" } else { "down" };
        ip(&["link", "set", &self.links[i].host_if, state]).map(|_| ())
    }

    fn unshape(&mut self, i: usize) -> Result<(), String> {
        if self.links[i].shaped {
            let ns = self.ns.clone().ok_or("no namespace")?;
            run(
                "tc",
                &[
                    "-n",
                    &ns,
                    "qdisc",
                    "del",
                    "dev",
                    &self.links[i].ns_if,
                    "root",
                ],
            )?;
            self.links[i].shaped = false;
        }
        Ok(())
    }

    /// The wire back to normal: link up, no shaping.
    fn pass(&mut self, i: usize) -> Result<(), String> {
        self.set_link(i, true)?;
        self.unshape(i)
    }

    /// Makes a server fault for real.
    pub fn apply(&mut self, server: &str, kind: &FaultKind) -> Result<(), String> {
        if let Some(seg) = self.segment.as_mut().filter(|s| s.has(server)) {
            return seg.apply(server, kind);
        }
        let i = self
            .links
            .iter()
            .position(|l| l.name == server)
            .ok_or("no such server")?;
        self.stop_flapping(i);
        match kind {
            FaultKind::Kill => self.stop(i),
            FaultKind::Restart => {
                self.pass(i)?;
                self.start(i)?;
                self.wait_listening(i)?;
            }
            FaultKind::Refuse => {
                self.stop(i);
                self.links[i].refused = true;
            }
            // The link down: in this layer a connect then fails at once
            // (the safety route), it does not time out.
            FaultKind::Blackhole | FaultKind::Drop => self.set_link(i, false)?,
            FaultKind::Slow {
                bandwidth: Some(bps),
                ..
            } => {
                let ns = self.ns.clone().ok_or("no namespace")?;
                let bps = (*bps).max(1);
                let rate = format!("{}bit", bps.saturating_mul(8));
                let burst = (bps / 10).max(16 * 1024).to_string();
                let l = &self.links[i];
                run(
                    "tc",
                    &[
                        "-n", &ns, "qdisc", "replace", "dev", &l.ns_if, "root", "tbf", "rate",
                        &rate, "burst", &burst, "latency", "1s",
                    ],
                )?;
                self.links[i].shaped = true;
            }
            FaultKind::Flap { period } => {
                let flag = Arc::new(AtomicBool::new(true));
                let host_if = self.links[i].host_if.clone();
                let (period, running) = (*period, flag.clone());
                let thread = std::thread::spawn(move || {
                    let mut down = true;
                    while running.load(Ordering::Relaxed) {
                        let _ = ip(&["link", "set", &host_if, if down { "down" } else { "up" }]);
                        down = !down;
                        let until = Instant::now() + period;
                        while running.load(Ordering::Relaxed) && Instant::now() < until {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                });
                self.links[i].flap = Some((flag, thread));
            }
            FaultKind::Heal => {
                self.pass(i)?;
                if self.links[i].refused {
                    self.start(i)?;
                    self.wait_listening(i)?;
                }
            }
            other => return Err(format!("not a kernel fault: {other:?}")),
        }
        Ok(())
    }
}

impl Drop for RealNet {
    fn drop(&mut self) {
        for i in 0..self.links.len() {
            self.stop_flapping(i);
            self.stop(i);
        }
        // Deleting the namespace deletes its veth ends, and so the pairs;
        // the explicit deletes cover a pair whose peer never moved in.
        for l in &self.links {
            let _ = ip(&["link", "del", &l.host_if]);
        }
        if let Some(ns) = self.ns.take() {
            let _ = ip(&["netns", "del", &ns]);
        }
        for l in &mut self.links {
            if let Some(net) = l.net.take() {
                let _ = ip(&["route", "del", "unreachable", &net, "metric", SAFETY_METRIC]);
            }
        }
    }
}
