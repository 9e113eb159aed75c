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
struct Inner {
    user: Box<str>,
    role: Box<str>,
    type_: Box<str>,
    range: Option<Range>,
}

/// A parsed SELinux security context. Cloning is a reference-count bump.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SecurityContext(Arc<Inner>);

impl SecurityContext {
    /// Build a context from parts, validating each.
    pub fn new(user: &str, role: &str, type_: &str, range: Option<Range>) -> Result<Self, ContextError> {
        for id in [user, role, type_] {
            if !is_identifier(id) {
                return Err(ContextError::Identifier(id.to_string()));
            }
        }
        Ok(SecurityContext(Arc::new(Inner { user: user.into(), role: role.into(), type_: type_.into(), range })))
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
        &self.0.user
    }
    pub fn role(&self) -> &str {
        &self.0.role
    }
    pub fn type_(&self) -> &str {
        &self.0.type_
    }
    pub fn range(&self) -> Option<&Range> {
        self.0.range.as_ref()
    }

    /// The same context with its MLS range replaced.
    pub fn with_range(&self, range: Range) -> Self {
        SecurityContext(Arc::new(Inner {
            user: self.0.user.clone(),
            role: self.0.role.clone(),
            type_: self.0.type_.clone(),
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
        write!(f, "{}:{}:{}", self.0.user, self.0.role, self.0.type_)?;
        if let Some(r) = &self.0.range {
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
    fn unlabeled_is_the_kernel_unlabeled_context() {
        assert_eq!(SecurityContext::unlabeled().to_string(), "system_u:object_r:unlabeled_t:s0");
    }
}
