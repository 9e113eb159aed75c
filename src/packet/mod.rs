//! Parsing of queued packet bytes (IPv4/IPv6, extension headers, TCP/UDP/ICMP/ICMPv6/SCTP)
//! into the flat facts the policy matches on.
//!
//! Packet bytes are untrusted: every offset is checked, nothing here panics,
//! and a packet that cannot be parsed becomes a [`PacketError`]. A
//! CIPSO/CALIPSO option is parsed here too ([`peer`]) into the typed
//! [`LabelOption`] the packet's facts carry; a malformed one is kept as its
//! [`peer::PeerError`] (the packet itself still parses).

pub mod peer;

use pnet_packet::ip::IpNextHeaderProtocols as P;
use pnet_packet::ipv4::Ipv4Packet;
use pnet_packet::ipv6::Ipv6Packet;
use std::fmt;
use std::net::IpAddr;

/// Transport protocol of a packet, as the policy names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
    Sctp,
    /// Any other IP protocol number.
    Other(u8),
}

impl Proto {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Icmp => 1,
            Proto::Icmpv6 => 58,
            Proto::Sctp => 132,
            Proto::Other(n) => n,
        }
    }

    /// From an IP protocol number.
    pub fn from_number(n: u8) -> Proto {
        match n {
            6 => Proto::Tcp,
            17 => Proto::Udp,
            1 => Proto::Icmp,
            58 => Proto::Icmpv6,
            132 => Proto::Sctp,
            n => Proto::Other(n),
        }
    }

    /// Whether the protocol carries 16-bit ports.
    pub fn has_ports(self) -> bool {
        matches!(self, Proto::Tcp | Proto::Udp | Proto::Sctp)
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Proto::Tcp => f.write_str("tcp"),
            Proto::Udp => f.write_str("udp"),
            Proto::Icmp => f.write_str("icmp"),
            Proto::Icmpv6 => f.write_str("icmpv6"),
            Proto::Sctp => f.write_str("sctp"),
            Proto::Other(n) => write!(f, "{n}"),
        }
    }
}

/// A peer-label option the packet carries: CIPSO in the IPv4 options area
/// (option type 134) or CALIPSO in the IPv6 hop-by-hop header (option type
/// 7), as [`peer`] parses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabelOption {
    /// A well-formed option: its DOI and level (boxed: most packets carry
    /// none, and a level is 130 bytes).
    Level { doi: u32, level: Box<crate::mls::Level> },
    /// A malformed option.
    Malformed(peer::PeerError),
}

impl LabelOption {
    /// The option in an IPv4 options area or IPv6 hop-by-hop data, as
    /// `parse` (`peer::parse_cipso` or `peer::parse_calipso`) reads it;
    /// `None` when there is none.
    fn of(parsed: Result<Option<(u32, crate::mls::Level)>, peer::PeerError>) -> Option<LabelOption> {
        match parsed {
            Ok(None) => None,
            Ok(Some((doi, level))) => Some(LabelOption::Level { doi, level: Box::new(level) }),
            Err(e) => Some(LabelOption::Malformed(e)),
        }
    }
}

/// Facts about one packet that rules match on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketInfo {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: Proto,
    /// Source port (TCP/UDP/SCTP), absent for other protocols and non-first fragments.
    pub sport: Option<u16>,
    /// Destination port; for ICMP/ICMPv6 not set.
    pub dport: Option<u16>,
    /// ICMP/ICMPv6 type and code.
    pub icmp: Option<(u8, u8)>,
    /// TCP SYN without ACK: the first packet of a connection.
    pub tcp_syn: bool,
    /// The CIPSO/CALIPSO option, if the packet carries one.
    pub label_option: Option<LabelOption>,
}

/// Why a packet could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    #[error("empty packet")]
    Empty,
    #[error("unknown IP version {0}")]
    Version(u8),
    #[error("truncated {0} header")]
    Truncated(&'static str),
    #[error("bad IPv4 header length {0}")]
    Ihl(u8),
    #[error("IPv6 extension header chain too long")]
    ExtensionChain,
}

impl PacketError {
    /// A short machine-friendly reason for audit records and counters.
    pub fn reason(&self) -> &'static str {
        match self {
            PacketError::Empty => "empty",
            PacketError::Version(_) => "ip_version",
            PacketError::Truncated(_) => "truncated",
            PacketError::Ihl(_) => "ipv4_ihl",
            PacketError::ExtensionChain => "ipv6_ext_chain",
        }
    }
}

