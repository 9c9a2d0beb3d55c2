//! JSON strings as serde_json writes them, written 16 bytes at a time. serde_json looks
//! at each byte and a JSON log line has a `"` every few bytes, so escaping was most of
//! the cost of `encoding: json` on such lines (BENCHMARKS.md, "JSON record values"). On
//! x86-64 (whose SSE2 is always present) a block of 16 bytes is compared at once through
//! `safe_arch` and copied whole, and the copy is cut back at its first byte to escape;
//! elsewhere serde_json does the work.

/// Appends `bytes` as a JSON string, quoted: what serde_json writes for
/// `String::from_utf8_lossy(bytes)` (invalid UTF-8 becomes U+FFFD).
#[inline]
pub fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = out.len();
    // Most lines are ASCII: written while looked at, checked as UTF-8 only if not.
    if put_text(out, bytes) && std::str::from_utf8(bytes).is_err() {
        out.truncate(start);
        put_text(out, String::from_utf8_lossy(bytes).as_bytes());
    }
}

/// The bytes [`put`] appends for `bytes`: what serde_json writes for
/// `String::from_utf8_lossy(bytes)`, quotes included. Written to learn it, unless
/// [`is_plain`]: for the few strings measured before they are written (a parse error's
/// reason); a message is escaped once, and measured by what that wrote.
pub fn len(bytes: &[u8]) -> usize {
    if is_plain(bytes) {
        return bytes.len() + 2;
    }
    let mut out = Vec::with_capacity(bytes.len() + 2);
    put(&mut out, bytes);
    out.len()
}

/// Whether `bytes` are ASCII without a byte to escape (most text lines; false for fewer
/// than 16 bytes): [`put_plain`] writes them, `bytes.len() + 2` bytes.
#[inline]
pub fn is_plain(bytes: &[u8]) -> bool {
    #[cfg(target_arch = "x86_64")]
    return plain(bytes);
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// Appends `bytes`, which [`is_plain`], as a JSON string: quoted.
#[inline]
pub fn put_plain(out: &mut Vec<u8>, bytes: &[u8]) {
    debug_assert!(is_plain(bytes));
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    out.extend_from_slice(bytes);
    out.push(b'"');
}

/// Appends `text` as a JSON string, as it is if it is UTF-8; returns true when it may not
/// be (it has a byte that is not ASCII), for the caller to check and write it again.
#[cfg(target_arch = "x86_64")]
#[inline]
fn put_text(out: &mut Vec<u8>, text: &[u8]) -> bool {
    if plain(text) {
        // Most text lines: copied whole.
        put_plain(out, text);
        return false;
    }
    // The text, its quotes and a block's overhang; escapes reserve for themselves.
    out.reserve(text.len() + 2 + BLOCK);
    out.push(b'"');
    let mut high = 0;
    let mut at = 0;
    // Blocks with a block after them: a run is copied as the 16 bytes where it starts.
    while text.len() - at >= 2 * BLOCK {
        let window: &[u8; 2 * BLOCK] = text[at..at + 2 * BLOCK].try_into().expect("a window");
        high |= put_block(out, window, BLOCK);
        at += BLOCK;
    }
    // The last 31 bytes at most, padded.
    let rest = text.len() - at;
    let mut padded = [0u8; 3 * BLOCK];
    padded[..rest].copy_from_slice(&text[at..]);
    let mut at = 0;
    while at < rest {
        let window: &[u8; 2 * BLOCK] = padded[at..at + 2 * BLOCK].try_into().expect("a window");
        high |= put_block(out, window, (rest - at).min(BLOCK));
        at += BLOCK;
    }
    out.push(b'"');
    high != 0
}

/// [`put_text`] through serde_json, which checks the UTF-8 first (true: not UTF-8,
/// nothing written).
#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn put_text(out: &mut Vec<u8>, text: &[u8]) -> bool {
    match std::str::from_utf8(text) {
        Ok(text) => {
            serde_json::to_writer(&mut *out, text).expect("serializing a string to a Vec");
            false
        }
        Err(_) => true,
    }
}

#[cfg(target_arch = "x86_64")]
const BLOCK: usize = 16;

/// Whether `text` (16 bytes or more) is ASCII without a byte to escape: its blocks
/// compared, the last one overlapping the one before.
#[cfg(target_arch = "x86_64")]
#[inline]
fn plain(text: &[u8]) -> bool {
    if text.len() < BLOCK {
        return false;
    }
    let blocks = text.chunks_exact(BLOCK);
    let last = &text[text.len() - BLOCK..];
    blocks.chain([last]).all(|block| {
        let (escapes, high) = masks(block.try_into().expect("a block"));
        escapes | high == 0
    })
}

