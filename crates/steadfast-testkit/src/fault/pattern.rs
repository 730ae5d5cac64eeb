//! The deterministic byte pattern served by `/bytes/{n}`, `/file` and `/drip`.
//!
//! Every byte is a pure function of its offset in the body, so a client can
//! check any slice (a resumed download, a range) without the server keeping
//! anything. The pattern is built from 64-bit words of a SplitMix64
//! finaliser, so a shifted or repeated slice does not match by accident the
//! way a `offset % 256` ramp would.

/// The byte at `offset` of every deterministic body the server sends.
///
/// ```
/// use steadfast_testkit::fault::{fill_pattern, pattern_byte};
///
/// let mut buf = [0u8; 16];
/// fill_pattern(1_000, &mut buf);
/// assert_eq!(buf[3], pattern_byte(1_003));
/// ```
pub fn pattern_byte(offset: u64) -> u8 {
    word(offset / 8).to_le_bytes()[(offset % 8) as usize]
}

/// Fills `buf` with the pattern bytes starting at `offset`.
///
/// Eight bytes per step: fast enough to stream gigabytes from the loopback
/// server without it being the bottleneck.
pub fn fill_pattern(offset: u64, buf: &mut [u8]) {
    let mut pos = offset;
    let mut rest = buf;
    // Unaligned head, byte by byte, until `pos` is a multiple of 8.
    while !pos.is_multiple_of(8) {
        let Some((first, tail)) = rest.split_first_mut() else {
            return;
        };
        *first = pattern_byte(pos);
        pos += 1;
        rest = tail;
    }
    let mut words = rest.chunks_exact_mut(8);
    for chunk in &mut words {
        chunk.copy_from_slice(&word(pos / 8).to_le_bytes());
        pos += 8;
    }
    for b in words.into_remainder() {
        *b = pattern_byte(pos);
        pos += 1;
    }
}

/// The absolute offset of the first byte of `data` (which starts at
/// `offset`) that differs from the pattern, or `None` if all match.
///
/// ```
/// use steadfast_testkit::fault::{fill_pattern, pattern_mismatch};
///
/// let mut buf = vec![0u8; 100];
/// fill_pattern(42, &mut buf);
/// assert_eq!(pattern_mismatch(42, &buf), None);
/// buf[10] ^= 1;
/// assert_eq!(pattern_mismatch(42, &buf), Some(52));
/// ```
pub fn pattern_mismatch(offset: u64, data: &[u8]) -> Option<u64> {
    let mut expected = [0u8; 4096];
    let mut pos = offset;
    for chunk in data.chunks(expected.len()) {
        let want = &mut expected[..chunk.len()];
        fill_pattern(pos, want);
        if let Some(i) = chunk.iter().zip(want.iter()).position(|(a, b)| a != b) {
            return Some(pos + i as u64);
        }
        pos += chunk.len() as u64;
    }
    None
}

/// SplitMix64's output function applied to a word index.
const fn word(index: u64) -> u64 {
    let mut z = index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn fill_agrees_with_pattern_byte(offset in 0u64..u64::MAX / 2, len in 0usize..100) {
            let mut buf = vec![0u8; len];
            fill_pattern(offset, &mut buf);
            for (i, b) in buf.iter().enumerate() {
                prop_assert_eq!(*b, pattern_byte(offset + i as u64));
            }
            prop_assert_eq!(pattern_mismatch(offset, &buf), None);
        }

        #[test]
        fn a_shifted_slice_does_not_match(offset in 0u64..1 << 40, shift in 1u64..64) {
            let mut buf = vec![0u8; 64];
            fill_pattern(offset + shift, &mut buf);
            prop_assert!(pattern_mismatch(offset, &buf).is_some());
        }
    }
}
