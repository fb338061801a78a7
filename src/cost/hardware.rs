//! GPU hardware profiles: the numbers a roofline step-time model needs.
//!
//! Shipped profiles (`models/gpus/`) come from public spec sheets and say so in `provenance`;
//! `kvreplay calibrate` writes measured ones. A profile is found by name or alias (`H100`,
//! `A100`, `L40S`, `RTX4090`) or read from a JSON file path.

use crate::error::{Error, InputError, Result};
use crate::util::json::{Obj, parse_object};
use serde::Serialize;

/// One GPU's compute, memory and link figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuProfile {
    /// Display name.
    pub name: String,
    /// Where the numbers come from ("spec, not measured: ..." or a calibration record).
    pub provenance: String,
    /// Device memory as the driver reports it, GiB.
    pub memory_gib: f64,
    /// Peak dense tensor throughput at 16-bit (bf16/fp16), TFLOP/s.
    pub peak_tflops: f64,
    /// Peak dense FP8 tensor throughput, TFLOP/s, on GPUs with FP8 tensor cores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_fp8_tflops: Option<f64>,
    /// HBM bandwidth, GB/s.
    pub hbm_gbps: f64,
    /// Host-to-device bandwidth over PCIe with pinned memory, GB/s.
    pub pcie_h2d_gbps: f64,
    /// Device-to-host bandwidth over PCIe with pinned memory, GB/s.
    pub pcie_d2h_gbps: f64,
    /// GPU-to-GPU bandwidth per direction for tensor-parallel all-reduce, GB/s.
    pub interconnect_gbps: f64,
    /// Fraction of peak FLOP/s a forward pass reaches.
    pub compute_efficiency: f64,
    /// Fraction of HBM bandwidth a forward pass reaches.
    pub memory_efficiency: f64,
    /// Fixed time per engine step (scheduling, launches, sampling), microseconds.
    pub step_overhead_us: f64,
    /// Extra time per sequence in a step (input preparation, sampling), microseconds.
    pub per_seq_overhead_us: f64,
    /// Memory outside PyTorch's allocator (CUDA context, NCCL, graphs), GiB.
    pub non_torch_gib: f64,
    /// Where each figure comes from, by field name, for figures anchored on a published
    /// measurement rather than assumed (the JSON's optional `sources`).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub sources: std::collections::BTreeMap<String, String>,
    /// Whether vLLM's API server picks its large-GPU defaults here (>= 70 GiB and not an A100:
    /// max_num_batched_tokens 8192, max_num_seqs 1024; else 2048 and 256).
    pub large_gpu_defaults: bool,
}

/// The figures a profile's `sources` may name.
const SOURCED_FIELDS: &[&str] = &[
    "memory_gib",
    "peak_tflops",
    "peak_fp8_tflops",
    "hbm_gbps",
    "pcie_h2d_gbps",
    "pcie_d2h_gbps",
    "interconnect_gbps",
    "compute_efficiency",
    "memory_efficiency",
    "step_overhead_us",
    "per_seq_overhead_us",
    "non_torch_gib",
];

const SHIPPED: &[&str] = &[
    include_str!("../../models/gpus/H100-80GB.json"),
    include_str!("../../models/gpus/A100-80GB.json"),
    include_str!("../../models/gpus/L40S.json"),
    include_str!("../../models/gpus/RTX4090.json"),
    include_str!("../../models/gpus/H200-141GB.json"),
    include_str!("../../models/gpus/B200.json"),
    include_str!("../../models/gpus/L4.json"),
    include_str!("../../models/gpus/A10G.json"),
    include_str!("../../models/gpus/A40.json"),
    include_str!("../../models/gpus/L40.json"),
    include_str!("../../models/gpus/MI300X.json"),
];

fn key(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase()
}

impl GpuProfile {
    /// Parses a profile; errors name `file` and the field.
    pub fn from_json_str(text: &str, file: &str) -> Result<(GpuProfile, Vec<String>)> {
        let map = parse_object(text, file, 0)?;
        let o = Obj::new(&map, file, 0);
        let pos = |k: &str| -> std::result::Result<f64, InputError> {
            let v = o.f64(k)?;
            if v > 0.0 {
                Ok(v)
            } else {
                Err(o.err(k, "must be positive"))
            }
        };
        let frac = |k: &str| -> std::result::Result<f64, InputError> {
            let v = pos(k)?;
            if v <= 1.0 {
                Ok(v)
            } else {
                Err(o.err(k, "must be in (0, 1]"))
            }
        };
        let nonneg = |k: &str| -> std::result::Result<f64, InputError> {
            let v = o.opt_f64(k)?.unwrap_or(0.0);
            if v >= 0.0 {
                Ok(v)
            } else {
                Err(o.err(k, "must not be negative"))
            }
        };
        let aliases = match o.get("aliases") {
            None => Vec::new(),
            Some(v) => v
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .ok_or_else(|| o.err("aliases", "expected an array of strings"))?,
        };
        let mut sources = std::collections::BTreeMap::new();
        if o.get("sources").is_some() {
            let so = o.object("sources", "sources.")?;
            for k in so.map.keys() {
                if !SOURCED_FIELDS.contains(&k.as_str()) {
                    return Err(so
                        .err(
                            k,
                            format!(
                                "not a figure of the profile (known: {})",
                                SOURCED_FIELDS.join(", ")
                            ),
                        )
                        .into());
                }
                sources.insert(k.clone(), so.str(k)?.to_string());
            }
        }
        let p = GpuProfile {
            sources,
            name: o.str("name")?.to_string(),
            provenance: o
                .opt_str("provenance")?
                .unwrap_or("user profile")
                .to_string(),
            memory_gib: pos("memory_gib")?,
            peak_tflops: pos("peak_tflops")?,
            peak_fp8_tflops: match o.get("peak_fp8_tflops") {
                Some(_) => Some(pos("peak_fp8_tflops")?),
                None => None,
            },
            hbm_gbps: pos("hbm_gbps")?,
            pcie_h2d_gbps: pos("pcie_h2d_gbps")?,
            pcie_d2h_gbps: pos("pcie_d2h_gbps")?,
            interconnect_gbps: pos("interconnect_gbps")?,
            compute_efficiency: frac("compute_efficiency")?,
            memory_efficiency: frac("memory_efficiency")?,
            step_overhead_us: nonneg("step_overhead_us")?,
            per_seq_overhead_us: nonneg("per_seq_overhead_us")?,
            non_torch_gib: nonneg("non_torch_gib")?,
            large_gpu_defaults: o.opt_bool("large_gpu_defaults")?.unwrap_or(false),
        };
        Ok((p, aliases))
    }

