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
use crate::trace::{Pool, Request, Trace, TraceMeta};
use crate::util::json::{Obj, kind, show};
use serde_json::Value;
use std::io::BufRead;

/// Clients of the closed loop when the import names none.
pub const DEFAULT_CLIENTS: u32 = 10;

/// One conversation's turns: prompt tokens and output length.
type Turns = Vec<(Vec<u32>, u32)>;

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
        for (k, (tokens, output_len)) in turns.into_iter().enumerate() {
            let mut r = Request::new(requests.len() as u64, 0, tree.insert(&tokens), output_len);
            r.session = Some(session as u64);
            r.pool = Some(0);
            r.think_ns = if k < last { opts.think_ns } else { 0 };
            requests.push(r);
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
            let n = tok
                .answer_len(&content)
                .map_err(|e| o.err(&at("value"), e))?;
            if n == 0 {
                return Err(o.err(&at("value"), "empty reply: no tokens"));
            }
            let n = u32::try_from(n).map_err(|_| o.err(&at("value"), "reply too long"))?;
            turns.push((prompt, n));
        }
        messages.push(Message { role, content });
    }
    if turns.is_empty() {
        return Err(o.err(key, "no human message answered by a gpt message"));
    }
    Ok(turns)
}
