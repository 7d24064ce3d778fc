//! Format round trips, tail tolerance and bad input, through the public reader and writer.
use leak_format::*;

fn demo() -> RecordingBuilder {
    let mut b = RecordingBuilder::new();
    b.module(1, "/usr/bin/svc", Some(vec![0xab; 20]))
        .stack(16, &[(1, 0x1234), (1, 0x2000)])
        .snapshot(&[(16, 100, 1)])
        .snapshot(&[(16, 200, 2)])
        .snapshot(&[(16, 300, 3)])
        .end(EndReason::Duration);
    b
}

fn read_all(bytes: &[u8]) -> (Vec<Record>, Option<Error>) {
    let reader = Reader::new(bytes).expect("preamble");
    let mut out = Vec::new();
    for item in reader {
        match item {
            Ok(r) => out.push(r),
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

#[test]
fn round_trip_returns_every_record() {
    let bytes = demo().to_bytes();
    let (records, err) = read_all(&bytes);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(records.len(), 5); // header, 3 snapshots, end
    assert!(matches!(records[0], Record::Header(_)));
    assert!(matches!(records[4], Record::End(_)));
    let (state, tail) = RecordingState::read(Reader::new(&bytes[..]).unwrap()).unwrap();
    assert!(tail.is_none());
    assert_eq!(state.snapshots, 3);
    let t = state.totals[&(16, AllocKind::Heap)];
    assert_eq!((t.outstanding_bytes(), t.outstanding_count()), (300, 3));
    assert_eq!(state.modules[&1].build_id.as_deref(), Some(&[0xab; 20][..]));
}

#[test]
fn every_truncation_keeps_the_complete_records() {
    let bytes = demo().to_bytes();
    // Frame boundaries: offsets at which a record ends.
    let full = read_all(&bytes).0.len();
    for cut in 0..bytes.len() {
        match Reader::new(&bytes[..cut]) {
            Err(Error::NotARecording { .. }) => assert_eq!(cut, 0, "preamble rejected at {cut}"),
            // Cut within the preamble: said to be a recording cut short, where.
            Err(Error::Tail {
                offset,
                problem: TailProblem::Truncated,
            }) => assert!(cut < 20 && offset == cut as u64, "cut {cut}: at {offset}"),
            Err(e) => panic!("unexpected error at cut {cut}: {e}"),
            Ok(reader) => {
                let mut n = 0;
                let mut tail = None;
                for item in reader {
                    match item {
                        Ok(_) => n += 1,
                        Err(e) => tail = Some(e),
                    }
                }
                assert!(n < full);
                if let Some(e) = tail {
                    assert!(
                        matches!(
                            e,
                            Error::Tail {
                                problem: TailProblem::Truncated,
                                ..
                            }
                        ),
                        "cut {cut}: {e}"
                    );
                }
            }
        }
    }
}

#[test]
fn truncated_tail_is_reported_with_its_offset() {
    let bytes = demo().to_bytes();
    let cut = bytes.len() - 3;
    let (records, err) = read_all(&bytes[..cut]);
    assert_eq!(records.len(), 4, "header and three snapshots survive");
    match err {
        Some(Error::Tail {
            offset,
            problem: TailProblem::Truncated,
        }) => assert!(offset > 0 && (offset as usize) < cut),
        other => panic!("expected truncation, got {other:?}"),
    }
}

#[test]
fn flipped_byte_in_last_record_is_corrupt_not_a_panic() {
    let bytes = demo().to_bytes();
    for back in 1..12 {
        let mut b = bytes.clone();
        let i = b.len() - back;
        b[i] ^= 0x5a;
        let (records, err) = read_all(&b);
        assert!(
            records.len() >= 4,
            "complete snapshots survive a damaged end record"
        );
        assert!(
            err.is_some() || records.len() == 5,
            "damage at -{back} went unnoticed"
        );
    }
}

#[test]
fn wrong_magic_and_version_are_clear_errors() {
    let e = Reader::new(&b"hello world, this is text"[..]).unwrap_err();
    assert!(e.to_string().contains("not a leak-record recording"), "{e}");
    let e = Reader::new(&b""[..]).unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
    let mut bytes = demo().to_bytes();
    bytes[16] = 9; // major version low byte (8 frame header + 8 magic)
    match Reader::new(&bytes[..]) {
        Err(Error::UnsupportedVersion { major: 9, .. }) => {}
        other => panic!("expected version error, got {other:?}"),
    }
}

#[test]
fn unknown_record_kinds_are_skipped_and_counted() {
    let mut bytes = demo().to_bytes();
    // A record with tag 10 (a future kind) appended as a valid zstd frame.
    bytes.extend(zstd::bulk::compress(&[10, 1, 2, 3], 3).unwrap());
    let mut reader = Reader::new(&bytes[..]).unwrap();
    let n = (&mut reader).filter(|r| r.is_ok()).count();
    assert_eq!(n, 5);
    assert_eq!(reader.skipped_unknown(), 1);
}

#[test]
fn kernel_mode_records_round_trip() {
    let mut b = RecordingBuilder::new();
    b.header_mut().target.mode = TargetMode::Kernel;
    b.kernel_symbols("6.18.0", &[])
        .kernel_symbols("6.18.0", &[(0x1000, "alloc_empty_file"), (0x1100, "next")])
        .kernel_stack(16, &[0x1011]);
    b.snapshot_with(
        vec![StackStats {
            stack: 16,
            kind: AllocKind::KernelSlab,
            alloc_bytes: 256 * 3,
            alloc_count: 3,
            free_bytes: 256,
            free_count: 1,
        }],
        Losses::default(),
    )
    .end(EndReason::Duration);
    let bytes = b.to_bytes();
    // Minor version 1 or later: kernel mode exists.
    assert_eq!(&bytes[16..20], &[1, 0, FORMAT_VERSION_MINOR as u8, 0]);
    const { assert!(FORMAT_VERSION_MINOR >= 1) };
    let mut reader = Reader::new(&bytes[..]).unwrap();
    let records: Vec<Record> = (&mut reader).map(|r| r.unwrap()).collect();
    assert_eq!(reader.skipped_unknown(), 0, "tag 4 is a known record kind");
    assert!(matches!(&records[2], Record::Kernel(k) if k.symbols.len() == 2));
    let (state, tail) = RecordingState::read(Reader::new(&bytes[..]).unwrap()).unwrap();
    assert!(tail.is_none());
    assert_eq!(state.kernel_release.as_deref(), Some("6.18.0"));
    assert_eq!(state.kernel_symbols[&0x1000].name, "alloc_empty_file");
    let t = state.totals[&(16, AllocKind::KernelSlab)];
    assert_eq!((t.outstanding_bytes(), t.outstanding_count()), (512, 2));
    assert!(AllocKind::KernelSlab.is_kernel() && !AllocKind::Heap.is_kernel());
    assert_eq!(AllocKind::KernelPage.name(), "kernel_page");
}

#[test]
fn late_probes_round_trip() {
    let late = LateProbes {
        mono_ns: 7_000_000_000,
        exe: "/usr/bin/redis-server".into(),
        probes: vec![Probe {
            function: "malloc".into(),
            module: "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2".into(),
            offset: 0x1234,
            side: ProbeSide::Entry,
        }],
        held: true,
    };
    let mut b = RecordingBuilder::new();
    b.stack(16, &[(0, 0x1234)])
        .snapshot(&[(16, 100, 1)])
        .late_probes(late.clone())
        .snapshot(&[(16, 200, 2)])
        .end(EndReason::Duration);
    let bytes = b.to_bytes();
    // Minor version 3 or later: the record of probes attached later exists.
    assert_eq!(&bytes[16..20], &[1, 0, FORMAT_VERSION_MINOR as u8, 0]);
    const { assert!(FORMAT_VERSION_MINOR >= 3) };
    let mut reader = Reader::new(&bytes[..]).unwrap();
    let records: Vec<Record> = (&mut reader).map(|r| r.unwrap()).collect();
    assert_eq!(reader.skipped_unknown(), 0, "tag 6 is a known record kind");
    assert_eq!(records[2], Record::Probes(late.clone()));
    let (state, tail) = RecordingState::read(Reader::new(&bytes[..]).unwrap()).unwrap();
    assert!(tail.is_none());
    assert_eq!(state.late_probes, [late]);
    assert_eq!(state.outstanding_bytes(AllocKind::Heap), 200);
    // A known tag whose content does not decode is an error, not an unknown record.
    let mut damaged = RecordingBuilder::new().to_bytes();
    damaged.extend(zstd::bulk::compress(&[6, 1], 3).unwrap());
    let (_, tail) = read_all(&damaged);
    assert!(
        matches!(
            &tail,
            Some(Error::Tail {
                problem: TailProblem::Undecodable(_),
                ..
            })
        ),
        "{tail:?}"
    );
}

#[test]
fn children_round_trip() {
    let first = Children {
        started: 1,
        examples: vec![StartedProcess {
            pid: 4242,
            name: "sh".into(),
        }],
    };
    let last = Children {
        started: 3,
        examples: vec![StartedProcess {
            pid: 4242,
            name: "leaky".into(),
        }],
    };
    let mut b = RecordingBuilder::new();
    b.stack(16, &[(0, 0x1234)])
        .children(first.clone())
        .snapshot(&[(16, 100, 1)])
        .children(last.clone())
        .snapshot(&[(16, 200, 2)])
        .end(EndReason::Duration);
    let bytes = b.to_bytes();
    // Minor version 4 or later: the record of started processes exists.
    assert_eq!(&bytes[16..20], &[1, 0, FORMAT_VERSION_MINOR as u8, 0]);
    const { assert!(FORMAT_VERSION_MINOR >= 4) };
    let mut reader = Reader::new(&bytes[..]).unwrap();
    let records: Vec<Record> = (&mut reader).map(|r| r.unwrap()).collect();
    assert_eq!(reader.skipped_unknown(), 0, "tag 7 is a known record kind");
    assert_eq!(records[1], Record::Children(first));
    assert_eq!(records[3], Record::Children(last.clone()));
    // The wire form (§2): tag 7, then started and the examples as varints and a string.
    let wire = postcard::to_allocvec(&records[3]).unwrap();
    assert_eq!(wire, [7, 3, 1, 0x92, 0x21, 5, b'l', b'e', b'a', b'k', b'y']);
    // Cumulative: the last record is the state.
    let (state, tail) = RecordingState::read(Reader::new(&bytes[..]).unwrap()).unwrap();
    assert!(tail.is_none());
    assert_eq!(state.children, Some(last));
    assert_eq!(state.outstanding_bytes(AllocKind::Heap), 200);
    // A recording without one: none started.
    let (state, _) = RecordingState::read(Reader::new(&demo().to_bytes()[..]).unwrap()).unwrap();
    assert_eq!(state.children, None);
}

#[test]
fn sampled_recordings_round_trip() {
    let mut b = RecordingBuilder::new();
    b.sampling(64 << 10)
        .stack(16, &[(0, 0x1234)])
        .snapshot(&[(16, 1 << 20, 300)])
        .end(EndReason::Duration);
    let bytes = b.to_bytes();
    // Minor version 2 or later: the sampling record exists.
    assert_eq!(&bytes[16..20], &[1, 0, FORMAT_VERSION_MINOR as u8, 0]);
    const { assert!(FORMAT_VERSION_MINOR >= 2) };
    let mut reader = Reader::new(&bytes[..]).unwrap();
    let records: Vec<Record> = (&mut reader).map(|r| r.unwrap()).collect();
    assert_eq!(reader.skipped_unknown(), 0, "tag 5 is a known record kind");
    assert_eq!(records[1], Record::Sampling(Sampling { bytes: 64 << 10 }));
    let (state, tail) = RecordingState::read(Reader::new(&bytes[..]).unwrap()).unwrap();
    assert!(tail.is_none());
    assert_eq!(state.sampling, Some(Sampling { bytes: 64 << 10 }));
    assert_eq!(state.outstanding_bytes(AllocKind::Heap), 1 << 20);
}

#[test]
fn older_recordings_still_read_and_are_exact() {
    // A 1.1 file: the same records, the preamble's minor version set back to 1.
    let mut bytes = demo().to_bytes();
    bytes[18..20].copy_from_slice(&1u16.to_le_bytes());
    let reader = Reader::new(&bytes[..]).unwrap();
    assert_eq!(reader.version(), (1, 1));
    let (state, tail) = RecordingState::read(reader).unwrap();
    assert!(tail.is_none());
    assert_eq!((state.snapshots, state.sampling), (3, None));
    // A real recording written by leak-record 1.0 (the demo of the report).
    let demo = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/recordings/demo.zst"
    );
    let reader = Reader::open(demo).unwrap();
    assert_eq!(reader.version(), (1, 0));
    let (state, tail) = RecordingState::read(reader).unwrap();
    assert!(tail.is_none(), "{tail:?}");
    assert!(state.snapshots > 0 && state.sampling.is_none());
}

#[test]
fn plain_zstd_tools_can_decompress_a_recording() {
    // The preamble is a skippable frame, so `zstd -dc` sees only postcard payloads.
    let bytes = demo().to_bytes();
    let out = zstd::stream::decode_all(&bytes[..]).unwrap();
    assert!(!out.is_empty());
}

/// Hands out at most a few bytes per read: every frame reaches the decoder in pieces.
struct Trickle<'a>(&'a [u8]);

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.0.len()).min(7);
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

