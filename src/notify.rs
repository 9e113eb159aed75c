//! Service manager readiness (the sd_notify protocol, without libsystemd):
//! `READY=1` once the queues are bound, `RELOADING=1` and `READY=1` around a
//! SIGHUP reload, `STOPPING=1` at shutdown, `STATUS=` lines for
//! `systemctl status`.
//!
//! The protocol is one datagram per message to the AF_UNIX socket named by
//! `$NOTIFY_SOCKET` (a path, or an abstract name when it starts with `@`).
//! Without that variable (not started by systemd with `Type=notify`) every
//! call does nothing. A unit with `Type=notify` counts as started only after
//! `READY=1`, so a daemon that dies before binding its queue makes
//! `systemctl start` fail instead of reporting success.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Why a notification could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("bad NOTIFY_SOCKET {0:?}: {1}")]
    Address(String, std::io::Error),
    #[error("cannot send to NOTIFY_SOCKET {0:?}: {1}")]
    Send(String, std::io::Error),
}

/// Where notifications go, if anywhere.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(String, SocketAddr)>,
}

impl Notifier {
    /// The notifier for `$NOTIFY_SOCKET`; inactive when it is unset or empty.
    pub fn from_env() -> Result<Notifier, NotifyError> {
        match std::env::var("NOTIFY_SOCKET") {
            Ok(s) if !s.is_empty() => Notifier::to(&s),
            _ => Ok(Notifier { target: None }),
        }
    }

    /// The notifier for a given socket name (`/path` or `@abstract`).
    pub fn to(name: &str) -> Result<Notifier, NotifyError> {
        let addr = match name.strip_prefix('@') {
            Some(abs) => SocketAddr::from_abstract_name(abs.as_bytes()),
            None => SocketAddr::from_pathname(name),
        }
        .map_err(|e| NotifyError::Address(name.to_string(), e))?;
        Ok(Notifier { target: Some((name.to_string(), addr)) })
    }

    /// Whether a service manager listens.
    pub fn active(&self) -> bool {
        self.target.is_some()
    }

    /// Send one message (`KEY=value` lines). Does nothing when inactive.
    pub fn send(&self, msg: &str) -> Result<(), NotifyError> {
        let Some((name, addr)) = &self.target else { return Ok(()) };
        let err = |e| NotifyError::Send(name.clone(), e);
        let sock = UnixDatagram::unbound().map_err(err)?;
        sock.send_to_addr(msg.as_bytes(), addr).map_err(err)?;
        Ok(())
    }

    /// The daemon is serving: its queues are bound.
    pub fn ready(&self, status: &str) -> Result<(), NotifyError> {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)))
    }

    /// A reload begins (follow with [`Notifier::ready`]).
    pub fn reloading(&self) -> Result<(), NotifyError> {
        self.send("RELOADING=1\nSTATUS=reloading the policy")
    }

    /// Shutdown begins.
    pub fn stopping(&self) -> Result<(), NotifyError> {
        self.send("STOPPING=1\nSTATUS=stopping: answering queued packets")
    }
}

/// A STATUS= value must not contain a newline (it would start a new field).
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// Send and log a failure: a lost notification is not fatal (systemd then
/// times the start out, which is the safe side).
pub fn log_err(r: Result<(), NotifyError>) {
    if let Err(e) = r {
        log::warn!("{e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn messages_reach_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::to(path.to_str().unwrap()).unwrap();
        assert!(n.active());
        n.ready("running: policy\nx").unwrap();
        assert_eq!(recv(&server), "READY=1\nSTATUS=running: policy x");
        n.reloading().unwrap();
        assert!(recv(&server).starts_with("RELOADING=1\n"));
        n.stopping().unwrap();
        assert!(recv(&server).starts_with("STOPPING=1\n"));
    }

    #[test]
    fn messages_reach_an_abstract_socket() {
        let name = format!("labelgate-notify-test-{}", std::process::id());
        let server = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        Notifier::to(&format!("@{name}")).unwrap().ready("up").unwrap();
        assert_eq!(recv(&server), "READY=1\nSTATUS=up");
    }

    #[test]
    fn inactive_without_a_socket_and_errors_when_nobody_listens() {
        let n = Notifier { target: None };
        assert!(!n.active());
        n.ready("x").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let n = Notifier::to(dir.path().join("absent").to_str().unwrap()).unwrap();
        assert!(matches!(n.ready("x"), Err(NotifyError::Send(..))));
    }
}
