//! A model's chat template (the Jinja `chat_template` of Hugging Face's `tokenizer_config.json`)
//! rendered as vLLM renders it before tokenizing a chat request, so that imported chat logs get
//! the prompt tokens the server saw: the messages with `add_generation_prompt=true` and the
//! tokenizer's `bos_token`/`eos_token`.
//!
//! Rendering runs through `minijinja` with what Hugging Face templates use beyond plain Jinja:
//! `loop_controls` (`break`/`continue`), Python string and dict methods (`.strip()`,
//! `.startswith()`, `.items()`, ... via `minijinja-contrib`'s pycompat), `raise_exception(msg)`
//! and the `tojson` filter.

use minijinja::{Environment, Error as JinjaError, ErrorKind, Value};
use std::collections::BTreeMap;

/// Who wrote a chat message. Only these roles are accepted; anything else is an error naming
/// the role (a template would render it silently or not at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The system prompt.
    System,
    /// The user (ShareGPT's `human`).
    User,
    /// The model's answer (ShareGPT's `gpt`).
    Assistant,
    /// A tool's result (OpenAI chat logs).
    Tool,
}

impl Role {
    /// The role as OpenAI names it: the name templates compare against.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }

    /// Parses an OpenAI role (`system`, `developer` as system, `user`, `assistant`, `tool`).
    pub fn from_openai(s: &str) -> Option<Role> {
        Some(match s {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            _ => return None,
        })
    }
}

/// One message of a conversation, as the template sees it (`message.role`, `message.content`
/// and whatever else the request gave it: an assistant's `tool_calls`, a tool result's
/// `tool_call_id` or `name`, which templates render into the prompt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// Its text.
    pub content: String,
    /// The message's other fields, as logged.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Message {
    /// A message with only a role and text.
    pub fn new(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: content.into(),
            extra: serde_json::Map::new(),
        }
    }
}

/// A compiled chat template and the special tokens it is given.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish_non_exhaustive()
    }
}

/// The template's name inside its environment.
const NAME: &str = "chat_template";

