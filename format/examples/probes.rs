//! Prints the probes a recording's header lists, one per line: `entry|return MODULE OFFSET
//! FUNCTION` (OFFSET in hex, a file offset), for benches/redis.sh to put count-only probes at
//! the very same places.
//!
//! usage: `cargo run --release -p leak-format --example probes -- REC.zst`
use std::process::ExitCode;

use leak_format::{ProbeSide, Reader, Record};

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: probes RECORDING");
        return ExitCode::from(2);
    };
    let header = Reader::open(&path)
        .ok()
        .and_then(|mut r| r.next_record())
        .and_then(Result::ok);
    let Some(Record::Header(h)) = header else {
        eprintln!("probes: {} has no readable header", path.to_string_lossy());
        return ExitCode::from(2);
    };
    for p in &h.probes {
        let side = match p.side {
            ProbeSide::Entry => "entry",
            ProbeSide::Return => "return",
        };
        println!("{side} {} {:#x} {}", p.module, p.offset, p.function);
    }
    ExitCode::SUCCESS
}
