//! The only module that touches the BPF skeleton: load, attach, and read the maps.
//! Structs crossing the boundary come from `bpf/leak.h` through the skeleton's `types`.
use std::collections::{HashMap, HashSet};
use std::mem::{offset_of, size_of, MaybeUninit};

use anyhow::{Context, Result};
use leak_format::{Losses, Probe, ProbeSide, StackLoss};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, OpenObject, UprobeOpts};

use crate::discover::{Entry, PlannedProbe, Return};

mod skel {
    #![allow(clippy::all, missing_debug_implementations, non_camel_case_types)]
    include!(concat!(env!("OUT_DIR"), "/leak.skel.rs"));
}
use skel::types;
use skel::{LeakSkel, LeakSkelBuilder};

const _: () = assert!(size_of::<types::stats_key>() == 8);
const _: () = assert!(size_of::<types::stack_stats>() == 32);
const _: () = assert!(size_of::<types::alloc_info>() == 24);

/// Deepest stack the BPF side keeps (from the shared header, through the skeleton).
pub const MAX_STACK_DEPTH: usize = size_of::<types::stack_trace>() / size_of::<u64>();
/// Ids below this are placeholders for allocations whose stack is unknown.
pub const FIRST_STACK_ID: u32 = types::lost_stack::FIRST_STACK_ID.0;

/// What a placeholder stack id stands for.
pub fn lost_reason(id: u32) -> Option<StackLoss> {
    match types::lost_stack(id) {
        types::lost_stack::STACK_LOST_TABLE_FULL => Some(StackLoss::TableFull),
        types::lost_stack::STACK_LOST_WALK_FAILED => Some(StackLoss::WalkFailed),
        types::lost_stack::STACK_LOST_COUNTERS_FULL => Some(StackLoss::CountersFull),
        types::lost_stack::STACK_LOST_EMPTY => Some(StackLoss::Empty),
        _ => None,
    }
}

/// Settings applied before load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub tgid: u32,
    pub max_allocs: u32,
    pub max_stacks: u32,
    pub min_size: u64,
    pub max_size: u64,
}

/// One stack's counters as read from the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawStats {
    pub stack_id: u32,
    pub kind: u32,
    pub alloc_bytes: u64,
    pub alloc_count: u64,
    pub free_bytes: u64,
    pub free_count: u64,
}

/// The loaded program with its links (probes detach when this is dropped).
pub struct Tracer<'obj> {
    skel: LeakSkel<'obj>,
    links: Vec<Link>,
    attached: Vec<Probe>,
}

impl std::fmt::Debug for Tracer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("attached", &self.attached.len())
            .finish()
    }
}

/// Opens and loads the BPF object.
pub fn load<'obj>(
    storage: &'obj mut MaybeUninit<OpenObject>,
    opts: &LoadOptions,
) -> Result<Tracer<'obj>> {
    let mut open = LeakSkelBuilder::default()
        .open(storage)
        .context("failed to open the BPF object")?;
    let rodata = open
        .maps
        .rodata_data
        .as_deref_mut()
        .context("the BPF object has no .rodata")?;
    rodata.target_tgid = opts.tgid;
    rodata.min_size = opts.min_size;
    rodata.max_size = opts.max_size;
    let placeholders = FIRST_STACK_ID * 2; // both kinds
    open.maps.allocs.set_max_entries(opts.max_allocs)?;
    open.maps.stack_ids.set_max_entries(opts.max_stacks)?;
    open.maps.stats.set_max_entries(
        opts.max_stacks
            .saturating_mul(2)
            .saturating_add(placeholders),
    )?;
    // Live blocks come and go at the allocation rate: allocate entries on demand instead of
    // reserving max_allocs of them up front (kernels >= 6.1 support this for tracing programs).
    let flags = open.maps.allocs.map_flags();
    open.maps
        .allocs
        .set_map_flags(flags | libbpf_rs::libbpf_sys::BPF_F_NO_PREALLOC)?;
    let skel = open.load().map_err(|e| anyhow::anyhow!("{e:?}")).context(
        "failed to load the BPF program (needs root, or CAP_BPF and CAP_PERFMON, and a kernel with BTF)",
    )?;
    // Placeholder stacks always exist, so counts survive a full counter table.
    let zero = [0u8; size_of::<types::stack_stats>()];
    for kind in [
        types::alloc_kind::KIND_HEAP.0,
        types::alloc_kind::KIND_MMAP.0,
    ] {
        for id in 1..FIRST_STACK_ID {
            let key = stats_key(id, kind);
            skel.maps
                .stats
                .update(&key, &zero, MapFlags::NO_EXIST)
                .or_else(|e| {
                    if e.kind() == libbpf_rs::ErrorKind::AlreadyExists {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })?;
        }
    }
    Ok(Tracer {
        skel,
        links: Vec::new(),
        attached: Vec::new(),
    })
}

