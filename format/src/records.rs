//! The records of a recording. Field order is the wire order (postcard stores no names): a change
//! to any struct here is a new major format version; new `Record` variants are appended only.
use serde::{Deserialize, Serialize};

/// One record of the stream. Variants are only ever appended; a reader skips variants it does not
/// know (their tag is beyond the last one it knows) with a warning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Record {
    /// Always the first record: who recorded what, where, how.
    Header(Header),
    /// The state at one point in time (only what changed since the previous snapshot).
    Snapshot(Snapshot),
    /// A piece of an embedded module (`--bundle-symbols`).
    Bundle(BundleChunk),
    /// The last record of a recording that ended cleanly.
    End(End),
    /// Kernel mode (format 1.1): the kernel symbols covering the addresses of the kernel stacks
    /// recorded so far that earlier `Kernel` records did not cover. Written before the snapshot
    /// that first references them.
    Kernel(KernelSymbols),
    /// `--sample-bytes` (format 1.2): only a sample of the allocations was recorded and every
    /// counter of every snapshot is an estimate. Written right after the header, never in an
    /// exact recording.
    Sampling(Sampling),
    /// Probes attached after the start (format 1.3): the target exec'd a program whose
    /// allocator was not probed yet. Written before the next snapshot.
    Probes(LateProbes),
    /// Processes the target started (format 1.4), which are not recorded: leak-record follows
    /// one process. Cumulative: each supersedes the previous. Written before a snapshot when
    /// the count or the names changed, never while the target started none.
    Children(Children),
    /// Allocator events that happened but were not recorded (format 1.5), beyond `Losses`.
    /// Cumulative: each supersedes the previous. Written before a snapshot when they changed,
    /// never while both are 0.
    Unseen(Unseen),
    /// The process a `--kernel --pid` recording follows (format 1.6): its name, command line
    /// and executable, which the kernel-mode `Header.target` does not give. Written once, right
    /// after the header (and the `Sampling` record, if any). In user mode (format 1.7): the
    /// program the target runs after an exec, written between two snapshots once the recorder
    /// saw the exec; each supersedes the previous.
    Process(Process),
}

/// Who the process of a `--kernel --pid` recording is (format 1.6, §5.12), as read from
/// `/proc/PID` when the recording started; or what a user-mode target runs after an exec
/// (format 1.7), as read when the recorder saw the exec.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Process {
    /// Process id (tgid): the same as `Header.target.pid`.
    pub pid: u32,
    /// Its name (`comm`: 15 bytes at most, invalid UTF-8 replaced by U+FFFD).
    pub name: String,
    /// Its command line (argv); empty for a kernel thread.
    pub command_line: Vec<String>,
    /// Path of its executable, as the process sees it; empty when unreadable (a kernel thread).
    pub exe: String,
}

/// Allocator events that may have happened while recording without the recorder's BPF programs
/// recording them (format 1.5, §5.11); both counts are upper bounds. The kernel does not run a
/// tracing program inside itself on one CPU: an interrupt that allocates or frees while the
/// program runs on its CPU is skipped, and counted whether or not the recording's filters would
/// have kept it. A table whose lock is busy refuses an update or a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Unseen {
    /// Allocations not recorded, at most: counted on no stack (their frees count as
    /// `unknown_free`).
    pub allocs: u64,
    /// Frees not recorded, at most: each may leave a freed block counted as outstanding on its
    /// stack (in kernel mode until its address is allocated again, which retires it as a
    /// `missed_free`, if ever).
    pub frees: u64,
}

impl Unseen {
    /// Every unseen event.
    pub fn total(&self) -> u64 {
        self.allocs + self.frees
    }
}

/// The processes (not threads) the target started while it was recorded (format 1.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Children {
    /// How many, since the probes were attached (counted by the kernel at each fork, so that
    /// none is missed however short it lives).
    pub started: u64,
    /// The first few of them (at most 4), in the order they were started.
    pub examples: Vec<StartedProcess>,
}

