//! The NFQUEUE netlink protocol (nfnetlink_queue), spoken directly.
//!
//! Why not only the `nfq` crate: its configuration calls wait for the
//! kernel's ACK by reading the socket and discard any packet messages that
//! arrive meanwhile, so a configuration change under traffic (as at shutdown)
//! would leave packets without a verdict; it also hides the socket descriptor
//! (no poll, no SO_RCVBUFFORCE) and has no batch verdicts or connmark
//! (NFQA_CT). This module keeps every packet message that arrives while it
//! waits for an ACK, and offers those features. Message building and parsing
//! are safe code over byte slices; the only `unsafe` is one `recv` (the
//! socket is opened, read with `recvmmsg` and given `SO_RCVTIMEO` through
//! `sys`). The kernel's per-queue figures in
//! `/proc/net/netfilter/nfnetlink_queue` ([`KernelQueueStats`]) are read
//! here too.
//!
//! Over 600 lines on purpose: one protocol (configuration, packet messages,
//! verdicts, the ACK wait) whose parts share the message layout; about 110
//! lines are its tests.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

use super::nlmsg::{self, HDRLEN as NLMSG_HDRLEN};

const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQNL_MSG_VERDICT_BATCH: u16 = 3;

const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;

const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_CFG_CMD_UNBIND: u8 = 2;
const NFQNL_COPY_PACKET: u8 = 2;

/// Queue configuration flags (NFQA_CFG_F_*).
pub const F_FAIL_OPEN: u32 = 1 << 0;
pub const F_CONNTRACK: u32 = 1 << 1;
pub const F_GSO: u32 = 1 << 2;
pub const F_UID_GID: u32 = 1 << 3;
pub const F_SECCTX: u32 = 1 << 4;

const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_MARK: u16 = 3;
const NFQA_IFINDEX_INDEV: u16 = 5;
const NFQA_IFINDEX_OUTDEV: u16 = 6;
const NFQA_PAYLOAD: u16 = 10;
const NFQA_CT: u16 = 11;
const NFQA_CT_INFO: u16 = 12;
const NFQA_CAP_LEN: u16 = 13;
const NFQA_UID: u16 = 16;
const NFQA_GID: u16 = 17;
const NFQA_SECCTX: u16 = 18;
const CTA_MARK: u16 = 8;
const CTA_MARK_MASK: u16 = 21;
const NLA_F_NESTED: u16 = 1 << 15;
const NLA_TYPE_MASK: u16 = 0x3fff;

const NFGEN_HDRLEN: usize = 4;

/// A verdict the kernel understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Drop,
    Accept,
    /// Send the packet through the same hook again (with the new mark).
    Repeat,
}

impl Verdict {
    fn code(self) -> u32 {
        match self {
            Verdict::Drop => 0,
            Verdict::Accept => 1,
            Verdict::Repeat => 4,
        }
    }
}

/// One queued packet, borrowed from the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PacketMsg<'a> {
    pub queue: u16,
    pub id: u32,
    pub hw_protocol: u16,
    pub hook: u8,
    pub mark: u32,
    pub indev: u32,
    pub outdev: u32,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub secctx: Option<&'a str>,
    /// Conntrack info (IP_CT_*), when NFQA_CFG_F_CONNTRACK is on.
    pub ct_info: Option<u32>,
    pub payload: &'a [u8],
    /// Original length when the copy range truncated the payload.
    pub cap_len: Option<u32>,
}

/// Why a message from the kernel could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MsgError {
    #[error("truncated netlink message")]
    Truncated,
    #[error("packet message without a packet header")]
    NoHeader,
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
fn be16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
fn be32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(off..off + 4)?.try_into().ok()?))
}
const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Iterate `(type, payload)` over a run of netlink attributes.
fn attrs(mut b: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), MsgError>> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = usize::from(u16_at(b, 0)?);
        let ty = u16_at(b, 2)? & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            b = &[];
            return Some(Err(MsgError::Truncated));
        }
        let payload = b.get(4..len)?;
        b = b.get(align4(len)..).unwrap_or(&[]);
        Some(Ok((ty, payload)))
    })
}

