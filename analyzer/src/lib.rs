//! leak-report's library: reading recordings into per-stack series, detecting continuous
//! growth, symbolizing offline, and rendering the outputs. `main.rs` is only the command line.
#![forbid(unsafe_code)]

pub mod detect;
