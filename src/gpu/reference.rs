//! The copy kernels' layout transforms on the CPU, over byte slices: the specification that
//! `kernels/kv_transfer.cu` must match bit for bit.
//!
//! - Paged cache (vLLM), one buffer per layer: [`Layout::Flash`] is
//!   `[2, num_blocks, block_size, kv_heads, head_dim]`, [`Layout::FlashInfer`] is
//!   `[num_blocks, 2, block_size, kv_heads, head_dim]`. Token `t` of a request lives at slot
//!   `block_table[t / block_size] * block_size + t % block_size` ([`slot_mapping`]).
//! - Chunk (LMCache `KV_2LTD`), one buffer per chunk: `[2, layers, tokens, kv_heads * head_dim]`.
//!
//! A transfer moves a token stream: `slots[i]` is the slot of its token `i`, and the stream is cut
//! into consecutive chunks of `chunk_tokens[c]` tokens. The first `skip` tokens of the stream are
//! not copied (already present at the destination), nor are tokens whose slot is negative; the
//! rows they would have written are left as they were. Elements are copied as bytes, so any
//! element size works.

use super::GpuError;
use std::collections::HashSet;

/// The paged cache's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// FlashAttention: `[2, num_blocks, block_size, kv_heads, head_dim]` per layer.
    Flash,
    /// FlashInfer: `[num_blocks, 2, block_size, kv_heads, head_dim]` per layer.
    FlashInfer,
}

impl Layout {
    /// Both layouts.
    pub const ALL: [Layout; 2] = [Layout::Flash, Layout::FlashInfer];

    /// The name used in kernel names (`kv_gather_<name>_w16`).
    pub fn name(self) -> &'static str {
        match self {
            Layout::Flash => "flash",
            Layout::FlashInfer => "flashinfer",
        }
    }
}

/// Direction of a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Paged cache -> chunks (LMCache store).
    Gather,
    /// Chunks -> paged cache (LMCache retrieve).
    Scatter,
}

impl Direction {
    /// The name used in kernel names (`kv_<name>_flash_w16`).
    pub fn name(self) -> &'static str {
        match self {
            Direction::Gather => "gather",
            Direction::Scatter => "scatter",
        }
    }
}

/// The shape of a paged KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagedShape {
    /// Layout of each layer's buffer.
    pub layout: Layout,
    /// Layers (one buffer each).
    pub layers: usize,
    /// Blocks per layer.
    pub num_blocks: usize,
    /// Tokens per block.
    pub block_size: usize,
    /// KV heads.
    pub kv_heads: usize,
    /// Elements per head.
    pub head_dim: usize,
    /// Bytes per element (2: bf16/fp16, 1: fp8).
    pub elem_bytes: usize,
}

impl PagedShape {
    /// Bytes of one token's K (or V) in one layer.
    pub fn row_bytes(&self) -> usize {
        self.kv_heads * self.head_dim * self.elem_bytes
    }

    /// Slots per layer.
    pub fn slots(&self) -> usize {
        self.num_blocks * self.block_size
    }

    /// Bytes of one layer's buffer.
    pub fn layer_bytes(&self) -> usize {
        2 * self.slots() * self.row_bytes()
    }

    /// Byte offset of the K (`kv` 0) or V (`kv` 1) row of `slot` in a layer's buffer.
    pub fn row_offset(&self, kv: usize, slot: usize) -> usize {
        let row = match self.layout {
            Layout::Flash => kv * self.slots() + slot,
            Layout::FlashInfer => {
                let (block, in_block) = (slot / self.block_size, slot % self.block_size);
                (block * 2 + kv) * self.block_size + in_block
            }
        };
        row * self.row_bytes()
    }

    /// Bytes of a chunk of `tokens` tokens.
    pub fn chunk_bytes(&self, tokens: usize) -> usize {
        2 * self.layers * tokens * self.row_bytes()
    }

