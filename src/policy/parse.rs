//! The policy file format (TOML) and its compilation into [`Policy`]; every
//! refusal names the file, line and column.

use super::pattern::{ContextPattern, IdSet, LevelCond, NetSet, PortSet};
use super::{AddressLabel, DoiMap, HookSel, MlsRelation, Mode, Policy, Rule, Verdict};
use crate::packet::Proto;
use serde::Deserialize;
use serde_spanned::Spanned;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// A policy that could not be read or compiled.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{origin}: {source}")]
    Io { origin: String, source: std::io::Error },
    #[error("{origin}:{line}:{column}: {message}")]
    Invalid { origin: String, line: usize, column: usize, message: String },
}

impl PolicyError {
    pub(super) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        PolicyError::Io { origin: path.display().to_string(), source }
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let upto = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = upto.matches('\n').count() + 1;
    let column = upto.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

struct Ctx<'a> {
    text: &'a str,
    origin: &'a str,
    /// Byte offset where each line starts, so a rule's line number is a
    /// binary search rather than a scan from the top (100,000 rules).
    line_starts: Vec<usize>,
}

impl<'a> Ctx<'a> {
    fn new(text: &'a str, origin: &'a str) -> Self {
        let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Ctx { text, origin, line_starts }
    }

    /// 1-based line of a byte offset.
    fn line(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&s| s <= offset).max(1)
    }
}

impl Ctx<'_> {
    fn err(&self, span: Range<usize>, message: impl fmt::Display) -> PolicyError {
        let (line, column) = line_col(self.text, span.start);
        PolicyError::Invalid { origin: self.origin.to_string(), line, column, message: message.to_string() }
    }
}

/// The file as written, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    mode: Option<Mode>,
    default: Option<Verdict>,
    malformed: Option<Verdict>,
    #[serde(default)]
    permissive_domains: Vec<Spanned<String>>,
    #[serde(default)]
    sets: BTreeMap<String, Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
    #[serde(default)]
    address_label: Vec<Spanned<RawAddressLabel>>,
    #[serde(default)]
    doi: Vec<Spanned<RawDoi>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    hook: Option<HookSel>,
    source: Option<Spanned<String>>,
    dest: Option<Spanned<String>>,
    secmark: Option<Spanned<String>>,
    peer: Option<Spanned<String>>,
    source_level: Option<Spanned<String>>,
    dest_level: Option<Spanned<String>>,
    peer_level: Option<Spanned<String>>,
    mls: Option<MlsRelation>,
    uid: Option<Spanned<toml::Value>>,
    gid: Option<Spanned<toml::Value>>,
    proto: Option<Spanned<String>>,
    sport: Option<Spanned<toml::Value>>,
    dport: Option<Spanned<toml::Value>>,
    saddr: Option<Spanned<toml::Value>>,
    daddr: Option<Spanned<toml::Value>>,
    iif: Option<Spanned<String>>,
    oif: Option<Spanned<String>>,
    verdict: Verdict,
    #[serde(default)]
    permissive: bool,
    #[serde(default)]
    audit: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAddressLabel {
    address: Spanned<String>,
    context: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDoi {
    doi: u32,
    #[serde(default = "pass")]
    map: Spanned<String>,
}

fn pass() -> Spanned<String> {
    Spanned::new(0..0, "pass".to_string())
}

/// Items of a value that may be a scalar or a list of scalars, as strings.
fn scalar_items(v: &toml::Value) -> Option<Vec<String>> {
    let one = |v: &toml::Value| match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        _ => None,
    };
    match v {
        toml::Value::Array(a) => a.iter().map(one).collect(),
        v => one(v).map(|s| vec![s]),
    }
}

type SetMap = HashMap<String, Arc<HashSet<Box<str>>>>;

pub(super) fn compile(text: &str, origin: &str) -> Result<Policy, PolicyError> {
    let cx = Ctx::new(text, origin);
    let raw: RawPolicy = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        cx.err(span, e.message().trim_end())
    })?;

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

    let mut rules = Vec::with_capacity(raw.rule.len());
    let mut names = HashSet::new();
    for r in &raw.rule {
        let rule = compile_rule(&cx, r, &sets)?;
        if !names.insert(rule.name.clone()) {
            return Err(cx.err(r.get_ref().name.span(), format!("duplicate rule name {:?}", rule.name)));
        }
        rules.push(rule);
    }

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

    Ok(Policy::assemble(
        raw.mode.unwrap_or(Mode::Enforcing),
        raw.default.unwrap_or(Verdict::Drop),
        raw.malformed.unwrap_or(Verdict::Drop),
        permissive_domains,
        rules,
        address_labels,
        dois,
        set_lists,
    ))
}

fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<ipnet::IpNet>() {
        return Ok(n.trunc());
    }
    s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from).map_err(|_| format!("bad address or CIDR {s:?}"))
}

