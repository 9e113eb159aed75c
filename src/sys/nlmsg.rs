//! Walking the netlink messages of one received datagram: the one
//! bounds-checked loop every netlink parser in [`super`] uses (NFQUEUE,
//! nf_tables acks, ctnetlink acks, sock_diag replies and destroy
//! notifications).
//!
//! The bytes come from the kernel and are untrusted: a header that does not
//! fit, or a length smaller than the header, ends the walk; a length past
//! the end of the datagram gives that last message cut to what is there
//! (marked [`Nlmsg::cut`]) and ends the walk. Nothing here indexes or
//! panics, whatever the bytes.

/// `NLMSG_HDRLEN`: the netlink header (length, type, flags, seq, port id).
pub(crate) const HDRLEN: usize = 16;
/// `NLMSG_ERROR`: an error, or with code 0 an acknowledgement.
pub(crate) const ERROR: u16 = 2;

/// One netlink message of a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Nlmsg<'a> {
    /// `nlmsg_type`.
    pub ty: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// The whole message, header included, as far as the datagram holds it.
    pub bytes: &'a [u8],
    /// Its length went past the end of the datagram, so `bytes` is cut
    /// short (only ever the last message of a walk).
    pub cut: bool,
}

impl<'a> Nlmsg<'a> {
    /// What follows the header.
    pub fn body(&self) -> &'a [u8] {
        self.bytes.get(HDRLEN..).unwrap_or_default()
    }

    /// For an `NLMSG_ERROR` message, its error number made positive (0:
    /// an acknowledgement); `None` for other types or a body too short
    /// to hold the code.
    pub fn errno(&self) -> Option<i32> {
        if self.ty != ERROR {
            return None;
        }
        Some((u32_ne(self.body(), 0)? as i32).saturating_neg())
    }
}

/// The messages of `datagram`, in order (see the module doc for where the
/// walk ends).
pub(crate) fn messages(datagram: &[u8]) -> Messages<'_> {
    Messages { rest: datagram }
}

/// Iterator returned by [`messages`].
#[derive(Clone, Debug)]
pub(crate) struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Messages<'a> {
    type Item = Nlmsg<'a>;

    fn next(&mut self) -> Option<Nlmsg<'a>> {
        // Whatever happens below, a walk that stops stays stopped.
        let rest = std::mem::take(&mut self.rest);
        let header = rest.get(..HDRLEN)?;
        let len = usize::try_from(u32_ne(header, 0)?).ok()?;
        if len < HDRLEN {
            return None;
        }
        let ty = u16::from_ne_bytes(header.get(4..6)?.try_into().ok()?);
        let seq = u32_ne(header, 8)?;
        let cut = len > rest.len();
        let bytes = rest.get(..len).unwrap_or(rest);
        // Messages start on 4-byte boundaries; the last one's padding may
        // be missing, and a cut one is last.
        self.rest = len.checked_add(3).and_then(|l| rest.get(l & !3..)).unwrap_or_default();
        Some(Nlmsg { ty, seq, bytes, cut })
    }
}

impl std::iter::FusedIterator for Messages<'_> {}

