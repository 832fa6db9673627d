//! The `pocket` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use pocket::config::load_policy;
use pocket::lb::StateRegistry;
use pocket::server::{self, RunOptions};

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
    },
    /// Load and validate a policy, print what would run; exit 1 on errors.
    Check { policy: PathBuf },
    /// Two built-in origins (A on 9001, B on 9002) behind Pocket on 8080.
    Demo {
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Run one built-in origin server (for labs and tests).
    Origin {
        #[arg(long, default_value = "A")]
        name: String,
        #[arg(long, default_value_t = 9001)]
        port: u16,
        #[arg(long, default_value = "127.0.0.1")]
        bind: std::net::IpAddr,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("POCKET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Check { policy } => return check(&policy),
        Command::Run { policy, workers } => run(&policy, workers),
        Command::Demo { workers } => demo(workers),
        Command::Origin { name, port, bind } => {
            origin(&name, std::net::SocketAddr::new(bind, port))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pocket: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match load_policy(path, &StateRegistry::default()) {
        Ok(policy) => {
            print!("{}", policy.summary());
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}

fn options(workers: Option<usize>) -> RunOptions {
    let mut opts = RunOptions::default();
    if let Some(n) = workers {
        opts.workers = n.max(1);
    }
    opts
}

fn serve(policy: pocket::config::Policy, opts: &RunOptions) -> anyhow::Result<()> {
    let policy = Arc::new(policy);
    let running = server::start(policy.clone(), opts)?;
    for l in &policy.listeners {
        tracing::info!(
            "listener {} listening on {}",
            l.name,
            running.addr_of(&l.name).unwrap_or(l.bind)
        );
    }
    tracing::info!(
        "pocket ready: {} workers, policy {}",
        running.threads.len(),
        policy.path.display()
    );
    wait_for_signal()
}

fn run(path: &std::path::Path, workers: Option<usize>) -> anyhow::Result<()> {
    let registry = StateRegistry::default();
    let policy =
        load_policy(path, &registry).map_err(|e| anyhow::anyhow!("refusing to start:\n{e}"))?;
    serve(policy, &options(workers))
}

fn demo(workers: Option<usize>) -> anyhow::Result<()> {
    let _origins = pocket::demo::start_origins()?;
    let registry = StateRegistry::default();
    let policy = pocket::demo::demo_policy(&registry)?;
    println!("{}", pocket::demo::WELCOME);
    serve(policy, &options(workers))
}

fn origin(name: &str, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let handle = pocket::origin::spawn(name, addr)?;
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
