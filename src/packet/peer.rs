//! Peer labels carried in the packet: CIPSO (IPv4 option 134) and CALIPSO
//! (IPv6 hop-by-hop option 0x07), parsed into a DOI and an MLS [`Level`].
//!
//! Pure functions over untrusted bytes: every length is checked, nothing
//! panics, and anything the kernel itself would refuse is a [`PeerError`].
//! Category bit/number N becomes `cN` and the sensitivity byte L becomes `sL`
//! (the mapping NetLabel calls `pass`); translating through other DOI maps is
//! the caller's business.

use crate::mls::{CategorySet, Level, CATEGORY_COUNT};

/// IPv4 option type of CIPSO (copy flag set, class 0, number 6).
pub const IPOPT_CIPSO: u8 = 134;
/// IPv6 hop-by-hop option type of CALIPSO (RFC 5570).
pub const IPV6_TLV_CALIPSO: u8 = 0x07;

/// Why a peer-label option was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// An option's length byte runs past the options area or is below 2.
    #[error("option length {len} at offset {at} does not fit the options area")]
    OptionLength { at: usize, len: u8 },
    /// The CIPSO/CALIPSO option is shorter than its fixed header or its
    /// tags/bitmap do not fit the option.
    #[error("{0} option truncated or with inconsistent lengths")]
    Truncated(&'static str),
    /// More than one CIPSO or CALIPSO option in one packet.
    #[error("duplicate {0} option")]
    Duplicate(&'static str),
    /// DOI 0 is reserved.
    #[error("reserved DOI 0")]
    ReservedDoi,
    /// A CIPSO tag type labelgate does not read (only 1, 2 and 5).
    #[error("unsupported CIPSO tag type {0}")]
    UnsupportedTag(u8),
    /// A category number beyond what an SELinux level can hold (c1023).
    #[error("category {0} out of range")]
    CategoryRange(u32),
    /// Enumerated categories not strictly ascending, or a range whose high
    /// category is above the low category of the range before it (the
    /// checks of the kernel's `cipso_v4_validate`).
    #[error("CIPSO categories out of order")]
    CategoryOrder,
    /// CALIPSO checksum mismatch.
    #[error("CALIPSO checksum mismatch")]
    Checksum,
}

impl PeerError {
    /// A short token for counters and audit records.
    pub fn reason(&self) -> &'static str {
        match self {
            PeerError::OptionLength { .. } => "option_length",
            PeerError::Truncated(_) => "truncated",
            PeerError::Duplicate(_) => "duplicate",
            PeerError::ReservedDoi => "reserved_doi",
            PeerError::UnsupportedTag(_) => "unsupported_tag",
            PeerError::CategoryRange(_) => "category_range",
            PeerError::CategoryOrder => "category_order",
            PeerError::Checksum => "checksum",
        }
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([*b.get(at)?, *b.get(at + 1)?, *b.get(at + 2)?, *b.get(at + 3)?]))
}

fn insert_cat(set: &mut CategorySet, c: u32) -> Result<(), PeerError> {
    if (c as usize) >= CATEGORY_COUNT || !set.insert(c as usize) {
        return Err(PeerError::CategoryRange(c));
    }
    Ok(())
}

/// Read a network-order category bitmap: bit 0 is the most significant bit
/// of the first byte and stands for category 0.
fn bitmap(bytes: &[u8]) -> Result<CategorySet, PeerError> {
    let mut set = CategorySet::empty();
    for (i, byte) in bytes.iter().enumerate() {
        for bit in 0..8u32 {
            if byte & (0x80 >> bit) != 0 {
                insert_cat(&mut set, i as u32 * 8 + bit)?;
            }
        }
    }
    Ok(set)
}

/// Walk an IPv4 options area (the bytes after the fixed 20-byte header) and
/// parse the CIPSO option if there is one.
///
/// Option 0 (end of list) stops the walk, option 1 (no-op) is one byte, every
/// other option is type-length-value with the length counting the type and
/// length bytes. Returns `Ok(None)` when there is no CIPSO option.
pub fn parse_cipso(opts: &[u8]) -> Result<Option<(u32, Level)>, PeerError> {
    find_option(opts, IPOPT_CIPSO, Area::Ipv4, "CIPSO")?.map(cipso_option).transpose()
}

