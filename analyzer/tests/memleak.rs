//! The same allocation history as a bcc memleak.py log, a libbpf-tools memleak log and a native
//! recording gets the same verdicts. The logs come from fixtures/memleak/generate.py, whose
//! series are repeated here.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::collections::BTreeMap;
use std::path::Path;

use leak_format::{Reader, RecordingBuilder};
use leak_report::analysis::{analyze, Detector, Settings};
use leak_report::detect::{Config, Verdict};
use leak_report::series;
use leak_report::symbolize::{Options, Resolver};

const INTERVALS: u64 = 60;

fn leak(i: u64) -> (u64, u64) {
    (2000 + 1000 * i, 20 + 10 * i)
}
fn cache(i: u64) -> (u64, u64) {
    let n = i.min(15);
    (50000 * n / 15 + 800, 1 + n)
}
fn stable(_: u64) -> (u64, u64) {
    (4096, 4)
}

/// Verdict and rate by the function of the innermost frame (the module+offset for native).
fn verdicts(rec: &series::Recording) -> BTreeMap<String, (Verdict, bool, f64)> {
    let resolver = Resolver::new(&rec.modules, &rec.bundles, &rec.maps, &Options::default());
    let settings = Settings {
        detector: Detector::Robust,
        detect: Config::default(),
        memory_limit: None,
    };
    analyze(rec, &resolver, &settings)
        .stacks
        .into_iter()
        .map(|s| {
            let f = &s.frames[0];
            let key = f
                .function
                .clone()
                .unwrap_or_else(|| format!("{:#x}", f.offset));
            (key, (s.verdict, s.strict_monotonic, s.detection.rate))
        })
        .collect()
}

fn native() -> series::Recording {
    let mut b = RecordingBuilder::new();
    b.module(1, "/usr/bin/svc", None)
        .stack(16, &[(1, 0x1d)])
        .stack(17, &[(1, 0x2a)])
        .stack(18, &[(1, 0x44)]);
    for i in 0..INTERVALS {
        let rows: Vec<(u32, u64, u64)> = [(16, leak(i)), (17, cache(i)), (18, stable(i))]
            .iter()
            .map(|&(id, (bytes, count))| (id, bytes, count))
            .collect();
        b.snapshot(&rows);
    }
    let bytes = b.to_bytes();
    series::read(Reader::new(&bytes[..]).unwrap(), series::DEFAULT_CAP).unwrap()
}

#[test]
fn text_logs_and_the_native_recording_agree() {
    let native = verdicts(&native());
    let by_name = |native_key: &str| native[native_key];
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/memleak");
    for log in ["bcc.log", "libbpf-tools.log"] {
        let rec = leak_report::input::read(&root.join(log), series::DEFAULT_CAP).unwrap();
        assert_eq!(rec.snapshots as u64, INTERVALS, "{log}");
        // The text summary says what it read (a log names no target).
        let resolver = Resolver::new(&rec.modules, &rec.bundles, &rec.maps, &Options::default());
        let settings = Settings {
            detector: Detector::Robust,
            detect: Config::default(),
            memory_limit: None,
        };
        let summary = leak_report::output::text(&rec, &analyze(&rec, &resolver, &settings), 3);
        assert!(
            summary.starts_with("memleak log: 60 snapshots over 4.9 min\n"),
            "{log}: {summary}"
        );
        let text = verdicts(&rec);
        for (function, native_key) in [
            ("leak_connection", "0x1d"),
            ("cache_store", "0x2a"),
            ("init_tables", "0x44"),
        ] {
            let (v, strict, rate) = text[function];
            let (nv, nstrict, nrate) = by_name(native_key);
            assert_eq!((v, strict), (nv, nstrict), "{log}: {function}");
            assert!(
                (rate - nrate).abs() < 1e-6,
                "{log}: {function}: {rate} vs {nrate}"
            );
        }
        assert_eq!(text["leak_connection"].0, Verdict::ContinuousLeak, "{log}");
        // 1000 bytes per 5 s interval.
        assert!((text["leak_connection"].2 - 200.0).abs() < 1e-6, "{log}");
        assert_ne!(text["cache_store"].0, Verdict::ContinuousLeak, "{log}");
        assert_ne!(text["init_tables"].0, Verdict::ContinuousLeak, "{log}");
    }
}
