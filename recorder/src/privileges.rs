//! Checks, before anything is created, that the recorder holds the privileges it needs, and
//! turns the kernel's "permission denied" into one line that names them (docs/security.md).
use std::fs;

use crate::UsageError;

const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// What to grant, in the words of setcap(8).
pub const NEEDED: &str = "run it as root, or grant cap_sys_admin,cap_bpf,cap_perfmon \
                          (and cap_sys_ptrace to trace another user's process), e.g. \
                          setcap cap_sys_admin,cap_bpf,cap_perfmon,cap_sys_ptrace+ep leak-record; \
                          see docs/security.md";

/// The recorder's own effective capability set (None if /proc/self/status cannot tell).
fn own_effective() -> Option<u64> {
    effective(&fs::read_to_string("/proc/self/status").ok()?)
}

/// A process's effective capability set, from `CapEff:` in /proc/PID/status.
fn effective(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

fn has(caps: u64, cap: u32) -> bool {
    caps & (1 << cap) != 0
}

/// The real user id owning `/proc/PID` (the `Uid:` line's first field).
fn uid_of(status: &str) -> Option<u32> {
    let ids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    ids.split_whitespace().next()?.parse().ok()
}

/// Refuses early, in one line, when the capabilities to load BPF and attach uprobes are
/// missing, or when `pid` belongs to another user and CAP_SYS_PTRACE is missing.
pub fn check(pid: Option<u32>) -> Result<(), UsageError> {
    let Some(caps) = own_effective() else {
        return Ok(()); // cannot tell: let the kernel decide
    };
    let bpf = has(caps, CAP_SYS_ADMIN) || (has(caps, CAP_BPF) && has(caps, CAP_PERFMON));
    if !bpf {
        return Err(UsageError(format!(
            "not allowed to load BPF programs and attach uprobes: {NEEDED}"
        )));
    }
    if let Some(pid) = pid {
        let own = fs::read_to_string("/proc/self/status").ok();
        let theirs = fs::read_to_string(format!("/proc/{pid}/status")).ok();
        let (me, them) = (
            own.as_deref().and_then(uid_of),
            theirs.as_deref().and_then(uid_of),
        );
        if let (Some(me), Some(them)) = (me, them) {
            if me != them && !has(caps, CAP_SYS_PTRACE) {
                return Err(UsageError(format!(
                    "PID {pid} belongs to user {them}: reading its memory map and probing it \
                     needs CAP_SYS_PTRACE; {NEEDED}"
                )));
            }
        }
    }
    Ok(())
}

/// What to do about a "permission denied" on another process: the capabilities to grant, or,
/// when leak-record holds them all already, why granting more will not help.
pub fn fix_for_denied() -> String {
    fix_for_denied_with(own_effective())
}

fn fix_for_denied_with(caps: Option<u64>) -> String {
    let all = [CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_BPF, CAP_PERFMON];
    if caps.is_some_and(|c| all.iter().all(|&cap| has(c, cap))) {
        "leak-record already has every capability it needs, so the kernel protects this \
         process: it may belong to another PID or user namespace (a container's), or a \
         security module (Yama ptrace_scope 3, SELinux, AppArmor) forbids it; run leak-record \
         inside the process's container, or record another process"
            .into()
    } else {
        NEEDED.into()
    }
}

/// True when an error chain is the kernel refusing for lack of privileges (EACCES, EPERM).
pub fn is_permission_denied(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
            || c.downcast_ref::<libbpf_rs::Error>()
                .is_some_and(|b| b.kind() == libbpf_rs::ErrorKind::PermissionDenied)
            // bpf.rs formats libbpf errors with {:?} to keep the errno: only the text is left.
            || {
                let text = c.to_string();
                text.contains("(os error 13)") || text.contains("(os error 1)")
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_denial_with_every_capability_does_not_advise_root() {
        // Root's full set (CapEff 000001ffffffffff): the kernel protects the process.
        assert!(fix_for_denied_with(Some(0x1ff_ffff_ffff)).starts_with("leak-record already has"));
        // CAP_BPF and CAP_PERFMON only (setcap without ptrace): grant the rest.
        assert_eq!(fix_for_denied_with(Some(0xc0_0000_0000)), NEEDED);
        assert_eq!(fix_for_denied_with(None), NEEDED);
    }

    #[test]
    fn capability_sets_and_uids_are_read_from_proc_status() {
        let status = "Name:\tx\nUid:\t1000\t1000\t1000\t1000\nCapEff:\t000000c000000000\n";
        let caps = effective(status).unwrap();
        assert!(has(caps, CAP_BPF) && has(caps, CAP_PERFMON));
        assert!(!has(caps, CAP_SYS_ADMIN) && !has(caps, CAP_SYS_PTRACE));
        assert_eq!(uid_of(status), Some(1000));
        assert_eq!(effective("Name:\tx\n"), None);
    }
}