/// The two kinds of options area.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Area {
    /// IPv4: 0 ends the list, 1 is a one-byte no-op, lengths count the
    /// type and length bytes.
    Ipv4,
    /// IPv6 hop-by-hop: 0 is a one-byte pad, lengths count the value only.
    Ipv6,
}

/// The single option of type `want` in an options area (whole, type and
/// length bytes included); an error on a length that does not fit or on a
/// second option of that type.
fn find_option<'a>(area: &'a [u8], want: u8, kind: Area, name: &'static str) -> Result<Option<&'a [u8]>, PeerError> {
    let mut at = 0usize;
    let mut found = None;
    while let Some(&ty) = area.get(at) {
        match (kind, ty) {
            (Area::Ipv4, 0) => break,
            (Area::Ipv4, 1) | (Area::Ipv6, 0) => {
                at += 1;
                continue;
            }
            _ => {}
        }
        let len = *area.get(at + 1).ok_or(PeerError::OptionLength { at, len: 0 })?;
        let end = match kind {
            Area::Ipv4 if len < 2 => return Err(PeerError::OptionLength { at, len }),
            Area::Ipv4 => at + usize::from(len),
            Area::Ipv6 => at + 2 + usize::from(len),
        };
        let opt = area.get(at..end).ok_or(PeerError::OptionLength { at, len })?;
        if ty == want {
            if found.is_some() {
                return Err(PeerError::Duplicate(name));
            }
            found = Some(opt);
        }
        at = end;
    }
    Ok(found)
}

/// One CIPSO option (type, length, DOI, tags). The first tag gives the label,
/// as in the kernel's `cipso_v4_getattr`; every tag must pass the checks of
/// `cipso_v4_validate` (a type labelgate reads, a length of at least 4 that
/// fits the option, categories in the order the kernel requires).
fn cipso_option(opt: &[u8]) -> Result<(u32, Level), PeerError> {
    const T: PeerError = PeerError::Truncated("CIPSO");
    // type, len, 4 bytes DOI, and at least one tag header.
    if opt.len() < 8 {
        return Err(T);
    }
    let doi = be32(opt, 2).ok_or(T)?;
    if doi == 0 {
        return Err(PeerError::ReservedDoi);
    }
    let tags = opt.get(6..).ok_or(T)?;
    let mut at = 0usize;
    let mut level = None;
    while let Some(&ty) = tags.get(at) {
        let tlen = usize::from(*tags.get(at + 1).ok_or(T)?);
        let tag = tags.get(at..at + tlen).ok_or(T)?;
        if tlen < 2 {
            return Err(T);
        }
        let parsed = cipso_tag(ty, tag)?;
        level.get_or_insert(parsed);
        at += tlen;
    }
    Ok((doi, level.ok_or(T)?))
}

