//! The JSON documents of an OCI image (image-spec v1.1): the config (how to
//! run it: non-root user, entrypoint, environment, labels), the manifest
//! (config + layer by digest, with the same labels as annotations) and the
//! index (`index.json`, the layout's entry point naming the image for
//! containerd and OCI tools). Serialised from structs with fixed field order
//! and sorted maps, so the same spec always gives the same bytes.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::layer::Layer;
use crate::rootfs::{CA_CERTIFICATES, NONROOT_ID, binary_path};
use crate::timestamp::rfc3339_utc;
use crate::{Digest, Error, ImageReference};

pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Contents of the layout's `oci-layout` file.
pub const OCI_LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

/// Pre-defined annotation keys (image-spec `annotations.md`).
pub mod annotations {
    pub const CREATED: &str = "org.opencontainers.image.created";
    pub const LICENSES: &str = "org.opencontainers.image.licenses";
    pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
    pub const REVISION: &str = "org.opencontainers.image.revision";
    pub const SOURCE: &str = "org.opencontainers.image.source";
    pub const TITLE: &str = "org.opencontainers.image.title";
    pub const VERSION: &str = "org.opencontainers.image.version";
    /// The full image name `ctr images import` gives the image it imports.
    pub const CONTAINERD_IMAGE_NAME: &str = "io.containerd.image.name";
}

/// The `PATH` of a Debian system: the binary is called by absolute path, but
/// anything it spawns should resolve the usual way.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Operating system and CPU in OCI's (Go's) names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Platform {
    pub architecture: &'static str,
    pub os: &'static str,
}

impl Platform {
    /// This host's platform: the binary and its libraries come from here.
    pub fn host() -> Result<Self, Error> {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "riscv64" => "riscv64",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            other => return Err(Error::Architecture(other.to_owned())),
        };
        Ok(Self { architecture, os: "linux" })
    }
}

/// What the image is called and says about itself.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub reference: ImageReference,
    /// `org.opencontainers.image.version`, e.g. `0.1.0`.
    pub version: String,
    /// `org.opencontainers.image.revision`: the git commit built.
    pub revision: String,
    /// `org.opencontainers.image.source`: the repository URL.
    pub source: String,
    /// `org.opencontainers.image.licenses`: an SPDX expression.
    pub licenses: String,
    /// Seconds since the epoch for `created` and every file's mtime.
    pub source_date_epoch: u64,
    pub platform: Platform,
}

/// A JSON document stored as a blob, with its digest.
#[derive(Debug, Clone)]
pub struct Blob {
    pub media_type: &'static str,
    pub bytes: Vec<u8>,
    pub digest: Digest,
}

impl Blob {
    fn json(media_type: &'static str, document: &'static str, value: &impl Serialize) -> Result<Self, Error> {
        let bytes = serde_json::to_vec(value).map_err(|source| Error::Json { document, source })?;
        Ok(Self { media_type, digest: Digest::of(&bytes), bytes })
    }

    fn descriptor(&self) -> Descriptor<'_> {
        Descriptor {
            media_type: self.media_type,
            digest: &self.digest,
            size: self.bytes.len() as u64,
            platform: None,
            annotations: BTreeMap::new(),
        }
    }
}

/// Config and manifest blobs and the `index.json` that points at them.
#[derive(Debug, Clone)]
pub struct Documents {
    pub config: Blob,
    pub manifest: Blob,
    /// Not a blob: `index.json` sits at the layout's root.
    pub index: Vec<u8>,
}

/// The OCI labels, identical in the config's `Labels` and the manifest's
/// annotations so both `docker inspect` and registry UIs show them.
pub fn labels(spec: &ImageSpec) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        (annotations::CREATED, rfc3339_utc(spec.source_date_epoch)),
        (annotations::LICENSES, spec.licenses.clone()),
        (annotations::REVISION, spec.revision.clone()),
        (annotations::SOURCE, spec.source.clone()),
        (annotations::TITLE, spec.reference.short_name().to_owned()),
        (annotations::VERSION, spec.version.clone()),
    ])
}