    /// Names of the shipped profiles.
    pub fn shipped_names() -> Vec<String> {
        SHIPPED
            .iter()
            .filter_map(|t| GpuProfile::from_json_str(t, "shipped").ok())
            .map(|(p, _)| p.name)
            .collect()
    }

    /// Finds a profile by name or alias, or reads it from a JSON file path.
    pub fn lookup(name: &str) -> Result<GpuProfile> {
        let k = key(name);
        for text in SHIPPED {
            let (p, aliases) = GpuProfile::from_json_str(text, "shipped")?;
            if key(&p.name) == k || aliases.iter().any(|a| key(a) == k) {
                return Ok(p);
            }
        }
        let path = std::path::Path::new(name);
        if path.is_file() {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(name, e))?;
            return Ok(GpuProfile::from_json_str(&text, name)?.0);
        }
        Err(Error::Config(format!(
            "unknown GPU {name:?}: not one of {} and not a profile file",
            GpuProfile::shipped_names().join(", ")
        )))
    }

    /// The shipped profile whose name or an alias appears in free text (a study's "gpu" field
    /// such as "unknown; ... e.g. H100 80GB"), longest match first.
    pub fn find_in_text(text: &str) -> Option<GpuProfile> {
        let t = key(text);
        let mut best: Option<(usize, GpuProfile)> = None;
        for s in SHIPPED {
            let Ok((p, aliases)) = GpuProfile::from_json_str(s, "shipped") else {
                continue;
            };
            for a in aliases.iter().chain(std::iter::once(&p.name)) {
                let k = key(a);
                if !k.is_empty()
                    && t.contains(&k)
                    && best.as_ref().is_none_or(|(l, _)| k.len() > *l)
                {
                    best = Some((k.len(), p.clone()));
                }
            }
        }
        best.map(|(_, p)| p)
    }

    /// Device memory in bytes.
    pub fn memory_bytes(&self) -> f64 {
        self.memory_gib * (1u64 << 30) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_profiles_parse_and_resolve_by_alias() {
        assert_eq!(GpuProfile::shipped_names().len(), SHIPPED.len());
        assert_eq!(GpuProfile::lookup("h100").unwrap().name, "H100 80GB SXM");
        assert_eq!(
            GpuProfile::lookup("RTX 4090 24GB").unwrap().memory_gib,
            23.99
        );
        assert!(!GpuProfile::lookup("A100").unwrap().large_gpu_defaults);
        for n in GpuProfile::shipped_names() {
            let p = GpuProfile::lookup(&n).unwrap();
            assert!(p.provenance.starts_with("spec"), "{n}: {}", p.provenance);
        }
        // The H100's efficiencies name the published measurements they come from.
        let h = GpuProfile::lookup("H100").unwrap();
        for f in ["compute_efficiency", "memory_efficiency"] {
            assert!(h.sources[f].contains("microsoft/vidur"), "{f}");
        }
        assert!(h.sources["step_overhead_us"].starts_with("assumed"));
        let bad = r#"{"name": "X", "memory_gib": 1, "peak_tflops": 1, "hbm_gbps": 1,
            "pcie_h2d_gbps": 1, "pcie_d2h_gbps": 1, "interconnect_gbps": 1,
            "compute_efficiency": 0.5, "memory_efficiency": 0.5,
            "sources": {"compute_eficiency": "a paper"}}"#;
        let e = GpuProfile::from_json_str(bad, "x.json")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x.json") && e.contains("sources.compute_eficiency"),
            "{e}"
        );
        let e = GpuProfile::lookup("GB300").unwrap_err().to_string();
        assert!(
            e.contains("unknown GPU \"GB300\"") && e.contains("MI300X 192GB"),
            "{e}"
        );
        // L40 and L40S, A10G and A100 are told apart.
        assert_eq!(GpuProfile::lookup("L40").unwrap().peak_tflops, 181.0);
        assert_eq!(GpuProfile::lookup("L40S").unwrap().peak_tflops, 362.0);
        assert_eq!(GpuProfile::lookup("a10g").unwrap().hbm_gbps, 600.0);
    }

    #[test]
    fn finds_a_gpu_named_in_free_text() {
        let f = |t: &str| GpuProfile::find_in_text(t).map(|p| p.name);
        assert_eq!(
            f("unknown; the output implies at least 70 GiB, e.g. H100 80GB").as_deref(),
            Some("H100 80GB SXM")
        );
        assert_eq!(f("RTX 4090 24GB").as_deref(), Some("RTX 4090 24GB"));
        assert_eq!(f("unknown (one NVIDIA GPU)"), None);
    }

    #[test]
    fn bad_profile_names_the_field() {
        let e = GpuProfile::from_json_str(r#"{"name": "x", "memory_gib": -1}"#, "g.json")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "g.json: memory_gib: must be positive");
    }
}
