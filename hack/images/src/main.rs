//! ember-image: writes an OCI image archive for one Ember binary, without
//! Docker or any container engine, and prints its manifest digest so
//! scripts can check that two builds made the same image.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use ember_images::oci::Platform;
use ember_images::{ImageReference, ImageSpec, RootfsInputs, build_image};

/// Builds a minimal, non-root, reproducible OCI image archive around a
/// dynamically linked binary. Prints the manifest digest (`sha256:...`).
#[derive(Debug, Parser)]
#[command(name = "ember-image", version, about)]
struct Args {
    /// The binary to package; it becomes `/usr/local/bin/<file name>`, the entrypoint.
    #[arg(long, env = "EMBER_IMAGE_BINARY")]
    binary: PathBuf,

    /// Full image name with tag, e.g. `ghcr.io/ember-dev/ember-runtime:0.1.0`.
    #[arg(long, env = "EMBER_IMAGE_NAME")]
    image: String,

    /// Version label (`org.opencontainers.image.version`).
    #[arg(long = "image-version", env = "EMBER_IMAGE_VERSION")]
    image_version: String,

    /// Git commit the binary was built from (`org.opencontainers.image.revision`).
    #[arg(long, env = "EMBER_IMAGE_REVISION")]
    revision: String,

    /// Source repository URL (`org.opencontainers.image.source`).
    #[arg(long, env = "EMBER_IMAGE_SOURCE", default_value = "https://github.com/ember-dev/ember")]
    source: String,

    /// SPDX license expression (`org.opencontainers.image.licenses`).
    #[arg(long, env = "EMBER_IMAGE_LICENSES", default_value = "Apache-2.0")]
    licenses: String,

    /// Seconds since the epoch for the image's `created` time and every file's mtime;
    /// usually the last commit's time (`git log -1 --format=%ct`).
    #[arg(long, env = "SOURCE_DATE_EPOCH", default_value_t = 0)]
    source_date_epoch: u64,

    /// The host's CA bundle, copied to /etc/ssl/certs/ca-certificates.crt.
    #[arg(long, env = "EMBER_IMAGE_CA_CERTIFICATES", default_value = ember_images::rootfs::CA_CERTIFICATES)]
    ca_certificates: PathBuf,

    /// Where to write the OCI archive (a tar), e.g. `ember-runtime.oci.tar`.
    #[arg(long, env = "EMBER_IMAGE_OUTPUT")]
    output: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let spec = ImageSpec {
        reference: ImageReference::parse(&args.image)?,
        version: args.image_version,
        revision: args.revision,
        source: args.source,
        licenses: args.licenses,
        source_date_epoch: args.source_date_epoch,
        platform: Platform::host()?,
    };
    let inputs = RootfsInputs { binary: args.binary, ca_certificates: args.ca_certificates };
    let image = build_image(&spec, &inputs).with_context(|| format!("building {}", spec.reference))?;

    // Through a temporary file in the same directory, so an interrupted run
    // never leaves a truncated archive under the final name.
    let dir = match args.output.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut file =
        tempfile::NamedTempFile::new_in(&dir).with_context(|| format!("creating a file in {}", dir.display()))?;
    file.write_all(&image.archive).context("writing the archive")?;
    file.as_file().sync_all().context("writing the archive")?;
    file.persist(&args.output).with_context(|| format!("writing {}", args.output.display()))?;
    // NamedTempFile is 0600; an archive is not a secret.
    set_readable(&args.output)?;

    println!("{}", image.manifest_digest);
    Ok(())
}

fn set_readable(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("setting permissions of {}", path.display()))
}
