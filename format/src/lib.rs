//! The leak-record recording format, shared by the recorder and the analyzer.
//!
//! A recording is a zstd skippable frame holding the magic and format version, followed by one
//! independent, checksummed zstd frame per [`Record`], each a postcard-encoded value. The first
//! record is a [`Record::Header`]; snapshots follow; a clean recording ends with [`Record::End`].
//! A crash can only damage the last frame: [`Reader`] returns every complete record and reports a
//! truncated or corrupt tail as an error item instead of failing. `docs/format.md` is the normative
//! specification.
#![forbid(unsafe_code)]

mod builder;
mod error;
mod fast;
pub mod kernel;
mod reader;
mod records;
mod state;
pub mod units;
mod writer;

pub use builder::RecordingBuilder;
pub use error::{Error, TailProblem};
pub use reader::{find_end, Reader, MAX_RECORD_SIZE};
pub use records::*;
pub use state::{RecordingState, StackTotals};
pub use writer::Writer;

/// The 8 bytes at the start of the preamble frame's payload.
pub const MAGIC: [u8; 8] = *b"LEAKREC\0";
/// Major format version: a reader refuses any other major version.
pub const FORMAT_VERSION_MAJOR: u16 = 1;
/// Minor format version: additions that old readers may ignore (new record variants).
/// 1.1 added kernel mode: `Record::Kernel`, `TargetMode::Kernel` and the kernel `AllocKind`s,
/// which only kernel-mode recordings contain (docs/format.md §3 and §5.7). 1.2 added
/// `Record::Sampling`, which only sampled recordings contain (§5.8). 1.3 added
/// `Record::Probes`, written when probes are attached after the start (§5.9). 1.4 added
/// `Record::Children`, written when the target started processes (§5.10). 1.5 added
/// `Record::Unseen`, written when allocator events went unrecorded (§5.11). 1.6 added
/// `Record::Process`, which names the process of a `--kernel --pid` recording (§5.12). 1.7
/// writes it in user mode too, naming the program a target runs after an exec (§5.12). 1.8
/// writes each module's bundle right after the snapshot that declares it (§1.3, §5.6).
pub const FORMAT_VERSION_MINOR: u16 = 8;
/// The fewest snapshots from which leak-report's detector, at its defaults, can judge a
/// stack's growth: 12 points after a warm-up of the first tenth (docs/detection.md). leak-record
/// says when a recording will have, or has, fewer; leak-report's leak gates exit 2 on one.
pub const SNAPSHOTS_TO_JUDGE: u32 = 13;
/// Whether `head`, a file's first bytes, begins a recording: the preamble frame's magic, its
/// length, then [`MAGIC`] (16 bytes in all; fewer never match).
pub fn starts_a_recording(head: &[u8]) -> bool {
    head.len() >= 16 && head[..4] == PREAMBLE_FRAME_MAGIC.to_le_bytes() && head[8..16] == MAGIC
}

/// The zstd skippable-frame magic used for the preamble (any of 0x184D2A50..=0x184D2A5F is
/// skippable; this one is ours).
pub const PREAMBLE_FRAME_MAGIC: u32 = 0x184D_2A5C;
