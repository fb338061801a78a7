//! Transfer profile: what moving KV bytes costs on each path (GPU <-> pinned host, host memory,
//! local disk, a remote store), as `kvreplay calibrate` measures it.
//!
//! Every parameter records where its value came from (`provenance`), so a prediction can say
//! which of its inputs were measured and which are spec defaults.

use super::hardware::GpuProfile;
use crate::error::{Error, InputError, Result};
use crate::util::json::{Obj, parse_object};
use serde::Serialize;
use std::collections::BTreeMap;

/// Costs of the transfer paths LMCache and vLLM's offloader use.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransferProfile {
    /// GPU paged cache <- pinned host (LMCache retrieve: zero-copy scatter; vLLM's native
    /// offload's block copies), GB/s.
    pub h2d_gbps: f64,
    /// GPU paged cache -> pinned host (LMCache store: gather + DMA), GB/s.
    pub d2h_gbps: f64,
    /// Fixed cost per chunk moved between GPU and host (kernel launch + synchronisation), us.
    pub chunk_overhead_us: f64,
    /// Host memory copy bandwidth (promotions into the CPU tier, naive serialisation), GB/s.
    pub host_memcpy_gbps: f64,
    /// Local disk read bandwidth for chunk files, GB/s.
    pub disk_read_gbps: f64,
    /// Local disk write bandwidth for chunk files, GB/s.
    pub disk_write_gbps: f64,
    /// Fixed cost per chunk file opened, read or written, us.
    pub disk_op_us: f64,
    /// Network bandwidth to the remote store, GB/s.
    pub remote_gbps: f64,
    /// Server-side cost per remote operation (a GET or SET), us.
    pub remote_op_us: f64,
    /// CacheGen: bytes sent / bytes of KV.
    pub cachegen_ratio: f64,
    /// CacheGen encode throughput (KV bytes per second), GB/s.
    pub cachegen_encode_gbps: f64,
    /// CacheGen decode throughput (KV bytes per second), GB/s.
    pub cachegen_decode_gbps: f64,
    /// vLLM native offloading: fixed cost per block copied with the copy engine, us.
    pub block_copy_us: f64,
    /// Where each parameter came from: "spec" (a default) or a measurement record.
    pub provenance: BTreeMap<String, String>,
    /// Relative standard deviation of measured parameters (for prediction intervals).
    pub spread: BTreeMap<String, f64>,
}

/// LMCache's retrieve rate as its own log reports it (`Retrieved 10010 out of 10010 required
/// tokens ... 1.3747 GB in 33.43 ms`), GB/s: its kernel reads pinned host memory directly and
/// scatters into vLLM's paged cache, one launch per chunk, one synchronisation per request.
pub const LMCACHE_RETRIEVE_GBPS: f64 = 41.1;

/// LMCache's store rate as its own log reports it (`Stored 3866 ... 0.5309 GB in 11.95 ms`),
/// GB/s: a gather into a GPU buffer, a copy to pinned host memory, a synchronisation per chunk.
pub const LMCACHE_STORE_GBPS: f64 = 44.4;

/// Parameter names, in the order they are printed.
pub const PARAMS: &[&str] = &[
    "h2d_gbps",
    "d2h_gbps",
    "chunk_overhead_us",
    "host_memcpy_gbps",
    "disk_read_gbps",
    "disk_write_gbps",
    "disk_op_us",
    "remote_gbps",
    "remote_op_us",
    "cachegen_ratio",
    "cachegen_encode_gbps",
    "cachegen_decode_gbps",
    "block_copy_us",
];

