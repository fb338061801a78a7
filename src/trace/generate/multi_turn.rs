//! vLLM `benchmarks/multi_turn`: synthetic conversations from a `generate_conversations` config,
//! driven turn after turn by `num_clients` clients.
//!
//! What the tool does (`bench_dataset.py: generate_conversations`,
//! `benchmark_serving_multi_turn.py`): it draws, in this order and from one generator, the message
//! count of every conversation (`num_turns`, raised to 2 and rounded up to even: it counts user and
//! assistant messages), every conversation's own prefix length (`prefix_num_tokens`, one batch),
//! one common prefix length (`common_prefix_num_tokens`, default 0), then per conversation one
//! input length per message (`num_tokens`, at least the base prompt's tokens) and one output
//! length per message (`prompt_output.num_tokens`, at least 1); user messages use the even
//! indices, answers the odd ones. User message t of conversation c is
//! `[common prefix, only when t = 0] + "{c} is a nice number... " + [t = 0: "{c}, " + the
//! conversation's prefix] + "Please rewrite the following text and add more content: " + filler`,
//! where the filler brings the message to its drawn length, counting the common prefix but not the
//! conversation's prefix (which comes on top). The request for user turn k sends the whole history:
//! every earlier user message and the server's actual earlier answers, then user message k, with
//! `min_tokens = max_tokens` = the drawn answer length. Each client keeps one request in flight,
//! holds `max_active_conversations / num_clients` conversations and serves them round-robin,
//! sleeps an exponential time of mean `1 / request_rate` after every request when the rate is
//! positive, and (early stop) all clients stop once one finds the conversation queue empty.
//!
//! Here: text is content ids and the `text_files` are never read (the names are recorded only):
//! the common prefix is one content id shared by every conversation; everything else a user
//! message holds is one run of content unique to that message (it starts with the conversation's
//! id, so nothing after the common prefix can match across conversations, and within a
//! conversation the message appears once); an answer is the run `(output_content(id), 0,
//! output_len)` of the request that produced it. So turn k's prompt is literally turn k-1's
//! prompt, its answer, and the new user message, and a prefix cache matches exactly what vLLM's
//! would. One [`Pool`] with `num_clients` clients, `max_active_conversations / num_clients`
//! sessions per client and early stop; a session is a conversation.
//!
//! Token counts of the tool's fixed strings use the constants below (Llama-3 / Qwen BPE counts):
//! the decode/re-encode boundary effects of the real text, the chat template's tokens, the
//! common prefix for a length of 1 (Python's `T[:-1]`, the whole text file), and the tool's
//! failure when a text file is too short are not reproduced. The think time is drawn per request
//! from one stream, not per client as the tool's client processes do (same distribution).

use super::{Ids, bad, check_requests, max_runs, meta, request};
use crate::error::{Error, InputError, Result};
use crate::trace::output_content;
use crate::trace::{Pool, Run, Trace, content};
use crate::util::json::{Obj, kind, show};
use crate::util::rng::Rng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::path::Path;

/// Tokens of `"Please rewrite the following text and add more content: "` (the tool's
/// `base_prompt_token_count`; every input length is raised to at least this).
pub const BASE_PROMPT_TOKENS: u64 = 11;

/// Tokens of `"{c} is a nice number... "` at the start of every user message.
pub const NICE_NUMBER_TOKENS: u64 = 7;

/// Tokens of `"{c}, "` in front of a conversation's own prefix.
pub const PREFIX_SEPARATOR_TOKENS: u64 = 2;

/// Where the generator config comes from: a file (the `--config` flag, or a string in a study)
/// or the config object itself (embedded in a study).
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigSource {
    /// Path of the JSON file.
    Path(String),
    /// The config object.
    Inline(Map<String, Value>),
}

impl std::str::FromStr for ConfigSource {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(ConfigSource::Path(s.to_string()))
    }
}

impl Serialize for ConfigSource {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            ConfigSource::Path(p) => s.serialize_str(p),
            ConfigSource::Inline(m) => m.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ConfigSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        match Value::deserialize(d)? {
            Value::String(s) => Ok(ConfigSource::Path(s)),
            Value::Object(m) => Ok(ConfigSource::Inline(m)),
            other => Err(D::Error::custom(format!(
                "expected the path of a generator config or the config object, found {}",
                kind(&other)
            ))),
        }
    }
}

/// The multi-turn benchmark's parameters (`benchmark_serving_multi_turn.py` flags).
#[derive(clap::Args, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// The generate_conversations config JSON (vLLM's `--input-file`).
    #[arg(long, value_name = "FILE")]
    pub config: ConfigSource,
    /// Clients, each with one request in flight.
    #[arg(long, default_value_t = 1)]
    pub num_clients: u32,
    /// Conversations active at once over all clients (default: num_clients).
    #[arg(long)]
    pub max_active_conversations: Option<u32>,
    /// Per-client requests per second: after each request a client waits an exponential time
    /// of mean 1/rate; 0 means no wait.
    #[arg(long, default_value_t = 0.0)]
    pub request_rate: f64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            config: ConfigSource::Path(String::new()),
            num_clients: 1,
            max_active_conversations: None,
            request_rate: 0.0,
        }
    }
}

