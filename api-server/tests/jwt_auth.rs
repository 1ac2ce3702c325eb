//! Bearer-JWT authentication over real HTTP: ember-api's router on a
//! loopback port, the identity provider's JWKS served by a second local
//! server, tokens signed with freshly generated ES256 keys. Each refusal
//! must be a 401 problem+json that names what was wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ember_api::auth::{Authenticator, JwtSettings, JwtVerifier};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use support::{AUDIENCE, ISSUER, Jwks, SigningKey, bearer, claims, now, spawn, with, without};

/// ember-api with JWT authentication against `jwks`; returns its whoami URL.
async fn api(jwks: &Jwks, min_refresh_seconds: u64) -> String {
    let mut settings = JwtSettings::new(ISSUER, AUDIENCE, &jwks.url);
    settings.jwks_min_refresh_seconds = min_refresh_seconds;
    api_with(settings).await
}

async fn api_with(settings: JwtSettings) -> String {
    let verifier = Arc::new(JwtVerifier::new(settings).unwrap());
    format!(
        "http://{}/v1/whoami",
        spawn(ember_api::router(ember_api::Surface::Authentication(Arc::new(Authenticator::jwt_only(verifier))))).await
    )
}

async fn whoami(url: &str, authorization: Option<&str>) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    let response = request.send().await.unwrap();
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    (status, response.json().await.unwrap_or(Value::Null), headers)
}

async fn assert_refused(url: &str, authorization: Option<&str>, detail_says: &str) {
    let (status, body, headers) = whoami(url, authorization).await;
    assert_eq!(status, 401, "{detail_says}: got {body}");
    assert_eq!(headers["content-type"], "application/problem+json");
    assert!(headers.contains_key("www-authenticate"), "401 without WWW-Authenticate");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(detail_says), "expected '{detail_says}' in '{detail}'");
}

#[tokio::test]
async fn a_valid_token_proves_user_and_groups() {
    let key = SigningKey::generate("k1");
    let jwks = Jwks::serve(&[&key]).await;
    let url = api(&jwks, 60).await;
    let (status, body, _) = whoami(&url, Some(&bearer(&key.sign(&claims())))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"user": "alice@acme.example", "groups": ["acme-data-science"], "platformAdmin": false}));
}

#[tokio::test]
async fn forged_expired_and_misdirected_tokens_are_refused_with_the_reason() {
    let key = SigningKey::generate("k1");
    let attacker = SigningKey::generate("k1"); // same kid, different key
    let jwks = Jwks::serve(&[&key]).await;
    let attacker_jwks = Jwks::serve(&[&attacker]).await;
    let url = api(&jwks, 60).await;

    assert_refused(&url, None, "missing Authorization").await;
    assert_refused(&url, Some("Basic YWxpY2U6c2VjcmV0"), "Bearer scheme").await;
    assert_refused(&url, Some("Bearer not-a-jwt"), "malformed").await;

    // alg none: a header and payload with an empty signature.
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims().to_string())
    );
    assert_refused(&url, Some(&bearer(&unsigned)), "malformed").await;

    // HS256 with the public key as the HMAC secret (algorithm confusion).
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some("k1".into());
    let confused = encode(&hs_header, &claims(), &EncodingKey::from_secret(key.jwk.to_string().as_bytes())).unwrap();
    assert_refused(&url, Some(&bearer(&confused)), "HS256 is not accepted").await;

    assert_refused(&url, Some(&bearer(&attacker.sign(&claims()))), "signature does not verify").await;
    let expired = with(claims(), "exp", json!(now() - 120));
    assert_refused(&url, Some(&bearer(&key.sign(&expired))), "expired").await;
    let early = with(claims(), "nbf", json!(now() + 600));
    assert_refused(&url, Some(&bearer(&key.sign(&early))), "not valid yet").await;
    let foreign = with(claims(), "iss", json!("https://evil.example"));
    assert_refused(&url, Some(&bearer(&key.sign(&foreign))), "another issuer").await;
    let elsewhere = with(claims(), "aud", json!("some-other-service"));
    assert_refused(&url, Some(&bearer(&key.sign(&elsewhere))), "another audience").await;
    for claim in ["sub", "exp", "iss", "aud"] {
        assert_refused(&url, Some(&bearer(&key.sign(&without(claims(), claim)))), &format!("'{claim}'")).await;
    }
    let odd_groups = with(claims(), "groups", json!("admins"));
    assert_refused(&url, Some(&bearer(&key.sign(&odd_groups))), "array of strings").await;

    // A payload swapped under a valid signature.
    let token = key.sign(&claims());
    let parts: Vec<&str> = token.split('.').collect();
    let promoted = URL_SAFE_NO_PAD.encode(with(claims(), "sub", json!("admin")).to_string());
    assert_refused(&url, Some(&bearer(&format!("{}.{promoted}.{}", parts[0], parts[2]))), "signature").await;

    // A token pointing at the attacker's own key set is never looked up there.
    let mut jku_header = Header::new(Algorithm::ES256);
    jku_header.kid = Some("attacker-key".into());
    jku_header.jku = Some(attacker_jwks.url.clone());
    let redirected = encode(&jku_header, &claims(), &attacker.private).unwrap();
    assert_refused(&url, Some(&bearer(&redirected)), "unknown key").await;
    assert_eq!(attacker_jwks.fetches(), 0, "the jku header must never be followed");
}