/// Parse one NFQNL_MSG_PACKET body (after the netlink header).
pub fn parse_packet(body: &[u8]) -> Result<PacketMsg<'_>, MsgError> {
    let queue = be16_at(body, 2).ok_or(MsgError::Truncated)?;
    let mut p = PacketMsg { queue, ..Default::default() };
    let mut have_hdr = false;
    for a in attrs(body.get(NFGEN_HDRLEN..).unwrap_or(&[])) {
        let (ty, v) = a?;
        match ty {
            NFQA_PACKET_HDR => {
                p.id = be32_at(v, 0).ok_or(MsgError::Truncated)?;
                p.hw_protocol = be16_at(v, 4).ok_or(MsgError::Truncated)?;
                p.hook = *v.get(6).ok_or(MsgError::Truncated)?;
                have_hdr = true;
            }
            NFQA_MARK => p.mark = be32_at(v, 0).ok_or(MsgError::Truncated)?,
            NFQA_IFINDEX_INDEV => p.indev = be32_at(v, 0).ok_or(MsgError::Truncated)?,
            NFQA_IFINDEX_OUTDEV => p.outdev = be32_at(v, 0).ok_or(MsgError::Truncated)?,
            NFQA_UID => p.uid = Some(be32_at(v, 0).ok_or(MsgError::Truncated)?),
            NFQA_GID => p.gid = Some(be32_at(v, 0).ok_or(MsgError::Truncated)?),
            NFQA_CT_INFO => p.ct_info = Some(be32_at(v, 0).ok_or(MsgError::Truncated)?),
            NFQA_CAP_LEN => p.cap_len = Some(be32_at(v, 0).ok_or(MsgError::Truncated)?),
            NFQA_PAYLOAD => p.payload = v,
            NFQA_SECCTX => {
                let s = v.split(|b| *b == 0).next().unwrap_or(&[]);
                p.secctx = std::str::from_utf8(s).ok();
            }
            _ => {}
        }
    }
    if !have_hdr {
        return Err(MsgError::NoHeader);
    }
    Ok(p)
}

/// Builds one netlink message in a reusable buffer.
struct MsgBuf(Vec<u8>);

impl MsgBuf {
    fn start(&mut self, msg_type: u16, flags: u16, seq: u32, queue: u16) {
        self.0.clear();
        self.0.extend_from_slice(&0u32.to_ne_bytes()); // length, patched in finish()
        self.0.extend_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | msg_type).to_ne_bytes());
        self.0.extend_from_slice(&flags.to_ne_bytes());
        self.0.extend_from_slice(&seq.to_ne_bytes());
        self.0.extend_from_slice(&0u32.to_ne_bytes());
        // nfgenmsg: family AF_UNSPEC, version 0, res_id = queue number (big endian).
        self.0.extend_from_slice(&[0, 0]);
        self.0.extend_from_slice(&queue.to_be_bytes());
    }

    fn attr(&mut self, ty: u16, payload: &[u8]) {
        let len = 4 + payload.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&ty.to_ne_bytes());
        self.0.extend_from_slice(payload);
        self.0.resize(align4(self.0.len()), 0);
    }

    fn nested_start(&mut self, ty: u16) -> usize {
        let at = self.0.len();
        self.0.extend_from_slice(&0u16.to_ne_bytes());
        self.0.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        at
    }

    fn nested_end(&mut self, at: usize) {
        let len = (self.0.len() - at) as u16;
        if let Some(slot) = self.0.get_mut(at..at + 2) {
            slot.copy_from_slice(&len.to_ne_bytes());
        }
    }

    fn finish(&mut self) -> &[u8] {
        let len = self.0.len() as u32;
        if let Some(slot) = self.0.get_mut(0..4) {
            slot.copy_from_slice(&len.to_ne_bytes());
        }
        &self.0
    }
}

/// Settings applied when binding a queue.
#[derive(Clone, Debug)]
pub struct QueueParams {
    pub copy_range: u32,
    pub max_len: u32,
    /// NFQA_CFG_F_* flags to turn on (others are turned off).
    pub flags: u32,
}

