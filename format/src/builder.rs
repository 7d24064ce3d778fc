//! A small builder for recordings in tests: stacks by name, counters per snapshot, valid bytes out.
use crate::{
    AllocKind, BundleChunk, BundleContent, Children, End, EndReason, Frame, Header, HostInfo,
    KernelSymbol, KernelSymbols, LateProbes, Losses, Module, Probe, ProbeSide, ProcMemory, Process,
    Record, RecordConfig, Sampling, Snapshot, SnapshotCost, Stack, StackStats, Target, TargetMode,
    Unseen, Writer,
};

/// Builds a recording in memory.
#[derive(Debug)]
pub struct RecordingBuilder {
    header: Header,
    records: Vec<Record>,
    pending_modules: Vec<Module>,
    pending_stacks: Vec<Stack>,
    seq: u32,
    interval_ns: u64,
}

impl Default for RecordingBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl RecordingBuilder {
    /// A recording of a fictitious command, 5 s interval.
    pub fn new() -> Self {
        let interval_ns = 5_000_000_000;
        RecordingBuilder {
            header: Header {
                tool: "leak-format builder".into(),
                host: HostInfo {
                    hostname: "builder".into(),
                    kernel_release: "6.0.0".into(),
                    kernel_version: "#1".into(),
                    arch: "x86_64".into(),
                    page_size: 4096,
                    mem_total_bytes: 16 << 30,
                },
                target: Target {
                    mode: TargetMode::Command,
                    pid: 4242,
                    command_line: vec!["/usr/bin/svc".into()],
                    exe: "/usr/bin/svc".into(),
                },
                start_wall_ns: 1_700_000_000_000_000_000,
                start_mono_ns: 1_000_000_000,
                interval_ns,
                config: RecordConfig {
                    max_allocs: 1 << 20,
                    max_stacks: 1 << 14,
                    max_stack_depth: 64,
                    min_size: None,
                    max_size: None,
                    mmap: false,
                },
                probes: vec![Probe {
                    function: "malloc".into(),
                    module: "/usr/lib/libc.so.6".into(),
                    offset: 0x1000,
                    side: ProbeSide::Entry,
                }],
            },
            records: Vec::new(),
            pending_modules: Vec::new(),
            pending_stacks: Vec::new(),
            seq: 0,
            interval_ns,
        }
    }

    /// A kernel-mode recording of one process (`leak-record --kernel --pid PID`), with the
    /// header the recorder writes for it (no `Process` record: see [`Self::process`]).
    pub fn kernel_pid(pid: u32) -> Self {
        let mut b = Self::new();
        let target = &mut b.header.target;
        target.mode = TargetMode::Kernel;
        target.pid = pid;
        target.command_line = vec!["--pid".into(), pid.to_string()];
        target.exe = "[kernel]".into();
        b
    }

    /// Mutable access to the header.
    pub fn header_mut(&mut self) -> &mut Header {
        &mut self.header
    }

    /// Declares a module (emitted with the next snapshot).
    pub fn module(&mut self, id: u32, path: &str, build_id: Option<Vec<u8>>) -> &mut Self {
        self.pending_modules.push(Module {
            id,
            path: path.into(),
            build_id,
            file_size: 0,
        });
        self
    }

    /// Declares a module without a build ID, of `file_size` bytes when it was recorded (emitted
    /// with the next snapshot).
    pub fn module_of_size(&mut self, id: u32, path: &str, file_size: u64) -> &mut Self {
        self.module(id, path, None);
        if let Some(m) = self.pending_modules.last_mut() {
            m.file_size = file_size;
        }
        self
    }

    /// Declares a stack of (module, file offset) frames (emitted with the next snapshot).
    pub fn stack(&mut self, id: u32, frames: &[(u32, u64)]) -> &mut Self {
        self.located_stack(id, frames, false)
    }

    /// [`Self::stack`], cut at the deepest walk (`Stack::truncated`).
    pub fn truncated_stack(&mut self, id: u32, frames: &[(u32, u64)]) -> &mut Self {
        self.located_stack(id, frames, true)
    }

    fn located_stack(&mut self, id: u32, frames: &[(u32, u64)], truncated: bool) -> &mut Self {
        self.pending_stacks.push(Stack {
            id,
            frames: frames
                .iter()
                .map(|&(module, offset)| Frame {
                    addr: 0x5500_0000_0000 + offset,
                    module: Some(module),
                    offset,
                })
                .collect(),
            truncated,
            lost: None,
        });
        self
    }

    /// Declares a stack of the frames given as they are, e.g. one in no mapping (`module`
    /// None), as for code unloaded between two snapshots (emitted with the next snapshot).
    pub fn stack_frames(&mut self, id: u32, frames: Vec<Frame>) -> &mut Self {
        self.pending_stacks.push(Stack {
            id,
            frames,
            truncated: false,
            lost: None,
        });
        self
    }

