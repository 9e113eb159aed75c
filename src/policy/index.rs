//! The policy's type index: rules grouped by the source and destination
//! types they name, with a prefilter for the rules naming none, so a
//! decision looks only at the rules that can match.

use super::rule::{Facts, HookSel, Rule};
use crate::packet::Proto;
use std::collections::HashMap;

/// Rules grouped by the types their source and destination patterns name, so
/// a decision looks only at rules that can match. A rule naming both a
/// source and a destination type is listed under each (source, dest) pair it
/// names; one naming only a source type under each source type, likewise for
/// dest; the rest (naming neither) are in `wild`. A packet's candidates are
/// then the lists under (its source, its dest), its source alone, its dest
/// alone, and `wild`: every rule that can match it is in exactly one of them.
///
/// Type names are interned to dense ids; all lists are spans of one flat
/// vector, so there is no allocation per type or per pair (at 100,000 rules
/// and 70,000 distinct pairs the index is about 1.3 MiB).
#[derive(Debug, Default)]
pub(super) struct Index {
    /// Every type a source or destination pattern names, to its id.
    types: HashMap<Box<str>, u32, foldhash::fast::RandomState>,
    /// By type id: the lists of rules naming it.
    by_type: Vec<TypeLists>,
    /// The pair lists, grouped by source type, by dest id within a group.
    pairs: Vec<PairList>,
    /// Rule indices, grouped by list, ascending within each list.
    lists: Vec<u32>,
    /// Rules naming no source and no destination type, ascending.
    wild: Vec<u32>,
    /// Hook, protocol and destination ports of each rule of `wild`, in the
    /// same order: every packet scans `wild`, and with these beside it the
    /// scan reads one dense array instead of one rule each (at 100,000
    /// rules, each in its own cold cache line).
    pub(super) wild_pre: Vec<Prefilter>,
}

/// What can be told about a rule from the packet's hook, protocol and
/// destination port alone: a rule it refuses cannot match (a rule it admits
/// may still not).
#[derive(Clone, Copy, Debug)]
pub(super) struct Prefilter {
    hook: HookSel,
    proto: Option<Proto>,
    /// The hull of the rule's destination ports; (0, 65535) when it has
    /// no dport condition.
    dport: (u16, u16),
}

impl Prefilter {
    pub(super) fn of(r: &Rule) -> Prefilter {
        let dport = r.dport.get().map_or((0, u16::MAX), |p| {
            let rs = p.ranges();
            (rs.iter().map(|r| r.0).min().unwrap_or(0), rs.iter().map(|r| r.1).max().unwrap_or(u16::MAX))
        });
        Prefilter { hook: r.hook, proto: r.proto, dport }
    }

    pub(super) fn admits(&self, f: &Facts<'_>) -> bool {
        self.hook.matches(f.hook)
            && self.proto.is_none_or(|p| p == f.pkt.proto)
            && (self.dport == (0, u16::MAX) || f.pkt.dport.is_some_and(|d| self.dport.0 <= d && d <= self.dport.1))
    }
}

/// A run of `Index::lists` or `Index::pairs`.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Span {
    start: u32,
    len: u32,
}

impl Span {
    pub(super) fn of<T>(self, v: &[T]) -> &[T] {
        v.get(self.start as usize..self.start as usize + self.len as usize).unwrap_or(&[])
    }
}

/// The lists of one type.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct TypeLists {
    /// Rules naming this source type and no dest type.
    source: Span,
    /// Rules naming this dest type and no source type.
    dest: Span,
    /// This source type's pair lists in `Index::pairs`.
    pairs: Span,
}

/// The rules naming one (source, dest) pair; the source is the group's.
#[derive(Clone, Copy, Debug)]
pub(super) struct PairList {
    dest: u32,
    rules: Span,
}

/// The id of "no type named" on one side of an index entry.
pub(super) const NO_TYPE: u32 = u32::MAX;

/// A rule naming more (source, dest) type pairs than this (two large sets)
/// is listed under the types of its smaller side alone instead, so a rule
/// never costs more index entries than this or the types it names.
pub(super) const MAX_PAIRS: usize = 64;

/// The types a rule is indexed under, on each side; `None` for a side it
/// is not indexed by.
pub(super) fn index_keys(r: &Rule) -> (Option<Vec<&str>>, Option<Vec<&str>>) {
    let src = r.source.as_ref().and_then(|p| p.type_.named_types());
    let dst = r.dest.as_ref().and_then(|p| p.type_.named_types());
    match (src, dst) {
        // Too many pairs: keep only the smaller side (still sound: the rule
        // matches only packets whose type on that side it names).
        (Some(s), Some(d)) if s.len().saturating_mul(d.len()) > MAX_PAIRS => {
            if s.len() <= d.len() {
                (Some(s), None)
            } else {
                (None, Some(d))
            }
        }
        other => other,
    }
}

