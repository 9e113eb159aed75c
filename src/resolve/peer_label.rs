//! Peer labels: the static address labels and DOI map a policy gives
//! ([`PeerConfig`]), and the label of a packet's source from them and the
//! packet's CIPSO/CALIPSO option ([`peer_label`]).

use super::flow::unmap_ip;
use crate::context::SecurityContext;
use crate::labels::{Label, Origin};
use crate::mls::{Level, Range};
use crate::packet::{peer, LabelOption, PacketInfo};
use crate::policy::{AddressLabel, DoiMap, Policy};
use std::collections::HashMap;
use std::net::IpAddr;

/// What the resolver needs from the policy for peer labels; rebuild it (and
/// the resolver, or call [`SocketResolver::set_peer_config`](super::SocketResolver::set_peer_config)) on reload.
#[derive(Clone, Debug, Default)]
pub struct PeerConfig {
    /// Static labels, longest prefix first (as [`Policy::address_labels`]).
    pub address_labels: Vec<AddressLabel>,
    /// DOI → level mapping for CIPSO/CALIPSO.
    pub dois: HashMap<u32, DoiMap>,
}

impl PeerConfig {
    pub fn from_policy(p: &Policy) -> PeerConfig {
        PeerConfig { address_labels: p.address_labels.clone(), dois: p.dois.clone() }
    }

    /// The static label of `addr` (first, i.e. longest, matching prefix).
    pub fn static_label(&self, addr: IpAddr) -> Option<&SecurityContext> {
        let addr = unmap_ip(addr);
        self.address_labels.iter().find(|a| a.net.contains(&addr)).map(|a| &a.context)
    }
}

/// What the packet's label option was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerOutcome {
    /// No CIPSO/CALIPSO option.
    None,
    /// A well-formed option with a mapped DOI.
    Option,
    /// A well-formed option with a DOI the policy does not map.
    UnknownDoi,
    /// A malformed option.
    Malformed(peer::PeerError),
}

/// The peer label of the packet's source address: the CIPSO/CALIPSO level
/// (DOI mapped by `cfg.dois`) and/or the static address label.
///
/// | static label | option level | peer label |
/// |---|---|---|
/// | none | none | `None` |
/// | C | none | C ([`Origin::Static`]) |
/// | C | L | C with its range replaced by L ([`Origin::PeerOption`]) |
/// | none | L | `system_u:object_r:netlabel_peer_t:L` ([`Origin::PeerOption`]) |
/// | any | malformed | unlabeled `bad_peer_option` |
/// | any | unmapped DOI | unlabeled `unknown_doi` |
pub fn peer_label(cfg: &PeerConfig, pkt: &PacketInfo) -> (Option<Label>, PeerOutcome) {
    let parsed = match &pkt.label_option {
        None => Ok(None),
        Some(LabelOption::Level { doi, level }) => Ok(Some((*doi, **level))),
        Some(LabelOption::Malformed(e)) => Err(*e),
    };
    let (level, outcome) = match parsed {
        Ok(None) => (None, PeerOutcome::None),
        Ok(Some((doi, level))) => match cfg.dois.get(&doi) {
            Some(DoiMap::Pass) => (Some(level), PeerOutcome::Option),
            None => return (Some(Label::unlabeled("unknown_doi")), PeerOutcome::UnknownDoi),
        },
        Err(e) => return (Some(Label::unlabeled("bad_peer_option")), PeerOutcome::Malformed(e)),
    };
    let label = match (cfg.static_label(pkt.src), level) {
        (None, None) => None,
        (Some(c), None) => Some(Label { context: c.clone(), origin: Origin::Static }),
        (Some(c), Some(l)) => Some(Label { context: c.with_range(Range::single(l)), origin: Origin::PeerOption }),
        (None, Some(l)) => Some(Label { context: netlabel_peer(l), origin: Origin::PeerOption }),
    };
    (label, outcome)
}

/// `system_u:object_r:netlabel_peer_t:<level>`: the peer context for a
/// packet option with no static label (as SELinux's `netlabel_peer_t`).
pub fn netlabel_peer(level: Level) -> SecurityContext {
    SecurityContext::new("system_u", "object_r", "netlabel_peer_t", Some(Range::single(level)))
        .unwrap_or_else(|_| unreachable!("constant identifiers are valid"))
}
