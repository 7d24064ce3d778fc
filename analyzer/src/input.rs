//! Opens the input, whichever it is: a leak-record recording, or a memleak text log.
use std::fs::File;
use std::io::Read;
use std::path::Path;

use leak_format::{Reader, PREAMBLE_FRAME_MAGIC};

use crate::memleak;
use crate::series::{self, Recording};

/// Largest memleak text log read (they are read whole).
const MAX_TEXT_LOG: u64 = 1 << 30;

/// Reads `path` (`-`: standard input, e.g. a recording streamed by `leak-record -o -`); the
/// error is one line naming the problem and what to do.
pub fn read(path: &Path, cap: usize) -> Result<Recording, String> {
    if path.as_os_str() == "-" {
        return read_stdin(cap);
    }
    read_file(path, cap)
}

/// Reads standard input (not a terminal) through [`read_stream`].
fn read_stdin(cap: usize) -> Result<Recording, String> {
    use std::io::IsTerminal;
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Err(
            "standard input is a terminal; pipe a recording in (ssh HOST 'sudo \
                    leak-record -p PID -d 10m -o -' | leak-report -), or name a file"
                .into(),
        );
    }
    read_stream(&mut stdin.lock(), "standard input", cap)
}

/// Copies a stream (standard input, a FIFO, `<(...)`) to a temporary file, since the reader
/// looks for the end record first, and reads that; the copy is deleted once read.
fn read_stream(source: &mut impl Read, shown: &str, cap: usize) -> Result<Recording, String> {
    let mut copy = tempfile::NamedTempFile::new()
        .map_err(|e| format!("cannot create a temporary file for {shown}: {e}"))?;
    std::io::copy(source, copy.as_file_mut())
        .map_err(|e| format!("cannot copy {shown} to {}: {e}", copy.path().display()))?;
    read_file(copy.path(), cap).map_err(|e| e.replace(&copy.path().display().to_string(), shown))
}

fn read_file(path: &Path, cap: usize) -> Result<Recording, String> {
    let shown = path.display();
    let mut file = File::open(path).map_err(|e| format!("cannot open {shown}: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if !meta.is_file() && !meta.is_dir() {
        // A pipe cannot be read twice: the bytes looked at below would be lost.
        return read_stream(&mut file, &shown.to_string(), cap);
    }
    if meta.len() == 0 {
        return Err(format!(
            "{shown} is empty; give a recording made by leak-record (copied whole) or a memleak log"
        ));
    }
    let mut head = [0u8; 4];
    let n = file
        .read(&mut head)
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    // A recording starts with the preamble's magic (a file cut shorter, with its start).
    if n > 0 && head[..n] == PREAMBLE_FRAME_MAGIC.to_le_bytes()[..n] {
        let reader = Reader::open(path).map_err(|e| match e {
            e @ leak_format::Error::Tail { .. } => format!(
                "{shown}: nothing to analyze: {e}, within its preamble; copy the file whole"
            ),
            e => format!("{shown}: {e}"),
        })?;
        let end = leak_format::find_end(path);
        let rec =
            series::read_ended(reader, cap, end.as_ref()).map_err(|e| format!("{shown}: {e}"))?;
        // A `--pid` kernel target that exited before the first interval: its one snapshot is
        // after the exit, analyzed as such (and too short to judge).
        return if rec.snapshots > 0 || rec.after_exit.is_some() {
            Ok(rec)
        } else {
            Err(no_snapshot(&shown.to_string(), &rec))
        };
    }
    if meta.len() > MAX_TEXT_LOG {
        return Err(format!(
            "{shown} is not a leak-record recording, and too large for a memleak log"
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let text = String::from_utf8_lossy(&bytes);
    if memleak::looks_like(&text) {
        return memleak::parse(&text, cap).map_err(|e| format!("{shown}: {e}"));
    }
    Err(format!(
        "{shown} is neither a leak-record recording nor a memleak log (no \"Top N stacks with \
         outstanding allocations\" lines); record one with leak-record"
    ))
}

/// Why a recording without a single snapshot cannot be analyzed, and what to do.
fn no_snapshot(shown: &str, rec: &Recording) -> String {
    let why = match (&rec.tail, &rec.header, &rec.end) {
        (Some(tail), _, _) => format!("{tail}, before its first snapshot"),
        (None, None, _) => "it holds no record at all".into(),
        (
            None,
            Some(_),
            Some(leak_format::End {
                reason: leak_format::EndReason::Error(e),
                ..
            }),
        ) => format!("the recorder stopped on an error before its first snapshot: {e}"),
        (None, Some(_), _) => "it ends before its first snapshot".into(),
    };
    format!(
        "{shown}: nothing to analyze: {why}; record for at least one interval (-i), and copy the \
         file whole"
    )
}
