//! Builds real image archives around this test executable (a dynamically
//! linked binary, like Ember's) and reads them back the way an importer
//! would: index → manifest → config and layer, each checked against its
//! digest, then the layer's files.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use ember_images::oci::{Platform, annotations};
use ember_images::{BuiltImage, Digest, ImageReference, ImageSpec, RootfsInputs, build_image};
use serde_json::Value;

const IMAGE: &str = "ghcr.io/ember-dev/ember-fixture:0.1.0";
const EPOCH: u64 = 1_700_000_000;
const CA_BUNDLE: &[u8] = b"-----BEGIN CERTIFICATE-----\nfixture\n-----END CERTIFICATE-----\n";

/// A binary and a CA bundle of the test's own in a temp dir.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let exe = std::env::current_exe().expect("test executable");
        std::fs::copy(&exe, dir.path().join("ember-fixture")).expect("copy binary");
        std::fs::write(dir.path().join("ca.crt"), CA_BUNDLE).expect("write CA bundle");
        Self { dir }
    }

    fn binary(&self) -> PathBuf {
        self.dir.path().join("ember-fixture")
    }

    fn inputs(&self) -> RootfsInputs {
        RootfsInputs { binary: self.binary(), ca_certificates: self.dir.path().join("ca.crt") }
    }

    fn build(&self, revision: &str) -> BuiltImage {
        build_image(&spec(revision), &self.inputs()).expect("image builds")
    }
}

fn spec(revision: &str) -> ImageSpec {
    ImageSpec {
        reference: ImageReference::parse(IMAGE).expect("valid name"),
        version: "0.1.0".into(),
        revision: revision.into(),
        source: "https://github.com/ember-dev/ember".into(),
        licenses: "Apache-2.0".into(),
        source_date_epoch: EPOCH,
        platform: Platform { architecture: "amd64", os: "linux" },
    }
}

/// One tar entry as a reader sees it.
#[derive(Debug)]
struct TarEntry {
    path: PathBuf,
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    names: (Vec<u8>, Vec<u8>),
    contents: Vec<u8>,
}

fn read_tar(bytes: &[u8]) -> Vec<TarEntry> {
    let mut archive = tar::Archive::new(bytes);
    let entries = archive.entries().expect("tar entries");
    entries
        .map(|entry| {
            let mut entry = entry.expect("tar entry");
            let header = entry.header().clone();
            let mut contents = Vec::new();
            entry.read_to_end(&mut contents).expect("entry contents");
            TarEntry {
                path: entry.path().expect("entry path").into_owned(),
                kind: header.entry_type(),
                mode: header.mode().expect("mode"),
                uid: header.uid().expect("uid"),
                gid: header.gid().expect("gid"),
                mtime: header.mtime().expect("mtime"),
                names: (
                    header.username_bytes().unwrap_or_default().to_vec(),
                    header.groupname_bytes().unwrap_or_default().to_vec(),
                ),
                contents,
            }
        })
        .collect()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).expect("gunzip");
    out
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("valid JSON")
}

/// The archive's files by path, blobs checked against their digests, and
/// the layer blob gunzipped.
struct Opened {
    files: BTreeMap<PathBuf, Vec<u8>>,
    index: Value,
    manifest: Value,
    config: Value,
    layer_tar: Vec<u8>,
}

fn open(archive: &[u8]) -> Opened {
    let files: BTreeMap<PathBuf, Vec<u8>> = read_tar(archive)
        .into_iter()
        .filter(|e| e.kind == tar::EntryType::Regular)
        .map(|e| (e.path, e.contents))
        .collect();
    let blob = |descriptor: &Value| -> Vec<u8> {
        let digest = descriptor["digest"].as_str().expect("descriptor digest");
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        let bytes = files.get(&Path::new("blobs/sha256").join(hex)).expect("blob in archive").clone();
        assert_eq!(Digest::of(&bytes).to_string(), digest, "blob content matches its digest");
        assert_eq!(descriptor["size"].as_u64(), Some(bytes.len() as u64), "descriptor size of {digest}");
        bytes
    };
    let index = json(files.get(Path::new("index.json")).expect("index.json"));
    let manifest = json(&blob(&index["manifests"][0]));
    let config = json(&blob(&manifest["config"]));
    let layer_tar = gunzip(&blob(&manifest["layers"][0]));
    Opened { files, index, manifest, config, layer_tar }
}

