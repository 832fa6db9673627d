//! Two servers with the same IP (`same_ip = { "A", "B" }`, real mode
//! only): the named origins each run in a network namespace of their
//! own, all configured with one address, 10.213.x.2, on one L2 segment
//! (`segment.rs`'s bridge, 10.213.x.1, in a namespace of its own).
//! Pocket, in the root namespace, reaches the segment through a port of
//! its own (10.213.x.10/24) and so sees one server. Which origin its packets reach is decided by the ARP entry of
//! the balancer's side: whoever answered ARP first when the entry was
//! made (within the kernel's `locktime`, a second answer does not
//! replace the first), and afterwards whoever last announced itself with
//! a gratuitous ARP. Open TCP connections to the origin that lost the
//! address then reach the other one, which knows nothing of them and
//! answers with a reset.
//!
//! The faults made here: `announce` (the origin sends a gratuitous ARP,
//! `arping -U`, as a host does when it boots or its interface comes up),
//! and, on the balancer, `flush_arp` (`ip neigh flush` of the balancer's
//! side of the segment: the next packet asks again, everyone answers,
//! the first answer wins). kill, restart, refuse, heal, blackhole and drop
//! work on a same-IP origin as on any other (drop and blackhole take its
//! bridge port down).
//!
//! The lab watches the balancer's ARP entry (`ip neigh`, every 50 ms) and
//! puts each change on the timeline as an `arp` event naming the origin
//! whose MAC it holds; the report sets that next to which origin answered
//! (`x-origin`, or the TCP banner) and the one server Pocket's access log
//! names. Everything made (namespaces, the bridge, links, the safety
//! route, processes) is removed by `Drop`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::load::Sample;
use super::real::{ip, NS_PREFIX};
use super::report::{Event, Run};
use super::scenario::{Fault, FaultKind, Scenario};
use super::segment::Segment;
use super::tcp_load::Conn;

/// The port every origin listens on (as in `real.rs`).
const PORT: u16 = 8080;
/// The origins' shared address on the segment: 10.213.x.2.
const SHARED_HOST: u8 = 2;
/// The balancer's address on the segment: 10.213.x.10 (the bridge has .1).
const BALANCER_HOST: u8 = 10;
/// The kind of the timeline's events about the balancer's ARP entry.
pub const ARP: &str = "arp";
/// How often the balancer's ARP entry is read.
const WATCH_EVERY: Duration = Duration::from_millis(50);
/// The access log the lab reads, when the policy writes one next to
/// itself (`log = { access = "access.log" }`, text format).
pub const ACCESS_LOG: &str = "access.log";
/// What a refused userspace run is told.
pub const NEEDS_REAL: &str = "same_ip needs the real fault layer: two origins can share an address only on a real network segment (run as root with mode = \"real\" or --real, not --userspace)";

/// The origins of `same_ip`, checked against `origins`: at least two,
/// each declared once. Errors as (message) for the `same_ip` line.
pub fn check_names(list: &[String], origins: &[String]) -> Vec<String> {
    let mut errs = Vec::new();
    if list.len() < 2 {
        errs.push(format!(
            "same_ip must name at least two of the origins, like {{ \"A\", \"B\" }}, not {} name{}",
            list.len(),
            if list.len() == 1 { "" } else { "s" }
        ));
    }
    for (i, n) in list.iter().enumerate() {
        if !origins.contains(n) {
            errs.push(format!(
                "same_ip names \"{n}\", which the scenario does not declare (origins: {})",
                origins.join(", ")
            ));
        } else if list[..i].contains(n) {
            errs.push(format!("same_ip names \"{n}\" twice"));
        }
    }
    errs
}

