//! Real all-MiniLM-L6-v2 weights through the Burn encoder must reproduce the
//! committed numpy reference embeddings (cosine ≥ 0.999 per sentence), both
//! one sentence at a time and as one packed batch of mixed lengths.
#![allow(clippy::unwrap_used)]

mod support;

use burn::tensor::Device;
use ember_runtime::model::{Architecture, Item, Model, ModelFiles, Task};

fn load_minilm(device: &Device) -> Model {
    let dir = support::minilm_dir();
    let files = ModelFiles {
        weights: &dir.join("model.safetensors"),
        config: &dir.join("config.json"),
        tokenizer: Some(&dir.join("tokenizer.json")),
    };
    Model::load(Architecture::Bert, Task::Embedding, &files, 256, device).unwrap()
}

fn check_against_reference(device: &Device) {
    let model = load_minilm(device);
    let reference = support::reference_sentences();
    let items: Vec<Item> = reference.iter().map(|s| Item::Text(s.text.clone())).collect();

    let batched = model.infer(items.clone()).unwrap();
    assert_eq!(batched.len(), reference.len());
    for (got, want) in batched.iter().zip(&reference) {
        let cos = support::cosine(&got.values, &want.embedding);
        assert!(cos >= 0.999, "batched {:?}: cosine {cos}", want.text);
        assert_eq!(got.tokens, want.tokens, "token count of {:?}", want.text);
        let norm: f32 = got.values.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "embedding not L2-normalised: {norm}");
    }

    // Alone, a sentence is not padded at all: results must agree too.
    for (item, want) in items.into_iter().zip(&reference).take(3) {
        let got = model.infer(vec![item]).unwrap().remove(0);
        let cos = support::cosine(&got.values, &want.embedding);
        assert!(cos >= 0.999, "single {:?}: cosine {cos}", want.text);
    }
}

#[test]
fn flex_embeddings_match_numpy_reference() {
    check_against_reference(&Device::flex());
}

/// Same check on a wgpu device (e.g. Mesa lavapipe). Slow in software, so it
/// runs only when EMBER_TEST_WGPU=1 and the `wgpu` feature is on.
#[cfg(feature = "wgpu")]
#[test]
fn wgpu_embeddings_match_numpy_reference() {
    if std::env::var("EMBER_TEST_WGPU").as_deref() != Ok("1") {
        eprintln!("skipped: set EMBER_TEST_WGPU=1 to run on a Vulkan/wgpu device");
        return;
    }
    check_against_reference(&Device::wgpu(burn::tensor::DeviceKind::DefaultDevice));
}
