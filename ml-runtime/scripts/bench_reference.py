#!/usr/bin/env python3
"""Times sentence-transformers (PyTorch, CPU) on the sentences the
ember-runtime benchmark uses, so both run in the same session on the same
machine. Called by `cargo bench -p ember-runtime --bench throughput`.

usage: bench_reference.py MODEL_DIR SENTENCES_JSON BATCH[,BATCH...]
prints one JSON object: {"torch": version, "threads": n, "results": [
  {"batch": b, "sentences_per_s": x, "p50_ms": y, "p99_ms": z}, ...]}
"""

import json
import os
import sys
import time


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main():
    model_dir, sentences_path, batches = sys.argv[1], sys.argv[2], sys.argv[3]
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(int(os.environ.get("EMBER_BENCH_THREADS", os.cpu_count() or 1)))
    sentences = json.load(open(sentences_path))
    model = SentenceTransformer(model_dir, device="cpu")
    results = []
    for batch in [int(b) for b in batches.split(",")]:
        chunks = [sentences[i : i + batch] for i in range(0, len(sentences) - batch + 1, batch)]
        model.encode(chunks[0], batch_size=batch)  # warm-up
        latencies = []
        started = time.perf_counter()
        done = 0
        rounds = 0
        while rounds < 3 or time.perf_counter() - started < 3.0:
            for chunk in chunks:
                t0 = time.perf_counter()
                model.encode(chunk, batch_size=batch, convert_to_numpy=True)
                latencies.append((time.perf_counter() - t0) * 1000.0)
                done += len(chunk)
            rounds += 1
        elapsed = time.perf_counter() - started
        results.append(
            {
                "batch": batch,
                "sentences_per_s": done / elapsed,
                "p50_ms": percentile(latencies, 0.50),
                "p99_ms": percentile(latencies, 0.99),
            }
        )
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "results": results}))


if __name__ == "__main__":
    main()