/// The faults that do not fit the scenario's `same_ip` (`list`), each
/// as a message: `announce` on another origin, `flush_arp` without
/// `same_ip`, a fault a same-IP origin does not take.
pub fn misplaced(faults: &[Fault], list: &[String]) -> Vec<String> {
    let mut bad = Vec::new();
    for f in faults {
        let member = f.server.as_ref().is_some_and(|s| list.contains(s));
        let why = match &f.kind {
            FaultKind::Announce if !member => format!(
                "announce is for an origin of same_ip ({}): it sends a gratuitous ARP for the shared address",
                if list.is_empty() { "none".into() } else { list.join(", ") }
            ),
            FaultKind::FlushArp if list.is_empty() => {
                "flush_arp is for a scenario with same_ip: it empties the balancer's ARP entry for the shared address".into()
            }
            FaultKind::Kill
            | FaultKind::Restart
            | FaultKind::Refuse
            | FaultKind::Heal
            | FaultKind::Blackhole
            | FaultKind::Drop
            | FaultKind::Announce
                if member =>
            {
                continue
            }
            _ if member => "a same_ip origin takes kill, restart, refuse, heal, blackhole, drop and announce".into(),
            _ => continue,
        };
        bad.push(format!("fault \"{}\" at {:?}: {why}", f.text, f.at));
    }
    bad
}

/// Whether this host can make the segment: `arping` from iputils (the
/// gratuitous ARPs). Root and `ip` are checked by `real::check_host`.
pub fn check_host() -> Result<(), String> {
    let out = Command::new("arping")
        .arg("-V")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("same_ip needs `arping` from iputils (Debian: iputils-arping) for gratuitous ARP: {e}"))?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !said.contains("iputils") {
        return Err("same_ip needs `arping` from iputils (Debian: iputils-arping); the `arping` on PATH is another one, whose options differ".into());
    }
    Ok(())
}

/// (address, name) for naming servers in Pocket's words: an address two
/// origins share is named by both, `A|B`, as Pocket cannot tell them apart.
pub fn address_names(addrs: &[(String, SocketAddr)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (name, addr) in addrs {
        let a = addr.to_string();
        match out.iter_mut().find(|(x, _)| *x == a) {
            Some((_, n)) => {
                n.push('|');
                n.push_str(name);
            }
            None => out.push((a, name.clone())),
        }
    }
    out
}

/// Runs `f` on a thread inside network namespace `ns` (setns(2) moves
/// only that thread), for what `ip` cannot do: a connect from inside.
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        // SAFETY: setns(2) with a namespace file we hold open; it changes
        // the namespace of this short-lived thread only.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!(
                "cannot enter {path}: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(f())
    })
    .join()
    .map_err(|_| "a namespace thread panicked".to_string())?
}

