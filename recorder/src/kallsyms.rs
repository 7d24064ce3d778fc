//! The running kernel's symbol table (`/proc/kallsyms`), and the few entries a recording must
//! carry to name its kernel frames offline: for each frame, the entry covering it and the one
//! after it (kallsyms has no sizes: the next entry bounds the covering one).
use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};
use leak_format::KernelSymbol;

/// The sorted kernel symbol table, one entry per address.
#[derive(Debug, Default)]
pub struct Kallsyms {
    entries: Vec<KernelSymbol>,
    /// Addresses of the entries already handed out by [`Kallsyms::take_covering`].
    sent: BTreeSet<u64>,
}

impl Kallsyms {
    /// Reads `/proc/kallsyms`. Fails when addresses are hidden (`kptr_restrict`, not root).
    pub fn load() -> Result<Self> {
        let text =
            std::fs::read_to_string("/proc/kallsyms").context("cannot read /proc/kallsyms")?;
        let k = Kallsyms::parse(&text);
        if k.entries.is_empty() {
            bail!(crate::UsageError(
                "/proc/kallsyms shows no kernel addresses (kptr_restrict hides them without \
                 CAP_SYSLOG), so kernel frames could not be named: run as root, or add \
                 cap_syslog to the capabilities"
                    .into()
            ));
        }
        Ok(k)
    }

    /// Re-reads `/proc/kallsyms` (after a kernel module was loaded), keeping track of what was
    /// handed out already.
    pub fn reload(&mut self) -> Result<()> {
        let sent = std::mem::take(&mut self.sent);
        *self = Kallsyms::load()?;
        self.sent = sent;
        Ok(())
    }

    /// Parses kallsyms text (`ADDR TYPE NAME [\tMODULE]` lines); zero addresses are dropped.
    pub fn parse(text: &str) -> Self {
        // (addr, rank, name, module): the lowest rank names an address shared by aliases.
        let mut all: Vec<(u64, u8, &str, Option<&str>)> = text
            .lines()
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                let addr = u64::from_str_radix(parts.next()?, 16).ok()?;
                let ty = parts.next()?.chars().next()?;
                let name = parts.next()?;
                let module = parts
                    .next()
                    .map(|m| m.trim_start_matches('[').trim_end_matches(']'));
                (addr != 0).then_some((addr, rank(ty, name), name, module))
            })
            .collect();
        all.sort_unstable_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
        all.dedup_by_key(|e| e.0);
        Kallsyms {
            entries: all
                .into_iter()
                .map(|(addr, _, name, module)| KernelSymbol {
                    addr,
                    name: name.to_string(),
                    module: module.map(str::to_string),
                })
                .collect(),
            sent: BTreeSet::new(),
        }
    }

    /// The name of the entry covering `addr`, if any.
    pub fn name_at(&self, addr: u64) -> Option<&str> {
        let i = self.entries.partition_point(|e| e.addr <= addr);
        i.checked_sub(1).map(|i| self.entries[i].name.as_str())
    }

    /// Drops the frames of the tracing machinery from the top of a kernel stack taken in a
    /// tracepoint program: the program itself, `bpf_trace_run<N>` and, when more than one
    /// program is attached to the tracepoint, `__traceiter_<event>`. The first frame kept is
    /// the allocator that fired the tracepoint.
    pub fn strip_tracing<'a>(&self, ips: &'a [u64]) -> &'a [u64] {
        let tracing = |ip: u64| {
            self.name_at(ip).is_some_and(|n| {
                ["bpf_trace_run", "__bpf_trace_", "__traceiter_"]
                    .iter()
                    .any(|p| n.starts_with(p))
            })
        };
        let last = ips.iter().take(6).rposition(|&ip| tracing(ip));
        match last {
            Some(i) => &ips[i + 1..],
            None => ips,
        }
    }

    /// The entries (covering and next) that `addrs` need and that were not handed out before,
    /// sorted by address.
    pub fn take_covering(&mut self, addrs: impl IntoIterator<Item = u64>) -> Vec<KernelSymbol> {
        let mut new = BTreeSet::new();
        for addr in addrs {
            let i = self.entries.partition_point(|e| e.addr <= addr);
            // Entry i - 1 covers addr (if any); entry i bounds it (if any).
            for j in [i.checked_sub(1), Some(i)].into_iter().flatten() {
                if j < self.entries.len() && self.sent.insert(self.entries[j].addr) {
                    new.insert(j);
                }
            }
        }
        new.into_iter().map(|i| self.entries[i].clone()).collect()
    }
}

