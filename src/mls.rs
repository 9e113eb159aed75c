//! MLS/MCS levels and ranges (`s0-s1:c0.c3`) with SELinux dominance semantics.
//!
//! Owns parsing and printing of sensitivities and category sets; knows nothing
//! about contexts, packets or policies.

use std::fmt;
use std::str::FromStr;

/// Highest sensitivity number accepted (`s0` .. `s1023`).
pub const MAX_SENSITIVITY: u16 = 1023;
/// Number of categories representable (`c0` .. `c1023`), the SELinux default.
pub const CATEGORY_COUNT: usize = 1024;
const WORDS: usize = CATEGORY_COUNT / 64;

/// Why a level or range string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MlsError {
    #[error("empty MLS level")]
    Empty,
    #[error("bad sensitivity {0:?} (expected s0..s{MAX_SENSITIVITY})")]
    BadSensitivity(String),
    #[error("bad category {0:?} (expected c0..c1023)")]
    BadCategory(String),
    #[error("category range {0:?} runs backwards")]
    BackwardsCategoryRange(String),
    #[error("range high level {high} does not dominate low level {low}")]
    HighBelowLow { low: String, high: String },
}

/// A set of categories `c0..c1023`, stored as a fixed bitmap.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CategorySet([u64; WORDS]);

impl CategorySet {
    /// The empty set.
    pub const fn empty() -> Self {
        CategorySet([0; WORDS])
    }

    /// Add category `c`; returns false (and changes nothing) when out of range.
    pub fn insert(&mut self, c: usize) -> bool {
        match self.0.get_mut(c / 64) {
            Some(word) => {
                *word |= 1u64 << (c % 64);
                true
            }
            None => false,
        }
    }

    /// Whether category `c` is in the set.
    pub fn contains(&self, c: usize) -> bool {
        self.0.get(c / 64).is_some_and(|w| w & (1u64 << (c % 64)) != 0)
    }

    /// Whether every category of `other` is also in `self`.
    pub fn is_superset(&self, other: &CategorySet) -> bool {
        self.0.iter().zip(other.0.iter()).all(|(a, b)| a & b == *b)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    /// Categories in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..CATEGORY_COUNT).filter(move |c| self.contains(*c))
    }
}

impl fmt::Debug for CategorySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{self}}}")
    }
}

impl fmt::Display for CategorySet {
    /// Prints categories in ascending order, comma-separated, with a run of
    /// three or more consecutive categories as `cA.cB` and a run of two as
    /// `cA,cB`, exactly as the kernel's `mls_sid_to_context` does
    /// (`c0.c2,c7,c8`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cats: Vec<usize> = self.iter().collect();
        let mut first = true;
        let mut i = 0;
        while let Some(&start) = cats.get(i) {
            let mut end = start;
            while cats.get(i + 1) == Some(&(end + 1)) {
                end += 1;
                i += 1;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if end > start + 1 {
                write!(f, "c{start}.c{end}")?;
            } else if end == start + 1 {
                write!(f, "c{start},c{end}")?;
            } else {
                write!(f, "c{start}")?;
            }
            i += 1;
        }
        Ok(())
    }
}

/// One MLS level: a sensitivity and a category set (`s1:c0,c3.c5`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Level {
    pub sensitivity: u16,
    pub categories: CategorySet,
}

impl Level {
    /// `s0` with no categories.
    pub const fn s0() -> Self {
        Level { sensitivity: 0, categories: CategorySet::empty() }
    }

    /// SELinux dominance: `self` dominates `other` when its sensitivity is at
    /// least as high and its categories are a superset.
    pub fn dominates(&self, other: &Level) -> bool {
        self.sensitivity >= other.sensitivity && self.categories.is_superset(&other.categories)
    }
}

fn parse_sensitivity(s: &str) -> Result<u16, MlsError> {
    let bad = || MlsError::BadSensitivity(s.to_string());
    let digits = s.strip_prefix('s').ok_or_else(bad)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u16 = digits.parse().map_err(|_| bad())?;
    if n > MAX_SENSITIVITY {
        return Err(bad());
    }
    Ok(n)
}

fn parse_category(s: &str) -> Result<usize, MlsError> {
    let bad = || MlsError::BadCategory(s.to_string());
    let digits = s.strip_prefix('c').ok_or_else(bad)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: usize = digits.parse().map_err(|_| bad())?;
    if n >= CATEGORY_COUNT {
        return Err(bad());
    }
    Ok(n)
}

impl FromStr for Level {
    type Err = MlsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(MlsError::Empty);
        }
        let (sens, cats) = match s.split_once(':') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let sensitivity = parse_sensitivity(sens)?;
        let mut categories = CategorySet::empty();
        if let Some(cats) = cats {
            for item in cats.split(',') {
                match item.split_once('.') {
                    Some((lo, hi)) => {
                        let (lo, hi) = (parse_category(lo)?, parse_category(hi)?);
                        if hi < lo {
                            return Err(MlsError::BackwardsCategoryRange(item.to_string()));
                        }
                        for c in lo..=hi {
                            categories.insert(c);
                        }
                    }
                    None => {
                        categories.insert(parse_category(item)?);
                    }
                }
            }
        }
        Ok(Level { sensitivity, categories })
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.sensitivity)?;
        if !self.categories.is_empty() {
            write!(f, ":{}", self.categories)?;
        }
        Ok(())
    }
}

/// An MLS range `low[-high]`; `high` always dominates `low`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Range {
    low: Level,
    high: Level,
}

impl Range {
    /// Build a range, refusing one whose high level does not dominate its low level.
    pub fn new(low: Level, high: Level) -> Result<Self, MlsError> {
        if !high.dominates(&low) {
            return Err(MlsError::HighBelowLow { low: low.to_string(), high: high.to_string() });
        }
        Ok(Range { low, high })
    }

