//! `kvreplay calibrate gpu`: what LMCache's copies cost on this GPU, measured with our kernels,
//! next to the memcpy baselines of the same run.
//!
//! For a model's KV shapes (layers, KV heads, head dim, dtype from its card) and each chunk size,
//! on a paged cache with a shuffled block table:
//! - kernels: gather paged -> GPU chunk, scatter GPU chunk -> paged, gather paged -> pinned host
//!   (zero copy, what a store costs), scatter pinned host -> paged (zero copy, a retrieve);
//!   each also with 8- and 4-byte words (LMCache's kernel moves 8-byte words);
//! - baselines: `cuMemcpy` device to device, device <-> pinned host, device <-> pageable host,
//!   and vLLM's native offloader (one memcpy per block per layer, per K and V in the
//!   FlashAttention layout);
//! - launch overhead: the empty kernel, on the GPU (events) and launch + synchronise (wall clock).
//!
//! Each point is timed with CUDA events around every run, several runs after warm-up, the median
//! kept. Successive runs rotate over disjoint blocks and buffers (256 MiB in all, more than any
//! GPU's L2) so that no run reads what the previous one left in cache. Bandwidth is bytes copied
//! (chunk bytes) per second.
//!
//! Parameters of [`crate::cost::TransferProfile`]: `h2d_gbps` (scatter from pinned host) and
//! `d2h_gbps` (gather to pinned host) at the chunk size nearest 256 tokens, `chunk_overhead_us`
//! (empty launch + synchronise), `block_copy_us` (per block, over its bytes at those rates).

use super::launch::{ChunkBuf, Gpu, MemKind};
use super::reference::{Layout, PagedShape, slot_mapping};
use super::{GpuError, gpu_available};
use crate::calibrate::fit::ols;
use crate::calibrate::profile::{Machine, Section, now_utc};
use crate::error::{Error, Result};
use crate::model::ModelCard;
use crate::util::rng::Rng;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// What `calibrate gpu` measures.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuCalibOptions {
    /// Model whose KV shapes are used (Hugging Face id of a shipped card, or a config.json).
    pub model: String,
    /// Tokens per chunk.
    pub chunk_sizes: Vec<u32>,
    /// Tokens per paged-cache block.
    pub block_size: u32,
    /// Fewer runs per point and the FlashAttention layout only.
    pub quick: bool,
}

impl Default for GpuCalibOptions {
    fn default() -> Self {
        GpuCalibOptions {
            model: "meta-llama/Llama-3.1-8B".to_string(),
            chunk_sizes: vec![64, 256, 1024],
            block_size: 16,
            quick: false,
        }
    }
}

/// The error without a driver.
pub const NO_DRIVER: &str = "no CUDA driver found: `calibrate gpu` needs an NVIDIA GPU";

/// Share of the baseline the kernels should reach (gather/scatter vs memcpy).
pub const TARGET_RATIO: f64 = 0.9;

/// Chunk size the parameters are read at (or the nearest measured).
pub const REFERENCE_CHUNK: u32 = 256;

/// Word sizes measured besides the widest, with their point names (GPU gather, GPU scatter,
/// pinned gather, pinned scatter).
const NARROW_WORDS: [(usize, [&str; 4]); 2] = [
    (
        8,
        [
            "gather_gpu_w8",
            "scatter_gpu_w8",
            "gather_pinned_w8",
            "scatter_pinned_w8",
        ],
    ),
    (
        4,
        [
            "gather_gpu_w4",
            "scatter_gpu_w4",
            "gather_pinned_w4",
            "scatter_pinned_w4",
        ],
    ),
];

/// Bytes each rotation set of buffers spans, so that no run finds its data in L2.
const ROTATE_BYTES: usize = 256 << 20;

/// Buffers (and block sets) to rotate over for chunks of `chunk_bytes`.
fn rotations(chunk_bytes: usize) -> usize {
    ROTATE_BYTES.div_ceil(chunk_bytes.max(1)).clamp(2, 8)
}

/// Blocks the paged cache needs: disjoint block sets for every rotation of every chunk size.
fn cache_blocks(shape: &PagedShape, sizes: &[u32]) -> usize {
    sizes
        .iter()
        .map(|&t| {
            let t = t as usize;
            rotations(shape.chunk_bytes(t)) * t.div_ceil(shape.block_size)
        })
        .max()
        .unwrap_or(1)
}

