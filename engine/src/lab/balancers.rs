//! Several balancers sharing one virtual address (`balancers = { "L1",
//! "L2" }`), real mode only: what happens to clients when the balancer
//! itself fails, and when two of them think they are the master.
//!
//! The lab's network: a bridge (the segment, see `segment.rs`) in the
//! origins' namespace, 10.213.x.0/24. Each balancer gets a namespace of its
//! own (`pktlabPID-NAME`) plugged into the bridge at 10.213.x.(11+i), with
//! its own Pocket (the scenario's policy, listening on port 80) and its
//! own keepalived (`keepalived.rs`) holding the virtual address
//! 10.213.x.100 by VRRP; the first balancer starts as master with the
//! highest priority. The load runs in the root namespace, plugged into
//! the same bridge (10.213.x.2), and uses only the virtual address, so it
//! follows whoever answers ARP for it. Each Pocket reaches the origins
//! through the bridge (the origins' namespace is their gateway, 10.213.x.1),
//! so an origin sees which balancer a request came through, and says so in
//! `x-origin-peer`: an answer is counted as `A via L1`.
//!
//! Faults on a balancer (`{ at = "3s", balancer = "L1", fault = "kill" }`):
//! `kill` (its Pocket, SIGKILL: keepalived's check fails and it gives the
//! address up), `blackhole` (its cable pulled: its port on the bridge
//! down), `stop_keepalived` / `start_keepalived`, `drop_vrrp` (nftables
//! rules in its namespace drop VRRP advertisements in and out: it neither
//! hears the others nor is heard), `restart` (what is down comes back; a running
//! Pocket is restarted) and `heal` (cable back, rule removed).
//!
//! A watcher asks every 200 ms which namespace holds the address, and
//! which balancer the clients' ARP entry points at; changes are events
//! (`vip`, `clients`), keepalived's state changes too (`vrrp`).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mlua::{Table, Value};

use super::keepalived::{self, Keepalived};
use super::load;
use super::real::{self, ip};
use super::scenario::{self, Errors, FaultKind, Scenario};
use super::segment::Segment;
use super::Events;
use crate::config::shown;

/// The port every balancer's Pocket listens on (`{{listen}}`), on all of
/// its namespace's addresses: the virtual one when it holds it.
pub const PORT: u16 = 80;
/// The virtual address's host byte on the segment.
const VIP_HOST: u8 = 100;
/// The clients' host byte on the segment.
const CLIENT_HOST: u8 = 2;
/// The first balancer's host byte (the next ones follow).
const FIRST_HOST: u8 = 11;
/// The interface on the segment in each balancer's namespace.
const DEV: &str = "seg";
/// The nftables table `drop_vrrp` adds in a balancer's namespace.
const NFT_TABLE: &str = "pocketlab";
/// Most balancers a scenario may declare.
const MAX_BALANCERS: usize = 8;

/// The scenario's `vrrp = { ... }`.
#[derive(Debug, Clone)]
pub struct Vrrp {
    /// `advert_int`: seconds between VRRP advertisements.
    pub advert_int: u32,
    /// `garp_refresh`: seconds between a master's gratuitous ARPs (0, the
    /// default: only when it becomes master).
    pub garp_refresh: u32,
    /// `checks = { L2 = [[shell]] }`: a balancer's own check script in
    /// place of the lab's (whose only test is that the local Pocket
    /// accepts a connection). Placeholders: `{{vip}}`, `{{dev}}`, and each
    /// balancer's name for its address.
    pub checks: HashMap<String, String>,
}

impl Default for Vrrp {
    fn default() -> Vrrp {
        Vrrp {
            advert_int: 1,
            garp_refresh: 0,
            checks: HashMap::new(),
        }
    }
}

const VRRP_KEYS: &[&str] = &["advert_int", "garp_refresh", "checks"];

