//! The `pocket` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use pocket::config::load_policy;
use pocket::lb::{HealthEvent, StateRegistry};
use pocket::reload::{Status, Supervisor};
use pocket::server::{self, RunOptions};
use tokio::sync::mpsc::UnboundedReceiver;

#[derive(Parser)]
#[command(
    name = "pocket",
    version,
    about = "A load balancer and reverse proxy whose decisions are written in Lua"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the listeners and pools a policy script returns.
    Run {
        /// The policy script.
        policy: PathBuf,
        /// Worker threads, each with its own Lua VM (default: one per core).
        #[arg(long)]
        workers: Option<usize>,
        /// On SIGTERM, how long open connections get to finish.
        #[arg(long, default_value = "30s", value_parser = parse_grace)]
        grace: Duration,
        /// Do not watch the policy's folder (reload on SIGHUP only).
        #[arg(long)]
        no_watch: bool,
        /// At most this many client connections open at once over the
        /// whole process (HAProxy's global maxconn); at the cap Pocket stops
        /// accepting and new ones wait in the kernel's accept queue.
        /// Default: half the file descriptor limit, less a reserve.
        #[arg(long, value_parser = parse_max_connections)]
        max_connections: Option<u64>,
        /// For the failure lab and tests only: SIGUSR2 makes the next hook
        /// call hang its worker (the lab's `hang_worker` fault), to
        /// exercise the watchdog; another SIGUSR2 lets it come back.
        #[arg(long)]
        lab_faults: bool,
    },
    /// Ask the Pocket serving POLICY to reload it now (like SIGHUP); wait
    /// for the result and exit 1 if the new policy was refused.
    Reload { policy: PathBuf },
    /// Ask the Pocket serving POLICY to reopen its access log files (like
    /// SIGUSR1, nginx's `-s reopen`): what logrotate's postrotate runs.
    Reopen { policy: PathBuf },
    /// Run a failure-lab scenario: origins, faults, load, a live timeline,
    /// expectations and a report.
    Lab {
        scenario: PathBuf,
        /// Where the report goes (default: lab-report/ and the scenario file's name without .lua).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Kernel faults in network namespaces (root).
        #[arg(long, conflicts_with = "userspace")]
        real: bool,
        /// Userspace faults (the default).
        #[arg(long)]
        userspace: bool,
        /// No live timeline, only the result.
        #[arg(long)]
        quiet: bool,
    },
    /// Run the policy's `tests` cases with no network to servers (names in pools are still resolved by DNS); exit 1 if any fails.
    Test {
        /// Policy scripts (several may be given).
        #[arg(required = true)]
        policies: Vec<PathBuf>,
    },
    /// Show the generation, reload counts and last error of the Pocket
    /// serving POLICY.
    Status { policy: PathBuf },
    /// Load and validate a policy, print what would run; exit 1 on errors.
    Check { policy: PathBuf },
    /// Run one request through the policy with no network to servers (names in
    /// pools are still resolved by DNS) and print why
    /// it goes where it goes: hooks, the pocket.match route, the pool, the
    /// hash key, every server and why it was skipped. Exit 2 on a
    /// malformed request, 1 when the policy does not load.
    #[command(
        override_usage = "pocket explain POLICY \"GET http://host/path\" [-H \"Name: value\"]... [--peer IP] [--down SERVER]...\n       pocket explain POLICY tcp://LISTENER [--sni NAME] [--alpn P1,P2] [--peer IP[:PORT]] [--down SERVER]..."
    )]
    Explain(Box<pocket::explain::cli::Args>),
    /// Two built-in origins (A on 9001, B on 9002) behind Pocket on 8080,
    /// serving pocket-demo/demo.lua (written on first run).
    #[command(override_usage = "pocket demo [OPTIONS]")]
    Demo {
        /// Worker threads (default: one per core).
        #[arg(long)]
        workers: Option<usize>,
        /// Pocket's listener port, on 127.0.0.1 (1-65535, not an origin's),
        /// written into a new pocket-demo/demo.lua (a kept file is served
        /// as it is, and the welcome says so when its port differs).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Origins A and B's ports, on 127.0.0.1, written into a new
        /// pocket-demo/demo.lua.
        #[arg(long, value_name = "A,B", default_value = "9001,9002", value_parser = parse_origin_ports)]
        origin_ports: (u16, u16),
        /// The admin listener's port (stats page, API, /metrics), on
        /// 127.0.0.1, written into a new pocket-demo/demo.lua.
        #[arg(long, default_value_t = 8404)]
        admin_port: u16,
    },
    /// Run one built-in origin server (for labs and tests).
    ///
    /// It answers `hello from NAME (request N) path P` and says who it is
    /// in `x-origin`. Paths: `/health` (ok), `/headers` (what it received),
    /// `/bytes/N` (N bytes), `/status/N` (that status), `/delay/MS` (answers
    /// after MS ms), `/stall/N` (N bytes, then silence), `/echo` (an upgrade
    /// that echoes bytes); POST/PUT say how many bytes came.
    Origin {
        #[arg(long, default_value = "A")]
        name: String,
        #[arg(long, default_value_t = 9001)]
        port: u16,
        #[arg(long, default_value = "127.0.0.1")]
        bind: std::net::IpAddr,
        /// Answer everything but /health with this status (a lying server).
        #[arg(long)]
        fail_status: Option<u16>,
        /// A TCP echo server instead of HTTP: sends `origin NAME\r\n`,
        /// then every byte back (the lab's TCP scenarios).
        #[arg(long, conflicts_with = "fail_status")]
        echo: bool,
    },
}