/// One of the config's length distributions (`bench_dataset.py`), sampled in batches.
#[derive(Debug, Clone, PartialEq)]
pub enum Dist {
    /// Always `value`.
    Constant(i64),
    /// Integers uniform in `[min, max]`.
    Uniform {
        /// Smallest value (> 0).
        min: i64,
        /// Largest value, included.
        max: i64,
    },
    /// Zipf on 1, 2, ... with exponent `alpha`; `max` clamps when not 0.
    Zipf {
        /// Exponent (> 1).
        alpha: f64,
        /// Clamp, 0 for none.
        max: i64,
    },
    /// Poisson with mean `alpha`; `max` clamps when not 0.
    Poisson {
        /// Mean.
        alpha: f64,
        /// Clamp, 0 for none.
        max: i64,
    },
    /// `exp(N(mu, sigma))`; with `average` the batch is rescaled to that mean before the clamp;
    /// rounded half to even.
    Lognormal {
        /// Mean of the underlying normal.
        mu: f64,
        /// Deviation of the underlying normal.
        sigma: f64,
        /// Target batch mean, when given as `average`.
        average: Option<f64>,
        /// Clamp, 0 for none.
        max: i64,
    },
}

/// Above this exponent Zipf gives 1 with probability 1 - 2^-64 or more (and `2^(alpha-1)` would
/// overflow in the sampler), so 1 is returned.
const ZIPF_ALPHA_ONE: f64 = 64.0;

impl Dist {
    /// `n` values, as the tool's `sample(size=n)`.
    pub fn sample(&self, rng: &mut Rng, n: usize) -> Vec<i64> {
        match *self {
            Dist::Constant(v) => vec![v; n],
            Dist::Uniform { min, max } => (0..n)
                .map(|_| rng.range(min as u64, max as u64) as i64)
                .collect(),
            Dist::Zipf { alpha, max } => (0..n)
                .map(|_| {
                    let x = if alpha > ZIPF_ALPHA_ONE {
                        1
                    } else {
                        i64::try_from(rng.zipf(alpha)).unwrap_or(i64::MAX)
                    };
                    clamp(x, max)
                })
                .collect(),
            Dist::Poisson { alpha, max } => (0..n)
                .map(|_| clamp(i64::try_from(rng.poisson(alpha)).unwrap_or(i64::MAX), max))
                .collect(),
            Dist::Lognormal {
                mu,
                sigma,
                average,
                max,
            } => {
                let mut x: Vec<f64> = (0..n).map(|_| rng.lognormal(mu, sigma)).collect();
                if let Some(avg) = average {
                    let mean = x.iter().sum::<f64>() / n as f64;
                    let f = avg / mean;
                    x.iter_mut().for_each(|v| *v *= f);
                }
                x.into_iter()
                    .map(|v| {
                        let v = if max != 0 { v.min(max as f64) } else { v };
                        v.round_ties_even() as i64
                    })
                    .collect()
            }
        }
    }
}

fn clamp(x: i64, max: i64) -> i64 {
    if max != 0 { x.min(max) } else { x }
}

/// A JSON integer (integral floats accepted), possibly negative.
fn int(o: &Obj, key: &str) -> std::result::Result<i64, InputError> {
    let v = o.req(key)?;
    if let Some(i) = v.as_i64() {
        return Ok(i);
    }
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(f as i64),
        _ => Err(o.err(key, format!("expected an integer, found {}", show(v)))),
    }
}

fn opt_int(o: &Obj, key: &str) -> std::result::Result<Option<i64>, InputError> {
    match o.get(key) {
        None => Ok(None),
        Some(_) => int(o, key).map(Some),
    }
}

/// Reads the distribution at `parent.key`.
fn dist(parent: &Obj, key: &str) -> std::result::Result<Dist, InputError> {
    let path = format!("{}{key}.", parent.path);
    let o = parent.object(key, &path)?;
    let name = o.str("distribution")?;
    Ok(match name {
        "constant" => Dist::Constant(int(&o, "value")?),
        "uniform" => {
            let min = int(&o, "min")?;
            let max = int(&o, "max")?;
            if min <= 0 {
                return Err(o.err("min", format!("must be above 0, got {min}")));
            }
            if max < min {
                return Err(o.err("max", format!("must be at least min ({min}), got {max}")));
            }
            Dist::Uniform { min, max }
        }
        "zipf" => {
            let alpha = o.f64("alpha")?;
            // Exponents barely above 1 make the sampler reject almost every draw.
            if alpha < 1.001 {
                return Err(o.err("alpha", format!("must be at least 1.001, got {alpha}")));
            }
            Dist::Zipf {
                alpha,
                max: opt_int(&o, "max")?.unwrap_or(0),
            }
        }
        "poisson" => {
            let alpha = o.f64("alpha")?;
            if alpha < 0.0 {
                return Err(o.err("alpha", format!("must be at least 0, got {alpha}")));
            }
            Dist::Poisson {
                alpha,
                max: opt_int(&o, "max")?.unwrap_or(0),
            }
        }
        "lognormal" => {
            let max = opt_int(&o, "max")?.unwrap_or(0);
            if o.get("average").is_some() {
                let avg = o.f64("average")?;
                if avg < 1.0 {
                    return Err(o.err("average", format!("must be at least 1, got {avg}")));
                }
                for k in ["mean", "sigma"] {
                    if o.opt_f64(k)?.is_some_and(|v| v != 0.0) {
                        return Err(o.err(k, "cannot be given together with average"));
                    }
                }
                let ratio = o.opt_f64("median_ratio")?.unwrap_or(0.85);
                if !(ratio > 0.0 && ratio < 1.0) {
                    return Err(o.err("median_ratio", format!("must be in (0, 1), got {ratio}")));
                }
                let median = avg * ratio;
                Dist::Lognormal {
                    mu: median.ln(),
                    sigma: (2.0 * (avg / median).ln()).sqrt(),
                    average: Some(avg),
                    max,
                }
            } else {
                let mu = o.f64("mean")?;
                let sigma = o.f64("sigma")?;
                if mu <= 0.0 {
                    return Err(o.err("mean", format!("must be above 0, got {mu}")));
                }
                if sigma < 0.0 {
                    return Err(o.err("sigma", format!("must be at least 0, got {sigma}")));
                }
                Dist::Lognormal {
                    mu,
                    sigma,
                    average: None,
                    max,
                }
            }
        }
        other => {
            return Err(o.err(
                "distribution",
                format!(
                    "unknown distribution \"{other}\" (known: constant, uniform, lognormal, zipf, poisson)"
                ),
            ));
        }
    })
}

