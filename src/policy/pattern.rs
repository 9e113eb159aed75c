//! The matchers a compiled rule is made of: context patterns, MLS level
//! conditions, port sets, id sets and address sets.

use crate::context::{is_identifier, SecurityContext};
use crate::mls::{Level, MlsError, Range};
use ipnet::IpNet;
use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

/// Why a pattern, level condition, port or address was refused. The
/// messages are the policy file's error messages (the parser adds where).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error(transparent)]
    Mls(#[from] MlsError),
    #[error("empty context pattern")]
    EmptyContext,
    #[error("context pattern {0:?} must be a type, @set, or user:role:type[:level]")]
    ContextShape(String),
    #[error("unknown type set @{0}")]
    UnknownSet(String),
    #[error("bad type name {0:?}")]
    BadType(String),
    #[error("bad context field {0:?}")]
    BadField(String),
    #[error("bad port {0:?} (expected 0-65535)")]
    BadPort(String),
    #[error("port range {0:?} runs backwards")]
    BackwardsPorts(String),
    #[error("empty port list")]
    EmptyPorts,
    #[error("bad address or CIDR {0:?}")]
    BadAddress(String),
    #[error("empty {0} pattern")]
    EmptyGlob(&'static str),
    #[error("{what} pattern {pattern:?} must start with '/' or '*'")]
    RelativeGlob { what: &'static str, pattern: String },
    #[error(transparent)]
    ContainerId(#[from] crate::labels::cgroup::ContainerIdError),
}

/// A named type set as the compiler resolves it.
pub type TypeSet = Arc<HashSet<Box<str>>>;

/// One field of a context pattern: anything, or exactly this name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    Any,
    Exact(Box<str>),
}

impl Field {
    fn matches(&self, s: &str) -> bool {
        match self {
            Field::Any => true,
            Field::Exact(e) => &**e == s,
        }
    }
}

/// The type part of a context pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TypePattern {
    Any,
    One(Box<str>),
    /// A named set (`@web`), resolved at compile time.
    Set {
        name: Box<str>,
        types: Arc<HashSet<Box<str>>>,
    },
}

impl TypePattern {
    pub fn matches(&self, t: &str) -> bool {
        match self {
            TypePattern::Any => true,
            TypePattern::One(x) => &**x == t,
            TypePattern::Set { types, .. } => types.contains(t),
        }
    }

    /// The concrete types this pattern names, if it names any (for the index).
    pub fn named_types(&self) -> Option<Vec<&str>> {
        match self {
            TypePattern::Any => None,
            TypePattern::One(t) => Some(vec![t]),
            TypePattern::Set { types, .. } => Some(types.iter().map(|t| &**t).collect()),
        }
    }
}

/// A condition on an MLS level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LevelCond {
    /// `>= L`: the level dominates L.
    Dominates(Level),
    /// `<= L`: the level is dominated by L.
    DominatedBy(Level),
    /// `= L`: equal to L.
    Equal(Level),
    /// `lo-hi` (or a bare level): the whole range lies within.
    Within(Range),
}

impl LevelCond {
    /// Parses `>= s1:c0`, `<= s2`, `= s0`, `s0-s1:c0.c3` or `s1`.
    pub fn parse(s: &str) -> Result<Self, PatternError> {
        let s = s.trim();
        let parse_level = |l: &str| l.trim().parse::<Level>();
        if let Some(rest) = s.strip_prefix(">=") {
            Ok(LevelCond::Dominates(parse_level(rest)?))
        } else if let Some(rest) = s.strip_prefix("<=") {
            Ok(LevelCond::DominatedBy(parse_level(rest)?))
        } else if let Some(rest) = s.strip_prefix('=') {
            Ok(LevelCond::Equal(parse_level(rest)?))
        } else {
            Ok(LevelCond::Within(s.parse::<Range>()?))
        }
    }

    /// Whether a context's range satisfies the condition. The low (effective)
    /// level is compared for `>=`, `<=` and `=`; `Within` needs the whole range.
    pub fn matches(&self, r: &Range) -> bool {
        match self {
            LevelCond::Dominates(l) => r.low().dominates(l),
            LevelCond::DominatedBy(l) => l.dominates(r.low()),
            LevelCond::Equal(l) => r.low() == l,
            LevelCond::Within(w) => w.contains_range(r),
        }
    }
}