/// An NFQUEUE netlink socket bound to one queue number.
pub struct QueueSocket {
    fd: OwnedFd,
    queue: u16,
    seq: u32,
    tx: MsgBuf,
    rx: Vec<u8>,
    /// `slot_count` receive slots of `slot_len` bytes each, for reading
    /// several datagrams with one `recvmmsg`.
    slots: Vec<u8>,
    slot_len: usize,
    slot_count: usize,
    /// Packet messages that arrived while waiting for a configuration ACK.
    pending: VecDeque<Vec<u8>>,
    /// The datagrams of one [`recv`](Self::recv) batch, back to back, and
    /// where each ends.
    batch: Vec<u8>,
    ends: Vec<usize>,
    /// A receive error met after part of a batch was read: reported by the
    /// next `recv`, once the packets read before it had their turn.
    deferred: Option<io::Error>,
}

const NETLINK_ACK_TIMEOUT_MS: i32 = 5000;

/// Datagrams read per `recvmmsg` at most.
const MAX_SLOTS: usize = super::MAX_RECV_SLOTS;

/// Room in a receive slot besides the copied packet bytes: the netlink and
/// nfnetlink headers and every attribute the queue may add (security
/// context, conntrack, interface and hardware addresses...).
const SLOT_HEADROOM: usize = 8192;

/// The receive slots for `copy_range`: (slot length, slot count), at most
/// 4 MiB in all (only the pages datagrams are written to become resident).
fn slot_shape(copy_range: u32) -> (usize, usize) {
    let len = (copy_range as usize).min(65535) + SLOT_HEADROOM;
    (len, ((4 << 20) / len).clamp(1, MAX_SLOTS))
}

impl QueueSocket {
    /// Open a socket and bind it to `queue` with `params`.
    pub fn bind(queue: u16, params: &QueueParams) -> io::Result<QueueSocket> {
        let fd = super::netlink_socket(libc::NETLINK_NETFILTER)?;
        let (slot_len, slot_count) = slot_shape(params.copy_range);
        let mut s = QueueSocket {
            fd,
            queue,
            seq: 0,
            tx: MsgBuf(Vec::with_capacity(256)),
            rx: vec![0u8; 65536 + 8192],
            slots: vec![0u8; slot_len * slot_count],
            slot_len,
            slot_count,
            pending: VecDeque::new(),
            batch: Vec::new(),
            ends: Vec::new(),
            deferred: None,
        };
        s.command(NFQNL_CFG_CMD_BIND)?;
        s.config(|m| {
            let mut params_attr = params.copy_range.to_be_bytes().to_vec();
            params_attr.push(NFQNL_COPY_PACKET);
            m.attr(NFQA_CFG_PARAMS, &params_attr);
            m.attr(NFQA_CFG_QUEUE_MAXLEN, &params.max_len.to_be_bytes());
            m.attr(NFQA_CFG_FLAGS, &params.flags.to_be_bytes());
            m.attr(NFQA_CFG_MASK, &(F_FAIL_OPEN | F_CONNTRACK | F_GSO | F_UID_GID | F_SECCTX).to_be_bytes());
        })?;
        Ok(s)
    }

    pub fn queue(&self) -> u16 {
        self.queue
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn command(&mut self, cmd: u8) -> io::Result<()> {
        self.config(|m| m.attr(NFQA_CFG_CMD, &[cmd, 0, 0, 0]))
    }

    /// Change the queue's maximum length. Packet messages that arrive while
    /// waiting for the kernel's answer are kept for [`recv`](Self::recv).
    pub fn set_max_len(&mut self, len: u32) -> io::Result<()> {
        self.config(|m| m.attr(NFQA_CFG_QUEUE_MAXLEN, &len.to_be_bytes()))
    }

    /// Unbind the queue. The kernel drops whatever is still queued, so call
    /// this only after every received packet has its verdict.
    pub fn unbind(&mut self) -> io::Result<()> {
        self.command(NFQNL_CFG_CMD_UNBIND)
    }

    fn config(&mut self, fill: impl FnOnce(&mut MsgBuf)) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
        self.tx.start(NFQNL_MSG_CONFIG, flags, seq, self.queue);
        fill(&mut self.tx);
        self.send()?;
        self.wait_ack(seq)
    }

    fn send(&mut self) -> io::Result<()> {
        let fd = self.fd.as_raw_fd();
        super::send_to_kernel(fd, self.tx.finish())
    }

