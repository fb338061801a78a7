//! A model's tokenizer and chat template, read from a local folder (a model folder, or any
//! folder holding its `tokenizer.json` and `tokenizer_config.json`), so that request logs in text
//! (OpenAI requests, ShareGPT conversations) become the token sequences the server saw. Nothing is
//! downloaded.
//!
//! Special tokens follow vLLM: a chat request's template rendering already holds them, so it is
//! encoded without adding any ([`TextTokenizer::chat`]); a completions prompt is encoded with the
//! tokenizer's own (its post-processor's BOS, say: [`TextTokenizer::completion`]).

use super::chat_template::{ChatTemplate, Message};
use crate::error::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// Text to token ids for one model.
#[derive(Debug)]
pub struct TextTokenizer {
    tokenizer: tokenizers::Tokenizer,
    /// `None` when the folder has no chat template: chat messages are then an error per record.
    template: Option<ChatTemplate>,
}

impl TextTokenizer {
    /// A tokenizer and an optional chat template, built in code (tests, fuzzing).
    pub fn new(tokenizer: tokenizers::Tokenizer, template: Option<ChatTemplate>) -> Self {
        TextTokenizer {
            tokenizer,
            template,
        }
    }

    /// Reads `dir/tokenizer.json` and, when present, `dir/tokenizer_config.json` (its
    /// `chat_template`, a string or the entry named `default` of a list, and its `bos_token` and
    /// `eos_token`, strings or `{content}` objects); a `dir/chat_template.jinja` file takes
    /// precedence over the config's template.
    pub fn load(dir: &Path) -> Result<TextTokenizer> {
        let tok_path = dir.join("tokenizer.json");
        let bytes =
            std::fs::read(&tok_path).map_err(|e| Error::io(tok_path.display().to_string(), e))?;
        let tokenizer = tokenizers::Tokenizer::from_bytes(&bytes)
            .map_err(|e| Error::Config(format!("{}: not a tokenizer: {e}", tok_path.display())))?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: Value = match std::fs::read(&cfg_path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| Error::Config(format!("{}: {e}", cfg_path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Value::Null,
            Err(e) => return Err(Error::io(cfg_path.display().to_string(), e)),
        };
        let jinja_path = dir.join("chat_template.jinja");
        let source = match std::fs::read_to_string(&jinja_path) {
            Ok(s) => Some(s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => config_template(&cfg),
            Err(e) => return Err(Error::io(jinja_path.display().to_string(), e)),
        };
        let template = source
            .map(|s| {
                ChatTemplate::new(&s, &special(&cfg, "bos_token"), &special(&cfg, "eos_token"))
                    .map_err(|e| Error::Config(format!("{}: {e}", dir.display())))
            })
            .transpose()?;
        Ok(TextTokenizer::new(tokenizer, template))
    }

    /// The Hugging Face tokenizer itself.
    pub fn tokenizer(&self) -> &tokenizers::Tokenizer {
        &self.tokenizer
    }

    /// Token ids of `text`, adding the tokenizer's special tokens or not.
    fn encode(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> std::result::Result<Vec<u32>, String> {
        self.tokenizer
            .encode_fast(text, add_special_tokens)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| format!("tokenizer failed: {e}"))
    }

    /// A chat request's prompt: the template's rendering with the generation prompt, encoded
    /// without adding special tokens (as vLLM's chat endpoint does).
    pub fn chat(&self, messages: &[Message]) -> std::result::Result<Vec<u32>, String> {
        self.chat_with_tools(messages, None)
    }

    /// [`TextTokenizer::chat`] for a request with `tools` (function definitions).
    pub fn chat_with_tools(
        &self,
        messages: &[Message],
        tools: Option<&serde_json::Value>,
    ) -> std::result::Result<Vec<u32>, String> {
        let t = self.template.as_ref().ok_or(
            "the tokenizer folder has no chat template (tokenizer_config.json chat_template \
             or chat_template.jinja)",
        )?;
        self.encode(&t.render_with_tools(messages, tools)?, false)
    }

    /// A completions prompt: the text encoded with the tokenizer's special tokens (as vLLM's
    /// completions endpoint does).
    pub fn completion(&self, text: &str) -> std::result::Result<Vec<u32>, String> {
        self.encode(text, true)
    }

    /// A generated answer's tokens: its text alone, no special tokens.
    pub fn answer(&self, text: &str) -> std::result::Result<Vec<u32>, String> {
        self.encode(text, false)
    }
}

/// `chat_template` of a tokenizer_config: a string, or a list of `{name, template}` of which
/// the one named `default` is used.
fn config_template(cfg: &Value) -> Option<String> {
    match cfg.get("chat_template")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(list) => list.iter().find_map(|t| {
            (t.get("name")?.as_str()? == "default")
                .then(|| t.get("template")?.as_str().map(str::to_string))
                .flatten()
        }),
        _ => None,
    }
}

/// A special token of a tokenizer_config (`"<s>"` or `{"content": "<s>", ...}`); empty when absent.
fn special(cfg: &Value, key: &str) -> String {
    match cfg.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        None => String::new(),
    }
}

/// Builders of small tokenizers in code, for tests and fuzzing (no file, no download).
pub mod tiny {
    use super::{ChatTemplate, TextTokenizer};
    use std::collections::HashMap;