/// One process the target started (format 1.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartedProcess {
    /// Its PID (in the recorder's PID namespace).
    pub pid: u32,
    /// Its name after its last exec seen (the kernel's `comm`: at most 15 bytes of the
    /// program's file name); the target's own if it had not exec'd.
    pub name: String,
}

/// Probes attached while recording (format 1.3), in addition to the header's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LateProbes {
    /// CLOCK_MONOTONIC when they were all attached.
    pub mono_ns: u64,
    /// The program the target runs since the exec that called for them.
    pub exe: String,
    /// The probes, as in [`Header::probes`].
    pub probes: Vec<Probe>,
    /// The target was held at that exec until they were attached (a started command): none of
    /// the new program's allocations was missed. If false, they were attached while it ran,
    /// and its allocations from the exec to `mono_ns` were not seen (their frees count as
    /// `unknown_free`).
    pub held: bool,
}

/// How a sampled recording was sampled (format 1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sampling {
    /// Mean bytes allocated between two sampled allocations (`--sample-bytes`), per thread (in
    /// kernel mode, per CPU and nesting level). A
    /// sampled block of s bytes was recorded with probability p = 1 - exp(-s / bytes) and
    /// counts as s/p bytes and 1/p blocks in the stack counters (rounded to whole blocks).
    pub bytes: u64,
}

/// Facts about the recording as a whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Name and version of the recorder, e.g. `leak-record 0.1.0`.
    pub tool: String,
    /// The host the recording was taken on.
    pub host: HostInfo,
    /// The traced process.
    pub target: Target,
    /// Wall-clock time at the start, nanoseconds since the Unix epoch.
    pub start_wall_ns: u64,
    /// CLOCK_MONOTONIC at the start, nanoseconds. Snapshot times use the same clock.
    pub start_mono_ns: u64,
    /// Requested snapshot interval, nanoseconds. (Both start times are taken together, when
    /// the probes are attached.)
    pub interval_ns: u64,
    /// Recorder limits and filters in force.
    pub config: RecordConfig,
    /// Every probe attached: which function, in which file, at which offset.
    pub probes: Vec<Probe>,
}

/// The machine the recording was taken on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    /// `uname -n`.
    pub hostname: String,
    /// `uname -r`.
    pub kernel_release: String,
    /// `uname -v`.
    pub kernel_version: String,
    /// `uname -m`, e.g. `x86_64`.
    pub arch: String,
    /// Page size in bytes.
    pub page_size: u64,
    /// MemTotal from /proc/meminfo, bytes.
    pub mem_total_bytes: u64,
}

/// How the target was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TargetMode {
    /// `-p PID`: attached to a running process.
    Attach,
    /// `-- CMD ARGS`: started by the recorder, held before exec until probes were attached.
    Command,
    /// `--kernel` (format 1.1): kernel allocations through the kmem tracepoints. `pid` is the
    /// `--pid` filter (0: every task), `command_line` the recorder's filters, `exe` `[kernel]`.
    Kernel,
}

/// The traced process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// How it was found.
    pub mode: TargetMode,
    /// Process id (tgid).
    pub pid: u32,
    /// Its command line (argv).
    pub command_line: Vec<String>,
    /// Path of its executable, as the target sees it.
    pub exe: String,
}

/// Recorder limits and filters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordConfig {
    /// Capacity of the live-allocation table.
    pub max_allocs: u64,
    /// Capacity of the stack table.
    pub max_stacks: u64,
    /// Deepest user stack recorded, frames.
    pub max_stack_depth: u32,
    /// Allocations smaller than this were not traced.
    pub min_size: Option<u64>,
    /// Allocations larger than this were not traced.
    pub max_size: Option<u64>,
    /// Anonymous mmap/munmap outside the allocator were traced (as [`AllocKind::Mmap`]).
    pub mmap: bool,
}

/// Which side of a call a probe fires on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProbeSide {
    /// At the function's entry (uprobe).
    Entry,
    /// At the function's return (uretprobe).
    Return,
}