/// The longest IPv6 header chain RFC 8200 allows before the transport
/// header, plus the longest transport header labelgate reads (TCP with
/// options): the fixed header (40), hop-by-hop options, destination options,
/// routing (2048 bytes each at most), fragment (8), authentication (1028 at
/// most), destination options again (2048) and TCP (60). A copy range of at
/// least this many bytes lets every such packet be parsed whole; it is the
/// default `--copy-range`.
pub const LONGEST_HEADERS: u32 = 40 + 2048 + 2048 + 2048 + 8 + 1028 + 2048 + 60;

/// What a packet that did not parse still showed: its addresses once the
/// fixed IP header was whole, and its transport protocol when the header
/// chain was read to it. Audit records of malformed packets carry these.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Partial {
    pub addrs: Option<(IpAddr, IpAddr)>,
    pub proto: Option<Proto>,
    /// Source and destination ports; the parser never sets them (a packet
    /// whose ports were read parsed), [`Partial::from`] a parsed packet does.
    pub ports: Option<(u16, u16)>,
}

impl From<&PacketInfo> for Partial {
    fn from(p: &PacketInfo) -> Partial {
        Partial { addrs: Some((p.src, p.dst)), proto: Some(p.proto), ports: p.sport.zip(p.dport) }
    }
}

/// Parse one packet as delivered by NFQUEUE (starting at the IP header).
pub fn parse(buf: &[u8]) -> Result<PacketInfo, PacketError> {
    parse_partial(buf).map_err(|(e, _)| e)
}

/// [`parse`], and on failure what could still be read (see [`Partial`]).
pub fn parse_partial(buf: &[u8]) -> Result<PacketInfo, (PacketError, Partial)> {
    let mut known = Partial::default();
    let first = *buf.first().ok_or((PacketError::Empty, known))?;
    let parsed = match first >> 4 {
        4 => parse_v4(buf, &mut known),
        6 => parse_v6(buf, &mut known),
        v => Err(PacketError::Version(v)),
    };
    parsed.map_err(|e| (e, known))
}

fn parse_v4(buf: &[u8], known: &mut Partial) -> Result<PacketInfo, PacketError> {
    let ip = Ipv4Packet::new(buf).ok_or(PacketError::Truncated("ipv4"))?;
    known.addrs = Some((IpAddr::V4(ip.get_source()), IpAddr::V4(ip.get_destination())));
    known.proto = Some(Proto::from_number(ip.get_next_level_protocol().0));
    let ihl = ip.get_header_length();
    let hlen = usize::from(ihl) * 4;
    if ihl < 5 {
        return Err(PacketError::Ihl(ihl));
    }
    if hlen > buf.len() {
        return Err(PacketError::Truncated("ipv4"));
    }
    let label_option = match buf.get(20..hlen) {
        _ if hlen <= 20 => None,
        Some(opts) => LabelOption::of(peer::parse_cipso(opts)),
        None => Some(LabelOption::Malformed(peer::PeerError::Truncated("IPv4 options"))),
    };
    let proto = Proto::from_number(ip.get_next_level_protocol().0);
    let first_fragment = ip.get_fragment_offset() == 0;
    let l4 = buf.get(hlen..).unwrap_or_default();
    finish(IpAddr::V4(ip.get_source()), IpAddr::V4(ip.get_destination()), proto, label_option, first_fragment, l4)
}

/// The packet's facts from its network header; the transport header is read
/// only on first fragments (later ones carry no ports).
fn finish(
    src: IpAddr,
    dst: IpAddr,
    proto: Proto,
    label_option: Option<LabelOption>,
    first_fragment: bool,
    l4: &[u8],
) -> Result<PacketInfo, PacketError> {
    let mut info = PacketInfo { src, dst, proto, sport: None, dport: None, icmp: None, tcp_syn: false, label_option };
    if first_fragment {
        parse_transport(&mut info, l4)?;
    }
    Ok(info)
}

