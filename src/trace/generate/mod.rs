//! Generators: re-implementations of the workloads that public benchmark tools send, written as
//! canonical traces.
//!
//! | subcommand    | study kind          | tool                                                   |
//! | ------------- | ------------------- | ------------------------------------------------------ |
//! | `llmperf`     | `llmperf`           | ray-project/llmperf `token_benchmark_ray.py`           |
//! | `long-doc-qa` | `long_doc_qa`       | LMCache `benchmarks/long_doc_qa/long_doc_qa.py`        |
//! | `multi-turn`  | `vllm_multi_turn`   | vLLM `benchmarks/multi_turn` (`generate_conversations`) |
//! | `random`      | `vllm_bench_random` | `vllm bench serve --dataset-name random`               |
//! | (studies only) | `single_prompt_twice` | one prompt sent twice, the second after the first completes |
//!
//! Each generator takes the tool's own parameters (same names, same defaults, flags in their
//! kebab-case form) and reproduces what the tool sends: the lengths it draws, the content that
//! prompts share (as content ids, see [`crate::trace`]), and how the tool paces requests (open
//! loop, or a closed-loop [`Pool`] with sessions and rounds). Text is never materialised: a piece
//! of text the tool would send is a run of a content id, so prefix caches see exactly the sharing
//! the tool's prompts have. Randomness comes only from [`crate::util::rng::Rng`], so a seed gives
//! the same trace with every kvreplay build; it does not reproduce the tools' own random streams
//! (Python's Mersenne Twister, NumPy), only their distributions.
//!
//! Limits: a generator refuses to build more than [`MAX_REQUESTS`] requests or more than
//! [`MAX_RUNS`] prompt runs in all, so that no parameter value can exhaust memory.

pub mod llmperf;
pub mod long_doc_qa;
pub mod multi_turn;
pub mod random;
pub mod single_prompt_twice;

use super::{Pool, Request, Run, Trace, TraceMeta};
use crate::error::{Error, InputError, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// The most requests a generator builds (about 2 GB of requests); larger workloads are refused.
pub const MAX_REQUESTS: u64 = 10_000_000;

/// The most prompt runs a generator builds in all (multi-turn prompts repeat their history, so
/// runs grow with the square of the turns); 16 bytes each.
pub const MAX_RUNS: u64 = 100_000_000;

/// Which workload to generate, with the tool's own parameters.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum GenKind {
    /// ray-project/llmperf token_benchmark_ray.py: normal lengths, unique prompts, N clients.
    Llmperf(llmperf::Params),
    /// LMCache long_doc_qa: a warmup round over the documents, then a query round of repeats.
    LongDocQa(long_doc_qa::Params),
    /// vLLM benchmarks/multi_turn: synthetic conversations from a generate_conversations config.
    MultiTurn(multi_turn::Params),
    /// vllm bench serve --dataset-name random: random lengths, optional shared prefix, arrivals.
    Random(random::Params),
}

/// Generates the workload `kind` with `seed`. The same parameters and seed always give the same
/// trace.
pub fn generate(kind: &GenKind, seed: u64) -> Result<Trace> {
    match kind {
        GenKind::Llmperf(p) => llmperf::generate(p, seed),
        GenKind::LongDocQa(p) => long_doc_qa::generate(p, seed),
        GenKind::MultiTurn(p) => multi_turn::generate(p, seed),
        GenKind::Random(p) => random::generate(p, seed),
    }
}

/// The study workload kinds [`from_study`] knows.
pub const STUDY_KINDS: [&str; 5] = [
    "llmperf",
    "long_doc_qa",
    "vllm_multi_turn",
    "vllm_bench_random",
    "single_prompt_twice",
];

/// Whether the tool behind workload kind `kind` counts a response's output tokens by
/// tokenizing its text with a tokenizer of its own (llmperf re-tokenizes every answer with the
/// Llama-2 tokenizer, BOS included), so that its output token counts differ from the tokens the
/// model generated.
pub fn counts_output_tokens_itself(kind: &str) -> bool {
    kind == "llmperf"
}

