//! The kernel-mode BPF object (`bpf/kmem.bpf.c`): load it, attach the kmem tracepoints that
//! this kernel has, and read its maps. Its structs come from `bpf/leak.h` through its own
//! skeleton's `types`, and its maps are read by the same readers as user mode's.
use std::collections::{HashMap, HashSet};
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsFd, AsRawFd};

use anyhow::{Context, Result};
use leak_format::{Losses, Probe, ProbeSide, Unseen};
use libbpf_rs::btf::{Btf, BtfType};
use libbpf_rs::skel::{OpenSkel, Skel};
use libbpf_rs::{Link, OpenObject};

use super::RawStats;

skeleton!("kmem.skel.rs");
use skel::types;
use skel::{KmemSkel, KmemSkelBuilder};

const _: () = assert!(size_of::<types::kalloc_key>() == 16);

/// Kinds of kernel allocation, as the BPF side numbers them.
pub const KIND_PAGE: u32 = types::alloc_kind::KIND_KERNEL_PAGE.0;
pub const KIND_PERCPU: u32 = types::alloc_kind::KIND_KERNEL_PERCPU.0;

/// Which tracepoints to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Slab,
    Page,
    Percpu,
}

/// Settings applied before load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Keep only allocations made by this process (0: every task).
    pub tgid: u32,
    /// Keep only allocations made by tasks with this comm.
    pub comm: Option<String>,
    /// Keep only objects of this slab cache.
    pub cache: Option<String>,
    pub max_allocs: u32,
    pub max_stacks: u32,
    pub page_size: u64,
    pub min_size: u64,
    pub max_size: u64,
    /// `--sample-bytes`: mean bytes between sampled allocations; 0 records every allocation.
    pub sample_bytes: u64,
    pub groups: Vec<Group>,
}

/// The loaded kernel-mode program with its links (tracepoints detach when this is dropped).
pub struct KmemTracer<'obj> {
    skel: KmemSkel<'obj>,
    stats: super::StatsArray,
    links: Vec<Link>,
    attached: Vec<Probe>,
    /// Block counts are in units of 2^-SAMPLE_COUNT_SHIFT (sampled recording).
    fixed_point_counts: bool,
    /// One line per tracepoint this kernel lacks (its probe is disabled, not the run).
    pub missing: Vec<String>,
}

impl std::fmt::Debug for KmemTracer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmemTracer")
            .field("attached", &self.attached.len())
            .field("missing", &self.missing)
            .finish()
    }
}

/// Whether a tracepoint's events are frees or allocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Free,
    Alloc,
}

/// (tracepoint, group, side), free side first in each group: attached in this order, no object
/// allocated after attach can have its free missed. Each program is named after its tracepoint.
const TRACEPOINTS: [(&str, Group, Side); 8] = [
    ("kfree", Group::Slab, Side::Free),
    ("kmem_cache_free", Group::Slab, Side::Free),
    ("kmalloc", Group::Slab, Side::Alloc),
    ("kmem_cache_alloc", Group::Slab, Side::Alloc),
    ("mm_page_free", Group::Page, Side::Free),
    ("mm_page_alloc", Group::Page, Side::Alloc),
    ("percpu_free_percpu", Group::Percpu, Side::Free),
    ("percpu_alloc_percpu", Group::Percpu, Side::Alloc),
];

/// Whether the running kernel has this tracepoint (its BTF declares `btf_trace_<name>`).
/// `LEAK_RECORD_HIDE_TRACEPOINTS` (comma-separated names) pretends some are missing, to test
/// that a missing tracepoint disables only its probe.
fn has_tracepoint(btf: Option<&Btf<'_>>, name: &str) -> bool {
    let hidden = std::env::var("LEAK_RECORD_HIDE_TRACEPOINTS").unwrap_or_default();
    if hidden.split(',').any(|h| h.trim() == name) {
        return false;
    }
    btf.is_none_or(|b| {
        b.type_by_name::<BtfType<'_>>(&format!("btf_trace_{name}"))
            .is_some()
    })
}

/// [`super::TableMemory`] of the kernel-mode object (bpf/kmem.bpf.c): `kallocs` (a hash keyed
/// by address and kind), `stack_ids` (a hash keyed by the whole trace) and `stats`. Both hashes
/// are preallocated.
pub fn table_memory(max_allocs: u64, max_stacks: u64) -> super::TableMemory {
    let trace = size_of::<types::stack_trace>();
    super::TableMemory {
        allocs: super::hash_table_bytes(
            max_allocs,
            size_of::<types::kalloc_key>(),
            size_of::<types::alloc_info>(),
        ),
        stacks: super::hash_table_bytes(max_stacks, trace, size_of::<u32>()).saturating_add(
            super::stats_bytes(max_stacks, types::stats_layout::KERNEL_KINDS.0),
        ),
    }
}

