//! The shared objects a dynamically linked binary loads, as `ldd` resolves
//! them on this host: the dynamic loader and every library, each by the
//! absolute path the loader found it at. The image gets those files at those
//! paths, so the loader inside finds them the same way.
//!
//! `ldd` may run the binary's loader; call it only on binaries we built.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

/// Absolute paths of the loader and libraries `binary` needs; empty for a
/// statically linked binary.
pub fn shared_objects(binary: &Path) -> Result<Vec<PathBuf>, Error> {
    let fail = |reason: String| Error::Ldd { binary: binary.to_owned(), reason };
    // The C locale keeps ldd's messages in the English this module matches.
    let output = Command::new("ldd")
        .arg(binary)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| fail(format!("cannot start ldd (Debian: libc-bin): {e}")))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        // glibc's ldd fails this way on fully static executables; there is
        // nothing to copy then.
        if stdout.contains("not a dynamic executable") || stderr.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        return Err(fail(format!("{}: {}", output.status, stderr.trim())));
    }
    parse(binary, &stdout)
}

/// Reads `ldd` output lines:
///
/// ```text
///     linux-vdso.so.1 (0x00007ffc...)                        kernel-provided, skipped
///     libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)   a library
///     /lib64/ld-linux-x86-64.so.2 (0x...)                    the loader
///     libfoo.so.1 => not found                               an error
///     statically linked                                      nothing to copy
/// ```
pub fn parse(binary: &Path, output: &str) -> Result<Vec<PathBuf>, Error> {
    let mut objects = Vec::new();
    for line in output.lines().map(str::trim).filter(|line| !line.is_empty()) {
        let path = match line.split_once("=>") {
            Some((name, resolved)) => {
                let resolved = without_load_address(resolved);
                if resolved == "not found" {
                    return Err(Error::LibraryNotFound { binary: binary.to_owned(), library: name.trim().to_owned() });
                }
                // Old glibc prints the vDSO as `linux-vdso.so.1 =>  (0x...)`.
                if resolved.is_empty() {
                    continue;
                }
                resolved
            }
            None => without_load_address(line),
        };
        // Without `=>`, only the loader has an absolute path; the vDSO and
        // "statically linked" do not name files.
        if !path.starts_with('/') {
            continue;
        }
        let path = PathBuf::from(path);
        if !objects.contains(&path) {
            objects.push(path);
        }
    }
    Ok(objects)
}

/// `/lib/x.so (0x00007f...)` → `/lib/x.so`.
fn without_load_address(text: &str) -> &str {
    let text = text.trim();
    match text.rfind(" (0x") {
        Some(start) if text.ends_with(')') => text[..start].trim(),
        _ if text.starts_with("(0x") => "",
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BINARY: &str = "/usr/local/bin/ember";

    fn paths(list: &[&str]) -> Vec<PathBuf> {
        list.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn reads_libraries_and_the_loader_and_skips_the_vdso() {
        let output = "\tlinux-vdso.so.1 (0x00007ffd4b5f2000)\n\
                      \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f31a6b6d000)\n\
                      \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f31a698c000)\n\
                      \t/lib64/ld-linux-x86-64.so.2 (0x00007f31a6bb1000)\n";
        let objects = parse(Path::new(BINARY), output).expect("parses");
        let expected =
            ["/lib/x86_64-linux-gnu/libgcc_s.so.1", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"];
        assert_eq!(objects, paths(&expected));
    }

    #[test]
    fn old_glibc_vdso_arrow_and_static_binaries_name_no_files() {
        let output = "\tlinux-vdso.so.1 =>  (0x00007ffd4b5f2000)\n\tlibm.so.6 => /lib/libm.so.6 (0x1)\n";
        assert_eq!(parse(Path::new(BINARY), output).expect("parses"), paths(&["/lib/libm.so.6"]));
        assert_eq!(parse(Path::new(BINARY), "\tstatically linked\n").expect("parses"), paths(&[]));
    }

    #[test]
    fn a_missing_library_is_an_error_naming_it() {
        let output = "\tlibonnx.so.1 => not found\n\tlibc.so.6 => /lib/libc.so.6 (0x1)\n";
        let error = parse(Path::new(BINARY), output).expect_err("missing library");
        assert!(error.to_string().contains("libonnx.so.1"), "{error}");
    }

    #[test]
    fn runs_ldd_on_a_real_binary() {
        let binary = std::env::current_exe().expect("test executable");
        let objects = shared_objects(&binary).expect("ldd runs");
        assert!(objects.iter().any(|p| p.to_string_lossy().contains("libc.so")), "{objects:?}");
        assert!(objects.iter().any(|p| p.to_string_lossy().contains("ld-linux")), "{objects:?}");
    }
}
