//! One `[[rule]]` compiled: its name, patterns, level conditions, ports,
//! ids, addresses and interfaces, with shared copies of equal patterns and
//! sets.

use super::error::{excerpt, Ctx, PolicyError};
use super::head::{parse_proto, SetMap};
use super::raw::{scalar_items, RawRule};
use crate::policy::pattern::{parse_net, ContextPattern, Glob, IdSet, LevelCond, NetSet, PortSet, ProcessCond};
use crate::policy::rule::{HookSel, RareConds, Rule};
use serde_spanned::Spanned;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// The longest rule name, in bytes. Every audit record and metric line
/// carries the name of the rule that decided it.
pub const MAX_RULE_NAME: usize = 255;

/// Why a uid or gid was refused; `what` is `user` or `group`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// No account can have this name (the name is excerpted).
    #[error("bad {what} name {name:?}")]
    BadName { what: &'static str, name: String },
    #[error("unknown {what} {name:?}")]
    Unknown { what: &'static str, name: String },
}

/// A uid (`group` false) or gid given as a number or a user/group name, as
/// in a rule's `uid`/`gid` (names are looked up in the system's databases).
pub fn resolve_id(s: &str, group: bool) -> Result<u32, IdError> {
    if let Ok(n) = s.parse::<u32>() {
        return Ok(n);
    }
    let what = if group { "group" } else { "user" };
    // Never hand the system's name service a name no account can have: some
    // NSS modules (systemd's userdb) abort the process on a very long one.
    if s.is_empty() || s.len() > 255 || s.contains(['\0', '/', ':']) || s.contains(char::is_whitespace) {
        return Err(IdError::BadName { what, name: excerpt(s).into_owned() });
    }
    let found = if group {
        nix::unistd::Group::from_name(s).ok().flatten().map(|g| g.gid.as_raw())
    } else {
        nix::unistd::User::from_name(s).ok().flatten().map(|u| u.uid.as_raw())
    };
    found.ok_or_else(|| IdError::Unknown { what, name: s.into() })
}

/// Compiles rules, sharing one copy of each distinct context pattern and
/// level condition among all the rules that write it the same way.
#[derive(Default)]
pub(super) struct RuleCompiler {
    pub(super) patterns: HashMap<Box<str>, Arc<ContextPattern>>,
    pub(super) levels: HashMap<Box<str>, Arc<LevelCond>>,
    pub(super) ids: HashSet<Arc<IdSet>>,
    pub(super) nets: HashSet<Arc<NetSet>>,
    pub(super) processes: HashSet<Arc<ProcessCond>>,
}

/// The shared copy of `v` in `seen`, added if it is new.
pub(super) fn intern<T: std::hash::Hash + Eq>(seen: &mut HashSet<Arc<T>>, v: T) -> Arc<T> {
    if let Some(a) = seen.get(&v) {
        return a.clone();
    }
    let a = Arc::new(v);
    seen.insert(a.clone());
    a
}

impl RuleCompiler {
    pub(super) fn pattern(
        &mut self,
        cx: &Ctx<'_>,
        p: &Option<Spanned<String>>,
        sets: &SetMap,
    ) -> Result<Option<Arc<ContextPattern>>, PolicyError> {
        let Some(p) = p else { return Ok(None) };
        if let Some(c) = self.patterns.get(p.get_ref().as_str()) {
            return Ok(Some(c.clone()));
        }
        let lookup = |n: &str| sets.get(n).cloned();
        let c = Arc::new(ContextPattern::parse(p.get_ref(), &lookup).map_err(|m| cx.err(p.span(), m))?);
        self.patterns.insert(p.get_ref().as_str().into(), c.clone());
        Ok(Some(c))
    }

    pub(super) fn level(
        &mut self,
        cx: &Ctx<'_>,
        p: &Option<Spanned<String>>,
    ) -> Result<Option<Arc<LevelCond>>, PolicyError> {
        let Some(p) = p else { return Ok(None) };
        if let Some(c) = self.levels.get(p.get_ref().as_str()) {
            return Ok(Some(c.clone()));
        }
        let c = Arc::new(LevelCond::parse(p.get_ref()).map_err(|m| cx.err(p.span(), m))?);
        self.levels.insert(p.get_ref().as_str().into(), c.clone());
        Ok(Some(c))
    }

    /// The process conditions of one end (`exe`, `unit`, `cgroup`,
    /// `container` as that end's keys wrote them); `None` when none is
    /// written.
    pub(super) fn process(
        &mut self,
        cx: &Ctx<'_>,
        [exe, unit, cgroup, container]: [&Option<Spanned<String>>; 4],
    ) -> Result<Option<Arc<ProcessCond>>, PolicyError> {
        let glob = |p: &Option<Spanned<String>>, what, absolute| -> Result<Option<Glob>, PolicyError> {
            p.as_ref().map(|p| Glob::parse(p.get_ref(), what, absolute).map_err(|m| cx.err(p.span(), m))).transpose()
        };
        let c = ProcessCond {
            exe: glob(exe, "exe", true)?,
            unit: glob(unit, "unit", false)?,
            cgroup: glob(cgroup, "cgroup", true)?,
            container: container
                .as_ref()
                .map(|p| {
                    crate::labels::cgroup::parse_container_prefix(p.get_ref())
                        .map_err(|m| cx.err(p.span(), crate::policy::pattern::PatternError::from(m)))
                })
                .transpose()?,
        };
        Ok((c != ProcessCond::default()).then(|| intern(&mut self.processes, c)))
    }

    pub(super) fn compile(&mut self, cx: &Ctx<'_>, sr: &Spanned<RawRule>, sets: &SetMap) -> Result<Rule, PolicyError> {
        compile_rule(self, cx, sr, sets)
    }
}

pub(super) fn compile_rule(
    rc: &mut RuleCompiler,
    cx: &Ctx<'_>,
    sr: &Spanned<RawRule>,
    sets: &SetMap,
) -> Result<Rule, PolicyError> {
    let r = sr.get_ref();
    let name = r.name.get_ref().trim();
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '\'' || c == '"') {
        return Err(cx.err(r.name.span(), "rule name must be non-empty, without spaces or quotes"));
    }
    if name.len() > MAX_RULE_NAME {
        return Err(cx.err(
            r.name.span(),
            format!("rule name is {} bytes long; the longest allowed is {MAX_RULE_NAME}", name.len()),
        ));
    }
    let name = name.to_string();
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
            out.push(resolve_id(&i, group).map_err(|m| cx.err(p.span(), m))?);
        }
        Ok(Some(IdSet(out.into())))
    };
    let nets = |p: &Option<Spanned<toml::Value>>| -> Result<Option<NetSet>, PolicyError> {
        let Some(p) = p else { return Ok(None) };
        let items = scalar_items(p.get_ref())
            .ok_or_else(|| cx.err(p.span(), "addresses must be a CIDR string or a list of them"))?;
        if items.is_empty() {
            return Err(cx.err(p.span(), "empty address list"));
        }
        let nets: Result<Vec<_>, _> = items.iter().map(|s| parse_net(s)).collect();
        nets.map(|n| Some(NetSet(n.into()))).map_err(|m| cx.err(p.span(), m))
    };
    let proto = match &r.proto {
        None => None,
        Some(p) => parse_proto(p.get_ref()).map_err(|m| cx.err(p.span(), m))?,
    };
    let sport = ports(&r.sport)?;
    let dport = ports(&r.dport)?;
    if (sport.is_some() || dport.is_some()) && !proto.is_some_and(|p| p.has_ports()) {
        let span = r.sport.as_ref().or(r.dport.as_ref()).map_or(0..0, |s| s.span());
        return Err(cx.err(span, "sport/dport need proto = \"tcp\", \"udp\" or \"sctp\""));
    }
    let iface = |p: &Option<Spanned<String>>| -> Result<Option<Box<str>>, PolicyError> {
        match p {
            None => Ok(None),
            Some(s) if !s.get_ref().is_empty() && s.get_ref().len() < 16 && !s.get_ref().contains('/') => {
                Ok(Some(s.get_ref().as_str().into()))
            }
            Some(s) => Err(cx.err(s.span(), format!("bad interface name {:?}", s.get_ref()))),
        }
    };
    let uid = ids(&r.uid, false)?.map(|v| intern(&mut rc.ids, v));
    let gid = ids(&r.gid, true)?.map(|v| intern(&mut rc.ids, v));
    let (saddr, daddr) = (nets(&r.saddr)?, nets(&r.daddr)?);
    let rare = RareConds {
        sport,
        secmark: rc.pattern(cx, &r.secmark, sets)?,
        peer: rc.pattern(cx, &r.peer, sets)?,
        source_level: rc.level(cx, &r.source_level)?,
        dest_level: rc.level(cx, &r.dest_level)?,
        peer_level: rc.level(cx, &r.peer_level)?,
        mls: r.mls,
        gid,
        iif: iface(&r.iif)?,
        oif: iface(&r.oif)?,
        source_process: rc.process(cx, [&r.source_exe, &r.source_unit, &r.source_cgroup, &r.source_container])?,
        dest_process: rc.process(cx, [&r.dest_exe, &r.dest_unit, &r.dest_cgroup, &r.dest_container])?,
    };
    Ok(Rule {
        name: name.into(),
        source: rc.pattern(cx, &r.source, sets)?,
        dest: rc.pattern(cx, &r.dest, sets)?,
        uid,
        dport: dport.into(),
        saddr: saddr.map(|v| intern(&mut rc.nets, v)),
        daddr: daddr.map(|v| intern(&mut rc.nets, v)),
        rare: rare.boxed(),
        hits: AtomicU64::new(0),
        line: u32::try_from(cx.line(sr.span().start)).unwrap_or(u32::MAX),
        hook: r.hook.unwrap_or(HookSel::Any),
        proto,
        verdict: r.verdict,
        permissive: r.permissive,
        audit: r.audit,
    })
}