/// Generates a study's workload: `kind` is the study's `workload.kind`, `params` the workload's
/// other keys (after the lead's case and run overrides), `file` the study file for errors.
///
/// The keys `kind`, `rounds` and `seed` are documentation in studies and are ignored, except that
/// for `vllm_bench_random` a `seed` is the tool's `--seed` and replaces `seed`. Any other key the
/// generator does not know is an error naming it. A multi-turn `config` given as a path is read
/// relative to the study file's folder.
pub fn from_study(kind: &str, params: &Map<String, Value>, seed: u64, file: &str) -> Result<Trace> {
    match kind {
        "llmperf" => llmperf::generate(&study_params(kind, params, file)?, seed),
        "long_doc_qa" => long_doc_qa::generate(&study_params(kind, params, file)?, seed),
        "vllm_multi_turn" => {
            let p: multi_turn::Params = study_params(kind, params, file)?;
            let dir = std::path::Path::new(file).parent();
            multi_turn::generate_in(&p, seed, file, "workload.config.", dir)
        }
        "vllm_bench_random" => {
            let seed = match params.get("seed") {
                None | Some(Value::Null) => seed,
                Some(v) => v.as_u64().ok_or_else(|| {
                    InputError::new(
                        file,
                        0,
                        "workload.seed",
                        format!(
                            "expected a non-negative integer, found {}",
                            crate::util::json::show(v)
                        ),
                    )
                })?,
            };
            random::generate(&study_params(kind, params, file)?, seed)
        }
        "single_prompt_twice" => {
            single_prompt_twice::generate(&study_params(kind, params, file)?, seed)
        }
        other => Err(InputError::new(
            file,
            0,
            "workload.kind",
            format!(
                "unknown workload kind \"{other}\" for a generator (known: {})",
                STUDY_KINDS.join(", ")
            ),
        )
        .into()),
    }
}

/// Reads a study's workload keys into a generator's parameters, naming the key at fault.
fn study_params<P: DeserializeOwned + Serialize + Default>(
    kind: &str,
    params: &Map<String, Value>,
    file: &str,
) -> Result<P> {
    let known: Vec<String> = match serde_json::to_value(P::default()) {
        Ok(Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    };
    let mut kept = Map::new();
    for (k, v) in params {
        if matches!(k.as_str(), "kind" | "rounds" | "seed") {
            continue;
        }
        let field = format!("workload.{k}");
        if !known.contains(k) {
            return Err(InputError::new(
                file,
                0,
                field,
                format!("unknown parameter for {kind} (known: {})", known.join(", ")),
            )
            .into());
        }
        // One key at a time, so that a type error names its key.
        let one = Map::from_iter([(k.clone(), v.clone())]);
        if let Err(e) = serde_json::from_value::<P>(Value::Object(one)) {
            return Err(InputError::new(file, 0, field, e.to_string()).into());
        }
        kept.insert(k.clone(), v.clone());
    }
    serde_json::from_value(Value::Object(kept))
        .map_err(|e| InputError::new(file, 0, "workload", e.to_string()).into())
}

/// A configuration error naming the parameter both as the study key and as the flag.
pub(crate) fn bad(field: &str, msg: impl std::fmt::Display) -> Error {
    Error::Config(format!("{field} (--{}): {msg}", field.replace('_', "-")))
}

thread_local! {
    /// The limits in force on this thread: (requests, prompt runs).
    static LIMITS: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((MAX_REQUESTS, MAX_RUNS)) };
}

/// Runs `f` with lower limits on this thread (at most `requests` requests and `runs` prompt
/// runs), so that fuzzing keeps every input fast.
#[doc(hidden)]
pub fn with_limits<T>(requests: u64, runs: u64, f: impl FnOnce() -> T) -> T {
    let before = LIMITS.with(|l| l.replace((requests.min(MAX_REQUESTS), runs.min(MAX_RUNS))));
    let out = f();
    LIMITS.with(|l| l.set(before));
    out
}

/// The most prompt runs a generator may build now ([`MAX_RUNS`] unless lowered).
pub(crate) fn max_runs() -> u64 {
    LIMITS.with(|l| l.get().1)
}

/// Refuses a request count above [`MAX_REQUESTS`]; `what` names the parameters responsible.
pub(crate) fn check_requests(n: u64, what: &str) -> Result<()> {
    let max = LIMITS.with(|l| l.get().0);
    if n > max {
        return Err(Error::Config(format!(
            "{what}: {n} requests; kvreplay generates at most {max}"
        )));
    }
    Ok(())
}