#[tokio::test]
async fn unknown_key_ids_cannot_make_the_api_hammer_the_identity_provider() {
    let key = SigningKey::generate("k1");
    let stranger = SigningKey::generate("stranger");
    let jwks = Jwks::serve(&[&key]).await;
    let url = api(&jwks, 60).await;
    let (status, _, _) = whoami(&url, Some(&bearer(&key.sign(&claims())))).await;
    assert_eq!(status, 200);
    assert_eq!(jwks.fetches(), 1);
    for _ in 0..5 {
        assert_refused(&url, Some(&bearer(&stranger.sign(&claims()))), "unknown key").await;
    }
    assert_eq!(jwks.fetches(), 1, "misses within the refresh interval must not refetch");
}

#[tokio::test]
async fn rotated_keys_work_after_a_refresh_and_retired_keys_stop_working() {
    let old = SigningKey::generate("2026-old");
    let new = SigningKey::generate("2026-new");
    let jwks = Jwks::serve(&[&old]).await;
    let url = api(&jwks, 1).await;
    let (status, _, _) = whoami(&url, Some(&bearer(&old.sign(&claims())))).await;
    assert_eq!(status, 200);

    jwks.publish(&[&new]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body, _) = whoami(&url, Some(&bearer(&new.sign(&claims())))).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the rotated key never became usable: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await; // poll interval, not synchronisation
    }
    assert_refused(&url, Some(&bearer(&old.sign(&claims()))), "unknown key").await;
}

