//! The policy file format (TOML) and its compilation into [`Compiled`]
//! parts, which `mod.rs` assembles into a `Policy`; every refusal names the
//! file, line and column.

use super::pattern::{parse_net, ContextPattern, IdSet, LevelCond, NetSet, PortSet};
use super::rule::{AddressLabel, DoiMap, HookSel, MlsRelation, Mode, RareConds, Rule, RuleVerdict, Verdict};
use super::scope::ScopeEntry;
use crate::packet::Proto;
use serde::Deserialize;
use serde_spanned::Spanned;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// The largest policy file read, in bytes (64 MiB; a 100,000-rule policy is
/// about 20 MiB). A longer file is refused before it is parsed, so a wrong
/// path (`/dev/zero`, a growing log) cannot make labelgate read without end.
pub const MAX_POLICY_BYTES: u64 = 64 << 20;

/// The longest rule name, in bytes. Every audit record and metric line
/// carries the name of the rule that decided it.
pub const MAX_RULE_NAME: usize = 255;

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
    pub(super) fn io(path: &std::path::Path, error: std::io::Error) -> Self {
        PolicyError::Io { origin: path.display().to_string(), error }
    }

    fn file(path: &std::path::Path, message: String) -> Self {
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

struct Ctx<'a> {
    text: &'a str,
    origin: &'a str,
    /// Line number of `text`'s first line in the file (`text` may be one
    /// `[[rule]]` section of it).
    first_line: usize,
    /// Byte offset where each line starts, so a line number is a binary
    /// search rather than a scan from the top (100,000 rules).
    line_starts: Vec<usize>,
}

impl<'a> Ctx<'a> {
    fn new(text: &'a str, origin: &'a str, first_line: usize) -> Self {
        let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Ctx { text, origin, first_line, line_starts }
    }

    /// 1-based line (in the file) of a byte offset.
    fn line(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&s| s <= offset).max(1) + self.first_line - 1
    }

    /// 1-based line and column (in characters) of a byte offset.
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let i = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let start = self.line_starts.get(i - 1).copied().unwrap_or(0);
        let column = self.text.get(start..offset).map_or(0, |l| l.chars().count()) + 1;
        (i + self.first_line - 1, column)
    }

    fn err(&self, span: Range<usize>, message: impl fmt::Display) -> PolicyError {
        let (line, column) = self.line_col(span.start);
        let message = message.to_string();
        let message = excerpt(&message).into_owned();
        PolicyError::Invalid { origin: self.origin.to_string(), line, column, message }
    }
}

/// The file as written, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    mode: Option<Mode>,
    default: Option<RuleVerdict>,
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
    scope: Option<Spanned<Vec<Spanned<RawScope>>>>,
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
    verdict: RuleVerdict,
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
pub(super) fn scalar_items(v: &toml::Value) -> Option<Vec<String>> {
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

/// One `[[rule]]` section parsed on its own.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSection {
    rule: Vec<Spanned<RawRule>>,
}

/// A policy file compiled: what the policy table holds, before its rules
/// are indexed and its digest taken.
pub(super) struct Compiled {
    pub mode: Mode,
    /// The verdict when no rule matches.
    pub default: RuleVerdict,
    /// The verdict for a packet that cannot be parsed.
    pub malformed: Verdict,
    /// Source types whose denials are let through and recorded.
    pub permissive_domains: Vec<String>,
    /// The rules, in file order.
    pub rules: Vec<Rule>,
    /// Static labels of remote addresses, longest prefix first.
    pub address_labels: Vec<AddressLabel>,
    /// How each CIPSO/CALIPSO DOI maps to MLS levels.
    pub dois: HashMap<u32, DoiMap>,
    /// The type sets as written (name without `@` to member types).
    pub sets: HashMap<String, Vec<String>>,
    /// The `[[scope]]` entries; `None` when the policy declares none.
    pub scope: Option<Vec<ScopeEntry>>,
}

/// Everything in a policy but its rules, compiled.
struct Head {
    mode: Mode,
    default: RuleVerdict,
    malformed: Verdict,
    permissive_domains: Vec<String>,
    sets: SetMap,
    set_lists: HashMap<String, Vec<String>>,
    address_labels: Vec<AddressLabel>,
    dois: HashMap<u32, DoiMap>,
    scope: Option<Vec<ScopeEntry>>,
}

fn toml_err(cx: &Ctx<'_>, e: toml::de::Error) -> PolicyError {
    let span = e.span().unwrap_or(0..0);
    cx.err(span, e.message().trim_end())
}

