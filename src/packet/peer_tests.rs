//! Tests of the CIPSO/CALIPSO parsers ([`super`]).

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
    0x86, 0x28, 0x00, 0x00, 0x00, 0x10, 0x05, 0x22, 0x00, 0x00, 0x00, 0x58, 0x00, 0x50, 0x00, 0x4e, 0x00, 0x46, 0x00,
    0x42, 0x00, 0x3c, 0x00, 0x37, 0x00, 0x32, 0x00, 0x2d, 0x00, 0x28, 0x00, 0x24, 0x00, 0x1e, 0x00, 0x19, 0x00, 0x14,
    0x00, 0x03,
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
