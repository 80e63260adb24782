//! Opening the files dbctl reads (seeds, migrations) so that only regular files are read: a FIFO
//! would block the command forever (holding a transaction or a lock), and a link to `/dev/zero`
//! or a device never ends. Links to regular files are fine. Callers check with [`check_regular`]
//! before they start anything, and [`open_regular`] checks the opened file itself again, without
//! blocking, in case the path was swapped meanwhile.

use std::fmt;
use std::fs::{File, FileType};
use std::io;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::Path;

/// Why a file was not opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    Io(io::Error),
    /// It exists but is not a regular file: what it is, in words ("a FIFO").
    NotRegular(&'static str),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Io(e) => write!(f, "{e}"),
            OpenError::NotRegular(what) => write!(
                f,
                "it is {what}, not a regular file (only regular files, or links to them, are read)"
            ),
        }
    }
}

impl std::error::Error for OpenError {}

impl From<io::Error> for OpenError {
    fn from(e: io::Error) -> Self {
        OpenError::Io(e)
    }
}

/// Opens `path` for reading if it is a regular file or a link to one. The open itself does not
/// block (`O_NONBLOCK`), so a FIFO is refused, not waited on.
pub(crate) fn open_regular(path: &Path) -> Result<File, OpenError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Err(OpenError::NotRegular(describe(&kind)));
    }
    Ok(file)
}

/// `Err` when `path` exists (links followed) but is not a regular file; a missing path is `Ok`,
/// left to whoever reads it.
pub(crate) fn check_regular(path: &Path) -> Result<(), OpenError> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => Err(OpenError::NotRegular(describe(&meta.file_type()))),
        _ => Ok(()),
    }
}

/// Reads a whole regular file.
pub(crate) fn read_regular(path: &Path) -> Result<Vec<u8>, OpenError> {
    let mut file = open_regular(path)?;
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut file, &mut bytes)?;
    Ok(bytes)
}

/// What kind of file system entry this is, in words.
fn describe(kind: &FileType) -> &'static str {
    if kind.is_dir() {
        "a folder"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("x.csv");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // Without O_NONBLOCK this open would block until something writes to the FIFO.
        assert!(matches!(
            open_regular(&fifo),
            Err(OpenError::NotRegular("a FIFO"))
        ));
        assert!(matches!(
            check_regular(&fifo),
            Err(OpenError::NotRegular("a FIFO"))
        ));
        assert!(matches!(
            open_regular(Path::new("/dev/zero")),
            Err(OpenError::NotRegular("a character device"))
        ));
        assert!(matches!(
            read_regular(dir.path()),
            Err(OpenError::NotRegular("a folder"))
        ));
        let file = dir.path().join("ok.sql");
        std::fs::write(&file, "SELECT 1;").unwrap();
        std::os::unix::fs::symlink(&file, dir.path().join("link.sql")).unwrap();
        assert_eq!(
            read_regular(&dir.path().join("link.sql")).unwrap(),
            b"SELECT 1;"
        );
        assert!(check_regular(&dir.path().join("missing")).is_ok());
    }
}
