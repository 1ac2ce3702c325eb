//! The minimal root filesystem of an Ember image: the binary, the shared
//! objects it loads, the account files that make user 65532 a real user,
//! the name-service order, CA certificates for outgoing TLS, `/tmp` and the non-root home. Nothing
//! else — no shell, no package manager — so there is little to patch or
//! exploit. Inputs come from [`RootfsInputs`], so tests can point it at
//! files of their own.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::Error;
use crate::ldd;
use crate::tree::FileTree;

/// Where the binary goes; it is the image's entrypoint.
pub const BINARY_DIR: &str = "/usr/local/bin";
/// Where the CA bundle is in the image (and, by default, on the host).
pub const CA_CERTIFICATES: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The non-root user and group the image runs as (distroless's `nonroot`).
pub const NONROOT_ID: u32 = 65532;
/// The non-root user's home, owned by that user.
pub const NONROOT_HOME: &str = "/home/nonroot";

/// Executables and shared objects.
pub const EXECUTABLE_MODE: u32 = 0o755;
/// Everything else that is a file.
pub const FILE_MODE: u32 = 0o644;
/// World-writable with the sticky bit, as `/tmp` always is.
pub const TMP_MODE: u32 = 0o1777;

/// What goes into the root filesystem from the host.
#[derive(Debug, Clone)]
pub struct RootfsInputs {
    /// The binary to run; its shared objects are found with `ldd`.
    pub binary: PathBuf,
    /// The CA bundle to install at [`CA_CERTIFICATES`].
    pub ca_certificates: PathBuf,
}

impl RootfsInputs {
    /// The binary's file name, which it keeps in the image.
    pub fn binary_name(&self) -> Result<String, Error> {
        self.binary
            .file_name()
            .and_then(|name| name.to_str())
            .map(str::to_owned)
            .ok_or_else(|| Error::BinaryName(self.binary.clone()))
    }
}

/// The binary's path inside the image.
pub fn binary_path(binary_name: &str) -> String {
    format!("{BINARY_DIR}/{binary_name}")
}

/// Collects the root filesystem. Shared objects are read through symlinks
/// and stored as plain files at the paths `ldd` reports, because those are
/// the paths the loader in the image will look at.
pub fn collect(inputs: &RootfsInputs) -> Result<FileTree, Error> {
    // First, so a host without a CA bundle fails before any other work.
    let certificates = fs::read(&inputs.ca_certificates).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => Error::MissingCaCertificates(inputs.ca_certificates.clone()),
        _ => Error::Read { path: inputs.ca_certificates.clone(), source },
    })?;
    let mut tree = FileTree::new();
    tree.add_file(CA_CERTIFICATES, certificates, FILE_MODE)?;
    tree.add_file(binary_path(&inputs.binary_name()?), read(&inputs.binary)?, EXECUTABLE_MODE)?;
    for object in ldd::shared_objects(&inputs.binary)? {
        tree.add_file(&object, read(&object)?, EXECUTABLE_MODE)?;
    }
    tree.add_file("/etc/passwd", PASSWD.as_bytes().to_vec(), FILE_MODE)?;
    tree.add_file("/etc/group", GROUP.as_bytes().to_vec(), FILE_MODE)?;
    tree.add_file("/etc/nsswitch.conf", NSSWITCH.as_bytes().to_vec(), FILE_MODE)?;
    tree.add_dir("/tmp", TMP_MODE, 0, 0)?;
    tree.add_dir(NONROOT_HOME, 0o755, NONROOT_ID, NONROOT_ID)?;
    Ok(tree)
}

// Login shells point at a file that is not there on purpose: nobody logs in.
const PASSWD: &str = "root:x:0:0:root:/root:/sbin/nologin\n\
                      nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nnonroot:x:65532:\n";
// Without this file glibc asks DNS before /etc/hosts and never reads the
// hosts file while DNS answers, so `localhost` and the pod's own name (which
// Kubernetes writes into /etc/hosts) would depend on the cluster's DNS.
const NSSWITCH: &str = "passwd: files\ngroup: files\nhosts: files dns\n";

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    fs::read(path).map_err(|source| Error::Read { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_files_name_the_nonroot_user_and_home() {
        let nonroot = PASSWD.lines().find(|line| line.starts_with("nonroot:")).expect("nonroot user");
        let fields: Vec<&str> = nonroot.split(':').collect();
        let id = NONROOT_ID.to_string();
        assert_eq!((fields[2], fields[3]), (id.as_str(), id.as_str()));
        assert_eq!(fields[5], NONROOT_HOME);
        assert!(GROUP.lines().any(|line| line == format!("nonroot:x:{NONROOT_ID}:")));
    }

    #[test]
    fn a_missing_ca_bundle_is_named_in_the_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let inputs = RootfsInputs {
            binary: std::env::current_exe().expect("test executable"),
            ca_certificates: dir.path().join("no-such-bundle.crt"),
        };
        let error = collect(&inputs).expect_err("CA bundle is missing");
        assert!(matches!(error, Error::MissingCaCertificates(_)), "{error}");
        assert!(error.to_string().contains("no-such-bundle.crt"), "{error}");
    }
}
