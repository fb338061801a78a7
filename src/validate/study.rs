//! The study format (`../shared/validation/README.md`): a published set of live runs written down
//! as data. Read unchanged; every malformed field is one error naming the file and the field path.

use crate::error::{InputError, Result};
use crate::util::json::{Obj, parse_object};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Whether a run may be used for fitting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May be used to fit free parameters.
    Fit,
    /// Must never be used for fitting; its error is the one that counts.
    Check,
}

/// A named variant of the workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// What the case assumes, in words.
    pub note: Option<String>,
    /// Dotted workload paths and the values they take.
    pub overrides: Map<String, Value>,
}

/// One live run.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyRun {
    /// Position in the file (0-based).
    pub index: usize,
    /// Fit or check.
    pub role: Role,
    /// Keys overriding the setup.
    pub set: Map<String, Value>,
    /// Metric name -> measured value.
    pub measured: BTreeMap<String, f64>,
}

/// A whole study.
#[derive(Debug, Clone, PartialEq)]
pub struct Study {
    /// The file it came from.
    pub file: String,
    /// Short name.
    pub name: String,
    /// Where the numbers come from.
    pub source: String,
    /// Hugging Face model id.
    pub model: String,
    /// The GPU as the study states it.
    pub gpu: String,
    /// Tensor-parallel size.
    pub tp: u32,
    /// vLLM version, when stated.
    pub engine_version: Option<String>,
    /// The other vLLM settings, by their vLLM names (`block_size`, `kv_cache_dtype`, ...).
    pub engine: Map<String, Value>,
    /// LMCache configuration keys shared by all runs.
    pub lmcache: Map<String, Value>,
    /// Workload kind (`llmperf`, `long_doc_qa`, ...).
    pub kind: String,
    /// The generator's parameters (without `kind`).
    pub workload: Map<String, Value>,
    /// Named workload variants.
    pub cases: BTreeMap<String, Case>,
    /// Metric name -> definition.
    pub metrics: BTreeMap<String, String>,
    /// The runs.
    pub runs: Vec<StudyRun>,
}