impl fmt::Display for LevelCond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LevelCond::Dominates(l) => write!(f, ">= {l}"),
            LevelCond::DominatedBy(l) => write!(f, "<= {l}"),
            LevelCond::Equal(l) => write!(f, "= {l}"),
            LevelCond::Within(r) => write!(f, "{r}"),
        }
    }
}

/// A pattern over security contexts: `httpd_t`, `@web`, `*`, or
/// `user:role:type[:level]` with `*` for any field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContextPattern {
    pub user: Field,
    pub role: Field,
    pub type_: TypePattern,
    pub level: Option<LevelCond>,
    text: Box<str>,
}

impl ContextPattern {
    /// Parse a pattern; `sets` resolves `@name` references.
    pub fn parse(s: &str, sets: &dyn Fn(&str) -> Option<TypeSet>) -> Result<Self, PatternError> {
        let type_of = |t: &str| -> Result<TypePattern, PatternError> {
            if t == "*" {
                Ok(TypePattern::Any)
            } else if let Some(name) = t.strip_prefix('@') {
                let types = sets(name).ok_or_else(|| PatternError::UnknownSet(name.into()))?;
                Ok(TypePattern::Set { name: name.into(), types })
            } else if is_identifier(t) {
                Ok(TypePattern::One(t.into()))
            } else {
                Err(PatternError::BadType(t.into()))
            }
        };
        let field = |f: &str| -> Result<Field, PatternError> {
            if f == "*" {
                Ok(Field::Any)
            } else if is_identifier(f) {
                Ok(Field::Exact(f.into()))
            } else {
                Err(PatternError::BadField(f.into()))
            }
        };
        let s = s.trim();
        if s.is_empty() {
            return Err(PatternError::EmptyContext);
        }
        let parts: Vec<&str> = s.splitn(4, ':').collect();
        let (user, role, type_, level) = match parts.as_slice() {
            [t] => (Field::Any, Field::Any, type_of(t)?, None),
            [u, r, t] => (field(u)?, field(r)?, type_of(t)?, None),
            [u, r, t, l] => {
                let level = if *l == "*" { None } else { Some(LevelCond::parse(l)?) };
                (field(u)?, field(r)?, type_of(t)?, level)
            }
            _ => return Err(PatternError::ContextShape(s.into())),
        };
        Ok(ContextPattern { user, role, type_, level, text: s.into() })
    }

    /// Whether every context this pattern matches is matched by `self` too
    /// (conservative: may say no for some patterns that do cover).
    pub fn covers(&self, other: &ContextPattern) -> bool {
        let field = |a: &Field, b: &Field| matches!(a, Field::Any) || a == b;
        let types = match (&self.type_, other.type_.named_types()) {
            (TypePattern::Any, _) => true,
            (_, None) => false,
            (a, Some(names)) => names.iter().all(|t| a.matches(t)),
        };
        types
            && field(&self.user, &other.user)
            && field(&self.role, &other.role)
            && (self.level.is_none() || self.level == other.level)
    }

    pub fn matches(&self, c: &SecurityContext) -> bool {
        self.type_.matches(c.type_())
            && self.user.matches(c.user())
            && self.role.matches(c.role())
            && match (&self.level, c.range()) {
                (None, _) => true,
                (Some(cond), Some(r)) => cond.matches(r),
                (Some(_), None) => false,
            }
    }
}

impl fmt::Display for ContextPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A set of ports: single ports and inclusive ranges. One port or range
/// (most sets) is held inline, without an allocation of its own.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PortSet(Ranges);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Ranges {
    One([(u16, u16); 1]),
    Many(Box<[(u16, u16)]>),
}

