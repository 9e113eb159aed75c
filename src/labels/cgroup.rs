//! A process's cgroup v2 path and what it names: the systemd unit (the
//! deepest `.service` or `.scope` component) and the container id a
//! container runtime wrote into it. Read from `/proc/PID/cgroup`, which is
//! untrusted text: any content yields a value or `None`, never a panic.

use std::sync::Arc;

/// The longest `/proc/PID/cgroup` read, in bytes; a file longer than this
/// (far beyond any real one) is taken as having no cgroup v2 line.
pub const MAX_CGROUP_FILE: usize = 64 * 1024;

/// Length of a full container id, in hex digits.
pub const CONTAINER_ID_LEN: usize = 64;

/// The cgroup v2 facts of one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupInfo {
    /// The cgroup v2 path (the `0::` line), e.g. `/system.slice/nginx.service`.
    pub path: Arc<str>,
    /// The deepest component ending in `.service` or `.scope`.
    pub unit: Option<Arc<str>>,
    /// The 64-hex-digit container id written in the path, if any.
    pub container: Option<Arc<str>>,
}

impl CgroupInfo {
    /// The facts of one cgroup v2 path.
    pub fn from_path(path: &str) -> CgroupInfo {
        CgroupInfo {
            path: Arc::from(path),
            unit: unit_of(path).map(Arc::from),
            container: container_of(path).map(Arc::from),
        }
    }

    /// The cgroup v2 path of the contents of a `/proc/PID/cgroup` file: the
    /// line `0::PATH`. Non-UTF-8 bytes are replaced (U+FFFD); `None` when
    /// there is no such line, the path is not absolute, or the file is
    /// longer than [`MAX_CGROUP_FILE`].
    pub fn parse_proc(bytes: &[u8]) -> Option<CgroupInfo> {
        if bytes.len() > MAX_CGROUP_FILE {
            return None;
        }
        let line = bytes.split(|&b| b == b'\n').find_map(|l| l.strip_prefix(b"0::"))?;
        let path = String::from_utf8_lossy(line);
        path.starts_with('/').then(|| CgroupInfo::from_path(&path))
    }
}

/// The systemd unit a cgroup path names: its deepest component ending in
/// `.service` or `.scope` (`/system.slice/nginx.service` → `nginx.service`).
pub fn unit_of(path: &str) -> Option<&str> {
    path.rsplit('/').find(|c| (c.ends_with(".service") && c.len() > 8) || (c.ends_with(".scope") && c.len() > 6))
}

fn full_id(s: &str) -> Option<&str> {
    (s.len() == CONTAINER_ID_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(s)
}

/// The container id a runtime wrote into a cgroup path, deepest first:
/// `libpod-ID.scope` (podman; `libpod-conmon-ID.scope` is podman's monitor,
/// not a container), `docker-ID.scope` or `/docker/ID` (docker),
/// `cri-containerd-ID.scope` (containerd/CRI), `crio-ID.scope` (CRI-O),
/// each ID 64 lowercase hex digits.
pub fn container_of(path: &str) -> Option<&str> {
    let comps: Vec<&str> = path.split('/').collect();
    for (i, c) in comps.iter().enumerate().rev() {
        if let Some(scope) = c.strip_suffix(".scope") {
            for prefix in ["libpod-", "docker-", "cri-containerd-", "crio-"] {
                if let Some(id) = scope.strip_prefix(prefix).and_then(full_id) {
                    return Some(id);
                }
            }
        }
        if i > 0 && comps.get(i - 1) == Some(&"docker") {
            if let Some(id) = full_id(c) {
                return Some(id);
            }
        }
    }
    None
}

/// Why a container id in a rule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContainerIdError {
    #[error("container id {0:?} is not hexadecimal (container names are not resolved: give the id)")]
    NotHex(String),
    #[error("container id {0:?} is shorter than 12 hex digits")]
    TooShort(String),
    #[error("container id {0:?} is longer than 64 hex digits")]
    TooLong(String),
}

