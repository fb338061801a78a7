//! vLLM's own `OffloadingConnector` (`--kv-offloading-backend native`): whole GPU blocks copied to
//! a CPU pool with the copy engines, keyed by vLLM's block hashes.
//!
//! Loads are asynchronous (the request waits, the batch goes on) and stores are asynchronous
//! (issued after the step, not on its critical path); both move blocks with one copy per block,
//! no gather kernel. The pool is LRU by block; it is held as runs of blocks ([`BlockRunPool`]).

use super::block_runs::BlockRunPool;
use crate::cost::TransferProfile;
use crate::time::{SimDuration, SimTime};
use std::sync::Arc;

/// The native CPU offload state.
#[derive(Debug)]
pub struct NativeOffload {
    cpu: BlockRunPool,
    block_bytes: u64,
    block_size: u32,
    /// Blocks copied to the CPU pool.
    pub stores: u64,
    /// Blocks loaded back.
    pub loads: u64,
}

impl NativeOffload {
    /// A pool of `cpu_bytes` for blocks of `block_size` tokens of `block_bytes` each.
    pub fn new(cpu_bytes: u64, block_size: u32, block_bytes: u64) -> Self {
        NativeOffload {
            cpu: BlockRunPool::new(cpu_bytes, block_bytes),
            block_bytes,
            block_size,
            stores: 0,
            loads: 0,
        }
    }

    /// Leading blocks of `chain[from..to]` (a request's block hashes) held in the CPU pool at
    /// `now`, touched so that they stay.
    pub fn lookup(&mut self, chain: &Arc<Vec<u64>>, from: usize, to: usize, now: SimTime) -> u32 {
        self.cpu.lookup(chain, from, to, now.as_ns())
    }

    /// Seconds to load `blocks` blocks into the GPU (asynchronous).
    pub fn load_s(&mut self, blocks: u32, tp: &TransferProfile) -> f64 {
        self.loads += blocks as u64;
        blocks as f64 * tp.block_copy_us * 1e-6
            + (blocks as u64 * self.block_bytes) as f64 / (tp.h2d_gbps * 1e9)
    }

    /// Copies blocks `chain[from..to]` (a request's block hashes) to the CPU pool after a step
    /// ending at `now`; the copies queue on one copy stream. Returns the bytes copied.
    pub fn store(
        &mut self,
        chain: &Arc<Vec<u64>>,
        from: usize,
        to: usize,
        now: SimTime,
        tp: &TransferProfile,
    ) -> u64 {
        let dur = SimDuration::from_secs_f64(
            tp.block_copy_us * 1e-6 + self.block_bytes as f64 / (tp.d2h_gbps * 1e9),
        );
        let bytes = self.cpu.store(chain, from, to, now.as_ns(), dur.as_ns());
        self.stores = self.cpu.stores;
        bytes
    }

    /// Tokens per offloaded block.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// (bytes used, capacity) of the CPU pool.
    pub fn usage(&self) -> (u64, u64) {
        (self.cpu.used(), self.cpu.capacity())
    }

    /// Blocks evicted from the CPU pool.
    pub fn evictions(&self) -> u64 {
        self.cpu.evictions
    }
}
