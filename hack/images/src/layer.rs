//! The image's one layer: the root filesystem as a deterministic tar,
//! gzip-compressed without a file name or timestamp in the gzip header.
//! An OCI image names a layer twice: the config's `diff_id` is the digest
//! of the uncompressed tar (what runtimes verify after unpacking), the
//! manifest's descriptor the digest of the compressed blob (what registries
//! store and transfer).

use std::io::Write;

use flate2::{Compression, GzBuilder};

use crate::tree::FileTree;
use crate::{Digest, Error};

/// A fixed level: the compressed bytes, and so the layer digest, depend on
/// it. 6 is gzip's own default.
const LEVEL: Compression = Compression::new(6);
/// "Unknown" in the gzip header's OS byte (RFC 1952), whichever host builds.
const OS_UNKNOWN: u8 = 255;

/// A compressed layer and both of its digests.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The `tar+gzip` blob.
    pub gzip: Vec<u8>,
    /// Digest of `gzip`: the blob's name.
    pub digest: Digest,
    /// Digest of the uncompressed tar: the config's `rootfs.diff_ids` entry.
    pub diff_id: Digest,
}

/// Writes `tree` as a layer whose entries all have mtime `mtime`.
pub fn build(tree: &FileTree, mtime: u64) -> Result<Layer, Error> {
    let tar = tree.to_tar(mtime)?;
    let diff_id = Digest::of(&tar);
    // flate2's defaults are already no name, mtime 0 and OS 255; set them
    // anyway so a change of defaults cannot change our digests.
    let mut encoder = GzBuilder::new().mtime(0).operating_system(OS_UNKNOWN).write(Vec::new(), LEVEL);
    encoder.write_all(&tar).map_err(Error::Gzip)?;
    let gzip = encoder.finish().map_err(Error::Gzip)?;
    Ok(Layer { digest: Digest::of(&gzip), diff_id, gzip })
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn small_tree() -> FileTree {
        let mut tree = FileTree::new();
        tree.add_file("/etc/hostname", b"ember\n".to_vec(), 0o644).expect("file");
        tree
    }

    #[test]
    fn gzip_header_has_no_name_and_no_timestamp() {
        let layer = build(&small_tree(), 1_700_000_000).expect("layer");
        let header = &layer.gzip[..10];
        assert_eq!(header[..3], [0x1f, 0x8b, 8], "gzip magic and deflate");
        assert_eq!(header[3], 0, "no FNAME/FCOMMENT/FEXTRA flags");
        assert_eq!(header[4..8], [0, 0, 0, 0], "mtime 0");
        assert_eq!(header[9], OS_UNKNOWN);
    }

    #[test]
    fn diff_id_is_the_uncompressed_tar_and_digest_the_blob() {
        let tree = small_tree();
        let layer = build(&tree, 0).expect("layer");
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&layer.gzip[..]).read_to_end(&mut tar).expect("gunzip");
        assert_eq!(tar, tree.to_tar(0).expect("tar"));
        assert_eq!(layer.diff_id, Digest::of(&tar));
        assert_eq!(layer.digest, Digest::of(&layer.gzip));
        assert_ne!(layer.digest, layer.diff_id);
    }

    #[test]
    fn the_mtime_is_part_of_the_layer() {
        let (a, b) = (build(&small_tree(), 0).expect("layer"), build(&small_tree(), 1).expect("layer"));
        assert_ne!(a.diff_id, b.diff_id);
        assert_eq!(build(&small_tree(), 0).expect("layer").gzip, a.gzip);
    }
}
