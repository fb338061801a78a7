"""Builds the tiny model folder the live check serves with --load-format dummy.

config.json: a llama-shaped model small enough that CPU engine steps are fast (weights are
random: vLLM's dummy loader never reads a checkpoint). tokenizer.json: a byte-level BPE trained
with the `tokenizers` package on a text corpus, with exactly `vocab_size` ids (the special tokens
first, so kvreplay's token mapping, which starts at --first-id, never produces them).

usage: python make_model.py CORPUS OUT_DIR [VOCAB]
"""

import json
import os
import sys

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]


def main() -> None:
    corpus, out = sys.argv[1], sys.argv[2]
    vocab = int(sys.argv[3]) if len(sys.argv) > 3 else 4096
    os.makedirs(out, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([corpus], trainer)
    # Pad with unused ids when the corpus yields fewer merges than asked, so ids cover the vocab.
    n = tok.get_vocab_size()
    if n < vocab:
        tok.add_tokens([f"<extra_{i}>" for i in range(vocab - n)])
    assert tok.get_vocab_size() == vocab, (tok.get_vocab_size(), vocab)
    tok.save(os.path.join(out, "tokenizer.json"))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "pad_token": "<pad>",
                "model_max_length": 8192,
                "clean_up_tokenization_spaces": False,
            },
            f,
            indent=2,
        )
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 256,
        "intermediate_size": 768,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "vocab_size": vocab,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "attention_bias": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 3,
        "torch_dtype": "float32",
    }
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 1, "eos_token_id": 2}, f, indent=2)
    print(f"wrote {out}: vocab {vocab}")


if __name__ == "__main__":
    main()