    fn recv_raw(&mut self, flags: libc::c_int) -> io::Result<usize> {
        // SAFETY: `rx` is valid for writes of its length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), self.rx.as_mut_ptr().cast(), self.rx.len(), flags) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// `recvmmsg(2)` of up to `want` (≤ `slot_count`) datagrams into the
    /// slots: how many were read; each one's length and whether it was
    /// truncated go into `lens`.
    fn recv_many(
        &mut self,
        want: usize,
        flags: libc::c_int,
        lens: &mut [(usize, bool); MAX_SLOTS],
    ) -> io::Result<usize> {
        let lens = lens.get_mut(..want.min(self.slot_count)).unwrap_or_default();
        super::recv_many(self.fd.as_raw_fd(), &mut self.slots, self.slot_len, flags, lens)
    }

    fn wait_ack(&mut self, seq: u32) -> io::Result<()> {
        loop {
            if !super::poll_readable(self.fd(), NETLINK_ACK_TIMEOUT_MS)? {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer from nfnetlink_queue"));
            }
            let n = match self.recv_raw(libc::MSG_DONTWAIT) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
            let mut answer = None;
            for m in whole_msgs(self.rx.get(..n).unwrap_or(&[])) {
                if m.ty == nlmsg::ERROR && m.seq == seq {
                    answer = Some(m.errno().unwrap_or(0));
                } else if m.ty == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET {
                    self.pending.push_back(m.bytes.to_vec());
                }
            }
            if let Some(errno) = answer {
                return if errno == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(errno)) };
            }
        }
    }

    /// Make [`recv`](Self::recv) with `wait` return empty-handed after
    /// `timeout` without packets.
    pub fn set_wait_timeout(&self, timeout: std::time::Duration) -> io::Result<()> {
        super::set_recv_timeout(self.fd(), timeout)
    }

    /// Read up to `max` queued packets, then call `f` for each with the
    /// instant the last of them was read (every packet of the batch was
    /// queued before it) and `bad` for each packet message that does not
    /// parse. Messages held back while waiting for a configuration ACK come
    /// first. `wait`: when none is held back, the first read blocks (up to
    /// the [`set_wait_timeout`](Self::set_wait_timeout) bound, after which
    /// nothing is handled), so an idle thread needs no `poll` before it;
    /// the rest never block. Returns how many packet messages were handled.
    /// A receive error after part of a batch was read is returned by the
    /// next call, so that the packets read before it are still handed out.
    pub fn recv(
        &mut self,
        max: usize,
        wait: bool,
        mut f: impl FnMut(&PacketMsg<'_>, Instant),
        mut bad: impl FnMut(MsgError),
    ) -> io::Result<usize> {
        if let Some(e) = self.deferred.take() {
            return Err(e);
        }
        self.batch.clear();
        self.ends.clear();
        // Held-back packet messages first (each a whole message, as it came
        // in), then datagrams from the socket; each datagram may hold
        // several messages, of which only packet messages count to `max`.
        let mut packets = 0;
        while packets < max {
            let Some(msg) = self.pending.pop_front() else {
                break;
            };
            self.batch.extend_from_slice(&msg);
            self.ends.push(self.batch.len());
            packets += 1;
        }
        // One recvmmsg reads what is waiting (up to the slots and `max`);
        // fewer datagrams than asked for means the socket is drained, so an
        // idle socket costs no extra call. With `wait` the first call
        // blocks until one datagram is there (MSG_WAITFORONE).
        let mut block = wait && packets == 0;
        while packets < max {
            let flags = if std::mem::take(&mut block) { libc::MSG_WAITFORONE } else { libc::MSG_DONTWAIT };
            let want = (max - packets).min(self.slot_count);
            let mut lens = [(0usize, false); MAX_SLOTS];
            let got = match self.recv_many(want, flags, &mut lens) {
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if self.ends.is_empty() => return Err(e),
                Err(e) => {
                    self.deferred = Some(e);
                    break;
                }
            };
            for (i, &(n, truncated)) in lens.iter().take(got).enumerate() {
                if truncated {
                    // Cannot happen with the slots sized for the copy range;
                    // its packet id may be unreadable, so say so loudly.
                    bad(MsgError::Truncated);
                    continue;
                }
                let from = self.batch.len();
                let slot = self.slots.get(i * self.slot_len..i * self.slot_len + n).unwrap_or(&[]);
                self.batch.extend_from_slice(slot);
                packets += packet_msgs(self.batch.get(from..).unwrap_or(&[])).count();
                self.ends.push(self.batch.len());
            }
            if got < want {
                break;
            }
        }
        let received = Instant::now();

        let mut delivered = 0;
        let mut start = 0;
        for &end in &self.ends {
            for msg in packet_msgs(self.batch.get(start..end).unwrap_or(&[])) {
                match parse_packet(msg.get(NLMSG_HDRLEN..).unwrap_or(&[])) {
                    Ok(p) => f(&p, received),
                    Err(e) => bad(e),
                }
                delivered += 1;
            }
            start = end;
        }
        Ok(delivered)
    }

    /// Give one packet its verdict, optionally setting the packet mark and
    /// the connection mark.
    pub fn verdict(&mut self, id: u32, v: Verdict, mark: Option<u32>, connmark: Option<(u32, u32)>) -> io::Result<()> {
        self.verdict_msg(NFQNL_MSG_VERDICT, id, v, mark, connmark)
    }

    /// Give every packet with an id up to `id` the same verdict.
    pub fn verdict_batch(&mut self, id: u32, v: Verdict, mark: Option<u32>) -> io::Result<()> {
        self.verdict_msg(NFQNL_MSG_VERDICT_BATCH, id, v, mark, None)
    }

    fn verdict_msg(
        &mut self,
        ty: u16,
        id: u32,
        v: Verdict,
        mark: Option<u32>,
        connmark: Option<(u32, u32)>,
    ) -> io::Result<()> {
        self.tx.start(ty, libc::NLM_F_REQUEST as u16, 0, self.queue);
        let mut hdr = [0u8; 8];
        hdr[0..4].copy_from_slice(&v.code().to_be_bytes());
        hdr[4..8].copy_from_slice(&id.to_be_bytes());
        self.tx.attr(NFQA_VERDICT_HDR, &hdr);
        if let Some(m) = mark {
            self.tx.attr(NFQA_MARK, &m.to_be_bytes());
        }
        if let Some((value, mask)) = connmark {
            let at = self.tx.nested_start(NFQA_CT);
            self.tx.attr(CTA_MARK, &value.to_be_bytes());
            self.tx.attr(CTA_MARK_MASK, &mask.to_be_bytes());
            self.tx.nested_end(at);
        }
        self.send()
    }
}

