//! Server-sent events as OpenAI-compatible servers stream completions.
//!
//! [`SseParser`] takes the stream line by line and yields each event's data (`data:` lines
//! joined by newlines, dispatched at a blank line, as the SSE specification says; comments and
//! other fields are ignored). [`Chunk::parse`] reads one event's data as a completion chunk: the
//! `[DONE]` sentinel, a chunk with choices (a token, or several when the server coalesced them),
//! a usage-only chunk, or an error object.

use serde_json::Value;

/// Splits an SSE stream into events.
#[derive(Debug, Default)]
pub struct SseParser {
    data: Option<String>,
}

impl SseParser {
    /// Feeds one line (without or with its line ending); returns the data of the event the line
    /// completes, if any.
    pub fn line(&mut self, line: &str) -> Option<String> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            return self.data.take();
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        if field == "data" {
            match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            }
        }
        None
    }

    /// The stream ended: the data of an event not followed by a blank line, if any.
    pub fn finish(&mut self) -> Option<String> {
        self.data.take()
    }
}

/// Token counts a server reports in `usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: Option<u32>,
    /// Generated tokens.
    pub completion_tokens: Option<u32>,
    /// Prompt tokens served from the prefix cache (`prompt_tokens_details.cached_tokens`; vLLM
    /// reports it with `--enable-prompt-tokens-details`).
    pub cached_tokens: Option<u32>,
}

impl Usage {
    fn of(v: &Value) -> Option<Usage> {
        let o = v.as_object()?;
        let n = |x: Option<&Value>| {
            x.and_then(Value::as_u64)
                .map(|n| n.min(u32::MAX as u64) as u32)
        };
        Some(Usage {
            prompt_tokens: n(o.get("prompt_tokens")),
            completion_tokens: n(o.get("completion_tokens")),
            cached_tokens: n(o
                .get("prompt_tokens_details")
                .and_then(|d| d.get("cached_tokens"))),
        })
    }
}

/// One event of a streamed completion.
#[derive(Debug, Clone, PartialEq)]
pub enum Chunk {
    /// `data: [DONE]`.
    Done,
    /// A JSON chunk.
    Data {
        /// Whether it carries choices: such a chunk is a token arrival (vllm bench counts it so,
        /// whatever its text).
        choices: bool,
        /// Usage, when the chunk has it.
        usage: Option<Usage>,
    },
    /// An error object (`{"error": ...}` or `{"object": "error", ...}`), as its message.
    Error(String),
    /// Data that is not JSON.
    Malformed(String),
}

impl Chunk {
    /// Reads one event's data.
    pub fn parse(data: &str) -> Chunk {
        let data = data.trim();
        if data == "[DONE]" {
            return Chunk::Done;
        }
        let v: Value = match serde_json::from_str(data) {
            Ok(v) => v,
            Err(_) => return Chunk::Malformed(data.chars().take(200).collect()),
        };
        let msg = |e: &Value| {
            e.get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| e.to_string())
        };
        if let Some(e) = v.get("error") {
            return Chunk::Error(msg(e));
        }
        if v.get("object").and_then(Value::as_str) == Some("error") {
            return Chunk::Error(msg(&v));
        }
        Chunk::Data {
            choices: v
                .get("choices")
                .and_then(Value::as_array)
                .is_some_and(|c| !c.is_empty()),
            usage: v.get("usage").and_then(Usage::of),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(text: &str) -> Vec<String> {
        let mut p = SseParser::default();
        let mut out: Vec<String> = text
            .split_inclusive('\n')
            .filter_map(|l| p.line(l))
            .collect();
        out.extend(p.finish());
        out
    }

    #[test]
    fn splits_events_at_blank_lines() {
        let s = "data: {\"a\":1}\n\n: keep-alive\n\ndata: x\r\ndata:y\r\n\r\nevent: ping\nid: 3\ndata: [DONE]\n\ndata: tail";
        assert_eq!(events(s), ["{\"a\":1}", "x\ny", "[DONE]", "tail"]);
        assert!(events("\n\n: only comments\n\n").is_empty());
    }

    #[test]
    fn reads_vllm_completion_chunks() {
        let tok = r#"{"id":"cmpl-1","object":"text_completion","created":1,"model":"m","choices":[{"index":0,"text":" the","logprobs":null,"finish_reason":null}],"usage":null}"#;
        assert_eq!(
            Chunk::parse(tok),
            Chunk::Data {
                choices: true,
                usage: None
            }
        );
        let empty_text = r#"{"choices":[{"index":0,"text":"","finish_reason":"length"}]}"#;
        assert!(matches!(
            Chunk::parse(empty_text),
            Chunk::Data { choices: true, .. }
        ));
        let usage = r#"{"id":"cmpl-1","choices":[],"usage":{"prompt_tokens":300,"total_tokens":310,"completion_tokens":10,"prompt_tokens_details":{"cached_tokens":256}}}"#;
        assert_eq!(
            Chunk::parse(usage),
            Chunk::Data {
                choices: false,
                usage: Some(Usage {
                    prompt_tokens: Some(300),
                    completion_tokens: Some(10),
                    cached_tokens: Some(256)
                })
            }
        );
        let plain = r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#;
        let Chunk::Data { usage: Some(u), .. } = Chunk::parse(plain) else {
            panic!()
        };
        assert_eq!(u.cached_tokens, None);
        assert_eq!(Chunk::parse(" [DONE] "), Chunk::Done);
        assert_eq!(
            Chunk::parse(r#"{"error":{"message":"boom","code":500}}"#),
            Chunk::Error("boom".into())
        );
        assert_eq!(
            Chunk::parse(r#"{"object":"error","message":"too long","code":400}"#),
            Chunk::Error("too long".into())
        );
        assert!(matches!(Chunk::parse("not json"), Chunk::Malformed(_)));
    }
}
