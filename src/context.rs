//! SELinux security contexts (`user:role:type[:range]`) as a validated, cheap-to-clone type.
//!
//! Owns parsing and printing of contexts; it does not read contexts from the
//! kernel (that is `labels`) and does not match them (that is `policy`).

use crate::mls::{MlsError, Range};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// Why a context string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    #[error("security context {0:?} must have the form user:role:type[:level]")]
    Shape(String),
    #[error("bad identifier {0:?} in security context (letters, digits, '_', '.' and '-' only)")]
    Identifier(String),
    #[error("bad MLS range in security context: {0}")]
    Mls(#[from] MlsError),
}

/// Whether `s` is a valid SELinux identifier (user, role or type name).
pub fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
        && !s.starts_with('-')
}

#[derive(PartialEq, Eq, Hash)]
struct Parts {
    user: Box<str>,
    role: Box<str>,
    type_: Box<str>,
    range: Option<Range>,
}

/// The parts and their hash, taken once when the context is built: a range
/// is two 128-byte category bitmaps, too much to hash on every cache lookup
/// of the per-packet path.
struct Inner {
    parts: Parts,
    hash: u64,
}

impl Inner {
    fn new(parts: Parts) -> Arc<Inner> {
        use std::hash::BuildHasher as _;
        // A fixed seed: equal parts hash equally in every context built.
        let hash = foldhash::fast::FixedState::with_seed(0x6c61_6265_6c67_6174).hash_one(&parts);
        Arc::new(Inner { parts, hash })
    }
}

/// A parsed SELinux security context. Cloning is a reference-count bump;
/// hashing writes a hash taken once; comparing two clones of one context is
/// a pointer comparison.
#[derive(Clone)]
pub struct SecurityContext(Arc<Inner>);

impl PartialEq for SecurityContext {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || (self.0.hash == other.0.hash && self.0.parts == other.0.parts)
    }
}

impl Eq for SecurityContext {}

impl std::hash::Hash for SecurityContext {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.hash);
    }
}

impl SecurityContext {
    /// Build a context from parts, validating each.
    pub fn new(user: &str, role: &str, type_: &str, range: Option<Range>) -> Result<Self, ContextError> {
        for id in [user, role, type_] {
            if !is_identifier(id) {
                return Err(ContextError::Identifier(id.to_string()));
            }
        }
        Ok(SecurityContext(Inner::new(Parts { user: user.into(), role: role.into(), type_: type_.into(), range })))
    }

    /// The context given to packets and sockets labelgate could not label:
    /// `system_u:object_r:unlabeled_t:s0`, the kernel's own unlabeled SID.
    pub fn unlabeled() -> Self {
        // Built once and shared: it stands in for every missing label, on
        // the per-packet path.
        static UNLABELED: std::sync::LazyLock<SecurityContext> = std::sync::LazyLock::new(|| {
            // The parts are constant and valid.
            SecurityContext::new("system_u", "object_r", "unlabeled_t", Some(Range::single(crate::mls::Level::s0())))
                .unwrap_or_else(|_| unreachable!("constant context is valid"))
        });
        UNLABELED.clone()
    }

    pub fn user(&self) -> &str {
        &self.0.parts.user
    }
    pub fn role(&self) -> &str {
        &self.0.parts.role
    }
    pub fn type_(&self) -> &str {
        &self.0.parts.type_
    }
    pub fn range(&self) -> Option<&Range> {
        self.0.parts.range.as_ref()
    }

    /// The same context with its MLS range replaced.
    pub fn with_range(&self, range: Range) -> Self {
        let p = &self.0.parts;
        SecurityContext(Inner::new(Parts {
            user: p.user.clone(),
            role: p.role.clone(),
            type_: p.type_.clone(),
            range: Some(range),
        }))
    }
}

impl FromStr for SecurityContext {
    type Err = ContextError;

    /// Parses `user:role:type` or `user:role:type:range`. A trailing NUL (as the
    /// kernel returns from xattrs and `/proc/PID/attr/current`) and a trailing
    /// newline are tolerated.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim_end_matches(['\0', '\n']);
        let mut parts = s.splitn(4, ':');
        let (Some(user), Some(role), Some(type_)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(ContextError::Shape(s.to_string()));
        };
        let range = match parts.next() {
            Some(r) => Some(r.parse::<Range>()?),
            None => None,
        };
        SecurityContext::new(user, role, type_, range)
    }
}

impl fmt::Display for SecurityContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.user(), self.role(), self.type_())?;
        if let Some(r) = self.range() {
            write!(f, ":{r}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for SecurityContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecurityContext({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for s in [
            "system_u:system_r:httpd_t:s0",
            "system_u:system_r:postgresql_t:s1:c0",
            "unconfined_u:unconfined_r:unconfined_t:s0-s0:c0.c1023",
            "system_u:object_r:postgresql_packet_t",
        ] {
            let c: SecurityContext = s.parse().unwrap();
            assert_eq!(c.to_string(), s);
        }
        let c: SecurityContext = "u:r:t:s1:c0\0".parse().unwrap();
        assert_eq!(c.type_(), "t");
        assert_eq!(c.range().unwrap().low().to_string(), "s1:c0");
    }

    #[test]
    fn refuses_bad_contexts() {
        for s in ["", "httpd_t", "a:b", "a:b:", "a::c", "a:b:c:", "a:b:c:s9999", "a b:r:t", "a:r:t:s0-"] {
            assert!(s.parse::<SecurityContext>().is_err(), "{s:?} should be refused");
        }
    }

    #[test]
    fn equality_and_hash_follow_the_value() {
        use std::hash::BuildHasher as _;
        let h = std::hash::RandomState::new();
        let parse = |s: &str| s.parse::<SecurityContext>().unwrap();
        let a = parse("system_u:system_r:httpd_t:s0:c1,c2");
        let b = parse("system_u:system_r:httpd_t:s0:c1,c2");
        assert!(a == b && h.hash_one(&a) == h.hash_one(&b), "two parses of one context");
        let from_parts = parse("system_u:system_r:httpd_t:s0").with_range(*a.range().unwrap());
        assert!(from_parts == a && h.hash_one(&from_parts) == h.hash_one(&a), "built from parts");
        for other in [
            "system_u:system_r:httpd_t:s0:c1",
            "system_u:system_r:httpd_t:s0:c1,c2-s0:c1,c2,c3",
            "system_u:system_r:httpd_t",
            "system_u:system_r:http_t:s0:c1,c2",
            "system_u:object_r:httpd_t:s0:c1,c2",
            "staff_u:system_r:httpd_t:s0:c1,c2",
        ] {
            assert!(parse(other) != a, "{other} differs from {a}");
        }
    }

    #[test]
    fn unlabeled_is_the_kernel_unlabeled_context() {
        assert_eq!(SecurityContext::unlabeled().to_string(), "system_u:object_r:unlabeled_t:s0");
    }
}