/// The native-endian `u32` at `off` of `b`, if it is all there.
pub(crate) fn u32_ne(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off.checked_add(4)?)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message of type `ty`, sequence `seq`, whose length field says
    /// `len` and whose body is `body`.
    fn msg(ty: u16, seq: u32, len: u32, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&len.to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        m
    }

    fn proper(ty: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut m = msg(ty, seq, (HDRLEN + body.len()) as u32, body);
        m.resize((m.len() + 3) & !3, 0);
        m
    }

    fn walk(b: &[u8]) -> Vec<(u16, u32, Vec<u8>, bool)> {
        messages(b).map(|m| (m.ty, m.seq, m.body().to_vec(), m.cut)).collect()
    }

    #[test]
    fn several_messages_in_order_with_their_padding_skipped() {
        let mut b = proper(20, 1, &[1, 2, 3, 4, 5]); // 21 bytes, padded to 24
        b.extend(proper(3, 2, &[]));
        b.extend(proper(21, 3, &[9, 9]));
        assert_eq!(b.len(), 24 + 16 + 20);
        assert_eq!(
            walk(&b),
            vec![(20, 1, vec![1, 2, 3, 4, 5], false), (3, 2, vec![], false), (21, 3, vec![9, 9], false)]
        );
        // The whole message, header included, is what its length says.
        let first = messages(&b).next().unwrap();
        assert_eq!(first.bytes, &b[..21]);
    }

    #[test]
    fn the_last_message_may_lack_its_padding() {
        let mut b = proper(1, 1, &[]);
        b.extend(msg(2, 7, 19, &[1, 2, 3]));
        assert_eq!(walk(&b), vec![(1, 1, vec![], false), (2, 7, vec![1, 2, 3], false)]);
    }

    #[test]
    fn a_truncated_header_ends_the_walk() {
        let mut b = proper(1, 1, &[]);
        let whole = b.len();
        b.extend(proper(2, 2, &[5; 8]));
        for end in [0, 1, 4, 6, 12, 15] {
            assert!(walk(&b[..end]).is_empty(), "cut at {end}");
            assert_eq!(walk(&b[..whole + end]), vec![(1, 1, vec![], false)], "second cut at {end}");
        }
    }

    #[test]
    fn a_length_smaller_than_the_header_ends_the_walk() {
        for len in [0, 1, 4, 15] {
            let mut b = msg(1, 1, len, &[]);
            b.extend(proper(2, 2, &[]));
            assert!(walk(&b).is_empty(), "length {len}");
            let mut b = proper(3, 3, &[]);
            b.extend(msg(1, 1, len, &[]));
            b.extend(proper(2, 2, &[]));
            assert_eq!(walk(&b), vec![(3, 3, vec![], false)], "length {len} second");
        }
    }

    #[test]
    fn a_length_beyond_the_datagram_gives_a_cut_last_message() {
        let mut b = proper(1, 1, &[]);
        b.extend(msg(2, 2, 48, &[7; 8]));
        b.extend(proper(3, 3, &[])); // inside the cut message's claimed length
        let got: Vec<_> = messages(&b).collect();
        assert_eq!(got.len(), 2);
        assert!(!got[0].cut);
        assert!(got[1].cut);
        assert_eq!((got[1].ty, got[1].seq), (2, 2));
        assert_eq!(got[1].bytes, &b[16..], "cut to what the datagram holds");
        // The largest length a header can claim: no overflow, no panic.
        let huge = msg(4, 4, u32::MAX, &[1]);
        let got: Vec<_> = messages(&huge).collect();
        assert_eq!(got.len(), 1);
        assert!(got[0].cut && got[0].body() == [1]);
        // Filtering the cut one out keeps only whole messages.
        assert_eq!(messages(&b).take_while(|m| !m.cut).count(), 1);
    }

    #[test]
    fn errno_reads_error_messages_only() {
        let ack = crate::sys::test_nlmsg_error(5, 0);
        let err = crate::sys::test_nlmsg_error(6, -libc::EPERM);
        let both = [ack, err].concat();
        let got: Vec<_> = messages(&both).map(|m| (m.seq, m.errno())).collect();
        assert_eq!(got, vec![(5, Some(0)), (6, Some(libc::EPERM))]);
        assert_eq!(messages(&proper(3, 1, &[0; 4])).next().unwrap().errno(), None, "not an error message");
        assert_eq!(messages(&proper(ERROR, 1, &[0; 3])).next().unwrap().errno(), None, "no room for the code");
        let min = proper(ERROR, 1, &i32::MIN.to_ne_bytes());
        assert_eq!(messages(&min).next().unwrap().errno(), Some(i32::MAX), "no overflow");
    }

    proptest::proptest! {
        /// Whatever the bytes: no panic, every message has a whole header
        /// and lies inside the datagram, only the last may be cut, and the
        /// walk never yields more messages than headers fit.
        #[test]
        fn walking_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let got: Vec<_> = messages(&bytes).collect();
            proptest::prop_assert!(got.len() <= bytes.len() / HDRLEN);
            let base = bytes.as_ptr() as usize;
            for (i, m) in got.iter().enumerate() {
                proptest::prop_assert!(m.bytes.len() >= HDRLEN);
                let start = m.bytes.as_ptr() as usize - base;
                proptest::prop_assert!(start % 4 == 0 && start + m.bytes.len() <= bytes.len());
                proptest::prop_assert!(!m.cut || i + 1 == got.len());
            }
        }
    }
}