/// One CIPSO tag: `[type, len, alignment, level, categories...]`, read as
/// the kernel's `cipso_v4_parsetag_{rbm,enum,rng}` read it (after
/// `cipso_v4_validate`, DOI type `pass`). The options area bounds a tag to
/// 34 bytes, so categories take at most 30.
fn cipso_tag(ty: u8, tag: &[u8]) -> Result<Level, PeerError> {
    const T: PeerError = PeerError::Truncated("CIPSO");
    if !matches!(ty, 1 | 2 | 5) {
        return Err(PeerError::UnsupportedTag(ty));
    }
    let [_, _, _, sens, cats @ ..] = tag else {
        return Err(T);
    };
    if cats.len() > 30 {
        return Err(T);
    }
    let sensitivity = u16::from(*sens);
    let categories = match ty {
        // Restricted bitmap (bit 0 = c0); trailing zero bytes are allowed
        // (the kernel pads a short bitmap to 10 bytes).
        1 => bitmap(cats)?,
        // Enumerated: strictly ascending 16-bit categories.
        2 => {
            if cats.len() % 2 != 0 {
                return Err(T);
            }
            let mut set = CategorySet::empty();
            let mut prev: Option<u16> = None;
            for i in (0..cats.len()).step_by(2) {
                let c = be16(cats, i).ok_or(T)?;
                if prev.is_some_and(|p| c <= p) {
                    return Err(PeerError::CategoryOrder);
                }
                prev = Some(c);
                insert_cat(&mut set, u32::from(c))?;
            }
            set
        }
        // Ranged: (high, low) pairs, each high at most the low before it
        // (`cipso_v4_map_cat_rng_valid`); a lone last high has low 0, which
        // is how the kernel writes a last range that starts at c0 (so eight
        // ranges fit in 30 bytes). A pair whose low is above its high adds
        // nothing, as `netlbl_catmap_setrng` adds nothing for it.
        _ => {
            if cats.len() % 2 != 0 {
                return Err(T);
            }
            let mut set = CategorySet::empty();
            let mut prev_low: Option<u16> = None;
            for i in (0..cats.len()).step_by(4) {
                let high = be16(cats, i).ok_or(T)?;
                let low = if i + 4 <= cats.len() { be16(cats, i + 2).ok_or(T)? } else { 0 };
                if prev_low.is_some_and(|p| high > p) {
                    return Err(PeerError::CategoryOrder);
                }
                prev_low = Some(low);
                if low > high {
                    continue;
                }
                if usize::from(high) >= CATEGORY_COUNT {
                    return Err(PeerError::CategoryRange(u32::from(high)));
                }
                for c in low..=high {
                    // A range may share its end with the one before it.
                    set.insert(usize::from(c));
                }
            }
            set
        }
    };
    Ok(Level { sensitivity, categories })
}

/// The kernel's `crc_ccitt` (reflected polynomial 0x8408).
fn crc_ccitt(mut crc: u16, bytes: &[u8]) -> u16 {
    for &b in bytes {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x8408 } else { crc >> 1 };
        }
    }
    crc
}

/// The CALIPSO checksum of a whole option (type and length bytes included),
/// computed with the checksum field (bytes 8 and 9) taken as zero; stored
/// low byte first.
pub fn calipso_checksum(opt: &[u8]) -> u16 {
    let head = opt.get(..8).unwrap_or(opt);
    let mut crc = crc_ccitt(0xffff, head);
    crc = crc_ccitt(crc, &[0, 0]);
    crc = crc_ccitt(crc, opt.get(10..).unwrap_or_default());
    !crc
}

/// Walk IPv6 hop-by-hop option data (after the next-header and length bytes)
/// and parse the CALIPSO option if there is one.
///
/// Option 0 (Pad1) is one byte; every other option is type-length-value with
/// the length counting only the value. Returns `Ok(None)` without CALIPSO.
pub fn parse_calipso(hbh_data: &[u8]) -> Result<Option<(u32, Level)>, PeerError> {
    find_option(hbh_data, IPV6_TLV_CALIPSO, Area::Ipv6, "CALIPSO")?.map(calipso_option).transpose()
}

