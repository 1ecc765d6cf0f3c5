//! Readings of another process from `/proc`: resident memory and CPU time.

use std::sync::OnceLock;

use anyhow::{Context, bail};

/// A `kB` field of `/proc/<pid>/status`, e.g. `VmRSS` or `VmHWM`, in bytes.
pub fn status_bytes(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    let kib: u64 = line
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("bad {field}: {line}"))?;
    Ok(kib * 1024)
}

/// User plus system CPU time of `pid` so far, in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let (user, system) = cpu_split(pid)?;
    Ok(user + system)
}

/// CPU time (user + system, seconds) of the children `pid` has waited for.
pub fn children_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let fields = stat_fields(pid)?;
    let tick = |i: usize| -> anyhow::Result<u64> {
        let field = fields.get(i).context("short /proc/<pid>/stat")?;
        Ok(field.parse()?)
    };
    // cutime and cstime are fields 16 and 17.
    Ok((tick(13)? + tick(14)?) as f64 / clock_ticks() as f64)
}

/// Files `pid` holds open now (entries of `/proc/<pid>/fd`).
pub fn open_files(pid: u32) -> anyhow::Result<u64> {
    let entries = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("cannot list /proc/{pid}/fd"))?;
    Ok(entries.count() as u64)
}

/// The most files `pid` may hold open (its soft `RLIMIT_NOFILE`, from
/// `/proc/<pid>/limits`); `u64::MAX` when unlimited.
pub fn open_files_limit(pid: u32) -> anyhow::Result<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .with_context(|| format!("cannot read /proc/{pid}/limits"))?;
    soft_open_files(&limits).with_context(|| format!("no open-file limit in /proc/{pid}/limits"))
}

/// The soft limit of the `Max open files` line of a `limits` file.
fn soft_open_files(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    match line.split_whitespace().next()? {
        "unlimited" => Some(u64::MAX),
        soft => soft.parse().ok(),
    }
}

/// The live processes whose parent is `pid`.
pub fn children(pid: u32) -> anyhow::Result<Vec<u32>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").context("cannot list /proc")? {
        let Some(child) = entry
            .ok()
            .and_then(|e| e.file_name().to_str()?.parse::<u32>().ok())
        else {
            continue;
        };
        // `ppid` is field 4, index 1 after the command name.
        let parent = stat_fields(child)
            .ok()
            .and_then(|f| f.get(1)?.parse::<u32>().ok());
        if parent == Some(pid) {
            found.push(child);
        }
    }
    Ok(found)
}

/// The fields of `/proc/<pid>/stat` after the command name, from `state`.
fn stat_fields(pid: u32) -> anyhow::Result<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    let Some((_, after)) = stat.rsplit_once(')') else {
        bail!("bad /proc/{pid}/stat");
    };
    Ok(after.split_whitespace().map(str::to_owned).collect())
}

/// User and system CPU time of `pid` so far, in seconds. On loopback the
/// kernel runs the receiving client's TCP path inside the gateway's send,
/// so system time includes work a real network would put on another host.
pub fn cpu_split(pid: u32) -> anyhow::Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces), from `state`.
    let Some((_, after)) = stat.rsplit_once(')') else {
        bail!("bad /proc/{pid}/stat");
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| -> anyhow::Result<u64> {
        let field = fields.get(i).context("short /proc/<pid>/stat")?;
        Ok(field.parse()?)
    };
    // utime and stime are fields 14 and 15; `state` (field 3) is index 0.
    let hz = clock_ticks() as f64;
    Ok((tick(11)? as f64 / hz, tick(12)? as f64 / hz))
}

/// `CLK_TCK`, asked once of `getconf` (100 when it cannot tell).
pub fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(status_bytes(pid, "VmRSS").expect("rss") > 0);
        assert!(cpu_seconds(pid).expect("cpu") >= 0.0);
        assert!(children_cpu_seconds(pid).expect("children cpu") >= 0.0);
    }

    #[test]
    fn counts_open_files_against_the_limit() {
        let pid = std::process::id();
        let open = open_files(pid).expect("open files");
        assert!(open >= 3, "stdin, stdout, stderr at least: {open}");
        assert!(open_files_limit(pid).expect("limit") >= open);
        let text = "Limit                     Soft Limit           Hard Limit           Units\n\
                    Max open files            20000                20000                files\n";
        assert_eq!(soft_open_files(text), Some(20_000));
        assert_eq!(
            soft_open_files("Max open files            unlimited            unlimited   files\n"),
            Some(u64::MAX)
        );
        assert_eq!(soft_open_files("Max processes 5 5\n"), None);
    }

    #[test]
    fn finds_a_child_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep");
        let found = children(std::process::id()).expect("children");
        let _ = child.kill();
        let _ = child.wait();
        assert!(found.contains(&child.id()), "{found:?}");
    }
}