/// Counter values that zstd cannot squeeze (the frames must be large).
fn mix(k: u64, id: u32) -> u64 {
    let z = (k << 8 | u64::from(id)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (z ^ (z >> 29)) >> 16
}

/// A recording of many snapshots, larger than the reader's 256 KiB buffer (frames straddle its
/// end).
fn large() -> Vec<u8> {
    let mut b = RecordingBuilder::new();
    b.module(1, "/usr/bin/svc", None);
    for id in 16..116 {
        b.stack(id, &[(1, u64::from(id) * 16)]);
    }
    for k in 0..600u64 {
        let stats: Vec<(u32, u64, u64)> = (16..116u32)
            .filter(|id| (u64::from(*id) + k) % 3 != 0)
            .map(|id| (id, mix(k, id), k + 1))
            .collect();
        b.snapshot(&stats);
    }
    b.end(EndReason::Duration);
    b.to_bytes()
}

/// Read as one slice and a few bytes at a time: the same records.
#[test]
fn a_large_recording_reads_alike_whole_and_in_small_pieces() {
    let bytes = large();
    assert!(
        bytes.len() > 300 << 10,
        "frames must straddle the 256 KiB buffer: {}",
        bytes.len()
    );
    let (fast, err) = read_all(&bytes);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(fast.len(), 602);
    let streamed: Vec<Record> = Reader::new(Trickle(&bytes))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(fast, streamed);
    let Record::Snapshot(s) = &fast[600] else {
        panic!("{:?}", fast[600]);
    };
    assert_eq!(s.stats.len(), 66);
    assert_eq!(s.stats[0].alloc_bytes, mix(599, 17));
}

#[test]
fn the_end_record_is_found_without_reading_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rec.zst");
    let bytes = large();
    std::fs::write(&path, &bytes).unwrap();
    let end = find_end(&path).expect("a clean recording ends in End");
    assert_eq!(end.snapshots, 600);
    assert_eq!(end.reason, EndReason::Duration);
    // No End record: a recording cut short, at a frame boundary or inside a frame.
    let (records, _) = read_all(&bytes);
    assert!(matches!(records.last(), Some(Record::End(_))));
    for cut in [bytes.len() - 1, bytes.len() - 40, bytes.len() / 2, 20, 0] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        assert_eq!(find_end(&path), None, "cut at {cut}");
    }
    let mut unfinished = RecordingBuilder::new();
    unfinished.snapshot(&[]).snapshot(&[]);
    std::fs::write(&path, unfinished.to_bytes()).unwrap();
    assert_eq!(find_end(&path), None, "no End record");
    // Garbage after the End record: not a clean end either.
    let mut trailing = bytes.clone();
    trailing.extend_from_slice(b"not a frame");
    std::fs::write(&path, trailing).unwrap();
    assert_eq!(find_end(&path), None);
    assert_eq!(find_end(dir.path().join("missing")), None);
    // The small demo recording, read in one chunk.
    std::fs::write(&path, demo().to_bytes()).unwrap();
    assert_eq!(find_end(&path).map(|e| e.snapshots), Some(3));
}