pub(super) fn compile(text: &str, origin: &str) -> Result<Compiled, PolicyError> {
    compile_sections(&mut TextLines(text), origin).or_else(|_| compile_whole(text, origin))
}

/// Read and compile a policy file without holding its whole text: the file
/// is read twice, line by line (see [`compile_sections`]). On any error the
/// file is read whole and compiled as one document for the precise message.
///
/// Only a regular file of at most [`MAX_POLICY_BYTES`] is read. The file is
/// opened with `O_NONBLOCK` and checked with `fstat` before anything is
/// read, so a FIFO (whose open would wait for a writer and whose reads would
/// wait for data) or a device is refused at once instead of blocking or
/// reading forever.
pub(super) fn load_from(path: &std::path::Path, file: &std::fs::File) -> Result<Compiled, PolicyError> {
    let origin = path.display().to_string();
    compile_sections(&mut FileLines { path, file }, &origin).or_else(|_| {
        let text = read_bounded(path, file)?;
        compile_whole(&text, &origin)
    })
}

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

fn too_long(path: &std::path::Path) -> PolicyError {
    PolicyError::file(path, format!("longer than {} MiB, the largest policy file read", MAX_POLICY_BYTES >> 20))
}

/// The whole file as text, reading at most [`MAX_POLICY_BYTES`] (a file
/// that grew since it was opened is refused, not read on).
fn read_bounded(path: &std::path::Path, file: &std::fs::File) -> Result<String, PolicyError> {
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

/// Compile the policy as one TOML document (the reference path).
pub(super) fn compile_whole(text: &str, origin: &str) -> Result<Compiled, PolicyError> {
    let cx = Ctx::new(text, origin, 1);
    let raw: RawPolicy = toml::from_str(text).map_err(|e| toml_err(&cx, e))?;
    // Sets, then rules, then address labels and DOIs: the first error found
    // in that order is the one reported.
    let mut head = head_sets(&cx, &raw)?;
    let mut rc = RuleCompiler::default();
    let mut rules = Vec::with_capacity(raw.rule.len());
    let mut names = HashSet::new();
    for r in &raw.rule {
        let rule = rc.compile(&cx, r, &head.sets)?;
        if !names.insert(rule.name.clone()) {
            return Err(cx.err(r.get_ref().name.span(), format!("duplicate rule name {:?}", rule.name)));
        }
        rules.push(rule);
    }
    head_labels(&cx, &raw, &mut head)?;
    Ok(assemble(head, rules))
}

/// A source of policy lines (each with its newline), read from the start
/// on every call.
pub(super) trait Lines {
    fn each(&mut self, f: &mut dyn FnMut(&str) -> Result<(), PolicyError>) -> Result<(), PolicyError>;
}

pub(super) struct TextLines<'a>(pub(super) &'a str);

impl Lines for TextLines<'_> {
    fn each(&mut self, f: &mut dyn FnMut(&str) -> Result<(), PolicyError>) -> Result<(), PolicyError> {
        self.0.split_inclusive('\n').try_for_each(f)
    }
}

/// A regular file, read from the start on every pass through the same open
/// descriptor (a file replaced by rename in between is still the old one),
/// at most [`MAX_POLICY_BYTES`] of it.
struct FileLines<'a> {
    path: &'a std::path::Path,
    file: &'a std::fs::File,
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