    /// Declares a kernel stack of kernel addresses (emitted with the next snapshot).
    pub fn kernel_stack(&mut self, id: u32, addrs: &[u64]) -> &mut Self {
        self.pending_stacks.push(Stack::kernel(id, addrs, false));
        self
    }

    /// Appends a kernel-symbols record (kernel mode).
    pub fn kernel_symbols(&mut self, release: &str, symbols: &[(u64, &str)]) -> &mut Self {
        self.records.push(Record::Kernel(KernelSymbols {
            release: release.into(),
            symbols: symbols
                .iter()
                .map(|&(addr, name)| KernelSymbol {
                    addr,
                    name: name.into(),
                    module: None,
                })
                .collect(),
        }));
        self
    }

    /// Appends a record of probes attached after the start.
    pub fn late_probes(&mut self, late: LateProbes) -> &mut Self {
        self.records.push(Record::Probes(late));
        self
    }

    /// Appends a record of the processes the target started.
    pub fn children(&mut self, children: Children) -> &mut Self {
        self.records.push(Record::Children(children));
        self
    }

    /// Appends a record of the allocator events not recorded so far.
    pub fn unseen(&mut self, allocs: u64, frees: u64) -> &mut Self {
        self.records.push(Record::Unseen(Unseen { allocs, frees }));
        self
    }

    /// Appends the record naming a `--kernel --pid` recording's process, or (user mode) the
    /// program the target runs after an exec.
    pub fn process(&mut self, pid: u32, name: &str, command_line: &[&str], exe: &str) -> &mut Self {
        self.records.push(Record::Process(Process {
            pid,
            name: name.to_string(),
            command_line: command_line.iter().map(ToString::to_string).collect(),
            exe: exe.to_string(),
        }));
        self
    }

    /// Appends a sampling record (`--sample-bytes`): figures are estimates.
    pub fn sampling(&mut self, bytes: u64) -> &mut Self {
        self.records.push(Record::Sampling(Sampling { bytes }));
        self
    }

    /// Appends a snapshot whose changed heap stacks have these
    /// (stack, outstanding bytes, outstanding count) values.
    pub fn snapshot(&mut self, outstanding: &[(u32, u64, u64)]) -> &mut Self {
        let stats = outstanding
            .iter()
            .map(|&(stack, bytes, count)| StackStats {
                stack,
                kind: AllocKind::Heap,
                alloc_bytes: bytes,
                alloc_count: count,
                free_bytes: 0,
                free_count: 0,
            })
            .collect();
        self.snapshot_with(stats, Losses::default())
    }

    /// Appends a snapshot with full counters and losses.
    pub fn snapshot_with(&mut self, stats: Vec<StackStats>, losses: Losses) -> &mut Self {
        let mono_ns = self.header.start_mono_ns + u64::from(self.seq + 1) * self.interval_ns;
        let wall_ns = self.header.start_wall_ns + u64::from(self.seq + 1) * self.interval_ns;
        self.records.push(Record::Snapshot(Snapshot {
            seq: self.seq,
            wall_ns,
            mono_ns,
            new_modules: std::mem::take(&mut self.pending_modules),
            new_stacks: std::mem::take(&mut self.pending_stacks),
            stats,
            maps: None,
            memory: Some(ProcMemory::default()),
            losses,
            cost: SnapshotCost::default(),
        }));
        self.seq += 1;
        self
    }

    /// Sets the target's memory in the last snapshot appended.
    pub fn memory(&mut self, memory: ProcMemory) -> &mut Self {
        if let Some(Record::Snapshot(s)) = self.records.last_mut() {
            s.memory = Some(memory);
        }
        self
    }

    /// Appends a bundle of `bytes` for a module, in one chunk.
    pub fn bundle(&mut self, module: u32, content: BundleContent, bytes: Vec<u8>) -> &mut Self {
        self.records.push(Record::Bundle(BundleChunk {
            module,
            content,
            total_len: bytes.len() as u64,
            offset: 0,
            data: bytes,
        }));
        self
    }

    /// Appends the end record.
    pub fn end(&mut self, reason: EndReason) -> &mut Self {
        let mono_ns = self.header.start_mono_ns + u64::from(self.seq) * self.interval_ns;
        self.records.push(Record::End(End {
            wall_ns: self.header.start_wall_ns + u64::from(self.seq) * self.interval_ns,
            mono_ns,
            reason,
            snapshots: self.seq,
        }));
        self
    }

    /// The recording's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new(Vec::new(), &self.header).expect("in-memory write cannot fail");
        for r in &self.records {
            w.write(r).expect("in-memory write cannot fail");
        }
        w.into_inner()
    }
}