/// One attached probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// Symbol name, e.g. `malloc` or `je_malloc`.
    pub function: String,
    /// The ELF file it was attached in, as the target sees it.
    pub module: String,
    /// File offset of the probed instruction: the function's entry or the first instruction
    /// past it that the kernel emulates; a Return probe shares its Entry probe's offset.
    pub offset: u64,
    /// Entry or return.
    pub side: ProbeSide,
}

/// What kind of memory a stack's counters describe.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum AllocKind {
    /// malloc and friends, C++ operator new, jemalloc's extended API.
    #[default]
    Heap,
    /// Anonymous mmap made outside any allocator call (`--mmap`).
    Mmap,
    /// Kernel slab objects: `kmalloc` and `kmem_cache_alloc` (format 1.1). Bytes are what the
    /// allocator reserved (`bytes_alloc`, the cache's object size).
    KernelSlab,
    /// Kernel pages from the page allocator (`mm_page_alloc`), `PAGE_SIZE << order` bytes each.
    KernelPage,
    /// Kernel per-CPU allocations (`percpu_alloc_percpu`, with `--percpu`).
    KernelPercpu,
}

impl AllocKind {
    /// True for kinds whose stacks are kernel stacks (frames are kernel addresses, resolved
    /// through [`Record::Kernel`] symbols, never through modules).
    pub fn is_kernel(self) -> bool {
        matches!(
            self,
            AllocKind::KernelSlab | AllocKind::KernelPage | AllocKind::KernelPercpu
        )
    }

    /// Short lowercase name, as used in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            AllocKind::Heap => "heap",
            AllocKind::Mmap => "mmap",
            AllocKind::KernelSlab => "kernel_slab",
            AllocKind::KernelPage => "kernel_page",
            AllocKind::KernelPercpu => "kernel_percpu",
        }
    }
}

/// The state at one point in time. Only stacks whose counters changed since the previous snapshot
/// are listed; a stack not listed keeps its previous values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// 0, 1, 2, ... in file order.
    pub seq: u32,
    /// Wall clock, nanoseconds since the Unix epoch.
    pub wall_ns: u64,
    /// CLOCK_MONOTONIC, nanoseconds (compare with [`Header::start_mono_ns`]).
    pub mono_ns: u64,
    /// Modules referenced for the first time by this snapshot's new stacks.
    pub new_modules: Vec<Module>,
    /// Stacks seen for the first time.
    pub new_stacks: Vec<Stack>,
    /// Counters of every stack that changed since the previous snapshot (absolute values).
    pub stats: Vec<StackStats>,
    /// The target's memory map, when it changed since the previous snapshot (always in the first).
    pub maps: Option<Vec<MapEntry>>,
    /// The target's memory use from /proc/PID/status (None once the target has exited).
    pub memory: Option<ProcMemory>,
    /// Cumulative loss counters since the start.
    pub losses: Losses,
    /// What taking this snapshot cost the recorder.
    pub cost: SnapshotCost,
}

/// An ELF file that frames point into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Module {
    /// Recording-local id, referenced by [`Frame::module`].
    pub id: u32,
    /// Path as the target sees it (inside its mount namespace).
    pub path: String,
    /// GNU build ID, if the file has one.
    pub build_id: Option<Vec<u8>>,
    /// File size in bytes when it was read.
    pub file_size: u64,
}

/// Why a stack's frames are not known. Allocations are still counted, on a stack that says why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StackLoss {
    /// The stack table was full.
    TableFull,
    /// The kernel could not walk the stack.
    WalkFailed,
    /// The per-stack counter table was full (recorders before the counters became an array,
    /// which has room for every stack id).
    CountersFull,
    /// The walk returned no frames.
    Empty,
}

impl std::fmt::Display for StackLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StackLoss::TableFull => "table full",
            StackLoss::WalkFailed => "walk failed",
            StackLoss::CountersFull => "counters full",
            StackLoss::Empty => "no frames",
        })
    }
}

/// A call stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stack {
    /// Recording-local id, unique within the recording.
    pub id: u32,
    /// Frames, innermost first. For user stacks taken at an allocator's return every frame is a
    /// return address (look up `offset - 1` for the call's line).
    pub frames: Vec<Frame>,
    /// The stack filled [`RecordConfig::max_stack_depth`] frames: outer frames may be missing.
    pub truncated: bool,
    /// Set on the placeholder stacks that collect allocations whose stack is unknown.
    pub lost: Option<StackLoss>,
}

