//! Open Inference Protocol v2 (KServe v2 / Triton) REST endpoints: server
//! live/ready/metadata, model ready/metadata and inference, with JSON or
//! binary tensor data.
//!
//! Tensor names: text models take `text` (BYTES `[batch]`) or `input_ids`
//! (+ `attention_mask`, optional all-zero `token_type_ids`) INT64
//! `[batch, tokens]`; MLPs take one FP32 `[batch, features]` input. Outputs
//! by task: `embedding`; `logits`, `probabilities`, `label`, `label_id`;
//! `prediction`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::v2_codec::{
    HEADER_LENGTH, InferenceRequest, InputTensor, OutputTensor, TensorValues, decode_inputs, encode_response,
    parse_request,
};
use super::{AppState, body_rejection};
use crate::error::{Error, Result};
use crate::model::{InputKind, Item, ItemOutput, ModelInfo, Task};

/// The only model version this server has.
const MODEL_VERSION: &str = "1";

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(server_live))
        .route("/v2/health/ready", get(server_ready))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/versions/{version}", get(versioned_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/versions/{version}/ready", get(versioned_ready))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(versioned_infer))
}

async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": "ember-runtime",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data"],
    }))
}

async fn server_live() -> Json<Value> {
    Json(json!({ "live": true }))
}

async fn server_ready(State(state): State<Arc<AppState>>) -> Response {
    let ready = state.is_ready();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({ "ready": ready }))).into_response()
}

fn check_version(version: &str) -> Result<()> {
    if version == MODEL_VERSION {
        Ok(())
    } else {
        Err(Error::BadRequest(format!("model version '{version}' does not exist; the only version is {MODEL_VERSION}")))
    }
}

