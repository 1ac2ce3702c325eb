//! Open Inference Protocol v2 tensors: decoding request inputs (JSON data or
//! the binary tensor data extension) into typed values, and encoding outputs
//! back (JSON or binary). Pure functions, no model and no I/O.
//!
//! Binary extension: the HTTP header `Inference-Header-Content-Length` gives
//! the size of the JSON header at the start of the body; the raw tensors
//! follow in input order, each input saying its byte size in
//! `parameters.binary_data_size`. Values are little-endian, row-major;
//! a BYTES element is a u32 little-endian length followed by its bytes.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Name of the header carrying the JSON header length.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// `$inference_request`.
#[derive(Debug, Deserialize)]
pub struct InferenceRequest {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub parameters: Map<String, Value>,
    pub inputs: Vec<RequestInput>,
    #[serde(default)]
    pub outputs: Option<Vec<RequestedOutput>>,
    /// Size of the JSON part of the body, set by [`parse_request`].
    #[serde(skip)]
    pub json_bytes: usize,
}

/// `$request_input`.
#[derive(Debug, Deserialize)]
pub struct RequestInput {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    #[serde(default)]
    pub parameters: Map<String, Value>,
    #[serde(default)]
    pub data: Option<Value>,
}

/// `$request_output`.
#[derive(Debug, Deserialize)]
pub struct RequestedOutput {
    pub name: String,
    #[serde(default)]
    pub parameters: Map<String, Value>,
}

/// Values of one decoded tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorValues {
    Fp32(Vec<f32>),
    Int64(Vec<i64>),
    Bytes(Vec<Vec<u8>>),
}

/// A decoded input.
#[derive(Debug, Clone, PartialEq)]
pub struct InputTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: TensorValues,
}

/// An output to send back.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: TensorValues,
}

/// Splits the body into the JSON request and the binary section, parsing
/// the JSON. `header_length` is the `Inference-Header-Content-Length` value.
pub fn parse_request(body: &[u8], header_length: Option<&str>) -> Result<(InferenceRequest, Vec<u8>)> {
    let (json, binary) = match header_length {
        Some(raw) => {
            let length: usize = raw
                .trim()
                .parse()
                .map_err(|_| Error::BadRequest(format!("{HEADER_LENGTH} must be a byte count, got '{raw}'")))?;
            if length > body.len() {
                return Err(Error::BadRequest(format!(
                    "{HEADER_LENGTH} is {length} but the body has only {} bytes",
                    body.len()
                )));
            }
            body.split_at(length)
        }
        None => (body, &[][..]),
    };
    let mut request: InferenceRequest = serde_json::from_slice(json)
        .map_err(|e| Error::BadRequest(format!("request is not a valid inference request: {e}")))?;
    request.json_bytes = json.len();
    Ok((request, binary.to_vec()))
}

/// Decodes every input, taking binary data in order from `binary`.
pub fn decode_inputs(request: &InferenceRequest, binary: &[u8]) -> Result<Vec<InputTensor>> {
    if request.inputs.is_empty() {
        return Err(Error::BadRequest("the request has no inputs".into()));
    }
    // Every element takes at least one byte of the body (JSON or binary),
    // so no honest tensor has more elements, or a longer dimension, than
    // the body has bytes. Bounding by it keeps shape arithmetic from
    // overflowing and later loops over rows from running away.
    let body_bytes = request.json_bytes + binary.len();
    let mut offset = 0usize;
    let mut decoded = Vec::with_capacity(request.inputs.len());
    for input in &request.inputs {
        let shape = checked_shape(input, body_bytes)?;
        let count = element_count(input, &shape, body_bytes)?;
        let values = match input.parameters.get("binary_data_size") {
            Some(size) => {
                let size = size.as_u64().ok_or_else(|| {
                    Error::BadRequest(format!("input '{}': binary_data_size must be a number", input.name))
                })? as usize;
                let end = offset.checked_add(size).filter(|&end| end <= binary.len()).ok_or_else(|| {
                    Error::BadRequest(format!(
                        "input '{}': binary_data_size {size} runs past the end of the body",
                        input.name
                    ))
                })?;
                let bytes = &binary[offset..end];
                offset = end;
                decode_binary(input, bytes)?
            }
            None => {
                let data = input.data.as_ref().ok_or_else(|| {
                    Error::BadRequest(format!("input '{}' has neither data nor binary data", input.name))
                })?;
                decode_json(input, data)?
            }
        };
        let actual = match &values {
            TensorValues::Fp32(v) => v.len(),
            TensorValues::Int64(v) => v.len(),
            TensorValues::Bytes(v) => v.len(),
        };
        if actual != count {
            return Err(Error::BadRequest(format!(
                "input '{}': shape {:?} needs {count} elements, the data has {actual}",
                input.name, shape
            )));
        }
        decoded.push(InputTensor { name: input.name.clone(), shape, values });
    }
    if offset != binary.len() {
        return Err(Error::BadRequest(format!(
            "{} bytes of binary data are not claimed by any input",
            binary.len() - offset
        )));
    }
    Ok(decoded)
}