/// One frame of a stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// Virtual address in the target.
    pub addr: u64,
    /// The module it falls in, if any mapping covered it.
    pub module: Option<u32>,
    /// File offset within that module (0 when `module` is None).
    pub offset: u64,
}

impl Stack {
    /// A kernel stack: kernel addresses (innermost first), in no module.
    pub fn kernel(id: u32, addrs: &[u64], truncated: bool) -> Self {
        Stack {
            id,
            frames: addrs
                .iter()
                .map(|&addr| Frame {
                    addr,
                    module: None,
                    offset: 0,
                })
                .collect(),
            truncated,
            lost: None,
        }
    }
}

/// Cumulative counters of one stack and kind. Outstanding = allocated - freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StackStats {
    /// The stack's id.
    pub stack: u32,
    /// Which kind of memory.
    pub kind: AllocKind,
    /// Bytes allocated from this stack since the start.
    pub alloc_bytes: u64,
    /// Allocations from this stack since the start.
    pub alloc_count: u64,
    /// Bytes of those allocations freed since the start.
    pub free_bytes: u64,
    /// Those allocations freed since the start.
    pub free_count: u64,
}

impl StackStats {
    /// Bytes still allocated.
    pub fn outstanding_bytes(&self) -> u64 {
        self.alloc_bytes.saturating_sub(self.free_bytes)
    }
    /// Allocations still live.
    pub fn outstanding_count(&self) -> u64 {
        self.alloc_count.saturating_sub(self.free_count)
    }
}

/// One line of /proc/PID/maps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapEntry {
    /// Start address.
    pub start: u64,
    /// End address (exclusive).
    pub end: u64,
    /// `rwxp`-style permissions.
    pub perms: String,
    /// File offset of `start`.
    pub offset: u64,
    /// Device, `major:minor`.
    pub dev: String,
    /// Inode number.
    pub inode: u64,
    /// Path or pseudo-name (`[heap]`), empty for anonymous mappings.
    pub path: String,
}

/// Memory use of the target (from /proc/PID/status), bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProcMemory {
    /// VmRSS.
    pub rss: u64,
    /// RssAnon.
    pub rss_anon: u64,
    /// RssFile.
    pub rss_file: u64,
    /// VmSwap.
    pub swap: u64,
}

/// Everything the recorder could not count, cumulative since the start. None of these is ever
/// dropped without being counted here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Losses {
    /// Allocations not tracked because the live-allocation table was full.
    pub allocs_full: u64,
    /// Bytes of those allocations.
    pub allocs_full_bytes: u64,
    /// Allocations counted on a placeholder stack because the stack table was full (or, with
    /// odds of about n²/2⁶⁵, their stack's 64-bit hash equalled another stack's).
    pub stack_table_full: u64,
    /// Allocations counted on a placeholder stack because the stack walk failed.
    pub stack_walk_failed: u64,
    /// Allocations counted on a placeholder stack because the per-stack counter table was full
    /// (recorders before the counters became an array; 0 since).
    pub counters_full: u64,
    /// Allocator calls not tracked because the thread's call state could not be allocated.
    pub pending_full: u64,
    /// Allocator returns seen without their entry, or whose result could not be read
    /// (posix_memalign's output pointer).
    pub return_without_entry: u64,
    /// Frees of addresses not tracked (allocated before attach, or untracked above).
    pub unknown_free: u64,
    /// Allocations at an address that was still tracked: its free was missed (counted as freed).
    pub missed_free: u64,
    /// Allocator calls nested inside another traced allocator call (counted once, at the outer call).
    pub nested_calls: u64,
    /// Allocator calls that never returned (left by an exception or longjmp).
    pub abandoned_calls: u64,
}