async fn model_ready(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Response> {
    if name != state.model_name {
        return Err(Error::UnknownModel(name));
    }
    let ready = state.is_ready();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    Ok((status, Json(json!({ "name": name, "ready": ready }))).into_response())
}

async fn versioned_ready(
    state: State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response> {
    check_version(&version)?;
    model_ready(state, Path(name)).await
}

async fn model_metadata(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Json<Value>> {
    let info = state.check_model(&name)?;
    let (inputs, outputs) = signature(info);
    Ok(Json(json!({
        "name": name,
        "versions": [MODEL_VERSION],
        "platform": "burn_safetensors",
        "inputs": inputs,
        "outputs": outputs,
        "parameters": { "architecture": info.architecture, "task": info.task },
    })))
}

async fn versioned_metadata(
    state: State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>> {
    check_version(&version)?;
    model_metadata(state, Path(name)).await
}

fn meta(name: &str, datatype: &str, shape: &[i64]) -> Value {
    json!({ "name": name, "datatype": datatype, "shape": shape })
}

/// `$metadata_tensor` lists for inputs and outputs (`-1` = variable).
fn signature(info: &ModelInfo) -> (Vec<Value>, Vec<Value>) {
    let width = info.output_width as i64;
    let inputs = match info.input {
        InputKind::Text { .. } => vec![
            meta("text", "BYTES", &[-1]),
            meta("input_ids", "INT64", &[-1, -1]),
            meta("attention_mask", "INT64", &[-1, -1]),
        ],
        InputKind::Features { width } => vec![meta("features", "FP32", &[-1, width as i64])],
    };
    let outputs = match info.task {
        Task::Embedding => vec![meta("embedding", "FP32", &[-1, width])],
        Task::Classification => vec![
            meta("logits", "FP32", &[-1, width]),
            meta("probabilities", "FP32", &[-1, width]),
            meta("label", "BYTES", &[-1]),
            meta("label_id", "INT64", &[-1]),
        ],
        Task::Regression => vec![meta("prediction", "FP32", &[-1, width])],
    };
    (inputs, outputs)
}

async fn versioned_infer(
    state: State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    check_version(&version)?;
    infer(state, Path(name), headers, body).await
}

async fn infer(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let body = body.map_err(|r| body_rejection(r, state.limits.max_request_bytes))?;
    let info = state.check_model(&name)?.clone();
    let header_length = match headers.get(HEADER_LENGTH) {
        Some(value) => {
            Some(value.to_str().map_err(|_| Error::BadRequest(format!("{HEADER_LENGTH} is not ASCII")))?.to_owned())
        }
        None => None,
    };
    let (request, binary) = parse_request(&body, header_length.as_deref())?;
    let inputs = decode_inputs(&request, &binary)?;
    let items = items_from(&info, &inputs)?;
    let (outputs, usage) = state.run(items).await?;
    let outputs = output_tensors(&info, outputs);
    let selected = select_outputs(&request, outputs)?;
    let encoded = encode_response(&name, request.id.as_deref(), &selected, |output| wants_binary(&request, output))?;
    let mut response = Response::new(Body::from(encoded.body));
    let headers = response.headers_mut();
    usage.insert_into(headers);
    match encoded.header_length {
        Some(length) => {
            headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/octet-stream"));
            headers.insert(HEADER_LENGTH, header::HeaderValue::from(length));
        }
        None => {
            headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
        }
    }
    Ok(response)
}

fn find<'a>(inputs: &'a [InputTensor], name: &str) -> Option<&'a InputTensor> {
    inputs.iter().find(|i| i.name == name)
}

fn reject_unknown(inputs: &[InputTensor], known: &[&str]) -> Result<()> {
    match inputs.iter().find(|i| !known.contains(&i.name.as_str())) {
        Some(extra) => Err(Error::BadRequest(format!("unexpected input '{}'; this model takes {known:?}", extra.name))),
        None => Ok(()),
    }
}

/// Turns decoded inputs into batch items for the model.
fn items_from(info: &ModelInfo, inputs: &[InputTensor]) -> Result<Vec<Item>> {
    match info.input {
        InputKind::Text { .. } => {
            if let Some(text) = find(inputs, "text") {
                reject_unknown(inputs, &["text"])?;
                let (_, cols) = text.rows()?;
                if cols != 1 {
                    return Err(Error::BadRequest("input 'text' must have shape [batch] or [batch, 1]".into()));
                }
                return Ok(text.texts()?.into_iter().map(Item::Text).collect());
            }
            let ids = find(inputs, "input_ids").ok_or_else(|| {
                Error::BadRequest("this model needs input 'text' (BYTES) or 'input_ids' (INT64)".into())
            })?;
            reject_unknown(inputs, &["input_ids", "attention_mask", "token_type_ids"])?;
            token_items(ids, find(inputs, "attention_mask"), find(inputs, "token_type_ids"))
        }
        InputKind::Features { width } => {
            let [features] = inputs else {
                return Err(Error::BadRequest("this model takes exactly one FP32 input of feature rows".into()));
            };
            let TensorValues::Fp32(values) = &features.values else {
                return Err(Error::BadRequest(format!("input '{}' must be FP32", features.name)));
            };
            let (_, cols) = features.rows()?;
            if cols != width || features.shape.len() != 2 {
                return Err(Error::BadRequest(format!(
                    "input '{}' must have shape [batch, {width}], got {:?}",
                    features.name, features.shape
                )));
            }
            Ok(values.chunks_exact(width).map(|row| Item::Features(row.to_vec())).collect())
        }
    }
}

fn int64_matrix<'a>(input: &'a InputTensor, shape: &[usize]) -> Result<&'a [i64]> {
    let TensorValues::Int64(values) = &input.values else {
        return Err(Error::BadRequest(format!("input '{}' must be INT64", input.name)));
    };
    if input.shape != shape {
        return Err(Error::BadRequest(format!(
            "input '{}' must have the shape of input_ids {shape:?}, got {:?}",
            input.name, input.shape
        )));
    }
    Ok(values)
}