/// Why `calibrate gpu` cannot run here, in one line (`None`: a driver and a device are present).
pub fn unavailable_reason() -> Option<String> {
    gpu_available().err().map(|why| unavailable(&why))
}

/// The one-line error for an unavailable GPU.
fn unavailable(why: &str) -> String {
    if why.starts_with("no CUDA driver") {
        NO_DRIVER.to_string()
    } else {
        format!("{why}: `calibrate gpu` needs an NVIDIA GPU")
    }
}

/// One measured operation.
#[derive(Debug, Clone, PartialEq)]
struct Point {
    op: &'static str,
    layout: Option<Layout>,
    chunk_tokens: u32,
    bytes: u64,
    /// Launches or memcpys per run.
    calls: usize,
    /// Per-run time, ms (GPU time from events; wall clock for `*_wall`).
    ms: Vec<f64>,
}

impl Point {
    fn median_ms(&self) -> f64 {
        median(&self.ms)
    }

    fn gbps(&self) -> f64 {
        self.bytes as f64 / (self.median_ms() * 1e-3) / 1e9
    }

    fn to_json(&self) -> Value {
        let min = self.ms.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.ms.iter().copied().fold(0.0, f64::max);
        json!({
            "op": self.op,
            "layout": self.layout.map(|l| l.name()),
            "chunk_tokens": self.chunk_tokens,
            "bytes": self.bytes,
            "calls": self.calls,
            "runs": self.ms.len(),
            "median_ms": round(self.median_ms(), 5),
            "min_ms": round(min, 5),
            "max_ms": round(max, 5),
            "gb_s": round(self.gbps(), 3),
        })
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// Runs and warm-up runs per point.
fn runs(quick: bool) -> (usize, usize) {
    if quick { (2, 7) } else { (3, 25) }
}

/// A shuffled 0..n (the block table of a long-running server is not contiguous).
fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut rng = Rng::new(seed);
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        v.swap(i, rng.range(0, i as u64) as usize);
    }
    v
}

/// Times `op(r)` with `r` rotating over `k` buffer sets.
fn rotate(
    gpu: &Gpu,
    quick: bool,
    k: usize,
    mut op: impl FnMut(usize) -> std::result::Result<(), GpuError>,
) -> std::result::Result<Vec<f64>, GpuError> {
    let (warmup, reps) = runs(quick);
    let mut i = 0;
    gpu.time_ms(warmup, reps, || {
        let r = i % k;
        i += 1;
        op(r)
    })
}

fn alloc_set(
    gpu: &Gpu,
    kind: MemKind,
    k: usize,
    bytes: usize,
    fill: u8,
) -> std::result::Result<Vec<ChunkBuf>, GpuError> {
    (0..k).map(|_| gpu.alloc_chunk(kind, bytes, fill)).collect()
}