impl PortSet {
    /// Parse `5432`, `"5000-5100"` or a list item of either.
    pub fn parse_item(s: &str) -> Result<(u16, u16), PatternError> {
        let port = |p: &str| p.trim().parse::<u16>().map_err(|_| PatternError::BadPort(p.into()));
        match s.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (port(a)?, port(b)?);
                if a > b {
                    return Err(PatternError::BackwardsPorts(s.into()));
                }
                Ok((a, b))
            }
            None => {
                let p = port(s)?;
                Ok((p, p))
            }
        }
    }

    /// Build from items; refuses an empty list.
    pub fn new(items: Vec<(u16, u16)>) -> Result<Self, PatternError> {
        if items.is_empty() {
            return Err(PatternError::EmptyPorts);
        }
        Ok(PortSet(match <[(u16, u16); 1]>::try_from(items.as_slice()) {
            Ok(one) => Ranges::One(one),
            Err(_) => Ranges::Many(items.into()),
        }))
    }

    /// The ports and ranges, as written.
    pub fn ranges(&self) -> &[(u16, u16)] {
        match &self.0 {
            Ranges::One(r) => r,
            Ranges::Many(r) => r,
        }
    }

    pub fn contains(&self, p: u16) -> bool {
        self.ranges().iter().any(|(a, b)| (*a..=*b).contains(&p))
    }

    /// Whether every port of `other` is in `self` (each of its ranges lies
    /// within one of ours).
    pub fn covers(&self, other: &PortSet) -> bool {
        other.ranges().iter().all(|(lo, hi)| self.ranges().iter().any(|(a, b)| a <= lo && hi <= b))
    }
}

/// An optional [`PortSet`] in the 16 bytes of one: no condition is held as
/// an empty set (which [`PortSet::new`] never makes). `Option<PortSet>`
/// would take 24, and at 100,000 rules that is 800 kB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortCond(PortSet);

impl PortCond {
    /// No condition (an empty boxed slice allocates nothing).
    pub fn none() -> PortCond {
        PortCond(PortSet(Ranges::Many(Box::new([]))))
    }

    /// The condition's ports, if there is a condition.
    pub fn get(&self) -> Option<&PortSet> {
        (!self.0.ranges().is_empty()).then_some(&self.0)
    }
}

impl From<Option<PortSet>> for PortCond {
    fn from(p: Option<PortSet>) -> PortCond {
        p.map_or_else(PortCond::none, PortCond)
    }
}

impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (a, b)) in self.ranges().iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if a == b {
                write!(f, "{a}")?;
            } else {
                write!(f, "{a}-{b}")?;
            }
        }
        Ok(())
    }
}

/// A pattern over a name or path, where `*` stands for any run of
/// characters (`/` included) and every other character for itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Glob(Box<str>);

impl Glob {
    /// The pattern as written; `what` names the key, for the message.
    /// `absolute`: the pattern must start with `/` or `*` (paths).
    pub fn parse(s: &str, what: &'static str, absolute: bool) -> Result<Glob, PatternError> {
        if s.is_empty() {
            return Err(PatternError::EmptyGlob(what));
        }
        if absolute && !s.starts_with(['/', '*']) {
            return Err(PatternError::RelativeGlob { what, pattern: s.chars().take(200).collect() });
        }
        Ok(Glob(s.into()))
    }

    /// Whether `t` matches the whole pattern.
    pub fn matches(&self, t: &str) -> bool {
        let mut parts = self.0.split('*');
        let first = parts.next().unwrap_or("");
        let Some(mut rest) = t.strip_prefix(first) else { return false };
        let mut last = None;
        for p in parts {
            if let Some(prev) = last.replace(p) {
                // A middle part: its leftmost match leaves the most room.
                match rest.find(prev) {
                    Some(i) => rest = rest.get(i + prev.len()..).unwrap_or(""),
                    None => return false,
                }
            }
        }
        match last {
            None => rest.is_empty(),
            Some(end) => rest.len() >= end.len() && rest.ends_with(end),
        }
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a rule requires of the process owning one end (`source_*` or
/// `dest_*` keys): each condition written must hold, and an end with no
/// process (remote, unresolved) matches none.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ProcessCond {
    /// The executable path (`*_exe`).
    pub exe: Option<Glob>,
    /// The systemd unit (`*_unit`).
    pub unit: Option<Glob>,
    /// The cgroup v2 path (`*_cgroup`).
    pub cgroup: Option<Glob>,
    /// A container id prefix, 12 to 64 lower-case hex digits (`*_container`).
    pub container: Option<Box<str>>,
}

/// Which condition of a [`ProcessCond`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessField {
    Exe,
    Unit,
    Cgroup,
    Container,
}

impl ProcessCond {
    /// Whether the end's process `p` meets every condition; on a miss, the
    /// first that failed.
    pub fn check(&self, p: Option<&crate::labels::ProcessInfo>) -> Result<(), ProcessField> {
        fn one<T: ?Sized>(
            c: Option<&T>,
            v: Option<&str>,
            ok: impl Fn(&T, &str) -> bool,
            why: ProcessField,
        ) -> Result<(), ProcessField> {
            match c {
                None => Ok(()),
                Some(c) if v.is_some_and(|v| ok(c, v)) => Ok(()),
                Some(_) => Err(why),
            }
        }
        one(self.exe.as_ref(), p.map(|p| &*p.exe).filter(|e| !e.is_empty()), Glob::matches, ProcessField::Exe)?;
        one(self.unit.as_ref(), p.and_then(|p| p.unit()), Glob::matches, ProcessField::Unit)?;
        one(self.cgroup.as_ref(), p.and_then(|p| p.cgroup_path()), Glob::matches, ProcessField::Cgroup)?;
        one(
            self.container.as_deref(),
            p.and_then(|p| p.container()),
            |c: &str, v| v.starts_with(c),
            ProcessField::Container,
        )
    }
}

/// A set of numeric ids (uids or gids).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdSet(pub Box<[u32]>);

impl IdSet {
    pub fn contains(&self, id: u32) -> bool {
        self.0.contains(&id)
    }

