//! Reading a policy file: what is refused before a byte is read (FIFOs,
//! devices, files over [`MAX_POLICY_BYTES`]) and the bounded line sources
//! the parser reads from.

use super::error::PolicyError;

/// The largest policy file read, in bytes (64 MiB; a 100,000-rule policy is
/// about 20 MiB). A longer file is refused before it is parsed, so a wrong
/// path (`/dev/zero`, a growing log) cannot make labelgate read without end.
pub const MAX_POLICY_BYTES: u64 = 64 << 20;

/// Open a policy file for reading: never blocks, refuses what is not a
/// regular file or is longer than [`MAX_POLICY_BYTES`].
pub fn open_policy(path: &std::path::Path) -> Result<std::fs::File, PolicyError> {
    use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| PolicyError::io(path, e))?;
    let meta = file.metadata().map_err(|e| PolicyError::io(path, e))?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let what = if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_char_device() {
            "a character device"
        } else if ft.is_block_device() {
            "a block device"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(PolicyError::file(path, format!("{what}: a policy must be a regular file")));
    }
    if meta.len() > MAX_POLICY_BYTES {
        return Err(too_long(path));
    }
    Ok(file)
}

pub(super) fn too_long(path: &std::path::Path) -> PolicyError {
    PolicyError::file(path, format!("longer than {} MiB, the largest policy file read", MAX_POLICY_BYTES >> 20))
}

/// The whole file as text, reading at most [`MAX_POLICY_BYTES`] (a file
/// that grew since it was opened is refused, not read on).
pub(super) fn read_bounded(path: &std::path::Path, file: &std::fs::File) -> Result<String, PolicyError> {
    use std::io::{Read as _, Seek as _};
    let mut f = file;
    f.rewind().map_err(|e| PolicyError::io(path, e))?;
    let mut text = String::new();
    f.take(MAX_POLICY_BYTES + 1).read_to_string(&mut text).map_err(|e| PolicyError::io(path, e))?;
    if text.len() as u64 > MAX_POLICY_BYTES {
        return Err(too_long(path));
    }
    Ok(text)
}

/// A source of policy lines (each with its newline), read from the start
/// on every call.
pub(in crate::policy) trait Lines {
    fn each(&mut self, f: &mut dyn FnMut(&str) -> Result<(), PolicyError>) -> Result<(), PolicyError>;
}

pub(in crate::policy) struct TextLines<'a>(pub(in crate::policy) &'a str);

impl Lines for TextLines<'_> {
    fn each(&mut self, f: &mut dyn FnMut(&str) -> Result<(), PolicyError>) -> Result<(), PolicyError> {
        self.0.split_inclusive('\n').try_for_each(f)
    }
}

/// A regular file, read from the start on every pass through the same open
/// descriptor (a file replaced by rename in between is still the old one),
/// at most [`MAX_POLICY_BYTES`] of it.
pub(super) struct FileLines<'a> {
    pub(super) path: &'a std::path::Path,
    pub(super) file: &'a std::fs::File,
}

impl Lines for FileLines<'_> {
    fn each(&mut self, f: &mut dyn FnMut(&str) -> Result<(), PolicyError>) -> Result<(), PolicyError> {
        use std::io::{BufRead as _, Read as _, Seek as _};
        let io = |e| PolicyError::io(self.path, e);
        let mut file = self.file;
        file.rewind().map_err(io)?;
        let mut reader = std::io::BufReader::with_capacity(1 << 16, file.take(MAX_POLICY_BYTES + 1));
        let mut line = String::new();
        let mut read = 0u64;
        loop {
            line.clear();
            let n = reader.read_line(&mut line).map_err(io)?;
            if n == 0 {
                return Ok(());
            }
            read += n as u64;
            if read > MAX_POLICY_BYTES {
                return Err(too_long(self.path));
            }
            f(&line)?;
        }
    }
}
