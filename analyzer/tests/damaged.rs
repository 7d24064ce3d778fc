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
    let resolver = Resolver::new(&rec.modules, &rec.bundles, &rec.maps, &Options::default());
    let settings = Settings {
        detector: Detector::Robust,
        detect: Config::default(),
        memory_limit: None,
    };
    let a = analyze(&rec, &resolver, &settings);
    let _ = leak_report::output::json(&rec, &a);
    Ok(rec.snapshots)
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
            Err(e) => assert!(
                cut < 64 && e.contains("not a leak-record recording"),
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