impl TransferProfile {
    /// Spec defaults for `gpu`: LMCache's own logged copy rates, capped by the GPU's PCIe
    /// figures; an NVMe disk; a 10 Gbit/s link to the remote store. Every parameter is marked
    /// "spec", with its source where one exists.
    pub fn spec_defaults(gpu: &GpuProfile) -> Self {
        let mut provenance: BTreeMap<String, String> = PARAMS
            .iter()
            .map(|p| (p.to_string(), format!("spec ({})", gpu.name)))
            .collect();
        let (h2d, d2h) = (
            LMCACHE_RETRIEVE_GBPS.min(gpu.pcie_h2d_gbps),
            LMCACHE_STORE_GBPS.min(gpu.pcie_d2h_gbps),
        );
        provenance.insert(
            "h2d_gbps".into(),
            format!(
                "spec ({}): LMCache's logged retrieve, 1.3747 GB (10,010 tokens) in 33.43 ms = {LMCACHE_RETRIEVE_GBPS} GB/s (LMCache pull request 1740), capped at the GPU's PCIe {} GB/s",
                gpu.name, gpu.pcie_h2d_gbps
            ),
        );
        provenance.insert(
            "d2h_gbps".into(),
            format!(
                "spec ({}): LMCache's logged store, 0.5309 GB (3,866 tokens) in 11.95 ms = {LMCACHE_STORE_GBPS} GB/s (LMCache pull request 1740), capped at the GPU's PCIe {} GB/s",
                gpu.name, gpu.pcie_d2h_gbps
            ),
        );
        TransferProfile {
            h2d_gbps: h2d,
            d2h_gbps: d2h,
            chunk_overhead_us: 30.0,
            host_memcpy_gbps: 10.0,
            disk_read_gbps: 3.0,
            disk_write_gbps: 2.0,
            disk_op_us: 100.0,
            remote_gbps: 1.25,
            remote_op_us: 50.0,
            cachegen_ratio: 0.3,
            cachegen_encode_gbps: 5.0,
            cachegen_decode_gbps: 10.0,
            block_copy_us: 5.0,
            provenance,
            spread: BTreeMap::new(),
        }
    }