/// Hands out content ids for prompts: 1, 2, 3, ... (always far below the output-content bit).
#[derive(Debug)]
pub(crate) struct Ids(u64);

impl Ids {
    pub(crate) fn new() -> Self {
        Ids(1)
    }

    /// A content id no other piece of this trace uses.
    pub(crate) fn fresh(&mut self) -> u64 {
        let id = self.0;
        self.0 += 1;
        id
    }
}

/// [`Request::new`] at time 0 (open loop until the caller sets pacing fields), refusing a prompt
/// of more than `u32::MAX` tokens with an error instead of a wrong `input_len`.
pub(crate) fn request(id: u64, prompt: Vec<Run>, output_len: u32) -> Result<Request> {
    let sum: u64 = prompt.iter().map(|r| r.len as u64).sum();
    if u32::try_from(sum).is_err() {
        return Err(Error::Config(format!(
            "request {id}: a prompt of {sum} tokens is longer than 4294967295"
        )));
    }
    Ok(Request::new(id, 0, prompt, output_len))
}

/// Trace metadata: source `gen:<name>`, the parameters as JSON (nulls left out) plus `seed`.
pub(crate) fn meta(name: &str, params: &impl Serialize, seed: u64, pools: Vec<Pool>) -> TraceMeta {
    let mut m = TraceMeta::new(format!("gen:{name}"));
    if let Ok(Value::Object(map)) = serde_json::to_value(params) {
        m.params = map.into_iter().filter(|(_, v)| !v.is_null()).collect();
    }
    m.params.insert("seed".into(), seed.into());
    m.pools = pools;
    m
}

/// Helpers shared by the generators' tests.
#[cfg(test)]
pub(crate) mod testutil {
    use crate::error::Result;
    use crate::trace::Trace;
    use serde::de::DeserializeOwned;
    use serde_json::{Map, Value};
    use std::fmt::Debug;

    /// Parses `args` (the first is the program name) as a generator's flags, the way the
    /// `kvreplay trace gen` subcommand flattens them.
    pub(crate) fn parse_flags<P: clap::Args + clap::FromArgMatches>(
        args: &[&str],
    ) -> std::result::Result<P, clap::Error> {
        let matches = P::augment_args(clap::Command::new("x")).try_get_matches_from(args)?;
        P::from_arg_matches(&matches)
    }

    /// Asserts that a generator run with no flags gets `P::default()`.
    pub(crate) fn assert_clap_defaults<P>()
    where
        P: clap::Args + clap::FromArgMatches + Default + PartialEq + Debug,
    {
        assert_eq!(parse_flags::<P>(&["x"]).unwrap(), P::default());
    }

    /// Asserts that a study workload with no parameters (`{}`) gets `P::default()`.
    pub(crate) fn assert_serde_defaults<P: DeserializeOwned + Default + PartialEq + Debug>() {
        assert_eq!(serde_json::from_str::<P>("{}").unwrap(), P::default());
    }

    /// The object `v` (a `json!({...})` literal) as a map.
    pub(crate) fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    /// Asserts that `generate` gives `p` the same trace twice at seed `a` and other requests at
    /// seed `b`.
    pub(crate) fn assert_seeded<P>(
        generate: impl Fn(&P, u64) -> Result<Trace>,
        p: &P,
        a: u64,
        b: u64,
    ) {
        assert_eq!(generate(p, a).unwrap(), generate(p, a).unwrap());
        assert_ne!(
            generate(p, a).unwrap().requests,
            generate(p, b).unwrap().requests
        );
    }