/// Preference among symbols at one address: functions first, then names without the
/// compiler's `__pfx_` padding or a leading underscore.
fn rank(ty: char, name: &str) -> u8 {
    let function = matches!(ty, 't' | 'T' | 'w' | 'W');
    let plain = !name.starts_with('_');
    match (function, plain) {
        (true, true) => 0,
        (true, false) => 1,
        (false, true) => 2,
        (false, false) => 3,
    }
}

/// The address at which a kernel frame is looked up: every stored frame is a return address
/// (the tracing frames above the allocator are stripped, see [`Kallsyms::strip_tracing`]), whose
/// call is the byte before. The analyzer uses the same rule (analyzer/src/symbolize.rs).
pub fn lookup_addr(addr: u64) -> u64 {
    addr.saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracing_frames_are_stripped() {
        let k = Kallsyms::parse(
            "ffffffffc0001000 t bpf_prog_1234_kmalloc\t[bpf]\n\
             ffffffff814b8b00 T bpf_trace_run6\n\
             ffffffff814b8c00 T bpf_other\n\
             ffffffff815c5600 T __traceiter_kmalloc\n\
             ffffffff815c5700 T other\n\
             ffffffff81634f00 T __kmalloc_node_noprof\n",
        );
        let ips = [
            0xffffffffc0001010,
            0xffffffff814b8b6b,
            0xffffffff81634ff6,
            1,
        ];
        assert_eq!(k.strip_tracing(&ips), &ips[2..]);
        assert_eq!(k.strip_tracing(&ips[2..]), &ips[2..]);
        // With two programs on the tracepoint, its iterator is one more tracing frame.
        let two = [
            0xffffffffc0001010,
            0xffffffff814b8b6b,
            0xffffffff815c5668,
            0xffffffff81634ff6,
        ];
        assert_eq!(k.strip_tracing(&two), &two[3..]);
    }

    const TEXT: &str = "\
ffffffff81000000 T _stext
ffffffff81000000 T startup_64
ffffffff816bb380 T __pfx_alloc_empty_file
ffffffff816bb390 T alloc_empty_file
ffffffff816bb4a0 t alloc_file
0000000000000000 A fixed_percpu_data
ffffffffc0a01000 t ext4_fill_super\t[ext4]
";

    #[test]
    fn parses_sorts_and_prefers_plain_function_names() {
        let k = Kallsyms::parse(TEXT);
        let names: Vec<&str> = k.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "startup_64",
                "__pfx_alloc_empty_file",
                "alloc_empty_file",
                "alloc_file",
                "ext4_fill_super"
            ]
        );
        assert_eq!(k.entries[4].module.as_deref(), Some("ext4"));
        assert_eq!(k.entries[2].module, None);
    }

    #[test]
    fn covering_entries_come_with_their_bound_and_only_once() {
        let mut k = Kallsyms::parse(TEXT);
        let got = k.take_covering([0xffffffff816bb3bd]);
        let names: Vec<&str> = got.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["alloc_empty_file", "alloc_file"]);
        assert!(k.take_covering([0xffffffff816bb3c0]).is_empty());
        // Entries are remembered by address: a new table (after a module load) does not send
        // them again.
        let mut reloaded = Kallsyms::parse(TEXT);
        reloaded.sent = std::mem::take(&mut k.sent);
        assert!(reloaded.take_covering([0xffffffff816bb3bd]).is_empty());
        k.sent = reloaded.sent;
        // Beyond the last entry: only the last entry (nothing bounds it).
        let last = k.take_covering([0xffffffffc0a01010]);
        assert_eq!(last.len(), 1);
        assert_eq!(lookup_addr(10), 9);
    }
}