fn parse_v6(buf: &[u8], known: &mut Partial) -> Result<PacketInfo, PacketError> {
    let ip = Ipv6Packet::new(buf).ok_or(PacketError::Truncated("ipv6"))?;
    known.addrs = Some((IpAddr::V6(ip.get_source()), IpAddr::V6(ip.get_destination())));
    let mut next = ip.get_next_header();
    let mut off = 40usize;
    let mut label_option = None;
    let mut first_fragment = true;
    // Walk the extension header chain; bounded so a crafted chain cannot loop long.
    for _ in 0..16 {
        let hdr = buf.get(off..).unwrap_or_default();
        match next {
            P::Hopopt | P::Ipv6Route | P::Ipv6Opts => {
                let (nh, len) = match (hdr.first(), hdr.get(1)) {
                    (Some(nh), Some(len)) => (*nh, (usize::from(*len) + 1) * 8),
                    _ => return Err(PacketError::Truncated("ipv6 extension")),
                };
                if hdr.len() < len {
                    return Err(PacketError::Truncated("ipv6 extension"));
                }
                if next == P::Hopopt && off == 40 {
                    label_option = match hdr.get(2..len) {
                        Some(data) => LabelOption::of(peer::parse_calipso(data)),
                        None => Some(LabelOption::Malformed(peer::PeerError::Truncated("hop-by-hop"))),
                    };
                }
                next = pnet_packet::ip::IpNextHeaderProtocol(nh);
                off += len;
            }
            P::Ipv6Frag => {
                let [nh, _, off_hi, off_lo, _, _, _, _, ..] = *hdr else {
                    return Err(PacketError::Truncated("ipv6 fragment"));
                };
                let frag_off = u16::from_be_bytes([off_hi, off_lo]) >> 3;
                first_fragment = frag_off == 0;
                next = pnet_packet::ip::IpNextHeaderProtocol(nh);
                off += 8;
            }
            P::Ah => {
                let (nh, len) = match (hdr.first(), hdr.get(1)) {
                    (Some(nh), Some(len)) => (*nh, (usize::from(*len) + 2) * 4),
                    _ => return Err(PacketError::Truncated("ipv6 AH")),
                };
                if hdr.len() < len {
                    return Err(PacketError::Truncated("ipv6 AH"));
                }
                next = pnet_packet::ip::IpNextHeaderProtocol(nh);
                off += len;
            }
            _ => {
                let (src, dst) = (IpAddr::V6(ip.get_source()), IpAddr::V6(ip.get_destination()));
                known.proto = Some(Proto::from_number(next.0));
                return finish(src, dst, Proto::from_number(next.0), label_option, first_fragment, hdr);
            }
        }
    }
    Err(PacketError::ExtensionChain)
}

fn parse_transport(info: &mut PacketInfo, l4: &[u8]) -> Result<(), PacketError> {
    use pnet_packet::tcp::TcpPacket;
    use pnet_packet::udp::UdpPacket;
    match info.proto {
        Proto::Tcp => {
            let tcp = TcpPacket::new(l4).ok_or(PacketError::Truncated("tcp"))?;
            info.sport = Some(tcp.get_source());
            info.dport = Some(tcp.get_destination());
            let flags = tcp.get_flags();
            info.tcp_syn = flags & pnet_packet::tcp::TcpFlags::SYN != 0 && flags & pnet_packet::tcp::TcpFlags::ACK == 0;
        }
        Proto::Udp => {
            let udp = UdpPacket::new(l4).ok_or(PacketError::Truncated("udp"))?;
            info.sport = Some(udp.get_source());
            info.dport = Some(udp.get_destination());
        }
        Proto::Sctp => {
            // SCTP common header: source port, destination port, tag, checksum.
            let [s0, s1, d0, d1, _, _, _, _, _, _, _, _, ..] = *l4 else {
                return Err(PacketError::Truncated("sctp"));
            };
            info.sport = Some(u16::from_be_bytes([s0, s1]));
            info.dport = Some(u16::from_be_bytes([d0, d1]));
        }
        Proto::Icmp | Proto::Icmpv6 => {
            let [ty, code, _, _, ..] = *l4 else {
                return Err(PacketError::Truncated("icmp"));
            };
            info.icmp = Some((ty, code));
        }
        Proto::Other(_) => {}
    }
    Ok(())
}