/// The packet messages (header included) of one datagram, in order.
fn packet_msgs(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    whole_msgs(buf).filter(|m| m.ty == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET).map(|m| m.bytes)
}

/// The messages of one datagram up to the first one its length says is
/// longer than the datagram (which is left out).
fn whole_msgs(buf: &[u8]) -> impl Iterator<Item = nlmsg::Nlmsg<'_>> {
    nlmsg::messages(buf).take_while(|m| !m.cut)
}

/// One queue's line of `/proc/net/netfilter/nfnetlink_queue`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelQueueStats {
    pub queue: u16,
    pub portid: u32,
    pub waiting: u64,
    pub queue_dropped: u64,
    pub user_dropped: u64,
    pub id_sequence: u64,
}

impl KernelQueueStats {
    /// Parse the file's text and pick `queue`'s line.
    pub fn parse(text: &str, queue: u16) -> Option<KernelQueueStats> {
        text.lines().find_map(|l| {
            let v: Vec<u64> = l.split_whitespace().map(|x| x.parse().ok()).collect::<Option<_>>()?;
            let (&q, &portid, &waiting, &dropped, &user, &seq) =
                (v.first()?, v.get(1)?, v.get(2)?, v.get(5)?, v.get(6)?, v.get(7)?);
            (q == u64::from(queue)).then_some(KernelQueueStats {
                queue,
                portid: u32::try_from(portid).ok()?,
                waiting,
                queue_dropped: dropped,
                user_dropped: user,
                id_sequence: seq,
            })
        })
    }