/// Measures every point of one layout; the memcpy baselines too when `baselines`.
fn measure_layout(
    gpu: &Gpu,
    shape: PagedShape,
    sizes: &[u32],
    quick: bool,
    baselines: bool,
    points: &mut Vec<Point>,
) -> std::result::Result<(), GpuError> {
    let cache = gpu.alloc_cache(shape, 0x3C)?;
    let perm = shuffled(shape.num_blocks, 0x6b76_7265_706c_6179);
    let layout = Some(shape.layout);
    for &t in sizes {
        let tokens = t as usize;
        let bytes = shape.chunk_bytes(tokens);
        let k = rotations(bytes);
        let nb = tokens.div_ceil(shape.block_size);
        let tables: Vec<Vec<usize>> = (0..k)
            .map(|r| perm[r * nb..(r + 1) * nb].to_vec())
            .collect();
        let slots = tables
            .iter()
            .map(|tb| {
                let tb: Vec<i64> = tb.iter().map(|b| *b as i64).collect();
                slot_mapping(&tb, shape.block_size, 0, tokens)
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let point = |op, calls, ms| Point {
            op,
            layout,
            chunk_tokens: t,
            bytes: bytes as u64,
            calls,
            ms,
        };
        let mut dev = alloc_set(gpu, MemKind::Device, k, bytes, 1)?;
        let mut pinned = alloc_set(gpu, MemKind::Pinned, k, bytes, 2)?;
        // Narrower words (LMCache's own kernel moves 8-byte words): the same four copies.
        for (word, names) in NARROW_WORDS {
            let mut i = 0;
            for set in [&mut dev, &mut pinned] {
                for gather in [true, false] {
                    let mut plans = set
                        .iter_mut()
                        .zip(&slots)
                        .map(|(b, s)| {
                            if gather {
                                gpu.gather_plan(&cache, s, &[tokens], vec![b], 0)
                            } else {
                                gpu.scatter_plan(&cache, s, &[tokens], vec![&*b], 0)
                            }
                        })
                        .collect::<std::result::Result<Vec<_>, _>>()?;
                    for p in plans.iter_mut() {
                        p.set_word(word)?;
                    }
                    let ms = rotate(gpu, quick, k, |r| gpu.launch(&plans[r]))?;
                    points.push(point(names[i], 1, ms));
                    i += 1;
                }
            }
        }
        for (name, set) in [("gpu", &mut dev), ("pinned", &mut pinned)] {
            {
                let plans = set
                    .iter_mut()
                    .zip(&slots)
                    .map(|(b, s)| gpu.gather_plan(&cache, s, &[tokens], vec![b], 0))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let ms = rotate(gpu, quick, k, |r| gpu.launch(&plans[r]))?;
                points.push(point(
                    if name == "gpu" {
                        "gather_gpu"
                    } else {
                        "gather_pinned"
                    },
                    1,
                    ms,
                ));
                if name == "pinned" {
                    // What a caller that waits for each chunk pays: launch + copy + synchronise.
                    let (warmup, reps) = runs(quick);
                    let mut i = 0;
                    let us = gpu.wall_us(warmup, reps, || {
                        i += 1;
                        gpu.launch(&plans[i % k])
                    })?;
                    points.push(point(
                        "gather_pinned_wall",
                        1,
                        us.iter().map(|u| u / 1e3).collect(),
                    ));
                }
            }
            let plans = set
                .iter()
                .zip(&slots)
                .map(|(b, s)| gpu.scatter_plan(&cache, s, &[tokens], vec![b], 0))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let ms = rotate(gpu, quick, k, |r| gpu.launch(&plans[r]))?;
            points.push(point(
                if name == "gpu" {
                    "scatter_gpu"
                } else {
                    "scatter_pinned"
                },
                1,
                ms,
            ));
        }
        // vLLM's native offloader: one memcpy per block (per layer, per K and V apart).
        let block_bytes = nb * shape.layers * 2 * shape.block_size * shape.row_bytes();
        let calls = nb * shape.layers * cache.block_regions(0).len();
        let mut block_pinned = alloc_set(gpu, MemKind::Pinned, k, block_bytes, 3)?;
        let ms = rotate(gpu, quick, k, |r| {
            gpu.store_blocks(&cache, &tables[r], &mut block_pinned[r])
                .map(|_| ())
        })?;
        points.push(Point {
            bytes: block_bytes as u64,
            ..point("blocks_d2h", calls, ms)
        });
        let ms = rotate(gpu, quick, k, |r| {
            gpu.load_blocks(&cache, &tables[r], &block_pinned[r])
                .map(|_| ())
        })?;
        points.push(Point {
            bytes: block_bytes as u64,
            ..point("blocks_h2d", calls, ms)
        });
        drop(block_pinned);
        if baselines {
            let mut dev_b = alloc_set(gpu, MemKind::Device, k, bytes, 4)?;
            let mut pageable = alloc_set(gpu, MemKind::Pageable, k, bytes, 5)?;
            let base = |op, ms| Point {
                layout: None,
                ..point(op, 1, ms)
            };
            points.push(base(
                "memcpy_d2d",
                rotate(gpu, quick, k, |r| gpu.copy(&mut dev_b[r], &dev[r], bytes))?,
            ));
            points.push(base(
                "memcpy_d2h_pinned",
                rotate(gpu, quick, k, |r| gpu.copy(&mut pinned[r], &dev[r], bytes))?,
            ));
            points.push(base(
                "memcpy_h2d_pinned",
                rotate(gpu, quick, k, |r| gpu.copy(&mut dev[r], &pinned[r], bytes))?,
            ));
            points.push(base(
                "memcpy_d2h_pageable",
                rotate(gpu, quick, k, |r| {
                    gpu.copy(&mut pageable[r], &dev[r], bytes)
                })?,
            ));
            points.push(base(
                "memcpy_h2d_pageable",
                rotate(gpu, quick, k, |r| {
                    gpu.copy(&mut dev[r], &pageable[r], bytes)
                })?,
            ));
        }
        gpu.synchronize()?;
    }
    Ok(())
}

/// Everything measured on the GPU.
#[derive(Debug, Clone, PartialEq)]
struct Measured {
    points: Vec<Point>,
    /// Empty kernel, GPU time (events), ms per run.
    noop_gpu_ms: Vec<f64>,
    /// Empty kernel, launch + synchronise (wall clock), us per run.
    noop_wall_us: Vec<f64>,
}

fn measure(
    gpu: &Gpu,
    shape: PagedShape,
    o: &GpuCalibOptions,
) -> std::result::Result<Measured, GpuError> {
    let (warmup, reps) = runs(o.quick);
    let noop_gpu_ms = gpu.time_ms(warmup, reps * 4, || gpu.launch_noop())?;
    let noop_wall_us = gpu.wall_us(warmup, reps * 4, || gpu.launch_noop())?;
    let layouts: &[Layout] = if o.quick {
        &[Layout::Flash]
    } else {
        &Layout::ALL
    };
    let mut points = Vec::new();
    for &layout in layouts {
        let shape = PagedShape { layout, ..shape };
        measure_layout(
            gpu,
            shape,
            &o.chunk_sizes,
            o.quick,
            layout == Layout::Flash,
            &mut points,
        )?;
    }
    Ok(Measured {
        points,
        noop_gpu_ms,
        noop_wall_us,
    })
}

/// The transfer-profile parameters, the ratios to the baselines and the fits, from the points.
fn derive(
    m: &Measured,
    shape: &PagedShape,
    chunk_sizes: &[u32],
) -> std::result::Result<(BTreeMap<String, f64>, Value), String> {
    let t_ref = *chunk_sizes
        .iter()
        .min_by_key(|t| (i64::from(**t) - i64::from(REFERENCE_CHUNK)).abs())
        .ok_or("no chunk size")?;
    let find = |op: &str, layout: Option<Layout>| {
        m.points
            .iter()
            .find(|p| p.op == op && p.layout == layout && p.chunk_tokens == t_ref)
            .ok_or_else(|| format!("no {op} point at {t_ref} tokens"))
    };
    let flash = Some(Layout::Flash);
    let d2h = find("gather_pinned", flash)?.gbps();
    let h2d = find("scatter_pinned", flash)?.gbps();
    let overhead = median(&m.noop_wall_us);
    // Per block of `block_size` tokens (all layers, K and V): measured time minus its bytes at the
    // kernel rates, i.e. what the simulator's `block_copy_us + block_bytes / rate` must add.
    let block_bytes = (shape.layers * 2 * shape.block_size * shape.row_bytes()) as f64;
    let nb = (t_ref as usize).div_ceil(shape.block_size) as f64;
    let per_block = |op: &str, gbps: f64| -> std::result::Result<(f64, f64), String> {
        let us = find(op, flash)?.median_ms() * 1e3 / nb;
        Ok((us, us - block_bytes / (gbps * 1e9) * 1e6))
    };
    let (store_us, store_fixed) = per_block("blocks_d2h", d2h)?;
    let (load_us, load_fixed) = per_block("blocks_h2d", h2d)?;
    let block_copy_us = ((store_fixed + load_fixed) / 2.0).max(0.01);
    if !(d2h > 0.0 && h2d > 0.0 && d2h.is_finite() && h2d.is_finite() && overhead > 0.0) {
        return Err(format!(
            "implausible measurements: d2h {d2h} GB/s, h2d {h2d} GB/s, overhead {overhead} us"
        ));
    }
    let ratio = |kernel: &str, layout, base: &str| -> std::result::Result<Value, String> {
        let k = find(kernel, layout)?.gbps();
        let b = find(base, None)?.gbps();
        Ok(json!({
            "kernel": kernel,
            "layout": layout.map(|l: Layout| l.name()),
            "baseline": base,
            "kernel_gb_s": round(k, 3),
            "baseline_gb_s": round(b, 3),
            "ratio": round(k / b, 4),
            "target": TARGET_RATIO,
            "meets_target": k / b >= TARGET_RATIO,
        }))
    };
    let mut ratios = vec![
        ratio("gather_gpu", flash, "memcpy_d2d")?,
        ratio("scatter_gpu", flash, "memcpy_d2d")?,
        ratio("gather_pinned", flash, "memcpy_d2h_pinned")?,
        ratio("scatter_pinned", flash, "memcpy_h2d_pinned")?,
    ];
    let fi = Some(Layout::FlashInfer);
    if m.points.iter().any(|p| p.layout == fi) {
        ratios.push(ratio("gather_gpu", fi, "memcpy_d2d")?);
        ratios.push(ratio("scatter_gpu", fi, "memcpy_d2d")?);
        ratios.push(ratio("gather_pinned", fi, "memcpy_d2h_pinned")?);
        ratios.push(ratio("scatter_pinned", fi, "memcpy_h2d_pinned")?);
    }
    // Narrower words against the widest, per copy (the speed LMCache's 8-byte-word kernel
    // would get from the same access pattern).
    let mut narrow = Vec::new();
    for (word, names) in NARROW_WORDS {
        for (name, wide) in names.iter().zip([
            "gather_gpu",
            "scatter_gpu",
            "gather_pinned",
            "scatter_pinned",
        ]) {
            if let (Ok(n), Ok(w)) = (find(name, flash), find(wide, flash)) {
                narrow.push(json!({
                    "op": wide,
                    "word_bytes": word,
                    "gb_s": round(n.gbps(), 3),
                    "widest_gb_s": round(w.gbps(), 3),
                    "ratio": round(n.gbps() / w.gbps(), 4),
                }));
            }
        }
    }
    // Cross-check of the fixed cost: wall clock of a synchronised gather to pinned memory
    // against bytes, over every chunk size.
    let (x, y): (Vec<Vec<f64>>, Vec<f64>) = m
        .points
        .iter()
        .filter(|p| p.op == "gather_pinned_wall" && p.layout == flash)
        .flat_map(|p| {
            p.ms.iter()
                .map(move |ms| (vec![1.0, p.bytes as f64], ms * 1e3))
        })
        .unzip();
    let wall_fit = ols(&["fixed_us", "us_per_byte"], &x, &y).map(|f| {
        json!({
            "model": "wall_us = fixed_us + bytes * us_per_byte (gather to pinned, launch + synchronise)",
            "fixed_us": round(f.coef[0], 3),
            "fixed_us_ci95": round(f.ci95[0], 3),
            "gb_s": round(1e-3 / f.coef[1], 3),
            "r2": round(f.r2, 5),
            "max_rel_error": round(f.max_rel_error, 4),
        })
    });
    let params = BTreeMap::from([
        ("h2d_gbps".to_string(), round(h2d, 3)),
        ("d2h_gbps".to_string(), round(d2h, 3)),
        ("chunk_overhead_us".to_string(), round(overhead, 3)),
        ("block_copy_us".to_string(), round(block_copy_us, 3)),
    ]);
    let fit = json!({
        "reference_chunk_tokens": t_ref,
        "h2d_gbps": format!("scatter from pinned host (zero copy), FlashAttention layout, {t_ref} tokens, median"),
        "d2h_gbps": format!("gather to pinned host (zero copy), FlashAttention layout, {t_ref} tokens, median"),
        "chunk_overhead_us": {
            "from": "median wall clock of an empty launch + stream synchronise",
            "noop_launch_sync_us": round(overhead, 3),
            "noop_gpu_us": round(median(&m.noop_gpu_ms) * 1e3, 3),
            "wall_fit": wall_fit,
        },
        "block_copy_us": {
            "from": "vLLM per-block memcpys per block of block_size tokens (all layers) minus its bytes at h2d/d2h_gbps; mean of both directions",
            "block_bytes": block_bytes,
            "store_us_per_block": round(store_us, 3),
            "load_us_per_block": round(load_us, 3),
            "store_fixed_us": round(store_fixed, 3),
            "load_fixed_us": round(load_fixed, 3),
        },
        "ratios": ratios,
        "narrow_words": narrow,
        "lmcache_store_path_gb_s": round(
            find("gather_gpu", flash)?.bytes as f64
                / ((find("gather_gpu", flash)?.median_ms() + find("memcpy_d2h_pinned", None)?.median_ms()) * 1e-3)
                / 1e9,
            3
        ),
    });
    Ok((params, fit))
}

/// Measures the copy kernels and their baselines on GPU 0 and returns the `gpu` section of a
/// transfer profile. Without a driver or a device: one-line error, no panic.
pub fn calibrate_gpu(o: &GpuCalibOptions) -> Result<Section> {
    if o.chunk_sizes.is_empty() || o.chunk_sizes.contains(&0) {
        return Err(Error::Config(
            "--chunk-sizes: give one or more positive token counts".into(),
        ));
    }
    if o.block_size == 0 {
        return Err(Error::Config("block size must be positive".into()));
    }
    let card = crate::model::lookup(&o.model)?;
    if let Some(why) = unavailable_reason() {
        return Err(Error::Config(why));
    }
    let gpu = Gpu::new().map_err(|e| Error::Config(format!("calibrate gpu: {e}")))?;
    let mut shape = shape_of(&card, o.block_size as usize, Layout::Flash);
    shape.num_blocks = cache_blocks(&shape, &o.chunk_sizes);
    let m = measure(&gpu, shape, o).map_err(|e| Error::Config(format!("calibrate gpu: {e}")))?;
    let (params, mut fit) = derive(&m, &shape, &o.chunk_sizes)
        .map_err(|e| Error::Invariant(format!("calibrate gpu: {e}")))?;
    let c = gpu.compiled();
    fit["kernels"] = json!({
        "module": format!("kernels/{}.cu", c.module),
        "source_fnv1a": c.source_hash,
        "target": c.target.arch(),
        "nvrtc": c.nvrtc_version,
        "options": c.options,
    });
    let (major, minor) = gpu.compute_capability();
    let machine = Machine::this();
    let what = format!(
        "GPU KV copies on {} (sm_{major}{minor}), {} shapes ({} layers, {} KV heads x {}, {} B \
         elements, blocks of {} tokens, shuffled block table): our gather/scatter kernels \
         (kernels/{}.cu, {} via NVRTC {}, source {}) GPU<->GPU and GPU<->pinned host (zero \
         copy), cuMemcpy D2D / pinned / pageable and per-block memcpys in the same run; chunks \
         of {} tokens; CUDA events, median of {} runs after {} warm-up; host {} ({} CPUs){}",
        gpu.name(),
        card.name,
        shape.layers,
        shape.kv_heads,
        shape.head_dim,
        shape.elem_bytes,
        shape.block_size,
        c.module,
        c.target.arch(),
        c.nvrtc_version,
        c.source_hash,
        o.chunk_sizes
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        runs(o.quick).1,
        runs(o.quick).0,
        if machine.cpu.is_empty() {
            "unknown CPU"
        } else {
            &machine.cpu
        },
        machine.cpus,
        if o.quick {
            "; quick run (FlashAttention layout only)"
        } else {
            ""
        },
    );
    Ok(Section {
        what,
        when: now_utc(),
        points: Value::Array(m.points.iter().map(Point::to_json).collect()),
        fit,
        params,
        spread: Default::default(),
    })
}

fn shape_of(card: &ModelCard, block_size: usize, layout: Layout) -> PagedShape {
    PagedShape {
        layout,
        layers: card.layers as usize,
        num_blocks: 1,
        block_size,
        kv_heads: card.kv_heads as usize,
        head_dim: card.head_dim as usize,
        elem_bytes: card.dtype_bytes as usize,
    }
}

/// Lines summarising a `gpu` section for the terminal: each point, then the ratios to target.
pub fn summary_lines(s: &Section) -> Vec<String> {
    let mut out = vec![format!(
        "{:<20} {:<10} {:>6} {:>11} {:>6} {:>10} {:>9}",
        "op", "layout", "tokens", "bytes", "calls", "median ms", "GB/s"
    )];
    for p in s.points.as_array().into_iter().flatten() {
        out.push(format!(
            "{:<20} {:<10} {:>6} {:>11} {:>6} {:>10.4} {:>9.2}",
            p["op"].as_str().unwrap_or(""),
            p["layout"].as_str().unwrap_or("-"),
            p["chunk_tokens"],
            p["bytes"],
            p["calls"],
            p["median_ms"].as_f64().unwrap_or(f64::NAN),
            p["gb_s"].as_f64().unwrap_or(f64::NAN),
        ));
    }
    for r in s.fit["ratios"].as_array().into_iter().flatten() {
        out.push(format!(
            "{} ({}) vs {}: {:.1} % (target {:.0} %){}",
            r["kernel"].as_str().unwrap_or(""),
            r["layout"].as_str().unwrap_or(""),
            r["baseline"].as_str().unwrap_or(""),
            r["ratio"].as_f64().unwrap_or(f64::NAN) * 100.0,
            TARGET_RATIO * 100.0,
            if r["meets_target"].as_bool() == Some(true) {
                ""
            } else {
                "  BELOW TARGET"
            },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama() -> PagedShape {
        let card = crate::model::lookup("meta-llama/Llama-3.1-8B").unwrap();
        shape_of(&card, 16, Layout::Flash)
    }

    #[test]
    fn without_a_gpu_the_error_is_one_line() {
        let why = match gpu_available() {
            Ok(()) => {
                println!("GPU present: the no-GPU error path is not exercised here");
                return;
            }
            Err(why) => why,
        };
        let e = calibrate_gpu(&GpuCalibOptions {
            quick: true,
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(!e.contains('\n'), "{e}");
        assert!(e.contains("`calibrate gpu` needs an NVIDIA GPU"), "{e}");
        // Without libcuda the fixed line; otherwise (a stub library, no device) the reason.
        let want = if why.starts_with("no CUDA driver") {
            NO_DRIVER.to_string()
        } else {
            format!("{why}: `calibrate gpu` needs an NVIDIA GPU")
        };
        assert_eq!(unavailable_reason(), Some(want));
        println!("no GPU here: calibrate_gpu returns {e:?}");
    }

    /// The H100 measurement shipped in `models/profiles/` reads as a profile, sets the four GPU
    /// transfer parameters as measured, and records the kernels at >= 90 % of their baselines.
    #[test]
    fn the_shipped_h100_measurement_is_a_usable_profile() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/models/profiles/H100-80GB-HBM3.json"
        );
        let file =
            crate::calibrate::profile::ProfileFile::read(std::path::Path::new(path)).unwrap();
        let gpu_section = &file.sections["gpu"];
        assert!(gpu_section.what.contains("H100"), "{}", gpu_section.what);
        let spec = crate::cost::GpuProfile::lookup("H100").unwrap();
        let t = crate::cost::TransferProfile::from_file(path, &spec).unwrap();
        for k in ["h2d_gbps", "d2h_gbps", "chunk_overhead_us", "block_copy_us"] {
            assert!(
                t.provenance[k].starts_with("measured"),
                "{k}: {}",
                t.provenance[k]
            );
            assert_eq!(
                Some(t.clone().slot(k).copied().unwrap()),
                gpu_section.params.get(k).copied()
            );
        }
        assert!(t.provenance["disk_read_gbps"].starts_with("spec"));
        let ratios = gpu_section.fit["ratios"].as_array().unwrap();
        assert_eq!(ratios.len(), 8, "both layouts, four kernels each");
        for r in ratios {
            assert!(r["ratio"].as_f64().unwrap() >= TARGET_RATIO, "{r}");
        }
        // 8- and 4-byte words for each of the four copies, each slower or level.
        let narrow = gpu_section.fit["narrow_words"].as_array().unwrap();
        assert_eq!(narrow.len(), 8);
        assert!(
            narrow.iter().all(|r| r["ratio"].as_f64().unwrap() < 1.01),
            "{narrow:?}"
        );
    }

    #[test]
    fn bad_options_are_refused_before_the_gpu() {
        let o = GpuCalibOptions {
            chunk_sizes: vec![256, 0],
            ..Default::default()
        };
        assert!(
            calibrate_gpu(&o)
                .unwrap_err()
                .to_string()
                .contains("--chunk-sizes")
        );
        let o = GpuCalibOptions {
            model: "no/such-model".into(),
            ..Default::default()
        };
        assert!(
            calibrate_gpu(&o)
                .unwrap_err()
                .to_string()
                .contains("unknown model")
        );
    }

    #[test]
    fn llama_sizes_and_rotations() {
        let s = llama();
        assert_eq!(s.row_bytes(), 8 * 128 * 2);
        assert_eq!(s.chunk_bytes(256), 32 << 20);
        assert_eq!(rotations(s.chunk_bytes(64)), 8);
        assert_eq!(rotations(s.chunk_bytes(256)), 8);
        assert_eq!(rotations(s.chunk_bytes(1024)), 2);
        // 8 x 16 blocks (256 tokens) = 2 x 64 blocks (1024 tokens) = 128.
        assert_eq!(cache_blocks(&s, &[64, 256, 1024]), 128);
        assert_eq!(cache_blocks(&s, &[100]), 8 * 7);
        assert_eq!(unavailable("no CUDA driver found (x)"), NO_DRIVER);
        assert!(unavailable("no CUDA device found").ends_with("needs an NVIDIA GPU"));
    }

    /// Synthetic measurements: the parameters and ratios come out of them as documented.
    #[test]
    fn parameters_from_synthetic_points() {
        let s = llama();
        let bytes = s.chunk_bytes(256) as u64; // 32 MiB
        let p = |op, layout, ms: f64, bytes| Point {
            op,
            layout,
            chunk_tokens: 256,
            bytes,
            calls: 1,
            ms: vec![ms * 1.1, ms, ms * 0.9],
        };
        let f = Some(Layout::Flash);
        let gb = |g: f64| bytes as f64 / (g * 1e9) * 1e3; // ms for `bytes` at g GB/s
        let block_bytes = 16 * 32 * 2 * 16 * 2048u64;
        let m = Measured {
            points: vec![
                p("gather_gpu", f, gb(1000.0), bytes),
                p("scatter_gpu", f, gb(950.0), bytes),
                p("gather_pinned", f, gb(50.0), bytes),
                p("scatter_pinned", f, gb(40.0), bytes),
                p("memcpy_d2d", None, gb(1100.0), bytes),
                p("memcpy_d2h_pinned", None, gb(52.0), bytes),
                p("memcpy_h2d_pinned", None, gb(50.0), bytes),
                // 16 blocks: 20 us fixed each on top of the bytes at 50 (store) / 40 (load).
                p("blocks_d2h", f, gb(50.0) + 16.0 * 0.020, block_bytes),
                p("blocks_h2d", f, gb(40.0) + 16.0 * 0.020, block_bytes),
            ],
            noop_gpu_ms: vec![0.002, 0.003, 0.002],
            noop_wall_us: vec![9.0, 10.0, 11.0],
        };
        let (params, fit) = derive(&m, &s, &[64, 256, 1024]).unwrap();
        assert!((params["d2h_gbps"] - 50.0).abs() < 0.01, "{params:?}");
        assert!((params["h2d_gbps"] - 40.0).abs() < 0.01);
        assert_eq!(params["chunk_overhead_us"], 10.0);
        assert!((params["block_copy_us"] - 20.0).abs() < 0.01, "{params:?}");
        let r = fit["ratios"].as_array().unwrap();
        assert_eq!(r.len(), 4);
        assert!((r[0]["ratio"].as_f64().unwrap() - 1000.0 / 1100.0).abs() < 1e-3);
        assert_eq!(r[0]["meets_target"], true);
        assert_eq!(r[3]["meets_target"], false); // 40 / 50
        assert_eq!(fit["reference_chunk_tokens"], 256);
        let section = Section {
            what: String::new(),
            when: String::new(),
            points: Value::Array(m.points.iter().map(Point::to_json).collect()),
            fit,
            params,
            spread: Default::default(),
        };
        let lines = summary_lines(&section);
        assert_eq!(lines.len(), 1 + 9 + 4);
        assert!(lines.last().unwrap().contains("BELOW TARGET"));
    }
}
