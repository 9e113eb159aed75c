//! The kernel's process events connector (`NETLINK_CONNECTOR`,
//! `CN_IDX_PROC`): a multicast of every `fork`, `exec` and `exit` on the
//! host, used by `--offload` to learn that a process in an offloaded cgroup
//! ran a new program. Joining needs CAP_NET_ADMIN, and the connector exists
//! only in the initial network namespace: [`ProcEvents::open`] must run on
//! a thread in that namespace (see [`super::netns::in_netns`]).
//!
//! Only `exec` is parsed; every other event is skipped. An `ENOBUFS` on
//! receive (events were lost) is reported as [`Received::Overrun`].

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use super::nlmsg::{messages, u32_ne as u32_at, HDRLEN as NLMSG_HDRLEN};

const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_EVENT_EXEC: u32 = 0x0000_0002;
/// `struct cn_msg`: id (idx, val), seq, ack, len (u16), flags (u16).
const CN_MSG_LEN: usize = 20;
const RX_SLOT: usize = 1024;

/// What one receive gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// The thread group ids that ran `exec` (possibly none: the wait timed
    /// out, or only other events came).
    Execs(Vec<u32>),
    /// The socket's buffer overflowed: events were lost.
    Overrun,
}

/// A socket subscribed to the process events.
pub struct ProcEvents {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl ProcEvents {
    /// Open, join the group, ask the kernel to send events, and bound each
    /// wait to `timeout`.
    pub fn open(rcvbuf: usize, timeout: std::time::Duration) -> io::Result<ProcEvents> {
        let fd = super::netlink_socket(libc::NETLINK_CONNECTOR)?;
        super::join_netlink_group(fd.as_raw_fd(), CN_IDX_PROC)?;
        let _ = super::set_rcvbuf(fd.as_raw_fd(), rcvbuf);
        super::set_recv_timeout(fd.as_raw_fd(), timeout)?;
        super::send_to_kernel(fd.as_raw_fd(), &listen_request())?;
        Ok(ProcEvents { fd, buf: vec![0u8; RX_SLOT * super::MAX_RECV_SLOTS] })
    }

    /// Wait (at most the timeout) for events and read what is there.
    pub fn recv(&mut self) -> io::Result<Received> {
        let mut out = Vec::new();
        let whole = super::recv_notifications(self.fd.as_raw_fd(), &mut self.buf, RX_SLOT, |d| {
            out.extend(parse_execs(d));
        })?;
        Ok(if whole { Received::Execs(out) } else { Received::Overrun })
    }
}

/// The `PROC_CN_MCAST_LISTEN` request: netlink header, cn_msg, the op.
fn listen_request() -> Vec<u8> {
    let len = NLMSG_HDRLEN + CN_MSG_LEN + 4;
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&(libc::NLMSG_DONE as u16).to_ne_bytes());
    m.extend_from_slice(&0u16.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // seq
    m.extend_from_slice(&0u32.to_ne_bytes()); // pid
    m.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
    m.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // seq
    m.extend_from_slice(&0u32.to_ne_bytes()); // ack
    m.extend_from_slice(&4u16.to_ne_bytes()); // len
    m.extend_from_slice(&0u16.to_ne_bytes()); // flags
    m.extend_from_slice(&PROC_CN_MCAST_LISTEN.to_ne_bytes());
    m
}

/// The thread group ids of the `exec` events in one datagram. Bytes that do
/// not parse give nothing (never a panic).
pub fn parse_execs(buf: &[u8]) -> Vec<u32> {
    messages(buf).filter_map(|m| exec_tgid(m.body())).collect()
}

/// The thread group id of one message body (cn_msg, then proc_event:
/// what (u32), cpu (u32), timestamp (u64), then for exec: process_pid,
/// process_tgid), if it is an `exec` event.
fn exec_tgid(body: &[u8]) -> Option<u32> {
    if u32_at(body, 0)? != CN_IDX_PROC || u32_at(body, CN_MSG_LEN)? != PROC_EVENT_EXEC {
        return None;
    }
    u32_at(body, CN_MSG_LEN + 16 + 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(what: u32, pid: u32, tgid: u32) -> Vec<u8> {
        let len = NLMSG_HDRLEN + CN_MSG_LEN + 24;
        let mut m = vec![0u8; len];
        m[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
        m[16..20].copy_from_slice(&CN_IDX_PROC.to_ne_bytes());
        m[20..24].copy_from_slice(&CN_VAL_PROC.to_ne_bytes());
        m[36..40].copy_from_slice(&what.to_ne_bytes());
        m[52..56].copy_from_slice(&pid.to_ne_bytes());
        m[56..60].copy_from_slice(&tgid.to_ne_bytes());
        m
    }

    #[test]
    fn exec_events_give_their_thread_group_and_others_nothing() {
        let mut buf = event(PROC_EVENT_EXEC, 41, 40);
        buf.extend(event(1, 50, 50)); // fork
        buf.extend(event(PROC_EVENT_EXEC, 60, 60));
        assert_eq!(parse_execs(&buf), vec![40, 60]);
        let cut = event(PROC_EVENT_EXEC, 41, 40);
        assert!(parse_execs(&cut[..50]).is_empty(), "a cut event gives nothing");
        assert!(parse_execs(&[0xff; 7]).is_empty());
    }

    #[test]
    fn the_listen_request_is_one_connector_message() {
        let m = listen_request();
        assert_eq!(u32_at(&m, 0), Some(m.len() as u32));
        assert_eq!(u32_at(&m, 16), Some(CN_IDX_PROC));
        assert_eq!(u32_at(&m, m.len() - 4), Some(PROC_CN_MCAST_LISTEN));
    }
}
