//! A real ember-runtime on loopback serving a tiny MLP: what inference
//! through ember-api is checked and measured against.

use clap::Parser;
use ember_runtime::args::Args;
use ember_runtime::server::Runtime;
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use serde_json::json;

/// Writes a 3 → 2 linear regression model and serves it as `tabular`.
pub async fn serve_runtime(dir: &std::path::Path) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let weight: Vec<u8> = [0.5f32, -1.0, 0.25, 2.0, 0.0, -0.5].iter().flat_map(|v| v.to_le_bytes()).collect();
    let bias: Vec<u8> = [0.1f32, -0.2].iter().flat_map(|v| v.to_le_bytes()).collect();
    let views = vec![
        ("layers.0.weight".to_owned(), TensorView::new(Dtype::F32, vec![2, 3], &weight).unwrap()),
        ("layers.0.bias".to_owned(), TensorView::new(Dtype::F32, vec![2], &bias).unwrap()),
    ];
    std::fs::write(dir.join("model.safetensors"), safetensors::serialize(views, None).unwrap()).unwrap();
    let config = json!({"input_size": 3, "hidden_sizes": [], "output_size": 2, "activation": "relu"});
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let args = Args::parse_from([
        "ember-runtime".to_owned(),
        "--model-name=tabular".into(),
        format!("--model-uri={}", dir.join("model.safetensors").display()),
        format!("--config-uri={}", dir.join("config.json").display()),
        "--architecture=mlp".into(),
        "--task=regression".into(),
    ]);
    serve(&args).await
}

/// Serves the model `args` describe on a free loopback port, ready to
/// answer, until the returned sender is used (or dropped).
pub async fn serve(args: &Args) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let mut runtime = Runtime::start(args).await.unwrap();
    runtime.wait_ready().await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(runtime.serve(listener, async move {
        let _ = stopped.await;
    }));
    (address, stop)
}