/// The fast path: the document without its `[[rule]]` sections first (each
/// replaced by its newlines, so lines and columns stay the file's), then
/// each `[[rule]]` section parsed and compiled on its own, so that only one
/// rule's TOML tree (with spans) exists at a time. It refuses every error
/// and layouts it does not split (`[["rule"]]` headers, rules written as an
/// inline array): the caller then compiles the text as one document, whose
/// result and error message are authoritative.
pub(super) fn compile_sections(src: &mut dyn Lines, origin: &str) -> Result<Compiled, PolicyError> {
    let refuse = |what: &str| PolicyError::Invalid { origin: origin.into(), line: 0, column: 0, message: what.into() };
    let mut rest = String::new();
    let mut sections = 0usize;
    let mut split = Splitter::default();
    src.each(&mut |line| {
        match split.next(line) {
            Part::Rest => rest.push_str(line),
            Part::RuleStart | Part::Rule => {
                if line.ends_with('\n') {
                    rest.push('\n');
                }
            }
        }
        if split.started {
            sections += 1;
        }
        Ok(())
    })?;
    if !split.lex.neutral() {
        return Err(refuse("unterminated string or brackets"));
    }
    let head = {
        let cx = Ctx::new(&rest, origin, 1);
        let raw: RawPolicy = toml::from_str(&rest).map_err(|e| toml_err(&cx, e))?;
        if !raw.rule.is_empty() {
            return Err(refuse("rules outside [[rule]] sections"));
        }
        compile_head(&cx, &raw)?
    };
    drop(rest);

    let mut rc = RuleCompiler::default();
    let mut rules = Vec::with_capacity(sections);
    let mut chunk = String::new();
    let mut chunk_line = 0;
    let mut flush = |chunk: &mut String, line: usize, rules: &mut Vec<Rule>| -> Result<(), PolicyError> {
        if line > 0 {
            let cx = Ctx::new(chunk, origin, line);
            let section: RuleSection = toml::from_str(chunk).map_err(|e| toml_err(&cx, e))?;
            for r in &section.rule {
                rules.push(rc.compile(&cx, r, &head.sets)?);
            }
        }
        chunk.clear();
        Ok(())
    };
    let mut split = Splitter::default();
    src.each(&mut |line| {
        match split.next(line) {
            Part::RuleStart => {
                flush(&mut chunk, chunk_line, &mut rules)?;
                chunk_line = split.line;
                chunk.push_str(line);
            }
            Part::Rule => chunk.push_str(line),
            Part::Rest => {
                flush(&mut chunk, chunk_line, &mut rules)?;
                chunk_line = 0;
            }
        }
        Ok(())
    })?;
    flush(&mut chunk, chunk_line, &mut rules)?;
    if rules.len() != sections {
        return Err(refuse("the file changed while it was read"));
    }

    // Duplicate names: sort indices by name rather than keep a second copy of
    // every name in a set.
    let mut order: Vec<u32> = (0..rules.len() as u32).collect();
    let name = |i: &u32| rules.get(*i as usize).map_or("", |r| r.name.as_str());
    order.sort_unstable_by(|a, b| name(a).cmp(name(b)));
    if order.windows(2).any(|w| w.first().map(name) == w.get(1).map(name)) {
        return Err(refuse("duplicate rule name"));
    }
    drop(order);
    Ok(assemble(head, rules))
}

/// Which part of the policy a line belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Rest,
    /// The `[[rule]]` header line of a section.
    RuleStart,
    Rule,
}

/// Finds the `[[rule]]` sections line by line: table headers are lines
/// starting with `[` outside strings and bracketed values.
#[derive(Default)]
struct Splitter {
    lex: Lexer,
    /// 1-based number of the last line seen.
    line: usize,
    in_rule: bool,
    /// Whether the last line started a `[[rule]]` section.
    started: bool,
}

impl Splitter {
    fn next(&mut self, line: &str) -> Part {
        self.line += 1;
        self.started = false;
        if self.lex.neutral() {
            if let Some(is_rule) = header(line) {
                self.in_rule = is_rule;
                self.started = is_rule;
            }
        }
        self.lex.scan(line);
        match (self.in_rule, self.started) {
            (_, true) => Part::RuleStart,
            (true, false) => Part::Rule,
            (false, false) => Part::Rest,
        }
    }
}

fn assemble(h: Head, rules: Vec<Rule>) -> Compiled {
    Compiled {
        mode: h.mode,
        default: h.default,
        malformed: h.malformed,
        permissive_domains: h.permissive_domains,
        rules,
        address_labels: h.address_labels,
        dois: h.dois,
        sets: h.set_lists,
        scope: h.scope,
    }
}

/// Whether a line outside values is a table header, and if so whether it is
/// exactly `[[rule]]` (spaces and a comment allowed).
fn header(line: &str) -> Option<bool> {
    let t = line.trim_start();
    if !t.starts_with('[') {
        return None;
    }
    let is_rule = t
        .strip_prefix("[[")
        .map(str::trim_start)
        .and_then(|t| t.strip_prefix("rule"))
        .map(str::trim_start)
        .and_then(|t| t.strip_prefix("]]"))
        .map(str::trim)
        .is_some_and(|t| t.is_empty() || t.starts_with('#'));
    Some(is_rule)
}

/// Just enough TOML lexing to know whether a line starts outside every
/// string and bracketed value.
#[derive(Default)]
struct Lexer {
    depth: usize,
    /// Inside a multi-line string ended by this quote character (three of them).
    multiline: Option<u8>,
}