/// Deletes the segment namespaces (`pktlabPIDs`, `pktlabPIDsN`) of labs
/// killed outright, whose PID no longer runs.
fn sweep_stale() {
    let list = ip(&["netns", "list"]).unwrap_or_default();
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if digits.is_empty() || !rest[digits.len()..].starts_with('s') {
            continue;
        }
        if !Path::new(&format!("/proc/{digits}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// One origin on the segment.
struct Member {
    name: String,
    ns: String,
    /// Its bridge port, in the segment namespace.
    port: String,
    mac: String,
    child: Option<Child>,
    refused: bool,
}

/// Who the balancer's ARP entry points at, shared with the watcher.
#[derive(Default)]
struct Watch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The segment ([`Segment`]: a bridge in a namespace of its own), the
/// balancer's port on it, and one namespace and origin per `same_ip`
/// name, all on 10.213.x.2. Removed when dropped.
pub struct SameIp {
    exe: PathBuf,
    echo: bool,
    /// The namespace that holds the bridge (deleting it deletes the
    /// bridge and every port).
    ns: Option<String>,
    /// The bridge; dropped after `ns` is deleted, it removes the safety
    /// route.
    segment: Option<Segment>,
    /// The balancer's end of its port (root namespace).
    host_if: String,
    addr: SocketAddr,
    members: Vec<Member>,
    watch: Watch,
}

impl SameIp {
    /// Makes the segment for `names` on 10.213.`x`.0/24; on any error
    /// what was made so far is removed before returning.
    pub fn build(names: &[String], x: u32, echo: bool) -> Result<SameIp, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let pid = std::process::id();
        sweep_stale();
        let ns = format!("{NS_PREFIX}{pid}s");
        let addr = SocketAddr::new(
            std::net::Ipv4Addr::new(10, 213, x as u8, SHARED_HOST).into(),
            PORT,
        );
        let mut seg = SameIp {
            exe,
            echo,
            ns: None,
            segment: None,
            host_if: format!("plh{pid}s"),
            addr,
            members: Vec::new(),
            watch: Watch::default(),
        };
        ip(&["netns", "add", &ns])
            .map_err(|e| format!("real mode: cannot make a network namespace: {e}"))?;
        seg.ns = Some(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        seg.segment = Some(Segment::build(&ns, "br0", x)?);
        // The balancer's side: a port from the root namespace (the
        // safety route comes first).
        let host_if = seg.host_if.clone();
        seg.lan()?.plug("up0", None, &host_if, BALANCER_HOST)?;
        for (i, name) in names.iter().enumerate() {
            let member_ns = format!("{NS_PREFIX}{pid}s{i}");
            ip(&["netns", "add", &member_ns])?;
            let mac = format!("02:00:0a:d5:{x:02x}:{:02x}", i + 1);
            let port = format!("o{i}");
            seg.members.push(Member {
                name: name.clone(),
                ns: member_ns.clone(),
                port: port.clone(),
                mac: mac.clone(),
                child: None,
                refused: false,
            });
            ip(&["-n", &member_ns, "link", "set", "lo", "up"])?;
            seg.lan()?
                .plug(&port, Some(&member_ns), "eth0", SHARED_HOST)?;
            // A known MAC per origin, for the report (set while down).
            ip(&["-n", &member_ns, "link", "set", "eth0", "down"])?;
            ip(&["-n", &member_ns, "link", "set", "eth0", "address", &mac])?;
            ip(&["-n", &member_ns, "link", "set", "eth0", "up"])?;
        }
        for i in 0..seg.members.len() {
            seg.start(i)?;
        }
        for i in 0..seg.members.len() {
            seg.wait_listening(i)?;
        }
        seg.settle()?;
        Ok(seg)
    }

    /// Origin `i`'s cable in or out (its bridge port up or down).
    fn cable(&self, i: usize, up: bool) -> Result<(), String> {
        let lan = self.segment.as_ref().ok_or("no segment")?;
        lan.set_port(&self.members[i].port, up)
    }

    fn lan(&mut self) -> Result<&mut Segment, String> {
        self.segment
            .as_mut()
            .ok_or_else(|| "no segment".to_string())
    }

    /// Where Pocket reaches each origin of the segment: one address.
    pub fn addrs(&self) -> Vec<(String, SocketAddr)> {
        self.members
            .iter()
            .map(|m| (m.name.clone(), self.addr))
            .collect()
    }

    pub fn has(&self, name: &str) -> bool {
        self.members.iter().any(|m| m.name == name)
    }

    /// Starts origin `i` in its namespace (if it is not running).
    fn start(&mut self, i: usize) -> Result<(), String> {
        let m = &mut self.members[i];
        if let Some(c) = m.child.as_mut() {
            if c.try_wait().ok().flatten().is_none() {
                return Ok(());
            }
        }
        let child =
            super::real::spawn_origin(&self.exe, &m.ns, &m.name, self.addr.ip(), self.echo)?;
        m.child = Some(child);
        m.refused = false;
        Ok(())
    }

    /// Until a connect to origin `i`, from inside its own namespace,
    /// succeeds (10 s at most): from outside, the address may be the
    /// other's.
    fn wait_listening(&mut self, i: usize) -> Result<(), String> {
        let start = Instant::now();
        let addr = self.addr;
        loop {
            let ns = self.members[i].ns.clone();
            let up = in_netns(&ns, move || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            })?;
            if up {
                return Ok(());
            }
            let m = &mut self.members[i];
            if let Some(c) = m.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    return Err(format!("origin {} exited at start: {status}", m.name));
                }
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err(format!("origin {} never listened on {addr}", m.name));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A known start: the balancer's side learns the address (a connect
    /// from the root namespace: whoever answers ARP first), then the first
    /// origin of `same_ip` announces itself, so every run starts with it
    /// holding the address.
    fn settle(&mut self) -> Result<(), String> {
        let start = Instant::now();
        while TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_err() {
            if start.elapsed() > Duration::from_secs(10) {
                return Err(format!(
                    "the segment's address {} never answered from the balancer's side",
                    self.addr
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.announce(0)?;
        let want = self.members[0].mac.clone();
        while neighbour(&self.host_if, &self.addr).0.as_deref() != Some(want.as_str()) {
            if start.elapsed() > Duration::from_secs(10) {
                return Err(format!(
                    "after {}'s gratuitous ARP the balancer's ARP entry for {} still does not point at it",
                    self.members[0].name,
                    self.addr.ip()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Origin `i` sends a gratuitous ARP for the shared address: every
    /// host on the segment that has an entry for it updates it.
    fn announce(&self, i: usize) -> Result<(), String> {
        let m = &self.members[i];
        let a = self.addr.ip().to_string();
        let out = Command::new("ip")
            .args(["netns", "exec", &m.ns, "arping", "-q", "-U", "-c", "1"])
            .args(["-I", "eth0", "-s", &a, &a])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run arping for {}: {e}", m.name))?;
        // iputils' arping exits 1 in -U mode when no reply came, which is
        // the normal case for an unsolicited ARP.
        if out.status.code().is_some_and(|c| c <= 1) {
            Ok(())
        } else {
            Err(format!(
                "arping for {}: {}",
                m.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Makes a fault on origin `server` of the segment.
    pub fn apply(&mut self, server: &str, kind: &FaultKind) -> Result<(), String> {
        let i = self
            .members
            .iter()
            .position(|m| m.name == server)
            .ok_or("no such server")?;
        match kind {
            FaultKind::Announce => self.announce(i)?,
            FaultKind::Kill => self.stop(i),
            FaultKind::Refuse => {
                self.stop(i);
                self.members[i].refused = true;
            }
            FaultKind::Restart => {
                self.cable(i, true)?;
                self.start(i)?;
                self.wait_listening(i)?;
            }
            FaultKind::Blackhole | FaultKind::Drop => self.cable(i, false)?,
            FaultKind::Heal => {
                self.cable(i, true)?;
                if self.members[i].refused {
                    self.start(i)?;
                    self.wait_listening(i)?;
                }
            }
            other => return Err(format!("not a fault for a same_ip origin: {other:?}")),
        }
        Ok(())
    }

    /// The balancer forgets whom the address belongs to (`ip neigh flush`
    /// on its side of the segment): its next packet asks again.
    pub fn flush_arp(&self) -> Result<(), String> {
        ip(&["neigh", "flush", "dev", &self.host_if]).map(|_| ())
    }

    fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn stop_watching(&mut self) {
        self.watch.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.watch.thread.take() {
            let _ = t.join();
        }
    }

    /// Starts watching the balancer's ARP entry: each change becomes an
    /// [`ARP`] event, timed on the lab's clock from `start`.
    pub fn watch(&mut self, events: Arc<Mutex<Vec<Event>>>, start: Instant) {
        let stop = Arc::new(AtomicBool::new(false));
        let running = stop.clone();
        let host_if = self.host_if.clone();
        let addr = self.addr;
        let macs: Vec<(String, String)> = self
            .members
            .iter()
            .map(|m| (m.mac.clone(), m.name.clone()))
            .collect();
        let thread = std::thread::spawn(move || {
            let mut last: Option<String> = None;
            let mut failed = false;
            while !running.load(Ordering::Relaxed) {
                let (mac, state) = neighbour(&host_if, &addr);
                let t = start.elapsed().as_secs_f64();
                let say = |text: String| {
                    events
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Event { t, kind: ARP, text });
                };
                match mac {
                    Some(mac) if last.as_deref() != Some(&mac) => {
                        let who = macs
                            .iter()
                            .find(|(m, _)| *m == mac)
                            .map_or("an unknown host", |(_, n)| n.as_str());
                        say(format!(
                            "{who} holds {} (the balancer's ARP entry: {mac})",
                            addr.ip()
                        ));
                        last = Some(mac);
                        failed = false;
                    }
                    Some(_) => {}
                    None => {
                        // Flushed, or not asked again yet: the next
                        // answer is said when it comes.
                        last = None;
                        if state == "FAILED" && !failed {
                            say(format!("no one answers ARP for {}", addr.ip()));
                            failed = true;
                        }
                    }
                }
                std::thread::sleep(WATCH_EVERY);
            }
        });
        self.watch = Watch {
            stop,
            thread: Some(thread),
        };
    }

    /// What the report needs once the segment is gone; stops watching
    /// the ARP entry, then asks the segment who answers ARP for the address
    /// (see [`View::probe`]: about 1 s; its replies may move the entry
    /// themselves, so it is not watched).
    pub fn view(&mut self) -> View {
        self.stop_watching();
        let a = self.addr.ip().to_string();
        let args = ["-b", "-c", "2", "-I", self.host_if.as_str(), a.as_str()];
        View {
            addr: self.addr,
            members: self
                .members
                .iter()
                .map(|m| (m.name.clone(), m.mac.clone()))
                .collect(),
            access: None,
            probe: Command::new("arping")
                .args(args)
                .stdin(Stdio::null())
                .output()
                .ok()
                .map(|o| (format!("arping {}", args.join(" ")), reply_macs(&o.stdout))),
        }
    }
}

/// The MACs in iputils arping's replies (`Unicast reply from 10.213.7.2
/// [02:00:0A:D5:07:01]  0.6ms`), each once, lower case, in order.
fn reply_macs(out: &[u8]) -> Vec<String> {
    let mut macs: Vec<String> = Vec::new();
    for line in String::from_utf8_lossy(out).lines() {
        let mac = line
            .split_once('[')
            .and_then(|(_, r)| r.split_once(']'))
            .map(|(m, _)| m.to_ascii_lowercase());
        if let Some(m) = mac.filter(|m| !macs.contains(m)) {
            macs.push(m);
        }
    }
    macs
}

/// The balancer's ARP entry for `addr` on `dev`: (MAC, state), from
/// `ip neigh show`; (None, state or "") when there is no MAC.
fn neighbour(dev: &str, addr: &SocketAddr) -> (Option<String>, String) {
    let a = addr.ip().to_string();
    let text = ip(&["neigh", "show", "to", &a, "dev", dev]).unwrap_or_default();
    let words: Vec<&str> = text.split_whitespace().collect();
    let mac = words
        .iter()
        .position(|w| *w == "lladdr")
        .and_then(|i| words.get(i + 1))
        .map(|m| m.to_ascii_lowercase());
    let state = words.last().map_or(String::new(), |s| s.to_string());
    (mac, state)
}

impl Drop for SameIp {
    fn drop(&mut self) {
        self.stop_watching();
        for i in 0..self.members.len() {
            self.stop(i);
        }
        for m in &self.members {
            let _ = ip(&["netns", "del", &m.ns]);
        }
        if let Some(ns) = self.ns.take() {
            let _ = ip(&["netns", "del", &ns]);
        }
        // Its root-namespace port (gone with the namespace, if not) and
        // the safety route.
        drop(self.segment.take());
    }
}

/// The segment as the report tells it: the shared address, each origin
/// with its MAC, and Pocket's access log when the policy wrote one.
#[derive(Debug, Clone)]
pub struct View {
    pub addr: SocketAddr,
    /// (name, MAC) in `same_ip` order.
    pub members: Vec<(String, String)>,
    /// Pocket's access log (text format), read at the run's end.
    pub access: Option<String>,
    /// At the run's end, from the balancer's side: the `arping -b` run and
    /// the MACs that answered for the address (more than one: a duplicate).
    pub probe: Option<(String, Vec<String>)>,
}

/// One line of Pocket's text access log, the fields the report uses.
struct Logged {
    server: String,
    /// The policy's `origin` field (`req:log_field("origin", ...)`).
    origin: Option<String>,
}

fn parse_access(text: &str) -> Vec<Logged> {
    text.lines()
        .filter_map(|line| {
            let server = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("server="))?
                .to_string();
            let origin = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("origin="))
                .map(|v| v.trim_matches('"').to_string());
            Some(Logged { server, origin })
        })
        .collect()
}

impl View {
    /// Reads Pocket's access log from the run's folder `dir`, if the
    /// policy wrote one there (`log = { access = "access.log" }`).
    pub fn read_access_log(&mut self, dir: &Path) {
        self.access = std::fs::read_to_string(dir.join(ACCESS_LOG)).ok();
    }

    /// The group's label in Pocket's words: `A|B`.
    fn label(&self) -> String {
        self.members
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join("|")
    }

    /// "A and B both", "A, B and C all".
    fn who(&self) -> String {
        let names: Vec<&str> = self.members.iter().map(|(n, _)| n.as_str()).collect();
        match names.split_last() {
            Some((last, rest)) if rest.len() == 1 => format!("{} and {last} both", rest[0]),
            Some((last, rest)) if !rest.is_empty() => {
                format!("{} and {last} all", rest.join(", "))
            }
            _ => names.join(""),
        }
    }

    /// Distinct servers Pocket's access log names (None: no access log).
    fn logged_servers(&self) -> Option<BTreeMap<String, usize>> {
        let text = self.access.as_ref()?;
        let mut by: BTreeMap<String, usize> = BTreeMap::new();
        for l in parse_access(text).into_iter().filter(|l| l.server != "-") {
            *by.entry(l.server).or_default() += 1;
        }
        Some(by)
    }

    /// Checks `expect.answered_by` and `expect.access_log_servers`.
    pub fn judge(
        &self,
        scenario: &Scenario,
        answered: &BTreeMap<String, usize>,
    ) -> Vec<(String, Option<bool>)> {
        let mut out = Vec::new();
        let e = &scenario.expect;
        if !e.answered_by.is_empty() {
            let counts: Vec<String> = e
                .answered_by
                .iter()
                .map(|n| format!("{n} {}", answered.get(n).copied().unwrap_or(0)))
                .collect();
            let met = e
                .answered_by
                .iter()
                .all(|n| answered.get(n).is_some_and(|c| *c > 0));
            out.push((
                format!(
                    "answered by each of {}: {}",
                    e.answered_by.join(", "),
                    counts.join(", ")
                ),
                Some(met),
            ));
        }
        if let Some(want) = e.access_log_servers {
            out.push(match self.logged_servers() {
                Some(by) => {
                    let list: Vec<String> = by.iter().map(|(s, n)| format!("{s} ×{n}")).collect();
                    (
                        format!(
                            "servers in Pocket's access log: {} ({}; expected {want})",
                            by.len(),
                            if list.is_empty() { "none".into() } else { list.join(", ") }
                        ),
                        Some(by.len() as u64 == want),
                    )
                }
                None => (
                    format!("servers in Pocket's access log (expected {want}): the policy wrote no access log next to itself (log = {{ access = \"{ACCESS_LOG}\" }})"),
                    Some(false),
                ),
            });
        }
        out
    }

    /// The report's section: the one address, who held it when, who
    /// answered, and what Pocket's access log says.
    pub fn section(&self, run: &Run) -> String {
        let mut out = String::from("## Two servers, one address\n\n");
        let macs: Vec<String> = self
            .members
            .iter()
            .map(|(n, m)| format!("{n} at {m}"))
            .collect();
        let _ = writeln!(
            out,
            "{} hold {} on one segment ({}). Pocket has one server there, {}, named {} in this report: which of them a packet reaches is decided by the balancer's ARP entry, not by Pocket.\n",
            self.who(),
            self.addr.ip(),
            macs.join(", "),
            self.addr,
            self.label()
        );
        let answered = answered(run.samples, run.tcp.as_ref().map(|t| t.conns));
        let list = |m: &BTreeMap<String, usize>| {
            if m.is_empty() {
                "none".to_string()
            } else {
                m.iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let (what, how) = if run.tcp.is_some() {
            ("Connections answered", "their banner")
        } else {
            ("Answers", "x-origin")
        };
        let _ = writeln!(
            out,
            "- {what} by origin ({how}): {}, all through the one address {}.",
            list(&answered),
            self.addr
        );
        match (self.logged_servers(), &self.access) {
            (Some(servers), Some(text)) => {
                let mut origins: BTreeMap<String, usize> = BTreeMap::new();
                for l in parse_access(text) {
                    if let Some(o) = l.origin {
                        *origins.entry(o).or_default() += 1;
                    }
                }
                let names: Vec<String> = servers.iter().map(|(s, n)| format!("{s} ×{n}")).collect();
                let _ = write!(
                    out,
                    "- Pocket's access log names {}: {}",
                    crate::words::count(servers.len() as u64, "server"),
                    if names.is_empty() {
                        "none".into()
                    } else {
                        names.join(", ")
                    }
                );
                if origins.is_empty() {
                    out.push_str(".\n");
                } else {
                    let _ = writeln!(
                        out,
                        "; the `origin` field the policy logs from x-origin says {}.",
                        list(&origins)
                    );
                }
            }
            _ => {
                let _ = writeln!(out, "- Pocket's access log: none (a policy with `log = {{ access = \"{ACCESS_LOG}\" }}` has it read here).");
            }
        }
        let holders: Vec<String> = run
            .events
            .iter()
            .filter(|e| e.kind == ARP)
            .map(|e| format!("{:.2}s {}", e.t, holder_of(e).unwrap_or("no one")))
            .collect();
        let _ = writeln!(
            out,
            "- Who held the address (the balancer's ARP entry): {}.",
            if holders.is_empty() {
                "not seen".into()
            } else {
                holders.join(" · ")
            }
        );
        if let Some((cmd, macs)) = &self.probe {
            let named: Vec<String> = macs
                .iter()
                .map(|mac| match self.members.iter().find(|(_, m)| m == mac) {
                    Some((n, _)) => format!("{n} ({mac})"),
                    None => mac.clone(),
                })
                .collect();
            let _ = writeln!(
                out,
                "- `{cmd}` on the balancer's side, at the end: {} answered for {}{}",
                if named.is_empty() {
                    "no one".into()
                } else {
                    named.join(" and ")
                },
                self.addr.ip(),
                if macs.len() > 1 {
                    ". More than one MAC for one address is the proof of a duplicate; on a real network, run it from Pocket's machine."
                } else {
                    "."
                }
            );
        }
        let health: Vec<String> = run
            .events
            .iter()
            .filter(|e| e.kind == "health")
            .map(|e| format!("{:.2}s {}", e.t, e.text))
            .collect();
        if !health.is_empty() {
            let _ = writeln!(
                out,
                "- Pocket's health checks on the one address: {}.",
                health.join(" · ")
            );
        }
        out.push_str(
            "\n| second | the address is at (ARP) | answered by | failed |\n|---|---|---|---|\n",
        );
        let seconds = (run.end.ceil() as usize).max(1);
        let mut at: Option<&str> = None;
        let mut arp = run.events.iter().filter(|e| e.kind == ARP).peekable();
        for i in 0..seconds {
            let mut during: Vec<&str> = at.into_iter().collect();
            while let Some(e) = arp.next_if(|e| e.t < (i + 1) as f64) {
                at = holder_of(e);
                if let Some(h) = at {
                    if during.last() != Some(&h) {
                        during.push(h);
                    }
                }
            }
            let (ok, failed) = second_counts(run, i);
            let _ = writeln!(
                out,
                "| {i} | {} | {} | {failed} |",
                if during.is_empty() {
                    "-".into()
                } else {
                    during.join(" → ")
                },
                list(&ok)
            );
        }
        out.push('\n');
        out
    }
}

/// The origin an [`ARP`] event says holds the address.
fn holder_of(e: &Event) -> Option<&str> {
    e.text.split_once(" holds ").map(|(who, _)| who)
}

/// Answered requests (or, for a TCP load, connections a server
/// answered) by origin.
pub fn answered(samples: &[Sample], conns: Option<&[Conn]>) -> BTreeMap<String, usize> {
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    match conns {
        Some(conns) => {
            for c in conns {
                if let Some(s) = &c.server {
                    *by.entry(s.clone()).or_default() += 1;
                }
            }
        }
        None => {
            for s in samples.iter().filter(|s| s.failure.is_none()) {
                if let Some(o) = &s.server {
                    *by.entry(o.clone()).or_default() += 1;
                }
            }
        }
    }
    by
}

/// Second `i`'s answers by origin and its failures (counted when sent;
/// a TCP run's connections when they started).
fn second_counts(run: &Run, i: usize) -> (BTreeMap<String, usize>, usize) {
    let inside = |t: f64| t >= i as f64 && t < (i + 1) as f64;
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed = 0;
    match &run.tcp {
        Some(t) => {
            for c in t.conns.iter().filter(|c| inside(c.start)) {
                match &c.server {
                    Some(s) => *by.entry(s.clone()).or_default() += 1,
                    None => failed += 1,
                }
            }
        }
        None => {
            for s in run.samples.iter().filter(|s| inside(s.sent)) {
                match (&s.failure, &s.server) {
                    (None, Some(o)) => *by.entry(o.clone()).or_default() += 1,
                    (None, None) => {}
                    (Some(_), _) => failed += 1,
                }
            }
        }
    }
    (by, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_shared_address_is_named_by_every_origin_on_it() {
        let addrs = vec![
            ("A".to_string(), addr("10.213.7.2:8080")),
            ("B".to_string(), addr("10.213.7.2:8080")),
            ("C".to_string(), addr("10.213.8.2:8080")),
        ];
        assert_eq!(
            address_names(&addrs),
            vec![
                ("10.213.7.2:8080".to_string(), "A|B".to_string()),
                ("10.213.8.2:8080".to_string(), "C".to_string()),
            ]
        );
    }

    #[test]
    fn same_ip_needs_two_declared_origins_once_each() {
        let origins = vec!["A".to_string(), "B".to_string()];
        assert!(check_names(&origins, &origins).is_empty());
        assert_eq!(check_names(&["A".into()], &origins).len(), 1);
        let e = check_names(&["A".into(), "C".into(), "A".into()], &origins);
        assert!(
            e[0].contains("\"C\", which the scenario does not declare"),
            "{e:?}"
        );
        assert!(e[1].contains("\"A\" twice"), "{e:?}");
    }

    #[test]
    fn arping_replies_give_each_mac_once() {
        let out = b"ARPING 10.213.7.2 from 10.213.7.1 plh1s\n\
Unicast reply from 10.213.7.2 [02:00:0A:D5:07:01]  0.610ms\n\
Unicast reply from 10.213.7.2 [02:00:0A:D5:07:02]  0.653ms\n\
Unicast reply from 10.213.7.2 [02:00:0A:D5:07:01]  0.552ms\n\
Sent 2 probes (2 broadcast(s))\nReceived 3 response(s)\n";
        assert_eq!(
            reply_macs(out),
            vec!["02:00:0a:d5:07:01", "02:00:0a:d5:07:02"]
        );
    }

    #[test]
    fn the_access_log_gives_the_server_and_the_origin_field() {
        let text = "2026-11-30T19:00:00.000Z 1 127.0.0.1:5 web g1 \"GET localhost / HTTP/1.1\" 200 -- in=0 out=9 pool=app server=10.213.7.2:8080 retries=0 ms=0/1/1/1 origin=\"B\"\n\
                    2026-11-30T19:00:00.100Z 2 127.0.0.1:5 web g1 \"GET localhost / HTTP/1.1\" 502 -- in=0 out=9 pool=app server=- retries=0 ms=0/1/1/1\n";
        let l = parse_access(text);
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].server, "10.213.7.2:8080");
        assert_eq!(l[0].origin.as_deref(), Some("B"));
        let v = View {
            addr: addr("10.213.7.2:8080"),
            members: vec![],
            access: Some(text.into()),
            probe: None,
        };
        assert_eq!(v.logged_servers().unwrap().len(), 1);
    }
}
