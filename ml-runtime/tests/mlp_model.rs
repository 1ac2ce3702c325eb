//! The tabular MLP end to end: weights generated here (PyTorch `nn.Linear`
//! layout in safetensors), served through the v2 router, outputs checked
//! against the same network computed by hand in plain Rust.
#![allow(clippy::unwrap_used)]

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use clap::Parser;
use ember_runtime::args::Args;
use ember_runtime::http::router;
use ember_runtime::server::Runtime;
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use serde_json::{Value, json};
use tower::ServiceExt;

/// Layer weights `[out, in]` and biases of a 3 → 4 → 2 network.
struct Network {
    layers: Vec<(Vec<Vec<f32>>, Vec<f32>)>,
}

impl Network {
    fn example() -> Self {
        let w0 = (0..4).map(|o| (0..3).map(|i| ((o * 3 + i) as f32 * 0.37).sin()).collect()).collect();
        let b0 = vec![0.1, -0.2, 0.05, 0.0];
        let w1 = (0..2).map(|o| (0..4).map(|i| ((o * 4 + i) as f32 * 0.61).cos()).collect()).collect();
        let b1 = vec![0.3, -0.1];
        Network { layers: vec![(w0, b0), (w1, b1)] }
    }

    /// The forward pass, written out: ReLU between layers.
    fn forward(&self, x: &[f32]) -> Vec<f32> {
        let mut h = x.to_vec();
        for (n, (w, b)) in self.layers.iter().enumerate() {
            h = w.iter().zip(b).map(|(row, b)| row.iter().zip(&h).map(|(w, x)| w * x).sum::<f32>() + b).collect();
            if n + 1 < self.layers.len() {
                h.iter_mut().for_each(|v| *v = v.max(0.0));
            }
        }
        h
    }

    fn safetensors(&self) -> Vec<u8> {
        let mut buffers: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (i, (w, b)) in self.layers.iter().enumerate() {
            let wbytes: Vec<u8> = w.iter().flatten().flat_map(|v| v.to_le_bytes()).collect();
            buffers.push((format!("layers.{i}.weight"), vec![w.len(), w[0].len()], wbytes));
            buffers.push((format!("layers.{i}.bias"), vec![b.len()], b.iter().flat_map(|v| v.to_le_bytes()).collect()));
        }
        let views: Vec<(String, TensorView<'_>)> = buffers
            .iter()
            .map(|(name, shape, data)| (name.clone(), TensorView::new(Dtype::F32, shape.clone(), data).unwrap()))
            .collect();
        safetensors::serialize(views, None).unwrap()
    }
}

async fn serve_mlp(task: &str, dir: &std::path::Path) -> axum::Router {
    let network = Network::example();
    std::fs::write(dir.join("mlp.safetensors"), network.safetensors()).unwrap();
    let config =
        json!({"input_size": 3, "hidden_sizes": [4], "output_size": 2, "activation": "relu", "labels": ["cat", "dog"]});
    std::fs::write(dir.join("mlp.json"), config.to_string()).unwrap();
    let args = Args::parse_from([
        "ember-runtime".to_owned(),
        "--model-name=tabular".into(),
        format!("--model-uri={}", dir.join("mlp.safetensors").display()),
        format!("--config-uri={}", dir.join("mlp.json").display()),
        "--architecture=mlp".into(),
        format!("--task={task}"),
    ]);
    let mut runtime = Runtime::start(&args).await.unwrap();
    runtime.wait_ready().await.unwrap();
    let app = router(runtime.state());
    std::mem::forget(runtime);
    app
}

async fn infer(app: &axum::Router, body: Value) -> (StatusCode, Value) {
    let request = Request::post("/v2/models/tabular/infer").body(Body::from(body.to_string())).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

const ROWS: [[f32; 3]; 2] = [[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]];

#[tokio::test]
async fn classification_matches_hand_computed_network() {
    let dir = tempfile::tempdir().unwrap();
    let app = serve_mlp("classification", dir.path()).await;
    let (status, body) =
        infer(&app, json!({"inputs": [{"name": "features", "shape": [2, 3], "datatype": "FP32", "data": ROWS}]})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let network = Network::example();
    let want: Vec<Vec<f32>> = ROWS.iter().map(|r| network.forward(r)).collect();
    let names: Vec<&str> = body["outputs"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["logits", "probabilities", "label", "label_id"]);
    let logits = floats(&body["outputs"][0]["data"]);
    for (got, want) in logits.iter().zip(want.iter().flatten()) {
        assert!((got - want).abs() < 1e-5, "logit {got} != {want}");
    }
    let probabilities = floats(&body["outputs"][1]["data"]);
    assert!((probabilities[0] + probabilities[1] - 1.0).abs() < 1e-5);
    for (row, w) in want.iter().enumerate() {
        let best = usize::from(w[1] > w[0]);
        assert_eq!(body["outputs"][3]["data"][row], json!(best));
        assert_eq!(body["outputs"][2]["data"][row], json!(["cat", "dog"][best]));
    }
    let (status, body) =
        infer(&app, json!({"inputs": [{"name": "features", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}))
            .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("[batch, 3]"), "{body}");
    let (status, _) =
        infer(&app, json!({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x"]}]})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn regression_returns_raw_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let app = serve_mlp("regression", dir.path()).await;
    let (status, body) = infer(
        &app,
        json!({"inputs": [{"name": "features", "shape": [2, 3], "datatype": "FP32", "data": ROWS}], "outputs": [{"name": "prediction"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["outputs"][0]["shape"], json!([2, 2]));
    let network = Network::example();
    let want: Vec<f32> = ROWS.iter().flat_map(|r| network.forward(r)).collect();
    for (got, want) in floats(&body["outputs"][0]["data"]).iter().zip(&want) {
        assert!((got - want).abs() < 1e-5, "prediction {got} != {want}");
    }
}