#[test]
fn same_inputs_give_the_same_bytes_and_digest() {
    let fixture = Fixture::new();
    let (first, second) = (fixture.build("rev-a"), fixture.build("rev-a"));
    assert_eq!(first.manifest_digest, second.manifest_digest);
    assert!(first.archive == second.archive, "archives differ");
}

#[test]
fn a_different_binary_or_revision_gives_a_different_digest() {
    let fixture = Fixture::new();
    let original = fixture.build("rev-a");
    assert_ne!(fixture.build("rev-b").manifest_digest, original.manifest_digest, "revision");

    // Trailing bytes keep the ELF file loadable, so ldd still reads it.
    let mut binary = std::fs::read(fixture.binary()).expect("read binary");
    binary.push(0);
    std::fs::write(fixture.binary(), binary).expect("write binary");
    assert_ne!(fixture.build("rev-a").manifest_digest, original.manifest_digest, "binary");
}

#[test]
fn blobs_match_their_descriptors_and_the_index_names_the_image() {
    let image = Fixture::new().build("rev-a");
    let opened = open(&image.archive);

    assert_eq!(
        json(opened.files.get(Path::new("oci-layout")).expect("oci-layout")),
        json(br#"{"imageLayoutVersion":"1.0.0"}"#)
    );
    assert_eq!(opened.index["schemaVersion"], 2);
    assert_eq!(opened.index["mediaType"], "application/vnd.oci.image.index.v1+json");
    let descriptor = &opened.index["manifests"][0];
    assert_eq!(descriptor["digest"], image.manifest_digest.to_string());
    assert_eq!(descriptor["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(descriptor["annotations"][annotations::CONTAINERD_IMAGE_NAME], IMAGE);
    assert_eq!(descriptor["annotations"][annotations::REF_NAME], "0.1.0");

    assert_eq!(opened.manifest["config"]["mediaType"], "application/vnd.oci.image.config.v1+json");
    assert_eq!(opened.manifest["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
    assert_eq!(opened.manifest["annotations"][annotations::REVISION], "rev-a");
    let diff_ids = &opened.config["rootfs"]["diff_ids"];
    assert_eq!(diff_ids, &serde_json::json!([Digest::of(&opened.layer_tar).to_string()]));

    // Every file under blobs/ is named by its own digest, with nothing extra.
    let blobs: Vec<_> = opened.files.iter().filter(|(path, _)| path.starts_with("blobs")).collect();
    assert_eq!(blobs.len(), 3, "config, manifest, layer");
    for (path, bytes) in blobs {
        assert_eq!(path.file_name().and_then(|n| n.to_str()), Some(Digest::of(bytes).hex()));
    }
}

#[test]
fn the_config_runs_the_binary_as_nonroot() {
    let opened = open(&Fixture::new().build("rev-a").archive);
    let run = &opened.config["config"];
    assert_eq!(run["User"], "65532:65532");
    assert_eq!(run["Entrypoint"], serde_json::json!(["/usr/local/bin/ember-fixture"]));
    assert_eq!(opened.config["architecture"], "amd64");
    assert_eq!(opened.config["os"], "linux");
    assert_eq!(opened.config["created"], "2023-11-14T22:13:20Z");
    assert_eq!(run["Labels"][annotations::TITLE], "ember-fixture");
}

#[test]
fn the_layer_holds_a_minimal_root_filesystem() {
    let fixture = Fixture::new();
    let opened = open(&fixture.build("rev-a").archive);
    let entries: BTreeMap<PathBuf, TarEntry> =
        read_tar(&opened.layer_tar).into_iter().map(|e| (Path::new("/").join(&e.path), e)).collect();
    let file = |path: &str| -> &TarEntry {
        let entry = entries.get(Path::new(path)).unwrap_or_else(|| panic!("{path} missing from the layer"));
        assert_eq!(entry.kind, tar::EntryType::Regular, "{path}");
        entry
    };
    let dir = |path: &str| -> &TarEntry {
        let entry = entries.get(Path::new(path)).unwrap_or_else(|| panic!("{path} missing from the layer"));
        assert_eq!(entry.kind, tar::EntryType::Directory, "{path}");
        entry
    };

    let binary = file("/usr/local/bin/ember-fixture");
    assert_eq!(binary.mode, 0o755);
    assert!(binary.contents == std::fs::read(fixture.binary()).expect("read binary"), "binary contents");

    let passwd = String::from_utf8(file("/etc/passwd").contents.clone()).expect("utf-8 passwd");
    assert!(passwd.lines().any(|l| l.starts_with("nonroot:x:65532:65532:")), "{passwd}");
    assert_eq!(file("/etc/passwd").mode, 0o644);
    let group = String::from_utf8(file("/etc/group").contents.clone()).expect("utf-8 group");
    assert!(group.lines().any(|l| l == "nonroot:x:65532:"), "{group}");
    let nsswitch = String::from_utf8(file("/etc/nsswitch.conf").contents.clone()).expect("utf-8 nsswitch.conf");
    assert!(nsswitch.lines().any(|l| l == "hosts: files dns"), "{nsswitch}");
    assert_eq!(file("/etc/ssl/certs/ca-certificates.crt").contents, CA_BUNDLE);
    assert_eq!(file("/etc/ssl/certs/ca-certificates.crt").mode, 0o644);

    assert_eq!(dir("/tmp").mode, 0o1777);
    let home = dir("/home/nonroot");
    assert_eq!((home.uid, home.gid), (65532, 65532));

    // The loader and every library, as ldd itself reports them for this binary.
    let shared_objects = ldd_paths(&fixture.binary());
    assert!(shared_objects.iter().any(|p| p.to_string_lossy().contains("ld-linux")), "{shared_objects:?}");
    for object in &shared_objects {
        let entry = file(object.to_str().expect("utf-8 path"));
        assert_eq!(entry.mode, 0o755, "{}", object.display());
        assert!(entry.contents == std::fs::read(object).expect("read library"), "{} contents", object.display());
    }

    // Nothing else: directories, the binary, shared objects and our /etc files.
    let own_files = [
        "/etc/group",
        "/etc/nsswitch.conf",
        "/etc/passwd",
        "/etc/ssl/certs/ca-certificates.crt",
        "/usr/local/bin/ember-fixture",
    ];
    for (path, entry) in &entries {
        if entry.kind == tar::EntryType::Regular {
            assert!(
                own_files.iter().any(|p| Path::new(p) == path) || shared_objects.contains(path),
                "unexpected {}",
                path.display()
            );
        }
    }
}

#[test]
fn every_entry_has_the_fixed_mtime_and_owner_in_sorted_order() {
    let image = Fixture::new().build("rev-a");
    let opened = open(&image.archive);
    for (name, tar) in [("layer", opened.layer_tar), ("archive", image.archive)] {
        let entries = read_tar(&tar);
        let paths: Vec<&Path> = entries.iter().map(|e| e.path.as_path()).collect();
        assert!(paths.windows(2).all(|pair| pair[0] < pair[1]), "{name} entries out of order: {paths:?}");
        for entry in &entries {
            let path = entry.path.display();
            assert_eq!(entry.mtime, EPOCH, "{name}: {path}");
            assert_eq!(entry.names, (Vec::new(), Vec::new()), "{name}: {path} has user/group names");
            let owner = if entry.path == Path::new("home/nonroot") { 65532 } else { 0 };
            assert_eq!((entry.uid, entry.gid), (owner, owner), "{name}: {path}");
            // Every parent is an explicit directory entry that comes first.
            if let Some(parent) = entry.path.parent().filter(|p| !p.as_os_str().is_empty()) {
                let position = paths.iter().position(|p| *p == parent);
                assert!(position.is_some_and(|i| paths[i] < entry.path.as_path()), "{name}: parent of {path}");
            }
        }
    }
}

/// Absolute paths in `ldd`'s output, read independently of the crate's parser.
fn ldd_paths(binary: &Path) -> Vec<PathBuf> {
    let output = Command::new("ldd").arg(binary).output().expect("run ldd");
    assert!(output.status.success(), "ldd failed");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter(|word| word.starts_with('/'))
        .map(PathBuf::from)
        .collect()
}
