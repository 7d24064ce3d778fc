//! Damaged recordings: truncation at every byte offset and single-byte corruption at many
//! offsets of the demo recording. The analysis either reports what is complete or fails with a
//! clear error; it never panics. Runs the library in-process (fast) and the binary on samples.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::path::Path;
use std::process::Command;

use leak_format::Reader;
use leak_report::analysis::{analyze, Detector, Settings};
use leak_report::detect::Config;
use leak_report::series;
use leak_report::symbolize::{Options, Resolver};

fn demo() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/recordings/demo.zst"))
        .unwrap()
}

/// Reading only (fast): Ok(snapshots) or Err(message).
fn read_bytes(bytes: &[u8]) -> Result<u32, String> {
    let reader = Reader::new(bytes).map_err(|e| e.to_string())?;
    let rec = series::read(reader, series::DEFAULT_CAP).map_err(|e| e.to_string())?;
    Ok(rec.snapshots)
}

/// The whole pipeline on bytes: Ok(snapshots) or Err(message).
fn analyze_bytes(bytes: &[u8]) -> Result<u32, String> {
    let reader = Reader::new(bytes).map_err(|e| e.to_string())?;
    let rec = series::read(reader, series::DEFAULT_CAP).map_err(|e| e.to_string())?;
    let a = analysis_of(&rec);
    let _ = leak_report::output::json(&rec, &a);
    Ok(rec.snapshots)
}

/// The analysis of `rec` with the default settings (symbols from the recording only).
fn analysis_of(rec: &series::Recording) -> leak_report::analysis::Analysis {
    let resolver = Resolver::new(&rec.modules, &rec.bundles, &rec.maps, &Options::default());
    let settings = Settings {
        detector: Detector::Robust,
        detect: Config::default(),
        memory_limit: None,
    };
    analyze(rec, &resolver, &settings)
}

#[test]
fn every_truncation_is_analyzed_or_refused_never_a_panic() {
    let bytes = demo();
    let full = analyze_bytes(&bytes).unwrap();
    let mut previous = 0;
    // Every offset of the first 8 KB (preamble, header, dozens of snapshots), then every 13th
    // byte (the rest of the snapshots, the bundles, the end record).
    let mut cut = 0;
    while cut < bytes.len() {
        // Reading at every offset; the whole analysis at one offset in 211.
        let result = if cut % 211 == 0 {
            analyze_bytes(&bytes[..cut])
        } else {
            read_bytes(&bytes[..cut])
        };
        match result {
            Ok(n) => {
                assert!(n <= full);
                assert!(
                    n >= previous,
                    "a longer prefix cannot have fewer complete snapshots"
                );
                previous = n;
            }
            // Cut within the preamble (20 bytes): a recording cut short, not something else.
            Err(e) if cut == 0 => assert!(e.contains("not a leak-record recording"), "{e}"),
            Err(e) => assert!(
                cut < 20 && e == format!("recording is truncated at byte {cut}"),
                "cut {cut}: {e}"
            ),
        }
        cut += if cut < 8_000 { 1 } else { 13 };
    }
    assert_eq!(previous, full);
}

#[test]
fn corrupted_bytes_are_reported_never_a_panic() {
    let bytes = demo();
    let full = analyze_bytes(&bytes).unwrap();
    let mut damaged_tails = 0;
    for (k, i) in (0..bytes.len()).step_by(97).enumerate() {
        let mut b = bytes.clone();
        b[i] ^= 0xA5;
        let result = if k % 25 == 0 {
            analyze_bytes(&b)
        } else {
            read_bytes(&b)
        };
        match result {
            Ok(n) => {
                assert!(n <= full);
                if n < full {
                    damaged_tails += 1;
                }
            }
            Err(e) => assert!(!e.is_empty()),
        }
    }
    assert!(damaged_tails > 0, "checksums caught corruption");
}

