//! Shared by ember-api's integration tests: generated ES256 signing keys,
//! a local JWKS endpoint standing in for the identity provider, claims, and
//! spawning routers on loopback.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod cluster;
pub mod runtime;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

pub const ISSUER: &str = "https://idp.example";
pub const AUDIENCE: &str = "ember";

/// A signing key and its public JWK.
pub struct SigningKey {
    pub kid: String,
    pub private: EncodingKey,
    pub jwk: Value,
}

impl SigningKey {
    pub fn generate(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate().unwrap(); // ECDSA P-256
        let point = pair.public_key_raw(); // 0x04 || x || y
        assert_eq!(point.len(), 65);
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..]),
        });
        Self { kid: kid.to_owned(), private: EncodingKey::from_ec_der(&pair.serialize_der()), jwk }
    }

    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        encode(&header, claims, &self.private).unwrap()
    }
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

pub fn claims() -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice@acme.example", "exp": now() + 600, "iat": now(), "nbf": now() - 5, "groups": ["acme-data-science"]})
}

pub fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

pub fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

/// A local identity provider endpoint serving a JWKS document that tests
/// can swap, counting fetches.
#[derive(Clone)]
pub struct Jwks {
    document: Arc<Mutex<Option<Value>>>,
    fetches: Arc<AtomicUsize>,
    pub url: String,
}

pub fn key_set(keys: &[&SigningKey]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()})
}

impl Jwks {
    pub async fn serve(keys: &[&SigningKey]) -> Self {
        let document = Arc::new(Mutex::new(Some(key_set(keys))));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (doc, count) = (document.clone(), fetches.clone());
        let app = Router::new().route(
            "/jwks.json",
            get(move || {
                let (doc, count) = (doc.clone(), count.clone());
                async move {
                    count.fetch_add(1, Ordering::SeqCst);
                    match doc.lock().unwrap().clone() {
                        Some(body) => (axum::http::StatusCode::OK, body.to_string()),
                        None => (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down".to_owned()),
                    }
                }
            }),
        );
        let url = format!("http://{}/jwks.json", spawn(app).await);
        Self { document, fetches, url }
    }

    pub fn publish(&self, keys: &[&SigningKey]) {
        *self.document.lock().unwrap() = Some(key_set(keys));
    }

    pub fn go_down(&self) {
        *self.document.lock().unwrap() = None;
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

pub async fn spawn(app: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Like [`spawn`], but the server drains and stops (axum's graceful
/// shutdown, as ember-api's main does on a signal) when `stop` fires; the
/// handle finishes once it has.
pub async fn spawn_stoppable(
    app: Router,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.await;
            })
            .await
            .unwrap();
    });
    (addr, server)
}

/// `Authorization` header value for `token`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}
