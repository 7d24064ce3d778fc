//! leak-record: parse the command line, record, map the outcome to an exit status.
use std::process::ExitCode;

use clap::Parser;

/// `eprintln!` that ignores a failed write. The recorder's messages go to stderr, which may be
/// a pipe whose reader is gone (`leak-record ... 2>&1 | head`); `eprintln!` would panic there
/// and lose the recording.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

#[cfg(target_os = "linux")]
mod bpf;
mod cli;
#[cfg(target_os = "linux")]
mod discover;
#[cfg(target_os = "linux")]
mod kallsyms;
#[cfg(target_os = "linux")]
mod kernel;
#[cfg(target_os = "linux")]
mod modules;
#[cfg(target_os = "linux")]
mod output;
#[cfg(target_os = "linux")]
mod placement;
mod privileges;
#[cfg(target_os = "linux")]
mod procfs;
#[cfg(target_os = "linux")]
mod record;
#[cfg(target_os = "linux")]
mod sampling;
#[cfg(target_os = "linux")]
mod target;

/// An error in what the user asked for (exit status 2), as opposed to a runtime failure (1).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A failure whose exit status is given: a started command that ended before it ran (Ctrl-C
/// during the set-up) passes its status on, as a recording of it would.
#[derive(Debug)]
pub struct ExitWith(pub String, pub u8);

impl std::fmt::Display for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ExitWith {}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    #[cfg(target_os = "linux")]
    bpf::install_log();
    #[cfg(target_os = "linux")]
    let result = record::run(cli);
    #[cfg(not(target_os = "linux"))]
    let result: anyhow::Result<u8> = {
        let _ = cli;
        Err(
            UsageError("leak-record needs Linux (eBPF uprobes); leak-report runs anywhere".into())
                .into(),
        )
    };
    match result {
        Ok(status) => ExitCode::from(status),
        Err(e) => {
            say!("leak-record: {e:#}");
            if let Some(ExitWith(_, status)) = e.downcast_ref::<ExitWith>() {
                ExitCode::from(*status)
            } else if e.chain().any(|c| c.downcast_ref::<UsageError>().is_some()) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
