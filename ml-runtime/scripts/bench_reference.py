#!/usr/bin/env python3
"""Times a reference CPU stack on the texts the ember-runtime benchmark uses,
so both run in the same session on the same machine. Called by
`cargo bench -p ember-runtime --bench throughput`, once per backend:

  torch        sentence-transformers on PyTorch (`SentenceTransformer.encode`)
  onnxruntime  ONNX Runtime on an ONNX export of the same safetensors (made
               here from the sentence-transformers model with
               `torch.onnx.export`, cached under ~/.cache/ember/onnx), with the
               model's own `tokenizer.json` through `tokenizers`, padding to
               the longest text of each batch, then mean pooling over the
               attention mask and L2 normalisation in numpy: the same pipeline
               as sentence-transformers and ember, fp32 throughout.

Both use EMBER_BENCH_THREADS compute threads.

usage: bench_reference.py BACKEND MODEL_DIR TEXTS_JSON BATCH[,BATCH...]
prints one JSON object: {"version": "...", "threads": n, "results": [
  {"batch": b, "sentences_per_s": x, "p50_ms": y, "p99_ms": z}, ...]}
A missing package exits non-zero with the reason on stderr.
"""

import hashlib
import json
import os
import sys
import time

# sentence-transformers truncates all-MiniLM-L6-v2 inputs here; so does ember.
MAX_TOKENS = 256


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def measure(encode, texts, batch):
    """Sentences/s and per-call latency of `encode(chunk)` over `texts` in
    chunks of `batch`, for at least 3 passes and 3 seconds."""
    chunks = [texts[i : i + batch] for i in range(0, len(texts) - batch + 1, batch)]
    encode(chunks[0])  # warm-up
    latencies = []
    started = time.perf_counter()
    done = 0
    rounds = 0
    while rounds < 3 or time.perf_counter() - started < 3.0:
        for chunk in chunks:
            t0 = time.perf_counter()
            encode(chunk)
            latencies.append((time.perf_counter() - t0) * 1000.0)
            done += len(chunk)
        rounds += 1
    elapsed = time.perf_counter() - started
    return {
        "batch": batch,
        "sentences_per_s": done / elapsed,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
    }


def torch_encoder(model_dir, threads):
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    model = SentenceTransformer(model_dir, device="cpu")

    def encode(chunk):
        return model.encode(chunk, batch_size=len(chunk), convert_to_numpy=True)

    return f"torch {torch.__version__}", encode


def onnx_export(model_dir):
    """The ONNX file for `model_dir`'s safetensors, exported once and cached
    by the weights' digest. Inputs `input_ids`, `attention_mask`,
    `token_type_ids` (int64, `[batch, seq]`), output the last hidden state."""
    with open(os.path.join(model_dir, "model.safetensors"), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    cache = os.path.expanduser("~/.cache/ember/onnx")
    path = os.path.join(cache, f"minilm-{digest}.onnx")
    if os.path.exists(path):
        return path

    import torch
    from sentence_transformers import SentenceTransformer

    bert = SentenceTransformer(model_dir, device="cpu")[0].auto_model.eval()

    class LastHidden(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    ids = torch.ones((2, 16), dtype=torch.int64)
    os.makedirs(cache, exist_ok=True)
    partial = f"{path}.{os.getpid()}.tmp"
    names = ["input_ids", "attention_mask", "token_type_ids"]
    dynamic = {name: {0: "batch", 1: "sequence"} for name in names}
    dynamic["last_hidden_state"] = {0: "batch", 1: "sequence"}
    with torch.no_grad():
        torch.onnx.export(
            LastHidden(bert),
            (ids, ids, torch.zeros_like(ids)),
            partial,
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=dynamic,
            opset_version=17,
            dynamo=False,
        )
    os.replace(partial, path)  # a concurrent or interrupted export never leaves half a file
    return path


def onnxruntime_encoder(model_dir, threads):
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(onnx_export(model_dir), options, providers=["CPUExecutionProvider"])

    tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(MAX_TOKENS)
    tokenizer.enable_padding()  # to the longest text of each batch

    def encode(chunk):
        encodings = tokenizer.encode_batch(chunk)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        (hidden,) = session.run(
            None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        )
        weights = mask[:, :, None].astype(np.float32)
        mean = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        return mean / np.clip(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12, None)

    return f"onnxruntime {ort.__version__}", encode


def main():
    backend, model_dir, texts_path, batches = sys.argv[1:5]
    threads = int(os.environ.get("EMBER_BENCH_THREADS", os.cpu_count() or 1))
    encoders = {"torch": torch_encoder, "onnxruntime": onnxruntime_encoder}
    if backend not in encoders:
        sys.exit(f"unknown backend {backend!r}: one of {sorted(encoders)}")
    try:
        version, encode = encoders[backend](model_dir, threads)
    except ImportError as missing:
        sys.exit(f"{backend} reference needs {missing.name}: {missing}")
    with open(texts_path) as f:
        texts = json.load(f)
    results = [measure(encode, texts, int(b)) for b in batches.split(",")]
    print(json.dumps({"version": version, "threads": threads, "results": results}))


if __name__ == "__main__":
    main()