/// Opens, configures and loads the kernel-mode object; programs whose tracepoint this kernel
/// lacks, or whose group was not asked for, are not loaded.
pub fn load<'obj>(
    storage: &'obj mut MaybeUninit<OpenObject>,
    opts: &LoadOptions,
) -> Result<KmemTracer<'obj>> {
    const WHAT: &str = "kernel-mode BPF";
    let mut open = super::open_skel::<KmemSkelBuilder>(storage, WHAT)?;
    let rodata = rodata_with_filters!(open, opts, WHAT);
    rodata.page_size = opts.page_size;
    if let Some(cache) = &opts.cache {
        rodata.filter_cache = true;
        for (dst, src) in rodata.target_cache.iter_mut().zip(cache.bytes()) {
            *dst = src as _;
        }
    }
    if let Some(comm) = &opts.comm {
        rodata.filter_comm = true;
        for (dst, src) in rodata.target_comm.iter_mut().zip(comm.bytes()) {
            *dst = src as _;
        }
    }
    let layout = super::StatsLayout {
        first_kind: types::stats_layout::KERNEL_FIRST_KIND.0,
        kinds: types::stats_layout::KERNEL_KINDS.0,
    };
    let maps = &mut open.maps;
    super::size_tables(
        [&mut maps.kallocs, &mut maps.stack_ids, &mut maps.stats],
        opts.max_allocs,
        opts.max_stacks,
        layout,
    )?;
    // The live-object table stays preallocated (unlike user mode's): an on-demand hash map
    // allocates its elements with kmalloc, which this program traces, and every insert would
    // then feed the next (seen as a runaway bpf_mem_refill stack filling the table).
    let btf = Btf::from_vmlinux().ok();
    let mut missing = Vec::new();
    let mut enabled = Vec::new();
    for (name, group, _) in TRACEPOINTS {
        let wanted = opts.groups.contains(&group);
        let present = has_tracepoint(btf.as_ref(), name);
        if wanted && !present {
            missing.push(format!(
                "this kernel has no {name} tracepoint: its probe is disabled"
            ));
        }
        if wanted && present {
            enabled.push(name);
        }
    }
    for mut prog in open.open_object_mut().progs_mut() {
        let name = prog.name().to_string_lossy().into_owned();
        prog.set_autoload(enabled.contains(&name.as_str()));
    }
    drop(btf);
    let skel = super::load_skel(open, WHAT)?;
    if opts.sample_bytes > 0 {
        super::fill_sample_tables(&skel.maps.sample_gaps, &skel.maps.sample_weights)?;
    }
    let stats = super::StatsArray::map(&skel.maps.stats, layout)?;
    Ok(KmemTracer {
        skel,
        stats,
        links: Vec::new(),
        attached: Vec::new(),
        fixed_point_counts: opts.sample_bytes > 0,
        missing,
    })
}

impl KmemTracer<'_> {
    /// Attaches every loaded program, free side first so that no object allocated after attach
    /// can have its free missed.
    pub fn attach(&mut self) -> Result<()> {
        for (name, ..) in TRACEPOINTS {
            let Some(prog) = self
                .skel
                .object()
                .progs_mut()
                .find(|p| p.name() == name && p.autoload())
            else {
                continue;
            };
            let link = prog
                .attach_trace()
                .map_err(|e| anyhow::anyhow!("{e:?}"))
                .with_context(|| format!("failed to attach to the {name} tracepoint"))?;
            self.links.push(link);
            self.attached.push(Probe {
                function: name.to_string(),
                module: "tp_btf".to_string(),
                offset: 0,
                side: ProbeSide::Entry,
            });
        }
        if self.links.is_empty() {
            anyhow::bail!("none of the kmem tracepoints asked for exists in this kernel");
        }
        Ok(())
    }

    /// Every tracepoint attached.
    pub fn probes(&self) -> &[Probe] {
        &self.attached
    }

    /// Sums the per-CPU loss counters; and the allocation and free events that may not have
    /// been recorded: the events refused by a table whose lock was busy, and the runs of its
    /// programs the kernel skipped (it does not run a tracing program inside itself on one
    /// CPU: an interrupt that allocates or frees while the program runs there; some of them
    /// the filters would have left out anyway).
    pub fn losses(&self) -> Result<(Losses, Unseen)> {
        let (losses, mut unseen) = super::read_losses(&self.skel.maps.counters)?;
        for prog in self.skel.object().progs().filter(|p| p.autoload()) {
            let name = prog.name().to_string_lossy();
            let skipped = skipped_runs(prog.as_fd())
                .with_context(|| format!("cannot read the {name} program's counters"))?;
            match TRACEPOINTS.iter().find(|t| t.0 == name).map(|t| t.2) {
                Some(Side::Free) => unseen.frees += skipped,
                Some(Side::Alloc) => unseen.allocs += skipped,
                None => {}
            }
        }
        Ok((losses, unseen))
    }

    /// Every stack's counters. With sampling, they are estimates (block counts rounded to whole
    /// blocks).
    pub fn stats(&self) -> Vec<RawStats> {
        let mut stats = self.stats.all();
        if self.fixed_point_counts {
            super::whole_block_counts(&mut stats);
        }
        stats
    }

    /// The kernel traces (addresses, innermost first) of the wanted stack ids.
    pub fn stack_traces(&self, wanted: &HashSet<u32>) -> Result<HashMap<u32, Vec<u64>>> {
        super::read_traces(&self.skel.maps.stack_ids, wanted)
    }
}

/// The runs of a loaded program the kernel skipped so as not to run it inside itself on one CPU
/// (`recursion_misses`, Linux 5.12).
fn skipped_runs(fd: std::os::fd::BorrowedFd<'_>) -> Result<u64> {
    let mut info = libbpf_rs::libbpf_sys::bpf_prog_info::default();
    let mut len = size_of::<libbpf_rs::libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: `fd` is a loaded program's, open while borrowed; `info` is a zeroed bpf_prog_info
    // (no array pointers set: the kernel fills in fixed fields only) of `len` bytes, both live
    // across the call.
    let rc = unsafe {
        libbpf_rs::libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len)
    };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(-rc).into());
    }
    Ok(info.recursion_misses)
}