    /// Asserts that `generate` (seed 0) refuses every parameter set of `cases` with an error
    /// containing the text beside it.
    pub(crate) fn assert_refused<'a, P>(
        generate: impl Fn(&P, u64) -> Result<Trace>,
        cases: impl IntoIterator<Item = (P, &'a str)>,
    ) {
        for (p, want) in cases {
            let e = generate(&p, 0).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::obj;
    use super::*;
    use serde_json::json;

    #[test]
    fn study_kinds_map_to_generators() {
        let t = from_study(
            "long_doc_qa",
            &obj(
                json!({"kind": "long_doc_qa", "num_documents": 3, "document_length": 100,
                 "repeat_count": 1, "repeat_mode": "tile", "rounds": "documentation"}),
            ),
            0,
            "s.json",
        )
        .unwrap();
        assert_eq!(t.requests.len(), 6);
        assert_eq!(t.meta.source, "gen:long-doc-qa");
        assert_eq!(t.meta.params["repeat_mode"], json!("tile"));
        assert_eq!(t.meta.params["seed"], json!(0));

        let t = from_study(
            "llmperf",
            &obj(json!({"kind": "llmperf", "max_num_completed_requests": 5,
                 "num_concurrent_requests": 2, "seed": 99})),
            3,
            "s.json",
        )
        .unwrap();
        assert_eq!(t.requests.len(), 5);
        assert_eq!(
            t.meta.params["seed"],
            json!(3),
            "llmperf ignores a study seed"
        );
    }

    #[test]
    fn single_prompt_twice_is_a_study_kind_and_names_an_unknown_key() {
        let t = from_study(
            "single_prompt_twice",
            &obj(json!({"kind": "single_prompt_twice", "input_tokens": 512})),
            0,
            "s.json",
        )
        .unwrap();
        let lens: Vec<u32> = t.requests.iter().map(|r| r.input_len).collect();
        assert_eq!(lens, vec![512, 512]);
        assert_eq!(t.requests[0].prompt, t.requests[1].prompt);
        let e = from_study(
            "single_prompt_twice",
            &obj(json!({"input_token": 512})),
            0,
            "s.json",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("workload.input_token") && e.contains("input_tokens"),
            "{e}"
        );
    }

    #[test]
    fn vllm_bench_random_takes_the_study_seed() {
        let p = obj(json!({"kind": "vllm_bench_random", "random_input_len": 64,
            "num_prompts": 10, "seed": 40, "request_rate": "inf", "random_range_ratio": 0.5}));
        let a = from_study("vllm_bench_random", &p, 1, "s.json").unwrap();
        let b = from_study("vllm_bench_random", &p, 2, "s.json").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.meta.params["seed"], json!(40));
        let direct = random::generate(
            &random::Params {
                random_input_len: 64,
                num_prompts: 10,
                random_range_ratio: 0.5,
                ..Default::default()
            },
            40,
        )
        .unwrap();
        assert_eq!(a.requests, direct.requests);
        let e = from_study("vllm_bench_random", &obj(json!({"seed": -1})), 0, "s.json")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("s.json: workload.seed: expected"), "{e}");
    }

    #[test]
    fn study_errors_name_the_key() {
        let e = from_study(
            "long_doc_qa",
            &obj(json!({"num_documents": 3, "docs": 4})),
            0,
            "s.json",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("s.json: workload.docs: unknown parameter for long_doc_qa"),
            "{e}"
        );
        let e = from_study(
            "long_doc_qa",
            &obj(json!({"num_documents": "three"})),
            0,
            "s.json",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("s.json: workload.num_documents: invalid type"),
            "{e}"
        );
        let e = from_study("nope", &Map::new(), 0, "s.json")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("workload.kind: unknown workload kind \"nope\""),
            "{e}"
        );
    }

    #[test]
    fn the_repo_studies_generate() {
        let Some(dir) = crate::testkit::shared("validation") else {
            return;
        };
        let entries = std::fs::read_dir(&dir).unwrap();
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let study: Value = serde_json::from_str(&text).unwrap();
            let Some(w) = study["setup"]["workload"].as_object() else {
                continue;
            };
            let kind = w["kind"].as_str().unwrap_or_default();
            if !STUDY_KINDS.contains(&kind) {
                continue;
            }
            let name = path.display().to_string();
            let t = from_study(kind, w, 0, &name).unwrap_or_else(|e| panic!("{e}"));
            t.validate(&name).unwrap();
            assert!(!t.requests.is_empty(), "{name}");
        }
    }

    #[test]
    fn subcommand_names() {
        use clap::Subcommand;
        let names: Vec<String> = GenKind::augment_subcommands(clap::Command::new("g"))
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .collect();
        assert_eq!(names, ["llmperf", "long-doc-qa", "multi-turn", "random"]);
    }
}