    pub fn covers(&self, other: &IdSet) -> bool {
        other.0.iter().all(|i| self.contains(*i))
    }
}

/// Parse an address or CIDR network (host bits cleared: `10.1.2.3/8` is
/// `10.0.0.0/8`).
pub fn parse_net(s: &str) -> Result<IpNet, PatternError> {
    let s = s.trim();
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok(n.trunc());
    }
    s.parse::<IpAddr>().map(IpNet::from).map_err(|_| PatternError::BadAddress(s.into()))
}

/// A set of networks.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NetSet(pub Box<[IpNet]>);

impl NetSet {
    pub fn contains(&self, a: &IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(a))
    }

    pub fn covers(&self, other: &NetSet) -> bool {
        other.0.iter().all(|o| self.0.iter().any(|n| n.contains(o)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_sets(_: &str) -> Option<Arc<HashSet<Box<str>>>> {
        None
    }
    fn ctx(s: &str) -> SecurityContext {
        s.parse().unwrap()
    }

    #[test]
    fn type_only_and_full_patterns() {
        let p = ContextPattern::parse("httpd_t", &no_sets).unwrap();
        assert!(p.matches(&ctx("system_u:system_r:httpd_t:s0")));
        assert!(!p.matches(&ctx("system_u:system_r:httpd_sys_t:s0")));
        let p = ContextPattern::parse("system_u:*:postgresql_t:s0", &no_sets).unwrap();
        assert!(p.matches(&ctx("system_u:system_r:postgresql_t:s0")));
        assert!(!p.matches(&ctx("staff_u:system_r:postgresql_t:s0")));
        assert!(!p.matches(&ctx("system_u:system_r:postgresql_t:s1")));
        let any = ContextPattern::parse("*", &no_sets).unwrap();
        assert!(any.matches(&ctx("a:b:c")));
    }

    #[test]
    fn sets_and_levels() {
        let web: Arc<HashSet<Box<str>>> = Arc::new(["httpd_t".into(), "nginx_t".into()].into());
        let sets = move |n: &str| (n == "web").then(|| web.clone());
        let p = ContextPattern::parse("@web", &sets).unwrap();
        assert!(p.matches(&ctx("u:r:nginx_t:s0")));
        assert!(!p.matches(&ctx("u:r:sshd_t:s0")));
        assert!(ContextPattern::parse("@nope", &sets).is_err());
        let p = ContextPattern::parse("*:*:*:>= s1:c0", &sets).unwrap();
        assert!(p.matches(&ctx("u:r:t:s1:c0,c1")));
        assert!(!p.matches(&ctx("u:r:t:s0")));
        assert!(!p.matches(&ctx("u:r:t")), "no level cannot satisfy a level condition");
        let p = ContextPattern::parse("*:*:*:s0-s1:c0.c3", &sets).unwrap();
        assert!(p.matches(&ctx("u:r:t:s0-s1:c2")));
        assert!(!p.matches(&ctx("u:r:t:s0-s2")));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for s in ["", "a:b", "a b", "u:r:t:s99999", "u:r:t:>= x", "u:r:bad type"] {
            assert!(ContextPattern::parse(s, &no_sets).is_err(), "{s:?}");
        }
    }

    #[test]
    fn level_conditions() {
        let r = |s: &str| s.parse::<Range>().unwrap();
        assert!(LevelCond::parse(">= s1:c0").unwrap().matches(&r("s1:c0")));
        assert!(!LevelCond::parse(">= s1:c0").unwrap().matches(&r("s0")));
        assert!(LevelCond::parse("<= s1").unwrap().matches(&r("s0")));
        assert!(!LevelCond::parse("<= s1").unwrap().matches(&r("s1:c0")));
        assert!(LevelCond::parse("= s0").unwrap().matches(&r("s0-s3")));
        assert!(LevelCond::parse(">=").is_err());
    }

    #[test]
    fn ports() {
        let s =
            PortSet::new(vec![PortSet::parse_item("80").unwrap(), PortSet::parse_item("8000-8080").unwrap()]).unwrap();
        assert!(s.contains(80) && s.contains(8000) && s.contains(8080));
        assert!(!s.contains(81) && !s.contains(8081));
        assert_eq!(s.to_string(), "80,8000-8080");
        for bad in ["65536", "-1", "x", "10-5", ""] {
            assert!(PortSet::parse_item(bad).is_err(), "{bad:?}");
        }
        assert!(PortSet::new(vec![]).is_err());
        // One range is held inline; it behaves like a list of one.
        let one = PortSet::new(vec![(5432, 5432)]).unwrap();
        assert!(matches!(one.0, Ranges::One(_)));
        assert_eq!(one.ranges(), &[(5432, 5432)]);
        assert!(one.contains(5432) && !one.contains(5433));
        assert!(s.covers(&PortSet::new(vec![(8001, 8002)]).unwrap()) && !one.covers(&s));
        assert_eq!(std::mem::size_of::<PortSet>(), 16, "the one-range case fits in the many-case's pointer");
        assert_eq!(std::mem::size_of::<PortCond>(), 16);
        assert_eq!(PortCond::from(None).get(), None);
        assert_eq!(PortCond::from(Some(one.clone())).get(), Some(&one));
    }

    /// Each refusal is its own variant, and says what the policy file's
    /// messages said when they were strings.
    #[test]
    fn refusals_are_typed_and_keep_their_messages() {
        let no_sets = |_: &str| None;
        let cases: [(Result<(), PatternError>, PatternError, &str); 9] = [
            (ContextPattern::parse(" ", &no_sets).map(drop), PatternError::EmptyContext, "empty context pattern"),
            (
                ContextPattern::parse("a:b", &no_sets).map(drop),
                PatternError::ContextShape("a:b".into()),
                "context pattern \"a:b\" must be a type, @set, or user:role:type[:level]",
            ),
            (
                ContextPattern::parse("@web", &no_sets).map(drop),
                PatternError::UnknownSet("web".into()),
                "unknown type set @web",
            ),
            (
                ContextPattern::parse("a!b", &no_sets).map(drop),
                PatternError::BadType("a!b".into()),
                "bad type name \"a!b\"",
            ),
            (
                ContextPattern::parse("u!:r:t", &no_sets).map(drop),
                PatternError::BadField("u!".into()),
                "bad context field \"u!\"",
            ),
            (
                PortSet::parse_item("x").map(drop),
                PatternError::BadPort("x".into()),
                "bad port \"x\" (expected 0-65535)",
            ),
            (
                PortSet::parse_item("9-3").map(drop),
                PatternError::BackwardsPorts("9-3".into()),
                "port range \"9-3\" runs backwards",
            ),
            (PortSet::new(vec![]).map(drop), PatternError::EmptyPorts, "empty port list"),
            (
                parse_net("10.0.0/8").map(drop),
                PatternError::BadAddress("10.0.0/8".into()),
                "bad address or CIDR \"10.0.0/8\"",
            ),
        ];
        for (got, want, message) in cases {
            let e = got.expect_err(message);
            assert_eq!((&e, e.to_string().as_str()), (&want, message));
        }
        let e = LevelCond::parse(">= s9999").unwrap_err();
        assert!(matches!(e, PatternError::Mls(_)) && e.to_string().starts_with("bad sensitivity"), "{e}");
        assert_eq!(parse_net(" 10.1.2.3/8 ").unwrap().to_string(), "10.0.0.0/8");
    }
}
