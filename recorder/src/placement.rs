//! Where an entry uprobe goes: on the function's first instruction, or on the first instruction
//! past it that x86 uprobes emulate, when moving there changes nothing the BPF program sees.
//!
//! A uprobe replaces an instruction with `int3`; after the handlers ran, the kernel must execute
//! the original instruction. Relative jmp/call/jcc, `nop` and `push reg` it emulates (arch/x86/
//! kernel/uprobes.c: `branch_setup_xol_ops`, `push_setup_xol_ops`); every other instruction is
//! copied to a slot and single-stepped, which costs about 10 µs per hit instead of under 1 µs.
//! Debian's `free` starts with `test %rdi,%rdi`, then `je`: a probe on the `je` sees the same
//! `%rdi` and is reached by every call. The move is made only when it provably changes nothing:
//! every skipped instruction falls through, writes no register the program reads (nor `%rsp`
//! when it reads the stack pointer), and no branch of the function lands inside the skipped range.
//!
//! A function with a return probe moves both probes together, to one trap. A uretprobe swaps
//! the return address at `*%rsp` when it fires, so it may sit past the entry only while that is
//! still the return address: no skipped instruction may move `%rsp` or write memory, and no
//! branch may land on the probe itself (a second hit later in the call would swap whatever
//! `*%rsp` then holds). jemalloc's `malloc` starts with `cmp $0x1000,%rdi; ja`: both probes go
//! on the `ja`.
use iced_x86::{
    Code, CpuidFeature, Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory,
    OpAccess, OpKind, Register,
};

/// How many instructions past the entry are looked at for an emulated one.
const MAX_SKIP: usize = 16;

/// What an entry program reads when it runs (bpf/leak.bpf.c).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reads {
    /// Argument registers.
    pub regs: &'static [Register],
    /// The stack pointer (the allocation programs compare it across calls to detect nesting,
    /// so it must be the entry's: a skipped `push` or `sub %rsp` would shift it).
    pub sp: bool,
    /// The function also has a return probe, placed with the entry probe: `*%rsp` must still
    /// be the return address at the probe, and the probe must be hit once per call.
    pub ret: bool,
}

/// Where the entry probe of one function goes, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Bytes from the function's first instruction to the probed one.
    pub offset: u64,
    /// Whether the kernel emulates the probed instruction (no single-step).
    pub emulated: bool,
    /// The probed instruction's mnemonic, e.g. `je`.
    pub at: String,
    /// Mnemonics of the instructions skipped (empty at the entry).
    pub skipped: Vec<String>,
    /// Why the probe stays at the entry although that instruction is single-stepped.
    pub why_entry: Option<String>,
}

impl Placement {
    /// The entry, single-stepped or not, for a reason.
    fn entry(first: &Instruction, body: &[u8], why: impl Into<String>) -> Self {
        Placement {
            offset: 0,
            emulated: kernel_emulates(first, body),
            at: mnemonic(first),
            skipped: Vec::new(),
            why_entry: Some(why.into()),
        }
    }

    /// The entry when the function's bytes could not be decoded at all.
    pub fn undecoded(why: impl Into<String>) -> Self {
        Placement {
            offset: 0,
            emulated: false,
            at: "?".into(),
            skipped: Vec::new(),
            why_entry: Some(why.into()),
        }
    }
}

fn mnemonic(insn: &Instruction) -> String {
    format!("{:?}", insn.mnemonic()).to_ascii_lowercase()
}

/// The bytes of `insn` within `body`, a function decoded from ip 0.
fn bytes_of<'a>(insn: &Instruction, body: &'a [u8]) -> &'a [u8] {
    let start = insn.ip() as usize;
    body.get(start..start + insn.len()).unwrap_or(&[])
}

