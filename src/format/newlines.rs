//! Finding every `\n` in a read chunk. With short lines, one `memchr` call per line costs
//! more than comparing 64 bytes at a time into a bit mask and walking its set bits
//! (BENCHMARKS.md, "file → null: newline masks"). `memchr` has no such bulk interface,
//! so x86-64 (whose SSE2 is always present) compares through `safe_arch`, handing long
//! lines to `memchr`; elsewhere `memchr_iter` does the work.

/// Calls `found` with the index of each `\n` in `bytes`, in order.
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn for_each_newline(bytes: &[u8], mut found: impl FnMut(usize)) {
    let mut at = 0;
    let mut empty_blocks = 0;
    while bytes.len() - at >= 64 {
        let mut mask = newline_mask(bytes[at..at + 64].try_into().expect("64 bytes"));
        if mask == 0 {
            empty_blocks += 1;
            if empty_blocks == LONG_LINE_BLOCKS {
                // A long line: memchr's wider, unrolled search is faster over the rest.
                let Some(i) = memchr::memchr(b'\n', &bytes[at + 64..]) else {
                    return;
                };
                found(at + 64 + i);
                at += 64 + i + 1;
                empty_blocks = 0;
                continue;
            }
        }
        while mask != 0 {
            found(at + mask.trailing_zeros() as usize);
            mask &= mask - 1;
            empty_blocks = 0;
        }
        at += 64;
    }
    memchr::memchr_iter(b'\n', &bytes[at..]).for_each(|i| found(at + i));
}

/// Blocks without a newline before the search switches to `memchr` (lines over 128
/// bytes), whose wider search is faster on long lines (BENCHMARKS.md, same section).
#[cfg(target_arch = "x86_64")]
const LONG_LINE_BLOCKS: u32 = 2;

/// Bit `i` set where `block[i]` is `\n`.
#[cfg(target_arch = "x86_64")]
#[inline]
fn newline_mask(block: &[u8; 64]) -> u64 {
    use safe_arch::{cmp_eq_mask_i8_m128i, load_unaligned_m128i, move_mask_i8_m128i};
    let newline = safe_arch::set_splat_i8_m128i(b'\n' as i8);
    let mut mask = 0;
    for (i, part) in block.chunks_exact(16).enumerate() {
        let bytes = load_unaligned_m128i(part.try_into().expect("chunks of 16"));
        let hits = move_mask_i8_m128i(cmp_eq_mask_i8_m128i(bytes, newline)) as u16;
        mask |= u64::from(hits) << (16 * i);
    }
    mask
}

/// Calls `found` with the index of each `\n` in `bytes`, in order.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
pub fn for_each_newline(bytes: &[u8], found: impl FnMut(usize)) {
    memchr::memchr_iter(b'\n', bytes).for_each(found);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn found(bytes: &[u8]) -> Vec<usize> {
        let mut at = Vec::new();
        for_each_newline(bytes, |i| at.push(i));
        at
    }

    #[test]
    fn every_newline_should_be_found_once_in_order() {
        let mut bytes = vec![b'x'; 200];
        for i in [0, 15, 16, 63, 64, 127, 128, 191, 192, 199] {
            bytes[i] = b'\n';
        }
        assert_eq!(
            found(&bytes),
            vec![0, 15, 16, 63, 64, 127, 128, 191, 192, 199]
        );
        assert_eq!(found(b""), Vec::<usize>::new());
        assert_eq!(found(&[b'\n'; 130]), (0..130).collect::<Vec<_>>());
        let mut long = vec![b'x'; 3000];
        for i in [5, 1000, 1001, 1200, 2999] {
            long[i] = b'\n';
        }
        assert_eq!(found(&long), vec![5, 1000, 1001, 1200, 2999]);
        assert_eq!(found(&long[..999]), vec![5]);
    }

    proptest! {
        #[test]
        fn positions_should_match_a_byte_by_byte_scan(
            bytes in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(0x8a), any::<u8>()], 0..400),
            gaps in proptest::collection::vec((0usize..400, 0usize..400), 0..4),
        ) {
            // Long stretches without a newline, to exercise the switch to memchr.
            let mut bytes = bytes;
            for (at, len) in gaps {
                let at = at.min(bytes.len());
                bytes.splice(at..at, std::iter::repeat_n(b'y', len));
            }
            let want: Vec<usize> = bytes.iter().enumerate().filter(|(_, &b)| b == b'\n').map(|(i, _)| i).collect();
            prop_assert_eq!(found(&bytes), want);
        }
    }
}