/// Appends the first `len` (≤ 16) bytes of `window` escaped; returns a mask that is not
/// zero when one of them is not ASCII. Each run between escapes is copied as the 16
/// bytes from its start (one store) and the copy cut back to the run.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn put_block(out: &mut Vec<u8>, window: &[u8; 2 * BLOCK], len: usize) -> u32 {
    let block: &[u8; BLOCK] = window[..BLOCK].try_into().expect("a block");
    let (mut escapes, high) = masks(block);
    let valid = (1u32 << len) - 1;
    escapes &= valid;
    let mut start = 0;
    while escapes != 0 {
        let at = escapes.trailing_zeros() as usize;
        copy_run(out, window, start, at);
        escape(out, block[at]);
        start = at + 1;
        escapes &= escapes - 1;
    }
    copy_run(out, window, start, len);
    high & valid
}

/// Appends `window[start..end]` (`start` ≤ 16, `end` ≤ `start` + 16) as one 16-byte copy
/// cut back.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn copy_run(out: &mut Vec<u8>, window: &[u8; 2 * BLOCK], start: usize, end: usize) {
    let before = out.len();
    let run: &[u8; BLOCK] = window[start..start + BLOCK].try_into().expect("a run");
    out.extend_from_slice(run);
    out.truncate(before + (end - start));
}

/// Bits set where `block`'s bytes are ones a JSON string escapes (`"`, `\` or a control
/// character, below 0x20; DEL and non-ASCII bytes are written as they are), and where
/// they are not ASCII.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn masks(block: &[u8; BLOCK]) -> (u32, u32) {
    use safe_arch::{
        bitor_m128i, cmp_eq_mask_i8_m128i, load_unaligned_m128i, min_u8_m128i, move_mask_i8_m128i,
        set_splat_i8_m128i,
    };
    let bytes = load_unaligned_m128i(block);
    let quote = cmp_eq_mask_i8_m128i(bytes, set_splat_i8_m128i(b'"' as i8));
    let backslash = cmp_eq_mask_i8_m128i(bytes, set_splat_i8_m128i(b'\\' as i8));
    // min(b, 0x1f) == b exactly where b ≤ 0x1f, unsigned.
    let control = cmp_eq_mask_i8_m128i(min_u8_m128i(bytes, set_splat_i8_m128i(0x1f)), bytes);
    let escapes = bitor_m128i(bitor_m128i(quote, backslash), control);
    (
        move_mask_i8_m128i(escapes) as u32,
        move_mask_i8_m128i(bytes) as u32,
    )
}

/// What follows the `\` of a byte's escape: the byte of a short escape, or `u` (then four
/// hex digits); 0 for bytes without one.
#[cfg(target_arch = "x86_64")]
const ESCAPES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = b'u';
        byte += 1;
    }
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table[b'\n' as usize] = b'n';
    table[b'\r' as usize] = b'r';
    table[b'\t' as usize] = b't';
    table[0x08] = b'b';
    table[0x0c] = b'f';
    table
};

/// Appends the escape serde_json writes for `byte` (`"`, `\` or a control character).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn escape(out: &mut Vec<u8>, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short = ESCAPES[usize::from(byte)];
    if short == b'u' {
        let (high, low) = (HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0xf)]);
        out.extend_from_slice(&[b'\\', b'u', b'0', b'0', high, low]);
    } else {
        out.extend_from_slice(&[b'\\', short]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn written(bytes: &[u8]) -> Vec<u8> {
        let mut out = b"before".to_vec();
        put(&mut out, bytes);
        out.split_off(6)
    }

    fn serde_jsons(bytes: &[u8]) -> Vec<u8> {
        let json = serde_json::to_vec(&String::from_utf8_lossy(bytes)).unwrap();
        assert_eq!(len(bytes), json.len(), "len of {bytes:?}");
        json
    }

    #[test]
    fn every_byte_to_escape_at_every_place_of_a_block_should_be_written_as_serde_json_does() {
        for special in (0u8..0x20).chain([b'"', b'\\', 0x7f, 0x80, 0xff]) {
            for len in [0, 1, 15, 16, 17, 31, 32, 33, 100] {
                for at in 0..=len {
                    let mut line = vec![b'a'; len];
                    line.insert(at, special);
                    assert_eq!(written(&line), serde_jsons(&line), "{line:?}");
                }
            }
        }
        let text = "é😀\u{7f}\"x\\".repeat(20);
        assert_eq!(written(text.as_bytes()), serde_json::to_vec(&text).unwrap());
        assert_eq!(
            len(text.as_bytes()),
            serde_json::to_vec(&text).unwrap().len()
        );
        assert_eq!(written(b""), b"\"\"");
        assert_eq!(len(b""), 2);
    }

    proptest! {
        #[test]
        fn any_bytes_should_be_written_as_serde_json_writes_their_lossy_text(
            bytes in proptest::collection::vec(
                prop_oneof![Just(b'"'), Just(b'\\'), Just(b'\n'), 0u8..0x20, any::<u8>(), b'a'..=b'z'],
                0..200,
            ),
            text in ".{0,80}",
        ) {
            prop_assert_eq!(written(&bytes), serde_jsons(&bytes));
            prop_assert_eq!(written(text.as_bytes()), serde_json::to_vec(&text).unwrap());
            prop_assert_eq!(len(text.as_bytes()), serde_json::to_vec(&text).unwrap().len());
        }
    }
}
