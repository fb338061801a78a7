//! Request logs of OpenAI chat-completions or completions requests (as API gateways and vLLM's
//! request logging write them), JSONL, tokenized with the model's own tokenizer and chat
//! template ([`TextTokenizer`]).
//!
//! Per line, a JSON object; the request body is the object under `request` or `body` when one
//! of those is an object, else the line itself. Names accepted (the first present wins):
//! - time: `timestamp`, `created`, `time` (on the line, else in the body): seconds (a number,
//!   from any origin, e.g. the Unix epoch) or an RFC 3339 string (`2025-01-02T03:04:05.6Z`);
//!   arrivals are rebased so that the earliest request arrives at 0.
//! - prompt: `messages` (chat: `{role, content}` with roles system, developer (as system), user,
//!   assistant, tool; content a string or a list of `{type: "text", text}` parts joined by
//!   newlines; an assistant message's null content is empty; the message's other fields, such
//!   as `tool_calls` and `tool_call_id`, and the body's `tools` go to the template too),
//!   rendered with the chat template and `add_generation_prompt=true` and encoded without
//!   adding special tokens; or `prompt`
//!   (completions: a string, or a list of one string, encoded with the tokenizer's special
//!   tokens; or a list of token ids, taken as they are).
//! - output length: the logged response's `response.usage.completion_tokens` (or a top-level
//!   `usage.completion_tokens`), else the body's `max_completion_tokens`, else `max_tokens`; a
//!   line with none of them is an error.
//! - session: `session_id`, `metadata.session_id`, `user` (on the line, else in the body), a
//!   string or an integer; requests with one id are one session, sessions numbered in order of
//!   first arrival.
//! - answer (optional): the response's first choice, `response.choices[0].message.content` or
//!   `.text`. When a session's request holds the session's previous prompt and then exactly
//!   that prompt's answer tokens (at most its output length), those tokens get the previous
//!   request's output content, so a cache that kept the generated answer can match it.
//!
//! Token sequences become content runs through a [`PrefixTree`] over every prompt, so shared
//! prefixes are shared content exactly.

use super::chat_template::{Message, Role};
use super::text_tokenizer::TextTokenizer;
use super::token_ids::PrefixTree;
use super::{ImportOptions, ImportReport, Tally, sort_by_arrival};
use crate::error::{InputError, Result};
use crate::trace::{Request, Trace, TraceMeta, output_content};
use crate::util::json::{Obj, kind, show};
use serde_json::Value;
use std::collections::HashMap;
use std::io::BufRead;

/// Imports an OpenAI request log read from `input`, tokenized by `tok`.
pub fn import(
    input: &mut dyn BufRead,
    name: &str,
    opts: &ImportOptions,
    tok: &TextTokenizer,
) -> Result<(Trace, ImportReport)> {
    let mut tally = Tally::new(opts);
    let mut records = Vec::new();
    // Rendering and tokenizing dominate: lines are parsed on every core.
    super::jsonl_records_par(
        input,
        name,
        &mut tally,
        |o, id| parse(o, tok).map(|r| (id, r)),
        |r| records.push(r),
    )?;
    // In arrival order (file order among equal times): a session's turns one after another.
    records.sort_by_key(|(id, r)| (r.time_ns, *id));
    let t0 = records.first().map_or(0, |(_, r)| r.time_ns);
    let mut tree = PrefixTree::new();
    let mut sessions: HashMap<String, u64> = HashMap::new();
    // Per session, its latest request and that request's id.
    let mut last: HashMap<u64, (u64, Record)> = HashMap::new();
    let mut requests = Vec::new();
    for (id, mut rec) in records {
        // Both times lie in [0, 1.8e19) ns (checked when parsed): the difference fits.
        let arrival_ns = (rec.time_ns - t0) as u64;
        let session = rec.session.take().map(|s| {
            let n = sessions.len() as u64;
            *sessions.entry(s).or_insert(n)
        });
        let answer = session
            .and_then(|s| last.get(&s))
            .and_then(|(prev_id, prev)| {
                let (p, a) = (&prev.tokens, prev.answer.as_ref()?);
                let here = rec.tokens.get(p.len()..p.len() + a.len())?;
                (a.len() <= prev.output_len as usize
                    && rec.tokens.starts_with(p)
                    && here == a.as_slice())
                .then(|| (p.len(), a.len() as u32, output_content(*prev_id)))
            });
        let prompt = tree.insert_with(&rec.tokens, answer);
        let mut r = Request::new(id, arrival_ns, prompt, rec.output_len);
        r.session = session;
        if let Some(s) = session {
            last.insert(s, (id, rec));
        }
        requests.push(r);
    }
    sort_by_arrival(&mut requests);
    Ok((
        Trace {
            meta: TraceMeta::new("import:openai"),
            requests,
        },
        tally.report,
    ))
}

