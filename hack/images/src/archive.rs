//! The OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/<hex>`)
//! packed as one tar: the "OCI archive" that `ctr images import` and
//! `skopeo copy oci-archive:` read. Written through [`FileTree`] like the
//! layer, so the archive too is byte-for-byte reproducible.

use std::path::PathBuf;

use crate::layer::Layer;
use crate::oci::{Documents, OCI_LAYOUT};
use crate::rootfs::FILE_MODE;
use crate::tree::{DIR_MODE, FileTree};
use crate::{Digest, Error};

/// The archive's path of the blob with `digest`.
pub fn blob_path(digest: &Digest) -> PathBuf {
    PathBuf::from("blobs").join(Digest::ALGORITHM).join(digest.hex())
}

/// Packs the documents and the layer; every entry gets mtime `mtime`.
pub fn write(documents: &Documents, layer: &Layer, mtime: u64) -> Result<Vec<u8>, Error> {
    let mut tree = FileTree::new();
    // Explicit, not only implied by the blobs: some readers create
    // directories only from their own entries.
    tree.add_dir(PathBuf::from("blobs").join(Digest::ALGORITHM), DIR_MODE, 0, 0)?;
    tree.add_file("oci-layout", OCI_LAYOUT.as_bytes().to_vec(), FILE_MODE)?;
    tree.add_file("index.json", documents.index.clone(), FILE_MODE)?;
    for blob in [&documents.config, &documents.manifest] {
        tree.add_file(blob_path(&blob.digest), blob.bytes.clone(), FILE_MODE)?;
    }
    tree.add_file(blob_path(&layer.digest), layer.gzip.clone(), FILE_MODE)?;
    tree.to_tar(mtime)
}