impl Study {
    /// Reads a study file.
    pub fn read(path: &std::path::Path) -> Result<Study> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| crate::error::Error::io(&file, e))?;
        Study::parse(&text, &file)
    }

    /// Parses study JSON; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Study> {
        let map = parse_object(text, file, 0)?;
        let top = Obj::new(&map, file, 0);
        only_known(
            &top,
            &["study", "source", "setup", "metrics", "notes", "runs"],
        )?;
        let setup = top.object("setup", "setup.")?;
        only_known(
            &setup,
            &["model", "gpu", "engine", "lmcache", "workload", "cases"],
        )?;
        let engine = setup.object("engine", "setup.engine.")?;
        let workload = setup.object("workload", "setup.workload.")?;
        let kind = workload.str("kind")?.to_string();
        let mut wl = workload.map.clone();
        wl.remove("kind");
        let lmcache = match setup.get("lmcache") {
            Some(_) => setup.object("lmcache", "setup.lmcache.")?.map.clone(),
            None => Map::new(),
        };
        let mut cases = BTreeMap::new();
        if setup.get("cases").is_some() {
            let c = setup.object("cases", "setup.cases.")?;
            for (name, v) in c.map {
                let Value::Object(o) = v else {
                    return Err(c.err(name, "expected an object of overrides").into());
                };
                let mut overrides = o.clone();
                let note = match overrides.remove("note") {
                    None => None,
                    Some(Value::String(s)) => Some(s),
                    Some(_) => {
                        return Err(c.err(&format!("{name}.note"), "expected a string").into());
                    }
                };
                cases.insert(name.clone(), Case { note, overrides });
            }
        }
        let mut metrics = BTreeMap::new();
        let m = top.object("metrics", "metrics.")?;
        for k in m.map.keys() {
            metrics.insert(k.clone(), m.str(k)?.to_string());
        }
        let mut runs = Vec::new();
        for (i, r) in top.array("runs")?.iter().enumerate() {
            let path = format!("runs[{i}].");
            let Value::Object(ro) = r else {
                return Err(
                    InputError::new(file, 0, format!("runs[{i}]"), "expected an object").into(),
                );
            };
            let o = Obj {
                map: ro,
                file,
                line: 0,
                path: &path,
            };
            only_known(&o, &["role", "set", "measured", "note"])?;
            let role = match o.str("role")? {
                "fit" => Role::Fit,
                "check" => Role::Check,
                other => {
                    return Err(o
                        .err("role", format!("expected fit or check, found {other:?}"))
                        .into());
                }
            };
            let set = match o.get("set") {
                Some(_) => o.object("set", "")?.map.clone(),
                None => Map::new(),
            };
            if let Some(v) = set.get("warmup_repeat")
                && !v.is_boolean()
            {
                return Err(o
                    .err(
                        "set.warmup_repeat",
                        format!("expected true or false (a JSON boolean), found {v}"),
                    )
                    .into());
            }
            if let Some(Value::String(c)) = set.get("case")
                && !cases.contains_key(c)
            {
                return Err(o
                    .err(
                        "set.case",
                        format!("case {c:?} is not defined in setup.cases"),
                    )
                    .into());
            }
            let mo = o.object("measured", "")?;
            let mut measured = BTreeMap::new();
            for k in mo.map.keys() {
                let v = mo
                    .f64(k)
                    .map_err(|_| o.err(&format!("measured.{k}"), "expected a number"))?;
                if !(v.is_finite() && v >= 0.0) {
                    return Err(o
                        .err(
                            &format!("measured.{k}"),
                            format!("a measured value is a number >= 0, found {v}"),
                        )
                        .into());
                }
                if !metrics.contains_key(k) {
                    return Err(o
                        .err(&format!("measured.{k}"), "metric not defined in `metrics`")
                        .into());
                }
                measured.insert(k.clone(), v);
            }
            runs.push(StudyRun {
                index: i,
                role,
                set,
                measured,
            });
        }
        Ok(Study {
            file: file.to_string(),
            name: top.str("study")?.to_string(),
            source: top.opt_str("source")?.unwrap_or("").to_string(),
            model: setup.str("model")?.to_string(),
            gpu: setup.str("gpu")?.to_string(),
            tp: engine.opt_u32("tensor_parallel_size")?.unwrap_or(1),
            engine_version: engine.opt_str("version")?.map(str::to_string),
            engine: engine
                .map
                .iter()
                .filter(|(k, _)| !["name", "version", "tensor_parallel_size"].contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            lmcache,
            kind,
            workload: wl,
            cases,
            metrics,
            runs,
        })
    }
}

/// An error naming the first field of `o` that the format does not define.
fn only_known(o: &Obj<'_>, known: &[&str]) -> Result<()> {
    match o.map.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(o
            .err(
                k,
                format!("unknown field; the format defines {}", known.join(", ")),
            )
            .into()),
        None => Ok(()),
    }
}