impl ChatTemplate {
    /// Compiles `source`; a syntax error is returned as a message.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<ChatTemplate, String> {
        let mut env = Environment::new();
        // Jinja as transformers configures it: trim_blocks and lstrip_blocks on.
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| e.to_string())?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<Value, JinjaError> {
                Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_filter("tojson", python_tojson);
        env.add_template_owned(NAME, source.to_string())
            .map_err(|e| format!("chat template does not compile: {e}"))?;
        Ok(ChatTemplate {
            env,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// Renders `messages` with `add_generation_prompt=true`: the text of the prompt that asks
    /// for the next assistant message. A template that raises or fails is an error message.
    pub fn render(&self, messages: &[Message]) -> Result<String, String> {
        self.render_with_tools(messages, None)
    }

    /// [`ChatTemplate::render`] with the request's `tools` (function definitions), which
    /// templates render into the prompt (vLLM passes them to the template too).
    pub fn render_with_tools(
        &self,
        messages: &[Message],
        tools: Option<&serde_json::Value>,
    ) -> Result<String, String> {
        let msgs: Vec<Value> = messages
            .iter()
            .map(|m| {
                let mut o: BTreeMap<&str, Value> = m
                    .extra
                    .iter()
                    .map(|(k, v)| (k.as_str(), Value::from(minijinja::value::Serde(v))))
                    .collect();
                o.insert("role", Value::from(m.role.as_str()));
                o.insert("content", Value::from(m.content.as_str()));
                Value::from(o)
            })
            .collect();
        let mut ctx = BTreeMap::new();
        ctx.insert("messages", Value::from(msgs));
        if let Some(t) = tools {
            ctx.insert("tools", Value::from(minijinja::value::Serde(t)));
        }
        ctx.insert("add_generation_prompt", Value::from(true));
        ctx.insert("bos_token", Value::from(self.bos_token.as_str()));
        ctx.insert("eos_token", Value::from(self.eos_token.as_str()));
        let t = self.env.get_template(NAME).map_err(|e| e.to_string())?;
        t.render(Value::from(ctx)).map_err(|e| match e.kind() {
            ErrorKind::InvalidOperation => format!(
                "chat template raised: {}",
                e.detail().unwrap_or("no message")
            ),
            _ => format!("chat template failed: {e}"),
        })
    }
}

/// `tojson` as transformers defines it for chat templates: Python's `json.dumps` with
/// `ensure_ascii=False`, so `", "` and `": "` between items (minijinja's own writes them
/// compact, which would change the prompt's tokens), and `indent=N` as Python indents.
fn python_tojson(value: &Value, kwargs: minijinja::value::Kwargs) -> Result<String, JinjaError> {
    let indent: Option<usize> = kwargs.get("indent")?;
    // Accepted as Python's are; `ensure_ascii=False` is what transformers passes, and key
    // order is the value's own.
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    let _: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let mut out = Vec::new();
    let done = match indent {
        Some(n) => {
            let pad = vec![b' '; n];
            let f = serde_json::ser::PrettyFormatter::with_indent(&pad);
            serde::Serialize::serialize(
                value,
                &mut serde_json::Serializer::with_formatter(&mut out, f),
            )
        }
        None => serde::Serialize::serialize(
            value,
            &mut serde_json::Serializer::with_formatter(&mut out, PythonSpacing),
        ),
    };
    done.map_err(|e| JinjaError::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    String::from_utf8(out)
        .map_err(|e| JinjaError::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))
}

/// Python `json.dumps`' default separators: `", "` between items, `": "` after keys.
struct PythonSpacing;

impl serde_json::ser::Formatter for PythonSpacing {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: Role, content: &str) -> Message {
        Message::new(role, content)
    }

    #[test]
    fn renders_messages_with_generation_prompt_and_special_tokens() {
        let src = "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content.strip() }}\
                   {% if loop.last %}{% break %}{% endif %}|{% endfor %}\
                   {% if add_generation_prompt %}[assistant]{% endif %}";
        let t = ChatTemplate::new(src, "<s>", "</s>").unwrap();
        let out = t
            .render(&[msg(Role::System, " be brief "), msg(Role::User, "hi")])
            .unwrap();
        assert_eq!(out, "<s>[system]be brief|[user]hi[assistant]");
    }

    /// The constructs Hugging Face templates use: namespace, slicing, Python string methods,
    /// loop controls, item access, tojson, raise_exception, whitespace control.
    #[test]
    fn renders_what_hugging_face_templates_use() {
        let src = "{%- set ns = namespace(system='') -%}
{%- if messages[0]['role'] == 'system' -%}
  {%- set ns.system = messages[0]['content'] | trim -%}
  {%- set rest = messages[1:] -%}
{%- else -%}
  {%- set rest = messages -%}
{%- endif -%}
{{- bos_token -}}
{%- if ns.system %}<|sys|>{{ ns.system }}<|end|>{% endif -%}
{%- for m in rest -%}
  {%- if (m['role'] == 'user') != (loop.index0 % 2 == 0) -%}
    {{- raise_exception('roles must alternate') -}}
  {%- endif -%}
  {%- if m.content.startswith('!') %}{% continue %}{% endif %}
  <|{{ m['role'] }}|>{{ m['content'].strip() }}<|end|>
{%- endfor -%}
{%- if add_generation_prompt %}<|assistant|>{{ 'x' | tojson }}{% endif -%}
";
        let t = ChatTemplate::new(src, "<s>", "</s>").unwrap();
        let out = t
            .render(&[
                msg(Role::System, " sys "),
                msg(Role::User, " hi\n"),
                msg(Role::Assistant, "!skip"),
                msg(Role::User, "q"),
            ])
            .unwrap();
        // As in Jinja with trim_blocks: the newline after `{% endif %}` goes, the indentation
        // before `<|` (not a block tag, so lstrip_blocks leaves it) stays.
        assert_eq!(
            out,
            "<s><|sys|>sys<|end|>  <|user|>hi<|end|>  <|user|>q<|end|><|assistant|>\"x\""
        );
        let e = t
            .render(&[msg(Role::User, "a"), msg(Role::User, "b")])
            .unwrap_err();
        assert_eq!(e, "chat template raised: roles must alternate");
    }

    #[test]
    fn raise_exception_and_syntax_errors_are_messages() {
        let src = "{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}\
                   {% endif %}ok";
        let t = ChatTemplate::new(src, "", "").unwrap();
        assert_eq!(t.render(&[msg(Role::User, "x")]).unwrap(), "ok");
        let e = t.render(&[msg(Role::System, "x")]).unwrap_err();
        assert_eq!(e, "chat template raised: first must be user");
        assert!(ChatTemplate::new("{% for %}", "", "").is_err());
    }

    /// `tojson` writes what Python's `json.dumps(x, ensure_ascii=False, indent=...)` writes
    /// (transformers' definition): the expected strings are Python's own output.
    #[test]
    fn tojson_is_pythons() {
        let t = ChatTemplate::new(
            "{{ {'a': 1, 'b': [1, 2.5, 'é'], 'c': none} | tojson }}|{{ [1, {'k': true}] | tojson(indent=2) }}|{{ [] | tojson }}",
            "",
            "",
        )
        .unwrap();
        assert_eq!(
            t.render(&[]).unwrap(),
            "{\"a\": 1, \"b\": [1, 2.5, \"é\"], \"c\": null}|[\n  1,\n  {\n    \"k\": true\n  }\n]|[]"
        );
    }

    /// A request's tools and a message's other fields (an assistant's tool calls, a tool
    /// result's id) reach the template.
    #[test]
    fn tools_and_tool_calls_reach_the_template() {
        let src = "{% if tools %}[tools {{ tools | tojson }}]{% endif %}\
                   {% for m in messages %}<{{ m.role }}>{{ m.content }}\
                   {% if m.tool_calls %}{% for c in m.tool_calls %}{{ c.function.name }}({{ c.function.arguments }}){% endfor %}{% endif %}\
                   {% if m.tool_call_id %}#{{ m.tool_call_id }}{% endif %}{% endfor %}";
        let t = ChatTemplate::new(src, "", "").unwrap();
        let call: serde_json::Value = serde_json::json!([{"id": "c1", "type": "function",
            "function": {"name": "get", "arguments": "{\"city\": \"Paris\"}"}}]);
        let mut asst = Message::new(Role::Assistant, "");
        asst.extra.insert("tool_calls".into(), call);
        let mut tool = Message::new(Role::Tool, "20C");
        tool.extra.insert("tool_call_id".into(), "c1".into());
        let tools = serde_json::json!([{"type": "function", "function": {"name": "get"}}]);
        let out = t
            .render_with_tools(
                &[Message::new(Role::User, "weather?"), asst, tool],
                Some(&tools),
            )
            .unwrap();
        assert_eq!(
            out,
            "[tools [{\"function\": {\"name\": \"get\"}, \"type\": \"function\"}]]\
             <user>weather?<assistant>get({\"city\": \"Paris\"})<tool>20C#c1"
        );
        // Without tools the block is left out.
        assert_eq!(
            t.render(&[Message::new(Role::User, "x")]).unwrap(),
            "<user>x"
        );
    }
}
