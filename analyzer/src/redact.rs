//! Rewrites a recording for sharing: the command line (a `--kernel --pid` process's, and that
//! of each program a target exec'd, too) becomes the executable's name, a kernel recording's filters stay, the host name becomes
//! "redacted", memory maps keep only the binaries that appear on stacks (data
//! files, sockets and home-directory paths go), and bundled binaries are dropped. Stacks,
//! counters, module paths and build IDs stay, so the analysis of the copy is the same
//! (docs/security.md).
use std::collections::HashSet;
use std::fs::OpenOptions;

use leak_format::{Reader, Record, Writer};

/// Writes the redacted copy of `input` to `output` (created, never overwritten, mode 0600);
/// returns how many bundle records were dropped. The error is one line.
pub fn redact(input: &str, output: &str) -> Result<u64, String> {
    let fail = |e: &dyn std::fmt::Display| format!("{input}: {e}");
    // First pass: which files are modules of some stack.
    let mut modules = HashSet::new();
    for record in Reader::open(input).map_err(|e| fail(&e))?.flatten() {
        if let Record::Snapshot(s) = record {
            modules.extend(s.new_modules.into_iter().map(|m| m.path));
        }
    }
    let mut reader = Reader::open(input).map_err(|e| fail(&e))?;
    let mut header = match reader.next() {
        Some(Ok(Record::Header(h))) => h,
        _ => return Err(format!("{input}: no header record")),
    };
    // A kernel recording's command line is the recorder's filters (--pid N, --comm, --cache);
    // its process's own is in the Process record.
    if header.target.mode != leak_format::TargetMode::Kernel {
        header.target.command_line = vec![file_name(&header.target.exe).to_string()];
    }
    header.host.hostname = "redacted".into();
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let file = opts
        .open(output)
        .map_err(|e| format!("cannot create {output}: {e}"))?;
    let mut writer = Writer::new(file, &header).map_err(|e| format!("{output}: {e}"))?;
    let mut dropped = 0;
    for record in reader {
        let record = match record {
            Ok(Record::Bundle(_)) => {
                dropped += 1;
                continue;
            }
            Ok(Record::Snapshot(mut s)) => {
                if let Some(maps) = s.maps.as_mut() {
                    maps.retain(|m| modules.contains(&m.path));
                }
                Record::Snapshot(s)
            }
            Ok(Record::Process(mut p)) => {
                // A kernel thread has none, and keeps none.
                let name = match file_name(&p.exe) {
                    "" => p.name.clone(),
                    name => name.to_string(),
                };
                if !p.command_line.is_empty() {
                    p.command_line = vec![name].into_iter().filter(|n| !n.is_empty()).collect();
                }
                Record::Process(p)
            }
            Ok(other) => other,
            Err(e) => {
                eprintln!("redact: {input}: {e}; the copy ends before it");
                break;
            }
        };
        writer
            .write(&record)
            .map_err(|e| format!("{output}: {e}"))?;
    }
    Ok(dropped)
}

/// The last component of a path ("" for "").
fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or("")
}