fn stats_key(id: u32, kind: u32) -> [u8; 8] {
    let mut key = [0u8; 8];
    key[offset_of!(types::stats_key, stack_id)..][..4].copy_from_slice(&id.to_ne_bytes());
    key[offset_of!(types::stats_key, kind)..][..4].copy_from_slice(&kind.to_ne_bytes());
    key
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_ne_bytes)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    b.get(off..off + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_ne_bytes)
}

impl Tracer<'_> {
    /// Attaches the planned probes, free-side first so that no block allocated after attach can
    /// have its free missed.
    pub fn attach(&mut self, pid: u32, probes: &[PlannedProbe]) -> Result<()> {
        let mut ordered: Vec<&PlannedProbe> = probes.iter().collect();
        ordered.sort_by_key(|p| !matches!(p.entry, Entry::Free | Entry::Munmap));
        for p in ordered {
            let progs = &self.skel.progs;
            // Return probe before entry probe: an entry whose return is not yet probed would
            // leave a pending call behind.
            if let Some(ret) = p.ret {
                let prog = match ret {
                    Return::Alloc => &progs.alloc_exit,
                    Return::PosixMemalign => &progs.posix_memalign_exit,
                };
                self.links
                    .push(attach_prog(prog, pid, p, ProbeSide::Return)?);
                self.attached.push(probe_record(p, ProbeSide::Return));
            }
            let prog = match p.entry {
                Entry::Malloc => &progs.malloc_enter,
                Entry::Calloc => &progs.calloc_enter,
                Entry::Memalign => &progs.memalign_enter,
                Entry::Realloc => &progs.realloc_enter,
                Entry::Reallocarray => &progs.reallocarray_enter,
                Entry::PosixMemalign => &progs.posix_memalign_enter,
                Entry::Free => &progs.free_enter,
                Entry::Mmap => &progs.mmap_enter,
                Entry::Munmap => &progs.munmap_enter,
            };
            self.links
                .push(attach_prog(prog, pid, p, ProbeSide::Entry)?);
            self.attached.push(probe_record(p, ProbeSide::Entry));
        }
        Ok(())
    }

    /// Every probe attached so far.
    pub fn probes(&self) -> &[Probe] {
        &self.attached
    }

    /// Sums the per-CPU loss counters.
    pub fn losses(&self) -> Result<Losses> {
        let mut c = [0u64; types::leak_counter::NR_COUNTERS.0 as usize];
        for (i, slot) in c.iter_mut().enumerate() {
            let key = (i as u32).to_ne_bytes();
            if let Some(per_cpu) = self.skel.maps.counters.lookup_percpu(&key, MapFlags::ANY)? {
                *slot = per_cpu.iter().map(|v| u64_at(v, 0)).sum();
            }
        }
        let at = |k: types::leak_counter| c[k.0 as usize];
        use types::leak_counter as C;
        Ok(Losses {
            allocs_full: at(C::C_ALLOCS_FULL),
            allocs_full_bytes: at(C::C_ALLOCS_FULL_BYTES),
            stack_table_full: at(C::C_STACK_TABLE_FULL),
            stack_walk_failed: at(C::C_STACK_WALK_FAILED),
            counters_full: at(C::C_COUNTERS_FULL),
            pending_full: at(C::C_PENDING_FULL),
            return_without_entry: at(C::C_RET_WITHOUT_ENTRY) + at(C::C_READ_FAILED),
            unknown_free: at(C::C_UNKNOWN_FREE),
            missed_free: at(C::C_MISSED_FREE),
            nested_calls: at(C::C_NESTED),
            abandoned_calls: at(C::C_ABANDONED),
        })
    }

    /// Every stack's counters.
    pub fn stats(&self) -> Result<Vec<RawStats>> {
        let map = &self.skel.maps.stats;
        let parse = |k: &[u8], v: &[u8]| RawStats {
            stack_id: u32_at(k, offset_of!(types::stats_key, stack_id)),
            kind: u32_at(k, offset_of!(types::stats_key, kind)),
            alloc_bytes: u64_at(v, offset_of!(types::stack_stats, alloc_bytes)),
            alloc_count: u64_at(v, offset_of!(types::stack_stats, alloc_count)),
            free_bytes: u64_at(v, offset_of!(types::stack_stats, free_bytes)),
            free_count: u64_at(v, offset_of!(types::stack_stats, free_count)),
        };
        Ok(read_all(map)?.iter().map(|(k, v)| parse(k, v)).collect())
    }

    /// The traces (return addresses, innermost first) of the wanted stack ids.
    pub fn stack_traces(&self, wanted: &HashSet<u32>) -> Result<HashMap<u32, Vec<u64>>> {
        let map = &self.skel.maps.stack_ids;
        let mut out = HashMap::new();
        for (k, v) in read_all(map)? {
            let id = u32_at(&v, 0);
            if wanted.contains(&id) {
                let ips: Vec<u64> = k
                    .chunks_exact(8)
                    .map(|c| u64_at(c, 0))
                    .take_while(|&ip| ip != 0)
                    .collect();
                out.insert(id, ips);
            }
        }
        Ok(out)
    }
}