/// Test and benchmark helpers that build well-formed packets.
// Builders index buffers they just sized themselves; they never see packet input.
#[allow(clippy::indexing_slicing)]
pub mod build {
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// An IPv4 header (with `options`, padded to 4 bytes) followed by `l4`.
    pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, options: &[u8], l4: &[u8]) -> Vec<u8> {
        let mut opts = options.to_vec();
        while opts.len() % 4 != 0 {
            opts.push(0);
        }
        let hlen = 20 + opts.len();
        let total = hlen + l4.len();
        let mut v = vec![0u8; 20];
        v[0] = 0x40 | (hlen / 4) as u8;
        v[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        v[8] = 64;
        v[9] = proto;
        v[12..16].copy_from_slice(&src.octets());
        v[16..20].copy_from_slice(&dst.octets());
        v.extend_from_slice(&opts);
        v.extend_from_slice(l4);
        v
    }

    /// An IPv6 header followed by `ext` (already chained) and `l4`.
    pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, ext: &[u8], l4: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; 40];
        v[0] = 0x60;
        v[4..6].copy_from_slice(&((ext.len() + l4.len()) as u16).to_be_bytes());
        v[6] = next;
        v[7] = 64;
        v[8..24].copy_from_slice(&src.octets());
        v[24..40].copy_from_slice(&dst.octets());
        v.extend_from_slice(ext);
        v.extend_from_slice(l4);
        v
    }

    /// A 20-byte TCP header with the given flags.
    pub fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        let mut v = vec![0u8; 20];
        v[0..2].copy_from_slice(&sport.to_be_bytes());
        v[2..4].copy_from_slice(&dport.to_be_bytes());
        v[12] = 5 << 4;
        v[13] = flags;
        v
    }

    /// An 8-byte UDP header plus `payload`.
    pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; 8];
        v[0..2].copy_from_slice(&sport.to_be_bytes());
        v[2..4].copy_from_slice(&dport.to_be_bytes());
        v[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;

    #[test]
    fn tcp_syn_v4() {
        let p = ipv4(LO, LO, 6, &[], &tcp(43210, 5432, 0x02));
        let i = parse(&p).unwrap();
        assert_eq!(i.proto, Proto::Tcp);
        assert_eq!((i.sport, i.dport), (Some(43210), Some(5432)));
        assert!(i.tcp_syn);
        assert_eq!(i.label_option, None);
        let ack = parse(&ipv4(LO, LO, 6, &[], &tcp(1, 2, 0x12))).unwrap();
        assert!(!ack.tcp_syn);
    }

    #[test]
    fn udp_v4_with_cipso_option_carries_its_level() {
        let cipso = [0x86, 0x0b, 0, 0, 0, 0x10, 0x01, 0x05, 0x00, 0x01, 0x80];
        let p = ipv4(LO, LO, 17, &cipso, &udp(1000, 53, b"hi"));
        let i = parse(&p).unwrap();
        assert_eq!(i.dport, Some(53));
        let Some(LabelOption::Level { doi, level }) = i.label_option else { panic!("no option") };
        assert_eq!((doi, level.to_string()), (16, "s1:c0".to_string()));
        // A malformed option is carried as such; the packet still parses.
        let mut bad = cipso;
        bad[7] = 40;
        let i = parse(&ipv4(LO, LO, 17, &bad, &udp(1000, 53, b"hi"))).unwrap();
        assert!(matches!(i.label_option, Some(LabelOption::Malformed(_))), "{:?}", i.label_option);
        assert_eq!(i.dport, Some(53));
    }

    #[test]
    fn icmp_and_sctp() {
        let i = parse(&ipv4(LO, LO, 1, &[], &[8, 0, 0, 0, 0, 1, 0, 1])).unwrap();
        assert_eq!((i.proto, i.icmp, i.dport), (Proto::Icmp, Some((8, 0)), None));
        let mut sctp = vec![0u8; 12];
        sctp[0..2].copy_from_slice(&7000u16.to_be_bytes());
        sctp[2..4].copy_from_slice(&7001u16.to_be_bytes());
        let i = parse(&ipv4(LO, LO, 132, &[], &sctp)).unwrap();
        assert_eq!((i.proto, i.sport, i.dport), (Proto::Sctp, Some(7000), Some(7001)));
    }

    #[test]
    fn ipv6_walks_extension_headers() {
        let l6 = Ipv6Addr::LOCALHOST;
        // Hop-by-hop (8 bytes: next=60, len 0, PadN) -> DestOpts (8 bytes, next=6) -> TCP.
        let mut ext = vec![60, 0, 1, 4, 0, 0, 0, 0];
        ext.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]);
        let p = ipv6(l6, l6, 0, &ext, &tcp(5555, 22, 0x02));
        let i = parse(&p).unwrap();
        assert_eq!((i.proto, i.dport), (Proto::Tcp, Some(22)));
        // A hop-by-hop header of padding alone carries no option.
        assert_eq!(i.label_option, None);
        let icmp6 = parse(&ipv6(l6, l6, 58, &[], &[128, 0, 0, 0])).unwrap();
        assert_eq!((icmp6.proto, icmp6.icmp), (Proto::Icmpv6, Some((128, 0))));
    }

    #[test]
    fn non_first_fragments_have_no_ports() {
        let l6 = Ipv6Addr::LOCALHOST;
        let frag = [17, 0, 0x00, 0x08, 0, 0, 0, 1]; // offset 1 (8 bytes), next UDP
        let i = parse(&ipv6(l6, l6, 44, &frag, &[1, 2, 3])).unwrap();
        assert_eq!((i.proto, i.sport), (Proto::Udp, None));
    }

    #[test]
    fn malformed_packets_are_errors() {
        assert_eq!(parse(&[]), Err(PacketError::Empty));
        assert_eq!(parse(&[0x50; 30]), Err(PacketError::Version(5)));
        assert_eq!(parse(&[0x45; 10]), Err(PacketError::Truncated("ipv4")));
        let mut p = ipv4(LO, LO, 6, &[], &tcp(1, 2, 2));
        p[0] = 0x43;
        assert_eq!(parse(&p), Err(PacketError::Ihl(3)));
        p[0] = 0x4f; // claims 60 bytes of header in a 40-byte packet
        assert_eq!(parse(&p), Err(PacketError::Truncated("ipv4")));
        let short = ipv4(LO, LO, 6, &[], &[0; 10]);
        assert_eq!(parse(&short), Err(PacketError::Truncated("tcp")));
        let l6 = Ipv6Addr::LOCALHOST;
        let lying = ipv6(l6, l6, 0, &[6, 200, 0, 0], &[]);
        assert_eq!(parse(&lying), Err(PacketError::Truncated("ipv6 extension")));
        // A chain of 20 destination-options headers.
        let mut ext = Vec::new();
        for _ in 0..20 {
            ext.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]);
        }
        assert_eq!(parse(&ipv6(l6, l6, 60, &ext, &[])), Err(PacketError::ExtensionChain));
    }

    /// An extension header of `len` bytes (a multiple of 8, 8..=2048) of
    /// type hop-by-hop/routing/destination options, its data unknown
    /// skippable options (type 0x1e) as a sender would fill it.
    fn ext(next: u8, len: usize) -> Vec<u8> {
        assert!(len % 8 == 0 && (8..=2048).contains(&len));
        let mut v = vec![next, (len / 8 - 1) as u8];
        while v.len() < len {
            let room = len - v.len();
            let data = room.saturating_sub(2).min(255);
            if room < 2 {
                v.push(0); // Pad1
                continue;
            }
            v.extend_from_slice(&[0x1e, data as u8]);
            v.extend(std::iter::repeat_n(0xaa, data));
        }
        v
    }

    /// An authentication header of `len` bytes (a multiple of 4, 12..=1028).
    fn ah(next: u8, len: usize) -> Vec<u8> {
        let mut v = vec![next, (len / 4 - 2) as u8];
        v.resize(len, 0x55);
        v
    }

    /// The longest chain RFC 8200 allows: hop-by-hop, destination options,
    /// routing (each 2048 bytes), fragment, AH (1028), destination options
    /// (2048), then `l4` of protocol `proto`.
    fn longest_chain(proto: u8, l4: &[u8]) -> Vec<u8> {
        let l6 = Ipv6Addr::LOCALHOST;
        let mut chain = ext(60, 2048); // hop-by-hop -> dest opts
        chain.extend(ext(43, 2048)); // dest opts -> routing
        chain.extend(ext(44, 2048)); // routing -> fragment
        chain.extend_from_slice(&[51, 0, 0, 0, 0, 0, 0, 1]); // fragment (offset 0, last) -> AH
        chain.extend(ah(60, 1028)); // AH -> dest opts
        chain.extend(ext(proto, 2048)); // dest opts -> transport
        ipv6(l6, l6, 0, &chain, l4)
    }

    #[test]
    fn longest_legal_ipv6_chains_parse_within_the_default_copy_range() {
        let mut tcp60 = tcp(40000, 5432, 0x02);
        tcp60[12] = 15 << 4;
        tcp60.resize(60, 1);
        let p = longest_chain(6, &tcp60);
        assert_eq!(p.len(), LONGEST_HEADERS as usize, "the constant is the longest chain");
        let i = parse(&p).unwrap();
        assert_eq!((i.proto, i.sport, i.dport, i.tcp_syn), (Proto::Tcp, Some(40000), Some(5432), true));
        assert_eq!(i.label_option, None);
        let u = parse(&longest_chain(17, &udp(40001, 5360, b"payload"))).unwrap();
        assert_eq!((u.proto, u.dport), (Proto::Udp, Some(5360)));
        // The case of issue 14: one 328-byte destination-options header,
        // longer than the old default copy range of 256 bytes.
        let l6 = Ipv6Addr::LOCALHOST;
        let p = ipv6(l6, l6, 60, &ext(17, 328), &udp(40002, 5360, b"x"));
        assert!(p.len() > 256);
        assert_eq!(parse(&p).unwrap().dport, Some(5360));
        // Each kind of header alone at its largest.
        for (first, hdr) in [(0u8, ext(17, 2048)), (43, ext(17, 2048)), (60, ext(17, 2048)), (51, ah(17, 1028))] {
            let p = ipv6(l6, l6, first, &hdr, &udp(1, 5360, b""));
            assert_eq!(parse(&p).map(|i| i.dport), Ok(Some(5360)), "header {first}");
        }
    }

    #[test]
    fn a_packet_that_does_not_parse_still_shows_its_addresses() {
        let a = Ipv4Addr::new(198, 18, 0, 1);
        let b = Ipv4Addr::new(198, 18, 0, 2);
        let short = ipv4(a, b, 6, &[], &[0; 10]);
        let (e, known) = parse_partial(&short).unwrap_err();
        assert_eq!(e, PacketError::Truncated("tcp"));
        assert_eq!(known.addrs, Some((IpAddr::V4(a), IpAddr::V4(b))));
        assert_eq!((known.proto, known.ports), (Some(Proto::Tcp), None));
        let mut bad_ihl = ipv4(a, b, 17, &[], &udp(1, 2, b""));
        bad_ihl[0] = 0x43;
        assert_eq!(parse_partial(&bad_ihl).unwrap_err().1.addrs, Some((IpAddr::V4(a), IpAddr::V4(b))));
        // IPv6 cut inside the chain: addresses, no protocol yet.
        let (a6, b6) = ("2001:db8::1".parse().unwrap(), "2001:db8::2".parse().unwrap());
        let cut = &longest_chain(17, &udp(1, 2, b""))[..256];
        let mut cut = cut.to_vec();
        cut[8..24].copy_from_slice(&Ipv6Addr::octets(&a6));
        cut[24..40].copy_from_slice(&Ipv6Addr::octets(&b6));
        let (e, known) = parse_partial(&cut).unwrap_err();
        assert_eq!(e, PacketError::Truncated("ipv6 extension"));
        assert_eq!((known.addrs, known.proto), (Some((IpAddr::V6(a6), IpAddr::V6(b6))), None));
        // IPv6 whose chain reached UDP, cut in the UDP header.
        let p = ipv6(a6, b6, 17, &[], &[0, 1, 0]);
        assert_eq!(parse_partial(&p).unwrap_err().1.proto, Some(Proto::Udp));
        // Too short for a fixed header: nothing known.
        assert_eq!(parse_partial(&[0x45; 10]).unwrap_err().1, Partial::default());
        assert_eq!(parse_partial(&[0x60; 39]).unwrap_err().1, Partial::default());
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn never_panics_on_mangled_ipv4(mut bytes in proptest::collection::vec(proptest::num::u8::ANY, 20..120), ihl in 0u8..16, proto in proptest::sample::select(vec![1u8, 6, 17, 58, 132, 0, 43])) {
            bytes[0] = 0x40 | ihl;
            bytes[9] = proto;
            let _ = parse(&bytes);
        }

        #[test]
        fn never_panics_on_mangled_ipv6(mut bytes in proptest::collection::vec(proptest::num::u8::ANY, 40..160), nh in proptest::sample::select(vec![0u8, 43, 44, 51, 60, 6, 17, 58])) {
            bytes[0] = 0x60;
            bytes[6] = nh;
            let _ = parse(&bytes);
        }
    }
}
