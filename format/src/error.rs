//! Errors of the format crate: what went wrong, and where in the file.
use std::fmt;
use std::io;

/// Why a recording could not be read (fully).
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error from the underlying file.
    Io(io::Error),
    /// The file does not start with a leak-record preamble.
    NotARecording {
        /// What was found instead, in words.
        found: String,
    },
    /// The file was written by an incompatible (newer) major format version.
    UnsupportedVersion {
        /// Major version in the file.
        major: u16,
        /// Minor version in the file.
        minor: u16,
    },
    /// The file ends, or is damaged, after `offset` bytes; every record before it was returned.
    Tail {
        /// Byte offset of the first record that could not be read.
        offset: u64,
        /// What is wrong there.
        problem: TailProblem,
    },
    /// A record could not be encoded (writer side).
    Encode(String),
}

/// What is wrong with the end of a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TailProblem {
    /// The file ends in the middle of a record (e.g. the recorder was killed while writing).
    Truncated,
    /// A record's checksum or compression is damaged.
    Corrupt(String),
    /// A record decompresses to more than [`crate::MAX_RECORD_SIZE`] bytes.
    TooLarge,
    /// A record's content does not decode as a known record.
    Undecodable(String),
}

impl Error {
    /// True when everything before the problem was readable (a damaged or truncated tail).
    pub fn is_tail(&self) -> bool {
        matches!(self, Error::Tail { .. })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "i/o error: {e}"),
            Error::NotARecording { found } => {
                write!(f, "not a leak-record recording ({found})")
            }
            Error::UnsupportedVersion { major, minor } => write!(
                f,
                "recording format {major}.{minor} is not supported by this reader \
                 (supports {}.x); use a newer leak-report",
                crate::FORMAT_VERSION_MAJOR
            ),
            Error::Tail { offset, problem } => match problem {
                TailProblem::Truncated => write!(f, "recording is truncated at byte {offset}"),
                TailProblem::Corrupt(why) => {
                    write!(f, "recording is corrupt at byte {offset}: {why}")
                }
                TailProblem::TooLarge => write!(
                    f,
                    "record at byte {offset} is larger than {} bytes",
                    crate::MAX_RECORD_SIZE
                ),
                TailProblem::Undecodable(why) => {
                    write!(f, "record at byte {offset} does not decode: {why}")
                }
            },
            Error::Encode(why) => write!(f, "cannot encode record: {why}"),
        }
    }
}

/// No `source()`: `Display` already says the i/o error's cause, and error chains printed whole
/// (anyhow's `{:#}`) would say it twice ("i/o error: No space left on device: No space left
/// on device").
impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}
