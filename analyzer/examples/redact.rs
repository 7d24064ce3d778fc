//! Rewrites a recording for sharing (leak_report::redact; see docs/security.md).
//!
//! usage: cargo run -p leak-report --example redact -- IN.zst OUT.zst
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        eprintln!("usage: redact IN.zst OUT.zst");
        return ExitCode::from(2);
    };
    match leak_report::redact::redact(input, output) {
        Ok(dropped) => {
            eprintln!("redact: wrote {output} ({dropped} bundle records dropped)");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("redact: {e}");
            ExitCode::from(2)
        }
    }
}