/// A parsed `generate_conversations` config.
#[derive(Debug, Clone, PartialEq)]
pub struct GenConfig {
    /// Conversations.
    pub num_conversations: u64,
    /// Messages per conversation (user + assistant).
    pub num_turns: Dist,
    /// Tokens of the prefix shared by all conversations.
    pub common_prefix_num_tokens: Dist,
    /// Tokens of each conversation's own prefix.
    pub prefix_num_tokens: Dist,
    /// Tokens of each user message.
    pub num_tokens: Dist,
    /// Tokens of each answer.
    pub output_num_tokens: Dist,
}

/// Reads a config as vLLM's `parse_input_json_file` does; errors name `file` and the field path
/// (after `prefix`). Keys the tool ignores are ignored here too.
pub fn parse_config(
    map: &Map<String, Value>,
    file: &str,
    prefix: &str,
) -> std::result::Result<GenConfig, InputError> {
    let top = Obj {
        map,
        file,
        line: 0,
        path: prefix,
    };
    let ft = top.str("filetype")?;
    if ft != "generate_conversations" {
        return Err(top.err(
            "filetype",
            format!("only \"generate_conversations\" configs are supported, got \"{ft}\""),
        ));
    }
    let num_conversations = top.u64("num_conversations")?;
    if num_conversations == 0 {
        return Err(top.err("num_conversations", "must be larger than zero"));
    }
    // The text files give the prompts' words; kvreplay models text as content ids and does not
    // read them (nor needs them to exist).
    if let Some(v) = top.get("text_files") {
        match v.as_array() {
            Some(a) if !a.is_empty() && a.iter().all(|x| x.is_string()) => {}
            _ => {
                return Err(top.err(
                    "text_files",
                    format!("expected a non-empty list of file names, found {}", show(v)),
                ));
            }
        }
    }
    top.opt_bool("print_stats")?;
    let pi_path = format!("{prefix}prompt_input.");
    let pi = top.object("prompt_input", &pi_path)?;
    let po_path = format!("{prefix}prompt_output.");
    let po = top.object("prompt_output", &po_path)?;
    Ok(GenConfig {
        num_conversations,
        num_turns: dist(&pi, "num_turns")?,
        num_tokens: dist(&pi, "num_tokens")?,
        common_prefix_num_tokens: match pi.get("common_prefix_num_tokens") {
            None => Dist::Constant(0),
            Some(_) => dist(&pi, "common_prefix_num_tokens")?,
        },
        prefix_num_tokens: dist(&pi, "prefix_num_tokens")?,
        output_num_tokens: dist(&po, "num_tokens")?,
    })
}

/// Generates the multi-turn workload; a `config` path is read as given.
pub fn generate(p: &Params, seed: u64) -> Result<Trace> {
    generate_in(p, seed, "<inline config>", "config.", None)
}

/// As [`generate`]; an inline config's errors name `file` and fields after `prefix`, and a
/// relative config path is read from `dir` when given (a study's folder).
pub fn generate_in(
    p: &Params,
    seed: u64,
    file: &str,
    prefix: &str,
    dir: Option<&Path>,
) -> Result<Trace> {
    match &p.config {
        ConfigSource::Inline(map) => generate_with(p, map, file, prefix, seed),
        ConfigSource::Path(path) => {
            if path.is_empty() {
                return Err(bad("config", "no generator config given"));
            }
            let full = match dir {
                Some(d) if Path::new(path).is_relative() => d.join(path),
                _ => Path::new(path).to_path_buf(),
            };
            let name = full.display().to_string();
            let text = std::fs::read_to_string(&full).map_err(|e| Error::io(&name, e))?;
            let map = config_from_text(&text, &name)?;
            generate_with(p, &map, &name, "", seed)
        }
    }
}