#[tokio::test]
async fn a_key_withdrawn_at_the_identity_provider_stops_working_without_any_unknown_kid() {
    let withdrawn = SigningKey::generate("leaked");
    let kept = SigningKey::generate("kept");
    let jwks = Jwks::serve(&[&withdrawn, &kept]).await;
    let mut settings = JwtSettings::new(ISSUER, AUDIENCE, &jwks.url);
    (settings.jwks_min_refresh_seconds, settings.jwks_max_age_seconds) = (1, 2);
    let url = api_with(settings).await;
    let token = bearer(&withdrawn.sign(&claims()));
    assert_eq!(whoami(&url, Some(&token)).await.0, 200);

    // Only tokens of the withdrawn key keep coming: no cache miss ever
    // triggers a refresh; the keys' age must.
    jwks.publish(&[&kept]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while whoami(&url, Some(&token)).await.0 == 200 {
        assert!(Instant::now() < deadline, "a withdrawn key still verifies tokens");
        tokio::time::sleep(Duration::from_millis(200)).await; // poll interval, not synchronisation
    }
    assert_refused(&url, Some(&token), "unknown key").await;
    assert_eq!(whoami(&url, Some(&bearer(&kept.sign(&claims())))).await.0, 200);
}

#[tokio::test]
async fn an_email_username_must_be_verified() {
    let key = SigningKey::generate("k1");
    let jwks = Jwks::serve(&[&key]).await;
    let mut settings = JwtSettings::new(ISSUER, AUDIENCE, &jwks.url);
    settings.username_claim = "email".into();
    let url = api_with(settings).await;
    let base = with(claims(), "email", json!("alice@acme.example"));
    for unverified in [
        base.clone(),
        with(base.clone(), "email_verified", json!(false)),
        with(base.clone(), "email_verified", json!("true")),
    ] {
        assert_refused(&url, Some(&bearer(&key.sign(&unverified))), "not verified").await;
    }
    let (status, body, _) = whoami(&url, Some(&bearer(&key.sign(&with(base, "email_verified", json!(true)))))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"], "alice@acme.example");
}

#[tokio::test]
async fn no_token_can_pose_as_an_api_key_identity() {
    let key = SigningKey::generate("k1");
    let jwks = Jwks::serve(&[&key]).await;
    let url = api(&jwks, 60).await;
    let posing = bearer(&key.sign(&with(claims(), "sub", json!("apikey:0123456789ab"))));
    assert_refused(&url, Some(&posing), "reserved for API keys").await;
}

#[tokio::test]
async fn an_unreachable_identity_provider_is_a_503_and_recovers() {
    let key = SigningKey::generate("k1");
    let jwks = Jwks::serve(&[&key]).await;
    jwks.go_down();
    let url = api(&jwks, 1).await;
    let token = bearer(&key.sign(&claims()));
    let (status, body, headers) = whoami(&url, Some(&token)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(headers["content-type"], "application/problem+json");
    assert!(body["detail"].as_str().unwrap().contains("signing keys unavailable"));

    jwks.publish(&[&key]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while whoami(&url, Some(&token)).await.0 != 200 {
        assert!(Instant::now() < deadline, "never recovered after the identity provider came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn symmetric_algorithms_and_plain_http_key_sets_are_refused_at_start() {
    let mut hmac = JwtSettings::new(ISSUER, AUDIENCE, "https://idp.example/jwks.json");
    hmac.algorithms = vec![Algorithm::ES256, Algorithm::HS256];
    let error = JwtVerifier::new(hmac).unwrap_err().to_string();
    assert!(error.contains("HS256"), "{error}");

    let plain = JwtSettings::new(ISSUER, AUDIENCE, "http://idp.example/jwks.json");
    let error = JwtVerifier::new(plain).unwrap_err().to_string();
    assert!(error.contains("must use https"), "{error}");
}

#[test]
fn a_private_ca_file_must_hold_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = JwtSettings::new(ISSUER, AUDIENCE, "https://idp.example/jwks.json");
    settings.jwks_ca_file = Some(dir.path().join("missing.pem"));
    let error = JwtVerifier::new(settings.clone()).unwrap_err().to_string();
    assert!(error.contains("JWKS CA file") && error.contains("missing.pem"), "{error}");

    std::fs::write(dir.path().join("empty.pem"), "not a certificate\n").unwrap();
    settings.jwks_ca_file = Some(dir.path().join("empty.pem"));
    let error = JwtVerifier::new(settings.clone()).unwrap_err().to_string();
    assert!(error.contains("no PEM certificate"), "{error}");

    let ca = rcgen::generate_simple_self_signed(vec!["idp.example".to_owned()]).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.cert.pem()).unwrap();
    settings.jwks_ca_file = Some(dir.path().join("ca.pem"));
    JwtVerifier::new(settings).unwrap();
}

#[tokio::test]
async fn without_an_identity_provider_only_probes_answer() {
    let addr = spawn(ember_api::router(ember_api::Surface::ProbesOnly)).await;
    let health = reqwest::get(format!("http://{addr}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    let other = reqwest::get(format!("http://{addr}/v1/whoami")).await.unwrap();
    assert_eq!(other.status(), 501);
    assert_eq!(other.headers()["content-type"], "application/problem+json");
}