fn checked_shape(input: &RequestInput, body_bytes: usize) -> Result<Vec<usize>> {
    input
        .shape
        .iter()
        .map(|&d| {
            let dimension = usize::try_from(d)
                .map_err(|_| Error::BadRequest(format!("input '{}': shape dimension {d} is negative", input.name)))?;
            if dimension > body_bytes {
                return Err(Error::BadRequest(format!(
                    "input '{}': shape dimension {d} is larger than the request ({body_bytes} bytes) can carry",
                    input.name
                )));
            }
            Ok(dimension)
        })
        .collect()
}

/// The number of elements `shape` holds, refused when it overflows or
/// exceeds what a body of `body_bytes` can carry.
fn element_count(input: &RequestInput, shape: &[usize], body_bytes: usize) -> Result<usize> {
    shape.iter().try_fold(1usize, |count, &d| count.checked_mul(d)).filter(|&count| count <= body_bytes).ok_or_else(
        || {
            Error::BadRequest(format!(
                "input '{}': shape {shape:?} holds more elements than the request ({body_bytes} bytes) can carry",
                input.name
            ))
        },
    )
}

fn unsupported(input: &RequestInput) -> Error {
    Error::BadRequest(format!(
        "input '{}': datatype '{}' is not supported (use FP32, INT64, INT32 or BYTES)",
        input.name, input.datatype
    ))
}

fn decode_json(input: &RequestInput, data: &Value) -> Result<TensorValues> {
    let mut flat = Vec::new();
    flatten(data, &mut flat);
    let wrong = |what: &str| {
        Error::BadRequest(format!("input '{}' is {}: every element must be {what}", input.name, input.datatype))
    };
    match input.datatype.as_str() {
        "FP32" | "FP64" => flat
            .iter()
            .map(|v| v.as_f64().map(|f| f as f32).ok_or_else(|| wrong("a number")))
            .collect::<Result<_>>()
            .map(TensorValues::Fp32),
        "INT64" | "INT32" => flat
            .iter()
            .map(|v| v.as_i64().ok_or_else(|| wrong("an integer")))
            .collect::<Result<_>>()
            .map(TensorValues::Int64),
        "BYTES" => flat
            .iter()
            .map(|v| v.as_str().map(|s| s.as_bytes().to_vec()).ok_or_else(|| wrong("a string")))
            .collect::<Result<_>>()
            .map(TensorValues::Bytes),
        _ => Err(unsupported(input)),
    }
}

/// Row-major flattening of nested JSON arrays (`[[1,2],[3]]` → 1,2,3).
fn flatten<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| flatten(item, out)),
        scalar => out.push(scalar),
    }
}

fn decode_binary(input: &RequestInput, bytes: &[u8]) -> Result<TensorValues> {
    let misaligned = |width: usize| {
        Error::BadRequest(format!(
            "input '{}': {} bytes of binary data is not a whole number of {width}-byte {} elements",
            input.name,
            bytes.len(),
            input.datatype
        ))
    };
    match input.datatype.as_str() {
        "FP32" => {
            if !bytes.len().is_multiple_of(4) {
                return Err(misaligned(4));
            }
            Ok(TensorValues::Fp32(
                bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            ))
        }
        "INT64" => {
            if !bytes.len().is_multiple_of(8) {
                return Err(misaligned(8));
            }
            Ok(TensorValues::Int64(
                bytes
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                    .collect(),
            ))
        }
        "INT32" => {
            if !bytes.len().is_multiple_of(4) {
                return Err(misaligned(4));
            }
            Ok(TensorValues::Int64(
                bytes.chunks_exact(4).map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))).collect(),
            ))
        }
        "BYTES" => {
            let mut elements = Vec::new();
            let mut rest = bytes;
            while !rest.is_empty() {
                let truncated = || Error::BadRequest(format!("input '{}': BYTES element is truncated", input.name));
                let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(truncated)?;
                let len = u32::from_le_bytes(*len) as usize;
                if tail.len() < len {
                    return Err(truncated());
                }
                elements.push(tail[..len].to_vec());
                rest = &tail[len..];
            }
            Ok(TensorValues::Bytes(elements))
        }
        _ => Err(unsupported(input)),
    }
}

