//! A `BertForSequenceClassification`-style checkpoint (encoder under
//! `bert.`, plus `classifier.*`), built here from the real MiniLM weights
//! with a known head, served through the v2 router: the head is applied,
//! labels come from `id2label`, probabilities are a softmax.
#![allow(clippy::unwrap_used)]

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use clap::Parser;
use ember_runtime::args::Args;
use ember_runtime::http::router;
use ember_runtime::server::Runtime;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::{Value, json};
use tower::ServiceExt;

/// Writes the checkpoint and config into `dir`. The classifier's weights are
/// zero, so its logits are exactly its bias whatever the encoder computes.
fn write_classifier(dir: &std::path::Path, bias: [f32; 3]) {
    let source = std::fs::read(support::minilm_dir().join("model.safetensors")).unwrap();
    let parsed = SafeTensors::deserialize(&source).unwrap();
    let weight = vec![0u8; 3 * 384 * 4];
    let bias: Vec<u8> = bias.iter().flat_map(|b| b.to_le_bytes()).collect();
    let mut tensors: Vec<(String, TensorView<'_>)> =
        parsed.tensors().into_iter().map(|(name, view)| (format!("bert.{name}"), view)).collect();
    tensors.push(("classifier.weight".into(), TensorView::new(Dtype::F32, vec![3, 384], &weight).unwrap()));
    tensors.push(("classifier.bias".into(), TensorView::new(Dtype::F32, vec![3], &bias).unwrap()));
    std::fs::write(dir.join("model.safetensors"), safetensors::serialize(tensors, None).unwrap()).unwrap();
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(support::minilm_dir().join("config.json")).unwrap()).unwrap();
    config["id2label"] = json!({"0": "negative", "1": "neutral", "2": "positive"});
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
}

#[tokio::test]
async fn classifier_head_and_labels_are_applied() {
    let dir = tempfile::tempdir().unwrap();
    write_classifier(dir.path(), [0.5, -1.0, 2.0]);
    let tokenizer = support::minilm_dir().join("tokenizer.json");
    let args = Args::parse_from([
        "ember-runtime".to_owned(),
        "--model-name=sentiment".into(),
        format!("--model-uri={}", dir.path().join("model.safetensors").display()),
        format!("--config-uri={}", dir.path().join("config.json").display()),
        format!("--tokenizer-uri={}", tokenizer.display()),
        "--architecture=bert".into(),
        "--task=classification".into(),
    ]);
    let mut runtime = Runtime::start(&args).await.unwrap();
    runtime.wait_ready().await.unwrap();
    let body = json!({"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["great!", "awful"]}]});
    let request = Request::post("/v2/models/sentiment/infer").body(Body::from(body.to_string())).unwrap();
    let response = router(runtime.state()).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value =
        serde_json::from_slice(&axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap()).unwrap();
    let outputs = &body["outputs"];
    assert_eq!(outputs[0]["name"], "logits");
    assert_eq!(outputs[0]["shape"], json!([2, 3]));
    let logits: Vec<f64> = outputs[0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    for (got, want) in logits.iter().zip([0.5, -1.0, 2.0, 0.5, -1.0, 2.0]) {
        assert!((got - want).abs() < 1e-5, "logit {got} != {want}");
    }
    let p: Vec<f64> = outputs[1]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let expected = {
        let e: Vec<f64> = [0.5f64, -1.0, 2.0].iter().map(|x| x.exp()).collect();
        let sum: f64 = e.iter().sum();
        e.iter().map(|x| x / sum).collect::<Vec<_>>()
    };
    assert!((p[2] - expected[2]).abs() < 1e-5, "{p:?}");
    assert_eq!(outputs[2]["data"], json!(["positive", "positive"]));
    assert_eq!(outputs[3]["data"], json!([2, 2]));
}

#[tokio::test]
async fn classification_without_a_head_refuses_to_load() {
    let args = support::minilm_args(&["--task=classification"]);
    let mut runtime = Runtime::start(&args).await.unwrap();
    let err = runtime.wait_ready().await.unwrap_err();
    assert!(err.to_string().contains("classifier.weight"), "{err}");
}
