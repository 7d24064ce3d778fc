//! leak-report's library: reading recordings (and memleak logs) into per-stack series,
//! detecting continuous growth, symbolizing offline, and rendering the outputs. `main.rs` is
//! only the command line.
#![forbid(unsafe_code)]

pub mod analysis;
pub mod corpus;
pub mod detect;
pub mod html;
pub mod input;
pub mod memleak;
pub mod output;
pub mod redact;
pub mod series;
pub mod suppress;
pub mod symbolize;
