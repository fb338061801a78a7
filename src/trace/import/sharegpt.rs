//! ShareGPT conversations (a JSON array, or JSONL, of `{id, conversations: [{from, value}]}`)
//! as multi-turn sessions, tokenized with the model's tokenizer and chat template
//! ([`TextTokenizer`]).
//!
//! Roles (`from`): `human` or `user`, `gpt` or `assistant`, `system`; any other is an error.
//! Every `gpt` message that directly follows a `human` message is one request (a turn): its
//! prompt is the chat template's rendering (with the generation prompt) of every message before
//! it, earlier answers included as text, and its output length is the token count of the reply's
//! text (encoded without special tokens; an empty reply is an error). Other messages (a human
//! message left unanswered, a second reply in a row) are context only. A conversation is one
//! record: any error in it skips the whole conversation.
//!
//! When a turn's prompt holds the previous turn's prompt and then exactly the tokens of that
//! turn's reply (as templates that render the generation prompt before the answer do), those
//! tokens are given the previous request's output content: a cache that kept the generated
//! answer can match it, as vLLM's prefix cache and LMCache do.
//!
//! ShareGPT has no times. Arrivals: the closed loop of vLLM's multi-turn benchmark. One pool of
//! [`ImportOptions::clients`] clients (default [`DEFAULT_CLIENTS`]) takes conversations in file
//! order; a client sends a conversation's turns one after another, each once the previous one
//! completed plus [`ImportOptions::think_ns`], and takes the next conversation when it finished
//! one. Every request's earliest send time is 0.

use super::chat_template::{Message, Role};
use super::text_tokenizer::TextTokenizer;
use super::token_ids::PrefixTree;
use super::{ImportOptions, ImportReport, Tally};
use crate::error::{Error, InputError, Result};
use crate::trace::{Pool, Request, Trace, TraceMeta, output_content};
use crate::util::json::{Obj, kind, show};
use serde_json::Value;
use std::io::BufRead;

/// Clients of the closed loop when the import names none.
pub const DEFAULT_CLIENTS: u32 = 10;

/// One conversation's turns: prompt tokens and the reply's tokens.
type Turns = Vec<(Vec<u32>, Vec<u32>)>;

/// Imports ShareGPT conversations read from `input`, tokenized by `tok`.
pub fn import(
    input: &mut dyn BufRead,
    name: &str,
    opts: &ImportOptions,
    tok: &TextTokenizer,
) -> Result<(Trace, ImportReport)> {
    let clients = opts.clients.unwrap_or(DEFAULT_CLIENTS);
    if clients == 0 {
        return Err(Error::Config(
            "a closed loop needs at least 1 client".into(),
        ));
    }
    let mut tally = Tally::new(opts);
    let mut conversations: Vec<Turns> = Vec::new();
    let first = input
        .fill_buf()
        .map_err(|e| Error::io(name, e))?
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .copied();
    if first == Some(b'[') {
        let doc = super::read_json_document(input, name, "")?;
        let Value::Array(records) = &doc else {
            return Err(InputError::new(name, 0, "", "expected a JSON array").into());
        };
        // Elements are numbered from 1 in place of lines, as for other JSON documents.
        for (i, v) in records.iter().enumerate() {
            let line = i as u64 + 1;
            let parsed = match v {
                Value::Object(m) => conversation(&Obj::new(m, name, line), tok),
                other => Err(InputError::new(
                    name,
                    line,
                    "",
                    format!("expected a JSON object, found {}", kind(other)),
                )),
            };
            conversations.extend(tally.record(parsed)?);
        }
    } else {
        super::jsonl_records(
            input,
            name,
            &mut tally,
            |o, _| conversation(o, tok),
            |c| conversations.push(c),
        )?;
    }
    let mut tree = PrefixTree::new();
    let mut requests = Vec::new();
    for (session, turns) in conversations.into_iter().enumerate() {
        let last = turns.len().saturating_sub(1);
        let mut prev: Option<(Vec<u32>, Vec<u32>, u64)> = None;
        for (k, (tokens, reply)) in turns.into_iter().enumerate() {
            let id = requests.len() as u64;
            let answer = prev.as_ref().and_then(|(p, a, prev_id)| {
                let here = tokens.get(p.len()..p.len() + a.len())?;
                (tokens.starts_with(p) && here == a.as_slice())
                    .then(|| (p.len(), a.len() as u32, output_content(*prev_id)))
            });
            let prompt = tree.insert_with(&tokens, answer);
            // Lengths fit: checked when the conversation was read.
            let mut r = Request::new(id, 0, prompt, reply.len() as u32);
            r.session = Some(session as u64);
            r.pool = Some(0);
            r.think_ns = if k < last { opts.think_ns } else { 0 };
            requests.push(r);
            prev = Some((tokens, reply, id));
        }
    }
    let mut meta = TraceMeta::new("import:sharegpt");
    meta.pools.push(Pool::new(0, clients));
    meta.params
        .insert("clients".into(), serde_json::json!(clients));
    meta.params
        .insert("think_ns".into(), serde_json::json!(opts.think_ns));
    Ok((Trace { meta, requests }, tally.report))
}