/// Sets a dotted path (`config.prompt_output.num_tokens`) in a JSON object, creating objects on
/// the way.
pub fn set_dotted(map: &mut Map<String, Value>, path: &str, value: Value) {
    let mut parts = path.split('.').peekable();
    let mut cur = map;
    while let Some(p) = parts.next() {
        if parts.peek().is_none() {
            cur.insert(p.to_string(), value);
            return;
        }
        let next = cur
            .entry(p.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !next.is_object() {
            *next = Value::Object(Map::new());
        }
        cur = next.as_object_mut().expect("made an object");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::testkit::shared_study as shared;

    #[test]
    fn reads_every_shipped_study() {
        for f in crate::testkit::SHIPPED_STUDIES {
            let Some(p) = shared(f) else {
                return;
            };
            let s = Study::read(&p).unwrap();
            assert!(!s.runs.is_empty(), "{f}");
            assert!(s.runs.iter().any(|r| r.role == Role::Check), "{f}");
        }
        let Some(p) = shared("multi-turn-prefill.json") else {
            return;
        };
        let s = Study::read(&p).unwrap();
        assert_eq!(s.cases.len(), 3);
        assert_eq!(s.kind, "vllm_multi_turn");
        assert!(
            s.cases["20K input"]
                .note
                .as_deref()
                .unwrap()
                .starts_with("not printed")
        );
        assert!(
            s.cases["20K input"]
                .overrides
                .contains_key("config.prompt_input.prefix_num_tokens")
        );
    }

    #[test]
    fn malformed_studies_name_the_field() {
        let base = json!({"study": "s", "setup": {"model": "m", "gpu": "g", "engine": {"name": "vllm"},
            "workload": {"kind": "llmperf"}}, "metrics": {"ttft_p50_s": "median ttft"},
            "runs": [{"role": "fit", "set": {}, "measured": {"ttft_p50_s": 0.1}}]});
        assert!(Study::parse(&base.to_string(), "s.json").is_ok());
        let mut b = base.clone();
        b["runs"][0]["role"] = json!("train");
        let e = Study::parse(&b.to_string(), "s.json")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "s.json: runs[0].role: expected fit or check, found \"train\""
        );
        let mut b = base.clone();
        b["runs"][0]["measured"] = json!({"ttft_p99_s": 1.0});
        let e = Study::parse(&b.to_string(), "s.json")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("runs[0].measured.ttft_p99_s: metric not defined"),
            "{e}"
        );
        let mut b = base.clone();
        b["runs"][0]["set"] = json!({"case": "nope"});
        assert!(
            Study::parse(&b.to_string(), "s.json")
                .unwrap_err()
                .to_string()
                .contains("runs[0].set.case")
        );
        let mut b = base;
        b["setup"]["workload"] = json!({});
        assert!(
            Study::parse(&b.to_string(), "s.json")
                .unwrap_err()
                .to_string()
                .contains("setup.workload.kind: missing")
        );
    }

    /// Regression: `"warmup_repeat": "true"` (a string) was silently false, unknown fields were
    /// ignored and negative measurements accepted.
    #[test]
    fn study_strings_for_booleans_unknown_fields_and_negative_measurements_are_errors() {
        let base = json!({"study": "s", "setup": {"model": "m", "gpu": "g", "engine": {"name": "vllm"},
            "workload": {"kind": "llmperf"}}, "metrics": {"ttft_p50_s": "median ttft"},
            "notes": ["free text"],
            "runs": [{"role": "fit", "set": {"warmup_repeat": true}, "measured": {"ttft_p50_s": 0.1}, "note": "x"}]});
        assert!(Study::parse(&base.to_string(), "s.json").is_ok());
        let err = |f: &dyn Fn(&mut Value)| {
            let mut b = base.clone();
            f(&mut b);
            Study::parse(&b.to_string(), "s.json")
                .unwrap_err()
                .to_string()
        };
        let e = err(&|b| b["runs"][0]["set"]["warmup_repeat"] = json!("true"));
        assert_eq!(
            e,
            "s.json: runs[0].set.warmup_repeat: expected true or false (a JSON boolean), found \"true\""
        );
        let e = err(&|b| b["runs"][0]["mesured"] = json!({}));
        assert!(
            e.starts_with("s.json: runs[0].mesured: unknown field"),
            "{e}"
        );
        let e = err(&|b| b["setup"]["lmcach"] = json!({}));
        assert!(e.starts_with("s.json: setup.lmcach: unknown field"), "{e}");
        let e = err(&|b| b["run"] = json!([]));
        assert!(e.starts_with("s.json: run: unknown field"), "{e}");
        let e = err(&|b| b["runs"][0]["measured"]["ttft_p50_s"] = json!(-0.1));
        assert!(
            e.contains("runs[0].measured.ttft_p50_s: a measured value is a number >= 0"),
            "{e}"
        );
    }

    #[test]
    fn dotted_paths_reach_into_nested_objects() {
        let mut m =
            json!({"config": {"prompt_output": {"num_tokens": {"distribution": "uniform"}}}})
                .as_object()
                .cloned()
                .unwrap();
        set_dotted(
            &mut m,
            "config.prompt_output.num_tokens",
            json!({"distribution": "constant", "value": 1}),
        );
        set_dotted(&mut m, "a.b", json!(2));
        assert_eq!(m["config"]["prompt_output"]["num_tokens"]["value"], 1);
        assert_eq!(m["a"]["b"], 2);
    }
}
