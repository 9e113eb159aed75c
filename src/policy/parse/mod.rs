//! The policy file format (TOML) and its compilation into a [`Policy`]
//! (rules indexed, digest left to `policy/mod.rs`); every refusal
//! names the file, line and column. The entry points are here; each part of
//! the file has its own module, and they import one way (this module uses
//! them; `rule` and `head` use `raw` and `error`; `file` uses `error`).

mod error;
mod file;
mod head;
mod raw;
mod rule;
mod split;

use super::index::Index;
use super::rule::Rule;
use super::{Policy, PolicyDigest};
pub use error::{excerpt, PolicyError};
use error::{toml_err, Ctx};
pub(in crate::policy) use file::TextLines;
pub use file::{open_policy, MAX_POLICY_BYTES};
use file::{read_bounded, FileLines, Lines};
use head::{compile_head, head_labels, head_sets, Head};
pub use raw::RawPolicy;
use raw::RuleSection;
use rule::RuleCompiler;
pub use rule::{resolve_id, IdError, MAX_RULE_NAME};
use split::{Part, Splitter};
use std::collections::HashSet;

pub(super) fn compile(text: &str, origin: &str) -> Result<Policy, PolicyError> {
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
pub(super) fn load_from(path: &std::path::Path, file: &std::fs::File) -> Result<Policy, PolicyError> {
    let origin = path.display().to_string();
    compile_sections(&mut FileLines { path, file }, &origin).or_else(|_| {
        let text = read_bounded(path, file)?;
        compile_whole(&text, &origin)
    })
}

/// Compile the policy as one TOML document (the reference path).
pub(super) fn compile_whole(text: &str, origin: &str) -> Result<Policy, PolicyError> {
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

/// The fast path: the document without its `[[rule]]` sections first (each
/// replaced by its newlines, so lines and columns stay the file's), then
/// each `[[rule]]` section parsed and compiled on its own, so that only one
/// rule's TOML tree (with spans) exists at a time. It refuses every error
/// and layouts it does not split (`[["rule"]]` headers, rules written as an
/// inline array): the caller then compiles the text as one document, whose
/// result and error message are authoritative.
pub(super) fn compile_sections(src: &mut dyn Lines, origin: &str) -> Result<Policy, PolicyError> {
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

/// The policy table: the head's settings and the rules, indexed. Its
/// digest is left for the caller to take, of the bytes it compiled.
fn assemble(h: Head, rules: Vec<Rule>) -> Policy {
    let index = Index::build(&rules);
    Policy {
        mode: h.mode,
        default: h.default,
        malformed: h.malformed,
        permissive_domains: h.permissive_domains,
        rules,
        address_labels: h.address_labels,
        dois: h.dois,
        sets: h.set_lists,
        scope: h.scope,
        digest: PolicyDigest::default(),
        index,
    }
}

#[cfg(test)]
mod tests;
