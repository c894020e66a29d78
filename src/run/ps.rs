//! The job's processes as Linux's /proc shows them: the parent of a pid (for
//! reaping orphans) and the listing logged before a timeout or a cancel stops
//! a job, so a hung job can be diagnosed from its log. Elsewhere the listing
//! is one line saying it is not available.

/// One process: what `/proc/PID/stat` and `/proc/PID/cmdline` say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    /// R running, S sleeping, D in the kernel, Z zombie, T stopped, ...
    pub state: char,
    /// Clock ticks after boot when it started.
    pub start: u64,
    pub command: String,
}

/// The stat line's command and the fields after it: "pid (comm) S ppid
/// ...". The command may hold spaces and parentheses, so it ends at the
/// last ')'.
#[cfg(target_os = "linux")]
fn read_stat(pid: u32) -> Option<(String, String)> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let stat = String::from_utf8_lossy(&stat);
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    Some((comm, stat.get(close + 1..)?.to_string()))
}

/// Field `n` after the command (0 is the state, 1 the parent).
#[cfg(target_os = "linux")]
fn field(fields: &str, n: usize) -> Option<&str> {
    fields.split_whitespace().nth(n)
}

/// The parent of `pid`, if it still exists.
#[cfg(target_os = "linux")]
pub fn parent_of(pid: u32) -> Option<u32> {
    field(&read_stat(pid)?.1, 1)?.parse().ok()
}

#[cfg(target_os = "linux")]
fn read_proc(pid: u32) -> Option<Proc> {
    let (comm, f) = read_stat(pid)?;
    let state = field(&f, 0)?.chars().next()?;
    let ppid = field(&f, 1)?.parse().ok()?;
    // starttime is the 22nd field of the line, the 20th after the command.
    let start = field(&f, 19)?.parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut command = String::from_utf8_lossy(&cmdline)
        .trim_end_matches('\0')
        .replace('\0', " ");
    if command.is_empty() {
        // Kernel threads and zombies have no command line.
        command = format!("[{comm}]");
    }
    Some(Proc {
        pid,
        ppid,
        state,
        start,
        command,
    })
}

/// Every process descending from `root` (not `root` itself), parents before
/// their children.
#[cfg(target_os = "linux")]
pub fn descendants(root: u32) -> Vec<Proc> {
    let mut all = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let pid = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok());
            if let Some(p) = pid.and_then(read_proc) {
                all.push(p);
            }
        }
    }
    let mut out: Vec<Proc> = Vec::new();
    let mut frontier = vec![root];
    // Breadth-first; the bound stops a corrupt /proc from looping.
    while let Some(parent) = frontier.pop() {
        if out.len() > all.len() {
            break;
        }
        for p in all.iter().filter(|p| p.ppid == parent) {
            frontier.push(p.pid);
            out.push(p.clone());
        }
    }
    out
}

/// Hundredths of a second since boot, from /proc/uptime ("12345.67 ...").
#[cfg(target_os = "linux")]
fn uptime_ticks() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    let (secs, frac) = text.split_whitespace().next()?.split_once('.')?;
    let frac: u64 = frac.get(..2)?.parse().ok()?;
    secs.parse::<u64>()
        .ok()?
        .checked_mul(100)?
        .checked_add(frac)
}

/// The lines logged before a stop: a header and one line per process of the
/// job (everything descending from the runner).
#[cfg(target_os = "linux")]
pub fn listing() -> Vec<String> {
    let procs = descendants(std::process::id());
    // Start times are in USER_HZ, 100 on every Linux port, as is uptime's
    // precision.
    let now = uptime_ticks().unwrap_or(0);
    let mut lines = vec![format!(
        "the job's processes ({}):\n      PID     PPID S     SECS COMMAND",
        procs.len()
    )];
    for p in procs {
        let secs = now.saturating_sub(p.start) / 100;
        let mut command = p.command;
        if command.len() > 200 {
            let cut = crate::logs::mask::char_start(command.as_bytes(), 200);
            command.truncate(cut);
            command.push_str("...");
        }
        lines.push(format!(
            "{:>9} {:>8} {} {:>8} {command}",
            p.pid, p.ppid, p.state, secs
        ));
    }
    lines
}

#[cfg(not(target_os = "linux"))]
pub fn listing() -> Vec<String> {
    vec!["the job's processes cannot be listed here (no /proc listing on this system)".into()]
}

#[cfg(not(target_os = "linux"))]
pub fn parent_of(_pid: u32) -> Option<u32> {
    None
}
