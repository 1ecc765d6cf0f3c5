//! systemd's readiness protocol (`sd_notify(3)`), in the few lines it takes:
//! one datagram of `KEY=value` lines to the Unix socket named by
//! `NOTIFY_SOCKET`. With `Type=notify` (deploy/chouquette.service) systemd
//! counts the unit started only at `READY=1`, which `serve` sends once both
//! listeners are bound and the node is built, so units ordered after it and
//! a `systemctl start` that waits see a gateway that accepts connections.
//!
//! Without `NOTIFY_SOCKET` (not under systemd, or another `Type=`) nothing is
//! sent. A failure to send is returned for the caller to log: systemd then
//! times the start out, which says more than a gateway refusing to run.

use std::ffi::OsStr;
use std::io;
use std::os::unix::net::UnixDatagram;

/// The environment variable systemd sets for a `Type=notify` service.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `state` (e.g. `"READY=1"`) to `NOTIFY_SOCKET` if it is set;
/// `Ok(false)` when it is not.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os(NOTIFY_SOCKET) {
        Some(socket) if !socket.is_empty() => notify_to(&socket, state).map(|()| true),
        _ => Ok(false),
    }
}

/// Sends `state` to the socket `socket`: a path, or `@name` for a Linux
/// abstract socket (systemd uses either).
pub fn notify_to(socket: &OsStr, state: &str) -> io::Result<()> {
    let sender = UnixDatagram::unbound()?;
    let bytes = socket.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        send_abstract(&sender, name, state)?
    } else {
        sender.send_to(state.as_bytes(), socket)?
    };
    if sent == state.len() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "notification cut short",
        ))
    }
}

#[cfg(target_os = "linux")]
fn send_abstract(sender: &UnixDatagram, name: &[u8], state: &str) -> io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sender.send_to_addr(state.as_bytes(), &address)
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_: &UnixDatagram, _: &[u8], _: &str) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract sockets are Linux only",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_socket_gets_the_state() {
        let dir = std::env::temp_dir().join(format!("chouquette-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let systemd = UnixDatagram::bind(&path).expect("bind");
        notify_to(path.as_os_str(), "READY=1").expect("sent");
        let mut buf = [0u8; 64];
        let n = systemd.recv(&mut buf).expect("received");
        assert_eq!(&buf[..n], b"READY=1");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_abstract_socket_gets_the_state() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("chouquette-notify-test-{}", std::process::id());
        let address =
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("name");
        let systemd = UnixDatagram::bind_addr(&address).expect("bind");
        notify_to(OsStr::new(&format!("@{name}")), "STOPPING=1").expect("sent");
        let mut buf = [0u8; 64];
        let n = systemd.recv(&mut buf).expect("received");
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn a_missing_socket_is_an_error() {
        let path = std::env::temp_dir().join("chouquette-notify-nobody-listens.sock");
        assert!(notify_to(path.as_os_str(), "READY=1").is_err());
    }
}
