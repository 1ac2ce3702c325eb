#!/usr/bin/env python3
"""Checks a running ember-runtime with the real `tritonclient.http` client:
health, metadata, and inference with binary and JSON tensors. Exits non-zero
on any mismatch.

usage: pip install "tritonclient[http]" numpy
       tritonclient_check.py HOST:PORT MODEL_NAME
"""

import sys

import numpy as np
import tritonclient.http as httpclient


def main():
    url, model = sys.argv[1], sys.argv[2]
    client = httpclient.InferenceServerClient(url)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(model)
    outputs = client.get_model_metadata(model)["outputs"]
    assert outputs[0]["name"] == "embedding", outputs
    texts = np.array([b"This is an example sentence", b"Each sentence is converted"], dtype=object)
    for binary in (True, False):
        text = httpclient.InferInput("text", [2], "BYTES")
        text.set_data_from_numpy(texts, binary_data=binary)
        wanted = httpclient.InferRequestedOutput("embedding", binary_data=binary)
        result = client.infer(model, [text], outputs=[wanted], request_id="check")
        embedding = result.as_numpy("embedding")
        assert embedding.shape == (2, 384), embedding.shape
        # Known all-MiniLM-L6-v2 values (see tests/fixtures/minilm_reference.json).
        assert abs(embedding[0][0] - 0.0676569) < 1e-4, embedding[0][:5]
        assert abs(float(embedding[0] @ embedding[1]) - 0.40456) < 1e-3
    bad = httpclient.InferInput("text", [1], "FP32")
    bad.set_data_from_numpy(np.array([1.0], dtype=np.float32))
    try:
        client.infer(model, [bad])
    except httpclient.InferenceServerException as error:
        assert "BYTES" in str(error), error
    else:
        raise AssertionError("FP32 text was accepted")
    print("tritonclient check passed")


if __name__ == "__main__":
    main()
