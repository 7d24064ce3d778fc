//! Kernel-mode recordings (format 1.1) built in code: kernel frames are named from the
//! recording's saved kernel symbols only, marked as kernel stacks in JSON and folded output,
//! and a steadily growing kernel stack is a continuous leak.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed
use leak_format::{AllocKind, EndReason, Losses, RecordingBuilder, StackStats, TargetMode};
use leak_report::analysis::{analyze, Detector, Settings};
use leak_report::output::{folded, json, FoldedWeight};
use leak_report::symbolize::{Options, Resolver};
use leak_report::{detect, input, series};

const FILE_SIZE: u64 = 256;

fn kernel_recording(dir: &std::path::Path) -> std::path::PathBuf {
    let mut b = RecordingBuilder::new();
    b.header_mut().target.mode = TargetMode::Kernel;
    b.header_mut().target.command_line = vec!["--pid".into(), "42".into()];
    // Return addresses inside kmem_cache_alloc_noprof's caller chain; each saved with the
    // entry after it, as the recorder does.
    b.kernel_symbols("6.18.0", &[])
        .kernel_symbols(
            "6.18.0",
            &[
                (0xffff_ffff_8163_6000, "kmem_cache_alloc_noprof"),
                (0xffff_ffff_8163_7000, "kmem_cache_free"),
                (0xffff_ffff_816b_b390, "alloc_empty_file"),
                (0xffff_ffff_816b_b4a0, "alloc_file"),
                (0xffff_ffff_816d_0000, "path_openat"),
                (0xffff_ffff_816d_1000, "do_filp_open"),
            ],
        )
        .kernel_stack(
            16,
            &[
                0xffff_ffff_8163_6237,
                0xffff_ffff_816b_b3cc,
                0xffff_ffff_816d_0620,
            ],
        );
    for i in 1..=40u64 {
        b.snapshot_with(
            vec![StackStats {
                stack: 16,
                kind: AllocKind::KernelSlab,
                alloc_bytes: 10 * i * FILE_SIZE,
                alloc_count: 10 * i,
                free_bytes: 0,
                free_count: 0,
            }],
            Losses::default(),
        );
    }
    b.end(EndReason::Duration);
    let path = dir.join("kernel.zst");
    std::fs::write(&path, b.to_bytes()).unwrap();
    path
}

#[test]
fn kernel_stacks_are_named_from_the_recording_and_marked() {
    let dir = tempfile::tempdir().unwrap();
    let rec = input::read(&kernel_recording(dir.path()), series::DEFAULT_CAP).unwrap();
    assert_eq!(rec.kernel_release.as_deref(), Some("6.18.0"));
    let resolver = Resolver::new(&rec.modules, &rec.bundles, &rec.maps, &Options::default())
        .with_kernel_symbols(&rec.kernel_symbols);
    let settings = Settings {
        detector: Detector::Robust,
        detect: detect::Config::default(),
        memory_limit: None,
    };
    let a = analyze(&rec, &resolver, &settings);
    let doc: serde_json::Value = serde_json::from_str(&json(&rec, &a)).unwrap();
    assert_eq!(doc["recording"]["target"]["mode"], "kernel");
    let s = &doc["stacks"][0];
    assert_eq!(s["kind"], "kernel_slab");
    assert_eq!(s["kernel"], true);
    assert_eq!(s["verdict"], "continuous_leak", "{s:#}");
    assert_eq!(s["outstanding_count"], 400);
    assert_eq!(s["outstanding_bytes"], 400 * FILE_SIZE);
    let names: Vec<&str> = s["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["function"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["kmem_cache_alloc_noprof", "alloc_empty_file", "path_openat"]
    );
    assert_eq!(s["frames"][1]["module"], "[kernel]");
    let f = folded(&a, FoldedWeight::Outstanding);
    assert_eq!(
        f.trim(),
        format!(
            "path_openat_[k];alloc_empty_file_[k];kmem_cache_alloc_noprof_[k] {}",
            400 * FILE_SIZE
        )
    );
}
