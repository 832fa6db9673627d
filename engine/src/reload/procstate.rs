//! Whether a Pocket process is stopped (SIGSTOP, a debugger, Ctrl-Z): its
//! own status file still says `serving`, but it takes no connections, and
//! with SO_REUSEPORT the kernel still hands it its share of them.

/// True when `/proc/<pid>/stat` gives state `T` (stopped by a signal) or
/// `t` (stopped by a tracer). Linux only; elsewhere, or when the file
/// cannot be read, false.
pub fn is_stopped(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) S ...`: comm may hold spaces and parentheses, so the
    // state is the first field after the last `)` (proc(5)).
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return false;
    };
    matches!(rest.split_whitespace().next(), Some("T") | Some("t"))
}

/// What `pocket status` says for a stopped Pocket, in place of its own
/// `state:` line.
pub const STOPPED: &str = "stopped (SIGSTOP: it takes no connections until SIGCONT)";

/// `status` (a status file's text) with its `state:` line replaced by
/// [`STOPPED`] when `pid` is stopped.
pub fn with_process_state(status: &str, pid: i32) -> String {
    if !is_stopped(pid) {
        return status.to_string();
    }
    status
        .lines()
        .map(|line| {
            if line.starts_with("state:") {
                format!("state: {STOPPED}\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect()
}
