//! vLLM's own `OffloadingConnector` (`--kv-offloading-backend native`): whole GPU blocks copied to
//! a CPU pool with the copy engines, keyed by vLLM's block hashes.
//!
//! Loads are asynchronous (the request waits, the batch goes on) and stores are asynchronous
//! (issued after the step, not on its critical path); both move blocks with one copy per block,
//! no gather kernel.

use super::lru::LruTier;
use crate::cost::TransferProfile;
use crate::time::{SimDuration, SimTime};

/// The native CPU offload state.
#[derive(Debug)]
pub struct NativeOffload {
    cpu: LruTier,
    block_bytes: u64,
    block_size: u32,
    copy_free_at: SimTime,
    /// Blocks copied to the CPU pool.
    pub stores: u64,
    /// Blocks loaded back.
    pub loads: u64,
}

impl NativeOffload {
    /// A pool of `cpu_bytes` for blocks of `block_size` tokens of `block_bytes` each.
    pub fn new(cpu_bytes: u64, block_size: u32, block_bytes: u64) -> Self {
        NativeOffload {
            cpu: LruTier::new(cpu_bytes),
            block_bytes,
            block_size,
            copy_free_at: SimTime::ZERO,
            stores: 0,
            loads: 0,
        }
    }

    /// Leading blocks of `hashes` held in the CPU pool at `now`, touched so that they stay.
    pub fn lookup(&mut self, hashes: &[u64], now: SimTime) -> u32 {
        let n = hashes
            .iter()
            .take_while(|h| self.cpu.contains(**h, now))
            .count();
        for h in hashes[..n].iter().rev() {
            self.cpu.touch(*h);
        }
        n as u32
    }

    /// Seconds to load `blocks` blocks into the GPU (asynchronous).
    pub fn load_s(&mut self, blocks: u32, tp: &TransferProfile) -> f64 {
        self.loads += blocks as u64;
        blocks as f64 * tp.block_copy_us * 1e-6
            + (blocks as u64 * self.block_bytes) as f64 / (tp.h2d_gbps * 1e9)
    }

    /// Copies the blocks with `hashes` to the CPU pool after a step ending at `now`; the copies
    /// queue on one copy stream. Returns the bytes copied.
    pub fn store(&mut self, hashes: &[u64], now: SimTime, tp: &TransferProfile) -> u64 {
        let mut bytes = 0;
        for h in hashes {
            if self.cpu.has(*h) {
                self.cpu.touch(*h);
                continue;
            }
            let dur = SimDuration::from_secs_f64(
                tp.block_copy_us * 1e-6 + self.block_bytes as f64 / (tp.d2h_gbps * 1e9),
            );
            self.copy_free_at = self.copy_free_at.max(now) + dur;
            if self.cpu.insert(*h, self.block_bytes, self.copy_free_at) {
                self.stores += 1;
                bytes += self.block_bytes;
            }
        }
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