impl InputTensor {
    /// BYTES elements as UTF-8 strings (text inputs).
    pub fn texts(&self) -> Result<Vec<String>> {
        match &self.values {
            TensorValues::Bytes(elements) => elements
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    String::from_utf8(e.clone()).map_err(|_| {
                        Error::BadRequest(format!("input '{}': element {i} is not valid UTF-8", self.name))
                    })
                })
                .collect(),
            _ => Err(Error::BadRequest(format!("input '{}' must be BYTES (text)", self.name))),
        }
    }

    /// Rows of a `[rows, cols]` tensor (a `[n]` tensor is `n` rows of one).
    pub fn rows(&self) -> Result<(usize, usize)> {
        match self.shape.as_slice() {
            [rows] => Ok((*rows, 1)),
            [rows, cols] => Ok((*rows, *cols)),
            other => Err(Error::BadRequest(format!(
                "input '{}' must have shape [batch] or [batch, n], got {other:?}",
                self.name
            ))),
        }
    }
}

/// `$inference_response`'s JSON part, serialised straight from the outputs
/// (no intermediate `serde_json::Value`: a 384-wide embedding would be 384
/// boxed numbers built only to be written out).
#[derive(Debug, Serialize)]
struct ResponseHeader<'a> {
    model_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outputs: Vec<ResponseOutput<'a>>,
}

/// `$response_output` JSON part.
#[derive(Debug, Serialize)]
struct ResponseOutput<'a> {
    name: &'a str,
    shape: &'a [usize],
    datatype: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinaryParameters>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a TensorValues>,
}

#[derive(Debug, Serialize)]
struct BinaryParameters {
    binary_data_size: usize,
}

/// JSON `data`: FP32 as f32 (shortest round-trip form), BYTES as strings.
impl Serialize for TensorValues {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            TensorValues::Fp32(v) => v.serialize(serializer),
            TensorValues::Int64(v) => v.serialize(serializer),
            TensorValues::Bytes(v) => serializer.collect_seq(v.iter().map(|b| String::from_utf8_lossy(b))),
        }
    }
}

impl TensorValues {
    fn datatype(&self) -> &'static str {
        match self {
            TensorValues::Fp32(_) => "FP32",
            TensorValues::Int64(_) => "INT64",
            TensorValues::Bytes(_) => "BYTES",
        }
    }

    fn append_binary(&self, out: &mut Vec<u8>) {
        match self {
            TensorValues::Fp32(v) => v.iter().for_each(|f| out.extend_from_slice(&f.to_le_bytes())),
            TensorValues::Int64(v) => v.iter().for_each(|i| out.extend_from_slice(&i.to_le_bytes())),
            TensorValues::Bytes(v) => v.iter().for_each(|b| {
                out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                out.extend_from_slice(b);
            }),
        }
    }
}

/// An encoded response: the body and, when any output is binary, the JSON
/// header length for `Inference-Header-Content-Length`.
#[derive(Debug)]
pub struct EncodedResponse {
    pub body: Vec<u8>,
    pub header_length: Option<usize>,
}

