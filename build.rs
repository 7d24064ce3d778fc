//! Compiles `bpf/leak.bpf.c` (user mode) and `bpf/kmem.bpf.c` (kernel mode) into libbpf-rs
//! skeletons in OUT_DIR (Linux only).
fn main() {
    println!("cargo:rerun-if-changed=bpf");
    #[cfg(target_os = "linux")]
    linux::build();
}

#[cfg(target_os = "linux")]
mod linux {
    use std::path::PathBuf;

    pub fn build() {
        let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
        for entry in std::fs::read_dir("bpf").expect("bpf/ exists").flatten() {
            println!("cargo:rerun-if-changed={}", entry.path().display());
        }
        let arch = std::env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets the target arch");
        let vmlinux = format!("bpf/vmlinux/{arch}");
        for name in ["leak", "kmem"] {
            if let Err(e) = libbpf_cargo::SkeletonBuilder::new()
                .source(format!("bpf/{name}.bpf.c"))
                .clang_args([
                    "-I",
                    vmlinux.as_str(),
                    "-I",
                    "bpf",
                    "-Wall",
                    "-Werror",
                    "-mcpu=v3",
                ])
                .build_and_generate(out.join(format!("{name}.skel.rs")))
            {
                // The whole chain says what is missing (usually clang); cargo shows it.
                panic!("building bpf/{name}.bpf.c failed (is clang installed?): {e:#}");
            }
        }
    }
}