/// Reads `balancers` and `vrrp` of scenario `root`; mistakes go to `errs`.
pub(super) fn parse(errs: &mut Errors, root: &Table, origins: &[String]) -> (Vec<String>, Vrrp) {
    let mut names: Vec<String> = Vec::new();
    match scenario::field(root, "balancers") {
        Value::Nil => {}
        Value::Table(t) => {
            let n = t.raw_len();
            if t.pairs::<Value, Value>().flatten().count() > n || n < 2 {
                errs.at(
                    &["balancers"],
                    "balancers must list two or more names, like { \"L1\", \"L2\" }".into(),
                );
            }
            for i in 1..=n {
                let at = format!("[{i}]");
                match t.raw_get::<Value>(i) {
                    Ok(Value::String(s)) => {
                        let s = s.to_string_lossy();
                        let ok = !s.is_empty()
                            && s.len() <= 12
                            && s.chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                        if !ok {
                            errs.at(&["balancers", &at], format!("balancers[{i}] must be a name of up to 12 letters, digits, _ or -, not \"{s}\""));
                        } else if names.contains(&s) || origins.contains(&s) {
                            errs.at(
                                &["balancers", &at],
                                format!("balancers[{i}]: \"{s}\" is already the name of a balancer or an origin"),
                            );
                        } else {
                            names.push(s);
                        }
                    }
                    Ok(v) => errs.at(
                        &["balancers", &at],
                        format!(
                            "balancers[{i}] must be a name (a string), not {}",
                            shown(&v)
                        ),
                    ),
                    Err(_) => {}
                }
            }
            if names.len() > MAX_BALANCERS {
                errs.at(
                    &["balancers"],
                    format!("balancers: at most {MAX_BALANCERS}, not {}", names.len()),
                );
            }
        }
        v => errs.at(
            &["balancers"],
            format!(
                "balancers must list two or more names, like {{ \"L1\", \"L2\" }}, not {}",
                shown(&v)
            ),
        ),
    }
    let mut vrrp = Vrrp::default();
    match scenario::field(root, "vrrp") {
        Value::Nil => {}
        Value::Table(_) if names.is_empty() => errs.at(
            &["vrrp"],
            "vrrp is for a scenario with balancers = { \"L1\", \"L2\" }".into(),
        ),
        Value::Table(t) => {
            let _ = errs.unknown(&t, VRRP_KEYS, "vrrp", &["vrrp"]);
            match scenario::int_in(
                &scenario::field(&t, "advert_int"),
                "vrrp.advert_int (seconds)",
                1,
                10,
            ) {
                Ok(n) => vrrp.advert_int = n.map_or(1, |n| n as u32),
                Err(e) => errs.at(&["vrrp", "advert_int"], e),
            }
            match scenario::int_in(
                &scenario::field(&t, "garp_refresh"),
                "vrrp.garp_refresh (seconds, 0 for none)",
                0,
                60,
            ) {
                Ok(n) => vrrp.garp_refresh = n.map_or(0, |n| n as u32),
                Err(e) => errs.at(&["vrrp", "garp_refresh"], e),
            }
            match scenario::field(&t, "checks") {
                Value::Nil => {}
                Value::Table(c) => {
                    for (k, v) in c.pairs::<Value, Value>().flatten() {
                        match (&k, &v) {
                            (Value::String(k), Value::String(v))
                                if names.contains(&k.to_string_lossy()) =>
                            {
                                vrrp.checks.insert(k.to_string_lossy(), v.to_string_lossy());
                            }
                            (Value::String(k), Value::String(_)) => {
                                let k = k.to_string_lossy();
                                errs.at(
                                    &["vrrp", "checks", &k],
                                    format!(
                                        "vrrp.checks names \"{k}\", which is not a balancer (balancers: {})",
                                        names.join(", ")
                                    ),
                                );
                            }
                            _ => errs.at(
                                &["vrrp", "checks"],
                                format!(
                                    "vrrp.checks must map a balancer's name to a shell script, like {{ L2 = [[ ... ]] }}; it has {} = {}",
                                    shown(&k),
                                    shown(&v)
                                ),
                            ),
                        }
                    }
                }
                v => errs.at(
                    &["vrrp", "checks"],
                    format!(
                        "vrrp.checks must map a balancer's name to a shell script, not {}",
                        shown(&v)
                    ),
                ),
            }
        }
        v => errs.at(
            &["vrrp"],
            format!(
                "vrrp must be a table like {{ advert_int = 1 }}, not {}",
                shown(&v)
            ),
        ),
    }
    (names, vrrp)
}

