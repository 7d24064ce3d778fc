//! The recording reader (leak-format) and the analyzer's series builder on hostile bytes.
//!
//! First byte, bit 0 clear: the rest is the file as is. Set: the rest is split at each 0xFF
//! 0x00 0xFF into record payloads, each compressed into its own zstd frame after a valid
//! preamble and header, so postcard decoding and the series logic see arbitrary records
//! (random bytes rarely survive zstd's checksums). Bit 1 chooses the reader on top:
//! leak-format's RecordingState or leak-report's series. Bit 2 makes the series reader the
//! one leak-report uses (`read_ended`), told of an End record by the next 4 bytes (its
//! `snapshots`, u32 LE, any value, as a hostile file's End record gives `find_end`) and by bit
//! 3 (its target exited: a `--kernel --pid` recording's snapshots from number `snapshots - 1`
//! on are kept apart; else it ran for its duration); the valid header is then a `--kernel
//! --pid` recording's. The rest follows those bytes.
#![no_main]
use std::cell::RefCell;
use std::sync::OnceLock;

use leak_format::{End, EndReason, Reader, RecordingBuilder, RecordingState, TargetMode};
use libfuzzer_sys::fuzz_target;

/// A valid preamble and header record: a user-mode recording's, or a `--kernel --pid` one's.
fn valid_start(kernel_pid: bool) -> &'static [u8] {
    static USER: OnceLock<Vec<u8>> = OnceLock::new();
    static KERNEL: OnceLock<Vec<u8>> = OnceLock::new();
    if !kernel_pid {
        return USER.get_or_init(|| RecordingBuilder::new().to_bytes());
    }
    KERNEL.get_or_init(|| {
        let mut b = RecordingBuilder::new();
        b.header_mut().target.mode = TargetMode::Kernel;
        b.header_mut().target.pid = 42;
        b.to_bytes()
    })
}

thread_local! {
    /// One compressor for every run: creating a zstd context each time dominated the cost.
    static COMPRESSOR: RefCell<zstd::bulk::Compressor<'static>> =
        RefCell::new(zstd::bulk::Compressor::new(1).expect("zstd context"));
}

/// The mode byte, the End record that bit 2 asks for, and the bytes that make the file.
fn split(data: &[u8]) -> (u8, Option<End>, &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return (0, None, data);
    };
    if mode & 4 == 0 || rest.len() < 4 {
        return (mode & !4, None, rest);
    }
    let (snapshots, rest) = rest.split_at(4);
    let reason = match mode & 8 {
        0 => EndReason::Duration,
        _ => EndReason::TargetExited {
            code: Some(0),
            signal: None,
        },
    };
    let end = End {
        wall_ns: 0,
        mono_ns: 0,
        reason,
        snapshots: u32::from_le_bytes(snapshots.try_into().unwrap_or_default()),
    };
    (mode, Some(end), rest)
}

fn file_from(mode: u8, rest: &[u8]) -> Vec<u8> {
    if mode & 1 == 0 {
        return rest.to_vec();
    }
    let mut file = valid_start(mode & 4 != 0).to_vec();
    let mut start = 0;
    let mut i = 0;
    while i <= rest.len() {
        let boundary = i == rest.len() || rest[i..].starts_with(&[0xFF, 0x00, 0xFF]);
        if boundary {
            let frame =
                COMPRESSOR.with(|c| c.borrow_mut().compress(&rest[start..i]).unwrap_or_default());
            file.extend_from_slice(&frame);
            start = i + 3;
            i += 3;
        } else {
            i += 1;
        }
    }
    file
}

fuzz_target!(|data: &[u8]| {
    let (mode, end, rest) = split(data);
    let file = file_from(mode, rest);
    let Ok(reader) = Reader::new(&file[..]) else {
        return;
    };
    let cap = leak_report::series::DEFAULT_CAP;
    if mode & 2 == 0 {
        let _ = RecordingState::read(reader);
    } else if let Some(end) = end {
        let _ = leak_report::series::read_ended(reader, cap, Some(&end));
    } else {
        let _ = leak_report::series::read(reader, cap);
    }
});
