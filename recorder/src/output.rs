//! Creates the recording file safely: never over an existing file unless asked, never through
//! a symlink, private to its owner, and handed to the invoking user under sudo.
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::FromRawFd;
use std::os::unix::fs::{fchown, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::UsageError;

/// `leak-record-YYYYMMDD-HHMMSS.zst` in UTC ([`create_numbered`] adds `-2`, `-3`... when taken).
pub fn default_name(unix_secs: u64) -> PathBuf {
    let (y, m, d, hh, mm, ss) = leak_format::units::utc_fields(unix_secs);
    PathBuf::from(format!(
        "leak-record-{y:04}{m:02}{d:02}-{hh:02}{mm:02}{ss:02}.zst"
    ))
}

/// Creates the recording at `path`: the `-o` path as [`create`] does (`--force` replaces a
/// file), or a default name numbered as [`create_numbered`] does. Returns the path used.
pub fn create_output(path: &Path, cli: &crate::cli::Cli) -> Result<(PathBuf, File, Created)> {
    if cli.output.is_none() {
        return create_numbered(path);
    }
    let (file, created) = create(path, cli.force)?;
    Ok((path.to_path_buf(), file, created))
}

/// [`create`] for a default name (`path`, from [`default_name`]): when a file of that name
/// exists (recorders started in the same second, say one per worker), the first of
/// `NAME-2.zst`, `NAME-3.zst`... that does not, taken as it is created. Returns the path used.
pub fn create_numbered(path: &Path) -> Result<(PathBuf, File, Created)> {
    let stem = path.to_string_lossy();
    let stem = stem.strip_suffix(".zst").unwrap_or(&stem).to_string();
    let mut n = 1;
    loop {
        let candidate = match n {
            1 => path.to_path_buf(),
            n => PathBuf::from(format!("{stem}-{n}.zst")),
        };
        match create(&candidate, false) {
            Ok((file, created)) => return Ok((candidate, file, created)),
            Err(_) if n < 100 && candidate.symlink_metadata().is_ok() => n += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Whether the regular file at `path` is locked by a leak-record writing it (`create` locks
/// the file it writes, for as long as it records).
fn being_recorded(path: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(file) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
    else {
        return false;
    };
    // SAFETY: flock(2) on a descriptor this function owns; the lock, if taken, goes with it.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    rc != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK)
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

/// Whether `file` is the null device (character device 1:3).
fn is_dev_null(file: &File) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    file.metadata()
        .is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == libc::makedev(1, 3))
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
        // A closed standard output is /dev/null by the time this runs (the Rust runtime opens
        // it there): the recording would vanish without a word.
        if is_dev_null(&file) {
            bail!(UsageError(
                "-o -: standard output is /dev/null (or was closed), so the recording would be \
                 discarded; redirect it to a file or a pipe, or give -o FILE"
                    .into()
            ));
        }
        if libc::dup2(2, 1) < 0 {
            bail!(
                "-o -: cannot move standard output: {}",
                io::Error::last_os_error()
            );
        }
        Ok(file)
    }
}

/// The output file until recording starts: removed if the setup fails. With `--force` over an
/// existing file, the recording goes to a new file beside it, which replaces it only once
/// recording starts: a failed setup leaves the old file as it was.
#[derive(Debug, Default)]
pub struct Created {
    /// The file written (None: standard output, or kept).
    written: Option<PathBuf>,
    /// The existing file it replaces once kept.
    replaces: Option<PathBuf>,
}

impl Created {
    /// Recording has started: the file stays, and replaces the one it was made to replace.
    pub fn keep(mut self) -> Result<()> {
        if let (Some(written), Some(target)) = (&self.written, &self.replaces) {
            std::fs::rename(written, target).with_context(|| {
                format!("cannot replace {} with the new recording", target.display())
            })?;
        }
        self.written = None;
        Ok(())
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        if let Some(p) = self.written.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Creates the output file (mode 0600, no symlink following), and what removes it if the setup
/// fails; for `-o -`, takes standard output ([`claim_stdout`]).
pub fn create(path: &Path, force: bool) -> Result<(File, Created)> {
    if is_stdout(path) {
        return Ok((claim_stdout()?, Created::default()));
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
    if meta.as_ref().is_some_and(|m| m.is_dir()) {
        bail!(UsageError(format!(
            "output {} is a directory; give a file name, e.g. -o {}",
            path.display(),
            path.join("run.zst").display()
        )));
    }
    if let Some(m) = meta.as_ref().filter(|m| !m.is_file()) {
        use std::os::unix::fs::FileTypeExt;
        let t = m.file_type();
        let kind = if t.is_char_device() || t.is_block_device() {
            "a device"
        } else if t.is_fifo() {
            "a named pipe"
        } else {
            "a socket"
        };
        bail!(UsageError(format!(
            "output {} is {kind}, not a regular file; give a file name, or -o - for standard \
             output",
            path.display()
        )));
    }
    // Another leak-record's recording in progress: --force would replace it under that
    // recorder, whose data would then go to a file no longer there.
    if meta.is_some() && being_recorded(path) {
        bail!(UsageError(format!(
            "output file {} is being recorded to by another leak-record; choose another -o",
            path.display()
        )));
    }
    // Over an existing file (--force): a new file beside it, renamed over it once recording
    // starts ([`Created::keep`]).
    let replaces = (force && meta.is_some()).then(|| path.to_path_buf());
    let written = match &replaces {
        Some(old) => {
            let name = old
                .file_name()
                .map_or_else(|| "recording".into(), |n| n.to_string_lossy().into_owned());
            old.with_file_name(format!(".{name}.{}.partial", std::process::id()))
        }
        None => path.to_path_buf(),
    };
    let mut opts = OpenOptions::new();
    opts.write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    let file = match opts.open(&written) {
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
    {
        use std::os::fd::AsRawFd;
        // SAFETY: flock(2) on the descriptor of the file just created, which `file` owns: the
        // lock lasts as long as the recording is written (`being_recorded`).
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    }
    // Under sudo, give the recording to the user who asked for it so they can copy it away.
    let id = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u32>().ok());
    if let (Some(uid), Some(gid)) = (id("SUDO_UID"), id("SUDO_GID")) {
        let _ = fchown(&file, Some(uid), Some(gid));
    }
    let created = Created {
        written: Some(written),
        replaces,
    };
    Ok((file, created))
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

    /// Recorders started in the same second get a file each: the second name is not one the
    /// first is recording to (which it was told to --force before).
    #[test]
    fn a_default_name_taken_gets_a_number() {
        let dir = tempfile::tempdir().unwrap();
        let name = dir.path().join(default_name(0));
        let (first, _f1, c1) = create_numbered(&name).unwrap();
        c1.keep().unwrap();
        assert_eq!(first, dir.path().join("leak-record-19700101-000000.zst"));
        let (second, _f2, c2) = create_numbered(&name).unwrap();
        c2.keep().unwrap();
        assert_eq!(second, dir.path().join("leak-record-19700101-000000-2.zst"));
        let (third, ..) = create_numbered(&name).unwrap();
        assert_eq!(third, dir.path().join("leak-record-19700101-000000-3.zst"));
    }

    /// A file another recorder is writing is not replaced, even with --force (its recorder
    /// would go on writing to a file no longer there, and say it succeeded); once it is done,
    /// --force replaces it.
    #[test]
    fn a_file_being_recorded_to_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("run.zst");
        let (recording, created) = create(&p, false).unwrap();
        created.keep().unwrap();
        for force in [false, true] {
            let e = create(&p, force).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "output file {} is being recorded to by another leak-record; choose another \
                     -o",
                    p.display()
                )
            );
        }
        drop(recording);
        create(&p, true).unwrap().1.keep().unwrap();
    }

    #[test]
    fn existing_files_and_symlinks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("run.zst");
        create(&p, false).unwrap().1.keep().unwrap();
        let e = create(&p, false).unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        assert!(e.downcast_ref::<UsageError>().is_some());
        create(&p, true).unwrap().1.keep().unwrap();
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

    /// --force replaces an existing recording only once recording starts: a setup that fails
    /// leaves it as it was (it deleted it), and a file that is not a regular one (a device, a
    /// named pipe) is never written or removed (`-o /dev/full --force` unlinked /dev/full).
    #[test]
    fn force_replaces_a_file_only_once_recording_starts_and_never_a_device() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("run.zst");
        std::fs::write(&p, b"earlier recording").unwrap();
        let listing = || {
            let mut names: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        // The setup fails: the guard drops unkept.
        let (mut file, created) = create(&p, true).unwrap();
        file.write_all(b"new").unwrap();
        drop(created);
        assert_eq!(std::fs::read(&p).unwrap(), b"earlier recording");
        assert_eq!(listing(), ["run.zst"], "the new file is removed");
        // Recording starts: the new file takes the old one's place.
        let (mut file, created) = create(&p, true).unwrap();
        file.write_all(b"new").unwrap();
        created.keep().unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(listing(), ["run.zst"]);
        // A file created where none was: removed when the setup fails.
        let q = dir.path().join("fresh.zst");
        drop(create(&q, false).unwrap());
        assert!(!q.exists());
        // Not regular files: refused with and without --force, and left alone.
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads a valid NUL-terminated path and has no other preconditions.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        for path in [Path::new("/dev/null"), fifo.as_path()] {
            for force in [false, true] {
                let e = create(path, force).unwrap_err();
                assert!(e.to_string().contains("not a regular file"), "{e}");
            }
        }
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device());
        assert!(fifo.symlink_metadata().unwrap().file_type().is_fifo());
    }
}
