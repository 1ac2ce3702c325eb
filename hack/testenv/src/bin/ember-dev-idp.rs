//! A stand-in identity provider for the local dev environment: generates an
//! ES256 signing key, serves its JWKS over HTTPS (a throwaway CA, written to
//! `<dir>/idp-ca.crt`, signs its certificate; ember-api trusts it through
//! `EMBER_API_JWKS_CA_FILE` as it would a company CA) and writes a bearer
//! token per `--user` into `<dir>/tokens/<user>.jwt`, valid for 12 hours.
//! Runs until interrupted. Never for production: anyone with the files is
//! anyone.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::Router;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Parser;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;

#[derive(Debug, Parser)]
#[command(about = "Local stand-in identity provider: JWKS + bearer tokens for ember-api")]
struct Args {
    /// Address to serve `/jwks.json` on; the issuer is `https://<addr>`.
    #[arg(long, default_value = "127.0.0.1:18090")]
    addr: SocketAddr,
    /// Audience of the tokens.
    #[arg(long, default_value = "ember")]
    audience: String,
    /// Directory for `tokens/<user>.jwt`.
    #[arg(long, default_value = ".dev")]
    dir: PathBuf,
    /// A user to mint a token for: `name` or `name:group1,group2`.
    #[arg(long = "user", required = true)]
    users: Vec<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let issuer = format!("https://{}", args.addr);
    let key = rcgen::KeyPair::generate().context("generating the signing key")?;
    let point = key.public_key_raw(); // 0x04 || x || y (P-256)
    anyhow::ensure!(point.len() == 65, "unexpected P-256 public key length");
    let jwks = json!({"keys": [{
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": "dev-1",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..]),
    }]})
    .to_string();

    let signing = EncodingKey::from_ec_der(&key.serialize_der());
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("dev-1".into());
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let tokens = args.dir.join("tokens");
    std::fs::create_dir_all(&tokens).with_context(|| format!("creating {}", tokens.display()))?;
    for user in &args.users {
        let (name, groups) = user.split_once(':').unwrap_or((user, ""));
        let groups: Vec<&str> = groups.split(',').filter(|g| !g.is_empty()).collect();
        let claims = json!({"iss": issuer, "aud": args.audience, "sub": name, "groups": groups,
                            "iat": now, "nbf": now, "exp": now + 12 * 3600});
        let token = encode(&header, &claims, &signing).context("signing a token")?;
        std::fs::write(tokens.join(format!("{name}.jwt")), token).context("writing a token")?;
    }

    let acceptor = tls_acceptor(&args)?;
    let listener = tokio::net::TcpListener::bind(args.addr).await.with_context(|| format!("binding {}", args.addr))?;
    eprintln!("dev identity provider {issuer}: JWKS at {issuer}/jwks.json, tokens in {}", tokens.display());
    let app = Router::new().route("/jwks.json", get(move || async move { jwks.clone() }));
    let shutdown = tokio::signal::ctrl_c();
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = &mut shutdown => return Ok(()),
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(stream).await else { return };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
        });
    }
}

/// A throwaway CA (written to `<dir>/idp-ca.crt`) and a certificate for
/// `--addr`'s IP signed by it.
fn tls_acceptor(args: &Args) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "ember dev identity provider CA");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    std::fs::write(args.dir.join("idp-ca.crt"), ca_cert.pem()).context("writing idp-ca.crt")?;
    let server_key = KeyPair::generate()?;
    let server_cert = CertificateParams::new(vec![args.addr.ip().to_string()])?
        .signed_by(&server_key, &Issuer::new(ca_params, ca_key))?;

    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(server_cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        )?;
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}