pub(super) fn intern(types: &mut HashMap<Box<str>, u32, foldhash::fast::RandomState>, t: &str) -> u32 {
    if let Some(&id) = types.get(t) {
        return id;
    }
    let id = types.len() as u32;
    types.insert(t.into(), id);
    id
}

impl Index {
    pub(super) fn build(rules: &[Rule]) -> Index {
        let mut ix = Index::default();
        // Counted first so the (transient) entry vector is allocated once.
        let n: usize = rules
            .iter()
            .map(|r| match index_keys(r) {
                (None, None) => 0,
                (s, d) => s.map_or(1, |s| s.len()) * d.map_or(1, |d| d.len()),
            })
            .sum();
        let mut entries: Vec<(u32, u32, u32)> = Vec::with_capacity(n);
        for (i, r) in rules.iter().enumerate() {
            let i = i as u32;
            match index_keys(r) {
                (None, None) => {
                    ix.wild.push(i);
                    ix.wild_pre.push(Prefilter::of(r));
                }
                (Some(s), None) => s.into_iter().for_each(|t| entries.push((intern(&mut ix.types, t), NO_TYPE, i))),
                (None, Some(d)) => d.into_iter().for_each(|t| entries.push((NO_TYPE, intern(&mut ix.types, t), i))),
                (Some(s), Some(d)) => {
                    for a in &s {
                        let a = intern(&mut ix.types, a);
                        d.iter().for_each(|b| entries.push((a, intern(&mut ix.types, b), i)));
                    }
                }
            }
        }
        ix.types.shrink_to_fit();
        ix.wild.shrink_to_fit();
        ix.wild_pre.shrink_to_fit();
        entries.sort_unstable();
        entries.dedup();
        let groups = entries.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1));
        let n_pairs = groups.clone().filter(|g| g.first().is_some_and(|e| e.0 != NO_TYPE && e.1 != NO_TYPE)).count();
        ix.pairs = Vec::with_capacity(n_pairs);
        ix.lists = Vec::with_capacity(entries.len());
        ix.by_type = vec![TypeLists::default(); ix.types.len()];
        for group in groups {
            let Some(&(s, d, _)) = group.first() else { continue };
            let rules = Span { start: ix.lists.len() as u32, len: group.len() as u32 };
            ix.lists.extend(group.iter().map(|e| e.2));
            if s == NO_TYPE {
                if let Some(t) = ix.by_type.get_mut(d as usize) {
                    t.dest = rules;
                }
            } else if let Some(t) = ix.by_type.get_mut(s as usize) {
                if d == NO_TYPE {
                    t.source = rules;
                } else {
                    // Sorted by source, then dest: this source's pairs are contiguous.
                    if t.pairs.len == 0 {
                        t.pairs.start = ix.pairs.len() as u32;
                    }
                    t.pairs.len += 1;
                    ix.pairs.push(PairList { dest: d, rules });
                }
            }
        }
        ix
    }

    /// The candidate lists for a packet's source and dest types: the pair's,
    /// the source's, the dest's, and the wild rules.
    pub(super) fn lists(&self, source: &str, dest: &str) -> [&[u32]; 4] {
        let s = self.types.get(source).and_then(|&id| self.by_type.get(id as usize));
        let d_id = self.types.get(dest).copied();
        let d = d_id.and_then(|id| self.by_type.get(id as usize));
        let pair = match (s, d_id) {
            (Some(s), Some(d_id)) => {
                let ps = s.pairs.of(&self.pairs);
                ps.binary_search_by_key(&d_id, |p| p.dest)
                    .ok()
                    .and_then(|i| ps.get(i))
                    .map_or(&[][..], |p| p.rules.of(&self.lists))
            }
            _ => &[],
        };
        [
            pair,
            s.map_or(&[][..], |s| s.source.of(&self.lists)),
            d.map_or(&[][..], |d| d.dest.of(&self.lists)),
            &self.wild,
        ]
    }
}

/// Visit the union of ascending index lists in ascending order.
pub(super) struct Merged<'a, const N: usize> {
    pub(super) lists: [&'a [u32]; N],
}

impl<const N: usize> Iterator for Merged<'_, N> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        let m = self.lists.iter().filter_map(|l| l.first()).min().copied()?;
        for l in &mut self.lists {
            if let Some((&x, rest)) = l.split_first() {
                if x == m {
                    *l = rest;
                }
            }
        }
        Some(m)
    }
}