    /// Byte offset of token `t` (of `tokens`), `layer`, K or V in a chunk.
    pub fn chunk_offset(&self, kv: usize, layer: usize, tokens: usize, t: usize) -> usize {
        ((kv * self.layers + layer) * tokens + t) * self.row_bytes()
    }

    /// Every dimension positive and the sizes representable.
    pub fn validate(&self) -> Result<(), GpuError> {
        let dims = [
            ("layers", self.layers),
            ("num_blocks", self.num_blocks),
            ("block_size", self.block_size),
            ("kv_heads", self.kv_heads),
            ("head_dim", self.head_dim),
            ("elem_bytes", self.elem_bytes),
        ];
        if let Some((name, _)) = dims.iter().find(|(_, v)| *v == 0) {
            return Err(GpuError::invalid(format!("{name} must be positive")));
        }
        [
            self.kv_heads,
            self.head_dim,
            self.elem_bytes,
            2,
            self.num_blocks,
        ]
        .iter()
        .try_fold(self.block_size, |a, b| a.checked_mul(*b))
        .filter(|b| *b <= i64::MAX as usize)
        .ok_or_else(|| GpuError::invalid("paged cache layer too large"))?;
        Ok(())
    }
}

/// Slots of tokens `first .. first + tokens` of a request with `block_table`: block
/// `block_table[t / block_size]`, offset `t % block_size`; a negative block gives slot -1.
pub fn slot_mapping(
    block_table: &[i64],
    block_size: usize,
    first: usize,
    tokens: usize,
) -> Result<Vec<i64>, GpuError> {
    if block_size == 0 {
        return Err(GpuError::invalid("block_size must be positive"));
    }
    (first..first + tokens)
        .map(|t| {
            let b = *block_table.get(t / block_size).ok_or_else(|| {
                GpuError::invalid(format!(
                    "token {t} needs block {} but the block table has {}",
                    t / block_size,
                    block_table.len()
                ))
            })?;
            Ok(if b < 0 {
                -1
            } else {
                b * block_size as i64 + (t % block_size) as i64
            })
        })
        .collect()
}

/// Checks that a transfer fits together and returns the chunks' first tokens in the stream
/// (`chunk_tokens.len() + 1` entries, the last one the stream's length).
///
/// `chunk_lens` are the chunk buffers' sizes in bytes. Slots of copied tokens must lie in the
/// cache; for a scatter they must also be distinct (two tokens writing one row would race on the
/// GPU).
pub fn check_transfer(
    shape: &PagedShape,
    direction: Direction,
    slots: &[i64],
    chunk_tokens: &[usize],
    chunk_lens: &[usize],
    skip: usize,
) -> Result<Vec<usize>, GpuError> {
    shape.validate()?;
    if chunk_tokens.is_empty() {
        return Err(GpuError::invalid("a transfer needs one chunk at least"));
    }
    if chunk_tokens.len() != chunk_lens.len() {
        return Err(GpuError::invalid(format!(
            "{} chunk sizes but {} chunk buffers",
            chunk_tokens.len(),
            chunk_lens.len()
        )));
    }
    let mut starts = Vec::with_capacity(chunk_tokens.len() + 1);
    let mut at = 0usize;
    starts.push(0);
    for (c, (&n, &len)) in chunk_tokens.iter().zip(chunk_lens).enumerate() {
        if len < shape.chunk_bytes(n) {
            return Err(GpuError::invalid(format!(
                "chunk {c}: {n} tokens need {} bytes, the buffer has {len}",
                shape.chunk_bytes(n)
            )));
        }
        at += n;
        starts.push(at);
    }
    if at != slots.len() {
        return Err(GpuError::invalid(format!(
            "the chunks hold {at} tokens but the slot mapping has {}",
            slots.len()
        )));
    }
    if skip > slots.len() {
        return Err(GpuError::invalid(format!(
            "skip {skip} is beyond the {} tokens of the transfer",
            slots.len()
        )));
    }
    let mut seen = HashSet::new();
    for (t, &s) in slots.iter().enumerate().skip(skip) {
        if s >= shape.slots() as i64 {
            return Err(GpuError::invalid(format!(
                "token {t}: slot {s} is beyond the cache's {} slots",
                shape.slots()
            )));
        }
        if direction == Direction::Scatter && s >= 0 && !seen.insert(s) {
            return Err(GpuError::invalid(format!(
                "token {t}: slot {s} is written twice"
            )));
        }
    }
    Ok(starts)
}