/// A fault's `balancer = "L1"`, checked against the scenario's
/// balancers; Some("") when given but wrong (said in `errs`).
pub(super) fn fault_target(
    errs: &mut Errors,
    f: &Table,
    label: &str,
    ns: &str,
    balancers: &[String],
) -> Option<String> {
    let at = ["faults", ns, "balancer"];
    match scenario::field(f, "balancer") {
        Value::Nil => None,
        Value::String(s) => {
            let s = s.to_string_lossy();
            if !balancers.contains(&s) {
                errs.at(
                    &at,
                    format!(
                        "{label} names balancer \"{s}\", which the scenario does not declare (balancers: {})",
                        if balancers.is_empty() {
                            "none".to_string()
                        } else {
                            balancers.join(", ")
                        }
                    ),
                );
                return Some(String::new());
            }
            Some(s)
        }
        v => {
            errs.at(
                &at,
                format!(
                    "{label}: balancer must be a balancer's name, not {}",
                    shown(&v)
                ),
            );
            Some(String::new())
        }
    }
}

/// The fault named `name` for a named balancer.
pub(super) fn fault_kind(name: &str) -> Result<FaultKind, String> {
    Ok(match name {
        "kill" => FaultKind::Kill,
        "restart" => FaultKind::Restart,
        "blackhole" => FaultKind::Blackhole,
        "heal" => FaultKind::Heal,
        "stop_keepalived" => FaultKind::StopKeepalived,
        "start_keepalived" => FaultKind::StartKeepalived,
        "drop_vrrp" => FaultKind::DropVrrp,
        other => {
            return Err(format!(
                "unknown fault \"{other}\" for a balancer (faults for balancer = \"NAME\": kill, restart, blackhole, heal, stop_keepalived, start_keepalived, drop_vrrp)"
            ))
        }
    })
}

/// `expect.two_masters` (and that the balancer expectations are not
/// given without balancers).
pub(super) fn expect_keys(errs: &mut Errors, t: &Table, balancers: &[String]) -> Option<bool> {
    if balancers.is_empty() {
        for k in ["failover_within", "two_masters"] {
            if !scenario::field(t, k).is_nil() {
                errs.at(
                    &["expect", k],
                    format!("expect.{k} is about balancers: the scenario declares none (balancers = {{ \"L1\", \"L2\" }})"),
                );
            }
        }
        return None;
    }
    match scenario::field(t, "two_masters") {
        Value::Nil => None,
        Value::Boolean(b) => Some(b),
        v => {
            errs.at(
                &["expect", "two_masters"],
                format!(
                    "expect.two_masters must be true or false, not {}",
                    shown(&v)
                ),
            );
            None
        }
    }
}

/// Whether this run can have balancers: real mode, root, keepalived, and
/// nftables for `drop_vrrp`. Err says what is needed; nothing is made.
pub fn check_host(scenario: &Scenario, real_mode: bool) -> Result<(), String> {
    if !real_mode {
        return Err(format!(
            "{}: a scenario with balancers ({}) runs in real mode only (root, network namespaces, keepalived): give it mode = \"real\" or run it with --real, not --userspace",
            scenario.balancers_at,
            scenario.balancers.join(", ")
        ));
    }
    if scenario.load.tcp.is_some() || scenario.tls {
        return Err(format!(
            "{}: a scenario with balancers takes an HTTP load without TLS for now (no load.streams, load.connections or tls = true)",
            scenario.path.display()
        ));
    }
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        return Err(format!(
            "{}: a scenario with balancers needs root (it makes network namespaces and runs keepalived in them): run it as root",
            scenario.path.display()
        ));
    }
    real::check_host(scenario)?;
    keepalived::check_installed()?;
    let drops = scenario
        .faults
        .iter()
        .any(|f| f.balancer.is_some() && matches!(f.kind, FaultKind::DropVrrp));
    if drops {
        std::process::Command::new("nft")
            .arg("--version")
            .output()
            .map_err(|e| {
                format!("the drop_vrrp fault needs nftables' `nft` ({e}); install Debian's package: apt-get install nftables")
            })?;
    }
    Ok(())
}