/// Whether x86 uprobes emulate `insn` instead of single-stepping it. Kept to what every kernel
/// with uprobes emulates (plus `push reg`, emulated since Linux 4.x/5.x); newer kernels also
/// emulate multi-byte nops, which are simply skipped here (they write nothing).
pub fn kernel_emulates(insn: &Instruction, body: &[u8]) -> bool {
    let raw = bytes_of(insn, body);
    match raw {
        [0x90] | [0x50..=0x57] | [0x41, 0x50..=0x57] => return true,
        _ => {}
    }
    let relative = matches!(
        insn.code(),
        Code::Jmp_rel8_64 | Code::Jmp_rel32_64 | Code::Call_rel32_64
    ) || (insn.is_jcc_short_or_near() && insn.op0_kind() == OpKind::NearBranch64);
    // The kernel refuses branches with an operand-size prefix (Intel and AMD disagree on them),
    // and any instruction with a segment or lock prefix (`is_prefix_bad`): a probe there would
    // not attach.
    relative
        && !prefixes(raw)
            .iter()
            .any(|b| matches!(b, 0x66 | 0x26 | 0x2e | 0x36 | 0x3e | 0xf0))
}

/// The legacy and REX prefix bytes at the start of an instruction.
fn prefixes(raw: &[u8]) -> &[u8] {
    let n = raw
        .iter()
        .take_while(|b| {
            matches!(
                b,
                0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x66 | 0x67 | 0xf0 | 0xf2 | 0xf3
            ) || (0x40..=0x4f).contains(*b)
        })
        .count();
    &raw[..n]
}

/// Whether `insn` may write memory.
fn writes_memory(factory: &mut InstructionInfoFactory, insn: &Instruction) -> bool {
    factory.info(insn).used_memory().iter().any(|m| {
        matches!(
            m.access(),
            OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
        )
    })
}

/// Registers `insn` may write, as full 64-bit registers.
fn written(factory: &mut InstructionInfoFactory, insn: &Instruction) -> Vec<Register> {
    factory
        .info(insn)
        .used_registers()
        .iter()
        .filter(|u| {
            matches!(
                u.access(),
                OpAccess::Write
                    | OpAccess::CondWrite
                    | OpAccess::ReadWrite
                    | OpAccess::ReadCondWrite
            )
        })
        .map(|u| u.register().full_register())
        .collect()
}