/// `pocket demo --origin-ports A,B`: two distinct ports.
fn parse_origin_ports(text: &str) -> Result<(u16, u16), String> {
    let ports: Vec<Option<u16>> = text.split(',').map(|p| p.trim().parse().ok()).collect();
    match ports.as_slice() {
        [Some(a), Some(b)] if a != b && *a != 0 && *b != 0 => Ok((*a, *b)),
        _ => Err(format!(
            "--origin-ports takes two different ports from 1 to 65535, as A,B (for example 9001,9002), not {text:?}"
        )),
    }
}

/// `--max-connections`: a count of at least 1 (0 would accept nothing).
fn parse_max_connections(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(0) => Err("--max-connections must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!(
            "--max-connections takes a whole number of connections, at least 1 (not {text:?})"
        )),
    }
}

/// Crates that log once per file-system event below `info`: notify, which
/// watches the policy's folder, logs every inotify event at `trace`. With
/// the log file in that folder each line written is an event that logs a
/// line, a loop (70 MB in 5 s seen). They stay at `info` unless
/// `POCKET_LOG` names them itself.
const PER_EVENT_TARGETS: &[&str] = &["notify", "inotify"];

/// Pocket's own log on stderr, at `POCKET_LOG`'s level or `default`.
fn init_logging(default: &str) {
    let wanted = std::env::var("POCKET_LOG").unwrap_or_default();
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("POCKET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    for target in PER_EVENT_TARGETS {
        if !wanted.contains(target) {
            if let Ok(directive) = format!("{target}=info").parse() {
                filter = filter.add_directive(directive);
            }
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// jemalloc, told to give freed pages back within a second from its own
/// thread: a connection that parks frees ~18 KiB of hyper buffers, and with
/// glibc's malloc those holes stayed resident (10,000 idle connections:
/// 73 MiB with glibc, 31 MiB with this). See docs/benchmark.md.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc reads its options from this symbol at start.
#[repr(transparent)]
pub struct MallocConf(*const std::ffi::c_char);
// SAFETY: a pointer to a static, immutable C string.
unsafe impl Sync for MallocConf {}

#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: MallocConf =
    MallocConf(c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr());

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `pocket explain` prints the trace: the proxy's own log lines for the
    // same steps ("server ... set to drain", "refused: ...") would read as
    // if something had happened to a running Pocket. Errors still show.
    init_logging(if matches!(cli.command, Command::Explain(_)) {
        "error"
    } else {
        "info"
    });
    let result = match cli.command {
        Command::Check { policy } => return check(&policy),
        Command::Explain(args) => return explain(&args),
        Command::Run {
            policy,
            workers,
            grace,
            no_watch,
            max_connections,
            lab_faults,
        } => run(
            &policy,
            RunFlags {
                workers,
                grace,
                watch: !no_watch,
                max_connections,
                lab_faults,
            },
        ),
        Command::Reload { policy } => return reload(&policy),
        Command::Reopen { policy } => return reopen(&policy),
        Command::Test { policies } => return test(&policies),
        Command::Lab {
            scenario,
            out,
            real,
            userspace,
            quiet,
        } => {
            let opts = pocket::lab::LabOptions {
                out,
                real,
                userspace,
                quiet,
            };
            return lab(&scenario, opts);
        }
        Command::Status { policy } => return status(&policy),
        Command::Demo {
            workers,
            port,
            origin_ports: (a, b),
            admin_port,
        } => demo(
            workers,
            pocket::demo::DemoPorts {
                web: port,
                a,
                b,
                admin: admin_port,
            },
        ),
        Command::Origin {
            name,
            port,
            bind,
            fail_status,
            echo,
        } => origin(
            &name,
            std::net::SocketAddr::new(bind, port),
            fail_status,
            echo,
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pocket: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &Path) -> ExitCode {
    match load_policy(path, &StateRegistry::default()) {
        Ok(policy) => {
            // What serving would open: said, not created.
            if let Some(Err(e)) = policy.log.as_ref().map(|l| l.check()) {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
            print!("{}", policy.summary());
            for w in &policy.warnings {
                println!("warning: {w}");
            }
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}

fn explain(args: &pocket::explain::cli::Args) -> ExitCode {
    use pocket::explain::cli::Failure;
    match pocket::explain::cli::run(args) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(Failure::Input(why)) => {
            eprintln!("pocket explain: {why}");
            ExitCode::from(2)
        }
        Err(Failure::Policy(errors)) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}

/// What `pocket run` was told on its command line.
struct RunFlags {
    workers: Option<usize>,
    grace: Duration,
    watch: bool,
    max_connections: Option<u64>,
    lab_faults: bool,
}

/// The run options for `policy`: the worker count, and the process's
/// connection cap checked against the file descriptor limit (raised to
/// the hard limit first, as HAProxy does). Each proxied connection needs
/// two descriptors, the client's and the server's.
fn options(
    workers: Option<usize>,
    max_connections: Option<u64>,
    policy: &pocket::config::Policy,
) -> anyhow::Result<RunOptions> {
    use pocket::server::maxconn;
    let mut opts = RunOptions::default();
    if let Some(n) = workers {
        opts.workers = n.max(1);
    }
    let fds = maxconn::raise_fd_limit();
    let reserved = maxconn::reserved_fds(opts.workers, policy.listeners.len());
    let fits = maxconn::default_max_connections(fds, reserved);
    // Like HAProxy: a cap the limit cannot hold at two descriptors a
    // connection is a warning (idle clients and local answers need one);
    // one it cannot hold at one descriptor a connection is refused.
    let at_one = fds.saturating_sub(reserved) as usize;
    opts.max_connections = match max_connections {
        None => fits,
        Some(n) if n as usize <= fits => n as usize,
        Some(n) if n as usize <= at_one => {
            tracing::warn!(
                "--max-connections {n} may need up to {} file descriptors (two a proxied connection and {reserved} kept back), more than the limit of {fds}; raise the hard limit (ulimit -Hn, LimitNOFILE= in systemd) or lower --max-connections to {fits}",
                n.saturating_mul(2).saturating_add(reserved)
            );
            n as usize
        }
        Some(n) => anyhow::bail!(
            "--max-connections {n} needs at least {} file descriptors (one a connection and {reserved} kept back), but the limit is {fds}; raise the hard limit (ulimit -Hn, LimitNOFILE= in systemd) or lower --max-connections to {at_one} or less ({fits} or less for two a connection)",
            n.saturating_add(reserved)
        ),
    };
    tracing::debug!(
        "file descriptor limit {fds}; max_connections {} for the process",
        opts.max_connections
    );
    Ok(opts)
}

fn parse_grace(text: &str) -> Result<Duration, String> {
    pocket::config::parse_duration(text)
}

fn serve(
    policy: pocket::config::Policy,
    (registry, events): Registry,
    opts: &RunOptions,
    flags: &RunFlags,
) -> anyhow::Result<()> {
    let path = policy.path.clone();
    // Stores kept in Redis start connecting (off the request path); a
    // Redis that is away only makes them local until it answers.
    pocket::script::api::store::redis::apply(&policy.stores);
    let running = server::start(Arc::new(policy), opts)?;
    Supervisor::new(path, registry, events, running, flags.watch)
        .with_lab_faults(flags.lab_faults)
        .run(flags.grace)
}

type Registry = (Arc<StateRegistry>, UnboundedReceiver<HealthEvent>);

/// Server state, with its health changes going to the control thread.
fn registry() -> Registry {
    let registry = Arc::new(StateRegistry::default());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    registry.set_events(tx);
    StateRegistry::install_global(registry.clone());
    (registry, rx)
}

fn run(path: &Path, flags: RunFlags) -> anyhow::Result<()> {
    let registry = registry();
    let policy =
        load_policy(path, &registry.0).map_err(|e| anyhow::anyhow!("refusing to start:\n{e}"))?;
    for w in &policy.warnings {
        tracing::warn!("{w}");
    }
    let opts = options(flags.workers, flags.max_connections, &policy)
        .map_err(|e| anyhow::anyhow!("refusing to start: {e}"))?;
    serve(policy, registry, &opts, &flags)
}

/// Everything that can be refused (ports, a busy port, the origins, the
/// policy, the listeners) is refused before the welcome is printed: the
/// welcome says Pocket is running only once it listens.
fn demo(workers: Option<usize>, ports: pocket::demo::DemoPorts) -> anyhow::Result<()> {
    ports.check()?;
    if !Path::new(pocket::demo::DEMO_FILE).exists() {
        // A new file gets these ports: a busy one writes nothing.
        ports.check_web_free()?;
    }
    let _origins = pocket::demo::start_origins(ports)?;
    let file = pocket::demo::demo_file(ports);
    let registry = registry();
    let policy = pocket::demo::demo_policy(&file, ports, &registry.0)?;
    // The file reloads on save, as with `pocket run`.
    let watch = file.path().is_some();
    let opts = options(workers, None, &policy)?;
    let welcome = pocket::demo::welcome(&file, &policy, ports);
    let path = policy.path.clone();
    let running = server::start(Arc::new(policy), &opts)?;
    println!("{welcome}");
    let (registry, events) = registry;
    Supervisor::new(path, registry, events, running, watch).run(Duration::from_secs(5))
}

fn lab(scenario: &Path, opts: pocket::lab::LabOptions) -> ExitCode {
    match pocket::lab::run(scenario, &opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("pocket lab: {e}");
            ExitCode::from(2)
        }
    }
}

fn test(policies: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for path in policies {
        match pocket::policy_tests::run(path) {
            Ok(outcome) => {
                for f in &outcome.failures {
                    println!("FAIL {f}");
                }
                println!(
                    "{}: {} passed, {} failed",
                    path.display(),
                    outcome.passed,
                    outcome.failures.len()
                );
                failed |= !outcome.failures.is_empty();
            }
            Err(e) => {
                println!("{e}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Why `pocket status` or `pocket reload` found no Pocket: a mistyped
/// path is said to be one, not only "none serves it".
fn nobody_serves(policy: &Path) -> String {
    if policy.exists() {
        format!("no Pocket is serving {}", policy.display())
    } else {
        format!(
            "{} does not exist; no Pocket is serving it",
            policy.display()
        )
    }
}

/// Every Pocket serving `policy`, one status each, separated by a blank
/// line; exit 1 when there is none.
fn status(policy: &Path) -> ExitCode {
    let found = pocket::reload::serving(policy);
    if found.is_empty() {
        eprintln!("pocket: {}", nobody_serves(policy));
        return ExitCode::FAILURE;
    }
    let texts: Vec<String> = found
        .iter()
        .map(|s| pocket::reload::with_process_state(&s.status, s.pid))
        .collect();
    print!("{}", texts.join("\n"));
    ExitCode::SUCCESS
}

/// SIGHUP to every Pocket serving `policy` (one draining after SIGTERM
/// takes no reload), then waits for each one's outcome in its status file:
/// one line per Pocket; exit 1 if any refused the policy or did not answer.
/// SIGUSR1 to every Pocket serving `policy`: each reopens its access log
/// files within 100 ms. Signalling only the processes `serving` finds
/// (not every process named pocket) spares `pocket origin` and others.
fn reopen(policy: &Path) -> ExitCode {
    let found = pocket::reload::serving(policy);
    if found.is_empty() {
        eprintln!("pocket: {}", nobody_serves(policy));
        return ExitCode::FAILURE;
    }
    let mut failed = false;
    for s in &found {
        // SAFETY: kill(2) has no memory effects; `serving` checked that
        // the pid is a Pocket serving this policy.
        if unsafe { libc::kill(s.pid, libc::SIGUSR1) } != 0 {
            eprintln!(
                "pocket: cannot signal pid {}: {}",
                s.pid,
                std::io::Error::last_os_error()
            );
            failed = true;
            continue;
        }
        println!("pid {}: reopening its access log", s.pid);
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn reload(policy: &Path) -> ExitCode {
    let found = pocket::reload::serving(policy);
    if found.is_empty() {
        eprintln!("pocket: {}", nobody_serves(policy));
        return ExitCode::FAILURE;
    }
    let count = |text: &str, key: &str| {
        Status::field(text, key)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut waiting = Vec::new();
    let mut failed = false;
    for s in &found {
        if s.draining() {
            println!("pid {}: draining (it got SIGTERM), not reloaded", s.pid);
            continue;
        }
        if pocket::reload::is_stopped(s.pid) {
            // It would answer only after SIGCONT: say so now, not in 30 s.
            eprintln!(
                "pocket: pid {} is {}; not reloaded (send SIGCONT, then reload)",
                s.pid,
                pocket::reload::STOPPED
            );
            failed = true;
            continue;
        }
        // SAFETY: kill(2) has no memory effects; `serving` checked that
        // the pid is a Pocket serving this policy.
        if unsafe { libc::kill(s.pid, libc::SIGHUP) } != 0 {
            eprintln!(
                "pocket: cannot signal pid {}: {}",
                s.pid,
                std::io::Error::last_os_error()
            );
            failed = true;
            continue;
        }
        waiting.push(s);
    }
    if waiting.is_empty() && !failed {
        eprintln!(
            "pocket: every Pocket serving {} is stopping; nothing reloaded",
            policy.display()
        );
        return ExitCode::FAILURE;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !waiting.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        waiting.retain(|s| {
            let Some(now) = s.files.read_status() else {
                return true;
            };
            if count(&now, "reloads_ok") > count(&s.status, "reloads_ok") {
                println!(
                    "reloaded: generation {} (pid {})",
                    Status::field(&now, "generation").unwrap_or("?"),
                    s.pid
                );
                return false;
            }
            if count(&now, "reloads_failed") > count(&s.status, "reloads_failed") {
                eprintln!(
                    "pocket: reload refused (pid {}): {}",
                    s.pid,
                    Status::field(&now, "last_error").unwrap_or("")
                );
                failed = true;
                return false;
            }
            true
        });
    }
    for s in &waiting {
        eprintln!("pocket: no answer from pid {} within 30 s", s.pid);
        failed = true;
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn origin(
    name: &str,
    addr: std::net::SocketAddr,
    fail_status: Option<u16>,
    echo: bool,
) -> anyhow::Result<()> {
    // A logrotate script that signals every process named pocket (SIGUSR1,
    // or SIGHUP) must not stop an origin: both are ignored from the start.
    // SAFETY: setting a signal's disposition to SIG_IGN touches no memory.
    unsafe {
        libc::signal(libc::SIGUSR1, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
    let handle = if echo {
        pocket::origin::echo::spawn_echo(name, addr)
    } else {
        pocket::origin::spawn_with(name, addr, pocket::origin::Behaviour { fail_status })
    }
    // The address, as `pocket run` names a listener's: "Address already in
    // use" alone does not say which of several origins failed.
    .map_err(|e| anyhow::anyhow!("cannot start origin {name} on {addr} (--port, --bind): {e}"))?;
    tracing::info!("origin {} listening on {}", name, handle.addr);
    wait_for_signal()
}

/// Blocks until SIGINT or SIGTERM.
fn wait_for_signal() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("stopping");
        Ok(())
    })
}