/// A config file's text as the JSON object [`parse_config`] reads; `name` names it in errors.
pub fn config_from_text(text: &str, name: &str) -> Result<Map<String, Value>> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(InputError::new(
            name,
            0,
            "",
            format!("expected a JSON object, found {}", kind(&other)),
        )
        .into()),
        Err(e) => Err(InputError::new(name, 0, "", format!("not valid JSON: {e}")).into()),
    }
}

/// Lengths of one conversation's user messages (unique part) and answers.
struct Conversation {
    users: Vec<u64>,
    answers: Vec<u64>,
}

fn generate_with(
    p: &Params,
    map: &Map<String, Value>,
    file: &str,
    prefix: &str,
    seed: u64,
) -> Result<Trace> {
    if p.num_clients == 0 {
        return Err(bad("num_clients", "must be at least 1"));
    }
    if !(p.request_rate.is_finite() && p.request_rate >= 0.0) {
        return Err(bad(
            "request_rate",
            format!("must be 0 or above, got {}", p.request_rate),
        ));
    }
    if p.request_rate > 0.0 && p.request_rate < 1e-6 {
        return Err(bad(
            "request_rate",
            format!(
                "{} gives think times of weeks; use 0 for none",
                p.request_rate
            ),
        ));
    }
    let cfg = parse_config(map, file, prefix)?;
    let field = |f: &str| format!("{prefix}{f}");
    let n = cfg.num_conversations;
    if n < p.num_clients as u64 {
        return Err(bad(
            "num_clients",
            format!(
                "{} clients need at least as many conversations, the config has {n}",
                p.num_clients
            ),
        ));
    }
    let active = p.max_active_conversations.unwrap_or(p.num_clients);
    if active as u64 > n {
        return Err(bad(
            "max_active_conversations",
            format!("{active} is more than the config's {n} conversations"),
        ));
    }
    if active / p.num_clients < 1 {
        return Err(bad(
            "max_active_conversations",
            format!("{active} must be at least num_clients ({})", p.num_clients),
        ));
    }
    check_requests(n, &field("num_conversations"))?;

    let mut rng = Rng::stream(seed, "multi_turn.conversations");
    // User turns per conversation: messages raised to 2, rounded up to even, halved.
    let turns: Vec<u64> = cfg
        .num_turns
        .sample(&mut rng, n as usize)
        .into_iter()
        .map(|m| {
            let m = m.max(2) as u64;
            m.div_ceil(2)
        })
        .collect();
    let total: u64 = turns.iter().fold(0u64, |a, &k| a.saturating_add(k));
    check_requests(total, &field("prompt_input.num_turns"))?;
    // A prompt of user turn k has at most 2k + 2 runs.
    let runs: u64 = turns
        .iter()
        .fold(0u64, |a, &k| a.saturating_add(k.saturating_mul(k + 1)));
    let max = max_runs();
    if runs > max {
        return Err(Error::Config(format!(
            "{}: conversations this long need {runs} prompt runs; kvreplay builds at most {max}",
            field("prompt_input.num_turns")
        )));
    }
    let conv_prefix = cfg.prefix_num_tokens.sample(&mut rng, n as usize);
    let common = cfg.common_prefix_num_tokens.sample(&mut rng, 1)[0];
    // decode(T[:P-2]) + ".": P-1 tokens.
    let common_len: u64 = if common > 0 {
        (common as u64 - 1).max(1)
    } else {
        0
    };
    let too_long = |f: &str, v: u128| -> Error {
        InputError::new(
            file,
            0,
            field(f),
            format!("drew a message of {v} tokens, more than a prompt can hold (4294967295)"),
        )
        .into()
    };
    if common_len > u32::MAX as u64 {
        return Err(too_long(
            "prompt_input.common_prefix_num_tokens",
            common_len as u128,
        ));
    }

    let mut convs = Vec::with_capacity(n as usize);
    for c in 0..n as usize {
        let messages = (turns[c] * 2) as usize;
        let inp: Vec<i64> = cfg
            .num_tokens
            .sample(&mut rng, messages)
            .into_iter()
            .map(|v| v.max(BASE_PROMPT_TOKENS as i64))
            .collect();
        let out: Vec<i64> = cfg
            .output_num_tokens
            .sample(&mut rng, messages)
            .into_iter()
            .map(|v| v.max(1))
            .collect();
        let mut users = Vec::with_capacity(turns[c] as usize);
        let mut answers = Vec::with_capacity(turns[c] as usize);
        for t in (0..messages).step_by(2) {
            let fixed = NICE_NUMBER_TOKENS + BASE_PROMPT_TOKENS;
            // The budget counts the common prefix (first message only), not the own prefix.
            let counted = fixed as i128 + if t == 0 { common_len as i128 } else { 0 };
            let filler = (inp[t] as i128 - counted).max(0);
            let own = if t == 0 && conv_prefix[c] > 0 {
                PREFIX_SEPARATOR_TOKENS as i128 + conv_prefix[c] as i128
            } else {
                0
            };
            let len = fixed as i128 + own + filler;
            if len > u32::MAX as i128 {
                let f = if own > filler {
                    "prompt_input.prefix_num_tokens"
                } else {
                    "prompt_input.num_tokens"
                };
                return Err(too_long(f, len as u128));
            }
            users.push(len as u64);
            let a = out[t + 1];
            if a > u32::MAX as i64 {
                return Err(too_long("prompt_output.num_tokens", a as u128));
            }
            answers.push(a as u64);
        }
        convs.push(Conversation { users, answers });
    }

    let mut think = Rng::stream(seed, "multi_turn.think");
    let mut ids = Ids::new();
    let common_id = ids.fresh();
    let mut requests = Vec::with_capacity(total as usize);
    for (c, conv) in convs.iter().enumerate() {
        let mut history: Vec<Run> = Vec::new();
        for (k, (&user, &answer)) in conv.users.iter().zip(&conv.answers).enumerate() {
            if k == 0 && common_len > 0 {
                content::push_run(&mut history, Run::new(common_id, 0, common_len as u32));
            }
            content::push_run(&mut history, Run::new(ids.fresh(), 0, user as u32));
            let id = requests.len() as u64;
            let mut r = request(id, history.clone(), answer as u32).map_err(|_| {
                Error::from(InputError::new(
                    file,
                    0,
                    field("prompt_input.num_turns"),
                    format!("conversation {c} turn {k}: the history grows past 4294967295 tokens"),
                ))
            })?;
            r.pool = Some(0);
            r.session = Some(c as u64);
            if p.request_rate > 0.0 {
                let s = think.exponential(1.0 / p.request_rate);
                r.think_ns = (s * 1e9).round() as u64;
            }
            requests.push(r);
            content::push_run(&mut history, Run::new(output_content(id), 0, answer as u32));
        }
    }

    let pool = Pool {
        id: 0,
        clients: p.num_clients,
        sessions_per_client: (active / p.num_clients).max(1),
        early_stop: true,
    };
    let recorded = Params {
        config: ConfigSource::Inline(map.clone()),
        ..p.clone()
    };
    Ok(Trace {
        meta: meta("multi-turn", &recorded, seed, vec![pool]),
        requests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::generate::testutil::{
        assert_refused, assert_seeded, assert_serde_defaults, obj, parse_flags,
    };
    use serde_json::json;

    fn config(turns: Value, common: i64, prefix: Value, tokens: Value, out: Value) -> Value {
        json!({
            "filetype": "generate_conversations",
            "num_conversations": 3,
            "text_files": ["pg1184.txt"],
            "print_stats": false,
            "prompt_input": {
                "num_turns": turns,
                "common_prefix_num_tokens": {"distribution": "constant", "value": common},
                "prefix_num_tokens": prefix,
                "num_tokens": tokens,
            },
            "prompt_output": {"num_tokens": out},
        })
    }

    fn constant(v: i64) -> Value {
        json!({"distribution": "constant", "value": v})
    }

    fn params(cfg: Value) -> Params {
        Params {
            config: ConfigSource::Inline(obj(cfg)),
            ..Default::default()
        }
    }

    #[test]
    fn clap_and_serde_defaults() {
        let p: Params = parse_flags(&["x", "--config", "gen.json"]).unwrap();
        assert_eq!(
            p,
            Params {
                config: ConfigSource::Path("gen.json".into()),
                ..Default::default()
            }
        );
        assert!(
            parse_flags::<Params>(&["x"]).is_err(),
            "--config is required"
        );
        let p: Params = serde_json::from_str(r#"{"config": "gen.json"}"#).unwrap();
        assert_eq!(p.config, ConfigSource::Path("gen.json".into()));
        let p: Params =
            serde_json::from_str(r#"{"config": {"filetype": "x"}, "num_clients": 2}"#).unwrap();
        assert!(matches!(p.config, ConfigSource::Inline(_)));
        assert_eq!(p.max_active_conversations, None);
        assert!(serde_json::from_str::<Params>(r#"{"config": 3}"#).is_err());
        assert!(serde_json::from_str::<Params>(r#"{"clients": 3}"#).is_err());
        assert_serde_defaults::<Params>();
    }

    #[test]
    fn turn_k_extends_turn_k_minus_1_with_its_answer() {
        // 5 messages -> 6 -> 3 user turns; common prefix 100 (99 tokens); own prefix 40;
        // inputs 150, outputs 20.
        let cfg = config(constant(5), 100, constant(40), constant(150), constant(20));
        let t = generate(&params(cfg), 0).unwrap();
        t.validate("t").unwrap();
        assert_eq!(t.requests.len(), 9);
        let common = t.requests[0].prompt[0];
        assert_eq!(common.len, 99);
        for (i, r) in t.requests.iter().enumerate() {
            let (c, k) = (i / 3, i % 3);
            assert_eq!(r.session, Some(c as u64));
            assert_eq!(r.pool, Some(0));
            assert_eq!(r.output_len, 20);
            assert_eq!(
                r.prompt[0], common,
                "every prompt starts with the common prefix"
            );
            if k == 0 {
                // 150 - (99 + 7 + 11) = 33 filler; + 7 + 2 + 40 + 11.
                assert_eq!(r.prompt.len(), 2);
                assert_eq!(r.prompt[1].len, 7 + 2 + 40 + 11 + 33);
                assert_eq!(r.input_len, 99 + 93);
            } else {
                let prev = &t.requests[i - 1];
                let n = prev.prompt.len();
                assert_eq!(r.prompt[..n], prev.prompt[..]);
                assert_eq!(r.prompt[n], Run::new(output_content(prev.id), 0, 20));
                assert_eq!(r.prompt.len(), n + 2);
                assert_eq!(
                    r.prompt[n + 1].len,
                    150,
                    "later messages are their drawn length"
                );
                assert_eq!(r.input_len, prev.input_len + 20 + 150);
            }
        }
        // Nothing but the common prefix is shared across conversations.
        let mut seen = std::collections::HashMap::new();
        for r in &t.requests {
            for run in &r.prompt[1..] {
                let s = r.session.unwrap();
                assert_eq!(
                    *seen.entry(run.content).or_insert(s),
                    s,
                    "content shared across conversations"
                );
            }
        }
        assert_eq!(
            t.meta.pools,
            vec![Pool {
                id: 0,
                clients: 1,
                sessions_per_client: 1,
                early_stop: true
            }]
        );
        assert!(t.requests.iter().all(|r| r.think_ns == 0));
    }

    #[test]
    fn small_messages_and_no_prefixes() {
        // Input 3 is raised to 11 (base prompt); the message still holds its fixed text (18);
        // output 0 becomes 1; 1 message becomes 2 (one user turn); no common prefix by default.
        let mut cfg = config(constant(1), 0, constant(0), constant(3), constant(0));
        cfg["prompt_input"]
            .as_object_mut()
            .unwrap()
            .remove("common_prefix_num_tokens");
        let t = generate(&params(cfg), 0).unwrap();
        t.validate("t").unwrap();
        assert_eq!(t.requests.len(), 3);
        for r in &t.requests {
            assert_eq!((r.input_len, r.output_len, r.prompt.len()), (18, 1, 1));
        }
        // A common prefix of 1 is the "." alone.
        let cfg = config(constant(2), 1, constant(-5), constant(20), constant(1));
        let t = generate(&params(cfg), 0).unwrap();
        assert_eq!(t.requests[0].prompt[0].len, 1);
        assert_eq!(t.requests[0].input_len, 1 + 18 + 1);
    }

    #[test]
    fn turn_counts_round_up_to_even() {
        let cfg = config(
            json!({"distribution": "uniform", "min": 1, "max": 9}),
            0,
            constant(0),
            constant(20),
            constant(1),
        );
        let mut cfg = cfg;
        cfg["num_conversations"] = json!(400);
        let t = generate(&params(cfg), 4).unwrap();
        t.validate("t").unwrap();
        let mut per = std::collections::BTreeMap::<u64, u64>::new();
        for r in &t.requests {
            *per.entry(r.session.unwrap()).or_default() += 1;
        }
        // Messages 1..9 -> 2,2,4,4,6,6,8,8,10 -> user turns 1..=5, each seen.
        let counts: std::collections::BTreeSet<u64> = per.values().copied().collect();
        assert_eq!(counts, (1..=5).collect());
        assert_eq!(per.len(), 400);
    }

    #[test]
    fn lognormal_average_rescales_the_batch_before_the_clamp() {
        let lognormal = |max| Dist::Lognormal {
            mu: (1000.0f64 * 0.85).ln(),
            sigma: (2.0 * (1000.0f64 / (1000.0 * 0.85)).ln()).sqrt(),
            average: Some(1000.0),
            max,
        };
        let d = lognormal(0);
        let mut rng = Rng::new(1);
        let x = d.sample(&mut rng, 64);
        let mean = x.iter().sum::<i64>() as f64 / 64.0;
        assert!((mean - 1000.0).abs() <= 0.5, "{mean}");
        // With a clamp, values are rescaled first, then clamped: the batch mean falls below.
        let clamped = lognormal(1100);
        let y = clamped.sample(&mut Rng::new(1), 64);
        assert!(y.iter().all(|&v| v <= 1100));
        for (a, b) in x.iter().zip(&y) {
            assert_eq!(*b, (*a).min(1100));
        }
        // One sample of an `average` lognormal is exactly the average.
        assert_eq!(d.sample(&mut Rng::new(9), 1), vec![1000]);
        // Parsed from the config keys: sigma = sqrt(-2 ln 0.85).
        let m = obj(json!({"d": {"distribution": "lognormal", "average": 1000}}));
        let o = Obj::new(&m, "f", 0);
        assert_eq!(dist(&o, "d").unwrap(), d);
        // Half to even rounding.
        assert_eq!(2.5f64.round_ties_even(), 2.0);
    }

    #[test]
    fn distributions_sample_as_documented() {
        let mut rng = Rng::new(3);
        let u = Dist::Uniform { min: 3, max: 5 }.sample(&mut rng, 1000);
        assert_eq!(
            u.iter().copied().collect::<std::collections::BTreeSet<_>>(),
            (3..=5).collect()
        );
        let z = Dist::Zipf { alpha: 1.5, max: 4 }.sample(&mut rng, 1000);
        assert!(z.iter().all(|&v| (1..=4).contains(&v)) && z.contains(&4));
        let p = Dist::Poisson { alpha: 2.0, max: 0 }.sample(&mut rng, 1000);
        assert!(p.contains(&0) && p.iter().all(|&v| v >= 0));
        assert_eq!(
            Dist::Zipf {
                alpha: 1e300,
                max: 0
            }
            .sample(&mut rng, 2),
            vec![1, 1]
        );
        let l = Dist::Lognormal {
            mu: 1.0,
            sigma: 0.0,
            average: None,
            max: 0,
        }
        .sample(&mut rng, 2);
        assert_eq!(l, vec![3, 3]); // e = 2.718 -> 3
        assert!(
            Dist::Lognormal {
                mu: 1.0,
                sigma: 0.5,
                average: Some(5.0),
                max: 0
            }
            .sample(&mut rng, 0)
            .is_empty()
        );
    }

    #[test]
    fn think_time_and_pool() {
        let mut cfg = config(constant(4), 0, constant(0), constant(50), constant(5));
        cfg["num_conversations"] = json!(6);
        let p = Params {
            num_clients: 2,
            max_active_conversations: Some(5),
            request_rate: 2.0,
            ..params(cfg)
        };
        let t = generate(&p, 1).unwrap();
        t.validate("t").unwrap();
        assert_eq!(
            t.meta.pools,
            vec![Pool {
                id: 0,
                clients: 2,
                sessions_per_client: 2,
                early_stop: true
            }]
        );
        let mean =
            t.requests.iter().map(|r| r.think_ns as f64).sum::<f64>() / t.requests.len() as f64;
        assert!(t.requests.iter().all(|r| r.think_ns > 0));
        assert!(mean > 0.1e9 && mean < 1.5e9, "{mean}");
        assert_eq!(t.meta.params["num_clients"], json!(2));
        assert!(
            t.meta.params["config"].is_object(),
            "the config is recorded inline"
        );
    }

    #[test]
    fn deterministic_per_seed() {
        let cfg = config(
            json!({"distribution": "uniform", "min": 2, "max": 12}),
            10,
            json!({"distribution": "lognormal", "average": 300}),
            json!({"distribution": "uniform", "min": 20, "max": 200}),
            json!({"distribution": "poisson", "alpha": 30}),
        );
        let p = params(cfg);
        assert_seeded(generate, &p, 5, 6);
    }

    #[test]
    fn config_errors_name_the_field_path() {
        let good = config(constant(2), 0, constant(0), constant(20), constant(1));
        let cases: Vec<(&str, Value, &str)> = vec![
            (
                "/prompt_input/num_turns/distribution",
                json!("foo"),
                "gen.json: prompt_input.num_turns.distribution: unknown distribution \"foo\"",
            ),
            (
                "/prompt_input/num_tokens",
                json!({"distribution": "uniform", "min": 0, "max": 3}),
                "gen.json: prompt_input.num_tokens.min: must be above 0",
            ),
            (
                "/prompt_input/num_tokens",
                json!({"distribution": "uniform", "min": 5, "max": 3}),
                "gen.json: prompt_input.num_tokens.max: must be at least min",
            ),
            (
                "/prompt_input/num_tokens",
                json!({"distribution": "uniform", "min": 1.5, "max": 3}),
                "gen.json: prompt_input.num_tokens.min: expected an integer",
            ),
            (
                "/prompt_input/prefix_num_tokens",
                json!({"distribution": "lognormal", "average": 0.5}),
                "gen.json: prompt_input.prefix_num_tokens.average: must be at least 1",
            ),
            (
                "/prompt_input/prefix_num_tokens",
                json!({"distribution": "lognormal", "average": 9, "mean": 2}),
                "gen.json: prompt_input.prefix_num_tokens.mean: cannot be given",
            ),
            (
                "/prompt_input/prefix_num_tokens",
                json!({"distribution": "lognormal", "average": 9, "median_ratio": 1}),
                "gen.json: prompt_input.prefix_num_tokens.median_ratio: must be in (0, 1)",
            ),
            (
                "/prompt_input/prefix_num_tokens",
                json!({"distribution": "lognormal", "mean": 2}),
                "gen.json: prompt_input.prefix_num_tokens.sigma: missing",
            ),
            (
                "/prompt_input/prefix_num_tokens",
                json!({"distribution": "lognormal", "mean": 0, "sigma": 1}),
                "gen.json: prompt_input.prefix_num_tokens.mean: must be above 0",
            ),
            (
                "/prompt_input/prefix_num_tokens",
                json!({"distribution": "zipf", "alpha": 1}),
                "gen.json: prompt_input.prefix_num_tokens.alpha: must be at least 1.001",
            ),
            (
                "/prompt_input/prefix_num_tokens",
                json!({"distribution": "poisson"}),
                "gen.json: prompt_input.prefix_num_tokens.alpha: missing",
            ),
            (
                "/prompt_input/prefix_num_tokens",
                json!({"value": 3}),
                "gen.json: prompt_input.prefix_num_tokens.distribution: missing",
            ),
            (
                "/prompt_output/num_tokens",
                json!({"distribution": "constant"}),
                "gen.json: prompt_output.num_tokens.value: missing",
            ),
            (
                "/prompt_output",
                json!([]),
                "gen.json: prompt_output: expected an object",
            ),
            (
                "/filetype",
                json!("sharegpt"),
                "gen.json: filetype: only \"generate_conversations\"",
            ),
            (
                "/num_conversations",
                json!(0),
                "gen.json: num_conversations: must be larger than zero",
            ),
            (
                "/text_files",
                json!([]),
                "gen.json: text_files: expected a non-empty list",
            ),
            (
                "/print_stats",
                json!("yes"),
                "gen.json: print_stats: expected true or false",
            ),
        ];
        for (ptr, v, want) in cases {
            let mut c = good.clone();
            *c.pointer_mut(ptr).unwrap() = v;
            let e = parse_config(c.as_object().unwrap(), "gen.json", "")
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(want), "{ptr}: {e}");
        }
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove("prompt_input");
        let e = parse_config(c.as_object().unwrap(), "gen.json", "")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "gen.json: prompt_input: missing");
        // Inline configs name the study file and the path inside the workload.
        let mut c = good.clone();
        c["prompt_input"]["num_turns"]["distribution"] = json!("foo");
        let e = generate_in(&params(c), 0, "study.json", "workload.config.", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "study.json: workload.config.prompt_input.num_turns.distribution: unknown"
            ),
            "{e}"
        );
        // Absent text files (and no text_files key) are fine.
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove("text_files");
        generate(&params(c), 0).unwrap();
    }

    #[test]
    fn bad_params_are_named() {
        let good = config(constant(2), 0, constant(0), constant(20), constant(1));
        let cases = [
            (
                Params {
                    num_clients: 0,
                    ..params(good.clone())
                },
                "num_clients (--num-clients)",
            ),
            (
                Params {
                    num_clients: 4,
                    ..params(good.clone())
                },
                "--num-clients",
            ),
            (
                Params {
                    max_active_conversations: Some(4),
                    ..params(good.clone())
                },
                "--max-active-conversations",
            ),
            (
                Params {
                    num_clients: 2,
                    max_active_conversations: Some(1),
                    ..params(good.clone())
                },
                "--max-active-conversations",
            ),
            (
                Params {
                    request_rate: -1.0,
                    ..params(good.clone())
                },
                "--request-rate",
            ),
            (
                Params {
                    request_rate: f64::NAN,
                    ..params(good.clone())
                },
                "--request-rate",
            ),
            (Params::default(), "config (--config): no generator config"),
            (
                Params {
                    config: ConfigSource::Path("/nonexistent/gen.json".into()),
                    ..Default::default()
                },
                "/nonexistent/gen.json",
            ),
        ];
        assert_refused(generate, cases);
        // Huge draws are refused with the field, never a panic or an allocation storm.
        let huge = [
            (
                config(
                    json!({"distribution": "zipf", "alpha": 1.01}),
                    0,
                    constant(0),
                    constant(20),
                    constant(1),
                ),
                "num_turns",
            ),
            (
                config(
                    constant(i64::MAX),
                    0,
                    constant(0),
                    constant(20),
                    constant(1),
                ),
                "num_turns",
            ),
            (
                config(constant(100_000), 0, constant(0), constant(20), constant(1)),
                "num_turns",
            ),
            (
                config(
                    constant(2),
                    0,
                    constant(i64::MAX),
                    constant(20),
                    constant(1),
                ),
                "prefix_num_tokens",
            ),
            (
                config(
                    constant(2),
                    i64::MAX,
                    constant(0),
                    constant(20),
                    constant(1),
                ),
                "common_prefix_num_tokens",
            ),
            (
                config(constant(2), 0, constant(0), constant(i64::MAX), constant(1)),
                "num_tokens",
            ),
            (
                config(
                    constant(2),
                    0,
                    constant(0),
                    constant(20),
                    constant(i64::MAX),
                ),
                "prompt_output.num_tokens",
            ),
            (
                config(
                    constant(1000),
                    0,
                    constant(0),
                    constant(20_000_000),
                    constant(1),
                ),
                "num_turns",
            ),
            (
                config(
                    constant(2),
                    0,
                    json!({"distribution": "lognormal", "mean": 700, "sigma": 1}),
                    constant(20),
                    constant(1),
                ),
                "prefix_num_tokens",
            ),
        ];
        assert_refused(generate, huge.map(|(c, want)| (params(c), want)));
    }

    #[test]
    fn repo_example_config_generates() {
        let Some(path) =
            crate::trace::import::testutil::shared_trace("vllm_generate_multi_turn.json")
        else {
            return;
        };
        let p = Params {
            config: ConfigSource::Path(path.display().to_string()),
            num_clients: 4,
            ..Default::default()
        };
        let t = generate(&p, 0).unwrap();
        t.validate("t").unwrap();
        let sessions: std::collections::BTreeSet<u64> =
            t.requests.iter().filter_map(|r| r.session).collect();
        assert_eq!(sessions.len(), 24);
        // 12..18 messages: 6..9 user turns each.
        assert!(t.requests.len() >= 24 * 6 && t.requests.len() <= 24 * 9);
        // Constant common prefix 500 -> 499 shared tokens at the start of every prompt.
        let first = t.requests[0].prompt[0];
        assert_eq!(first.len, 499);
        assert!(t.requests.iter().all(|r| r.prompt[0] == first));
        assert!(
            t.requests
                .iter()
                .all(|r| r.output_len >= 80 && r.output_len <= 120)
        );
    }
}
