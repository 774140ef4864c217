//! `/proc/PID/stat`, read once: the one parser of that file, used by the supervisor,
//! the pool, the process watcher and anonymous sessions.

/// The start time of `pid` in clock ticks since boot, from `/proc/PID/stat`.
pub fn process_start_time(pid: i32) -> Option<u64> {
    ProcStat::read(pid).map(|s| s.start_time)
}

/// The fields of `/proc/PID/stat` that corrald uses. The one parser of that file.
#[derive(Debug, Clone, Copy)]
pub struct ProcStat {
    /// State letter (`Z` for a zombie).
    pub state: char,
    /// Process group.
    pub pgrp: i32,
    /// User and system CPU time, clock ticks.
    pub cpu_ticks: u64,
    /// Start time, clock ticks since boot.
    pub start_time: u64,
    /// Resident set size, pages.
    pub rss_pages: u64,
}

impl ProcStat {
    /// Reads `/proc/PID/stat`; None if the process is gone.
    pub fn read(pid: i32) -> Option<ProcStat> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name (field 2) may contain spaces and parentheses: skip past the last ')'.
        let rest = &stat[stat.rfind(')')? + 2..];
        // `f[0]` is field 3 (state): pgrp is field 5, utime 14, stime 15, starttime 22, rss 24.
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
        Some(ProcStat {
            state: f.first()?.chars().next()?,
            pgrp: f.get(2)?.parse().ok()?,
            cpu_ticks: num(11)? + num(12)?,
            start_time: num(19)?,
            rss_pages: num(21)?,
        })
    }
}