/// Chooses the entry probe's place in `body`, the bytes of one x86-64 function (its whole
/// symbol size, so that every branch in it can be checked). `other_entries` are the offsets,
/// relative to the function, of other symbols (a jump from elsewhere could target them).
pub fn place(body: &[u8], reads: Reads, other_entries: &[u64]) -> Placement {
    let mut decoder = Decoder::with_ip(64, body, 0, DecoderOptions::NONE);
    let first = decoder.decode();
    if first.is_invalid() {
        return Placement::undecoded("its first instruction cannot be decoded");
    }
    if kernel_emulates(&first, body) {
        return Placement {
            offset: 0,
            emulated: true,
            at: mnemonic(&first),
            skipped: Vec::new(),
            why_entry: None,
        };
    }
    let mut factory = InstructionInfoFactory::new();
    let mut skipped = vec![first];
    let target = loop {
        let insn = skipped.last().copied().unwrap_or(first);
        let name = mnemonic(&insn);
        let at = insn.ip();
        if insn.flow_control() != FlowControl::Next {
            return Placement::entry(
                &first,
                body,
                format!("`{name}` at +{at:#x} may branch before an emulated instruction"),
            );
        }
        let writes = written(&mut factory, &insn);
        if let Some(r) = reads.regs.iter().find(|r| writes.contains(r)) {
            return Placement::entry(
                &first,
                body,
                format!("`{name}` at +{at:#x} overwrites {r:?}, which the probe reads"),
            );
        }
        if (reads.sp || reads.ret) && writes.contains(&Register::RSP) {
            return Placement::entry(
                &first,
                body,
                format!("`{name}` at +{at:#x} moves the stack pointer, which the probe reads"),
            );
        }
        if reads.ret && insn.cpuid_features().contains(&CpuidFeature::CET_SS) {
            return Placement::entry(
                &first,
                body,
                format!(
                    "`{name}` at +{at:#x} changes the shadow stack, whose top the return probe \
                     swaps too"
                ),
            );
        }
        if reads.ret && writes_memory(&mut factory, &insn) {
            return Placement::entry(
                &first,
                body,
                format!(
                    "`{name}` at +{at:#x} writes memory, maybe the return address the return \
                     probe swaps"
                ),
            );
        }
        if skipped.len() > MAX_SKIP || !decoder.can_decode() {
            return Placement::entry(
                &first,
                body,
                format!(
                    "no instruction the kernel emulates within the first {} bytes",
                    decoder.ip()
                ),
            );
        }
        let next = decoder.decode();
        if next.is_invalid() {
            return Placement::entry(
                &first,
                body,
                format!("the instruction at +{:#x} cannot be decoded", next.ip()),
            );
        }
        if kernel_emulates(&next, body) {
            break next;
        }
        skipped.push(next);
    };
    let to = target.ip();
    // Every path into the function must reach the probe, once per call: no branch (nor address
    // taken, e.g. a computed goto) may land between the entry and the probe, nor on the probe
    // (the programs would run twice in one call; a return probe would swap another word).
    let inside = |t: u64| t > 0 && t <= to;
    let mut sweep = Decoder::with_ip(64, body, 0, DecoderOptions::NONE);
    for insn in &mut sweep {
        if insn.is_invalid() {
            return Placement::entry(
                &first,
                body,
                format!(
                    "the function cannot be decoded at +{:#x}, so its branches cannot be checked",
                    insn.ip()
                ),
            );
        }
        let mut targets = Vec::new();
        if insn.op_count() > 0 && insn.op0_kind() == OpKind::NearBranch64 {
            targets.push(insn.near_branch_target());
        }
        if insn.is_ip_rel_memory_operand() {
            targets.push(insn.ip_rel_memory_address());
        }
        if let Some(t) = targets.into_iter().find(|&t| inside(t)) {
            return Placement::entry(
                &first,
                body,
                format!(
                    "`{}` at +{:#x} targets +{t:#x}, past the entry and not past the first \
                     emulated instruction (+{to:#x})",
                    mnemonic(&insn),
                    insn.ip()
                ),
            );
        }
    }
    if let Some(e) = other_entries.iter().find(|&&e| inside(e)) {
        return Placement::entry(
            &first,
            body,
            format!("another symbol starts at +{e:#x}, not past the first emulated instruction"),
        );
    }
    Placement {
        offset: to,
        emulated: true,
        at: mnemonic(&target),
        skipped: skipped.iter().map(mnemonic).collect(),
        why_entry: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FREE: Reads = Reads {
        regs: &[Register::RDI],
        sp: false,
        ret: false,
    };
    const MALLOC: Reads = Reads {
        regs: &[Register::RDI],
        sp: true,
        ret: false,
    };
    /// malloc with its return probe.
    const MALLOC_RET: Reads = Reads {
        regs: &[Register::RDI],
        sp: true,
        ret: true,
    };

    /// A function: `prologue`, then filler up to `size` bytes ending in `ret`.
    fn body(prologue: &[u8], size: usize) -> Vec<u8> {
        let mut b = prologue.to_vec();
        b.resize(size - 1, 0x90);
        b.push(0xc3);
        b
    }

    #[test]
    fn debian_free_moves_past_test_to_je() {
        // test %rdi,%rdi; je +0x20; push %rbp; ...
        let b = body(&[0x48, 0x85, 0xff, 0x0f, 0x84, 0x20, 0, 0, 0, 0x55], 64);
        let p = place(&b, FREE, &[]);
        assert_eq!(p.offset, 3, "{p:?}");
        assert!(p.emulated);
        assert_eq!(p.at, "je");
        assert_eq!(p.skipped, ["test"]);
        assert_eq!(p.why_entry, None);
    }

    #[test]
    fn an_emulated_first_instruction_stays_put() {
        // push %r12 (glibc malloc), push %rbx, jmp rel32.
        for prologue in [
            &[0x41, 0x54][..],
            &[0x53],
            &[0xe9, 0, 0, 0, 0],
            &[0x74, 0x02],
        ] {
            let p = place(&body(prologue, 32), MALLOC, &[]);
            assert_eq!((p.offset, p.emulated), (0, true), "{prologue:x?}: {p:?}");
        }
        // A 16-bit branch is not emulated: 66 e9 is refused by the kernel.
        let b = body(&[0x66, 0xe9, 0, 0, 0x53], 16);
        let p = place(&b, FREE, &[]);
        assert!(!kernel_emulates(
            &Decoder::with_ip(64, &b, 0, 0).decode(),
            &b
        ));
        assert_eq!(p.offset, 0, "{p:?}");
        // REX.W push (48 53) is not one the kernel handles either.
        let b = body(&[0x48, 0x53], 16);
        assert!(!kernel_emulates(
            &Decoder::with_ip(64, &b, 0, 0).decode(),
            &b
        ));
    }

    #[test]
    fn jemalloc_style_chain_moves_to_the_first_branch() {
        // mov %rdi,%rax; mov 0x10(%rip),%rdx; mov %rdi,%rcx; shr $0x1a,%rax; cmp %rcx,%rax; jne
        let prologue = [
            0x48, 0x89, 0xf8, 0x48, 0x8b, 0x15, 0x10, 0, 0, 0, 0x48, 0x89, 0xf9, 0x48, 0xc1, 0xe8,
            0x1a, 0x48, 0x39, 0xc8, 0x75, 0x05,
        ];
        let p = place(&body(&prologue, 64), FREE, &[]);
        assert_eq!(p.offset, 20, "{p:?}");
        assert_eq!(p.at, "jne");
        assert_eq!(p.skipped, ["mov", "mov", "mov", "shr", "cmp"]);
    }

    #[test]
    fn an_instruction_writing_an_argument_register_pins_the_entry() {
        // mov %rsi,%rdi; je: the program would read the wrong pointer past the mov.
        let p = place(&body(&[0x48, 0x89, 0xf7, 0x74, 0x02], 16), FREE, &[]);
        assert_eq!((p.offset, p.emulated), (0, false), "{p:?}");
        assert!(p.why_entry.unwrap().contains("RDI"));
        // A 32-bit write zero-extends: xor %edi,%edi clobbers %rdi too.
        let p = place(&body(&[0x31, 0xff, 0x74, 0x02], 16), FREE, &[]);
        assert_eq!(p.offset, 0, "{p:?}");
        // reallocarray in glibc: mov %rsi,%rax; mul %rdx (writes %rdx, its size argument).
        let reallocarray = Reads {
            regs: &[Register::RDI, Register::RSI, Register::RDX],
            sp: true,
            ret: true,
        };
        let b = body(&[0x48, 0x89, 0xf0, 0x48, 0xf7, 0xe2, 0x70, 0x05], 32);
        let p = place(&b, reallocarray, &[]);
        assert_eq!(p.offset, 0, "{p:?}");
        assert!(p.why_entry.unwrap().contains("RDX"), "mul writes rdx");
    }

    #[test]
    fn a_stack_pointer_change_pins_the_entry_only_when_sp_is_read() {
        // sub $0x18,%rsp; je
        let b = body(&[0x48, 0x83, 0xec, 0x18, 0x74, 0x02], 16);
        let p = place(&b, MALLOC, &[]);
        assert_eq!(p.offset, 0, "{p:?}");
        assert!(p.why_entry.unwrap().contains("stack pointer"));
        assert_eq!(place(&b, FREE, &[]).offset, 4);
    }

    #[test]
    fn a_branch_into_the_skipped_range_pins_the_entry() {
        // +0: test; +3: cmp; +7: je (emulated); ... a backward jmp to +3 at the end.
        let mut b = body(&[0x48, 0x85, 0xff, 0x48, 0x83, 0xff, 0x10, 0x74, 0x02], 32);
        // jmp rel8 at +28 to +3: 28 + 2 + rel = 3 -> rel = -27.
        b[28] = 0xeb;
        b[29] = (-27i8) as u8;
        let p = place(&b, FREE, &[]);
        assert_eq!(p.offset, 0, "{p:?}");
        assert!(p.why_entry.unwrap().contains("targets +0x3"));
        // A jump to the entry itself is fine (the probe at the entry would see it as well); one
        // onto the probe would run it twice in one call; one past the probe is fine.
        for (target, expect) in [(0i32, 7u64), (7, 0), (9, 7)] {
            b[29] = (target - 30) as i8 as u8;
            assert_eq!(place(&b, FREE, &[]).offset, expect, "jump to +{target}");
            assert_eq!(
                place(&b, MALLOC_RET, &[]).offset,
                expect,
                "jump to +{target}"
            );
        }
        // Another symbol starting inside the skipped range, or on the probe, may be jumped to
        // from elsewhere.
        assert_eq!(place(&b, FREE, &[3]).offset, 0);
        assert_eq!(place(&b, FREE, &[7]).offset, 0);
        assert_eq!(place(&b, FREE, &[0, 9, 100]).offset, 7);
    }

    #[test]
    fn no_emulated_instruction_in_reach_pins_the_entry() {
        // 20 x `mov %rax,%rcx`, none emulated, none branching.
        let chain: Vec<u8> = [0x48, 0x89, 0xc1].repeat(20);
        let p = place(&body(&chain, 128), FREE, &[]);
        assert_eq!((p.offset, p.emulated), (0, false), "{p:?}");
        assert!(p
            .why_entry
            .unwrap()
            .contains("no instruction the kernel emulates"));
        // A return or indirect jump before any emulated instruction ends the search.
        let p = place(
            &body(&[0x48, 0x85, 0xff, 0xff, 0xe0, 0x74, 0x02], 16),
            FREE,
            &[],
        );
        assert_eq!(p.offset, 0, "{p:?}");
        assert!(p.why_entry.unwrap().contains("branch"));
        // syscall (the munmap wrapper): not emulated, and it leaves the function's flow.
        let p = place(
            &body(&[0xb8, 0x0b, 0, 0, 0, 0x0f, 0x05, 0x74, 0x02], 16),
            FREE,
            &[],
        );
        assert_eq!(p.offset, 0, "{p:?}");
        // Garbage is not decoded into a placement.
        assert_eq!(place(&[0x0f, 0xff], FREE, &[]).offset, 0);
    }

    #[test]
    fn jemalloc_malloc_moves_both_probes_to_the_ja() {
        // jemalloc 5.3 malloc: cmp $0x1000,%rdi; ja +0x40; ... ret
        let b = body(&[0x48, 0x81, 0xff, 0x00, 0x10, 0, 0, 0x77, 0x40], 96);
        let p = place(&b, MALLOC_RET, &[]);
        assert_eq!(
            (p.offset, p.emulated, p.at.as_str()),
            (7, true, "ja"),
            "{p:?}"
        );
        assert_eq!(p.skipped, ["cmp"]);
        assert_eq!(p.why_entry, None);
    }

    #[test]
    fn a_return_probe_stays_where_the_return_address_may_have_moved() {
        // sub $8,%rsp; je: the entry program alone does not read sp here, but the return probe
        // would swap the wrong word.
        let no_sp = Reads {
            regs: &[Register::RDI],
            sp: false,
            ret: true,
        };
        let b = body(&[0x48, 0x83, 0xec, 0x08, 0x74, 0x02], 16);
        assert_eq!(place(&b, FREE, &[]).offset, 4);
        let p = place(&b, no_sp, &[]);
        assert_eq!((p.offset, p.emulated), (0, false), "{p:?}");
        assert!(p.why_entry.unwrap().contains("stack pointer"));
        // mov %rax,(%rsp); je: a memory write may be the return address itself.
        let b = body(&[0x48, 0x89, 0x04, 0x24, 0x74, 0x02], 16);
        assert_eq!(place(&b, FREE, &[]).offset, 4);
        let p = place(&b, MALLOC_RET, &[]);
        assert_eq!(p.offset, 0, "{p:?}");
        assert!(p.why_entry.unwrap().contains("writes memory"));
    }

    #[test]
    fn instructions_that_move_the_return_address_keep_a_return_probe_at_the_entry() {
        // Each, then `je`: moved past with an entry probe alone (FREE reads only %rdi and not
        // the stack pointer, so only an %rdi write or a branch stops it), kept at the entry
        // with a return probe. Guards against iced-x86 reporting fewer writes one day.
        let je = [0x74, 0x02];
        let cases: &[(&str, &[u8])] = &[
            ("enter $8,$0", &[0xc8, 0x08, 0x00, 0x00]),
            ("leave", &[0xc9]),
            ("pushf", &[0x9c]),
            ("push (%rax)", &[0xff, 0x30]),
            ("pop %rax", &[0x58]),
            ("mov %rax,%rsp", &[0x48, 0x89, 0xc4]),
            ("xchg %rax,(%rsp)", &[0x48, 0x87, 0x04, 0x24]),
            ("lock cmpxchg %rcx,(%rax)", &[0xf0, 0x48, 0x0f, 0xb1, 0x08]),
            ("xadd %rcx,(%rax)", &[0x48, 0x0f, 0xc1, 0x08]),
            ("fxsave (%rax)", &[0x0f, 0xae, 0x00]),
            ("sete (%rax)", &[0x0f, 0x94, 0x00]),
            ("mov %rdi,-8(%rsp)", &[0x48, 0x89, 0x7c, 0x24, 0xf8]),
            ("incsspq %rax", &[0xf3, 0x48, 0x0f, 0xae, 0xe8]),
        ];
        for (name, insn) in cases {
            let mut prologue = insn.to_vec();
            prologue.extend_from_slice(&je);
            let p = place(&body(&prologue, 32), MALLOC_RET, &[]);
            assert_eq!(p.offset, 0, "{name}: {p:?}");
            assert!(p.why_entry.is_some(), "{name}");
        }
        // endbr64 (CET indirect-branch tracking, not the shadow stack) writes nothing.
        let p = place(
            &body(&[0xf3, 0x0f, 0x1e, 0xfa, 0x74, 0x02], 32),
            MALLOC_RET,
            &[],
        );
        assert_eq!((p.offset, p.at.as_str()), (4, "je"), "{p:?}");
    }

    #[test]
    fn branches_with_a_prefix_the_kernel_refuses_are_not_probe_targets() {
        // test %rdi,%rdi; ds je: the kernel refuses segment and lock prefixes.
        for prefix in [0x26u8, 0x2e, 0x36, 0x3e, 0xf0, 0x66] {
            let b = body(&[0x48, 0x85, 0xff, prefix, 0x74, 0x02], 32);
            let p = place(&b, FREE, &[]);
            assert_eq!(p.offset, 0, "prefix {prefix:#x}: {p:?}");
        }
        // A branch-hint-free, unprefixed je is a target.
        assert_eq!(
            place(&body(&[0x48, 0x85, 0xff, 0x74, 0x02], 32), FREE, &[]).offset,
            3
        );
    }

    #[test]
    fn a_branch_onto_the_probe_pins_it_to_the_entry() {
        // cmp $0x1000,%rdi; ja; ... a backward jmp to +7 (the ja) at the end: the probes would
        // fire twice in one call, and the return probe would swap whatever *%rsp then holds.
        let mut b = body(&[0x48, 0x81, 0xff, 0x00, 0x10, 0, 0, 0x77, 0x40], 96);
        b[90] = 0xeb;
        b[91] = (7i32 - 92) as i8 as u8;
        assert_eq!(
            place(&b, MALLOC, &[]).offset,
            0,
            "nor may an entry probe alone"
        );
        let p = place(&b, MALLOC_RET, &[]);
        assert_eq!(p.offset, 0, "{p:?}");
        assert!(p.why_entry.unwrap().contains("targets +0x7"));
        // So does another symbol starting at the probe.
        let b = body(&[0x48, 0x81, 0xff, 0x00, 0x10, 0, 0, 0x77, 0x40], 96);
        assert_eq!(place(&b, MALLOC_RET, &[7]).offset, 0);
        assert_eq!(place(&b, MALLOC_RET, &[0, 96]).offset, 7);
    }
}