/// Encodes `outputs`; those listed in `binary` go into the binary section.
pub fn encode_response(
    model_name: &str,
    id: Option<&str>,
    outputs: &[OutputTensor],
    binary: impl Fn(&str) -> bool,
) -> Result<EncodedResponse> {
    let mut tail = Vec::new();
    let mut json_outputs = Vec::with_capacity(outputs.len());
    for output in outputs {
        let (parameters, data) = if binary(&output.name) {
            let start = tail.len();
            output.values.append_binary(&mut tail);
            (Some(BinaryParameters { binary_data_size: tail.len() - start }), None)
        } else {
            (None, Some(&output.values))
        };
        json_outputs.push(ResponseOutput {
            name: &output.name,
            shape: &output.shape,
            datatype: output.values.datatype(),
            parameters,
            data,
        });
    }
    let header = ResponseHeader { model_name, id, outputs: json_outputs };
    let mut body = serde_json::to_vec(&header).map_err(|e| Error::Inference(format!("encoding response: {e}")))?;
    let header_length = (!tail.is_empty() || outputs.iter().any(|o| binary(&o.name))).then_some(body.len());
    body.extend_from_slice(&tail);
    Ok(EncodedResponse { body, header_length })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn nested_json_data_is_flattened_row_major() {
        let body = br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4.5]]}]}"#;
        let (req, bin) = parse_request(body, None).unwrap();
        let inputs = decode_inputs(&req, &bin).unwrap();
        assert_eq!(inputs[0].values, TensorValues::Fp32(vec![1.0, 2.0, 3.0, 4.5]));
    }

    #[test]
    fn shape_and_data_must_agree() {
        let body = br#"{"inputs":[{"name":"x","shape":[3],"datatype":"INT64","data":[1,2]}]}"#;
        let (req, bin) = parse_request(body, None).unwrap();
        let err = decode_inputs(&req, &bin).unwrap_err().to_string();
        assert!(err.contains("needs 3 elements"), "{err}");
    }

    #[test]
    fn binary_bytes_and_int64_inputs_decode() {
        let header = br#"{"inputs":[{"name":"text","shape":[2],"datatype":"BYTES","parameters":{"binary_data_size":15}},{"name":"n","shape":[1],"datatype":"INT64","parameters":{"binary_data_size":8}}]}"#;
        let mut body = header.to_vec();
        for s in ["hello", "ab"] {
            body.extend_from_slice(&(s.len() as u32).to_le_bytes());
            body.extend_from_slice(s.as_bytes());
        }
        body.extend_from_slice(&7i64.to_le_bytes());
        let (req, bin) = parse_request(&body, Some(&header.len().to_string())).unwrap();
        let inputs = decode_inputs(&req, &bin).unwrap();
        assert_eq!(inputs[0].texts().unwrap(), vec!["hello", "ab"]);
        assert_eq!(inputs[1].values, TensorValues::Int64(vec![7]));
    }

    #[test]
    fn invalid_utf8_in_binary_text_is_named() {
        let header =
            br#"{"inputs":[{"name":"text","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":6}}]}"#;
        let mut body = header.to_vec();
        body.extend_from_slice(&2u32.to_le_bytes());
        body.extend_from_slice(&[0xff, 0xfe]);
        let (req, bin) = parse_request(&body, Some(&header.len().to_string())).unwrap();
        let inputs = decode_inputs(&req, &bin).unwrap();
        let err = inputs[0].texts().unwrap_err().to_string();
        assert!(err.contains("not valid UTF-8"), "{err}");
    }

    #[test]
    fn shapes_that_overflow_or_outgrow_the_body_are_refused() {
        for shape in ["[4294967296,4294967296]", "[4294967296,0]", "[0,4294967296]", "[1000,1000]"] {
            let body = format!(r#"{{"inputs":[{{"name":"input_ids","shape":{shape},"datatype":"INT64","data":[]}}]}}"#);
            let (req, bin) = parse_request(body.as_bytes(), None).unwrap();
            let err = decode_inputs(&req, &bin).unwrap_err().to_string();
            assert!(err.contains("can carry"), "{shape}: {err}");
        }
    }

    #[test]
    fn unsupported_datatype_is_rejected_by_name() {
        let body = br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP16","data":[1]}]}"#;
        let (req, bin) = parse_request(body, None).unwrap();
        let err = decode_inputs(&req, &bin).unwrap_err().to_string();
        assert!(err.contains("FP16") && err.contains("'x'"), "{err}");
    }

    #[test]
    fn binary_output_round_trips() {
        let outputs =
            vec![OutputTensor { name: "y".into(), shape: vec![2], values: TensorValues::Fp32(vec![1.5, -2.0]) }];
        let encoded = encode_response("m", Some("42"), &outputs, |_| true).unwrap();
        let len = encoded.header_length.unwrap();
        let header: Value = serde_json::from_slice(&encoded.body[..len]).unwrap();
        assert_eq!(header["id"], "42");
        assert_eq!(header["outputs"][0]["parameters"]["binary_data_size"], 8);
        let tail = &encoded.body[len..];
        assert_eq!(f32::from_le_bytes([tail[4], tail[5], tail[6], tail[7]]), -2.0);
    }

    #[test]
    fn json_output_carries_every_datatype_and_the_id() {
        let outputs = vec![
            OutputTensor { name: "e".into(), shape: vec![1, 2], values: TensorValues::Fp32(vec![0.1, -2.5]) },
            OutputTensor { name: "i".into(), shape: vec![1], values: TensorValues::Int64(vec![-7]) },
            OutputTensor { name: "s".into(), shape: vec![1], values: TensorValues::Bytes(vec![b"ok".to_vec()]) },
        ];
        let encoded = encode_response("m", Some("x"), &outputs, |_| false).unwrap();
        assert_eq!(encoded.header_length, None);
        let body: Value = serde_json::from_slice(&encoded.body).unwrap();
        assert_eq!(body["model_name"], "m");
        assert_eq!(body["id"], "x");
        // FP32 values are written in f32's shortest form and read back exactly.
        let e = &body["outputs"][0];
        assert_eq!((e["name"].as_str(), e["datatype"].as_str()), (Some("e"), Some("FP32")));
        assert_eq!(e["shape"], serde_json::json!([1, 2]));
        let values: Vec<f32> = e["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert_eq!(values, vec![0.1, -2.5]);
        assert!(e.get("parameters").is_none());
        assert_eq!(body["outputs"][1]["data"], serde_json::json!([-7]));
        assert_eq!(body["outputs"][2]["data"], serde_json::json!(["ok"]));
        // Without an id there is no id field.
        let body: Value =
            serde_json::from_slice(&encode_response("m", None, &outputs, |_| false).unwrap().body).unwrap();
        assert!(body.get("id").is_none());
    }
}
