//! Finding the `[[rule]]` sections of a file line by line, with just
//! enough TOML lexing to know where a line starts.

/// Which part of the policy a line belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Part {
    Rest,
    /// The `[[rule]]` header line of a section.
    RuleStart,
    Rule,
}

/// Finds the `[[rule]]` sections line by line: table headers are lines
/// starting with `[` outside strings and bracketed values.
#[derive(Default)]
pub(super) struct Splitter {
    pub(super) lex: Lexer,
    /// 1-based number of the last line seen.
    pub(super) line: usize,
    pub(super) in_rule: bool,
    /// Whether the last line started a `[[rule]]` section.
    pub(super) started: bool,
}

impl Splitter {
    pub(super) fn next(&mut self, line: &str) -> Part {
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

/// Whether a line outside values is a table header, and if so whether it is
/// exactly `[[rule]]` (spaces and a comment allowed).
pub(super) fn header(line: &str) -> Option<bool> {
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
pub(super) struct Lexer {
    pub(super) depth: usize,
    /// Inside a multi-line string ended by this quote character (three of them).
    pub(super) multiline: Option<u8>,
}

impl Lexer {
    pub(super) fn neutral(&self) -> bool {
        self.depth == 0 && self.multiline.is_none()
    }

    pub(super) fn scan(&mut self, line: &str) {
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