/// `Record::Unseen` (format 1.5, §5.11): cumulative, the last one is the state; none means 0.
#[test]
fn unseen_events_round_trip_and_the_last_record_is_the_state() {
    let mut b = RecordingBuilder::new();
    b.stack(16, &[(0, 0x1234)])
        .unseen(0, 1)
        .snapshot(&[(16, 100, 1)])
        .unseen(0, 84)
        .snapshot(&[(16, 200, 2)])
        .end(EndReason::Duration);
    let bytes = b.to_bytes();
    assert_eq!(&bytes[16..20], &[1, 0, FORMAT_VERSION_MINOR as u8, 0]);
    const { assert!(FORMAT_VERSION_MINOR >= 5) };
    let mut reader = Reader::new(&bytes[..]).unwrap();
    let records: Vec<Record> = (&mut reader).map(|r| r.unwrap()).collect();
    assert_eq!(reader.skipped_unknown(), 0, "tag 8 is a known record kind");
    let last = Unseen {
        allocs: 0,
        frees: 84,
    };
    assert_eq!(records[3], Record::Unseen(last));
    // The wire form given in §5.11.
    assert_eq!(postcard::to_allocvec(&records[3]).unwrap(), [8, 0, 84]);
    let (state, tail) = RecordingState::read(Reader::new(&bytes[..]).unwrap()).unwrap();
    assert!(tail.is_none());
    assert_eq!(state.unseen, last);
    let (state, _) = RecordingState::read(Reader::new(&demo().to_bytes()[..]).unwrap()).unwrap();
    assert_eq!(state.unseen, Unseen::default());
}

