//! Crafted length fields never make the reader allocate more than the format's own limits:
//! every claim of size in a file (preamble length, skippable-frame length, zstd content size
//! and window, postcard sequence lengths) is measured against the bytes really present.
//! A counting global allocator records the peak (of Rust allocations) while each crafted file is
//! read: it stays at the reader's fixed 256 KiB buffer, whatever the file claims.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use leak_format::*;

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: ptr was allocated by System with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Peak bytes allocated (above what was live before) while reading `file` to the end.
fn peak_while_reading(file: &[u8]) -> (usize, Option<String>) {
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let problem = match Reader::new(file) {
        Err(e) => Some(e.to_string()),
        Ok(reader) => match RecordingState::read(reader) {
            Err(e) => Some(e.to_string()),
            Ok((_, tail)) => tail.map(|e| e.to_string()),
        },
    };
    (PEAK.load(Ordering::Relaxed) - base, problem)
}

/// A valid preamble and header, then `rest`.
fn with_valid_start(rest: &[u8]) -> Vec<u8> {
    let mut file = RecordingBuilder::new().to_bytes();
    file.extend_from_slice(rest);
    file
}

/// A zstd frame header (no checksum) with a single-segment content size, then one raw block
/// of `payload`.
fn frame_claiming(content_size: u64, payload: &[u8]) -> Vec<u8> {
    let mut f = 0xFD2F_B528u32.to_le_bytes().to_vec();
    f.push(0b1110_0000); // FCS 8 bytes, single segment, no checksum, no dict id
    f.extend_from_slice(&content_size.to_le_bytes());
    // Last block, raw, of payload.len() bytes (3-byte little-endian block header).
    let header = 1 | ((payload.len() as u32) << 3);
    f.extend_from_slice(&header.to_le_bytes()[..3]);
    f.extend_from_slice(payload);
    f
}

/// A zstd frame (content size known) holding `raw` as its payload.
fn frame_of(raw: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(raw, 1).unwrap()
}

/// Postcard varint of `v`.
fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

#[test]
fn crafted_sizes_never_cause_huge_allocations() {
    // The reader's own buffers and one decoder context are the baseline cost of any file.
    let (base, _) = peak_while_reading(&RecordingBuilder::new().to_bytes());
    const SLACK: usize = 1 << 20;
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();

    // A preamble claiming 4 GiB.
    let mut pre = 0x184D_2A5Cu32.to_le_bytes().to_vec();
    pre.extend_from_slice(&u32::MAX.to_le_bytes());
    pre.extend_from_slice(b"LEAKREC\0\x01\0\0\0");
    cases.push(("preamble length 4 GiB", pre));

    // A skippable frame claiming 4 GiB after the header.
    let mut skip = 0x184D_2A50u32.to_le_bytes().to_vec();
    skip.extend_from_slice(&u32::MAX.to_le_bytes());
    skip.extend_from_slice(&[0; 16]);
    cases.push(("skippable frame of 4 GiB", with_valid_start(&skip)));

    // zstd frames claiming from 8 MiB to 2^64 bytes of content, holding 16. (zstd's own C
    // buffers are not counted here: its decoder refuses windows above 2^27 bytes, "Frame
    // requires too much memory", and sizes the buffer to what the frame header declares.)
    for size in [1u64 << 60, 1 << 40, u64::MAX, 100 << 20, 64 << 20, 8 << 20] {
        cases.push((
            "zstd content size beyond the limit",
            with_valid_start(&frame_claiming(size, &[0; 16])),
        ));
    }

    // A snapshot record whose first sequence claims 2^60 elements (postcard varint).
    let mut snap = varint(1); // Record::Snapshot
    snap.extend(varint(0)); // seq
    snap.extend(varint(0)); // wall_ns
    snap.extend(varint(0)); // mono_ns
    snap.extend(varint(1 << 60)); // new_modules: 2^60 of them
    snap.extend_from_slice(&[0; 32]);
    cases.push(("postcard length 2^60", with_valid_start(&frame_of(&snap))));

    // A string claiming 2^62 bytes (the header's tool name).
    let mut header = varint(0); // Record::Header
    header.extend(varint(1 << 62));
    header.extend_from_slice(b"leak-record");
    cases.push((
        "postcard string length 2^62",
        with_valid_start(&frame_of(&header)),
    ));

    for (what, file) in &cases {
        let (peak, problem) = peak_while_reading(file);
        assert!(problem.is_some(), "{what}: accepted");
        assert!(
            peak <= base + SLACK,
            "{what}: peak {peak} bytes while reading (baseline {base}): {problem:?}"
        );
    }
}
