//! Certificates and keys for a local control plane.
//!
//! One CA signs the API server's serving certificate (valid for 127.0.0.1,
//! the real node's gateway and the in-cluster names; kube-rs with rustls
//! verifies by IP) and the client certificate of the
//! `admin` user in `system:masters`. A separate ECDSA key signs service
//! account tokens; kube-apiserver and the controller-manager read it as PEM.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

use crate::Error;

/// Paths of the generated PEM files.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca_cert: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    pub service_account_key: PathBuf,
    pub service_account_public_key: PathBuf,
}

fn tls(context: &str) -> impl FnOnce(rcgen::Error) -> Error + '_ {
    move |source| Error::Pki(format!("{context}: {source}"))
}

/// Writes a fresh CA, serving, admin and service-account keys into `dir`.
pub fn generate(dir: &Path) -> Result<Pki, Error> {
    std::fs::create_dir_all(dir)
        .map_err(|source| Error::Io { context: format!("creating {}", dir.display()), source })?;

    let ca_key = KeyPair::generate().map_err(tls("CA key"))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls("CA params"))?;
    ca_params.distinguished_name.push(DnType::CommonName, "ember-local-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(tls("CA certificate"))?;
    let ca = Issuer::new(ca_params, ca_key);

    let serving_key = KeyPair::generate().map_err(tls("serving key"))?;
    let mut serving_params = CertificateParams::new(vec![
        "127.0.0.1".to_owned(),
        "localhost".to_owned(),
        "kubernetes".to_owned(),
        "kubernetes.default".to_owned(),
        "kubernetes.default.svc".to_owned(),
        format!("kubernetes.default.svc.{}", crate::node::CLUSTER_DOMAIN),
        // The first Service address: what in-cluster clients dial.
        "10.0.0.1".to_owned(),
        // The real node's bridge gateway, where the API server listens when
        // the cluster has a real node.
        crate::node::GATEWAY.to_string(),
    ])
    .map_err(tls("serving params"))?;
    serving_params.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    serving_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    serving_params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    let serving_cert = serving_params.signed_by(&serving_key, &ca).map_err(tls("serving certificate"))?;

    let admin_key = KeyPair::generate().map_err(tls("admin key"))?;
    let mut admin_params = CertificateParams::new(Vec::<String>::new()).map_err(tls("admin params"))?;
    admin_params.distinguished_name.push(DnType::CommonName, "admin");
    admin_params.distinguished_name.push(DnType::OrganizationName, "system:masters");
    admin_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    admin_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let admin_cert = admin_params.signed_by(&admin_key, &ca).map_err(tls("admin certificate"))?;

    let service_account_key = KeyPair::generate().map_err(tls("service account key"))?;

    let write = |name: &str, text: &str| -> Result<PathBuf, Error> {
        let path = dir.join(name);
        std::fs::write(&path, text)
            .map_err(|source| Error::Io { context: format!("writing {}", path.display()), source })?;
        Ok(path)
    };
    Ok(Pki {
        ca_cert: write("ca.crt", &ca_cert.pem())?,
        serving_cert: write("apiserver.crt", &serving_cert.pem())?,
        serving_key: write("apiserver.key", &serving_key.serialize_pem())?,
        admin_cert: write("admin.crt", &admin_cert.pem())?,
        admin_key: write("admin.key", &admin_key.serialize_pem())?,
        service_account_key: write("sa.key", &service_account_key.serialize_pem())?,
        service_account_public_key: write("sa.pub", &service_account_key.public_key_pem())?,
    })
}
