//! Staging an installer image's payload on the host. An installer Job's container is the
//! installer image; its runner copies the image's payload directory into a host directory
//! (a hostPath mounted at the same path) before entering the host's namespaces, where the
//! image's own files are no longer visible, and removes it after the script ran.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// What went wrong while staging.
#[derive(Debug, Error)]
pub enum Error {
    #[error(
        "the installer image has no payload directory {0} (an installer image keeps its files there; see docs/installers.md)"
    )]
    NoPayload(PathBuf),
    #[error("staging the installer payload: {path}: {source}")]
    Copy { path: PathBuf, source: io::Error },
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Copy {
        path: path.to_path_buf(),
        source,
    }
}

/// Copies the tree `from` to `to` (files with their modes, directories, symlinks as links),
/// replacing whatever a previous attempt left at `to`. `to` itself is made 0755, so a
/// command run as another user can read what the image allows it to.
pub fn stage(from: &Path, to: &Path) -> Result<(), Error> {
    if !from.is_dir() {
        return Err(Error::NoPayload(from.to_path_buf()));
    }
    remove(to)?;
    if let Some(parent) = to.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(parent)
            .map_err(at(parent))?;
    }
    copy_tree(from, to)?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o755)).map_err(at(to))
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), Error> {
    fs::create_dir(to).map_err(at(to))?;
    for entry in fs::read_dir(from).map_err(at(from))? {
        let entry = entry.map_err(at(from))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().map_err(at(&src))?;
        if kind.is_dir() {
            copy_tree(&src, &dst)?;
            let mode = entry.metadata().map_err(at(&src))?.permissions();
            fs::set_permissions(&dst, mode).map_err(at(&dst))?;
        } else if kind.is_symlink() {
            symlink(fs::read_link(&src).map_err(at(&src))?, &dst).map_err(at(&dst))?;
        } else if kind.is_file() {
            // fs::copy keeps the permission bits.
            fs::copy(&src, &dst).map_err(at(&src))?;
        }
        // Devices, sockets and fifos have no place in a payload: skipped.
    }
    Ok(())
}

/// Removes a staged payload (nothing to do when it is not there).
pub fn remove(to: &Path) -> Result<(), Error> {
    match fs::remove_dir_all(to) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(at(to)(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nodeops-stage-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    #[test]
    fn copies_files_modes_directories_and_links_and_replaces_a_leftover() {
        let dir = scratch("copy");
        let from = dir.join("payload");
        fs::create_dir_all(from.join("bin")).expect("mkdir");
        fs::write(from.join("install.sh"), "echo hi\n").expect("write");
        fs::set_permissions(from.join("install.sh"), fs::Permissions::from_mode(0o750))
            .expect("chmod");
        fs::write(from.join("bin/agent"), "agent").expect("write");
        symlink("bin/agent", from.join("current")).expect("symlink");
        let to = dir.join("staging/job-1");
        fs::create_dir_all(&to).expect("leftover dir");
        fs::write(to.join("stale"), "from a killed attempt").expect("write");

        stage(&from, &to).expect("staged");
        assert_eq!(
            fs::read_to_string(to.join("install.sh")).expect("read"),
            "echo hi\n"
        );
        let mode = fs::metadata(to.join("install.sh")).expect("meta").mode() & 0o777;
        assert_eq!(mode, 0o750);
        assert_eq!(
            fs::read_to_string(to.join("bin/agent")).expect("read"),
            "agent"
        );
        assert_eq!(
            fs::read_link(to.join("current")).expect("link"),
            Path::new("bin/agent")
        );
        assert!(!to.join("stale").exists(), "a leftover is replaced");
        assert_eq!(fs::metadata(&to).expect("meta").mode() & 0o777, 0o755);

        remove(&to).expect("removed");
        assert!(!to.exists());
        remove(&to).expect("removing twice is fine");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_image_without_a_payload_is_named_in_the_error() {
        let dir = scratch("none");
        let err = stage(&dir.join("payload"), &dir.join("to")).expect_err("no payload");
        assert!(err.to_string().contains("no payload directory"), "{err}");
        assert!(!dir.join("to").exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
