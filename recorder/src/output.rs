//! Creates the recording file safely: never over an existing file unless asked, never through
//! a symlink, private to its owner, and handed to the invoking user under sudo.
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::FromRawFd;
use std::os::unix::fs::{fchown, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::UsageError;

/// `leak-record-YYYYMMDD-HHMMSS.zst` in UTC.
pub fn default_name(unix_secs: u64) -> PathBuf {
    let (y, m, d, hh, mm, ss) = leak_format::units::utc_fields(unix_secs);
    PathBuf::from(format!(
        "leak-record-{y:04}{m:02}{d:02}-{hh:02}{mm:02}{ss:02}.zst"
    ))
}

/// Whether `-o` names standard output (`-o -`).
pub fn is_stdout(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// How the output is named in messages.
pub fn name(path: &Path) -> String {
    if is_stdout(path) {
        "standard output".into()
    } else {
        path.display().to_string()
    }
}

/// `-o -`: takes standard output for the recording, then points this process's standard
/// output at standard error, so that nothing else is written into the recording: not a stray
/// message, nor the output of a command started after this (which inherits it). Refuses a
/// terminal.
pub fn claim_stdout() -> Result<File> {
    // SAFETY: isatty, fcntl(F_DUPFD_CLOEXEC) and dup2 on the standard descriptors take no
    // pointers; the duplicate is owned by the File made from it, and by nothing else.
    unsafe {
        if libc::isatty(1) == 1 {
            bail!(UsageError(
                "-o - writes the recording to standard output, which is a terminal; redirect it \
                 (leak-record ... -o - > run.zst, or | ssh HOST 'cat > run.zst')"
                    .into()
            ));
        }
        let fd = libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3);
        if fd < 0 {
            bail!(UsageError(format!(
                "-o -: cannot use standard output: {}",
                io::Error::last_os_error()
            )));
        }
        let file = File::from_raw_fd(fd);
        if libc::dup2(2, 1) < 0 {
            bail!(
                "-o -: cannot move standard output: {}",
                io::Error::last_os_error()
            );
        }
        Ok(file)
    }
}

/// Creates the output file (mode 0600, no symlink following); for `-o -`, takes standard
/// output ([`claim_stdout`]).
pub fn create(path: &Path, force: bool) -> Result<File> {
    if is_stdout(path) {
        return claim_stdout();
    }
    let meta = path.symlink_metadata().ok();
    // A symbolic link is refused whatever it points at (also nothing: create_new would say
    // "exists", and --force would not help).
    if meta.as_ref().is_some_and(|m| m.file_type().is_symlink()) {
        bail!(UsageError(format!(
            "output {} is a symbolic link; refusing to follow it, choose another -o",
            path.display()
        )));
    }
    if meta.is_some_and(|m| m.is_dir()) {
        bail!(UsageError(format!(
            "output {} is a directory; give a file name, e.g. -o {}",
            path.display(),
            path.join("run.zst").display()
        )));
    }
    let mut opts = OpenOptions::new();
    opts.write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let file = match opts.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => bail!(UsageError(format!(
            "output file {} exists; pass --force to overwrite it or choose another -o",
            path.display()
        ))),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => bail!(UsageError(format!(
            "output {} is a symbolic link; refusing to follow it, choose another -o",
            path.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
            let dir = dir.unwrap_or(Path::new("."));
            // A directory that exists but makes no files (/proc, /sys) says ENOENT too.
            let why = if dir.is_dir() {
                "takes no new files (not a regular filesystem, e.g. /proc or /sys);"
            } else {
                "does not exist; create it or"
            };
            bail!(UsageError(format!(
                "cannot create {}: directory {} {why} choose another -o",
                path.display(),
                dir.display()
            )))
        }
        Err(e) => bail!(UsageError(format!("cannot create {}: {e}", path.display()))),
    };
    // Under sudo, give the recording to the user who asked for it so they can copy it away.
    let id = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u32>().ok());
    if let (Some(uid), Some(gid)) = (id("SUDO_UID"), id("SUDO_GID")) {
        let _ = fchown(&file, Some(uid), Some(gid));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_are_utc_dates() {
        assert_eq!(
            default_name(0),
            PathBuf::from("leak-record-19700101-000000.zst")
        );
        assert_eq!(
            default_name(1_795_000_000),
            PathBuf::from("leak-record-20261118-110640.zst")
        );
    }

    #[test]
    fn existing_files_and_symlinks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("run.zst");
        create(&p, false).unwrap();
        let e = create(&p, false).unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        assert!(e.downcast_ref::<UsageError>().is_some());
        create(&p, true).unwrap();
        let link = dir.path().join("link.zst");
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &link).unwrap();
        // A dangling link: said to be a link with and without --force (not "exists; pass
        // --force", which then refuses).
        for force in [false, true] {
            let e = create(&link, force).unwrap_err();
            assert!(e.to_string().contains("symbolic link"), "{force}: {e}");
        }
        assert!(!dir.path().join("elsewhere").exists());
        // A directory where no file can be made is not said to be missing.
        for proc_dir in ["/proc/self/x.zst", "/proc/x.zst"] {
            let e = create(Path::new(proc_dir), false).unwrap_err().to_string();
            assert!(e.contains("takes no new files"), "{e}");
            assert!(!e.contains("does not exist"), "{e}");
            assert!(e.ends_with("choose another -o"), "{e}");
        }
        let e = create(&dir.path().join("no/x.zst"), false).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("/no does not exist; create it or choose another -o"),
            "{e}"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