    /// A range holding a single level.
    pub fn single(level: Level) -> Self {
        Range { low: level, high: level }
    }

    /// The low (effective) level.
    pub fn low(&self) -> &Level {
        &self.low
    }

    /// The high (clearance) level.
    pub fn high(&self) -> &Level {
        &self.high
    }

    /// Whether `level` lies within this range (dominates low, dominated by high).
    pub fn contains(&self, level: &Level) -> bool {
        level.dominates(&self.low) && self.high.dominates(level)
    }

    /// Whether all of `other` lies within this range.
    pub fn contains_range(&self, other: &Range) -> bool {
        self.contains(&other.low) && self.contains(&other.high)
    }
}

impl FromStr for Range {
    type Err = MlsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('-') {
            Some((lo, hi)) => Range::new(lo.parse()?, hi.parse()?),
            None => Ok(Range::single(s.parse()?)),
        }
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.low == self.high {
            write!(f, "{}", self.low)
        } else {
            write!(f, "{}-{}", self.low, self.high)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lv(s: &str) -> Level {
        s.parse().unwrap()
    }

    #[test]
    fn level_round_trips_in_kernel_form() {
        for s in ["s0", "s1:c0", "s2:c0.c3", "s0:c1,c5", "s15:c0.c2,c7,c9.c11", "s1:c0,c1,c3"] {
            assert_eq!(lv(s).to_string(), s);
        }
        assert_eq!(lv("s0:c3,c0,c1,c2").to_string(), "s0:c0.c3");
        // The kernel joins a run of two with a comma, a run of three or more with a dot.
        assert_eq!(lv("s0:c1,c2").to_string(), "s0:c1,c2");
        assert_eq!(lv("s0:c7.c8").to_string(), "s0:c7,c8");
        assert_eq!(lv("s0:c0.c1,c3,c5.c7,c9.c10").to_string(), "s0:c0,c1,c3,c5.c7,c9,c10");
        assert_eq!(lv("s0:c1022,c1023").to_string(), "s0:c1022,c1023");
        assert_eq!(lv("s0:c0.c1023").to_string(), "s0:c0.c1023");
    }

    #[test]
    fn level_rejects_garbage() {
        for s in ["", "x0", "s", "s-1", "s1024", "s0:", "s0:c", "s0:c1024", "s0:c3.c1", "s0:x1", "s0:c1,", "s+1"] {
            assert!(s.parse::<Level>().is_err(), "{s:?} should be refused");
        }
    }

    #[test]
    fn dominance_follows_selinux() {
        assert!(lv("s1:c0").dominates(&lv("s1:c0")));
        assert!(lv("s1:c0,c1").dominates(&lv("s1:c0")));
        assert!(lv("s2").dominates(&lv("s1")));
        assert!(!lv("s0").dominates(&lv("s1:c0")));
        assert!(!lv("s1").dominates(&lv("s1:c0")));
        assert!(!lv("s2:c1").dominates(&lv("s1:c0")), "incomparable levels");
    }

    #[test]
    fn ranges_parse_and_contain() {
        let r: Range = "s0-s1:c0.c3".parse().unwrap();
        assert_eq!(r.to_string(), "s0-s1:c0.c3");
        assert!(r.contains(&lv("s0")));
        assert!(r.contains(&lv("s1:c2")));
        assert!(!r.contains(&lv("s1:c4")));
        assert!(!r.contains(&lv("s2")));
        assert!("s1-s0".parse::<Range>().is_err());
        assert!("s0:c1-s1".parse::<Range>().is_err(), "high lacks c1");
        assert!(r.contains_range(&"s0-s1:c1".parse().unwrap()));
    }

    /// The kernel's `mls_sid_to_context` category loop
    /// (security/selinux/ss/mls.c), transcribed: `prev`/`head` start at -2, a
    /// gap closes the run before it with `.` when it spans three or more
    /// categories and with `,` when it spans two.
    fn kernel_categories(cats: &[i64]) -> String {
        let mut out = String::new();
        let (mut prev, mut head) = (-2i64, -2i64);
        for &i in cats {
            if i - prev > 1 {
                if prev != head {
                    out.push(if prev - head > 1 { '.' } else { ',' });
                    out.push_str(&format!("c{prev}"));
                }
                out.push(if prev < 0 { ':' } else { ',' });
                out.push_str(&format!("c{i}"));
                head = i;
            }
            prev = i;
        }
        if prev != head {
            out.push(if prev - head > 1 { '.' } else { ',' });
            out.push_str(&format!("c{prev}"));
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn categories_print_as_the_kernel_does(sens in 0u16..=MAX_SENSITIVITY, runs in proptest::collection::vec((0usize..CATEGORY_COUNT, 1usize..5), 0..12)) {
            let mut set = CategorySet::empty();
            for (start, len) in runs {
                for c in start..(start + len).min(CATEGORY_COUNT) { set.insert(c); }
            }
            let cats: Vec<i64> = set.iter().map(|c| c as i64).collect();
            let l = Level { sensitivity: sens, categories: set };
            proptest::prop_assert_eq!(l.to_string(), format!("s{sens}{}", kernel_categories(&cats)));
        }

        #[test]
        fn level_parser_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<Range>();
        }

        #[test]
        fn level_display_round_trips(sens in 0u16..=MAX_SENSITIVITY, cats in proptest::collection::vec(0usize..CATEGORY_COUNT, 0..20)) {
            let mut set = CategorySet::empty();
            for c in cats { set.insert(c); }
            let l = Level { sensitivity: sens, categories: set };
            proptest::prop_assert_eq!(l.to_string().parse::<Level>().unwrap(), l);
        }
    }
}