/// A container id prefix as a rule writes it: 12 to 64 hex digits, taken
/// in lower case.
pub fn parse_container_prefix(s: &str) -> Result<Box<str>, ContainerIdError> {
    let shown = || s.chars().take(80).collect::<String>();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ContainerIdError::NotHex(shown()));
    }
    if s.len() < 12 {
        return Err(ContainerIdError::TooShort(shown()));
    }
    if s.len() > CONTAINER_ID_LEN {
        return Err(ContainerIdError::TooLong(shown()));
    }
    Ok(s.to_ascii_lowercase().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn units_are_the_deepest_service_or_scope() {
        assert_eq!(unit_of("/system.slice/nginx.service"), Some("nginx.service"));
        assert_eq!(unit_of("/system.slice/nginx.service/worker"), Some("nginx.service"));
        assert_eq!(unit_of("/user.slice/user-1000.slice/session-3.scope"), Some("session-3.scope"));
        assert_eq!(unit_of("/user.slice/user-1000.slice/user@1000.service/app.slice/x.scope"), Some("x.scope"));
        assert_eq!(unit_of("/"), None);
        assert_eq!(unit_of("/system.slice"), None);
        assert_eq!(unit_of("/.service"), None);
        assert_eq!(unit_of(""), None);
    }

    #[test]
    fn container_ids_of_each_runtime() {
        for p in [
            format!("/machine.slice/libpod-{ID}.scope"),
            format!("/machine.slice/libpod-{ID}.scope/container"),
            format!("/system.slice/docker-{ID}.scope"),
            format!("/docker/{ID}"),
            format!("/kubepods.slice/kubepods-pod1.slice/cri-containerd-{ID}.scope"),
            format!("/kubepods.slice/kubepods-besteffort.slice/crio-{ID}.scope"),
        ] {
            assert_eq!(container_of(&p), Some(ID), "{p}");
            assert_eq!(CgroupInfo::from_path(&p).container.as_deref(), Some(ID), "{p}");
        }
        for p in [
            format!("/machine.slice/libpod-conmon-{ID}.scope"),
            format!("/machine.slice/libpod-{}.scope", &ID[..63]),
            format!("/machine.slice/libpod-{}.scope", ID.to_uppercase()),
            format!("/machine.slice/libpod-{ID}0.scope"),
            format!("/{ID}"),
            format!("/notdocker/{ID}"),
            format!("/machine.slice/podman-{ID}.scope"),
            "/system.slice/nginx.service".into(),
            String::new(),
        ] {
            assert_eq!(container_of(&p), None, "{p}");
        }
    }

    #[test]
    fn proc_cgroup_files_including_hostile_ones() {
        let hybrid = b"12:pids:/system.slice/web.service\n1:name=systemd:/x\n0::/system.slice/web.service\n";
        let c = CgroupInfo::parse_proc(hybrid).unwrap();
        assert_eq!(&*c.path, "/system.slice/web.service");
        assert_eq!(c.unit.as_deref(), Some("web.service"));
        assert_eq!(c.container, None);
        assert_eq!(CgroupInfo::parse_proc(b"0::/a\n0::/b\n").unwrap().path.as_ref(), "/a");
        assert_eq!(CgroupInfo::parse_proc(b""), None);
        assert_eq!(CgroupInfo::parse_proc(b"1:name=systemd:/x\n"), None);
        assert_eq!(CgroupInfo::parse_proc(b"0::relative\n"), None);
        assert_eq!(CgroupInfo::parse_proc(b"0::"), None);
        assert_eq!(CgroupInfo::parse_proc(b" 0::/x\n"), None);
        let huge = [b"0::/".as_slice(), &vec![b'a'; MAX_CGROUP_FILE]].concat();
        assert_eq!(CgroupInfo::parse_proc(&huge), None);
        let long = [b"0::/".as_slice(), &vec![b'a'; 60_000], b".service"].concat();
        assert_eq!(CgroupInfo::parse_proc(&long).unwrap().unit.map(|u| u.len()), Some(60_008));
        let c = CgroupInfo::parse_proc(b"0::/sys\xff.slice/a\xfe.service\n").unwrap();
        assert_eq!(c.unit.as_deref(), Some("a\u{fffd}.service"));
        assert_eq!(CgroupInfo::parse_proc(b"0::/\0/\n").unwrap().unit, None);
    }

    #[test]
    fn rule_container_ids() {
        assert_eq!(parse_container_prefix("0123456789AB").as_deref(), Ok("0123456789ab"));
        assert_eq!(parse_container_prefix(ID).as_deref(), Ok(ID));
        assert!(matches!(parse_container_prefix("0123456789a"), Err(ContainerIdError::TooShort(_))));
        assert!(matches!(parse_container_prefix("web-frontend-1"), Err(ContainerIdError::NotHex(_))));
        assert!(matches!(parse_container_prefix(""), Err(ContainerIdError::NotHex(_))));
        assert!(matches!(parse_container_prefix(&format!("{ID}0")), Err(ContainerIdError::TooLong(_))));
    }
}
