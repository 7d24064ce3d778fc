//! Prints what taking the snapshots of a recording cost the recorder, and its final loss
//! counters, for benches/overhead.sh and benches/size.sh:
//!
//! ```text
//! snapshot cost: median 0.684 ms, max 4.044 ms, up to 1008 stacks read
//! snapshot cpu: median 0.512 ms, max 3.911 ms
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
    let (mut walls, mut cpus, mut most_read, mut losses) = (Vec::new(), Vec::new(), 0, None);
    while let Some(record) = reader.next_record() {
        match record {
            Ok(Record::Snapshot(s)) => {
                walls.push(s.cost.wall_ns);
                cpus.push(s.cost.cpu_ns);
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
    let n = walls.len();
    let ms = |ns: f64| ns / 1e6;
    let (wall_median, wall_max) = median_max(&mut walls);
    println!(
        "snapshot cost: median {:.3} ms, max {:.3} ms, up to {most_read} stacks read",
        ms(wall_median),
        ms(wall_max)
    );
    let (cpu_median, cpu_max) = median_max(&mut cpus);
    println!(
        "snapshot cpu: median {:.3} ms, max {:.3} ms",
        ms(cpu_median),
        ms(cpu_max)
    );
    println!("snapshots: {n}");
    println!("losses: {:?}", losses.unwrap_or_default());
    ExitCode::SUCCESS
}

/// The median and the largest of `v` (not empty), in ns.
fn median_max(v: &mut [u64]) -> (f64, f64) {
    v.sort_unstable();
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2] as f64
    } else {
        (v[n / 2 - 1] + v[n / 2]) as f64 / 2.0
    };
    (median, v[n - 1] as f64)
}