/// One request as read: its time (ns from the log's origin), prompt tokens, output length,
/// session and the logged answer's tokens.
struct Record {
    time_ns: i128,
    tokens: Vec<u32>,
    answer: Option<Vec<u32>>,
    output_len: u32,
    session: Option<String>,
}

/// Times accepted, in ns: up to 1.8e10 s from the origin (year 2540 from the Unix epoch).
const MAX_TIME_NS: i128 = 18_000_000_000_000_000_000;

fn parse(o: &Obj, tok: &TextTokenizer) -> std::result::Result<Record, InputError> {
    let body = match (o.get("request"), o.get("body")) {
        (Some(Value::Object(_)), _) => o.object("request", "request.")?,
        (_, Some(Value::Object(_))) => o.object("body", "body.")?,
        _ => *o,
    };
    let time_ns = time(o, &body)?;
    let tokens = prompt(&body, tok)?;
    let output_len = output_len(o, &body)?;
    let session = session(o)?.map_or_else(|| session(&body), |s| Ok(Some(s)))?;
    let answer = answer_text(o)
        .map(|t| tok.answer(t).map_err(|e| o.err("response", e)))
        .transpose()?;
    Ok(Record {
        time_ns,
        tokens,
        answer,
        output_len,
        session,
    })
}

/// The first of `keys` present on `o`, else on `body`: the object it is on, the key, the value.
fn find<'a>(
    o: &Obj<'a>,
    body: &Obj<'a>,
    keys: &[&'static str],
) -> Option<(Obj<'a>, &'static str, &'a Value)> {
    [*o, *body]
        .into_iter()
        .find_map(|x| keys.iter().find_map(|k| x.get(k).map(|v| (x, *k, v))))
}

fn time(o: &Obj, body: &Obj) -> std::result::Result<i128, InputError> {
    let Some((at, key, v)) = find(o, body, &["timestamp", "created", "time"]) else {
        return Err(o.err("timestamp", "missing (also accepted: created, time)"));
    };
    let ns = match v {
        Value::String(s) => crate::util::time::parse_datetime_ns(s).map_err(|e| at.err(key, e))?,
        v => match v.as_f64() {
            Some(s) if (0.0..1.8e10).contains(&s) => (s * 1e9).round() as i128,
            _ => {
                return Err(at.err(
                    key,
                    format!("expected seconds or an RFC 3339 time, found {}", show(v)),
                ));
            }
        },
    };
    if !(0..MAX_TIME_NS).contains(&ns) {
        return Err(at.err(key, "not a time between 1970 and 2540"));
    }
    Ok(ns)
}

fn prompt(body: &Obj, tok: &TextTokenizer) -> std::result::Result<Vec<u32>, InputError> {
    let (key, tokens) = if body.get("messages").is_some() {
        let messages = messages(body)?;
        // Function definitions the template renders into the prompt (absent or null: none).
        let tools = body.get("tools").filter(|t| !t.is_null());
        (
            "messages",
            tok.chat_with_tools(&messages, tools)
                .map_err(|e| body.err("messages", e))?,
        )
    } else {
        let key = "prompt";
        let tokens = match body.req(key)? {
            Value::String(s) => tok.completion(s).map_err(|e| body.err(key, e))?,
            Value::Array(a) => match a.as_slice() {
                [Value::String(s)] => tok.completion(s).map_err(|e| body.err(key, e))?,
                [Value::String(_), ..] | [Value::Array(_), ..] => {
                    return Err(body.err(
                        key,
                        format!(
                            "a batch of {} prompts: one request per line expected",
                            a.len()
                        ),
                    ));
                }
                _ => body
                    .u64_array(key)?
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| {
                        u32::try_from(v).map_err(|_| {
                            body.err(key, format!("element {i}: {v} is not a token id"))
                        })
                    })
                    .collect::<std::result::Result<_, _>>()?,
            },
            other => {
                return Err(body.err(
                    key,
                    format!("expected a string or token ids, found {}", kind(other)),
                ));
            }
        };
        (key, tokens)
    };
    if tokens.is_empty() {
        return Err(body.err(key, "empty prompt: no tokens"));
    }
    if tokens.len() > u32::MAX as usize {
        return Err(body.err(key, "more tokens than a prompt can hold"));
    }
    Ok(tokens)
}