/// Rows of `input_ids`, cut at their attention mask (right padding).
fn token_items(ids: &InputTensor, mask: Option<&InputTensor>, types: Option<&InputTensor>) -> Result<Vec<Item>> {
    let (rows, cols) = ids.rows()?;
    if ids.shape.len() != 2 {
        return Err(Error::BadRequest("input 'input_ids' must have shape [batch, tokens]".into()));
    }
    let id_values = int64_matrix(ids, &ids.shape)?;
    if let Some(types) = types
        && int64_matrix(types, &ids.shape)?.iter().any(|&t| t != 0)
    {
        return Err(Error::BadRequest("token_type_ids must be all 0: sentence pairs are not supported".into()));
    }
    let mask = mask.map(|m| int64_matrix(m, &ids.shape)).transpose()?;
    (0..rows)
        .map(|r| {
            let row = &id_values[r * cols..(r + 1) * cols];
            let length = match mask {
                None => cols,
                Some(mask) => {
                    let mask_row = &mask[r * cols..(r + 1) * cols];
                    let length = mask_row.iter().take_while(|&&m| m == 1).count();
                    if mask_row[length..].iter().any(|&m| m != 0) {
                        return Err(Error::BadRequest(format!(
                            "attention_mask row {r} must be ones followed by zeros (right padding)"
                        )));
                    }
                    length
                }
            };
            Ok(Item::Tokens(row[..length].to_vec()))
        })
        .collect()
}

/// Every output the task produces, for the whole batch.
fn output_tensors(info: &ModelInfo, outputs: Vec<ItemOutput>) -> Vec<OutputTensor> {
    let rows = outputs.len();
    let width = info.output_width;
    let flat: Vec<f32> = outputs.iter().flat_map(|o| o.values.iter().copied()).collect();
    let tensor =
        |name: &str, values: TensorValues, shape: Vec<usize>| OutputTensor { name: name.into(), shape, values };
    match info.task {
        Task::Embedding => vec![tensor("embedding", TensorValues::Fp32(flat), vec![rows, width])],
        Task::Regression => vec![tensor("prediction", TensorValues::Fp32(flat), vec![rows, width])],
        Task::Classification => {
            let probabilities: Vec<f32> = outputs.iter().flat_map(|o| softmax(&o.values)).collect();
            let best: Vec<usize> = outputs.iter().map(|o| argmax(&o.values)).collect();
            let labels = info.labels.clone().unwrap_or_default();
            let names = best
                .iter()
                .map(|&i| labels.get(i).cloned().unwrap_or_else(|| format!("LABEL_{i}")).into_bytes())
                .collect();
            vec![
                tensor("logits", TensorValues::Fp32(flat), vec![rows, width]),
                tensor("probabilities", TensorValues::Fp32(probabilities), vec![rows, width]),
                tensor("label", TensorValues::Bytes(names), vec![rows]),
                tensor("label_id", TensorValues::Int64(best.iter().map(|&i| i as i64).collect()), vec![rows]),
            ]
        }
    }
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

fn argmax(values: &[f32]) -> usize {
    values.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &v)| if v > best.1 { (i, v) } else { best }).0
}

/// Keeps the requested outputs (all when none are named), in request order.
fn select_outputs(request: &InferenceRequest, mut all: Vec<OutputTensor>) -> Result<Vec<OutputTensor>> {
    let Some(requested) = &request.outputs else { return Ok(all) };
    if requested.is_empty() {
        return Ok(all);
    }
    requested
        .iter()
        .map(|wanted| {
            let position = all
                .iter()
                .position(|o| o.name == wanted.name)
                .ok_or_else(|| Error::BadRequest(format!("unknown output '{}'", wanted.name)))?;
            Ok(all.swap_remove(position))
        })
        .collect()
}