fn check_layers(
    shape: &PagedShape,
    lens: impl ExactSizeIterator<Item = usize>,
) -> Result<(), GpuError> {
    if lens.len() != shape.layers {
        return Err(GpuError::invalid(format!(
            "{} layer buffers for {} layers",
            lens.len(),
            shape.layers
        )));
    }
    for (l, len) in lens.enumerate() {
        if len < shape.layer_bytes() {
            return Err(GpuError::invalid(format!(
                "layer {l}: {len} bytes, the shape needs {}",
                shape.layer_bytes()
            )));
        }
    }
    Ok(())
}

/// The copies of one transfer as (layer, kv, chunk, byte offset in the layer, byte offset in the
/// chunk), one per token row copied, in stream order.
fn rows(
    shape: &PagedShape,
    slots: &[i64],
    starts: &[usize],
    skip: usize,
) -> impl Iterator<Item = (usize, usize, usize, usize, usize)> {
    let shape = *shape;
    (skip..slots.len())
        .filter(move |&t| slots[t] >= 0)
        .flat_map(move |t| {
            let c = starts.partition_point(|&s| s <= t) - 1;
            let tokens = starts[c + 1] - starts[c];
            let slot = slots[t] as usize;
            (0..2).flat_map(move |kv| {
                (0..shape.layers).map(move |l| {
                    (
                        l,
                        kv,
                        c,
                        shape.row_offset(kv, slot),
                        shape.chunk_offset(kv, l, tokens, t - starts[c]),
                    )
                })
            })
        })
}

/// Paged cache `layers` -> `chunks` (what `kv_gather_*` does).
pub fn gather(
    shape: &PagedShape,
    layers: &[&[u8]],
    slots: &[i64],
    chunk_tokens: &[usize],
    skip: usize,
    chunks: &mut [&mut [u8]],
) -> Result<(), GpuError> {
    check_layers(shape, layers.iter().map(|l| l.len()))?;
    let lens: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
    let starts = check_transfer(shape, Direction::Gather, slots, chunk_tokens, &lens, skip)?;
    let row = shape.row_bytes();
    for (l, _kv, c, src, dst) in rows(shape, slots, &starts, skip) {
        chunks[c][dst..dst + row].copy_from_slice(&layers[l][src..src + row]);
    }
    Ok(())
}

/// `chunks` -> paged cache `layers` (what `kv_scatter_*` does).
pub fn scatter(
    shape: &PagedShape,
    layers: &mut [&mut [u8]],
    slots: &[i64],
    chunk_tokens: &[usize],
    skip: usize,
    chunks: &[&[u8]],
) -> Result<(), GpuError> {
    check_layers(shape, layers.iter().map(|l| l.len()))?;
    let lens: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
    let starts = check_transfer(shape, Direction::Scatter, slots, chunk_tokens, &lens, skip)?;
    let row = shape.row_bytes();
    for (l, _kv, c, dst, src) in rows(shape, slots, &starts, skip) {
        layers[l][dst..dst + row].copy_from_slice(&chunks[c][src..src + row]);
    }
    Ok(())
}

/// Word sizes the kernels are built for, widest first.
pub const WORD_SIZES: [usize; 4] = [16, 8, 4, 1];

