//! Prints what taking the snapshots of a recording cost the recorder, and its final loss
//! counters, for benches/overhead.sh and benches/size.sh:
//!
//! ```text
//! snapshot cost: median 0.684 ms, max 4.044 ms, up to 1008 stacks read
//! snapshots: 7
//! losses: Losses { allocs_full: 0, ... }
//! ```
//!
//! usage: `cargo run --release -p leak-format --example snapshot_costs -- REC.zst`
use std::process::ExitCode;

use leak_format::{Reader, Record};

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: snapshot_costs RECORDING");
        return ExitCode::from(2);
    };
    let mut reader = match Reader::open(&path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "snapshot_costs: cannot read {}: {e}",
                path.to_string_lossy()
            );
            return ExitCode::from(2);
        }
    };
    let (mut walls, mut most_read, mut losses) = (Vec::new(), 0, None);
    while let Some(record) = reader.next_record() {
        match record {
            Ok(Record::Snapshot(s)) => {
                walls.push(s.cost.wall_ns);
                most_read = most_read.max(s.cost.stacks_read);
                losses = Some(s.losses);
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("snapshot_costs: stopped at a damaged record: {e}");
                break;
            }
        }
    }
    if walls.is_empty() {
        eprintln!("snapshot_costs: no snapshot in {}", path.to_string_lossy());
        return ExitCode::from(1);
    }
    walls.sort_unstable();
    let n = walls.len();
    let median = if n % 2 == 1 {
        walls[n / 2] as f64
    } else {
        (walls[n / 2 - 1] + walls[n / 2]) as f64 / 2.0
    };
    let ms = |ns: f64| ns / 1e6;
    println!(
        "snapshot cost: median {:.3} ms, max {:.3} ms, up to {most_read} stacks read",
        ms(median),
        ms(walls[n - 1] as f64)
    );
    println!("snapshots: {n}");
    println!("losses: {:?}", losses.unwrap_or_default());
    ExitCode::SUCCESS
}