impl Lexer {
    fn neutral(&self) -> bool {
        self.depth == 0 && self.multiline.is_none()
    }

    fn scan(&mut self, line: &str) {
        let b = line.as_bytes();
        let at = |i: usize| b.get(i).copied();
        let triple = |i: usize, q: u8| b.get(i..i + 3).is_some_and(|s| s.iter().all(|&c| c == q));
        let mut i = 0;
        while let Some(c) = at(i) {
            if let Some(q) = self.multiline {
                if q == b'"' && c == b'\\' {
                    i += 2;
                } else if triple(i, q) {
                    // Up to two more quotes belong to the string's content.
                    i += 3;
                    let mut extra = 0;
                    while extra < 2 && at(i) == Some(q) {
                        i += 1;
                        extra += 1;
                    }
                    self.multiline = None;
                } else {
                    i += 1;
                }
                continue;
            }
            match c {
                b'#' => return,
                b'"' | b'\'' if triple(i, c) => {
                    self.multiline = Some(c);
                    i += 3;
                    continue;
                }
                b'"' | b'\'' => {
                    i += 1;
                    while let Some(d) = at(i) {
                        if d == c {
                            break;
                        }
                        if c == b'"' && d == b'\\' {
                            i += 1;
                        }
                        i += 1;
                    }
                }
                b'[' | b'{' => self.depth += 1,
                b']' | b'}' => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
            i += 1;
        }
    }
}

fn compile_head(cx: &Ctx<'_>, raw: &RawPolicy) -> Result<Head, PolicyError> {
    let mut head = head_sets(cx, raw)?;
    head_labels(cx, raw, &mut head)?;
    Ok(head)
}

/// Sets and permissive domains (what rules need), and the global settings.
fn head_sets(cx: &Ctx<'_>, raw: &RawPolicy) -> Result<Head, PolicyError> {
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
fn head_labels(cx: &Ctx<'_>, raw: &RawPolicy, head: &mut Head) -> Result<(), PolicyError> {
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

/// A `[[scope]]` entry as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScope {
    hook: Option<HookSel>,
    proto: Option<Spanned<String>>,
    dport: Option<Spanned<toml::Value>>,
    saddr: Option<Spanned<toml::Value>>,
    daddr: Option<Spanned<toml::Value>>,
}

/// A protocol name policies do not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown proto {0:?} (expected tcp, udp, icmp, icmpv6, sctp or any)")]
pub struct UnknownProto(String);

/// A protocol as policies name it; `any` is `None`.
fn parse_proto(s: &str) -> Result<Option<Proto>, UnknownProto> {
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
fn compile_scope(cx: &Ctx<'_>, raw: &Spanned<Vec<Spanned<RawScope>>>) -> Result<Vec<ScopeEntry>, PolicyError> {
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

/// Compiles rules, sharing one copy of each distinct context pattern and
/// level condition among all the rules that write it the same way.
#[derive(Default)]
struct RuleCompiler {
    patterns: HashMap<Box<str>, Arc<ContextPattern>>,
    levels: HashMap<Box<str>, Arc<LevelCond>>,
    ids: HashSet<Arc<IdSet>>,
    nets: HashSet<Arc<NetSet>>,
}

/// The shared copy of `v` in `seen`, added if it is new.
fn intern<T: std::hash::Hash + Eq>(seen: &mut HashSet<Arc<T>>, v: T) -> Arc<T> {
    if let Some(a) = seen.get(&v) {
        return a.clone();
    }
    let a = Arc::new(v);
    seen.insert(a.clone());
    a
}

impl RuleCompiler {
    fn pattern(
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

    fn level(&mut self, cx: &Ctx<'_>, p: &Option<Spanned<String>>) -> Result<Option<Arc<LevelCond>>, PolicyError> {
        let Some(p) = p else { return Ok(None) };
        if let Some(c) = self.levels.get(p.get_ref().as_str()) {
            return Ok(Some(c.clone()));
        }
        let c = Arc::new(LevelCond::parse(p.get_ref()).map_err(|m| cx.err(p.span(), m))?);
        self.levels.insert(p.get_ref().as_str().into(), c.clone());
        Ok(Some(c))
    }

    fn compile(&mut self, cx: &Ctx<'_>, sr: &Spanned<RawRule>, sets: &SetMap) -> Result<Rule, PolicyError> {
        compile_rule(self, cx, sr, sets)
    }
}

fn compile_rule(
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

#[cfg(test)]
mod file_tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn load_err(path: &std::path::Path) -> String {
        match crate::policy::Policy::load(path) {
            Ok(_) => panic!("{} was accepted", path.display()),
            Err(e) => format!("{:#}", anyhow::Error::new(e)),
        }
    }

    #[test]
    fn a_fifo_or_a_device_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("policy.fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let t = Instant::now();
        let e = load_err(&fifo);
        assert!(e.contains("a FIFO: a policy must be a regular file"), "{e}");
        let e = load_err(std::path::Path::new("/dev/zero"));
        assert!(e.contains("/dev/zero: a character device"), "{e}");
        let e = load_err(dir.path());
        assert!(e.contains("a directory"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
        // The same call reads a regular file (so the refusals above are not a broken loader).
        let ok = dir.path().join("ok.toml");
        std::fs::write(&ok, "default = \"accept\"\n").unwrap();
        assert!(crate::policy::Policy::load(&ok).is_ok());
    }

    #[test]
    fn a_file_over_the_limit_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.toml");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(MAX_POLICY_BYTES + 1).unwrap();
        let e = load_err(&big);
        assert!(e.contains("longer than 64 MiB"), "{e}");
        f.set_len(1000).unwrap();
        // 1000 NUL bytes: read and refused as TOML, not as too long.
        assert!(!load_err(&big).contains("longer than"));
    }

    #[test]
    fn a_missing_file_names_the_os_error_once() {
        let e = load_err(std::path::Path::new("/nonexistent/labelgate.toml"));
        assert_eq!(e, "/nonexistent/labelgate.toml: No such file or directory (os error 2)");
    }

    #[test]
    fn a_huge_value_comes_back_as_a_bounded_excerpt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.toml");
        let huge = "x".repeat(1 << 20);
        for text in [
            format!("default = \"{huge}\"\n"),
            format!("[[rule]]\nname = \"r\"\nverdict = \"drop\"\nproto = \"{huge}\"\n"),
            format!("[[rule]]\nname = \"r\"\nverdict = \"drop\"\nsource = \"{huge}:b:c\"\n"),
            format!("[sets]\nweb = [\"{huge}\"]\n"),
            format!("[[rule]]\nname = \"r\"\nverdict = \"drop\"\nuid = \"{huge}\"\n"),
        ] {
            std::fs::write(&path, &text).unwrap();
            let e = load_err(&path);
            assert!(e.len() < 1024, "{} bytes: {}", e.len(), excerpt(&e));
            assert!(e.contains("bytes cut"), "{e}");
            let e = compile(&text, "t").err().unwrap().to_string();
            assert!(e.len() < 1024, "{} bytes", e.len());
        }
        // The end of the message (what was expected) survives the cut.
        std::fs::write(&path, format!("default = \"{huge}\"\n")).unwrap();
        assert!(load_err(&path).contains("accept"), "{}", load_err(&path));
    }

    #[test]
    fn excerpts_keep_short_messages_and_char_boundaries() {
        assert_eq!(excerpt("short"), "short");
        let s = "é".repeat(2000);
        let e = excerpt(&s);
        assert!(e.len() <= MAX_MESSAGE + 64 && e.contains("bytes cut"), "{e}");
    }

    #[test]
    fn rule_names_are_bounded() {
        let rule = |n: &str| format!("[[rule]]\nname = \"{n}\"\nverdict = \"drop\"\n");
        assert!(compile(&rule(&"a".repeat(MAX_RULE_NAME)), "t").is_ok());
        let e = compile(&rule(&"a".repeat(MAX_RULE_NAME + 1)), "t").err().unwrap().to_string();
        assert!(e.contains("rule name is 256 bytes long; the longest allowed is 255"), "{e}");
        let e = compile(&rule(&"a".repeat(1 << 20)), "t").err().unwrap().to_string();
        assert!(e.len() < 1024, "{e}");
    }

    #[test]
    fn ids_are_numbers_or_names() {
        assert_eq!(resolve_id("48", false), Ok(48));
        assert_eq!(resolve_id("root", false), Ok(0));
        assert_eq!(resolve_id("root", true), Ok(0));
        assert!(resolve_id("no-such-user-here", false).unwrap_err().to_string().contains("unknown user"));
        // A name no account can have never reaches NSS (systemd's userdb aborts on very long ones).
        assert!(resolve_id(&"u".repeat(1 << 20), false).unwrap_err().to_string().starts_with("bad user name"));
        assert!(resolve_id("a b", true).unwrap_err().to_string().starts_with("bad group name"));
    }
}