    /// Reads a profile written by `calibrate` over the spec defaults for `gpu`: parameters the
    /// file has replace the defaults and take the file's provenance.
    pub fn from_file(path: &str, gpu: &GpuProfile) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_text(&text, path, gpu)
    }

    /// As [`TransferProfile::from_file`], from the file's text; `path` names it in errors.
    pub fn from_text(text: &str, path: &str, gpu: &GpuProfile) -> Result<Self> {
        let map = parse_object(text, path, 0)?;
        let top = Obj::new(&map, path, 0);
        let params = top.object("params", "params.")?;
        let sources = match top.get("param_sources") {
            Some(_) => Some(top.object("param_sources", "param_sources.")?),
            None => None,
        };
        let mut p = TransferProfile::spec_defaults(gpu);
        for k in params.map.keys() {
            let v = params.f64(k)?;
            if v <= 0.0 {
                return Err(params.err(k, "must be positive").into());
            }
            let slot = p.slot(k).ok_or_else(|| {
                InputError::new(
                    path,
                    0,
                    format!("params.{k}"),
                    format!("unknown parameter (known: {})", PARAMS.join(", ")),
                )
            })?;
            *slot = v;
            let source = match &sources {
                Some(s) => s.opt_str(k)?.unwrap_or("profile file"),
                None => "profile file",
            };
            p.provenance
                .insert(k.clone(), format!("measured ({source})"));
        }
        if top.get("param_spread").is_some() {
            let sp = top.object("param_spread", "param_spread.")?;
            for k in sp.map.keys() {
                let v = sp.f64(k)?;
                if v < 0.0 || p.slot(k).is_none() {
                    return Err(sp
                        .err(k, "expected a known parameter with a spread >= 0")
                        .into());
                }
                p.spread.insert(k.clone(), v);
            }
        }
        Ok(p)
    }

    /// The parameter named `name`, mutable (for profile overrides and interval sampling).
    pub fn slot(&mut self, name: &str) -> Option<&mut f64> {
        Some(match name {
            "h2d_gbps" => &mut self.h2d_gbps,
            "d2h_gbps" => &mut self.d2h_gbps,
            "chunk_overhead_us" => &mut self.chunk_overhead_us,
            "host_memcpy_gbps" => &mut self.host_memcpy_gbps,
            "disk_read_gbps" => &mut self.disk_read_gbps,
            "disk_write_gbps" => &mut self.disk_write_gbps,
            "disk_op_us" => &mut self.disk_op_us,
            "remote_gbps" => &mut self.remote_gbps,
            "remote_op_us" => &mut self.remote_op_us,
            "cachegen_ratio" => &mut self.cachegen_ratio,
            "cachegen_encode_gbps" => &mut self.cachegen_encode_gbps,
            "cachegen_decode_gbps" => &mut self.cachegen_decode_gbps,
            "block_copy_us" => &mut self.block_copy_us,
            _ => return None,
        })
    }

    /// Seconds to load `chunks` chunks totalling `bytes` from pinned host memory into the GPU.
    pub fn gpu_load_s(&self, bytes: u64, chunks: u64) -> f64 {
        chunks as f64 * self.chunk_overhead_us * 1e-6 + bytes as f64 / (self.h2d_gbps * 1e9)
    }

    /// Seconds to store `chunks` chunks totalling `bytes` from the GPU into pinned host memory.
    pub fn gpu_store_s(&self, bytes: u64, chunks: u64) -> f64 {
        chunks as f64 * self.chunk_overhead_us * 1e-6 + bytes as f64 / (self.d2h_gbps * 1e9)
    }

    /// Seconds to copy `bytes` within host memory.
    pub fn memcpy_s(&self, bytes: u64) -> f64 {
        bytes as f64 / (self.host_memcpy_gbps * 1e9)
    }

    /// Seconds to read `chunks` chunk files totalling `bytes`.
    pub fn disk_read_s(&self, bytes: u64, chunks: u64) -> f64 {
        chunks as f64 * self.disk_op_us * 1e-6 + bytes as f64 / (self.disk_read_gbps * 1e9)
    }

    /// Seconds to write one chunk file of `bytes`.
    pub fn disk_write_s(&self, bytes: u64) -> f64 {
        self.disk_op_us * 1e-6 + bytes as f64 / (self.disk_write_gbps * 1e9)
    }

    /// Seconds for one remote operation moving `bytes` with `round_trips` sequential round trips.
    pub fn remote_op_s(&self, bytes: u64, round_trips: u32, rtt_s: f64) -> f64 {
        round_trips as f64 * (rtt_s + self.remote_op_us * 1e-6)
            + bytes as f64 / (self.remote_gbps * 1e9)
    }

    /// Seconds for `n` remote operations of `bytes` each with `concurrency` in flight.
    pub fn remote_batch_s(
        &self,
        n: u64,
        bytes: u64,
        round_trips: u32,
        rtt_s: f64,
        concurrency: u32,
    ) -> f64 {
        if n == 0 {
            return 0.0;
        }
        let waves = n.div_ceil(concurrency.max(1) as u64);
        // The link is shared: a wave of k operations moves k chunks' bytes.
        let per_wave_ops = (n as f64 / waves as f64).ceil();
        waves as f64
            * (round_trips as f64 * (rtt_s + self.remote_op_us * 1e-6)
                + per_wave_ops * bytes as f64 / (self.remote_gbps * 1e9))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_batches_follow_the_working_model() {
        let gpu = GpuProfile::lookup("H100").unwrap();
        let mut t = TransferProfile::spec_defaults(&gpu);
        t.remote_op_us = 0.0;
        t.remote_gbps = 1.0;
        // 9 chunks of 1 MB, 4 in flight, 2 round trips of 10 ms: ceil(9/4) = 3 waves, each
        // 2 x 10 ms plus 3 MB at 1 GB/s.
        let s = t.remote_batch_s(9, 1_000_000, 2, 0.010, 4);
        assert!((s - 3.0 * (0.020 + 0.003)).abs() < 1e-12, "{s}");
        assert_eq!(t.remote_batch_s(0, 1, 2, 0.01, 4), 0.0);
    }

    #[test]
    fn profile_files_override_and_record_provenance() {
        let gpu = GpuProfile::lookup("H100").unwrap();
        let dir = std::env::temp_dir().join(format!("kvr-tp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("p.json");
        std::fs::write(
            &f,
            r#"{"params": {"remote_gbps": 0.4}, "param_sources": {"remote_gbps": "redis calibration, t"}}"#,
        )
        .unwrap();
        let p = TransferProfile::from_file(f.to_str().unwrap(), &gpu).unwrap();
        assert_eq!(p.remote_gbps, 0.4);
        assert_eq!(
            p.provenance["remote_gbps"],
            "measured (redis calibration, t)"
        );
        assert!(p.provenance["h2d_gbps"].starts_with("spec"));
        std::fs::write(&f, r#"{"params": {"remote_gbs": 0.4}}"#).unwrap();
        let e = TransferProfile::from_file(f.to_str().unwrap(), &gpu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("params.remote_gbs: unknown parameter"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