/// A chat request's messages.
fn messages(body: &Obj) -> std::result::Result<Vec<Message>, InputError> {
    let list = body.array("messages")?;
    if list.is_empty() {
        return Err(body.err("messages", "no messages"));
    }
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let Value::Object(m) = m else {
                return Err(body.err(
                    &format!("messages[{i}]"),
                    format!("expected an object, found {}", kind(m)),
                ));
            };
            let field = |f: &str| format!("messages[{i}].{f}");
            let role = match m.get("role") {
                Some(Value::String(r)) => Role::from_openai(r).ok_or_else(|| {
                    body.err(
                        &field("role"),
                        format!(
                            "unknown role {r:?} (known: system, developer, user, assistant, tool)"
                        ),
                    )
                })?,
                None | Some(Value::Null) => return Err(body.err(&field("role"), "missing")),
                Some(v) => {
                    return Err(body.err(
                        &field("role"),
                        format!("expected a string, found {}", kind(v)),
                    ));
                }
            };
            let content = match m.get("content") {
                Some(Value::String(s)) => s.clone(),
                None | Some(Value::Null) if role == Role::Assistant => String::new(),
                None | Some(Value::Null) => return Err(body.err(&field("content"), "missing")),
                Some(Value::Array(parts)) => text_parts(parts)
                    .map_err(|(j, e)| body.err(&format!("messages[{i}].content[{j}]"), e))?,
                Some(v) => {
                    return Err(body.err(
                        &field("content"),
                        format!("expected a string or a list of parts, found {}", kind(v)),
                    ));
                }
            };
            let extra = m
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "role" | "content"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Ok(Message {
                role,
                content,
                extra,
            })
        })
        .collect()
}

/// A content list's text parts joined by newlines (vLLM's "string" content format); a part
/// that is not text is an error with its index.
fn text_parts(parts: &[Value]) -> std::result::Result<String, (usize, String)> {
    let mut texts = Vec::with_capacity(parts.len());
    for (j, p) in parts.iter().enumerate() {
        match (p.get("type").and_then(Value::as_str), p.get("text")) {
            (Some("text"), Some(Value::String(t))) => texts.push(t.as_str()),
            (Some(t), _) if t != "text" => {
                return Err((j, format!("a {t:?} part: only text parts can be tokenized")));
            }
            _ => {
                return Err((
                    j,
                    format!("expected {{type: \"text\", text}}, found {}", show(p)),
                ));
            }
        }
    }
    Ok(texts.join("\n"))
}

fn output_len(o: &Obj, body: &Obj) -> std::result::Result<u32, InputError> {
    let usage = match o.get("response") {
        Some(Value::Object(_)) => {
            let r = o.object("response", "response.")?;
            match r.get("usage") {
                Some(Value::Object(_)) => Some(r.object("usage", "response.usage.")?),
                _ => None,
            }
        }
        _ => match o.get("usage") {
            Some(Value::Object(_)) => Some(o.object("usage", "usage.")?),
            _ => None,
        },
    };
    let (at, key) = match usage {
        Some(u) if u.get("completion_tokens").is_some() => (u, "completion_tokens"),
        _ => match ["max_completion_tokens", "max_tokens"]
            .into_iter()
            .find(|k| body.get(k).is_some())
        {
            Some(k) => (*body, k),
            None => {
                return Err(body.err(
                    "max_tokens",
                    "missing: no response.usage.completion_tokens, max_completion_tokens \
                     or max_tokens gives the output length",
                ));
            }
        },
    };
    let n = at.u32(key)?;
    if n == 0 {
        return Err(at.err(key, "must be at least 1"));
    }
    Ok(n)
}

