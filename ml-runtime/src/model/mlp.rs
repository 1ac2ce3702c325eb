//! A configurable multi-layer perceptron for tabular classification and
//! regression, loaded from a small JSON config plus safetensors weights.
//!
//! Weight names follow PyTorch's `nn.Linear` layout: `layers.{i}.weight`
//! `[out, in]` and `layers.{i}.bias` `[out]` for `i` in `0..=hidden.len()`.

use std::path::Path;

use burn::tensor::activation::{relu, tanh};
use burn::tensor::module::linear;
use burn::tensor::{Device, Tensor, TensorData};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::weights::SafetensorsFile;

/// Non-linearity between the hidden layers.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Relu,
    Tanh,
    Gelu,
}

/// Shape of the network (`config.json` for `--architecture mlp`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpConfig {
    /// Number of input features per row.
    pub input_size: usize,
    /// Widths of the hidden layers, in order; may be empty (linear model).
    #[serde(default)]
    pub hidden_sizes: Vec<usize>,
    /// Number of outputs (classes for classification, targets for regression).
    pub output_size: usize,
    #[serde(default = "default_activation")]
    pub activation: Activation,
    /// Class names for classification; `LABEL_{i}` when absent.
    #[serde(default)]
    pub labels: Vec<String>,
}

fn default_activation() -> Activation {
    Activation::Relu
}

impl MlpConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::model_file(path, e))?;
        let config: Self =
            serde_json::from_str(&text).map_err(|e| Error::model_file(path, format!("not an MLP config: {e}")))?;
        if config.input_size == 0 || config.output_size == 0 || config.hidden_sizes.contains(&0) {
            return Err(Error::model_file(path, "layer sizes must be positive"));
        }
        if !config.labels.is_empty() && config.labels.len() != config.output_size {
            return Err(Error::model_file(
                path,
                format!("{} labels for {} outputs", config.labels.len(), config.output_size),
            ));
        }
        Ok(config)
    }

    /// Layer widths from input to output.
    fn widths(&self) -> Vec<usize> {
        let mut widths = vec![self.input_size];
        widths.extend(&self.hidden_sizes);
        widths.push(self.output_size);
        widths
    }

    /// Class name for output `i`.
    pub fn label(&self, i: usize) -> String {
        self.labels.get(i).cloned().unwrap_or_else(|| format!("LABEL_{i}"))
    }
}

/// The loaded network.
#[derive(Debug)]
pub struct Mlp {
    config: MlpConfig,
    device: Device,
    layers: Vec<(Tensor<2>, Tensor<1>)>,
}

impl Mlp {
    pub fn load(config: MlpConfig, file: &SafetensorsFile, device: &Device) -> Result<Self> {
        let widths = config.widths();
        let layers = widths
            .windows(2)
            .enumerate()
            .map(|(i, pair)| {
                let (inp, out) = (pair[0], pair[1]);
                let weight =
                    file.host_tensor(&format!("layers.{i}.weight"), &[out, inp])?.transposed().to_device(device);
                let bias = file.host_tensor(&format!("layers.{i}.bias"), &[out])?.to_device(device);
                Ok((weight, bias))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { config, device: device.clone(), layers })
    }

    pub fn config(&self) -> &MlpConfig {
        &self.config
    }

    /// Runs `rows` feature rows (`rows * input_size` values, row-major);
    /// returns raw outputs `[rows, output_size]`.
    pub fn forward(&self, rows: usize, features: Vec<f32>) -> Tensor<2> {
        let mut x = Tensor::<2>::from_data(TensorData::new(features, [rows, self.config.input_size]), &self.device);
        let last = self.layers.len() - 1;
        for (i, (weight, bias)) in self.layers.iter().enumerate() {
            x = linear(x, weight.clone(), Some(bias.clone()));
            if i < last {
                x = match self.config.activation {
                    Activation::Relu => relu(x),
                    Activation::Tanh => tanh(x),
                    Activation::Gelu => burn::tensor::activation::gelu(x),
                };
            }
        }
        x
    }
}
