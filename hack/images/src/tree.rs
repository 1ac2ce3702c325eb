//! A tree of directories and files held in memory, written as a
//! deterministic tar: entries in path order, one fixed mtime, numeric owners
//! without user or group names, modes chosen by the caller. Both the image
//! layer and the outer OCI archive are written through it, so neither
//! depends on the host's clock, umask or file metadata.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use crate::Error;

/// Mode of directories nobody asked for explicitly (parents of files).
pub const DIR_MODE: u32 = 0o755;

/// What a path holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Directory,
    File(Vec<u8>),
}

/// One path in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// Permission bits, including sticky/setuid bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Paths relative to the tree's root. `PathBuf` orders component by
/// component, so a directory always sorts right before its contents.
#[derive(Debug, Clone, Default)]
pub struct FileTree {
    entries: BTreeMap<PathBuf, Entry>,
}

impl FileTree {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directory owned by `uid:gid`, or gives an existing one (made as
    /// a parent) this mode and owner.
    pub fn add_dir(&mut self, path: impl AsRef<Path>, mode: u32, uid: u32, gid: u32) -> Result<(), Error> {
        let path = relative(path.as_ref())?;
        self.add_parents(&path)?;
        let entry = Entry { kind: Kind::Directory, mode, uid, gid };
        match self.entries.get(&path) {
            Some(Entry { kind: Kind::File(_), .. }) => Err(Error::PathConflict { path }),
            _ => {
                self.entries.insert(path, entry);
                Ok(())
            }
        }
    }

    /// Adds a root-owned file; its parents become root-owned 0755
    /// directories unless they were added before.
    pub fn add_file(&mut self, path: impl AsRef<Path>, contents: Vec<u8>, mode: u32) -> Result<(), Error> {
        let path = relative(path.as_ref())?;
        self.add_parents(&path)?;
        if self.entries.contains_key(&path) {
            return Err(Error::PathConflict { path });
        }
        self.entries.insert(path, Entry { kind: Kind::File(contents), mode, uid: 0, gid: 0 });
        Ok(())
    }

    /// The entry at `path` (absolute or relative to the root).
    pub fn get(&self, path: impl AsRef<Path>) -> Option<&Entry> {
        self.entries.get(&relative(path.as_ref()).ok()?)
    }

    /// Entries in the order the tar holds them.
    pub fn iter(&self) -> impl Iterator<Item = (&Path, &Entry)> {
        self.entries.iter().map(|(path, entry)| (path.as_path(), entry))
    }

    /// The tree as an uncompressed tar with every mtime set to `mtime`.
    pub fn to_tar(&self, mtime: u64) -> Result<Vec<u8>, Error> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, entry) in &self.entries {
            let (entry_type, contents): (_, &[u8]) = match &entry.kind {
                Kind::Directory => (tar::EntryType::Directory, &[]),
                Kind::File(contents) => (tar::EntryType::Regular, contents),
            };
            // ustar: POSIX, read by every tool; the builder adds a GNU long
            // name record only for paths over 255 bytes, which we do not make.
            let mut header = tar::Header::new_ustar();
            header.set_entry_type(entry_type);
            header.set_mode(entry.mode);
            header.set_uid(u64::from(entry.uid));
            header.set_gid(u64::from(entry.gid));
            header.set_mtime(mtime);
            header.set_size(contents.len() as u64);
            header.set_device_major(0).map_err(Error::Tar)?;
            header.set_device_minor(0).map_err(Error::Tar)?;
            builder.append_data(&mut header, path, contents).map_err(Error::Tar)?;
        }
        builder.into_inner().map_err(Error::Tar)
    }

    fn add_parents(&mut self, path: &Path) -> Result<(), Error> {
        for parent in path.ancestors().skip(1).filter(|p| !p.as_os_str().is_empty()) {
            match self.entries.get(parent) {
                Some(Entry { kind: Kind::Directory, .. }) => {}
                Some(Entry { kind: Kind::File(_), .. }) => return Err(Error::PathConflict { path: parent.to_owned() }),
                None => {
                    let entry = Entry { kind: Kind::Directory, mode: DIR_MODE, uid: 0, gid: 0 };
                    self.entries.insert(parent.to_owned(), entry);
                }
            }
        }
        Ok(())
    }
}