impl Losses {
    /// Sum of the counters that mean data was lost or misattributed. Not included:
    /// `unknown_free` (expected after `-p` attach), `nested_calls` and `abandoned_calls`
    /// (calls that allocated nothing of their own).
    pub fn total_drops(&self) -> u64 {
        self.allocs_full
            + self.stack_table_full
            + self.stack_walk_failed
            + self.counters_full
            + self.pending_full
            + self.return_without_entry
            + self.missed_free
    }

    /// [`Losses::total_drops`] less what is expected: in kernel mode (`kernel`), missed frees
    /// (free paths without a tracepoint, retired at the address's next allocation).
    pub fn unexpected_drops(&self, kernel: bool) -> u64 {
        self.total_drops() - if kernel { self.missed_free } else { 0 }
    }
}

/// What a snapshot cost the recorder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SnapshotCost {
    /// Wall time to take it, nanoseconds.
    pub wall_ns: u64,
    /// Recorder thread CPU time spent, nanoseconds.
    pub cpu_ns: u64,
    /// Per-stack counter entries read from the kernel (including placeholders).
    pub stacks_read: u32,
}

/// A piece of an embedded module file (`--bundle-symbols`). Chunks of one module arrive in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleChunk {
    /// The module this belongs to.
    pub module: u32,
    /// What is embedded.
    pub content: BundleContent,
    /// Total length of the embedded content.
    pub total_len: u64,
    /// Offset of this chunk in it.
    pub offset: u64,
    /// The bytes.
    pub data: Vec<u8>,
}

/// What a bundle holds for a module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BundleContent {
    /// The whole ELF file.
    ElfFile,
    /// The file's function symbols (files above the size cap): a postcard-encoded
    /// `Vec<BundledSymbol>`, sorted by offset; decode with [`decode_symbol_table`].
    SymbolTable,
}

/// A function symbol of a bundled module, in file-offset coordinates (the same as
/// [`Frame::offset`]), so no program headers are needed to use it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundledSymbol {
    /// File offset of the function's first byte.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// Symbol name as in the ELF file (mangled).
    pub name: String,
}

/// Encodes a symbol table for a [`BundleContent::SymbolTable`] bundle.
pub fn encode_symbol_table(symbols: &[BundledSymbol]) -> Vec<u8> {
    postcard::to_stdvec(symbols).unwrap_or_default()
}

/// Decodes the reassembled bytes of a [`BundleContent::SymbolTable`] bundle.
pub fn decode_symbol_table(bytes: &[u8]) -> Result<Vec<BundledSymbol>, postcard::Error> {
    postcard::from_bytes(bytes)
}

/// Kernel symbols needed to name the frames of kernel stacks offline (`--kernel`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelSymbols {
    /// `uname -r` of the kernel the addresses belong to.
    pub release: String,
    /// kallsyms entries, sorted by address: for every recorded kernel frame, the entry at or
    /// below its lookup address and the entry after that (which bounds it). An address at or
    /// past the last entry of a run has no symbol.
    pub symbols: Vec<KernelSymbol>,
}

/// One line of `/proc/kallsyms` (read as root: addresses are real).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelSymbol {
    /// Start address.
    pub addr: u64,
    /// Symbol name, e.g. `alloc_empty_file`.
    pub name: String,
    /// The kernel module it belongs to (`ext4`), None for the kernel image.
    pub module: Option<String>,
}

/// Why the recording ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndReason {
    /// `--duration` elapsed.
    Duration,
    /// The recorder received this signal (SIGINT, SIGTERM).
    Signal(i32),
    /// The target exited: exit code, or the signal that killed it.
    TargetExited {
        /// Exit status, if it exited normally (or not known for `-p` targets).
        code: Option<i32>,
        /// Terminating signal, if any.
        signal: Option<i32>,
    },
    /// The recorder stopped on an error.
    Error(String),
}

/// The last record of a cleanly ended recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct End {
    /// Wall clock, nanoseconds since the Unix epoch.
    pub wall_ns: u64,
    /// CLOCK_MONOTONIC, nanoseconds.
    pub mono_ns: u64,
    /// Why it ended.
    pub reason: EndReason,
    /// Number of snapshots written.
    pub snapshots: u32,
}
