//! The small part of the nf_tables netlink API that `--offload` needs:
//! add elements (with a timeout) to a set, delete elements, flush a set,
//! delete a table. Each call is one batch (`NFNL_MSG_BATCH_BEGIN` …
//! `NFNL_MSG_BATCH_END`), applied by the kernel as one transaction, and
//! waits for the kernel's answer to every message in it. Creating the
//! table, its sets and rules is left to `nft -f` (once, at start).
//!
//! The socket is bound to the network namespace of the thread that opens
//! it, like every netlink socket.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_DATA_VALUE: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;
const NFPROTO_INET: u8 = 1;
const RX_SLOT: usize = 8192;

/// One change, applied in a batch with others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change<'a> {
    /// Add `key` to `set` of `table` (family inet), expiring after
    /// `timeout_ms` (the set needs `flags timeout`).
    Add { table: &'a str, set: &'a str, key: &'a [u8], timeout_ms: u64 },
    /// Delete `key` from the set (absent: an error, `ENOENT`).
    Delete { table: &'a str, set: &'a str, key: &'a [u8] },
    /// Delete every element of the set.
    Flush { table: &'a str, set: &'a str },
    /// Delete the whole table (absent: an error, `ENOENT`).
    DeleteTable { table: &'a str },
}

/// A netlink socket to nf_tables.
pub struct NftLink {
    fd: OwnedFd,
    seq: u32,
}

impl NftLink {
    /// Open a socket; each answer is waited for at most `timeout`.
    pub fn open(timeout: std::time::Duration) -> io::Result<NftLink> {
        let fd = super::netlink_socket(libc::NETLINK_NETFILTER)?;
        super::set_recv_timeout(fd.as_raw_fd(), timeout)?;
        Ok(NftLink { fd, seq: 0 })
    }

    /// Apply `changes` as one transaction: all or none. The first error
    /// the kernel reports is returned.
    pub fn apply(&mut self, changes: &[Change<'_>]) -> io::Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let first = self.seq.wrapping_add(1);
        let mut out = Vec::with_capacity(128 * (changes.len() + 2));
        batch_marker(&mut out, NFNL_MSG_BATCH_BEGIN, first);
        for (i, c) in changes.iter().enumerate() {
            encode(&mut out, c, first.wrapping_add(1).wrapping_add(i as u32));
        }
        let n = changes.len() as u32;
        batch_marker(&mut out, NFNL_MSG_BATCH_END, first.wrapping_add(1).wrapping_add(n));
        self.seq = first.wrapping_add(1).wrapping_add(n);
        super::send_to_kernel(self.fd.as_raw_fd(), &out)?;
        // Every message asked for an answer (NLM_F_ACK): wait for all of
        // them, or the first error (the kernel aborts the batch then).
        let mut pending: Vec<u32> = (0..n).map(|i| first.wrapping_add(1).wrapping_add(i)).collect();
        let mut rx = vec![0u8; RX_SLOT];
        let mut rounds = 0;
        while !pending.is_empty() {
            rounds += 1;
            if rounds > 4096 {
                return Err(io::Error::other("nf_tables: too many answers"));
            }
            let mut lens = [(0usize, false); 1];
            let got = super::recv_many(self.fd.as_raw_fd(), &mut rx, RX_SLOT, 0, &mut lens)?;
            if got == 0 {
                continue;
            }
            let [(len, _)] = lens;
            for (seq, code) in acks(rx.get(..len).unwrap_or_default()) {
                if code != 0 {
                    return Err(io::Error::from_raw_os_error(code));
                }
                pending.retain(|&s| s != seq);
            }
        }
        Ok(())
    }
}

/// The (seq, errno) of every `NLMSG_ERROR` in one datagram.
fn acks(buf: &[u8]) -> Vec<(u32, i32)> {
    super::nlmsg::messages(buf).filter_map(|m| Some((m.seq, m.errno()?))).collect()
}

/// Append a netlink header (its length patched by [`finish`]) and a
/// nfgenmsg; returns where the message starts.
fn header(out: &mut Vec<u8>, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> usize {
    let at = out.len();
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.push(family);
    out.push(0); // NFNETLINK_V0
    out.extend_from_slice(&res_id.to_be_bytes());
    at
}

fn finish(out: &mut [u8], at: usize) {
    let len = (out.len() - at) as u32;
    if let Some(b) = out.get_mut(at..at + 4) {
        b.copy_from_slice(&len.to_ne_bytes());
    }
}

fn batch_marker(out: &mut Vec<u8>, ty: u16, seq: u32) {
    let at = header(out, ty, libc::NLM_F_REQUEST as u16, seq, 0, NFNL_SUBSYS_NFTABLES);
    finish(out, at);
}

/// Start an attribute (its length patched by [`end_attr`]).
fn begin_attr(out: &mut Vec<u8>, ty: u16) -> usize {
    let at = out.len();
    out.extend_from_slice(&0u16.to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    at
}

fn end_attr(out: &mut Vec<u8>, at: usize) {
    let len = (out.len() - at) as u16;
    if let Some(b) = out.get_mut(at..at + 2) {
        b.copy_from_slice(&len.to_ne_bytes());
    }
    out.resize((out.len() + 3) & !3, 0);
}

fn attr(out: &mut Vec<u8>, ty: u16, value: &[u8]) {
    let at = begin_attr(out, ty);
    out.extend_from_slice(value);
    end_attr(out, at);
}

fn attr_str(out: &mut Vec<u8>, ty: u16, s: &str) {
    let at = begin_attr(out, ty);
    out.extend_from_slice(s.as_bytes());
    out.push(0);
    end_attr(out, at);
}

fn encode(out: &mut Vec<u8>, c: &Change<'_>, seq: u32) {
    let ack = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    let ty = |m: u16| (NFNL_SUBSYS_NFTABLES << 8) | m;
    match *c {
        Change::Add { table, set, key, .. } | Change::Delete { table, set, key } => {
            // One element of one set; an addition also carries its timeout.
            let (msg, flags, timeout_ms) = match *c {
                Change::Add { timeout_ms, .. } => {
                    (NFT_MSG_NEWSETELEM, ack | libc::NLM_F_CREATE as u16, Some(timeout_ms))
                }
                _ => (NFT_MSG_DELSETELEM, ack, None),
            };
            let at = header(out, ty(msg), flags, seq, NFPROTO_INET, 0);
            attr_str(out, NFTA_SET_ELEM_LIST_TABLE, table);
            attr_str(out, NFTA_SET_ELEM_LIST_SET, set);
            let list = begin_attr(out, NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED);
            let elem = begin_attr(out, NFTA_LIST_ELEM | NLA_F_NESTED);
            let k = begin_attr(out, NFTA_SET_ELEM_KEY | NLA_F_NESTED);
            attr(out, NFTA_DATA_VALUE, key);
            end_attr(out, k);
            if let Some(t) = timeout_ms {
                attr(out, NFTA_SET_ELEM_TIMEOUT, &t.to_be_bytes());
            }
            end_attr(out, elem);
            end_attr(out, list);
            finish(out, at);
        }
        Change::Flush { table, set } => {
            let at = header(out, ty(NFT_MSG_DELSETELEM), ack, seq, NFPROTO_INET, 0);
            attr_str(out, NFTA_SET_ELEM_LIST_TABLE, table);
            attr_str(out, NFTA_SET_ELEM_LIST_SET, set);
            finish(out, at);
        }
        Change::DeleteTable { table } => {
            let at = header(out, ty(NFT_MSG_DELTABLE), ack, seq, NFPROTO_INET, 0);
            attr_str(out, NFTA_TABLE_NAME, table);
            finish(out, at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::nlmsg::u32_ne as u32_at;

    #[test]
    fn an_add_is_framed_as_a_batch_of_nested_attributes() {
        let mut out = Vec::new();
        let key = [1u8, 2, 3, 4, 5, 6, 7, 8, 127, 0, 0, 1, 0x1b, 0x59, 0, 0];
        encode(&mut out, &Change::Add { table: "t", set: "s", key: &key, timeout_ms: 5000 }, 7);
        assert_eq!(u32_at(&out, 0), Some(out.len() as u32));
        assert_eq!(out.len() % 4, 0);
        assert_eq!(&out[4..6], &((10u16 << 8) | 12).to_ne_bytes());
        assert_eq!(u32_at(&out, 8), Some(7));
        assert_eq!(out[16], NFPROTO_INET);
        // The key bytes and the big-endian timeout are in the message.
        assert!(out.windows(key.len()).any(|w| w == key));
        assert!(out.windows(8).any(|w| w == 5000u64.to_be_bytes()));
    }

    #[test]
    fn acks_reads_every_error_message_and_ignores_garbage() {
        let mut buf = crate::sys::test_nlmsg_error(5, 0);
        buf.extend(crate::sys::test_nlmsg_error(6, -libc::ENOENT));
        assert_eq!(acks(&buf), vec![(5, 0), (6, libc::ENOENT)]);
        assert!(acks(&[1, 2, 3]).is_empty());
        assert!(acks(&[0; 40]).is_empty());
    }
}
