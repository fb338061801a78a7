//! Output files that are complete or not there at all.
//!
//! A file is written to a temporary file in the same folder, synced, and renamed over its path
//! only when everything was written: a write that fails part-way (a full disk) or a rename that
//! fails removes the temporary file and leaves the path as it was, absent or with its earlier
//! content.

use crate::error::{Error, Result};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Writes the file at `path` through `fill`, which writes the whole content to the file it is
/// given (a temporary file beside `path`). Errors name `path`.
///
/// A symbolic link (`/dev/stdout`, `/dev/fd/3`) and anything else that exists and is neither a
/// regular file nor a folder (a pipe, a device) is written in place, through the link:
/// renaming over it would replace the link or the device rather than write to what it stands
/// for.
pub fn write_file(path: &Path, fill: impl FnOnce(File) -> Result<()>) -> Result<()> {
    let name = path.display().to_string();
    let io = |e: std::io::Error| Error::io(&name, e);
    let existing = std::fs::symlink_metadata(path).ok();
    if let Some(m) = &existing
        && !m.is_file()
        && !m.is_dir()
    {
        return fill(File::create(path).map_err(io)?);
    }
    let Some(file_name) = path.file_name() else {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a file name",
        )));
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (tmp, file) = create_temp(&dir, &file_name.to_string_lossy()).map_err(io)?;
    let mut guard = Temp {
        path: tmp,
        keep: false,
    };
    // Keep the mode of the file being replaced (best effort: a new file's default mode is a
    // correct outcome too).
    if let Some(m) = existing.filter(|m| m.is_file()) {
        let _ = std::fs::set_permissions(&guard.path, m.permissions());
    }
    let sync = file.try_clone().map_err(io)?;
    fill(file)?;
    sync.sync_all().map_err(io)?;
    drop(sync);
    std::fs::rename(&guard.path, path).map_err(io)?;
    guard.keep = true;
    Ok(())
}

/// Creates a new file `.NAME.PID.N.tmp` in `dir` (N counts up until the name is free).
fn create_temp(dir: &Path, name: &str) -> std::io::Result<(PathBuf, File)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
        {
            Ok(f) => return Ok((p, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Removes the temporary file unless it was renamed into place (also on a panic while writing).
struct Temp {
    path: PathBuf,
    keep: bool,
}

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("kvreplay-atomic-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn put(text: &'static str) -> impl FnOnce(File) -> Result<()> {
        move |mut f| f.write_all(text.as_bytes()).map_err(|e| Error::io("t", e))
    }

    #[test]
    fn replaces_a_file_whole_and_fails_without_touching_it() {
        let dir = temp_dir("replace");
        let p = dir.join("out.txt");
        write_file(&p, put("first")).unwrap();
        write_file(&p, put("second")).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "second");
        let e = write_file(&p, |mut f| {
            f.write_all(b"par").unwrap();
            Err(Error::Config("stopped".into()))
        })
        .unwrap_err();
        assert!(e.to_string().contains("stopped"));
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "second");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn devices_and_links_are_written_in_place() {
        use std::os::unix::fs::FileTypeExt;
        write_file(Path::new("/dev/null"), put("x")).unwrap();
        let m = std::fs::metadata("/dev/null").unwrap();
        assert!(m.file_type().is_char_device());
        let dir = temp_dir("link");
        let real = dir.join("real.txt");
        let link = dir.join("link.txt");
        std::fs::write(&real, "old").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write_file(&link, put("new")).unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "new");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