/// The widest word (16, 8, 4 or 1 bytes) that divides `row_bytes` and every address in `addrs`:
/// the word the kernels copy with.
pub fn word_bytes(row_bytes: usize, addrs: &[u64]) -> usize {
    WORD_SIZES
        .into_iter()
        .find(|&w| row_bytes.is_multiple_of(w) && addrs.iter().all(|a| a % w as u64 == 0))
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::Rng;

    fn shape(
        layout: Layout,
        layers: usize,
        nb: usize,
        bs: usize,
        h: usize,
        d: usize,
        e: usize,
    ) -> PagedShape {
        PagedShape {
            layout,
            layers,
            num_blocks: nb,
            block_size: bs,
            kv_heads: h,
            head_dim: d,
            elem_bytes: e,
        }
    }

    #[test]
    fn slot_mapping_follows_the_block_table() {
        // Blocks 5, 2, 7 of 3 tokens; tokens 2..7.
        let s = slot_mapping(&[5, 2, 7], 3, 2, 5).unwrap();
        assert_eq!(s, vec![17, 6, 7, 8, 21]);
        assert_eq!(slot_mapping(&[4, -1], 2, 0, 4).unwrap(), vec![8, 9, -1, -1]);
        assert!(slot_mapping(&[0], 4, 0, 5).is_err());
    }

    #[test]
    fn flash_gather_by_hand() {
        // 1 layer, 3 blocks of 3 (odd) tokens, rows of one bf16 (2 bytes); byte i of the layer
        // holds i. Block table [2, 0]: tokens 0..5 at slots 6, 7, 8, 0, 1.
        let s = shape(Layout::Flash, 1, 3, 3, 1, 1, 2);
        let layer: Vec<u8> = (0..36).collect();
        let slots = slot_mapping(&[2, 0], 3, 0, 5).unwrap();
        assert_eq!(slots, vec![6, 7, 8, 0, 1]);
        let mut chunk = vec![0u8; 20];
        gather(&s, &[&layer], &slots, &[5], 0, &mut [&mut chunk]).unwrap();
        // K rows at slot*2, V rows at (9 + slot)*2.
        assert_eq!(
            chunk,
            vec![
                12, 13, 14, 15, 16, 17, 0, 1, 2, 3, 30, 31, 32, 33, 34, 35, 18, 19, 20, 21
            ]
        );
    }

    #[test]
    fn flashinfer_gather_by_hand() {
        // As above in [num_blocks, 2, block_size]: K of slot s at ((b*2)*3 + i)*2, V at
        // ((b*2+1)*3 + i)*2 with b = s / 3, i = s % 3.
        let s = shape(Layout::FlashInfer, 1, 3, 3, 1, 1, 2);
        let layer: Vec<u8> = (0..36).collect();
        let slots = vec![6, 7, 8, 0, 1];
        let mut chunk = vec![0u8; 20];
        gather(&s, &[&layer], &slots, &[5], 0, &mut [&mut chunk]).unwrap();
        assert_eq!(
            chunk,
            vec![
                24, 25, 26, 27, 28, 29, 0, 1, 2, 3, 30, 31, 32, 33, 34, 35, 6, 7, 8, 9
            ]
        );
    }

    #[test]
    fn two_layers_two_chunks_negative_slot_by_hand() {
        // fp8, rows of 1 byte, 2 layers of 2 blocks x 3 tokens (12 bytes each); layer 0 holds
        // 0..12, layer 1 holds 100..112. Tokens at slots 3, -1, 5, 0 in chunks of 3 and 1 (the
        // second partial).
        let s = shape(Layout::Flash, 2, 2, 3, 1, 1, 1);
        let l0: Vec<u8> = (0..12).collect();
        let l1: Vec<u8> = (100..112).collect();
        let slots = vec![3, -1, 5, 0];
        let mut c0 = vec![238u8; 12];
        let mut c1 = vec![238u8; 4];
        gather(&s, &[&l0, &l1], &slots, &[3, 1], 0, &mut [&mut c0, &mut c1]).unwrap();
        // [kv][layer][token]: K L0, K L1, V L0 (6 + slot), V L1; the -1 token untouched.
        assert_eq!(
            c0,
            vec![3, 238, 5, 103, 238, 105, 9, 238, 11, 109, 238, 111]
        );
        assert_eq!(c1, vec![0, 100, 6, 106]);
    }

    #[test]
    fn scatter_with_skip_by_hand() {
        let s = shape(Layout::Flash, 2, 2, 3, 1, 1, 1);
        let c0: Vec<u8> = (1..=12).collect();
        let c1 = vec![21u8, 22, 23, 24];
        let mut l0 = vec![0u8; 12];
        let mut l1 = vec![0u8; 12];
        // Token 0 skipped (already present), token 1 has no slot: tokens 2 (slot 5, chunk 0
        // position 2) and 3 (slot 0, chunk 1 position 0) are written.
        scatter(
            &s,
            &mut [&mut l0, &mut l1],
            &[3, -1, 5, 0],
            &[3, 1],
            1,
            &[&c0, &c1],
        )
        .unwrap();
        let mut e0 = vec![0u8; 12];
        let mut e1 = vec![0u8; 12];
        (e0[5], e1[5], e0[11], e1[11]) = (c0[2], c0[5], c0[8], c0[11]);
        (e0[0], e1[0], e0[6], e1[6]) = (21, 22, 23, 24);
        assert_eq!(l0, e0);
        assert_eq!(l1, e1);
        assert_eq!((l0[5], l1[5], l0[11], l1[11]), (3, 6, 9, 12));
    }

    #[test]
    fn skip_in_gather_leaves_rows_alone() {
        let s = shape(Layout::FlashInfer, 1, 2, 2, 1, 2, 1);
        let layer: Vec<u8> = (0..16).collect();
        let mut chunk = vec![0xEEu8; 12];
        gather(&s, &[&layer], &[3, 2, 0], &[3], 2, &mut [&mut chunk]).unwrap();
        // Only token 2 (slot 0): K row at 0, V row at (1*2+0)*2 = 4.
        let mut want = vec![0xEEu8; 12];
        want[4..6].copy_from_slice(&[0, 1]);
        want[10..12].copy_from_slice(&[4, 5]);
        assert_eq!(chunk, want);
    }

    #[test]
    fn bad_transfers_are_refused() {
        let s = shape(Layout::Flash, 1, 2, 2, 1, 1, 2);
        let layer = vec![0u8; s.layer_bytes()];
        let mut ok = vec![0u8; s.chunk_bytes(2)];
        let e = |r: Result<(), GpuError>| r.unwrap_err().to_string();
        assert!(e(gather(&s, &[&layer], &[0, 4], &[2], 0, &mut [&mut ok])).contains("beyond"));
        assert!(e(gather(&s, &[&layer], &[0, 1, 2], &[2], 0, &mut [&mut ok])).contains("3"));
        let mut small = vec![0u8; 3];
        assert!(e(gather(&s, &[&layer], &[0, 1], &[2], 0, &mut [&mut small])).contains("bytes"));
        assert!(e(gather(&s, &[&layer], &[0, 1], &[2], 3, &mut [&mut ok])).contains("skip"));
        let mut l = layer.clone();
        assert!(e(scatter(&s, &mut [&mut l], &[1, 1], &[2], 0, &[&ok])).contains("written twice"));
        // Skipped tokens are not checked: the kernel never reads their slots.
        scatter(&s, &mut [&mut l], &[1, 1], &[2], 1, &[&ok]).unwrap();
        assert!(e(gather(&s, &[], &[0], &[1], 0, &mut [&mut ok])).contains("layer"));
        let z = shape(Layout::Flash, 1, 0, 2, 1, 1, 2);
        assert!(z.validate().is_err());
    }

    #[test]
    fn gather_then_scatter_round_trips_on_random_shapes() {
        let mut rng = Rng::new(7);
        for case in 0..200 {
            let layout = Layout::ALL[case % 2];
            let bs = [1, 3, 5, 16, 17][rng.range(0, 4) as usize];
            let nb = rng.range(2, 12) as usize;
            let s = shape(
                layout,
                rng.range(1, 3) as usize,
                nb,
                bs,
                rng.range(1, 3) as usize,
                [1, 3, 8][rng.range(0, 2) as usize],
                [1, 2][rng.range(0, 1) as usize],
            );
            // A shuffled (non-contiguous) block table and a random number of tokens.
            let mut table: Vec<i64> = (0..nb as i64).collect();
            for i in (1..table.len()).rev() {
                table.swap(i, rng.range(0, i as u64) as usize);
            }
            let tokens = rng.range(1, (nb * bs) as u64) as usize;
            let mut slots = slot_mapping(&table, bs, 0, tokens).unwrap();
            for sl in slots.iter_mut() {
                if rng.range(0, 9) == 0 {
                    *sl = -1;
                }
            }
            let first = rng.range(1, tokens as u64) as usize;
            let chunk_tokens: Vec<usize> = if first < tokens {
                vec![first, tokens - first]
            } else {
                vec![tokens]
            };
            let skip = rng.range(0, tokens as u64) as usize;
            let layers: Vec<Vec<u8>> = (0..s.layers)
                .map(|_| (0..s.layer_bytes()).map(|_| rng.next_u64() as u8).collect())
                .collect();
            let mut chunks: Vec<Vec<u8>> = chunk_tokens
                .iter()
                .map(|n| vec![0u8; s.chunk_bytes(*n)])
                .collect();
            let lrefs: Vec<&[u8]> = layers.iter().map(|l| l.as_slice()).collect();
            let mut crefs: Vec<&mut [u8]> = chunks.iter_mut().map(|c| c.as_mut_slice()).collect();
            gather(&s, &lrefs, &slots, &chunk_tokens, skip, &mut crefs).unwrap();
            let mut back: Vec<Vec<u8>> =
                (0..s.layers).map(|_| vec![0u8; s.layer_bytes()]).collect();
            let mut brefs: Vec<&mut [u8]> = back.iter_mut().map(|l| l.as_mut_slice()).collect();
            let crefs: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
            scatter(&s, &mut brefs, &slots, &chunk_tokens, skip, &crefs).unwrap();
            // Every row of a copied token came back; every other row is still zero.
            let row = s.row_bytes();
            let zero = vec![0u8; row];
            let copied: HashSet<usize> = slots[skip..]
                .iter()
                .filter(|x| **x >= 0)
                .map(|x| *x as usize)
                .collect();
            for l in 0..s.layers {
                for slot in 0..s.slots() {
                    for kv in 0..2 {
                        let o = s.row_offset(kv, slot);
                        let want: &[u8] = if copied.contains(&slot) {
                            &layers[l][o..o + row]
                        } else {
                            &zero
                        };
                        assert_eq!(&back[l][o..o + row], want, "case {case} {s:?} slot {slot}");
                    }
                }
            }
        }
    }

    #[test]
    fn word_size_follows_row_and_alignment() {
        assert_eq!(word_bytes(2048, &[0x1000, 0x2000]), 16);
        assert_eq!(word_bytes(24, &[0x1000]), 8);
        assert_eq!(word_bytes(2048, &[0x1000, 0x1008]), 8);
        assert_eq!(word_bytes(2048, &[0x1004]), 4);
        assert_eq!(word_bytes(12, &[]), 4);
        assert_eq!(word_bytes(6, &[0x1000]), 1);
        assert_eq!(word_bytes(3, &[0x1000]), 1);
    }

    #[test]
    fn layouts_place_rows_where_vllm_does() {
        let f = shape(Layout::Flash, 1, 4, 16, 8, 128, 2);
        let i = shape(Layout::FlashInfer, 1, 4, 16, 8, 128, 2);
        let row = 8 * 128 * 2;
        // Slot 37 = block 2, position 5.
        assert_eq!(f.row_offset(0, 37), 37 * row);
        assert_eq!(f.row_offset(1, 37), (64 + 37) * row);
        assert_eq!(i.row_offset(0, 37), (2 * 2 * 16 + 5) * row);
        assert_eq!(i.row_offset(1, 37), ((2 * 2 + 1) * 16 + 5) * row);
        assert_eq!(f.layer_bytes(), i.layer_bytes());
        assert_eq!(f.chunk_offset(1, 0, 10, 3), (10 + 3) * row);
    }
}