/// The logged answer's text, when the line has one: the response's first choice's
/// `message.content` (chat) or `text` (completions).
fn answer_text<'a>(o: &Obj<'a>) -> Option<&'a str> {
    let choice = o.get("response")?.get("choices")?.get(0)?;
    choice
        .get("message")
        .and_then(|m| m.get("content"))
        .or_else(|| choice.get("text"))?
        .as_str()
}

/// The session id on `o`: `session_id`, `metadata.session_id` or `user`.
fn session(o: &Obj) -> std::result::Result<Option<String>, InputError> {
    let meta = match o.get("metadata") {
        Some(Value::Object(_)) => Some(o.object("metadata", "metadata.")?),
        _ => None,
    };
    let found = [
        (Some(*o), "session_id"),
        (meta, "session_id"),
        (Some(*o), "user"),
    ]
    .into_iter()
    .find_map(|(at, k)| at.and_then(|at| at.get(k).map(|v| (at, k, v))));
    match found {
        None => Ok(None),
        Some((_, _, Value::String(s))) => Ok(Some(s.clone())),
        Some((_, _, v)) if v.is_u64() => Ok(Some(v.to_string())),
        Some((at, k, v)) => Err(at.err(
            k,
            format!("expected a string or an integer, found {}", show(v)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::import::testutil::temp_file;
    use crate::trace::import::text_tokenizer::tiny;
    use crate::trace::import::{Format, import};
    use serde_json::json;
    use std::path::Path;
    use std::sync::Arc;

    /// A tokenizer over `words`, saved to a folder and loaded back as `--tokenizer` does.
    fn load(words: &[&str]) -> Arc<TextTokenizer> {
        let dir = temp_file("x", "").with_file_name("model");
        tiny::save(&dir, words).unwrap();
        Arc::new(TextTokenizer::load(&dir).unwrap())
    }

    fn import_log(
        p: &Path,
        tok: &Arc<TextTokenizer>,
        strict: bool,
    ) -> Result<(Trace, ImportReport)> {
        let opts = ImportOptions {
            strict,
            tokenizer: Some(tok.clone()),
            ..Default::default()
        };
        import(Format::Openai, p, &opts)
    }

    fn chat(system: &str, user: &str) -> Value {
        json!([{"role": "system", "content": system}, {"role": "user", "content": user}])
    }

    #[test]
    fn token_counts_are_the_tokenizers_encoding_of_the_rendered_template() {
        let tok = load(&["be", "brief", "hello", "world"]);
        let text = [
            json!({"timestamp": 10.0, "messages": chat("be brief", "hello world"), "max_tokens": 5}),
            json!({"timestamp": 12.5, "prompt": "hello world", "max_tokens": 3}),
            json!({"timestamp": 11, "prompt": [7, 8, 9, 10], "max_tokens": 3}),
        ]
        .map(|v| v.to_string())
        .join("\n");
        let (t, rep) = import_log(&temp_file("log.jsonl", &text), &tok, true).unwrap();
        assert_eq!((rep.read, rep.imported), (3, 3));
        // By hand: "<s> <system> be brief </system> <user> hello world </user> <assistant>" is
        // 10 words, <s> from the template only; the completion is <s> (the tokenizer's own
        // special token) + 2 words; token ids are taken as they are. Rebased to t=10 s.
        let got: Vec<(u64, u32, u32)> = t
            .requests
            .iter()
            .map(|r| (r.arrival_ns, r.input_len, r.output_len))
            .collect();
        assert_eq!(
            got,
            [(0, 10, 5), (1_000_000_000, 4, 3), (2_500_000_000, 3, 3)]
        );
        // The template's own rendering, encoded by the tokenizer itself, is those 10 tokens.
        let m = [
            Message::new(Role::System, "be brief"),
            Message::new(Role::User, "hello world"),
        ];
        let template =
            crate::trace::import::chat_template::ChatTemplate::new(tiny::TEMPLATE, "<s>", "</s>")
                .unwrap();
        let rendered = template.render(&m).unwrap();
        assert_eq!(
            rendered.split_whitespace().collect::<Vec<_>>().join(" "),
            "<s> <system> be brief </system> <user> hello world </user> <assistant>"
        );
        let own = tok.tokenizer().encode(rendered.as_str(), false).unwrap();
        assert_eq!(own.get_ids(), tok.chat(&m).unwrap().as_slice());
        assert_eq!(own.len(), 10);
    }

    #[test]
    fn a_shared_1000_token_system_prompt_hits_in_whole_blocks_and_chunks() {
        // 996 system words: with <s>, <system>, </system> and <user> the rendered prompts share
        // exactly 1,000 tokens, then differ (each user's words are its own).
        let sys: Vec<String> = (0..996).map(|i| format!("s{i}")).collect();
        let users: Vec<Vec<String>> = [(0, 300), (1, 40), (2, 700)]
            .iter()
            .map(|(u, n)| (0..*n).map(|i| format!("u{u}w{i}")).collect())
            .collect();
        let mut words: Vec<&str> = sys.iter().map(String::as_str).collect();
        words.extend(users.iter().flatten().map(String::as_str));
        let tok = load(&words);
        let system = sys.join(" ");
        let messages: Vec<Vec<Message>> = users
            .iter()
            .map(|u| {
                vec![
                    Message::new(Role::System, system.clone()),
                    Message::new(Role::User, u.join(" ")),
                ]
            })
            .collect();
        // The shared prefix, counted on the tokenizer's own encodings.
        let enc: Vec<Vec<u32>> = messages.iter().map(|m| tok.chat(m).unwrap()).collect();
        for (x, y) in [(0, 1), (0, 2), (1, 2)] {
            let common = enc[x]
                .iter()
                .zip(&enc[y])
                .take_while(|(a, b)| a == b)
                .count();
            assert_eq!(common, 1000);
        }
        let text = messages
            .iter()
            .zip([0.0, 0.5, 1.0])
            .map(|(m, ts)| {
                let m: Vec<Value> = m
                    .iter()
                    .map(|m| json!({"role": m.role.as_str(), "content": m.content}))
                    .collect();
                json!({"timestamp": ts, "messages": m, "max_tokens": 4}).to_string()
            })
            .collect::<Vec<_>>()
            .join("\n");
        let (t, _) = import_log(&temp_file("log.jsonl", &text), &tok, true).unwrap();
        let lens: Vec<u32> = t.requests.iter().map(|r| r.input_len).collect();
        // 1,000 shared + the user's words + </user> <assistant>.
        assert_eq!(lens, [1302, 1042, 1702]);
        let (gpu, cpu) = super::super::testutil::replayed_hits(&t);
        assert_eq!(gpu, [0, 992, 992]);
        assert_eq!(cpu, [0, 768, 768]);
    }

    #[test]
    fn sessions_keep_their_ids_and_the_logged_usage_wins() {
        let tok = load(&["a", "b", "c"]);
        let text = [
            json!({"timestamp": "2025-01-02T03:04:05Z", "request": {"messages": [{"role": "user", "content": "a"}], "max_tokens": 9, "session_id": "s1"}, "response": {"usage": {"completion_tokens": 4}, "choices": [{"message": {"role": "assistant", "content": "c"}}]}}),
            json!({"created": 1735787046, "body": {"messages": [{"role": "user", "content": "b"}], "max_completion_tokens": 2, "metadata": {"session_id": "s2"}}}),
            json!({"time": 1735787047.5, "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "c"}, {"role": "user", "content": "b"}], "max_tokens": 7, "user": "s1"}),
            json!({"timestamp": 1735787048, "prompt": "c", "max_tokens": 1, "session_id": 7}),
        ]
        .map(|v| v.to_string())
        .join("\n");
        let (t, _) = import_log(&temp_file("s.jsonl", &text), &tok, true).unwrap();
        let got: Vec<(u64, u64, Option<u64>, u32)> = t
            .requests
            .iter()
            .map(|r| (r.id, r.arrival_ns / 100_000_000, r.session, r.output_len))
            .collect();
        // 2025-01-02T03:04:05Z is 1735787045 s from the epoch.
        assert_eq!(
            got,
            [
                (0, 0, Some(0), 4),
                (1, 10, Some(1), 2),
                (2, 25, Some(0), 7),
                (3, 30, Some(2), 1)
            ]
        );
        // The second turn of s1 continues the first one's prompt up to its generation prompt,
        // then holds the first one's logged answer "c": its generated content.
        let first = &t.requests[0];
        assert_eq!(
            t.requests[2].prompt[first.prompt.len()],
            crate::trace::Run::new(first.output_content, 0, 1)
        );
        assert_eq!(
            first.prompt,
            crate::trace::content::canonicalize(
                t.requests[2]
                    .prompt
                    .iter()
                    .copied()
                    .scan(first.input_len, |left, r| {
                        (*left > 0).then(|| {
                            let n = r.len.min(*left);
                            *left -= n;
                            crate::trace::Run::new(r.content, r.offset, n)
                        })
                    })
                    .collect::<Vec<_>>()
            )
        );
    }

    #[test]
    fn bad_lines_name_file_line_and_field_and_counts_reconcile() {
        let tok = load(&["a", "b"]);
        let user = |c: &str| json!({"role": "user", "content": c});
        let text = [
            json!({"timestamp": 0, "messages": [user("a")], "max_tokens": 2}).to_string(),
            "not json".to_string(),
            json!({"timestamp": 1, "messages": [user("a"), {"role": "wizard", "content": "b"}], "max_tokens": 2}).to_string(),
            json!({"timestamp": 2, "messages": [{"role": "tool", "content": "b"}], "max_tokens": 2}).to_string(),
            json!({"timestamp": 3, "messages": [user("a")]}).to_string(),
            json!({"timestamp": 4, "messages": [{"role": "user"}], "max_tokens": 2}).to_string(),
            json!({"timestamp": "yesterday", "prompt": "a", "max_tokens": 2}).to_string(),
            json!({"timestamp": 5, "prompt": ["a", "b"], "max_tokens": 2}).to_string(),
            json!({"timestamp": 6, "request": {"prompt": "b", "max_tokens": 0}}).to_string(),
            json!({"timestamp": 7, "prompt": "b", "max_tokens": 1}).to_string(),
        ]
        .join("\n");
        let p = temp_file("bad.jsonl", &text);
        let (t, rep) = import_log(&p, &tok, false).unwrap();
        assert_eq!((rep.read, rep.imported, rep.skipped_total()), (10, 2, 8));
        assert_eq!(t.requests.len(), 2);
        let e = import_log(&p, &tok, true).unwrap_err().to_string();
        assert!(e.contains("bad.jsonl:2: "), "{e}");
        let all: Vec<String> = text
            .lines()
            .enumerate()
            .map(|(i, l)| {
                let one = temp_file("bad.jsonl", l);
                match import_log(&one, &tok, true) {
                    Ok(_) => String::new(),
                    Err(e) => e.to_string().replace(":1: ", &format!(":{}: ", i + 1)),
                }
            })
            .collect();
        let want = [
            "",
            "",
            "bad.jsonl:3: messages[1].role: unknown role \"wizard\" (known: system, developer, \
             user, assistant, tool)",
            "bad.jsonl:4: messages: chat template raised: unsupported role tool",
            "bad.jsonl:5: max_tokens: missing: no response.usage.completion_tokens, \
             max_completion_tokens or max_tokens gives the output length",
            "bad.jsonl:6: messages[0].content: missing",
            "bad.jsonl:7: timestamp: expected a time like",
            "bad.jsonl:8: prompt: a batch of 2 prompts: one request per line expected",
            "bad.jsonl:9: request.max_tokens: must be at least 1",
            "",
        ];
        for (got, want) in all.iter().zip(want) {
            if want.is_empty() {
                continue;
            }
            assert!(
                got.ends_with(want) || got.contains(want),
                "{want}\n in {got}"
            );
        }
        assert!(all[1].contains("bad.jsonl:2: "), "{}", all[1]);
        let shown = rep.to_string();
        assert!(
            shown.starts_with("read 10 = imported 2 + skipped 8"),
            "{shown}"
        );
    }

    #[test]
    fn text_formats_need_a_tokenizer() {
        let p = temp_file("x.jsonl", "{}");
        let e = import(Format::Openai, &p, &ImportOptions::default()).unwrap_err();
        assert!(e.to_string().contains("--tokenizer DIR"), "{e}");
    }
}