/// `path` without its leading `/`; only plain names, since `..` or `.` in
/// an archive would either escape the root or name one file twice.
fn relative(path: &Path) -> Result<PathBuf, Error> {
    let mut relative = PathBuf::new();
    for component in path.components() {
        match component {
            Component::RootDir => {}
            Component::Normal(name) => relative.push(name),
            _ => return Err(Error::UnsupportedPath { path: path.to_owned() }),
        }
    }
    if relative.as_os_str().is_empty() {
        return Err(Error::UnsupportedPath { path: path.to_owned() });
    }
    Ok(relative)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(tar: &[u8]) -> Vec<(PathBuf, tar::Header)> {
        let mut archive = tar::Archive::new(tar);
        let entries = archive.entries().expect("tar entries");
        entries
            .map(|entry| {
                let entry = entry.expect("tar entry");
                (entry.path().expect("entry path").into_owned(), entry.header().clone())
            })
            .collect()
    }

    #[test]
    fn parents_come_first_and_everything_is_sorted() {
        let mut tree = FileTree::new();
        tree.add_file("/usr/local/bin/ember", b"bin".to_vec(), 0o755).expect("file");
        tree.add_file("/etc/passwd", b"root".to_vec(), 0o644).expect("file");
        tree.add_dir("/tmp", 0o1777, 0, 0).expect("dir");
        tree.add_file("/etc-extra", Vec::new(), 0o644).expect("file");
        let paths: Vec<PathBuf> = entries(&tree.to_tar(7).expect("tar")).into_iter().map(|(p, _)| p).collect();
        let expected =
            ["etc", "etc/passwd", "etc-extra", "tmp", "usr", "usr/local", "usr/local/bin", "usr/local/bin/ember"];
        assert_eq!(paths, expected.map(PathBuf::from));
    }

    #[test]
    fn headers_carry_only_what_we_set() {
        let mut tree = FileTree::new();
        tree.add_dir("/home/nonroot", 0o755, 65532, 65532).expect("dir");
        tree.add_file("/etc/group", b"root:x:0:\n".to_vec(), 0o644).expect("file");
        for (path, header) in entries(&tree.to_tar(1_700_000_000).expect("tar")) {
            assert_eq!(header.mtime().expect("mtime"), 1_700_000_000, "{}", path.display());
            assert_eq!(header.username_bytes(), Some(&b""[..]), "{}", path.display());
            assert_eq!(header.groupname_bytes(), Some(&b""[..]), "{}", path.display());
            let owner = if path == Path::new("home/nonroot") { 65532 } else { 0 };
            assert_eq!(header.uid().expect("uid"), owner, "{}", path.display());
        }
    }

    #[test]
    fn explicit_directory_mode_wins_over_parent_default() {
        let mut tree = FileTree::new();
        tree.add_file("/tmp/x", Vec::new(), 0o644).expect("file");
        tree.add_dir("/tmp", 0o1777, 0, 0).expect("dir");
        assert_eq!(tree.get("/tmp").map(|e| e.mode), Some(0o1777));
    }

    #[test]
    fn refuses_conflicts_and_escaping_paths() {
        let mut tree = FileTree::new();
        tree.add_file("/etc/passwd", Vec::new(), 0o644).expect("file");
        assert!(tree.add_file("/etc/passwd", Vec::new(), 0o644).is_err());
        assert!(tree.add_file("/etc/passwd/x", Vec::new(), 0o644).is_err());
        assert!(tree.add_dir("/etc/passwd", 0o755, 0, 0).is_err());
        assert!(tree.add_file("/lib/../etc/shadow", Vec::new(), 0o644).is_err());
        assert!(tree.add_dir("/", 0o755, 0, 0).is_err());
    }
}