/// One balancer: its namespace, Pocket and keepalived.
struct Lb {
    name: String,
    ns: String,
    /// Its port on the bridge (its cable).
    port: String,
    addr: Ipv4Addr,
    /// Its MAC on the segment, to tell whom the clients' ARP entry names.
    mac: String,
    /// Its folder: policy, check script, keepalived.conf, pid files, log.
    dir: PathBuf,
    pocket: Option<super::Balancer>,
    keepalived: Option<Keepalived>,
    /// Made with `ip netns add` (so deleted on drop).
    made: bool,
    dropping: bool,
}

/// Everything `Balancers::build` needs to start a Pocket again.
struct PocketArgs {
    policy: String,
    workers: usize,
    names: Arc<Vec<(String, String)>>,
    events: Events,
    start: Instant,
    timeline: load::Timeline,
}

/// The balancers of one lab run; all stopped and removed when dropped
/// (keepalived first, so that none holds the address over a dead Pocket,
/// then the Pockets, the namespaces and the segment's root port).
pub struct Balancers {
    lbs: Vec<Lb>,
    segment: Option<Segment>,
    vip: Ipv4Addr,
    /// The clients' port in the root namespace.
    client_if: String,
    advert_int: u32,
    pocket: PocketArgs,
    watch: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

/// Writes `text` to `path`, mode `mode`.
fn write_mode(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set the mode of {}: {e}", path.display()))
}

/// The MAC of `dev` in namespace `ns`.
fn mac_of(ns: &str, dev: &str) -> String {
    ip(&["-n", ns, "-o", "link", "show", dev])
        .unwrap_or_default()
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or("")
        .to_string()
}

impl Balancers {
    /// Makes the segment in the origins' namespace `net_ns`, the clients'
    /// port, and each balancer (namespace, Pocket on `policy`, check,
    /// keepalived); returns once the first balancer holds the virtual
    /// address and it accepts connections. On any error what was made so
    /// far is removed (drop).
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        net_ns: &str,
        scenario: &Scenario,
        dir: &Path,
        policy: String,
        names: Arc<Vec<(String, String)>>,
        events: Events,
        start: Instant,
        timeline: load::Timeline,
    ) -> Result<Balancers, String> {
        let pid = std::process::id();
        let x = real::free_subnets(pid.wrapping_mul(7))
            .into_iter()
            .next()
            .ok_or("real mode: no free 10.213.x.0/24 left for the balancers' segment")?;
        let segment = Segment::build(net_ns, "plseg", x)?;
        let vip = segment.addr(VIP_HOST);
        let mut b = Balancers {
            lbs: Vec::new(),
            segment: Some(segment),
            vip,
            client_if: format!("plh{pid}c"),
            advert_int: scenario.vrrp.advert_int,
            pocket: PocketArgs {
                policy,
                workers: scenario.workers,
                names,
                events,
                start,
                timeline,
            },
            watch: None,
        };
        let client_if = b.client_if.clone();
        b.seg()?.plug("clients", None, &client_if, CLIENT_HOST)?;
        // The clients take every announcement (gratuitous ARP) at once:
        // Linux's default ignores a second one within a second of the
        // first (`locktime`), which would hide, at random, what two
        // masters' announcements do. This link is the lab's own.
        let lock = format!("/proc/sys/net/ipv4/neigh/{client_if}/locktime");
        std::fs::write(&lock, "0").map_err(|e| format!("cannot write {lock}: {e}"))?;
        // keepalived runs check scripts only from folders no one but root
        // can write.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("cannot set the mode of {}: {e}", dir.display()))?;
        }
        let gateway = b.seg()?.addr(1).to_string();
        for (i, name) in scenario.balancers.iter().enumerate() {
            let ns = format!("{}{pid}-{name}", real::NS_PREFIX);
            let lb_dir = dir.join(name);
            std::fs::create_dir_all(&lb_dir).map_err(|e| e.to_string())?;
            ip(&["netns", "add", &ns])
                .map_err(|e| format!("real mode: cannot make a network namespace: {e}"))?;
            let port = format!("lb{i}");
            let addr = b.seg()?.addr(FIRST_HOST + i as u8);
            b.lbs.push(Lb {
                name: name.clone(),
                ns: ns.clone(),
                port: port.clone(),
                addr,
                mac: String::new(),
                dir: lb_dir,
                pocket: None,
                keepalived: None,
                made: true,
                dropping: false,
            });
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            b.seg()?.plug(&port, Some(&ns), DEV, FIRST_HOST + i as u8)?;
            // To the origins (10.213.y.2 in the origins' namespace).
            ip(&["-n", &ns, "route", "add", "10.213.0.0/16", "via", &gateway])?;
            b.lbs[i].mac = mac_of(&ns, DEV);
        }
        for i in 0..b.lbs.len() {
            b.start_pocket(i)?;
        }
        let addrs: Vec<(String, String)> = b
            .lbs
            .iter()
            .map(|l| (l.name.clone(), l.addr.to_string()))
            .collect();
        for i in 0..b.lbs.len() {
            let l = &b.lbs[i];
            let check = l.dir.join("check");
            let script = match scenario.vrrp.checks.get(&l.name) {
                Some(text) => {
                    let mut t = text
                        .replace("{{vip}}", &vip.to_string())
                        .replace("{{dev}}", DEV);
                    for (n, a) in &addrs {
                        t = t.replace(&format!("{{{{{n}}}}}"), a);
                    }
                    format!("#!/bin/bash\n# The scenario's check for {}.\n{t}\n", l.name)
                }
                None => format!(
                    "#!/bin/bash\n# {}'s Pocket is alive while its listener accepts a connection.\nexec 3<>/dev/tcp/127.0.0.1/{PORT}\n",
                    l.name
                ),
            };
            write_mode(&check, &script, 0o755)?;
            let conf = keepalived::conf_text(&keepalived::Conf {
                name: &l.name,
                dev: DEV,
                vip: &format!("{vip}/24"),
                priority: 150 - 10 * i as u8,
                master: i == 0,
                advert_int: scenario.vrrp.advert_int,
                garp_refresh: scenario.vrrp.garp_refresh,
                check: &check,
            });
            write_mode(&l.dir.join("keepalived.conf"), &conf, 0o644)?;
            b.start_keepalived(i)?;
            if i == 0 {
                // The others start once the first is master, so that
                // they hear it from their start (none of them takes the
                // address in between).
                b.wait_ready()?;
            }
        }
        b.wait_ready()?;
        b.watch();
        Ok(b)
    }

    fn seg(&mut self) -> Result<&mut Segment, String> {
        self.segment.as_mut().ok_or_else(|| "no segment".into())
    }

    /// Where the clients connect: the virtual address.
    pub fn vip(&self) -> SocketAddr {
        SocketAddr::new(self.vip.into(), PORT)
    }

    /// (address, name) of each balancer, for `Load::via`.
    pub fn via(&self) -> Vec<(String, String)> {
        self.lbs
            .iter()
            .map(|l| (l.addr.to_string(), l.name.clone()))
            .collect()
    }

    fn start_pocket(&mut self, i: usize) -> Result<(), String> {
        let a = &self.pocket;
        let l = &self.lbs[i];
        let p = super::start_balancer(
            &l.dir,
            &a.policy,
            a.workers,
            a.names.clone(),
            a.events.clone(),
            a.start,
            a.timeline.clone(),
            Some((&l.ns, &l.name)),
        )
        .map_err(|e| format!("balancer {}: {e}", l.name))?;
        self.lbs[i].pocket = Some(p);
        Ok(())
    }

    fn start_keepalived(&mut self, i: usize) -> Result<(), String> {
        let l = &self.lbs[i];
        let k = Keepalived::start(
            &l.ns,
            &l.name,
            &l.dir.join("keepalived.conf"),
            &l.dir,
            self.pocket.events.clone(),
            self.pocket.start,
        )?;
        self.lbs[i].keepalived = Some(k);
        Ok(())
    }

    /// Until the first balancer holds the virtual address and a client
    /// can connect to it (30 s at most: a loaded machine is slow).
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let vip = self.vip();
        loop {
            let held = holders(&self.lbs_view(), self.vip);
            if held.contains(&self.lbs[0].name)
                && TcpStream::connect_timeout(&vip, Duration::from_millis(300)).is_ok()
            {
                return Ok(());
            }
            for l in &mut self.lbs {
                if let Some(k) = l.keepalived.as_mut() {
                    if !k.running() {
                        return Err(format!(
                            "keepalived of balancer {} exited at start (its log: {})",
                            l.name,
                            l.dir.join("keepalived.log").display()
                        ));
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "balancer {} did not take the virtual address {} within 30s (keepalived's log: {})",
                    self.lbs[0].name,
                    self.vip,
                    self.lbs[0].dir.join("keepalived.log").display()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn lbs_view(&self) -> Vec<(String, String, String)> {
        self.lbs
            .iter()
            .map(|l| (l.name.clone(), l.ns.clone(), l.mac.clone()))
            .collect()
    }

    /// Starts the watcher: which balancers hold the address, and whom
    /// the clients' ARP entry names, as events when they change.
    fn watch(&mut self) {
        let run = Arc::new(AtomicBool::new(true));
        let (lbs, vip, client_if) = (self.lbs_view(), self.vip, self.client_if.clone());
        let (events, start) = (self.pocket.events.clone(), self.pocket.start);
        let flag = run.clone();
        let thread = std::thread::spawn(move || {
            let (mut last_held, mut last_arp) = (None::<Vec<String>>, None::<String>);
            while flag.load(Ordering::Relaxed) {
                let held = holders(&lbs, vip);
                if last_held.as_ref() != Some(&held) {
                    super::push(&events, start, "vip", super::failover::vip_text(&held));
                    last_held = Some(held);
                }
                let arp = arp_target(&lbs, vip, &client_if);
                if let Some(a) = arp.filter(|a| last_arp.as_ref() != Some(a)) {
                    super::push(&events, start, "clients", format!("clients send to {a}"));
                    last_arp = Some(a);
                }
                let until = Instant::now() + Duration::from_millis(200);
                while flag.load(Ordering::Relaxed) && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        });
        self.watch = Some((run, thread));
    }

    /// Makes a fault on balancer `name`.
    pub fn apply(&mut self, name: &str, kind: &FaultKind) -> Result<(), String> {
        let i = self
            .lbs
            .iter()
            .position(|l| l.name == name)
            .ok_or("no such balancer")?;
        match kind {
            FaultKind::Kill => {
                let p = self.lbs[i]
                    .pocket
                    .as_mut()
                    .ok_or("its Pocket is not running")?;
                // Left unreaped until restart or drop, so its pid is not reused.
                p.child.kill().map_err(|e| e.to_string())?;
            }
            FaultKind::Restart => {
                let alive = self.lbs[i]
                    .pocket
                    .as_mut()
                    .is_some_and(|p| matches!(p.child.try_wait(), Ok(None)));
                let keepalived_down = !self.lbs[i]
                    .keepalived
                    .as_mut()
                    .is_some_and(Keepalived::running);
                if alive && !keepalived_down {
                    // Both run: restart Pocket (drained, SIGTERM).
                    drop(self.lbs[i].pocket.take());
                    self.start_pocket(i)?;
                } else {
                    if !alive {
                        drop(self.lbs[i].pocket.take());
                        self.start_pocket(i)?;
                    }
                    if keepalived_down {
                        self.start_keepalived(i)?;
                    }
                }
            }
            FaultKind::Blackhole => {
                let port = self.lbs[i].port.clone();
                self.seg()?.set_port(&port, false)?;
            }
            FaultKind::Heal => {
                let port = self.lbs[i].port.clone();
                self.seg()?.set_port(&port, true)?;
                if self.lbs[i].dropping {
                    ip(&[
                        "netns",
                        "exec",
                        &self.lbs[i].ns,
                        "nft",
                        "delete",
                        "table",
                        "inet",
                        NFT_TABLE,
                    ])?;
                    self.lbs[i].dropping = false;
                }
            }
            FaultKind::StopKeepalived => {
                let mut k = self.lbs[i]
                    .keepalived
                    .take()
                    .ok_or("its keepalived is not running")?;
                k.stop();
            }
            FaultKind::StartKeepalived => {
                if !self.lbs[i]
                    .keepalived
                    .as_mut()
                    .is_some_and(Keepalived::running)
                {
                    drop(self.lbs[i].keepalived.take());
                    self.start_keepalived(i)?;
                }
            }
            FaultKind::DropVrrp => {
                let l = &self.lbs[i];
                let rules = format!(
                    "table inet {NFT_TABLE} {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    ip protocol 112 drop\n  }}\n  chain output {{\n    type filter hook output priority 0; policy accept;\n    ip protocol 112 drop\n  }}\n}}\n"
                );
                let file = l.dir.join("drop-vrrp.nft");
                write_mode(&file, &rules, 0o644)?;
                ip(&[
                    "netns",
                    "exec",
                    &l.ns,
                    "nft",
                    "-f",
                    &file.display().to_string(),
                ])?;
                self.lbs[i].dropping = true;
            }
            other => return Err(format!("not a balancer fault: {other:?}")),
        }
        Ok(())
    }

    /// A line for the summary: where everything is.
    pub fn layout(&self) -> String {
        let lbs: Vec<String> = self
            .lbs
            .iter()
            .enumerate()
            .map(|(i, l)| format!("{} at {} (priority {})", l.name, l.addr, 150 - 10 * i))
            .collect();
        format!(
            "virtual address {} held by VRRP (keepalived, advert_int {}s); balancers {}; the clients use only the virtual address",
            self.vip(),
            self.advert_int,
            lbs.join(", ")
        )
    }
}

/// The balancers whose namespace holds `vip` now, in their order.
/// `lbs`: (name, namespace, mac).
fn holders(lbs: &[(String, String, String)], vip: Ipv4Addr) -> Vec<String> {
    let needle = format!("inet {vip}/");
    lbs.iter()
        .filter(|(_, ns, _)| {
            ip(&["-n", ns, "-4", "-o", "addr", "show", "dev", DEV])
                .is_ok_and(|out| out.contains(&needle))
        })
        .map(|(name, _, _)| name.clone())
        .collect()
}

/// Which balancer the clients' ARP entry for `vip` names, if any.
fn arp_target(lbs: &[(String, String, String)], vip: Ipv4Addr, dev: &str) -> Option<String> {
    let out = ip(&["neigh", "show", &vip.to_string(), "dev", dev]).ok()?;
    let mac = out
        .split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)?
        .to_string();
    lbs.iter()
        .find(|(_, _, m)| *m == mac)
        .map(|(name, _, _)| name.clone())
}

impl Drop for Balancers {
    fn drop(&mut self) {
        if let Some((flag, thread)) = self.watch.take() {
            flag.store(false, Ordering::Relaxed);
            let _ = thread.join();
        }
        for l in &mut self.lbs {
            drop(l.keepalived.take());
        }
        for l in &mut self.lbs {
            drop(l.pocket.take());
        }
        for l in &self.lbs {
            if l.made {
                let _ = ip(&["netns", "del", &l.ns]);
            }
        }
        drop(self.segment.take());
    }
}