    /// A word-level tokenizer splitting on whitespace: `words` get ids 1.. in order, anything
    /// else is `[UNK]` (id 0).
    pub fn word_level(words: &[&str]) -> tokenizers::Tokenizer {
        let mut vocab: HashMap<String, u32> = HashMap::new();
        vocab.insert("[UNK]".into(), 0);
        for w in words {
            let n = vocab.len() as u32;
            vocab.entry((*w).to_string()).or_insert(n);
        }
        let model = tokenizers::models::wordlevel::WordLevel::builder()
            .vocab(vocab.into_iter().collect())
            .unk_token("[UNK]".into())
            .build()
            .expect("a word-level vocabulary with its unknown token");
        let mut t = tokenizers::Tokenizer::new(model);
        t.with_pre_tokenizer(Some(
            tokenizers::pre_tokenizers::whitespace::WhitespaceSplit,
        ));
        t
    }

    /// A small chat template: `<s>`, then `<role> content </role>` per message, then
    /// `<assistant>`, all separated by spaces (so each marker is one word).
    pub const TEMPLATE: &str = "{{ bos_token }} {% for m in messages %}\
        {% if m.role not in ['system', 'user', 'assistant'] %}\
        {{ raise_exception('unsupported role ' + m.role) }}{% endif %}\
        <{{ m.role }}> {{ m.content }} </{{ m.role }}> {% endfor %}\
        {% if add_generation_prompt %}<assistant>{% endif %}";

    /// [`word_level`] over `words` and the markers of [`TEMPLATE`], with that template; like a
    /// Llama tokenizer, its special tokens are a leading `<s>` (added by its post-processor).
    pub fn chat(words: &[&str]) -> TextTokenizer {
        let mut all = vec![
            "<s>",
            "</s>",
            "<system>",
            "</system>",
            "<user>",
            "</user>",
            "<assistant>",
            "</assistant>",
        ];
        all.extend_from_slice(words);
        let mut t = word_level(&all);
        let bos = t.token_to_id("<s>").unwrap_or(0);
        let post = tokenizers::processors::template::TemplateProcessing::builder()
            .try_single("<s> $A")
            .and_then(|b| {
                b.special_tokens(vec![("<s>", bos)])
                    .build()
                    .map_err(|e| e.to_string())
            })
            .expect("the tiny post-processor");
        t.with_post_processor(Some(post));
        let template = ChatTemplate::new(TEMPLATE, "<s>", "</s>").expect("the tiny template");
        TextTokenizer::new(t, Some(template))
    }

    /// Writes [`chat`]'s tokenizer over `words` as a model folder would hold it
    /// (`tokenizer.json`, and `tokenizer_config.json` with the template and special tokens)
    /// into `dir`.
    pub fn save(dir: &std::path::Path, words: &[&str]) -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        chat(words)
            .tokenizer
            .save(dir.join("tokenizer.json"), false)
            .map_err(|e| e.to_string())?;
        let cfg = serde_json::json!({
            "bos_token": {"content": "<s>", "special": true},
            "eos_token": "</s>",
            "chat_template": TEMPLATE,
        });
        std::fs::write(dir.join("tokenizer_config.json"), cfg.to_string())
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::import::chat_template::{Message, Role};

    #[test]
    fn a_saved_folder_loads_with_its_template_and_special_tokens() {
        let dir = std::env::temp_dir().join(format!("kvreplay-tok-{}", std::process::id()));
        tiny::save(&dir, &["hello", "world"]).unwrap();
        let t = TextTokenizer::load(&dir).unwrap();
        let m = [Message::new(Role::User, "hello world")];
        // "<s> <user> hello world </user> <assistant>": six words, the template's <s> only.
        let chat = t.chat(&m).unwrap();
        assert_eq!(chat.len(), 6);
        assert_eq!(chat[0], t.tokenizer.token_to_id("<s>").unwrap());
        assert_ne!(chat[1], chat[0]);
        // A completion gets the post-processor's <s>; an answer gets none.
        let c = t.completion("hello world").unwrap();
        assert_eq!(c, [chat[0], chat[2], chat[3]]);
        assert_eq!(t.answer("hello world").unwrap(), [chat[2], chat[3]]);
        // A chat_template.jinja beside the files takes precedence over the config's.
        std::fs::write(
            dir.join("chat_template.jinja"),
            "{{ bos_token }} {{ eos_token }}",
        )
        .unwrap();
        let t = TextTokenizer::load(&dir).unwrap();
        assert_eq!(t.chat(&m).unwrap(), t.completion("</s>").unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
