//! Data patterns that differ per namespace, block, word and pass, so a block
//! read from the wrong place, or a stale one, does not verify.

/// splitmix64: a cheap, well-mixed 64-bit hash.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fills `buf` with the pattern of `seed` for blocks starting at `lba`.
pub fn fill(buf: &mut [u8], seed: u64, lba: u64, block_size: usize) {
    for (i, chunk) in buf.chunks_mut(8).enumerate() {
        let word = word_at(seed, lba, block_size, i * 8);
        let bytes = word.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

fn word_at(seed: u64, lba: u64, block_size: usize, offset: usize) -> u64 {
    let block = lba + (offset / block_size) as u64;
    let within = (offset % block_size) as u64;
    mix(seed ^ block.rotate_left(24) ^ within.rotate_left(48))
}

/// The first byte offset where `buf` differs from the pattern, if any.
pub fn first_mismatch(buf: &[u8], seed: u64, lba: u64, block_size: usize) -> Option<usize> {
    for (i, chunk) in buf.chunks(8).enumerate() {
        let bytes = word_at(seed, lba, block_size, i * 8).to_le_bytes();
        if chunk != &bytes[..chunk.len()] {
            let j = chunk.iter().zip(bytes.iter()).position(|(a, b)| a != b).unwrap_or(0);
            return Some(i * 8 + j);
        }
    }
    None
}
