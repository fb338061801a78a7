//! What the scheduler needs from a GPU KV block pool, at the level of a request.
//!
//! Two pools implement it with the same observable behaviour (free blocks, prefix hits, which
//! hits running requests hold, evictions): [`BlockPool`](super::blocks::BlockPool) keeps every
//! block with an id, as vLLM does, and is the reference; [`SegmentPool`](super::segments::SegmentPool)
//! keeps runs of blocks as one entry and does per-request work in place of per-block work. The
//! engine runs on either; tests compare them.

/// A pool of GPU KV blocks with automatic prefix caching.
pub trait KvPool: std::fmt::Debug {
    /// The blocks one request holds, in sequence order.
    type Held: Default + std::fmt::Debug;
    /// A prefix-hit scan: what [`KvPool::scan_hits`] found, for [`KvPool::take_hits`].
    type Scan: Default + std::fmt::Debug;

    /// A pool of `n` empty blocks; `caching` turns automatic prefix caching on.
    fn new(n: u32, caching: bool) -> Self;

    /// Blocks in the free queue (allocatable, possibly still caching a prefix).
    fn num_free(&self) -> u32;

    /// Total blocks.
    fn total(&self) -> u32;

    /// Blocks held by running requests.
    fn num_used(&self) -> u32 {
        self.total() - self.num_free()
    }

    /// Prefix-cache entries evicted so far.
    fn evictions(&self) -> u64;

    /// A counter that moves whenever something could make room for a waiting request:
    /// prefix-cache insertions, hits taken from the free queue, and releases. While it stands
    /// still, a waiting request that could not be admitted still cannot (allocations and the
    /// evictions they cause only make room scarcer; see the engine's decode stretches).
    fn admission_epoch(&self) -> u64;

    /// Blocks `held` holds.
    fn held_len(held: &Self::Held) -> u32;

    /// Scans the prefix hit of `hashes` (already capped at what may hit) into `scan`; returns
    /// the blocks hit.
    fn scan_hits(&self, scan: &mut Self::Scan, hashes: &[u64]) -> usize;

    /// Of the scan's hit blocks, those running requests hold (taking them uses no free block).
    fn count_busy(&self, scan: &Self::Scan) -> usize;

    /// Takes the scan's hit blocks (a reference on each) as the first blocks of the empty
    /// `held`; they count as registered.
    fn take_hits(&mut self, scan: &Self::Scan, held: &mut Self::Held);

    /// Takes `n` blocks off the front of the free queue (the caller checked they are free) and
    /// appends them to `held`.
    fn allocate(&mut self, held: &mut Self::Held, n: u32);

    /// Registers the held blocks up to position `upto` under `hashes` (the request's chained
    /// block hashes), each unless its hash is cached already; blocks registered before are
    /// skipped.
    fn register(&mut self, held: &mut Self::Held, hashes: &std::sync::Arc<Vec<u64>>, upto: u32);

    /// Releases a request's blocks, last block first; `held` is empty afterwards.
    fn release(&mut self, held: &mut Self::Held);

    /// Starts (or stops) recording the prefix cache's changes as vLLM's KV events.
    fn record_events(&mut self, on: bool);

    /// Moves the changes recorded since the last call, in order, to the end of `out`.
    fn take_events(&mut self, out: &mut Vec<BlockEvent>);
}

/// A change to the prefix cache, as vLLM publishes it (`BlockStored`, `BlockRemoved`) for
/// routers that index every engine's cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockEvent {
    /// The block's chained hash.
    pub hash: u64,
    /// Stored (newly cached) or removed (evicted).
    pub stored: bool,
}
