//! `kvreplay compare`: one trace under several offload configurations, side by side.
//!
//! With no trace this is the README's main job: LMCache's long_doc_qa (51 documents of 10,000
//! tokens, tile order, 4 in flight) on Llama-3.1-8B / H100 80GB, where vLLM alone reuses nothing
//! and a large enough CPU tier turns the query round into hits.

use crate::config::RunConfig;
use crate::error::{Error, Result};
use crate::pipeline::{RunOutput, run};
use crate::trace::Trace;
use crate::trace::generate::long_doc_qa;
use rayon::prelude::*;
use serde_json::{Map, Value, json};

/// One configuration in a comparison: a label and the keys it sets over the base.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// Short name shown in the table.
    pub label: String,
    /// Keys set over the base configuration.
    pub keys: Map<String, Value>,
}

fn keys(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

/// Parses one variant: `none`, `cpu[:GiB]`, `disk[:GiB]` (behind an 8 GiB CPU tier),
/// `remote[:RTT_ms]` (Redis, no local CPU tier), `native[:GiB]`, or any configuration keys as
/// `KEY=VALUE[+KEY=VALUE...]` (routers side by side: `router=round_robin,router=llm_d`).
pub fn parse_variant(spec: &str) -> Result<Variant> {
    if spec.contains('=') {
        let mut k = Map::new();
        for part in spec.split('+') {
            let (key, value) = part.split_once('=').ok_or_else(|| {
                Error::Config(format!("variant {spec:?}: {part:?} is not KEY=VALUE"))
            })?;
            let key = key.trim();
            if !RunConfig::is_key(key) {
                return Err(Error::Config(format!(
                    "variant {spec:?}: unknown key {key:?} (did you mean {:?}?)",
                    crate::config::keys::nearest(key)
                )));
            }
            k.insert(key.into(), crate::config::parse_value(value.trim()));
        }
        return Ok(Variant {
            label: spec.trim().into(),
            keys: k,
        });
    }
    let (kind, arg) = match spec.split_once(':') {
        Some((k, a)) => (k.trim(), Some(a.trim())),
        None => (spec.trim(), None),
    };
    let num = |what: &str| -> Result<Option<f64>> {
        match arg {
            None => Ok(None),
            Some(a) => a
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .map(Some)
                .ok_or_else(|| {
                    Error::Config(format!(
                        "variant {spec:?}: {what} must be a number, found {a:?}"
                    ))
                }),
        }
    };
    Ok(match kind {
        "none" => Variant {
            label: "none".into(),
            keys: keys(json!({"tier": "none"})),
        },
        "cpu" => {
            let mut k = keys(json!({"tier": "cpu"}));
            if let Some(g) = num("GiB")? {
                k.insert("max_local_cpu_size_gb".into(), json!(g));
            }
            Variant {
                label: spec.into(),
                keys: k,
            }
        }
        "disk" => {
            let g = num("GiB")?.unwrap_or(100.0);
            Variant {
                label: format!("disk:{g}"),
                keys: keys(
                    json!({"tier": "disk", "max_local_disk_size_gb": g, "max_local_cpu_size_gb": 8}),
                ),
            }
        }
        "remote" => {
            let rtt = num("RTT ms")?.unwrap_or(1.0);
            Variant {
                label: format!("remote:{rtt}ms"),
                keys: keys(
                    json!({"tier": "remote", "remote": "redis", "local_cpu": false, "rtt_ms": rtt}),
                ),
            }
        }
        "native" => {
            let mut k = keys(json!({"tier": "native"}));
            if let Some(g) = num("GiB")? {
                k.insert("kv_offloading_size_gb".into(), json!(g));
            }
            Variant {
                label: spec.into(),
                keys: k,
            }
        }
        _ => {
            return Err(Error::Config(format!(
                "variant {spec:?}: expected none, cpu[:GiB], disk[:GiB], remote[:RTT_ms] or native[:GiB]"
            )));
        }
    })
}

/// The default variants: vLLM alone, LMCache CPU, CPU + disk, remote Redis at 1, 10 and 50 ms,
/// and vLLM's native offload.
pub const DEFAULT_VARIANTS: &str = "none,cpu,disk,remote:1,remote:10,remote:50,native";

/// Parses a comma-separated list of variants (commas inside a JSON value's brackets or quotes,
/// as in `pools=[{...},{...}]`, belong to the value).
pub fn parse_variants(list: &str) -> Result<Vec<Variant>> {
    let mut parts: Vec<&str> = Vec::new();
    let (mut depth, mut quoted, mut from) = (0i32, false, 0usize);
    for (i, ch) in list.char_indices() {
        match ch {
            '"' => quoted = !quoted,
            '[' | '{' if !quoted => depth += 1,
            ']' | '}' if !quoted => depth -= 1,
            ',' if !quoted && depth <= 0 => {
                parts.push(list[from..i].trim());
                from = i + 1;
            }
            _ => {}
        }
    }
    parts.push(list[from..].trim());
    if parts.iter().any(|p| p.is_empty()) {
        return Err(Error::Config(format!(
            "--variants {list:?}: an empty variant (e.g. none,cpu:66,native:66)"
        )));
    }
    parts.into_iter().map(parse_variant).collect()
}

/// The embedded default workload.
pub fn default_trace() -> Result<Trace> {
    let p = long_doc_qa::Params {
        num_documents: 51,
        document_length: 10_000,
        output_len: 100,
        repeat_count: 1,
        repeat_mode: long_doc_qa::RepeatMode::Tile,
        max_inflight_requests: 4,
        ..Default::default()
    };
    long_doc_qa::generate(&p, 0)
}

/// The base configuration of the default comparison: Llama-3.1-8B on H100 80GB, a 66 GiB CPU
/// tier (enough for all 51 documents), 8 GiB of CPU in front of the disk tier.
pub fn default_base() -> RunConfig {
    let mut c = RunConfig::default();
    c.lmcache.max_local_cpu_size = Some(66.0);
    c.native_gib = 66.0;
    c
}

/// Runs every variant over `base` (in parallel; results in variant order).
pub fn compare<'t>(
    trace: &'t Trace,
    base: &RunConfig,
    variants: &[Variant],
) -> Result<Vec<(Variant, RunConfig, RunOutput<'t>)>> {
    variants
        .par_iter()
        .map(|v| {
            let mut c = base.clone();
            c.set_all(&v.keys)?;
            let out = run(trace, &c)?;
            Ok((v.clone(), c, out))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_parse_and_bad_ones_are_named() {
        let v = parse_variants(DEFAULT_VARIANTS).unwrap();
        assert_eq!(v.len(), 7);
        assert_eq!(v[3].keys["rtt_ms"], json!(1.0));
        assert_eq!(
            parse_variant("cpu:20").unwrap().keys["max_local_cpu_size_gb"],
            json!(20.0)
        );
        let e = parse_variant("remote:fast").unwrap_err().to_string();
        assert!(e.contains("remote:fast") && e.contains("RTT ms"), "{e}");
        assert!(parse_variant("gpu").is_err());
        // Any keys: routers side by side.
        let v = parse_variant("router=llm_d+replicas=4").unwrap();
        assert_eq!(
            (v.keys["router"].clone(), v.keys["replicas"].clone()),
            (json!("llm_d"), json!(4))
        );
        let e = parse_variant("routr=llm_d").unwrap_err().to_string();
        assert!(e.contains("did you mean \"router\""), "{e}");
    }

    /// Regression: `compare --variants ""` said "No such file or directory".
    #[test]
    fn an_empty_variant_is_an_error() {
        for list in ["", "none,", "cpu:20,,native"] {
            let e = parse_variants(list).unwrap_err().to_string();
            assert!(e.contains("an empty variant"), "{list:?}: {e}");
        }
    }

    #[test]
    fn a_variants_json_value_keeps_its_commas() {
        let vs =
            parse_variants(r#"pools=[{"count":2},{"count":1,"gpu":"A100"}]+router=llm_d, cpu:20"#)
                .unwrap();
        assert_eq!(vs.len(), 2);
        let pools = &vs[0].keys["pools"];
        assert_eq!(pools.as_array().map(Vec::len), Some(2));
        assert_eq!(pools[1]["gpu"], "A100");
        assert_eq!(vs[0].keys["router"], "llm_d");
        assert_eq!(vs[1].label, "cpu:20");
    }

    #[test]
    fn default_comparison_shows_the_cpu_tier_effect() {
        let t = default_trace().unwrap();
        let vs = parse_variants("none,cpu").unwrap();
        let out = compare(&t, &default_base(), &vs).unwrap();
        let q = |o: &RunOutput| o.summary.metric(&o.records, "query_ttft_mean_s").unwrap();
        assert!(q(&out[1].2) < q(&out[0].2) / 2.0);
        assert_eq!(out[0].0.label, "none");
    }
}