/// One CALIPSO option: type, length, DOI (4), compartment length in 32-bit
/// words, sensitivity, checksum (2), compartment bitmap.
fn calipso_option(opt: &[u8]) -> Result<(u32, Level), PeerError> {
    const T: PeerError = PeerError::Truncated("CALIPSO");
    let data_len = usize::from(*opt.get(1).ok_or(T)?);
    if data_len < 8 || opt.len() != data_len + 2 {
        return Err(T);
    }
    let [_, _, _, _, _, _, cat_words, sens, sum_lo, sum_hi, rest @ ..] = opt else {
        return Err(T);
    };
    let cat_len = usize::from(*cat_words) * 4;
    if cat_len + 8 > data_len {
        return Err(T);
    }
    let sum = calipso_checksum(opt);
    if u16::from_le_bytes([*sum_lo, *sum_hi]) != sum {
        return Err(PeerError::Checksum);
    }
    let doi = be32(opt, 2).ok_or(T)?;
    if doi == 0 {
        return Err(PeerError::ReservedDoi);
    }
    let categories = bitmap(rest.get(..cat_len).ok_or(T)?)?;
    Ok((doi, Level { sensitivity: u16::from(*sens), categories }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lv(s: &str) -> Level {
        s.parse().unwrap()
    }

    /// The option the kernel put on a packet from a process at s1:c0 with
    /// `netlabelctl cipsov4 add pass doi:16 tags:1` (see kernel-facts.md),
    /// followed by the end-of-list padding byte.
    const KERNEL_CIPSO: [u8; 12] = [0x86, 0x0b, 0x00, 0x00, 0x00, 0x10, 0x01, 0x05, 0x00, 0x01, 0x80, 0x00];

    #[test]
    fn kernel_generated_cipso_tag1() {
        assert_eq!(parse_cipso(&KERNEL_CIPSO), Ok(Some((16, lv("s1:c0")))));
    }

    #[test]
    fn cipso_after_nops_and_other_options() {
        // NOP, a 4-byte timestamp-like option (type 68), then CIPSO.
        let mut v = vec![1, 68, 4, 0, 0];
        v.extend_from_slice(&KERNEL_CIPSO);
        assert_eq!(parse_cipso(&v), Ok(Some((16, lv("s1:c0")))));
        // Options after end-of-list are not read.
        let mut v = vec![0];
        v.extend_from_slice(&KERNEL_CIPSO);
        assert_eq!(parse_cipso(&v), Ok(None));
        assert_eq!(parse_cipso(&[]), Ok(None));
        assert_eq!(parse_cipso(&[1, 1, 1, 0]), Ok(None));
    }

    #[test]
    fn cipso_bitmap_many_categories() {
        // level 3, bitmap 0b0101_0000 0b0000_0001 -> c1,c3,c15
        let opt = [0x86, 12, 0, 0, 0, 7, 1, 6, 0, 3, 0x50, 0x01];
        assert_eq!(parse_cipso(&opt), Ok(Some((7, lv("s3:c1,c3,c15")))));
        // No categories at all: tag length 4.
        let opt = [0x86, 10, 0, 0, 0, 7, 1, 4, 0, 2];
        assert_eq!(parse_cipso(&opt), Ok(Some((7, lv("s2")))));
    }

    #[test]
    fn cipso_tag2_enumerated() {
        // DOI 5, level 2, categories 0, 7, 300
        let opt = [0x86, 16, 0, 0, 0, 5, 2, 10, 0, 2, 0, 0, 0, 7, 1, 44];
        assert_eq!(parse_cipso(&opt), Ok(Some((5, lv("s2:c0,c7,c300")))));
        // Not ascending.
        let bad = [0x86, 14, 0, 0, 0, 5, 2, 8, 0, 2, 0, 7, 0, 7];
        assert_eq!(parse_cipso(&bad), Err(PeerError::CategoryOrder));
        // Beyond c1023.
        let big = [0x86, 12, 0, 0, 0, 5, 2, 6, 0, 2, 0x10, 0x00];
        assert_eq!(parse_cipso(&big), Err(PeerError::CategoryRange(4096)));
        // Odd category bytes.
        let odd = [0x86, 11, 0, 0, 0, 5, 2, 5, 0, 2, 7];
        assert_eq!(parse_cipso(&odd), Err(PeerError::Truncated("CIPSO")));
    }

    #[test]
    fn cipso_tag5_ranges() {
        // DOI 9, level 4, ranges c20..c22 and c3..c5 (high, low, descending).
        let opt = [0x86, 18, 0, 0, 0, 9, 5, 12, 0, 4, 0, 22, 0, 20, 0, 5, 0, 3];
        assert_eq!(parse_cipso(&opt), Ok(Some((9, lv("s4:c3.c5,c20.c22")))));
        // Last low omitted means 0.
        let opt = [0x86, 16, 0, 0, 0, 9, 5, 10, 0, 4, 0, 9, 0, 2, 0, 1];
        assert_eq!(parse_cipso(&opt), Ok(Some((9, lv("s4:c0.c1,c2.c9")))));
        // Low above high: the kernel accepts it and the pair adds nothing.
        let empty = [0x86, 14, 0, 0, 0, 9, 5, 8, 0, 4, 0, 2, 0, 9];
        assert_eq!(parse_cipso(&empty), Ok(Some((9, lv("s4")))));
        // A range may end where the one before it starts (the kernel checks
        // high <= previous low, not <).
        let touching = [0x86, 16, 0, 0, 0, 9, 5, 10, 0, 4, 0, 9, 0, 5, 0, 5];
        assert_eq!(parse_cipso(&touching), Ok(Some((9, lv("s4:c0.c9")))));
        // Ascending ranges.
        let bad = [0x86, 16, 0, 0, 0, 9, 5, 10, 0, 4, 0, 2, 0, 1, 0, 9];
        assert_eq!(parse_cipso(&bad), Err(PeerError::CategoryOrder));
    }

    #[test]
    fn cipso_malformed() {
        // Truncated: option claims 11 bytes, 8 given.
        assert!(matches!(parse_cipso(&KERNEL_CIPSO[..8]), Err(PeerError::OptionLength { at: 0, len: 11 })));
        // Only the type byte.
        assert!(parse_cipso(&[0x86]).is_err());
        // Length below 2 (would loop forever if trusted).
        assert!(parse_cipso(&[0x86, 0, 0, 0]).is_err());
        assert!(parse_cipso(&[68, 1, 0, 0]).is_err());
        // Option too short for a DOI and a tag.
        assert_eq!(parse_cipso(&[0x86, 6, 0, 0, 0, 16]), Err(PeerError::Truncated("CIPSO")));
        // Tag length lies: says 9, only 5 in the option.
        let mut lie = KERNEL_CIPSO;
        lie[7] = 9;
        assert_eq!(parse_cipso(&lie), Err(PeerError::Truncated("CIPSO")));
        // Tag length too small for a level byte.
        let mut lie = KERNEL_CIPSO;
        lie[1] = 9;
        lie[7] = 3;
        assert!(parse_cipso(&lie[..9]).is_err());
        // DOI 0.
        let mut z = KERNEL_CIPSO;
        z[5] = 0;
        assert_eq!(parse_cipso(&z), Err(PeerError::ReservedDoi));
        // Unknown tag type.
        let mut t = KERNEL_CIPSO;
        t[6] = 7;
        assert_eq!(parse_cipso(&t), Err(PeerError::UnsupportedTag(7)));
        // Two CIPSO options.
        let mut two = KERNEL_CIPSO[..11].to_vec();
        two.extend_from_slice(&KERNEL_CIPSO[..11]);
        assert_eq!(parse_cipso(&two), Err(PeerError::Duplicate("CIPSO")));
    }

    /// The option `cipso_v4_genopt` writes around one tag: type 134, length,
    /// DOI; `None` when it would not fit the 40-byte options area.
    fn kernel_cipso(doi: u32, tag: Option<Vec<u8>>) -> Option<Vec<u8>> {
        let tag = tag?;
        let mut v = vec![IPOPT_CIPSO, (6 + tag.len()) as u8];
        v.extend_from_slice(&doi.to_be_bytes());
        v.extend_from_slice(&tag);
        (v.len() <= 40).then_some(v)
    }

    /// The category area a tag may use: 40 - 6 (option header) - 4 (tag header).
    const CIPSO_CAT_SPACE: usize = 30;

    /// Tag 1 as `cipso_v4_gentag_rbm` / `cipso_v4_map_cat_rbm_hton` write it
    /// (`pass` DOI, the default `cipso_rbm_optfmt` = 0 and with it set).
    fn kernel_tag1(l: &Level, optfmt: bool) -> Option<Vec<u8>> {
        let level = u8::try_from(l.sensitivity).ok()?;
        let mut bm = [0u8; CIPSO_CAT_SPACE];
        let mut max = None;
        for c in l.categories.iter() {
            if c >= CIPSO_CAT_SPACE * 8 {
                return None; // -ENOSPC
            }
            bm[c / 8] |= 0x80 >> (c % 8);
            max = Some(c);
        }
        let used = max.map_or(0, |m| (m + 1).div_ceil(8));
        let tag_len = match used {
            0 => 4,
            1..=10 if optfmt => 14,
            n => 4 + n,
        };
        let mut v = vec![1, tag_len as u8, 0, level];
        v.extend_from_slice(&bm[..tag_len - 4]);
        Some(v)
    }

    /// Tag 2 as `cipso_v4_gentag_enum` / `cipso_v4_map_cat_enum_hton` write it.
    fn kernel_tag2(l: &Level) -> Option<Vec<u8>> {
        let level = u8::try_from(l.sensitivity).ok()?;
        let mut cats = Vec::new();
        for c in l.categories.iter() {
            if cats.len() + 2 > CIPSO_CAT_SPACE {
                return None;
            }
            cats.extend_from_slice(&(c as u16).to_be_bytes());
        }
        let mut v = vec![2, (4 + cats.len()) as u8, 0, level];
        v.extend_from_slice(&cats);
        Some(v)
    }

    /// Tag 5 as `cipso_v4_gentag_rng` / `cipso_v4_map_cat_rng_hton` write
    /// it: ranges from the highest down, each as (high, low), a low of 0
    /// left out (so only the last range can lose it).
    fn kernel_tag5(l: &Level) -> Option<Vec<u8>> {
        let level = u8::try_from(l.sensitivity).ok()?;
        let mut array: Vec<u16> = Vec::new();
        let mut size = 0usize;
        let cats: Vec<usize> = l.categories.iter().collect();
        let mut i = 0;
        while let Some(&start) = cats.get(i) {
            size += if start == 0 { 0 } else { 2 };
            if size > CIPSO_CAT_SPACE {
                return None;
            }
            array.push(start as u16);
            let mut end = start;
            while cats.get(i + 1) == Some(&(end + 1)) {
                end += 1;
                i += 1;
            }
            i += 1;
            size += 2;
            if size > CIPSO_CAT_SPACE {
                return None;
            }
            array.push(end as u16);
        }
        let mut cats = Vec::new();
        while let (Some(end), Some(start)) = (array.pop(), array.pop()) {
            cats.extend_from_slice(&end.to_be_bytes());
            if start != 0 {
                cats.extend_from_slice(&start.to_be_bytes());
            }
        }
        assert_eq!(cats.len(), size);
        let mut v = vec![5, (4 + cats.len()) as u8, 0, level];
        v.extend_from_slice(&cats);
        Some(v)
    }

    /// A CALIPSO option as `calipso_genopt` writes it: the bitmap in whole
    /// 32-bit words up to the highest category, none without categories.
    fn kernel_calipso(doi: u32, l: &Level) -> Option<Vec<u8>> {
        let level = u8::try_from(l.sensitivity).ok()?;
        let bm = match l.categories.iter().last() {
            None => Vec::new(),
            Some(max) => {
                let mut bm = vec![0u8; (max / 32 + 1) * 4];
                for c in l.categories.iter() {
                    bm[c / 8] |= 0x80 >> (c % 8);
                }
                bm
            }
        };
        (bm.len() <= 244).then(|| calipso(doi, level, &bm))
    }

    /// Issue 14 item 18: eight ranges, the last starting at c0, as a kernel
    /// put them on the wire (option length 40, tag length 34).
    const EIGHT_RANGES: [u8; 40] = [
        0x86, 0x28, 0x00, 0x00, 0x00, 0x10, 0x05, 0x22, 0x00, 0x00, 0x00, 0x58, 0x00, 0x50, 0x00, 0x4e, 0x00, 0x46,
        0x00, 0x42, 0x00, 0x3c, 0x00, 0x37, 0x00, 0x32, 0x00, 0x2d, 0x00, 0x28, 0x00, 0x24, 0x00, 0x1e, 0x00, 0x19,
        0x00, 0x14, 0x00, 0x03,
    ];

    #[test]
    fn cipso_tag5_eight_ranges_last_from_c0() {
        let level = lv("s0:c0.c3,c20.c25,c30.c36,c40.c45,c50.c55,c60.c66,c70.c78,c80.c88");
        assert_eq!(parse_cipso(&EIGHT_RANGES), Ok(Some((16, level))));
        // The encoder transcribed from the kernel writes exactly these bytes.
        assert_eq!(kernel_cipso(16, kernel_tag5(&level)).as_deref(), Some(&EIGHT_RANGES[..]));
        // Eight single categories from c0: seven (c, c) pairs and a lone c14.
        let singles = lv("s0:c0,c2,c4,c6,c8,c10,c12,c14");
        let opt = kernel_cipso(16, kernel_tag5(&singles)).unwrap();
        assert_eq!(opt.len(), 40);
        assert_eq!(parse_cipso(&opt), Ok(Some((16, singles))));
        // Eight ranges not starting at c0 do not fit: the kernel refuses to send them.
        assert_eq!(kernel_tag5(&lv("s0:c1,c3,c5,c7,c9,c11,c13,c15")), None);
    }

    /// Level shapes the oracle scenario also sends: single categories, long
    /// runs, many ranges, the largest sensitivity and category.
    fn shapes() -> Vec<Level> {
        [
            "s0",
            "s255",
            "s1:c0",
            "s0:c1023",
            "s0:c239",
            "s3:c0.c239",
            "s2:c0.c1023",
            "s0:c7,c8",
            "s0:c0,c1",
            "s0:c0,c2,c4,c6,c8,c10,c12,c14",
            "s0:c1,c3,c5,c7,c9,c11,c13",
            "s0:c0.c3,c20.c25,c30.c36,c40.c45,c50.c55,c60.c66,c70.c78,c80.c88",
            "s9:c100.c200,c300,c302,c1000.c1023",
            "s15:c0,c1,c3,c5.c7,c9,c10",
        ]
        .iter()
        .map(|s| lv(s))
        .collect()
    }

    /// Every option the kernel's encoders write reads back as the level
    /// they were given; the shapes each encoder cannot fit are skipped, as
    /// the kernel refuses to send them.
    fn round_trips(l: &Level) -> Result<usize, String> {
        let mut fitted = 0;
        let tags = [
            ("tag1", kernel_tag1(l, false)),
            ("tag1opt", kernel_tag1(l, true)),
            ("tag2", kernel_tag2(l)),
            ("tag5", kernel_tag5(l)),
        ];
        for (name, tag) in tags {
            if let Some(opt) = kernel_cipso(7, tag) {
                fitted += 1;
                let got = parse_cipso(&opt);
                if got != Ok(Some((7, *l))) {
                    return Err(format!("{name} {l}: {opt:02x?} -> {got:?}"));
                }
            }
        }
        if let Some(opt) = kernel_calipso(7, l) {
            fitted += 1;
            let got = parse_calipso(&opt);
            if got != Ok(Some((7, *l))) {
                return Err(format!("calipso {l}: {opt:02x?} -> {got:?}"));
            }
        }
        Ok(fitted)
    }

    #[test]
    fn kernel_encodings_round_trip_for_every_shape() {
        for l in shapes() {
            let fitted = round_trips(&l).unwrap();
            assert!(fitted >= 1, "{l} fits no encoding: the shape list is wrong");
        }
    }

    /// Build a CALIPSO option as the kernel's calipso_genopt does.
    fn calipso(doi: u32, level: u8, bitmap: &[u8]) -> Vec<u8> {
        assert_eq!(bitmap.len() % 4, 0);
        let mut v = vec![IPV6_TLV_CALIPSO, (8 + bitmap.len()) as u8];
        v.extend_from_slice(&doi.to_be_bytes());
        v.push((bitmap.len() / 4) as u8);
        v.push(level);
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(bitmap);
        let sum = calipso_checksum(&v);
        v[8..10].copy_from_slice(&sum.to_le_bytes());
        v
    }

    #[test]
    fn crc_ccitt_matches_the_kernel_table() {
        // lib/crc-ccitt.c: crc_ccitt_table[1] = 0x1189, [128] = 0x8408.
        assert_eq!(crc_ccitt(0, &[1]), 0x1189);
        assert_eq!(crc_ccitt(0, &[128]), 0x8408);
        // CRC-16/X-25 check value of "123456789" is 0x906E.
        assert_eq!(!crc_ccitt(0xffff, b"123456789"), 0x906e);
    }

    #[test]
    fn calipso_round_trip() {
        let opt = calipso(16, 1, &[0x80, 0, 0, 0]);
        // Pad1, PadN(2), CALIPSO.
        let mut hbh = vec![0, 1, 2, 0, 0];
        hbh.extend_from_slice(&opt);
        assert_eq!(parse_calipso(&hbh), Ok(Some((16, lv("s1:c0")))));
        let opt = calipso(3, 7, &[0, 0, 0, 0, 0x01, 0, 0, 0x03]);
        assert_eq!(parse_calipso(&opt), Ok(Some((3, lv("s7:c39,c62.c63")))));
        let none = calipso(3, 0, &[]);
        assert_eq!(parse_calipso(&none), Ok(Some((3, lv("s0")))));
        assert_eq!(parse_calipso(&[1, 4, 0, 0, 0, 0]), Ok(None));
        assert_eq!(parse_calipso(&[]), Ok(None));
    }

    #[test]
    fn calipso_malformed() {
        let good = calipso(16, 1, &[0x80, 0, 0, 0]);
        let mut bad_sum = good.clone();
        bad_sum[8] ^= 1;
        assert_eq!(parse_calipso(&bad_sum), Err(PeerError::Checksum));
        let mut flipped = good.clone();
        flipped[12] ^= 0x40;
        assert_eq!(parse_calipso(&flipped), Err(PeerError::Checksum));
        // Truncated option.
        assert!(matches!(parse_calipso(&good[..10]), Err(PeerError::OptionLength { .. })));
        // Compartment length lies (says 2 words, option holds 1).
        let mut lie = good.clone();
        lie[6] = 2;
        let s = calipso_checksum(&lie);
        lie[8..10].copy_from_slice(&s.to_le_bytes());
        assert_eq!(parse_calipso(&lie), Err(PeerError::Truncated("CALIPSO")));
        // Data length below the fixed header.
        assert_eq!(parse_calipso(&[7, 4, 0, 0, 0, 1]), Err(PeerError::Truncated("CALIPSO")));
        // Only a type byte.
        assert!(parse_calipso(&[7]).is_err());
        let mut two = good.clone();
        two.extend_from_slice(&good);
        assert_eq!(parse_calipso(&two), Err(PeerError::Duplicate("CALIPSO")));
        let zero = calipso(0, 1, &[]);
        assert_eq!(parse_calipso(&zero), Err(PeerError::ReservedDoi));
        // Category beyond c1023: 132 bytes of bitmap with the last bit set.
        let mut bm = vec![0u8; 132];
        bm[131] = 1;
        assert_eq!(parse_calipso(&calipso(1, 0, &bm)), Err(PeerError::CategoryRange(1055)));
    }

    proptest::proptest! {
        #[test]
        fn cipso_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = parse_cipso(&bytes);
        }

        #[test]
        fn cipso_never_panics_when_it_starts_with_cipso(mut bytes in proptest::collection::vec(proptest::num::u8::ANY, 2..48), len in 0u8..50, tag in proptest::sample::select(vec![1u8, 2, 5, 7])) {
            bytes[0] = IPOPT_CIPSO;
            bytes[1] = len;
            if bytes.len() > 6 { bytes[6] = tag; }
            let _ = parse_cipso(&bytes);
        }

        #[test]
        fn kernel_encodings_round_trip(sens in 0u16..=255, runs in proptest::collection::vec((0usize..300, 1usize..12), 0..9), from_zero in proptest::bool::ANY) {
            let mut categories = CategorySet::empty();
            for (start, len) in runs {
                for c in start..start + len { categories.insert(c); }
            }
            if from_zero { categories.insert(0); }
            let l = Level { sensitivity: sens, categories };
            if let Err(e) = round_trips(&l) { proptest::prop_assert!(false, "{}", e); }
        }

        #[test]
        fn calipso_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = parse_calipso(&bytes);
        }

        #[test]
        fn calipso_never_panics_with_valid_checksum(mut bytes in proptest::collection::vec(proptest::num::u8::ANY, 10..200), words in 0u8..60) {
            bytes[0] = IPV6_TLV_CALIPSO;
            bytes[1] = (bytes.len() - 2) as u8;
            bytes[6] = words;
            let s = calipso_checksum(&bytes);
            bytes[8..10].copy_from_slice(&s.to_le_bytes());
            let _ = parse_calipso(&bytes);
        }
    }
}
