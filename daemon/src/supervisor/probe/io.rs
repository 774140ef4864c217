//! How each check is made, off the supervisor's state: the `notify` socket, `http`
//! and `log` probes, and the memory of process groups from `/proc`.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{Msg, ProbeMsg};
use crate::procstat::ProcStat;

/// Binds `@corral-notify-PID-N` with `SO_PASSCRED` and forwards what arrives.
pub(super) fn notify_listener(tx: mpsc::UnboundedSender<Msg>) -> std::io::Result<String> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    // The pid and the time: abstract names are shared by everything in the network
    // namespace, also by corralds in other pid namespaces.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = format!("corral-notify-{}-{nanos:x}", std::process::id());
    let sock = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)?;
    nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::PassCred, &true)?;
    sock.set_nonblocking(true)?;
    let sock = tokio::net::UnixDatagram::from_std(sock)?;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            if sock.readable().await.is_err() {
                return;
            }
            let got = sock.try_io(tokio::io::Interest::READABLE, || {
                recv_with_pid(&sock, &mut buf).map_err(std::io::Error::from)
            });
            let (len, pid) = match got {
                Ok(x) => x,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    tracing::warn!("notify socket: {e}");
                    continue;
                }
            };
            let Some(pid) = pid else { continue };
            // Read the group now: a short-lived sender (systemd-notify) is soon gone.
            let pgid = ProcStat::read(pid).map(|s| s.pgrp);
            let text = String::from_utf8_lossy(&buf[..len]).into_owned();
            if tx
                .send(Msg::Probe(ProbeMsg::Notify { pid, pgid, text }))
                .is_err()
            {
                return;
            }
        }
    });
    Ok(format!("@{name}"))
}

/// One datagram into `buf`: its length and the sender's pid.
fn recv_with_pid(
    sock: &tokio::net::UnixDatagram,
    buf: &mut [u8],
) -> nix::Result<(usize, Option<i32>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, UnixAddr, recvmsg};
    use std::os::fd::AsRawFd;
    let mut cmsg = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let msg = recvmsg::<UnixAddr>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC,
    )?;
    let pid = msg.cmsgs()?.find_map(|c| match c {
        ControlMessageOwned::ScmCredentials(creds) => Some(creds.pid()),
        _ => None,
    });
    Ok((msg.bytes.min(iov[0].len()), pid))
}

/// Resident memory by process group, for the groups asked about, from one pass over
/// `/proc`.
pub(super) fn group_rss(pgids: impl Iterator<Item = i32>) -> HashMap<i32, u64> {
    let mut sums: HashMap<i32, u64> = pgids.map(|g| (g, 0)).collect();
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |p| p as u64);
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return sums;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(stat) = ProcStat::read(pid) {
            if let Some(sum) = sums.get_mut(&stat.pgrp) {
                *sum += stat.rss_pages * page;
            }
        }
    }
    sums
}

/// The longest piece of a log read per probe.
const LOG_CHUNK: u64 = 1 << 20;

/// Looks for a line matching `pattern` in `path` from `offset`: the outcome, and the
/// offset to go on from (the start of an unfinished last line).
pub(super) fn scan_log(path: &Path, offset: u64, pattern: &str) -> (Result<(), String>, u64) {
    let regex = match regex::Regex::new(pattern) {
        Ok(r) => r,
        Err(e) => return (Err(format!("bad pattern: {e}")), offset),
    };
    let Ok(mut file) = std::fs::File::open(path) else {
        return (Err("no log yet".into()), offset);
    };
    let len = file.metadata().map_or(0, |m| m.len());
    // Rotated (copied, then truncated) since the last look: read from the start.
    let offset = if len < offset { 0 } else { offset };
    let mut buf = Vec::new();
    if file.seek(SeekFrom::Start(offset)).is_err()
        || file.take(LOG_CHUNK).read_to_end(&mut buf).is_err()
    {
        return (Err("cannot read the log".into()), offset);
    }
    let complete = match buf.iter().rposition(|b| *b == b'\n') {
        Some(end) => end + 1,
        // One very long line without its end: take it as it is.
        None if buf.len() as u64 >= LOG_CHUNK => buf.len(),
        None => 0,
    };
    let text = String::from_utf8_lossy(&buf[..complete]);
    let next = offset + complete as u64;
    match text.lines().any(|l| regex.is_match(l)) {
        true => (Ok(()), next),
        false => (Err("no line of its output matched yet".into()), next),
    }
}

/// A GET of `target` over HTTP/1.1: Ok for a 2xx status.
pub(super) async fn http_get(target: &corral_config::HttpTarget) -> Result<(), String> {
    let mut stream = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("cannot connect to {}:{}: {e}", target.host, target.port))?;
    let host = if target.host.contains(':') {
        format!("[{}]:{}", target.host, target.port)
    } else {
        format!("{}:{}", target.host, target.port)
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: corrald\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        target.path
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("cannot send the request: {e}"))?;
    // The status line is all that matters; it must come within the first 4 KiB.
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("cannot read the answer: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or("");
    let status = line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok());
    match status {
        Some(code) if (200..300).contains(&code) => Ok(()),
        Some(code) => Err(format!("{} answered {code}", target.url)),
        None => Err(format!(
            "{} did not answer HTTP: {:?}",
            target.url,
            line.chars().take(80).collect::<String>()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_scanning_goes_on_from_the_last_complete_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u.0.log");
        std::fs::write(&path, "old: listening on 1\n").unwrap();
        let start = std::fs::metadata(&path).unwrap().len();
        // What was there before the spawn does not count.
        let (outcome, offset) = scan_log(&path, start, r"listening on \d+");
        assert!(outcome.is_err());
        assert_eq!(offset, start);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("booting\nlistening on 8");
        std::fs::write(&path, &text).unwrap();
        let (outcome, offset) = scan_log(&path, start, r"listening on \d+");
        assert!(outcome.is_err(), "an unfinished line is not looked at yet");
        assert_eq!(offset, start + "booting\n".len() as u64);
        text.push_str("080\n");
        std::fs::write(&path, &text).unwrap();
        assert_eq!(scan_log(&path, offset, r"listening on \d+").0, Ok(()));
        // Truncated by rotation: from the start again.
        std::fs::write(&path, "listening on 9\n").unwrap();
        assert_eq!(scan_log(&path, offset, r"listening on 9").0, Ok(()));
    }
}
