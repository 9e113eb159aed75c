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
#[path = "peer_tests.rs"]
mod tests;