/// Builds the documents of an image that runs `binary_name` from `layer`.
pub fn documents(spec: &ImageSpec, binary_name: &str, layer: &Layer) -> Result<Documents, Error> {
    let labels = labels(spec);
    let created = rfc3339_utc(spec.source_date_epoch);
    let entrypoint = binary_path(binary_name);
    let config = ImageConfig {
        created: &created,
        architecture: spec.platform.architecture,
        os: spec.platform.os,
        config: ContainerConfig {
            // Numeric, so the kubelet can check `runAsNonRoot` without
            // reading /etc/passwd from the image.
            user: format!("{NONROOT_ID}:{NONROOT_ID}"),
            env: vec![format!("PATH={PATH}"), format!("SSL_CERT_FILE={CA_CERTIFICATES}")],
            entrypoint: vec![entrypoint.clone()],
            working_dir: "/",
            labels: &labels,
        },
        rootfs: RootFs { kind: "layers", diff_ids: [&layer.diff_id] },
        history: [History {
            created: &created,
            created_by: format!("ember-image {}: {entrypoint} and its shared libraries", env!("CARGO_PKG_VERSION")),
        }],
    };
    let config = Blob::json(CONFIG_MEDIA_TYPE, "the image config", &config)?;

    let layer_descriptor = Descriptor {
        media_type: LAYER_MEDIA_TYPE,
        digest: &layer.digest,
        size: layer.gzip.len() as u64,
        platform: None,
        annotations: BTreeMap::new(),
    };
    let manifest = Manifest {
        schema_version: 2,
        media_type: MANIFEST_MEDIA_TYPE,
        config: config.descriptor(),
        layers: [layer_descriptor],
        annotations: &labels,
    };
    let manifest = Blob::json(MANIFEST_MEDIA_TYPE, "the image manifest", &manifest)?;

    let mut manifest_descriptor = manifest.descriptor();
    manifest_descriptor.platform = Some(spec.platform);
    manifest_descriptor.annotations = BTreeMap::from([
        (annotations::CONTAINERD_IMAGE_NAME, spec.reference.to_string()),
        (annotations::REF_NAME, spec.reference.tag().to_owned()),
    ]);
    let index = Index { schema_version: 2, media_type: INDEX_MEDIA_TYPE, manifests: [manifest_descriptor] };
    let index = serde_json::to_vec(&index).map_err(|source| Error::Json { document: "index.json", source })?;
    Ok(Documents { config, manifest, index })
}

#[derive(Serialize)]
struct ImageConfig<'a> {
    created: &'a str,
    architecture: &'a str,
    os: &'a str,
    config: ContainerConfig<'a>,
    rootfs: RootFs<'a>,
    history: [History<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerConfig<'a> {
    user: String,
    env: Vec<String>,
    entrypoint: Vec<String>,
    working_dir: &'a str,
    labels: &'a BTreeMap<&'static str, String>,
}

#[derive(Serialize)]
struct RootFs<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    diff_ids: [&'a Digest; 1],
}

