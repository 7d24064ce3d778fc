//! leak-report (early stage): reads a recording and prints what it holds — the target, the
//! losses and the stacks with the most outstanding bytes at the end. Symbolization, growth
//! verdicts and reports come with the analyzer proper.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use leak_format::{AllocKind, Reader, Record, RecordingState};

/// Summarize a leak-record recording.
#[derive(Debug, Parser)]
#[command(name = "leak-report", version)]
struct Cli {
    /// The recording (.zst) written by leak-record.
    recording: PathBuf,
    /// How many stacks to list.
    #[arg(long, default_value_t = 10)]
    top: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("leak-report: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: &Cli) -> Result<()> {
    let reader = Reader::open(&cli.recording)
        .with_context(|| format!("cannot read {}", cli.recording.display()))?;
    let mut state = RecordingState::default();
    let mut costs = Vec::new();
    for item in reader {
        match item {
            Ok(record) => {
                if let Record::Snapshot(s) = &record {
                    costs.push((s.cost.wall_ns, s.cost.stacks_read));
                }
                state.apply(record);
            }
            Err(e) if e.is_tail() => {
                eprintln!("leak-report: warning: {e}; analyzing the complete snapshots before it");
                break;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", cli.recording.display()))
            }
        }
    }
    let header = state
        .header
        .as_ref()
        .context("the recording has no header")?;
    println!(
        "target: PID {} {} ({} snapshots, {})",
        header.target.pid,
        header.target.command_line.join(" "),
        state.snapshots,
        match &state.end {
            Some(e) => format!("ended: {:?}", e.reason),
            None => "no end record: the recorder did not finish".into(),
        }
    );
    println!("losses: {:?}", state.losses);
    if !costs.is_empty() {
        let mut walls: Vec<u64> = costs.iter().map(|c| c.0).collect();
        walls.sort_unstable();
        let max_stacks = costs.iter().map(|c| c.1).max().unwrap_or(0);
        println!(
            "snapshot cost: median {:.3} ms, max {:.3} ms, up to {max_stacks} stacks read",
            walls[walls.len() / 2] as f64 / 1e6,
            walls[walls.len() - 1] as f64 / 1e6
        );
    }
    let mut totals: Vec<_> = state
        .totals
        .values()
        .filter(|t| t.outstanding_bytes() > 0)
        .collect();
    totals.sort_by_key(|t| std::cmp::Reverse(t.outstanding_bytes()));
    for t in totals.into_iter().take(cli.top) {
        let kind = if t.kind == AllocKind::Mmap {
            " (mmap)"
        } else {
            ""
        };
        println!(
            "\n{} bytes in {} allocations from stack {}{kind}:",
            t.outstanding_bytes(),
            t.outstanding_count(),
            t.stack
        );
        match state.stacks.get(&t.stack) {
            Some(s) if s.lost.is_some() => println!("    [stack unavailable: {:?}]", s.lost),
            Some(s) => {
                for f in &s.frames {
                    let module = f
                        .module
                        .and_then(|m| state.modules.get(&m))
                        .map_or("?", |m| m.path.as_str());
                    println!("    {module}+{:#x}", f.offset);
                }
            }
            None => println!("    [stack not in the recording]"),
        }
    }
    Ok(())
}
