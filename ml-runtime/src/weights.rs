//! Reads named float tensors out of a safetensors file and moves them onto a
//! Burn device. Models ask for tensors by their Hugging Face names; this
//! module only knows the file format, not any architecture.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

/// A safetensors file held in memory (the header is validated on open).
#[derive(Debug)]
pub struct SafetensorsFile {
    path: PathBuf,
    bytes: Vec<u8>,
}

/// Checkpoints saved from `BertForSequenceClassification` (rather than
/// `BertModel`) keep the encoder under this prefix; look-ups fall back to it.
const WRAPPED_MODEL_PREFIX: &str = "bert.";

/// A tensor copied out of the file, in row-major f32.
#[derive(Debug, Clone)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl SafetensorsFile {
    /// Reads and validates the file. A truncated or garbled file fails here,
    /// before anything reports ready.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::model_file(path, e))?;
        SafeTensors::deserialize(&bytes)
            .map_err(|e| Error::model_file(path, format!("not a valid safetensors file: {e}")))?;
        Ok(Self { path: path.to_owned(), bytes })
    }

    /// Wraps bytes already in memory (used by tests that build small models).
    pub fn from_bytes(path: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Self> {
        let path = path.into();
        SafeTensors::deserialize(&bytes)
            .map_err(|e| Error::model_file(&path, format!("not a valid safetensors file: {e}")))?;
        Ok(Self { path, bytes })
    }

    fn parsed(&self) -> Result<SafeTensors<'_>> {
        SafeTensors::deserialize(&self.bytes).map_err(|e| Error::model_file(&self.path, e))
    }

    /// Tensor names as stored in the file.
    pub fn names(&self) -> Result<Vec<String>> {
        Ok(self.parsed()?.names().into_iter().map(str::to_owned).collect())
    }

    /// The stored name of `name`: itself, or under the wrapped-model prefix.
    fn resolve(&self, parsed: &SafeTensors<'_>, name: &str) -> Option<String> {
        let wrapped = format!("{WRAPPED_MODEL_PREFIX}{name}");
        [name.to_owned(), wrapped].into_iter().find(|candidate| parsed.tensor(candidate).is_ok())
    }

    /// Shape of tensor `name`, if the file has it.
    pub fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        let parsed = self.parsed().ok()?;
        let full = self.resolve(&parsed, name)?;
        parsed.tensor(&full).ok().map(|v| v.shape().to_vec())
    }

    /// Copies tensor `name` out as f32, checking it has `expected_shape`.
    pub fn host_tensor(&self, name: &str, expected_shape: &[usize]) -> Result<HostTensor> {
        let parsed = self.parsed()?;
        let full = self
            .resolve(&parsed, name)
            .ok_or_else(|| Error::model_file(&self.path, format!("missing tensor '{name}'")))?;
        let view = parsed.tensor(&full).map_err(|e| Error::model_file(&self.path, e))?;
        if view.shape() != expected_shape {
            return Err(Error::model_file(
                &self.path,
                format!("tensor '{full}' has shape {:?}, the config implies {expected_shape:?}", view.shape()),
            ));
        }
        let values = match view.dtype() {
            Dtype::F32 => view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            other => {
                return Err(Error::model_file(
                    &self.path,
                    format!("tensor '{full}' is {other:?}; only F32 weights are supported"),
                ));
            }
        };
        Ok(HostTensor { shape: view.shape().to_vec(), values })
    }
}

impl HostTensor {
    /// Swaps the two axes of a matrix. PyTorch stores `Linear` weights as
    /// `[out, in]`; Burn's `linear` wants `[in, out]`.
    pub fn transposed(&self) -> HostTensor {
        let (rows, cols) = (self.shape[0], self.shape[1]);
        let mut values = vec![0.0; self.values.len()];
        for r in 0..rows {
            for c in 0..cols {
                values[c * rows + r] = self.values[r * cols + c];
            }
        }
        HostTensor { shape: vec![cols, rows], values }
    }

    /// Joins matrices along their columns (`[in, a] ++ [in, b] -> [in, a+b]`),
    /// or vectors end to end. Used to fuse the query/key/value projections
    /// into one matmul.
    pub fn concat_columns(parts: &[HostTensor]) -> HostTensor {
        if parts.iter().all(|p| p.shape.len() == 1) {
            let values: Vec<f32> = parts.iter().flat_map(|p| p.values.iter().copied()).collect();
            return HostTensor { shape: vec![values.len()], values };
        }
        let rows = parts[0].shape[0];
        let cols: usize = parts.iter().map(|p| p.shape[1]).sum();
        let mut values = Vec::with_capacity(rows * cols);
        for r in 0..rows {
            for p in parts {
                let w = p.shape[1];
                values.extend_from_slice(&p.values[r * w..(r + 1) * w]);
            }
        }
        HostTensor { shape: vec![rows, cols], values }
    }

    /// Uploads to `device` as a rank-`D` tensor.
    pub fn to_device<const D: usize>(self, device: &Device) -> Tensor<D> {
        Tensor::from_data(TensorData::new(self.values, self.shape), device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: usize, cols: usize) -> HostTensor {
        HostTensor { shape: vec![rows, cols], values: (0..rows * cols).map(|v| v as f32).collect() }
    }

    #[test]
    fn transpose_moves_rows_to_columns() {
        let t = matrix(2, 3).transposed();
        assert_eq!(t.shape, vec![3, 2]);
        assert_eq!(t.values, vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    }

    #[test]
    fn concat_columns_interleaves_rows() {
        let joined = HostTensor::concat_columns(&[matrix(2, 1), matrix(2, 2)]);
        assert_eq!(joined.shape, vec![2, 3]);
        assert_eq!(joined.values, vec![0.0, 0.0, 1.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn garbage_is_not_a_safetensors_file() {
        let err = SafetensorsFile::from_bytes("x", b"definitely not safetensors".to_vec());
        assert!(matches!(err, Err(Error::ModelFile { .. })));
    }
}