fn compile_rule(cx: &Ctx<'_>, sr: &Spanned<RawRule>, sets: &SetMap) -> Result<Rule, PolicyError> {
    let r = sr.get_ref();
    let name = r.name.get_ref().trim().to_string();
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '\'' || c == '"') {
        return Err(cx.err(r.name.span(), "rule name must be non-empty, without spaces or quotes"));
    }
    let lookup = |n: &str| sets.get(n).cloned();
    let pattern = |p: &Option<Spanned<String>>| -> Result<Option<ContextPattern>, PolicyError> {
        p.as_ref().map(|p| ContextPattern::parse(p.get_ref(), &lookup).map_err(|m| cx.err(p.span(), m))).transpose()
    };
    let level = |p: &Option<Spanned<String>>| -> Result<Option<LevelCond>, PolicyError> {
        p.as_ref().map(|p| LevelCond::parse(p.get_ref()).map_err(|m| cx.err(p.span(), m))).transpose()
    };
    let ports = |p: &Option<Spanned<toml::Value>>| -> Result<Option<PortSet>, PolicyError> {
        let Some(p) = p else { return Ok(None) };
        let items = scalar_items(p.get_ref())
            .ok_or_else(|| cx.err(p.span(), "ports must be a number, a \"lo-hi\" string, or a list of them"))?;
        let parsed: Result<Vec<_>, _> = items.iter().map(|i| PortSet::parse_item(i)).collect();
        let parsed = parsed.map_err(|m| cx.err(p.span(), m))?;
        PortSet::new(parsed).map(Some).map_err(|m| cx.err(p.span(), m))
    };
    let ids = |p: &Option<Spanned<toml::Value>>, group: bool| -> Result<Option<IdSet>, PolicyError> {
        let Some(p) = p else { return Ok(None) };
        let items = scalar_items(p.get_ref())
            .ok_or_else(|| cx.err(p.span(), "ids must be a number, a name, or a list of them"))?;
        if items.is_empty() {
            return Err(cx.err(p.span(), "empty id list"));
        }
        let mut out = Vec::new();
        for i in items {
            let id = match i.parse::<u32>() {
                Ok(n) => n,
                Err(_) if group => match nix::unistd::Group::from_name(&i) {
                    Ok(Some(g)) => g.gid.as_raw(),
                    _ => return Err(cx.err(p.span(), format!("unknown group {i:?}"))),
                },
                Err(_) => match nix::unistd::User::from_name(&i) {
                    Ok(Some(u)) => u.uid.as_raw(),
                    _ => return Err(cx.err(p.span(), format!("unknown user {i:?}"))),
                },
            };
            out.push(id);
        }
        Ok(Some(IdSet(out)))
    };
    let nets = |p: &Option<Spanned<toml::Value>>| -> Result<Option<NetSet>, PolicyError> {
        let Some(p) = p else { return Ok(None) };
        let items = scalar_items(p.get_ref())
            .ok_or_else(|| cx.err(p.span(), "addresses must be a CIDR string or a list of them"))?;
        if items.is_empty() {
            return Err(cx.err(p.span(), "empty address list"));
        }
        let nets: Result<Vec<_>, _> = items.iter().map(|s| parse_net(s)).collect();
        nets.map(|n| Some(NetSet(n))).map_err(|m| cx.err(p.span(), m))
    };
    let proto = match &r.proto {
        None => None,
        Some(p) => match p.get_ref().as_str() {
            "any" => None,
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            "icmp" => Some(Proto::Icmp),
            "icmpv6" => Some(Proto::Icmpv6),
            "sctp" => Some(Proto::Sctp),
            other => {
                return Err(
                    cx.err(p.span(), format!("unknown proto {other:?} (expected tcp, udp, icmp, icmpv6, sctp or any)"))
                )
            }
        },
    };
    let sport = ports(&r.sport)?;
    let dport = ports(&r.dport)?;
    if (sport.is_some() || dport.is_some()) && !proto.is_some_and(|p| p.has_ports()) {
        let span = r.sport.as_ref().or(r.dport.as_ref()).map_or(0..0, |s| s.span());
        return Err(cx.err(span, "sport/dport need proto = \"tcp\", \"udp\" or \"sctp\""));
    }
    let iface = |p: &Option<Spanned<String>>| -> Result<Option<String>, PolicyError> {
        match p {
            None => Ok(None),
            Some(s) if !s.get_ref().is_empty() && s.get_ref().len() < 16 && !s.get_ref().contains('/') => {
                Ok(Some(s.get_ref().clone()))
            }
            Some(s) => Err(cx.err(s.span(), format!("bad interface name {:?}", s.get_ref()))),
        }
    };
    Ok(Rule {
        name,
        hook: r.hook.unwrap_or(HookSel::Any),
        source: pattern(&r.source)?,
        dest: pattern(&r.dest)?,
        secmark: pattern(&r.secmark)?,
        peer: pattern(&r.peer)?,
        source_level: level(&r.source_level)?,
        dest_level: level(&r.dest_level)?,
        peer_level: level(&r.peer_level)?,
        mls: r.mls,
        uid: ids(&r.uid, false)?,
        gid: ids(&r.gid, true)?,
        proto,
        sport,
        dport,
        saddr: nets(&r.saddr)?,
        daddr: nets(&r.daddr)?,
        iif: iface(&r.iif)?,
        oif: iface(&r.oif)?,
        verdict: r.verdict,
        permissive: r.permissive,
        audit: r.audit,
        line: cx.line(sr.span().start),
        hits: AtomicU64::new(0),
    })
}