#[derive(Serialize)]
struct History<'a> {
    created: &'a str,
    created_by: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor<'a> {
    media_type: &'a str,
    digest: &'a Digest,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<Platform>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<&'static str, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest<'a> {
    schema_version: u32,
    media_type: &'a str,
    config: Descriptor<'a>,
    layers: [Descriptor<'a>; 1],
    annotations: &'a BTreeMap<&'static str, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Index<'a> {
    schema_version: u32,
    media_type: &'a str,
    manifests: [Descriptor<'a>; 1],
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::tree::FileTree;

    fn spec() -> ImageSpec {
        ImageSpec {
            reference: ImageReference::parse("ghcr.io/ember-dev/ember-runtime:0.1.0").expect("valid name"),
            version: "0.1.0".into(),
            revision: "0123456789abcdef0123456789abcdef01234567".into(),
            source: "https://github.com/ember-dev/ember".into(),
            licenses: "Apache-2.0".into(),
            source_date_epoch: 1_700_000_000,
            platform: Platform { architecture: "amd64", os: "linux" },
        }
    }

    fn layer() -> Layer {
        let mut tree = FileTree::new();
        tree.add_file("/usr/local/bin/ember-runtime", b"\x7fELF".to_vec(), 0o755).expect("file");
        crate::layer::build(&tree, 0).expect("layer")
    }

    fn parse(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).expect("valid JSON")
    }

    #[test]
    fn config_runs_the_binary_as_nonroot_with_labels() {
        let layer = layer();
        let documents = documents(&spec(), "ember-runtime", &layer).expect("documents");
        let config = parse(&documents.config.bytes);
        assert_eq!(config["architecture"], "amd64");
        assert_eq!(config["os"], "linux");
        assert_eq!(config["created"], "2023-11-14T22:13:20Z");
        assert_eq!(config["rootfs"], json!({"type": "layers", "diff_ids": [layer.diff_id.to_string()]}));
        let run = &config["config"];
        assert_eq!(run["User"], "65532:65532");
        assert_eq!(run["Entrypoint"], json!(["/usr/local/bin/ember-runtime"]));
        assert_eq!(run["WorkingDir"], "/");
        let env = run["Env"].as_array().expect("Env list");
        assert!(env.contains(&json!("SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt")), "{env:?}");
        assert!(env.iter().any(|v| v.as_str().is_some_and(|v| v.starts_with("PATH=/"))), "{env:?}");
        let labels = &run["Labels"];
        assert_eq!(labels[annotations::SOURCE], "https://github.com/ember-dev/ember");
        assert_eq!(labels[annotations::VERSION], "0.1.0");
        assert_eq!(labels[annotations::REVISION], "0123456789abcdef0123456789abcdef01234567");
        assert_eq!(labels[annotations::TITLE], "ember-runtime");
        assert_eq!(labels[annotations::LICENSES], "Apache-2.0");
        assert_eq!(labels[annotations::CREATED], "2023-11-14T22:13:20Z");
    }

    #[test]
    fn manifest_points_at_config_and_layer_and_repeats_the_labels() {
        let layer = layer();
        let documents = documents(&spec(), "ember-runtime", &layer).expect("documents");
        let manifest = parse(&documents.manifest.bytes);
        assert_eq!(manifest["schemaVersion"], 2);
        assert_eq!(manifest["mediaType"], MANIFEST_MEDIA_TYPE);
        assert_eq!(
            manifest["config"],
            json!({"mediaType": CONFIG_MEDIA_TYPE, "digest": documents.config.digest.to_string(),
                   "size": documents.config.bytes.len()})
        );
        assert_eq!(
            manifest["layers"],
            json!([{"mediaType": LAYER_MEDIA_TYPE, "digest": layer.digest.to_string(), "size": layer.gzip.len()}])
        );
        assert_eq!(manifest["annotations"], parse(&documents.config.bytes)["config"]["Labels"]);
    }

    #[test]
    fn index_names_the_image_for_containerd_and_oci_tools() {
        let documents = documents(&spec(), "ember-runtime", &layer()).expect("documents");
        let index = parse(&documents.index);
        assert_eq!(index["schemaVersion"], 2);
        assert_eq!(index["mediaType"], INDEX_MEDIA_TYPE);
        let manifests = index["manifests"].as_array().expect("manifest list");
        assert_eq!(manifests.len(), 1);
        let descriptor = &manifests[0];
        assert_eq!(descriptor["mediaType"], MANIFEST_MEDIA_TYPE);
        assert_eq!(descriptor["digest"], documents.manifest.digest.to_string());
        assert_eq!(descriptor["size"], documents.manifest.bytes.len());
        assert_eq!(descriptor["platform"], json!({"architecture": "amd64", "os": "linux"}));
        assert_eq!(descriptor["annotations"][annotations::REF_NAME], "0.1.0");
        assert_eq!(
            descriptor["annotations"][annotations::CONTAINERD_IMAGE_NAME],
            "ghcr.io/ember-dev/ember-runtime:0.1.0"
        );
    }

    #[test]
    fn layout_file_is_version_one() {
        assert_eq!(parse(OCI_LAYOUT.as_bytes()), json!({"imageLayoutVersion": "1.0.0"}));
    }
}
