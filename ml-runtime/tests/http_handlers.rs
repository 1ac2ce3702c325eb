//! Handler logic through `router(state).oneshot(..)` with the real MiniLM
//! model: the v2 protocol (JSON and binary, the request shapes
//! `tritonclient.http` sends), the OpenAI endpoint, and bad input that must
//! answer 4xx with a message while the server keeps serving.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use ember_runtime::http::{AppState, router};
use ember_runtime::server::Runtime;
use serde_json::{Value, json};
use tower::ServiceExt;

const BODY_LIMIT: usize = 64 * 1024;

/// One loaded model shared by every test in this file.
fn state() -> Arc<AppState> {
    static STATE: OnceLock<Arc<AppState>> = OnceLock::new();
    STATE
        .get_or_init(|| {
            std::thread::spawn(|| {
                let rt = tokio::runtime::Runtime::new().unwrap();
                rt.block_on(async {
                    let limit = format!("--max-request-bytes={BODY_LIMIT}");
                    let mut runtime =
                        Runtime::start(&support::minilm_args(&[&limit, "--max-items-per-request=64"])).await.unwrap();
                    runtime.wait_ready().await.unwrap();
                    let state = runtime.state();
                    // The model stays loaded for the whole test process.
                    std::mem::forget(runtime);
                    state
                })
            })
            .join()
            .unwrap()
        })
        .clone()
}

async fn send(request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let response = router(state()).oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap().to_vec();
    (status, headers, body)
}

