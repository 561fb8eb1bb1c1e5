//! Deterministic chunk boundaries derived from the input itself, so that a target can check
//! "any chunking gives the same result" and a saved crash still replays exactly.

/// FNV-1a of `data`: a seed that changes with every byte of the input.
fn seed(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

/// A few sets of cut positions in `0..=len`, each sorted: one cut after every byte, then
/// `rounds` pseudo-random sets of up to eight cuts (repeats allowed: an empty chunk is a
/// chunking too).
pub(crate) fn cut_sets(data: &[u8], len: usize, rounds: usize) -> Vec<Vec<usize>> {
    let mut sets = vec![(1..len).collect::<Vec<_>>()];
    let mut state = seed(data) | 1;
    let mut next = move || {
        // xorshift64: cheap and good enough to spread cuts.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let span = u64::try_from(len).unwrap_or(u64::MAX).saturating_add(1);
    for _ in 0..rounds {
        let count = next() % 9;
        let mut cuts: Vec<usize> = (0..count).map(|_| usize::try_from(next() % span).unwrap_or(0)).collect();
        cuts.sort_unstable();
        sets.push(cuts);
    }
    sets
}

/// `bytes` cut at `cuts` (sorted positions within `0..=bytes.len()`).
pub(crate) fn split_at<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::with_capacity(cuts.len() + 1);
    let mut last = 0;
    for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
        let cut = cut.clamp(last, bytes.len());
        pieces.push(bytes.get(last..cut).unwrap_or_default());
        last = cut;
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_concatenate_to_the_input() {
        let data = b"some input bytes";
        for cuts in cut_sets(data, data.len(), 5) {
            assert_eq!(split_at(data, &cuts).concat(), data);
        }
        assert_eq!(split_at(b"abc", &[0, 0, 3]), vec![&b""[..], b"", b"abc", b""]);
    }
}
