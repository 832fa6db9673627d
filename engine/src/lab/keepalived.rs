//! keepalived (Debian's package) as the lab runs it: one instance per
//! balancer, inside the balancer's network namespace, holding the
//! scenario's virtual address by VRRP with the other balancers on the
//! segment, and giving it up when its check of the local Pocket fails.
//!
//! Each instance runs in the foreground (`-n`), logs to the console
//! (`-l -D`, read by the lab for its state changes) and has pid files of
//! its own (`-p -r -c`), so several run at once. The main process gets
//! PDEATHSIG (it dies with the lab even if the lab is killed outright;
//! keepalived's own children end with it); `Drop` stops it with SIGTERM,
//! as an operator would (it then sends a priority-0 advertisement and
//! drops the address), then SIGKILLs whatever of it is left.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Events;

/// How one balancer's keepalived is set up.
pub struct Conf<'a> {
    /// The balancer's name (`router_id`, and the events' words).
    pub name: &'a str,
    /// The interface on the segment, in the balancer's namespace.
    pub dev: &'a str,
    /// The virtual address with its prefix, `10.213.x.100/24`.
    pub vip: &'a str,
    /// VRRP priority: the highest live one holds the address.
    pub priority: u8,
    /// Starts as master (the first balancer), else as backup.
    pub master: bool,
    /// Seconds between advertisements.
    pub advert_int: u32,
    /// Seconds between gratuitous ARPs while master (0: only on becoming
    /// master, keepalived's default).
    pub garp_refresh: u32,
    /// The check script's path: exit 0 while this balancer may hold the
    /// address.
    pub check: &'a Path,
}

/// keepalived.conf for `c`. The check runs every second and counts at
/// once (`fall 1`, `rise 1`): the lab measures the take-over, a longer
/// `fall` would only add to it. `script_user root` with
/// `enable_script_security`: the lab's scripts are root's, in a folder
/// only root can write.
pub fn conf_text(c: &Conf) -> String {
    format!(
        "# Written by pocket lab for balancer {name}.
global_defs {{
  router_id {name}
  enable_script_security
  script_user root
}}

vrrp_script pocket_check {{
  script \"{check}\"
  interval 1
  timeout 1
  fall 1
  rise 1
}}

vrrp_instance VIP {{
  state {state}
  interface {dev}
  virtual_router_id 51
  priority {priority}
  advert_int {advert}{refresh}
  virtual_ipaddress {{
    {vip} dev {dev}
  }}
  track_script {{
    pocket_check
  }}
}}
",
        name = c.name,
        check = c.check.display(),
        state = if c.master { "MASTER" } else { "BACKUP" },
        dev = c.dev,
        priority = c.priority,
        advert = c.advert_int,
        refresh = if c.garp_refresh > 0 {
            format!("\n  garp_master_refresh {}", c.garp_refresh)
        } else {
            String::new()
        },
        vip = c.vip,
    )
}

/// Whether keepalived can be run here: Err says what to install.
pub fn check_installed() -> Result<(), String> {
    match Command::new("keepalived")
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "a scenario with balancers needs keepalived ({e}); install Debian's package: apt-get install keepalived"
        )),
    }
}

/// A running keepalived.
pub struct Keepalived {
    child: Option<Child>,
    /// Its pid files: main, VRRP child, checker child.
    pidfiles: [PathBuf; 3],
}

/// The event a keepalived log line of balancer `name` makes, if any:
/// its VRRP state changes and its check's verdicts.
fn event_of(name: &str, line: &str) -> Option<String> {
    for state in ["MASTER", "BACKUP", "FAULT"] {
        if line.contains(&format!("Entering {state} STATE")) {
            return Some(format!("{name} keepalived: {state}"));
        }
    }
    if line.contains("VRRP_Script(pocket_check) failed") {
        return Some(format!("{name} keepalived: check failed"));
    }
    if line.contains("VRRP_Script(pocket_check) succeeded") {
        return Some(format!("{name} keepalived: check passed"));
    }
    if line.contains("Stopping") && line.contains("Keepalived") {
        return Some(format!("{name} keepalived: stopping"));
    }
    None
}

impl Keepalived {
    /// Starts keepalived in namespace `ns` on `conf` (pid files and its
    /// log next to it, in `dir`); its state changes become events.
    pub fn start(
        ns: &str,
        name: &str,
        conf: &Path,
        dir: &Path,
        events: Events,
        start: Instant,
    ) -> Result<Keepalived, String> {
        let pidfiles = [
            dir.join("keepalived.pid"),
            dir.join("vrrp.pid"),
            dir.join("checkers.pid"),
        ];
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, "keepalived", "-n", "-l", "-D", "-f"])
            .arg(conf)
            .arg("-p")
            .arg(&pidfiles[0])
            .arg("-r")
            .arg(&pidfiles[1])
            .arg("-c")
            .arg(&pidfiles[2])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: prctl(2) is async-signal-safe; `ip netns exec` execs
        // keepalived in this same process, so it dies with the lab's
        // thread.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start keepalived for {name}: {e}"))?;
        let log = dir.join("keepalived.log");
        let outs: Vec<Box<dyn std::io::Read + Send>> = vec![
            Box::new(child.stdout.take().ok_or("no stdout")?),
            Box::new(child.stderr.take().ok_or("no stderr")?),
        ];
        for out in outs {
            let (name, events, log) = (name.to_string(), events.clone(), log.clone());
            std::thread::spawn(move || {
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .ok();
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if let Some(f) = file.as_mut() {
                        use std::io::Write;
                        let _ = writeln!(f, "{line}");
                    }
                    if let Some(text) = event_of(&name, &line) {
                        super::push(&events, start, "vrrp", text);
                    }
                }
            });
        }
        Ok(Keepalived {
            child: Some(child),
            pidfiles,
        })
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM and wait (5 s at most), then SIGKILL; then any child of
    /// it whose pid file is left. Also what `Drop` does.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid, not yet waited for.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for f in &self.pidfiles {
            let pid = std::fs::read_to_string(f)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok());
            if let Some(pid) = pid.filter(|p| *p > 1) {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains("keepalived") {
                    // SAFETY: kill(2) on a keepalived process this lab
                    // started (its pid file, its command line).
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            let _ = std::fs::remove_file(f);
        }
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_conf_names_the_check_the_address_and_the_state() {
        let check = PathBuf::from("/tmp/x/L1/check");
        let text = conf_text(&Conf {
            name: "L1",
            dev: "seg",
            vip: "10.213.9.100/24",
            priority: 150,
            master: true,
            advert_int: 1,
            garp_refresh: 2,
            check: &check,
        });
        assert!(text.contains("state MASTER"), "{text}");
        assert!(text.contains("10.213.9.100/24 dev seg"), "{text}");
        assert!(text.contains("script \"/tmp/x/L1/check\""), "{text}");
        assert!(text.contains("priority 150"), "{text}");
        assert!(text.contains("garp_master_refresh 2"), "{text}");
    }

    #[test]
    fn state_lines_become_events() {
        assert_eq!(
            event_of(
                "L2",
                "Mon Nov 30 19:26:54 2026: (VIP) Entering MASTER STATE"
            ),
            Some("L2 keepalived: MASTER".into())
        );
        assert_eq!(event_of("L2", "Sending gratuitous ARP on seg"), None);
    }
}