/// `Record::Process` (format 1.6, §5.12): who the process of a `--kernel --pid` recording is.
#[test]
fn the_process_of_a_kernel_pid_recording_round_trips() {
    let mut b = RecordingBuilder::new();
    b.header_mut().target.mode = TargetMode::Kernel;
    b.header_mut().target.pid = 4242;
    b.process(4242, "svc", &["./svc", "-v"], "/srv/svc")
        .kernel_symbols("6.18.0", &[(0x1000, "alloc_empty_file")])
        .kernel_stack(16, &[0x1011]);
    b.snapshot_with(Vec::new(), Losses::default());
    b.end(EndReason::Duration);
    let bytes = b.to_bytes();
    const { assert!(FORMAT_VERSION_MINOR >= 6) };
    let mut reader = Reader::new(&bytes[..]).unwrap();
    let records: Vec<Record> = (&mut reader).map(|r| r.unwrap()).collect();
    assert_eq!(reader.skipped_unknown(), 0, "tag 9 is a known record kind");
    let process = Process {
        pid: 4242,
        name: "svc".into(),
        command_line: vec!["./svc".into(), "-v".into()],
        exe: "/srv/svc".into(),
    };
    assert_eq!(records[1], Record::Process(process.clone()));
    // The wire form given in §5.12.
    let wire = [
        9, 0x92, 0x21, 3, b's', b'v', b'c', 2, 5, b'.', b'/', b's', b'v', b'c', 2, b'-', b'v', 8,
        b'/', b's', b'r', b'v', b'/', b's', b'v', b'c',
    ];
    assert_eq!(postcard::to_allocvec(&records[1]).unwrap(), wire);
    let (state, tail) = RecordingState::read(Reader::new(&bytes[..]).unwrap()).unwrap();
    assert!(tail.is_none());
    assert_eq!(state.process, Some(process));
    let (state, _) = RecordingState::read(Reader::new(&demo().to_bytes()[..]).unwrap()).unwrap();
    assert_eq!(state.process, None);
}
