//! Folds a stream of records into the latest state: stacks, modules, current counters, losses.
use std::collections::BTreeMap;
use std::io::Read;

use crate::{
    AllocKind, BundleChunk, End, Error, Header, Losses, MapEntry, Module, ProcMemory, Reader,
    Record, Snapshot, Stack, StackStats,
};

/// The latest counters of one stack and kind.
pub type StackTotals = StackStats;

/// Everything known after applying records in order.
#[derive(Debug, Default, Clone)]
pub struct RecordingState {
    /// The header, once seen.
    pub header: Option<Header>,
    /// Every stack by id.
    pub stacks: BTreeMap<u32, Stack>,
    /// Every module by id.
    pub modules: BTreeMap<u32, Module>,
    /// Latest counters by (stack, kind).
    pub totals: BTreeMap<(u32, AllocKind), StackTotals>,
    /// The latest memory map.
    pub maps: Vec<MapEntry>,
    /// The latest memory figures of the target (None once it has exited).
    pub memory: Option<ProcMemory>,
    /// The latest loss counters.
    pub losses: Losses,
    /// Snapshots applied.
    pub snapshots: u32,
    /// Time of the latest snapshot (CLOCK_MONOTONIC ns).
    pub last_mono_ns: u64,
    /// The end record, if the recording ended cleanly.
    pub end: Option<End>,
    /// Bundled module bytes received, by module id.
    pub bundled_bytes: BTreeMap<u32, u64>,
    /// Kernel symbols received (kernel mode), by address.
    pub kernel_symbols: BTreeMap<u64, crate::KernelSymbol>,
    /// The kernel release the kernel symbols belong to.
    pub kernel_release: Option<String>,
    /// Sampling (`--sample-bytes`): when set, every counter is an estimate.
    pub sampling: Option<crate::Sampling>,
    /// Probes attached after the start, in file order.
    pub late_probes: Vec<crate::LateProbes>,
    /// Processes the target started (the last `Children` record), if it started any.
    pub children: Option<crate::Children>,
    /// Allocator events not recorded (the last `Unseen` record); zero if none.
    pub unseen: crate::Unseen,
    /// The process of a `--kernel --pid` recording, or the program a user-mode target runs
    /// after its last exec seen (the last `Process` record), if written.
    pub process: Option<crate::Process>,
}

impl RecordingState {
    /// Applies one record.
    pub fn apply(&mut self, record: Record) {
        match record {
            Record::Header(h) => self.header = Some(h),
            Record::Snapshot(s) => self.apply_snapshot(s),
            Record::Bundle(BundleChunk { module, data, .. }) => {
                *self.bundled_bytes.entry(module).or_default() += data.len() as u64;
            }
            Record::End(e) => self.end = Some(e),
            Record::Kernel(k) => {
                self.kernel_release = Some(k.release);
                for sym in k.symbols {
                    self.kernel_symbols.insert(sym.addr, sym);
                }
            }
            Record::Sampling(sampling) => self.sampling = Some(sampling),
            Record::Probes(late) => self.late_probes.push(late),
            Record::Children(children) => self.children = Some(children),
            Record::Unseen(unseen) => self.unseen = unseen,
            Record::Process(process) => self.process = Some(process),
        }
    }

    fn apply_snapshot(&mut self, s: Snapshot) {
        for m in s.new_modules {
            self.modules.insert(m.id, m);
        }
        for st in s.new_stacks {
            self.stacks.insert(st.id, st);
        }
        for t in s.stats {
            self.totals.insert((t.stack, t.kind), t);
        }
        if let Some(maps) = s.maps {
            self.maps = maps;
        }
        self.memory = s.memory;
        self.losses = s.losses;
        self.snapshots += 1;
        self.last_mono_ns = s.mono_ns;
    }

    /// Reads a whole recording. Returns the state of every complete record and, separately, the
    /// problem with the tail if there was one. Only a bad preamble or I/O error is an `Err`.
    pub fn read<R: Read>(reader: Reader<R>) -> Result<(Self, Option<Error>), Error> {
        let mut state = RecordingState::default();
        for item in reader {
            match item {
                Ok(record) => state.apply(record),
                Err(e @ Error::Tail { .. }) => return Ok((state, Some(e))),
                Err(e) => return Err(e),
            }
        }
        Ok((state, None))
    }

    /// Outstanding bytes over all stacks of `kind`.
    pub fn outstanding_bytes(&self, kind: AllocKind) -> u64 {
        self.totals
            .values()
            .filter(|t| t.kind == kind)
            .map(|t| t.outstanding_bytes())
            .sum()
    }
}