async fn post_json(path: &str, body: Value) -> (StatusCode, Value) {
    let request =
        Request::post(path).header("content-type", "application/json").body(Body::from(body.to_string())).unwrap();
    let (status, _, body) = send(request).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn get(path: &str) -> (StatusCode, Value) {
    let (status, _, body) = send(Request::get(path).body(Body::empty()).unwrap()).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn reference(i: usize) -> (String, Vec<f32>) {
    let r = support::reference_sentences().swap_remove(i);
    (r.text, r.embedding)
}

async fn assert_still_serving() {
    let (status, body) = post_json(
        "/v2/models/minilm/infer",
        json!({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["still here"]}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

fn assert_error(status: StatusCode, body: &Value, want: StatusCode, words: &str) {
    assert_eq!(status, want, "{body}");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(message.contains(words), "error {message:?} should mention {words:?}");
}

#[tokio::test]
async fn server_and_model_metadata_and_health() {
    let (status, body) = get("/v2").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["extensions"].as_array().unwrap().contains(&json!("binary_tensor_data")));
    assert_eq!(get("/v2/health/live").await.0, StatusCode::OK);
    assert_eq!(get("/v2/health/ready").await.0, StatusCode::OK);
    let (status, body) = get("/v2/models/minilm/ready").await;
    assert_eq!((status, body["ready"].clone()), (StatusCode::OK, json!(true)));
    let (status, body) = get("/v2/models/minilm").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["outputs"][0], json!({"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}));
    assert_eq!(get("/v2/models/minilm/versions/1").await.0, StatusCode::OK);
    assert_eq!(get("/healthz").await.0, StatusCode::OK);
    assert_eq!(get("/readyz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn json_bytes_input_returns_reference_embeddings() {
    let (text0, want0) = reference(0);
    let (text1, want1) = reference(1);
    let (status, body) = post_json(
        "/v2/models/minilm/versions/1/infer",
        json!({
            "id": "req-7",
            "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": [text0, text1]}],
            "outputs": [{"name": "embedding", "parameters": {"binary_data": false}}],
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"], "req-7");
    assert_eq!(body["model_name"], "minilm");
    let output = &body["outputs"][0];
    assert_eq!(output["shape"], json!([2, 384]));
    assert_eq!(output["datatype"], "FP32");
    let data: Vec<f32> = output["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    assert!(support::cosine(&data[..384], &want0) > 0.999);
    assert!(support::cosine(&data[384..], &want1) > 0.999);
}

/// What `tritonclient.http` sends by default: inputs as binary data after a
/// JSON header, binary outputs requested, header length in a header.
#[tokio::test]
async fn triton_style_binary_request_gets_binary_response() {
    let (text, want) = reference(2);
    let mut tensor = Vec::new();
    for s in [text.as_str(), "second"] {
        tensor.extend_from_slice(&(s.len() as u32).to_le_bytes());
        tensor.extend_from_slice(s.as_bytes());
    }
    let header = json!({
        "inputs": [{"name": "text", "shape": [2, 1], "datatype": "BYTES", "parameters": {"binary_data_size": tensor.len()}}],
        "outputs": [{"name": "embedding", "parameters": {"binary_data": true}}],
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&tensor);
    let request = Request::post("/v2/models/minilm/infer")
        .header("content-type", "application/octet-stream")
        .header("Inference-Header-Content-Length", header.len())
        .body(Body::from(body))
        .unwrap();
    let (status, headers, body) = send(request).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let json_len: usize = headers["inference-header-content-length"].to_str().unwrap().parse().unwrap();
    let response: Value = serde_json::from_slice(&body[..json_len]).unwrap();
    let output = &response["outputs"][0];
    assert_eq!(output["parameters"]["binary_data_size"], 2 * 384 * 4);
    assert!(output.get("data").is_none());
    let values: Vec<f32> =
        body[json_len..].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    assert_eq!(values.len(), 768);
    assert!(support::cosine(&values[..384], &want) > 0.999);
}

/// Multiple inputs: token ids plus attention mask (right padded) give the
/// same embedding as the text.
#[tokio::test]
async fn int64_token_inputs_with_mask_match_text() {
    let (_, want) = reference(0);
    let ids = [101, 2023, 2003, 2019, 2742, 6251, 102, 0, 0];
    let mask = [1, 1, 1, 1, 1, 1, 1, 0, 0];
    let (status, body) = post_json(
        "/v2/models/minilm/infer",
        json!({"inputs": [
            {"name": "input_ids", "shape": [1, 9], "datatype": "INT64", "data": ids},
            {"name": "attention_mask", "shape": [1, 9], "datatype": "INT64", "data": [mask]},
        ]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let data: Vec<f32> =
        body["outputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    assert!(support::cosine(&data, &want) > 0.999);
}

#[tokio::test]
async fn openai_embeddings_float_and_base64() {
    let (text, want) = reference(3);
    let (status, body) = post_json("/v1/embeddings", json!({"model": "minilm", "input": [text.clone(), "x"]})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert_eq!(body["data"][1]["index"], 1);
    let got: Vec<f32> =
        body["data"][0]["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    assert!(support::cosine(&got, &want) > 0.999);
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 2);

    let (status, body) =
        post_json("/v1/embeddings", json!({"model": "minilm", "input": text, "encoding_format": "base64"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD.decode(body["data"][0]["embedding"].as_str().unwrap()).unwrap();
    let got: Vec<f32> = raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    assert!(support::cosine(&got, &want) > 0.999);
}

/// POSTs `body` as JSON; the status, the usage headers (items, tokens,
/// compute µs) when present, and the body.
async fn post_for_usage(path: &str, body: Value) -> (StatusCode, Option<(u64, u64, u64)>, Value) {
    let request =
        Request::post(path).header("content-type", "application/json").body(Body::from(body.to_string())).unwrap();
    let (status, headers, body) = send(request).await;
    let number = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
    let usage = match (number("x-ember-items"), number("x-ember-tokens"), number("x-ember-compute-us")) {
        (Some(items), Some(tokens), Some(compute)) => Some((items, tokens, compute)),
        (None, None, None) => None,
        partial => panic!("some usage headers but not all: {partial:?}"),
    };
    (status, usage, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn answers_carry_their_usage_in_headers_and_refusals_none() {
    let texts = ["Ember serves models", "x", "a somewhat longer sentence with more tokens in it"];
    let (status, usage, body) = post_for_usage("/v1/embeddings", json!({"input": texts})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (items, tokens, compute) = usage.expect("usage headers on an embeddings answer");
    assert_eq!(items, 3);
    assert_eq!(tokens, body["usage"]["prompt_tokens"].as_u64().unwrap(), "the header and the body agree");
    assert!(compute > 0);

    // The same texts through v2 read the same tokens.
    let v2 = json!({"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": texts}]});
    let (status, usage, body) = post_for_usage("/v2/models/minilm/infer", v2).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (v2_items, v2_tokens, _) = usage.expect("usage headers on a v2 answer");
    assert_eq!((v2_items, v2_tokens), (3, tokens));

    // A refused request ran nothing and says nothing.
    let wrong = json!({"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]});
    let (status, usage, _) = post_for_usage("/v2/models/minilm/infer", wrong).await;
    assert_eq!((status, usage), (StatusCode::BAD_REQUEST, None));
}

#[tokio::test]
async fn wrong_datatype_is_a_400_naming_it() {
    let (status, body) = post_json(
        "/v2/models/minilm/infer",
        json!({"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]}),
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "BYTES");
    let (status, body) = post_json(
        "/v2/models/minilm/infer",
        json!({"inputs": [{"name": "text", "shape": [1], "datatype": "BF16", "data": [1.0]}]}),
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "BF16");
    assert_still_serving().await;
}

#[tokio::test]
async fn wrong_shape_is_a_400_naming_it() {
    let (status, body) = post_json(
        "/v2/models/minilm/infer",
        json!({"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": ["a", "b"]}]}),
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "shape [3]");
    let (status, body) = post_json(
        "/v2/models/minilm/infer",
        json!({"inputs": [{"name": "text", "shape": [1, 2], "datatype": "BYTES", "data": ["a", "b"]}]}),
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "shape");
    let (status, body) = post_json(
        "/v2/models/minilm/infer",
        json!({"inputs": [{"name": "text", "shape": [-1], "datatype": "BYTES", "data": ["a"]}]}),
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "negative");
    assert_still_serving().await;
}

#[tokio::test]
async fn too_large_payload_is_a_413() {
    let big = "word ".repeat(BODY_LIMIT / 4);
    let (status, body) = post_json(
        "/v2/models/minilm/infer",
        json!({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [big]}]}),
    )
    .await;
    assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "limit");
    let (status, body) = post_json("/v1/embeddings", json!({"input": vec!["x"; 100]})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "limit is 64");
    assert_still_serving().await;
}

#[tokio::test]
async fn empty_batch_is_a_400() {
    let (status, body) = post_json(
        "/v2/models/minilm/infer",
        json!({"inputs": [{"name": "text", "shape": [0], "datatype": "BYTES", "data": []}]}),
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "empty");
    let (status, body) = post_json("/v1/embeddings", json!({"input": []})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "empty");
    assert_still_serving().await;
}

#[tokio::test]
async fn unknown_model_is_a_404() {
    let (status, body) = post_json(
        "/v2/models/gpt-9/infer",
        json!({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}),
    )
    .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "gpt-9");
    assert_eq!(get("/v2/models/gpt-9").await.0, StatusCode::NOT_FOUND);
    let (status, body) = post_json("/v1/embeddings", json!({"model": "gpt-9", "input": "a"})).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "gpt-9");
    assert_still_serving().await;
}

#[tokio::test]
async fn invalid_utf8_is_a_400() {
    // In the JSON body itself...
    let mut raw = br#"{"inputs":[{"name":"text","shape":[1],"datatype":"BYTES","data":[""#.to_vec();
    raw.extend_from_slice(&[0xff, 0xfe]);
    raw.extend_from_slice(br#""]}]}"#);
    let request = Request::post("/v2/models/minilm/infer").body(Body::from(raw)).unwrap();
    let (status, _, body) = send(request).await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_error(status, &body, StatusCode::BAD_REQUEST, "not a valid inference request");
    // ...and in a binary BYTES element.
    let header = r#"{"inputs":[{"name":"text","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":6}}]}"#;
    let mut raw = header.as_bytes().to_vec();
    raw.extend_from_slice(&2u32.to_le_bytes());
    raw.extend_from_slice(&[0xc3, 0x28]);
    let request = Request::post("/v2/models/minilm/infer")
        .header("Inference-Header-Content-Length", header.len())
        .body(Body::from(raw))
        .unwrap();
    let (status, _, body) = send(request).await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_error(status, &body, StatusCode::BAD_REQUEST, "UTF-8");
    assert_still_serving().await;
}

#[tokio::test]
async fn bad_tokens_and_outputs_are_400s() {
    let (status, body) = post_json(
        "/v2/models/minilm/infer",
        json!({"inputs": [{"name": "input_ids", "shape": [1, 2], "datatype": "INT64", "data": [101, 99999]}]}),
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "99999");
    let (status, body) = post_json(
        "/v2/models/minilm/infer",
        json!({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}], "outputs": [{"name": "logits"}]}),
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "logits");
    let (status, body) = post_json(
        "/v2/models/minilm/infer",
        json!({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}, {"name": "extra", "shape": [1], "datatype": "INT64", "data": [1]}]}),
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "extra");
    let request = Request::post("/v2/models/minilm/infer").body(Body::from("{not json")).unwrap();
    let (status, _, _) = send(request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_still_serving().await;
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    assert_still_serving().await;
    let (status, headers, body) = send(Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = String::from_utf8(body).unwrap();
    for name in ["ember_http_requests_total", "ember_batch_size_bucket", "ember_queue_depth", "ember_model_ready 1"] {
        assert!(text.contains(name), "metrics lack {name}:\n{text}");
    }
}
