//! OCI image archives for Ember's binaries, built without a container engine.
//!
//! The flow, one module per step:
//! - [`rootfs`]: the files of a minimal root filesystem — the binary, the
//!   shared libraries [`ldd`] reports for it, `/etc/passwd`, `/etc/group`,
//!   `/etc/nsswitch.conf`, CA certificates, `/tmp` and the non-root user's
//!   home — as entries ordered by path;
//! - [`layer`]: that [`tree::FileTree`] as one deterministic tar + gzip layer;
//! - [`oci`]: the image config, manifest and index documents;
//! - [`archive`]: the OCI image layout written as one tar, the file
//!   `ctr images import` and `skopeo copy oci-archive:` read.
//!
//! [`build_image`] drives them. Same inputs give the same bytes: every
//! timestamp comes from one `SOURCE_DATE_EPOCH`, nothing from the clock or
//! the host's file metadata.

pub mod archive;
pub mod digest;
pub mod layer;
pub mod ldd;
pub mod oci;
pub mod reference;
pub mod rootfs;
pub mod timestamp;
pub mod tree;

use std::path::PathBuf;

pub use digest::Digest;
pub use oci::ImageSpec;
pub use reference::ImageReference;
pub use rootfs::RootfsInputs;

/// Everything that can go wrong while building an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "CA certificates not found at {0}: install the host's CA bundle (Debian: ca-certificates) or pass another file"
    )]
    MissingCaCertificates(PathBuf),
    #[error("binary {0} has no file name")]
    BinaryName(PathBuf),
    #[error("running ldd on {binary}: {reason}")]
    Ldd { binary: PathBuf, reason: String },
    #[error("ldd cannot find {library}, which {binary} needs")]
    LibraryNotFound { binary: PathBuf, library: String },
    #[error("{path} is added to the image twice, or as both a file and a directory")]
    PathConflict { path: PathBuf },
    #[error("{path} cannot be a path in the image: only absolute paths of plain names")]
    UnsupportedPath { path: PathBuf },
    #[error("image name {name:?}: {reason}")]
    ImageName { name: String, reason: &'static str },
    #[error("no OCI architecture name for this host's {0}")]
    Architecture(String),
    #[error("writing the tar stream: {0}")]
    Tar(#[source] std::io::Error),
    #[error("compressing the layer: {0}")]
    Gzip(#[source] std::io::Error),
    #[error("encoding {document}: {source}")]
    Json { document: &'static str, source: serde_json::Error },
}

/// An image archive in memory and the digest that names its image.
#[derive(Debug)]
pub struct BuiltImage {
    /// The OCI image layout as one tar.
    pub archive: Vec<u8>,
    /// Digest of the image manifest: equal digests, identical images.
    pub manifest_digest: Digest,
}

/// Builds the image `spec` describes around the files `inputs` names.
pub fn build_image(spec: &ImageSpec, inputs: &RootfsInputs) -> Result<BuiltImage, Error> {
    // The file tree (binary and libraries, uncompressed) is dropped as soon
    // as the layer exists: release binaries are tens of megabytes.
    let layer = layer::build(&rootfs::collect(inputs)?, spec.source_date_epoch)?;
    let documents = oci::documents(spec, &inputs.binary_name()?, &layer)?;
    let archive = archive::write(&documents, &layer, spec.source_date_epoch)?;
    Ok(BuiltImage { archive, manifest_digest: documents.manifest.digest.clone() })
}
