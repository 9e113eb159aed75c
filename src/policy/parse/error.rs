//! Refusals: [`PolicyError`], bounded excerpts of quoted text, and the
//! context that turns a byte offset into a file, line and column.

use std::fmt;
use std::ops::Range;

/// Messages quoting the policy's text are cut to at most about this many
/// bytes (the start and the end of the message are kept).
pub const MAX_MESSAGE: usize = 512;

/// A policy that could not be read or compiled.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The OS error is part of the message (not a separate `source`), so
    /// that a report printing the error chain does not repeat it.
    #[error("{origin}: {error}")]
    Io { origin: String, error: std::io::Error },
    /// The path names something other than a regular file, or one too long.
    #[error("{origin}: {message}")]
    File { origin: String, message: String },
    #[error("{origin}:{line}:{column}: {message}")]
    Invalid { origin: String, line: usize, column: usize, message: String },
}

impl PolicyError {
    pub(in crate::policy) fn io(path: &std::path::Path, error: std::io::Error) -> Self {
        PolicyError::Io { origin: path.display().to_string(), error }
    }

    pub(super) fn file(path: &std::path::Path, message: String) -> Self {
        PolicyError::File { origin: path.display().to_string(), message }
    }
}

/// `msg` cut to a bounded excerpt: a message longer than [`MAX_MESSAGE`]
/// bytes keeps its first and last part (what was wrong and what was
/// expected) and says how much was left out, so a 50 MB value in a policy
/// never comes back as a 50 MB error or log line.
pub fn excerpt(msg: &str) -> std::borrow::Cow<'_, str> {
    if msg.len() <= MAX_MESSAGE {
        return msg.into();
    }
    let keep = MAX_MESSAGE / 2 - 32;
    let mut head = keep;
    while !msg.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = msg.len() - keep;
    while !msg.is_char_boundary(tail) {
        tail += 1;
    }
    let (first, last) = (msg.get(..head).unwrap_or(""), msg.get(tail..).unwrap_or(""));
    format!("{first}[... {} bytes cut ...]{last}", tail - head).into()
}

pub(super) struct Ctx<'a> {
    pub(super) text: &'a str,
    pub(super) origin: &'a str,
    /// Line number of `text`'s first line in the file (`text` may be one
    /// `[[rule]]` section of it).
    pub(super) first_line: usize,
    /// Byte offset where each line starts, so a line number is a binary
    /// search rather than a scan from the top (100,000 rules).
    pub(super) line_starts: Vec<usize>,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(text: &'a str, origin: &'a str, first_line: usize) -> Self {
        let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Ctx { text, origin, first_line, line_starts }
    }

    /// 1-based line (in the file) of a byte offset.
    pub(super) fn line(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&s| s <= offset).max(1) + self.first_line - 1
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub(super) fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let i = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let start = self.line_starts.get(i - 1).copied().unwrap_or(0);
        let column = self.text.get(start..offset).map_or(0, |l| l.chars().count()) + 1;
        (i + self.first_line - 1, column)
    }

    pub(super) fn err(&self, span: Range<usize>, message: impl fmt::Display) -> PolicyError {
        let (line, column) = self.line_col(span.start);
        let message = message.to_string();
        let message = excerpt(&message).into_owned();
        PolicyError::Invalid { origin: self.origin.to_string(), line, column, message }
    }
}

pub(super) fn toml_err(cx: &Ctx<'_>, e: toml::de::Error) -> PolicyError {
    let span = e.span().unwrap_or(0..0);
    cx.err(span, e.message().trim_end())
}