    /// Read the current figures for `queue` (in this network namespace).
    pub fn read(queue: u16) -> Option<KernelQueueStats> {
        let text = std::fs::read_to_string("/proc/net/netfilter/nfnetlink_queue").ok()?;
        Self::parse(&text, queue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_queue_lines() {
        let text = "    0  17589     0 2   256     0     0       10  1\n    3  42 5 2 128 7 8 99 1\n";
        let k = KernelQueueStats::parse(text, 3).unwrap();
        assert_eq!((k.portid, k.waiting, k.queue_dropped, k.user_dropped, k.id_sequence), (42, 5, 7, 8, 99));
        assert_eq!(KernelQueueStats::parse(text, 0).unwrap().id_sequence, 10);
        assert_eq!(KernelQueueStats::parse(text, 1), None);
        assert_eq!(KernelQueueStats::parse("garbage 1 2\n", 0), None);
    }

    fn packet_msg(attrs_in: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut m = MsgBuf(Vec::new());
        m.start(NFQNL_MSG_PACKET, 0, 0, 7);
        for (t, v) in attrs_in {
            m.attr(*t, v);
        }
        m.finish().to_vec()
    }

    #[test]
    fn parses_a_kernel_packet_message() {
        let mut hdr = 0x0102_0304u32.to_be_bytes().to_vec();
        hdr.extend_from_slice(&0x0800u16.to_be_bytes());
        hdr.push(3);
        let msg = packet_msg(&[
            (NFQA_PACKET_HDR, hdr),
            (NFQA_IFINDEX_OUTDEV, 1u32.to_be_bytes().to_vec()),
            (NFQA_UID, 48u32.to_be_bytes().to_vec()),
            (NFQA_GID, 49u32.to_be_bytes().to_vec()),
            (NFQA_SECCTX, b"system_u:object_r:postgresql_packet_t:s0\0".to_vec()),
            (NFQA_PAYLOAD, vec![0x45, 0, 0, 20]),
        ]);
        let m = whole_msgs(&msg).next().unwrap();
        assert_eq!(m.ty, (3 << 8) | NFQNL_MSG_PACKET);
        let p = parse_packet(m.body()).unwrap();
        assert_eq!((p.queue, p.id, p.hook, p.outdev), (7, 0x0102_0304, 3, 1));
        assert_eq!((p.uid, p.gid), (Some(48), Some(49)));
        assert_eq!(p.secctx, Some("system_u:object_r:postgresql_packet_t:s0"));
        assert_eq!(p.payload, &[0x45, 0, 0, 20]);
    }

    #[test]
    fn refuses_lying_lengths_without_panicking() {
        let mut msg = packet_msg(&[(NFQA_PAYLOAD, vec![1, 2, 3, 4])]);
        assert_eq!(parse_packet(&msg[NLMSG_HDRLEN..]), Err(MsgError::NoHeader));
        let at = NLMSG_HDRLEN + NFGEN_HDRLEN;
        msg[at..at + 2].copy_from_slice(&200u16.to_ne_bytes());
        assert_eq!(parse_packet(&msg[NLMSG_HDRLEN..]), Err(MsgError::Truncated));
        assert_eq!(whole_msgs(&[1, 2, 3]).next(), None);
        let mut huge = msg.clone();
        huge[0..4].copy_from_slice(&9999u32.to_ne_bytes());
        assert_eq!(whole_msgs(&huge).next(), None);
        assert_eq!(packet_msgs(&[msg.clone(), huge].concat()).collect::<Vec<_>>(), vec![&msg[..]]);
    }

    #[test]
    fn verdict_with_connmark_nests_cta_mark() {
        let mut m = MsgBuf(Vec::new());
        m.start(NFQNL_MSG_VERDICT, 1, 0, 2);
        let at = m.nested_start(NFQA_CT);
        m.attr(CTA_MARK, &0x10u32.to_be_bytes());
        m.nested_end(at);
        let bytes = m.finish().to_vec();
        let body = &bytes[NLMSG_HDRLEN + NFGEN_HDRLEN..];
        let (ty, inner) = attrs(body).next().unwrap().unwrap();
        assert_eq!(ty, NFQA_CT);
        let (ty, v) = attrs(inner).next().unwrap().unwrap();
        assert_eq!((ty, v), (CTA_MARK, &0x10u32.to_be_bytes()[..]));
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = parse_packet(&bytes);
            let _ = packet_msgs(&bytes).count();
        }
    }
}