/// Every entry of a hash map, read in batches (a few syscalls for thousands of entries).
/// Unlike libbpf-rs's batch iterator, which ends silently on any error, this fails loudly:
/// a partial read would look like stacks that did not change.
fn read_all(map: &libbpf_rs::MapMut<'_>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    use std::os::fd::{AsFd, AsRawFd};
    let (ks, vs) = (map.key_size() as usize, map.value_size() as usize);
    let fd = map.as_fd().as_raw_fd();
    let opts = libbpf_rs::libbpf_sys::bpf_map_batch_opts {
        sz: size_of::<libbpf_rs::libbpf_sys::bpf_map_batch_opts>() as _,
        elem_flags: 0,
        flags: 0,
    };
    let mut batch: u32 = map.max_entries().clamp(1, 4096);
    let mut out = Vec::new();
    let (mut token_in, mut token_out) = ([0u8; 8], [0u8; 8]);
    let mut first = true;
    loop {
        let mut keys = vec![0u8; ks * batch as usize];
        let mut values = vec![0u8; vs * batch as usize];
        let mut count = batch;
        // SAFETY: keys/values hold `count` keys/values of the map's sizes; the batch tokens
        // are 8 bytes (the kernel's hash-map cursor is 4); opts is initialised with its size.
        let ret = unsafe {
            libbpf_rs::libbpf_sys::bpf_map_lookup_batch(
                fd,
                if first {
                    std::ptr::null_mut()
                } else {
                    token_in.as_mut_ptr().cast()
                },
                token_out.as_mut_ptr().cast(),
                keys.as_mut_ptr().cast(),
                values.as_mut_ptr().cast(),
                &mut count,
                &opts,
            )
        };
        let err = (ret < 0).then(std::io::Error::last_os_error);
        let n = count.min(batch) as usize;
        for i in 0..n {
            out.push((
                keys[i * ks..][..ks].to_vec(),
                values[i * vs..][..vs].to_vec(),
            ));
        }
        match err.and_then(|e| e.raw_os_error()) {
            None => {
                token_in = token_out;
                first = false;
            }
            Some(libc::ENOENT) => return Ok(out),
            // A bucket holds more entries than fit: retry it with room for more.
            Some(libc::ENOSPC) if n == 0 && batch < 1 << 20 => batch *= 2,
            Some(libc::EINTR) | Some(libc::EAGAIN) if n == 0 => {}
            Some(e) => {
                return Err(std::io::Error::from_raw_os_error(e)).with_context(|| {
                    format!("cannot read BPF map {}", map.name().to_string_lossy())
                })
            }
        }
    }
}

fn probe_record(p: &PlannedProbe, side: ProbeSide) -> Probe {
    Probe {
        function: p.function.clone(),
        module: p.module.clone(),
        offset: p.offset,
        side,
    }
}

fn attach_prog(
    prog: &libbpf_rs::ProgramMut<'_>,
    pid: u32,
    p: &PlannedProbe,
    side: ProbeSide,
) -> Result<Link> {
    let opts = UprobeOpts {
        retprobe: side == ProbeSide::Return,
        ..UprobeOpts::default()
    };
    let offset = usize::try_from(p.offset)?;
    prog.attach_uprobe_with_opts(pid as i32, &p.open_path, offset, opts)
        .map_err(|e| anyhow::anyhow!("{e:?}"))
        .with_context(|| {
            let what = if side == ProbeSide::Return {
                "a uretprobe"
            } else {
                "a uprobe"
            };
            format!("failed to attach {what} to {} in {}", p.function, p.module)
        })
}