#[test]
fn the_binary_reports_a_truncated_file_and_exits_cleanly() {
    let bytes = demo();
    let dir = tempfile::tempdir().unwrap();
    for cut in [8usize, 19, 200, bytes.len() / 3, bytes.len() - 1] {
        let p = dir.path().join(format!("cut{cut}.zst"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_leak-report"))
            .arg(&p)
            .output()
            .unwrap();
        let code = o.status.code();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            code == Some(0) || code == Some(2),
            "cut {cut}: {code:?} {err}"
        );
        assert!(!err.contains("panicked"), "cut {cut}: {err}");
    }
}

/// The demo's records, header first.
fn demo_records() -> Vec<leak_format::Record> {
    let bytes = demo();
    let mut reader = Reader::new(&bytes[..]).unwrap();
    std::iter::from_fn(|| reader.next_record())
        .map(Result::unwrap)
        .collect()
}

/// A recording of `records` (the first must be the Header), and the length of its preamble and
/// header frame.
fn write(records: &[leak_format::Record]) -> (Vec<u8>, usize) {
    let leak_format::Record::Header(h) = &records[0] else {
        panic!("no header first")
    };
    let mut w = leak_format::Writer::new(Vec::new(), h).unwrap();
    let header_end = w.bytes_written() as usize;
    for r in &records[1..] {
        w.write(r).unwrap();
    }
    (w.into_inner(), header_end)
}

/// The recording read from `bytes`, and the warnings of its analysis.
fn warnings_of(bytes: &[u8]) -> (series::Recording, Vec<String>) {
    let rec = series::read(Reader::new(bytes).unwrap(), series::DEFAULT_CAP).unwrap();
    let warnings = analysis_of(&rec).warnings;
    (rec, warnings)
}

fn snapshot_seq(r: &leak_format::Record) -> Option<u32> {
    match r {
        leak_format::Record::Snapshot(s) => Some(s.seq),
        _ => None,
    }
}

/// `records` without the snapshot numbered `seq`.
fn without_snapshot(records: &[leak_format::Record], seq: u32) -> Vec<leak_format::Record> {
    records
        .iter()
        .filter(|r| snapshot_seq(r) != Some(seq))
        .cloned()
        .collect()
}

fn has(warnings: &[String], text: &str) -> bool {
    warnings.iter().any(|w| w.contains(text))
}

#[test]
fn record_order_violations_are_counted_and_warned_about() {
    let records = demo_records();
    let snapshots = records.iter().filter_map(snapshot_seq).count() as u32;
    let (clean, clean_warnings) = warnings_of(&write(&records).0);
    assert_eq!(clean.order, series::OrderProblems::default());
    assert_eq!(clean.snapshots, snapshots);

    // A snapshot dropped from the middle.
    let gap = without_snapshot(&records, 5);
    let (rec, w) = warnings_of(&write(&gap).0);
    assert_eq!(
        (rec.order.missing_snapshots, rec.order.out_of_order),
        (1, 0)
    );
    assert!(has(&w, "1 snapshot(s) are missing"), "{w:?}");

    // Snapshot 0, which declares the stacks, dropped: the stacks are undeclared, and that is
    // what the warnings say (not "the program probably lacks frame pointers").
    let first = without_snapshot(&records, 0);
    let (rec, w) = warnings_of(&write(&first).0);
    assert_eq!(rec.order.missing_snapshots, 1);
    assert_eq!(rec.order.undeclared_stacks, clean.stacks.len(), "{w:?}");
    assert!(has(&w, "no snapshot declared their frames"), "{w:?}");
    assert!(!has(&w, "frame pointers"), "{w:?}");

    // Two snapshots swapped.
    let mut swapped = records.clone();
    let at = swapped
        .iter()
        .position(|r| snapshot_seq(r) == Some(3))
        .unwrap();
    swapped.swap(at, at + 1);
    let (rec, w) = warnings_of(&write(&swapped).0);
    assert_eq!(
        (rec.order.missing_snapshots, rec.order.out_of_order),
        (0, 1)
    );
    assert!(has(&w, "1 snapshot(s) come out of sequence"), "{w:?}");

    // Two recordings joined (`cat a.zst b.zst`): the second is counted, not read.
    let one = write(&records).0;
    let mut joined = one.clone();
    joined.extend_from_slice(&one);
    let (rec, w) = warnings_of(&joined);
    assert_eq!(rec.snapshots, snapshots);
    let left = records.len() as u64;
    assert_eq!(
        rec.order.stopped,
        Some(series::Stopped {
            second_header: false,
            after_snapshots: snapshots,
            records_left: left,
        })
    );
    assert!(
        has(&w, &format!("{left} record(s) follow the End record")),
        "{w:?}"
    );

    // A second Header before any End (a killed recording with another appended).
    let mut two: Vec<_> = records[..4].to_vec();
    two.extend(records.iter().cloned());
    let (rec, w) = warnings_of(&write(&two).0);
    let read = records[..4].iter().filter_map(snapshot_seq).count() as u32;
    assert_eq!(rec.snapshots, read);
    assert!(matches!(
        rec.order.stopped,
        Some(series::Stopped { second_header: true, after_snapshots, .. }) if after_snapshots == read
    ));
    assert!(has(&w, "follow a second Header record"), "{w:?}");

    // The header frame cut out (the preamble is kept).
    let (bytes, header_end) = write(&records);
    let mut headless = bytes[..20].to_vec();
    headless.extend_from_slice(&bytes[header_end..]);
    let (rec, w) = warnings_of(&headless);
    assert!(rec.header.is_none());
    assert_eq!(rec.snapshots, snapshots);
    assert!(has(&w, "no Header record"), "{w:?}");
    let text = leak_report::output::text(&rec, &analysis_of(&rec), 3);
    assert!(
        text.starts_with(&format!(
            "Recording without its Header: {snapshots} snapshots"
        )),
        "{text}"
    );
    assert!(!has(&clean_warnings, "no Header record"));
}

#[test]
fn the_binary_refuses_a_recording_without_a_snapshot_even_as_a_ci_gate() {
    let records = demo_records();
    let dir = tempfile::tempdir().unwrap();
    let bytes = demo();
    let end = records
        .iter()
        .find(|r| matches!(r, leak_format::Record::End(_)))
        .cloned()
        .unwrap();
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("preamble", bytes[..20].to_vec(), "holds no record at all"),
        (
            "cut-header",
            bytes[..200].to_vec(),
            "before its first snapshot",
        ),
        (
            "header-end",
            write(&[records[0].clone(), end]).0,
            "it ends before its first snapshot",
        ),
    ];
    for (name, content, why) in cases {
        let p = dir.path().join(format!("{name}.zst"));
        std::fs::write(&p, content).unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_leak-report"))
            .arg(&p)
            .args(["--fail-on-leak", "--max-outstanding", "1"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        assert!(
            err.contains("nothing to analyze") && err.contains(why),
            "{name}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
        assert!(o.stdout.is_empty(), "{name}");
    }
}

/// A damaged record in the middle hides everything after it: the warning says how many
/// snapshots were read of how many the file holds (its end record, read from the end), where
/// it said only "analyzed the 6 complete snapshots before it" (review finding).
#[test]
fn a_damaged_record_in_the_middle_says_what_was_not_read() {
    let mut bytes = demo();
    bytes[3000] ^= 0x10;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("damaged.zst");
    std::fs::write(&path, &bytes).unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_leak-report"))
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(
            "analyzed the 6 complete snapshots before it, of the 91 snapshots the file holds \
             (its end record says so): the rest lies past the damage and is not read"
        ),
        "{text}"
    );
}
