//! [`PolicyDigest`]: which policy text a host enforces, put in every audit
//! record, the metrics and the start and reload log lines.

use std::fmt;

/// The first 8 bytes of the SHA-256 of a policy file's bytes as loaded,
/// printed `sha256:<16 hex digits>`: enough to tell apart the policies a
/// fleet of hosts enforces (`sha256sum FILE | cut -c1-16` gives the same
/// digits).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyDigest([u8; 8]);

impl PolicyDigest {
    /// The digest of policy bytes.
    pub fn of(bytes: &[u8]) -> PolicyDigest {
        use sha2::Digest as _;
        let full = sha2::Sha256::digest(bytes);
        let mut d = [0u8; 8];
        d.iter_mut().zip(full.iter()).for_each(|(a, b)| *a = *b);
        PolicyDigest(d)
    }

    /// The digest of a regular file's bytes, read in pieces (a policy of
    /// 100,000 rules is never held whole for it).
    pub(super) fn of_file(mut file: &std::fs::File) -> std::io::Result<PolicyDigest> {
        use sha2::Digest as _;
        use std::io::{Read as _, Seek as _};
        file.rewind()?;
        let mut h = sha2::Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => h.update(buf.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let full = h.finalize();
        let mut d = [0u8; 8];
        d.iter_mut().zip(full.iter()).for_each(|(a, b)| *a = *b);
        Ok(PolicyDigest(d))
    }
}

impl fmt::Display for PolicyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}