/// One conversation's turns.
fn conversation(o: &Obj, tok: &TextTokenizer) -> std::result::Result<Turns, InputError> {
    let key = "conversations";
    let list = o.array(key)?;
    let mut messages = Vec::with_capacity(list.len());
    let mut turns = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let at = |f: &str| format!("{key}[{i}].{f}");
        let Value::Object(m) = m else {
            return Err(o.err(
                &format!("{key}[{i}]"),
                format!("expected an object, found {}", kind(m)),
            ));
        };
        let role = match m.get("from") {
            Some(Value::String(r)) => match r.as_str() {
                "human" | "user" => Role::User,
                "gpt" | "assistant" => Role::Assistant,
                "system" => Role::System,
                _ => {
                    return Err(o.err(
                        &at("from"),
                        format!("unknown role {r:?} (known: human, user, gpt, assistant, system)"),
                    ));
                }
            },
            None | Some(Value::Null) => return Err(o.err(&at("from"), "missing")),
            Some(v) => {
                return Err(o.err(&at("from"), format!("expected a string, found {}", show(v))));
            }
        };
        let content = match m.get("value") {
            Some(Value::String(s)) => s.clone(),
            None | Some(Value::Null) => return Err(o.err(&at("value"), "missing")),
            Some(v) => {
                return Err(o.err(
                    &at("value"),
                    format!("expected a string, found {}", kind(v)),
                ));
            }
        };
        let answers = role == Role::Assistant
            && messages
                .last()
                .is_some_and(|p: &Message| p.role == Role::User);
        if answers {
            let here = format!("{key}[{i}]");
            let prompt = tok.chat(&messages).map_err(|e| o.err(&here, e))?;
            if prompt.is_empty() || prompt.len() > u32::MAX as usize {
                return Err(o.err(&here, "the prompt has no tokens"));
            }
            let reply = tok.answer(&content).map_err(|e| o.err(&at("value"), e))?;
            if reply.is_empty() {
                return Err(o.err(&at("value"), "empty reply: no tokens"));
            }
            if reply.len() > u32::MAX as usize {
                return Err(o.err(&at("value"), "reply too long"));
            }
            turns.push((prompt, reply));
        }
        messages.push(Message::new(role, content));
    }
    if turns.is_empty() {
        return Err(o.err(key, "no human message answered by a gpt message"));
    }
    Ok(turns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::import::testutil::temp_file;
    use crate::trace::import::text_tokenizer::tiny;
    use crate::trace::import::{Format, import};
    use serde_json::json;
    use std::sync::Arc;

    fn opts(clients: Option<u32>, think_ns: u64, strict: bool) -> ImportOptions {
        let dir = temp_file("x", "").with_file_name("model");
        tiny::save(
            &dir,
            &["hi", "there", "how", "are", "you", "fine", "thanks", "bye"],
        )
        .unwrap();
        ImportOptions {
            strict,
            clients,
            think_ns,
            tokenizer: Some(Arc::new(TextTokenizer::load(&dir).unwrap())),
            ..Default::default()
        }
    }

    fn conv(id: &str, turns: &[(&str, &str)]) -> Value {
        let c: Vec<Value> = turns
            .iter()
            .map(|(from, value)| json!({"from": from, "value": value}))
            .collect();
        json!({"id": id, "conversations": c})
    }

    #[test]
    fn each_answered_human_message_is_a_turn_of_its_conversations_session() {
        let a = conv(
            "a",
            &[
                ("system", "hi"),
                ("human", "how are you"),
                ("gpt", "fine thanks"),
                ("human", "bye"),
                ("gpt", "bye bye bye"),
                ("human", "hi"),
            ],
        );
        let b = conv("b", &[("user", "hi there"), ("assistant", "hi")]);
        let text = json!([a, b]).to_string();
        let o = opts(Some(3), 2_000_000_000, true);
        let (t, rep) = import(Format::Sharegpt, &temp_file("c.json", &text), &o).unwrap();
        assert_eq!((rep.read, rep.imported), (2, 2));
        // By hand, turn 1 of a: "<s> <system> hi </system> <user> how are you </user>
        // <assistant>" = 10 tokens; turn 2 adds "fine thanks </assistant> <user> bye </user>
        // <assistant>" = 7 more; b: "<s> <user> hi there </user> <assistant>" = 6. Output
        // lengths are the replies' words. The unanswered last "hi" is no request.
        type Row = (u64, u32, u32, Option<u64>, Option<u32>, u64);
        let got: Vec<Row> = t
            .requests
            .iter()
            .map(|r| {
                (
                    r.id,
                    r.input_len,
                    r.output_len,
                    r.session,
                    r.pool,
                    r.think_ns,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (0, 10, 2, Some(0), Some(0), 2_000_000_000),
                (1, 17, 3, Some(0), Some(0), 0),
                (2, 6, 1, Some(1), Some(0), 0),
            ]
        );
        assert!(t.requests.iter().all(|r| r.arrival_ns == 0));
        assert_eq!(t.meta.pools, vec![Pool::new(0, 3)]);
        // Turn 2's prompt begins with all of turn 1's: a cache can match it.
        let first = &t.requests[0].prompt;
        assert_eq!(t.requests[1].prompt[..first.len()], first[..]);
        // Then come the tokens of turn 1's reply "fine thanks": turn 1's generated answer.
        assert_eq!(
            t.requests[1].prompt[first.len()],
            crate::trace::Run::new(t.requests[0].output_content, 0, 2)
        );
        assert_eq!(t.requests[1].prompt.len(), first.len() + 2);
        // JSONL holds the same conversations; the default is 10 clients.
        let lines = format!("{a}\n\n{b}\n");
        let (u, _) = import(
            Format::Sharegpt,
            &temp_file("c.jsonl", &lines),
            &opts(None, 2_000_000_000, true),
        )
        .unwrap();
        assert_eq!(u.requests, t.requests);
        assert_eq!(u.meta.pools, vec![Pool::new(0, DEFAULT_CLIENTS)]);
    }

    #[test]
    fn bad_conversations_name_file_record_and_field_and_counts_reconcile() {
        let cases = [
            (conv("a", &[("human", "hi"), ("gpt", "fine")]), ""),
            (
                conv("b", &[("human", "hi"), ("bing", "fine")]),
                "c.json:2: conversations[1].from: unknown role \"bing\" (known: human, user, \
                 gpt, assistant, system)",
            ),
            (
                json!({"id": "c", "conversations": [{"from": "human"}]}),
                "c.json:3: conversations[0].value: missing",
            ),
            (
                conv("d", &[("human", "hi")]),
                "c.json:4: conversations: no human message answered by a gpt message",
            ),
            (
                conv("e", &[("human", "hi"), ("gpt", "  ")]),
                "c.json:5: conversations[1].value: empty reply: no tokens",
            ),
            (json!(7), "c.json:6: expected a JSON object, found a number"),
            (json!({"id": "g"}), "c.json:7: conversations: missing"),
        ];
        let text = serde_json::Value::Array(cases.iter().map(|(c, _)| c.clone()).collect());
        let p = temp_file("c.json", &text.to_string());
        let (t, rep) = import(Format::Sharegpt, &p, &opts(None, 0, false)).unwrap();
        assert_eq!((rep.read, rep.imported, rep.skipped_total()), (7, 1, 6));
        assert_eq!(t.requests.len(), 1);
        let shown = rep.to_string();
        for (_, want) in &cases[1..6] {
            assert!(shown.contains(want), "{want}\n in {shown}");
        }
        let e = import(Format::Sharegpt, &p, &opts(None, 0, true)).unwrap_err();
        assert!(e.to_string().ends_with(cases[1].1), "{e}");
    }

    #[test]
    fn a_template_that_raises_is_one_error_for_the_conversation() {
        // The tiny template refuses roles it does not know; ShareGPT's are all known, so use a
        // stricter one: the first message must be the user's.
        let dir = temp_file("x", "").with_file_name("strict");
        tiny::save(&dir, &["hi"]).unwrap();
        std::fs::write(
            dir.join("chat_template.jinja"),
            "{% if messages[0].role != 'user' %}{{ raise_exception('user first') }}{% endif %}\
             {% for m in messages %}{{ m.content }} {% endfor %}",
        )
        .unwrap();
        let o = ImportOptions {
            tokenizer: Some(Arc::new(TextTokenizer::load(&dir).unwrap())),
            ..Default::default()
        };
        let text = conv("a", &[("system", "hi"), ("human", "hi"), ("gpt", "hi")]).to_string();
        let (_, rep) = import(Format::Sharegpt, &temp_file("r.jsonl", &text), &o).unwrap();
        assert_eq!((rep.read, rep.imported), (1, 0));
        assert!(
            rep.to_string()
                .contains("r.jsonl:1: conversations[2]: chat template raised: user first"),
            "{rep}"
        );
    }
}
