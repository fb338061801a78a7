//! Model cards: the shape of a model as its Hugging Face `config.json` states it, and what the
//! simulator derives from it (parameters, FLOPs per token, KV bytes per token per TP rank).
//!
//! Cards for the models users ask about most ship inside the binary (`models/cards/`), found by
//! Hugging Face id with forgiving spelling; any other model is a path to its `config.json`.

pub mod card;

pub use card::ModelCard;

use crate::error::{Error, Result};
use std::path::Path;

/// Shipped cards: (canonical Hugging Face id, config.json text).
const SHIPPED: &[(&str, &str)] = &[
    (
        "meta-llama/Llama-3.1-8B",
        include_str!("../../models/cards/meta-llama--Llama-3.1-8B.json"),
    ),
    (
        "meta-llama/Llama-3.1-70B",
        include_str!("../../models/cards/meta-llama--Llama-3.1-70B.json"),
    ),
    (
        "Qwen/Qwen3-0.6B",
        include_str!("../../models/cards/Qwen--Qwen3-0.6B.json"),
    ),
    (
        "Qwen/Qwen3-8B",
        include_str!("../../models/cards/Qwen--Qwen3-8B.json"),
    ),
];

/// The key two spellings of one model share: lower case, organisation dropped, the older
/// `Meta-Llama-3.1` spelling folded into `Llama-3.1`, and `-Instruct`/`-Chat`/`-Base` dropped
/// (an instruct variant has the base model's shape).
pub fn normalise_id(id: &str) -> String {
    let mut s = id.trim().to_ascii_lowercase();
    if let Some(i) = s.rfind('/') {
        s = s[i + 1..].to_string();
    }
    if let Some(rest) = s.strip_prefix("meta-") {
        s = rest.to_string();
    }
    for suffix in ["-instruct", "-chat", "-base", "-hf"] {
        if let Some(rest) = s.strip_suffix(suffix) {
            s = rest.to_string();
        }
    }
    s
}

/// Ids of the shipped cards.
pub fn shipped_ids() -> Vec<&'static str> {
    SHIPPED.iter().map(|(id, _)| *id).collect()
}

/// Finds a model: a shipped card by Hugging Face id, or a `config.json` path (a folder holding
/// one works too).
pub fn lookup(model: &str) -> Result<ModelCard> {
    let key = normalise_id(model);
    if let Some((id, text)) = SHIPPED.iter().find(|(id, _)| normalise_id(id) == key) {
        return ModelCard::from_json_str(
            text,
            id,
            &format!("models/cards/{}.json", id.replace('/', "--")),
        );
    }
    let p = Path::new(model);
    let file = if p.is_dir() {
        p.join("config.json")
    } else {
        p.to_path_buf()
    };
    if file.is_file() {
        let text =
            std::fs::read_to_string(&file).map_err(|e| Error::io(file.display().to_string(), e))?;
        let name = file
            .parent()
            .and_then(|d| d.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| model.to_string());
        return ModelCard::from_json_str(&text, &name, &file.display().to_string());
    }
    Err(Error::Config(format!(
        "unknown model {model:?}: not a shipped card ({}) and not a config.json path",
        shipped_ids().join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_resolve_across_spellings() {
        for id in [
            "meta-llama/Llama-3.1-8B",
            "meta-llama/Llama-3.1-8B-Instruct",
            "meta-llama/Meta-Llama-3.1-8B-Instruct",
            "meta-llama/Meta-Llama-3.1-8B",
            "llama-3.1-8b",
        ] {
            assert_eq!(lookup(id).unwrap().name, "meta-llama/Llama-3.1-8B", "{id}");
        }
        assert_eq!(lookup("Meta-Llama-3.1-70B-Instruct").unwrap().layers, 80);
        assert_eq!(lookup("Qwen/Qwen3-0.6B").unwrap().hidden, 1024);
        let e = lookup("meta-llama/Llama-4-Scout").unwrap_err().to_string();
        assert!(
            e.contains("unknown model") && e.contains("Qwen/Qwen3-8B"),
            "{e}"
        );
    }

    #[test]
    fn published_kv_bytes_per_token() {
        let kib = |id: &str| lookup(id).unwrap().kv_bytes_per_token(1) as f64 / 1024.0;
        assert_eq!(kib("meta-llama/Llama-3.1-8B"), 128.0);
        assert_eq!(kib("meta-llama/Llama-3.1-70B"), 320.0);
        assert_eq!(kib("Qwen/Qwen3-8B"), 144.0);
        assert_eq!(kib("Qwen/Qwen3-0.6B"), 112.0);
    }

    #[test]
    fn published_parameter_counts() {
        // Counts from the models' safetensors indexes / model cards.
        for (id, want) in [
            ("meta-llama/Llama-3.1-8B", 8_030_261_248u64),
            ("meta-llama/Llama-3.1-70B", 70_553_706_496),
            ("Qwen/Qwen3-8B", 8_190_735_360),
            ("Qwen/Qwen3-0.6B", 596_049_920),
        ] {
            assert_eq!(lookup(id).unwrap().params(), want, "{id}");
        }
    }

    #[test]
    fn a_config_path_works_too() {
        let dir = std::env::temp_dir().join(format!("kvr-model-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), SHIPPED[2].1).unwrap();
        let c = lookup(dir.to_str().unwrap()).unwrap();
        assert_eq!(c.kv_bytes_per_token(1), 112 * 1024);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
