//! Everything in a policy but its rules: mode and defaults, type sets,
//! permissive domains, address labels, DOIs and `[[scope]]`.

use super::error::{Ctx, PolicyError};
use super::raw::{scalar_items, RawPolicy, RawScope};
use crate::packet::Proto;
use crate::policy::pattern::{parse_net, NetSet, PortSet};
use crate::policy::rule::{AddressLabel, DoiMap, HookSel, Mode, RuleVerdict, Verdict};
use crate::policy::scope::ScopeEntry;
use serde_spanned::Spanned;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

pub(super) type SetMap = HashMap<String, Arc<HashSet<Box<str>>>>;

/// Everything in a policy but its rules, compiled.
pub(super) struct Head {
    pub(super) mode: Mode,
    pub(super) default: RuleVerdict,
    pub(super) malformed: Verdict,
    pub(super) permissive_domains: Vec<String>,
    pub(super) sets: SetMap,
    pub(super) set_lists: HashMap<String, Vec<String>>,
    pub(super) address_labels: Vec<AddressLabel>,
    pub(super) dois: HashMap<u32, DoiMap>,
    pub(super) scope: Option<Vec<ScopeEntry>>,
}

pub(super) fn compile_head(cx: &Ctx<'_>, raw: &RawPolicy) -> Result<Head, PolicyError> {
    let mut head = head_sets(cx, raw)?;
    head_labels(cx, raw, &mut head)?;
    Ok(head)
}

/// Sets and permissive domains (what rules need), and the global settings.
pub(super) fn head_sets(cx: &Ctx<'_>, raw: &RawPolicy) -> Result<Head, PolicyError> {
    let mut sets: SetMap = HashMap::new();
    let mut set_lists = HashMap::new();
    for (name, members) in &raw.sets {
        if !crate::context::is_identifier(name) {
            return Err(cx.err(members.span(), format!("bad set name {name:?}")));
        }
        if members.get_ref().is_empty() {
            return Err(cx.err(members.span(), format!("type set @{name} is empty")));
        }
        let mut types = HashSet::new();
        for m in members.get_ref() {
            if !crate::context::is_identifier(m.get_ref()) {
                return Err(cx.err(m.span(), format!("bad type name {:?} in set @{name}", m.get_ref())));
            }
            types.insert(Box::<str>::from(m.get_ref().as_str()));
        }
        set_lists.insert(name.clone(), members.get_ref().iter().map(|m| m.get_ref().clone()).collect());
        sets.insert(name.clone(), Arc::new(types));
    }

    let mut permissive_domains = Vec::new();
    for d in &raw.permissive_domains {
        if !crate::context::is_identifier(d.get_ref()) {
            return Err(cx.err(d.span(), format!("bad domain name {:?}", d.get_ref())));
        }
        permissive_domains.push(d.get_ref().clone());
    }
    Ok(Head {
        mode: raw.mode.unwrap_or(Mode::Enforcing),
        default: raw.default.unwrap_or(RuleVerdict::Drop),
        malformed: raw.malformed.unwrap_or(Verdict::Drop),
        permissive_domains,
        sets,
        set_lists,
        address_labels: Vec::new(),
        dois: HashMap::new(),
        scope: None,
    })
}

/// Address labels and DOIs.
pub(super) fn head_labels(cx: &Ctx<'_>, raw: &RawPolicy, head: &mut Head) -> Result<(), PolicyError> {
    let mut address_labels = Vec::new();
    for a in &raw.address_label {
        let a = a.get_ref();
        let net = parse_net(a.address.get_ref()).map_err(|m| cx.err(a.address.span(), m))?;
        let context = a.context.get_ref().parse().map_err(|e| cx.err(a.context.span(), e))?;
        address_labels.push(AddressLabel { net, context });
    }
    // Longest prefix first, so the first match is the most specific.
    address_labels.sort_by_key(|a| std::cmp::Reverse(a.net.prefix_len()));

    let mut dois = HashMap::new();
    for d in &raw.doi {
        let d = d.get_ref();
        let map = match d.map.get_ref().as_str() {
            "pass" => DoiMap::Pass,
            other => return Err(cx.err(d.map.span(), format!("unknown DOI map {other:?} (supported: pass)"))),
        };
        if d.doi == 0 {
            return Err(cx.err(d.map.span(), "DOI 0 is reserved"));
        }
        dois.insert(d.doi, map);
    }
    head.address_labels = address_labels;
    head.dois = dois;
    head.scope = raw.scope.as_ref().map(|s| compile_scope(cx, s)).transpose()?;
    Ok(())
}

/// A protocol name policies do not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown proto {0:?} (expected tcp, udp, icmp, icmpv6, sctp or any)")]
pub struct UnknownProto(String);

/// A protocol as policies name it; `any` is `None`.
pub(super) fn parse_proto(s: &str) -> Result<Option<Proto>, UnknownProto> {
    Ok(Some(match s {
        "any" => return Ok(None),
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        "icmp" => Proto::Icmp,
        "icmpv6" => Proto::Icmpv6,
        "sctp" => Proto::Sctp,
        other => return Err(UnknownProto(other.into())),
    }))
}

/// Compile the `[[scope]]` entries; `err` makes a located error. An
/// explicitly empty list (`scope = []`) is refused: it would queue nothing.
pub(super) fn compile_scope(
    cx: &Ctx<'_>,
    raw: &Spanned<Vec<Spanned<RawScope>>>,
) -> Result<Vec<ScopeEntry>, PolicyError> {
    if raw.get_ref().is_empty() {
        return Err(cx.err(raw.span(), "scope is empty: list the traffic the policy governs, or leave scope out"));
    }
    let mut out = Vec::with_capacity(raw.get_ref().len());
    for e in raw.get_ref() {
        let r = e.get_ref();
        let proto = match &r.proto {
            None => None,
            Some(p) => parse_proto(p.get_ref()).map_err(|m| cx.err(p.span(), m))?,
        };
        let dport = match &r.dport {
            None => None,
            Some(d) => {
                if !proto.is_some_and(|p| p.has_ports()) {
                    return Err(cx.err(d.span(), "dport needs proto = \"tcp\", \"udp\" or \"sctp\""));
                }
                let items = scalar_items(d.get_ref())
                    .ok_or_else(|| cx.err(d.span(), "ports must be a number, a \"lo-hi\" string, or a list of them"))?;
                let parsed: Result<Vec<_>, _> = items.iter().map(|i| PortSet::parse_item(i)).collect();
                Some(parsed.and_then(PortSet::new).map_err(|m| cx.err(d.span(), m))?)
            }
        };
        let nets = |v: &Option<Spanned<toml::Value>>| -> Result<Option<NetSet>, PolicyError> {
            let Some(v) = v else { return Ok(None) };
            let items = scalar_items(v.get_ref())
                .filter(|i| !i.is_empty())
                .ok_or_else(|| cx.err(v.span(), "addresses must be a CIDR string or a non-empty list of them"))?;
            let nets: Result<Vec<_>, _> = items.iter().map(|s| parse_net(s)).collect();
            nets.map(|n| Some(NetSet(n.into()))).map_err(|m| cx.err(v.span(), m))
        };
        out.push(ScopeEntry {
            hook: r.hook.unwrap_or(HookSel::Any),
            proto,
            dport,
            saddr: nets(&r.saddr)?,
            daddr: nets(&r.daddr)?,
        });
    }
    Ok(out)
}