/// Binary when the output asks for it, else the request-wide default.
fn wants_binary(request: &InferenceRequest, output: &str) -> bool {
    let per_output = request
        .outputs
        .iter()
        .flatten()
        .find(|o| o.name == output)
        .and_then(|o| o.parameters.get("binary_data"))
        .and_then(Value::as_bool);
    per_output.or_else(|| request.parameters.get("binary_data_output").and_then(Value::as_bool)).unwrap_or(false)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::Architecture;

    fn text_model() -> ModelInfo {
        ModelInfo {
            architecture: Architecture::Bert,
            task: Task::Embedding,
            output_width: 4,
            input: InputKind::Text { vocab_size: 100, max_positions: 16 },
            labels: None,
        }
    }

    fn feature_model() -> ModelInfo {
        ModelInfo {
            architecture: Architecture::Mlp,
            task: Task::Regression,
            output_width: 1,
            input: InputKind::Features { width: 3 },
            labels: None,
        }
    }

    /// Everything a request goes through before the model: parse, decode,
    /// turn into items, validate. Must answer Ok or a 400, never panic.
    fn decode_for(info: &ModelInfo, body: &[u8], header_length: Option<&str>) -> Result<Vec<Item>> {
        let (request, binary) = parse_request(body, header_length)?;
        let inputs = decode_inputs(&request, &binary)?;
        let items = items_from(info, &inputs)?;
        items.iter().try_for_each(|item| info.validate(item))?;
        Ok(items)
    }

    fn assert_no_panic_and_400(body: &[u8], header_length: Option<&str>) {
        for info in [text_model(), feature_model()] {
            if let Err(e) = decode_for(&info, body, header_length) {
                assert!(matches!(e, Error::BadRequest(_)), "not a 400: {e}");
            }
        }
    }

    #[test]
    fn the_reported_overflowing_shape_is_a_400() {
        let body = br#"{"inputs":[{"name":"input_ids","shape":[4294967296,4294967296],"datatype":"INT64","data":[]}]}"#;
        let err = decode_for(&text_model(), body, None).unwrap_err();
        assert!(matches!(err, Error::BadRequest(_)), "{err}");
    }

    fn dimension() -> impl Strategy<Value = i64> {
        prop_oneof![0i64..5, Just(-1i64), Just(i64::MAX), Just(1i64 << 32), Just(1i64 << 31), any::<i64>()]
    }

    fn json_data() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<f32>().prop_map(|f| serde_json::Number::from_f64(f64::from(f)).map_or(Value::Null, Value::Number)),
            "[a-z ]{0,8}".prop_map(Value::from),
            Just(Value::Null),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| prop::collection::vec(inner, 0..6).prop_map(Value::Array))
    }

    prop_compose! {
        fn input()(
            name in prop_oneof![Just("text"), Just("input_ids"), Just("attention_mask"), Just("token_type_ids"), Just("features"), Just("x")],
            shape in prop::collection::vec(dimension(), 0..4),
            datatype in prop_oneof![Just("BYTES"), Just("INT64"), Just("INT32"), Just("FP32"), Just("FP64"), Just("FP16")],
            data in json_data(),
            binary_size in prop::option::of(prop_oneof![0u64..64, any::<u64>()]),
        ) -> Value {
            let mut input = json!({ "name": name, "shape": shape, "datatype": datatype, "data": data });
            if let Some(size) = binary_size {
                input["parameters"] = json!({ "binary_data_size": size });
            }
            input
        }
    }

    proptest! {
        #[test]
        fn random_requests_never_panic(
            inputs in prop::collection::vec(input(), 0..4),
            tail in prop::collection::vec(any::<u8>(), 0..64),
            header_length in prop::option::of(prop_oneof![Just(None::<usize>), (0usize..512).prop_map(Some)]),
        ) {
            let header = serde_json::to_vec(&json!({ "inputs": inputs })).unwrap();
            let mut body = header.clone();
            body.extend_from_slice(&tail);
            // A consistent header length, a random one, or a garbage header.
            let length = match header_length {
                None => None,
                Some(None) => Some(header.len().to_string()),
                Some(Some(n)) => Some(n.to_string()),
            };
            assert_no_panic_and_400(&body, length.as_deref());
        }

        /// Shapes whose product overflows or dwarfs the data: the classic
        /// wrap-to-zero that slipped past the element count check.
        #[test]
        fn huge_shapes_with_little_data_never_panic(
            name in prop_oneof![Just("input_ids"), Just("text"), Just("features")],
            shape in prop::collection::vec(prop_oneof![Just(0i64), Just(1), Just(3), Just(1 << 31), Just(1 << 32), Just(i64::MAX)], 1..4),
            datatype in prop_oneof![Just("INT64"), Just("BYTES"), Just("FP32")],
        ) {
            let body = serde_json::to_vec(&json!({ "inputs": [{ "name": name, "shape": shape, "datatype": datatype, "data": [] }] })).unwrap();
            assert_no_panic_and_400(&body, None);
        }

        #[test]
        fn random_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256), length in prop::option::of("[0-9a-z]{0,4}")) {
            assert_no_panic_and_400(&body, length.as_deref());
        }
    }

    #[test]
    fn softmax_sums_to_one_and_argmax_picks_largest() {
        let p = softmax(&[1.0, 3.0, 2.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(argmax(&[1.0, 3.0, 2.0]), 1);
    }
}
