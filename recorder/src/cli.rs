//! Command line of leak-record (clap derive); `///` comments are the help text.
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

const EXAMPLES: &str = "\
EXAMPLES:
    # Attach to a running service for 10 minutes, snapshot every 5 s (the default)
    sudo leak-record -p $(pidof svc) -d 10m -o svc.zst

    # Start a command under the recorder; it is held until every probe is attached
    sudo leak-record -o test.zst -- ./my-test --iterations 1000

    # Embed the binaries' symbols so the recording can be analyzed on another machine
    sudo leak-record -p 4242 --bundle-symbols -o run.zst

    # Probe a statically linked allocator with prefixed names
    sudo leak-record -p 4242 --obj /opt/svc/bin/svc --symbol-prefix je_

    # Allocation-heavy service: record one allocation per 64 KiB on average (estimates)
    sudo leak-record -p $(pidof svc) --sample-bytes 64K -o svc.zst

    # Kernel allocations made by one process (slab objects and pages, kernel stacks)
    sudo leak-record --kernel --pid $(pidof svc) -d 10m -o kernel.zst

    # Then, anywhere (no root): leak-report run.zst

EXIT STATUS:
    0 recording complete, 1 runtime failure (e.g. BPF unavailable, disk full; what was
    recorded is kept), 2 bad usage or input (no such process, command not found, output exists).
    A started command that exits by itself: the recording is complete, and the status is the
    command's own (128 + N if signal N killed it), as strace and valgrind pass it on.";

/// Record outstanding allocations per call stack of a live process, with eBPF.
///
/// Attaches uprobes to the allocator that really serves the target (glibc, musl, jemalloc,
/// tcmalloc, mimalloc, a static binary's own) and appends a snapshot of outstanding bytes and counts per
/// call stack to a crash-safe, compressed recording every interval. Needs root, or CAP_SYS_ADMIN,
/// CAP_BPF and CAP_PERFMON (plus CAP_SYS_PTRACE for another user's process, CAP_SYSLOG for
/// --kernel; docs/security.md).
#[derive(Debug, Parser)]
#[command(name = "leak-record", version, after_help = EXAMPLES)]
pub struct Cli {
    /// Attach to this running process (all its threads). With --kernel: keep only kernel
    /// allocations made in its context.
    #[arg(short, long, value_name = "PID", conflicts_with = "command")]
    pub pid: Option<u32>,

    /// Trace kernel allocations (kmalloc, kmem_cache_alloc, page allocator) with kernel stacks,
    /// through the kmem tracepoints, instead of a process's allocator.
    // A command beside it is refused by `record::run`, with the way to do it.
    #[arg(long, conflicts_with_all = ["obj", "symbol_prefix", "mmap", "bundle_symbols"])]
    pub kernel: bool,

    /// With --kernel: keep only allocations made by tasks with this command name (comm, at
    /// most 15 bytes).
    #[arg(long, value_name = "NAME")]
    pub comm: Option<String>,

    /// With --kernel: keep only objects of this slab cache (kmem_cache_alloc, e.g. filp,
    /// dentry, sock_inode_cache; see /proc/slabinfo). kmalloc caches, pages and per-CPU memory
    /// are not traced (so not with --percpu).
    #[arg(long, value_name = "NAME", conflicts_with = "percpu")]
    pub cache: Option<String>,

    /// With --kernel: also trace per-CPU allocations (percpu_alloc_percpu).
    #[arg(long)]
    pub percpu: bool,

    /// With --kernel: do not trace the page allocator (mm_page_alloc/mm_page_free).
    #[arg(long)]
    pub no_pages: bool,

    /// With --kernel: an allocation at a still-tracked address retires the old one as a missed
    /// free (memleak's option). Always done, and counted, by leak-record; accepted for
    /// compatibility.
    #[arg(long)]
    pub wa_missing_free: bool,

    /// Output file [default: leak-record-<UTC date>-<time>[-N].zst]; `-` streams the recording to
    /// standard output (not a terminal), e.g. `ssh HOST 'sudo leak-record -p PID -d 10m -o -' >
    /// run.zst`; a command's own standard output then goes to standard error.
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,

    /// Overwrite the output file if it exists.
    #[arg(long)]
    pub force: bool,

    /// Time between snapshots (e.g. 500ms, 5s, 1m; at least 100ms).
    #[arg(short, long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Stop after this long (e.g. 30s, 10m, 2h) [default: until the target exits or a signal].
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Capacity of the live-allocation table (e.g. 1M); more live blocks are counted as dropped.
    /// At most 128M; refused when the tables would take more than half of the available memory
    /// (about 100 bytes of kernel memory per entry).
    #[arg(long, value_name = "N", default_value = "1M", value_parser = parse_count)]
    pub max_allocs: u64,

    /// Capacity of the stack table (e.g. 16K); more distinct stacks are counted as dropped.
    /// At most 128M, each about 660 bytes of kernel memory; the same limit of memory applies.
    #[arg(long, value_name = "N", default_value = "16K", value_parser = parse_count)]
    pub max_stacks: u64,

    /// Ignore allocations smaller than this (e.g. 64, 4K).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub min_size: Option<u64>,

    /// Ignore allocations larger than this (e.g. 1M).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_size: Option<u64>,

    /// Probe the allocator in this file only, instead of discovering it.
    #[arg(long, value_name = "PATH")]
    pub obj: Option<PathBuf>,

    /// Allocator functions carry this prefix (e.g. je_ for jemalloc built with a prefix).
    #[arg(long, value_name = "PREFIX")]
    pub symbol_prefix: Option<String>,

    /// Record only a sample of allocations, one per SIZE bytes allocated on average (e.g. 64K),
    /// as tcmalloc and jemalloc do; figures are scaled back up to unbiased estimates.
    /// Unsampled allocations skip the stack walk and the table insert, and on Linux >= 6.13 an
    /// unsampled malloc its return trap, but every malloc and free still traps into the kernel
    /// at its entry (docs/guide.md, "Sampling"). With --kernel no trap is involved, and the
    /// walk it skips is most of the cost.
    #[arg(long, value_name = "SIZE", value_parser = parse_sample_bytes)]
    pub sample_bytes: Option<u64>,

    /// Also account anonymous mmap/munmap made outside the allocator, separately.
    #[arg(long)]
    pub mmap: bool,

    /// Embed the referenced binaries (or their symbol tables above --bundle-max) in the recording.
    #[arg(long)]
    pub bundle_symbols: bool,

    /// Largest file embedded whole by --bundle-symbols; larger ones get a symbol table.
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_size)]
    pub bundle_max: u64,

    /// No status line per snapshot, no informational messages and no closing summary (warnings
    /// about lost data and errors are still printed).
    #[arg(short, long)]
    pub quiet: bool,

    /// The command to start and trace (after `--`), searched in PATH.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

impl Cli {
    /// The first kernel-mode option given without --kernel: refused by `record::run` in one
    /// line (clap's `requires` would print its usage, and is not enforced beside a trailing
    /// command).
    pub fn kernel_option_without_kernel(&self) -> Option<&'static str> {
        if self.kernel {
            return None;
        }
        [
            ("--comm", self.comm.is_some()),
            ("--cache", self.cache.is_some()),
            ("--percpu", self.percpu),
            ("--no-pages", self.no_pages),
            ("--wa-missing-free", self.wa_missing_free),
        ]
        .into_iter()
        .find_map(|(flag, given)| given.then_some(flag))
    }
}

/// Longest duration accepted (about 31 years): anything longer is a typo, and far beyond it
/// a `Duration` or a deadline computed from it would overflow.
const DURATION_MAX_SECS: f64 = 1e9;

/// Parses `500ms`, `5s`, `10m`, `2h`, `1d`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration; use e.g. 500ms, 30s, 10m, 2h"))?;
    let scale = match unit.trim() {
        "ms" => 1e-3,
        "" | "s" | "sec" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        other => {
            return Err(format!(
                "unknown duration unit '{other}' in '{s}'; use ms, s, m, h or d"
            ))
        }
    };
    let secs = value * scale;
    if secs <= 0.0 {
        return Err(format!("duration '{s}' must be positive"));
    }
    if !secs.is_finite() || secs > DURATION_MAX_SECS {
        return Err(format!(
            "duration '{s}' is too large; give at most {DURATION_MAX_SECS}s (about 31 years)"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses `4096`, `16K`, `16KiB`, `1M`, `2G` (binary units); a bare number is bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    leak_format::units::parse_size(s)
}

/// Largest `--sample-bytes` (bpf/leak.h, SAMPLE_BYTES_MAX_SHIFT).
pub const SAMPLE_BYTES_MAX: u64 = 1 << 32;

/// A sampling period: a size from 1 byte to 4 GiB.
pub fn parse_sample_bytes(s: &str) -> Result<u64, String> {
    match parse_size(s) {
        Ok(0) => Err(format!("'{s}' must be at least 1 byte")),
        Ok(n) if n > SAMPLE_BYTES_MAX => Err(format!("'{s}' is too large (at most 4G)")),
        other => other,
    }
}

/// Most entries of a BPF hash table (`--max-allocs`, `--max-stacks`): the kernel refuses more
/// with E2BIG, as its buckets (16 bytes each, one per entry rounded up to a power of two) must
/// stay below 4 GiB (kernel/bpf/hashtab.c, `htab_map_alloc`).
pub const TABLE_ENTRIES_MAX: u64 = 1 << 27;

/// A count with the same suffixes as sizes (`16K` = 16384), from 1 to [`TABLE_ENTRIES_MAX`].
pub fn parse_count(s: &str) -> Result<u64, String> {
    match parse_size(s) {
        Ok(0) => Err(format!("'{s}' must be at least 1")),
        Ok(n) if n > TABLE_ENTRIES_MAX => Err(format!(
            "'{s}' is too large: at most {} ({TABLE_ENTRIES_MAX}), the most entries the kernel \
             accepts in a BPF hash table",
            human_count(TABLE_ENTRIES_MAX)
        )),
        other => other,
    }
}

/// A count as it would be given on the command line: `16K`, `8M`, `1G` for exact multiples,
/// else the number.
pub fn human_count(n: u64) -> String {
    [(30, "G"), (20, "M"), (10, "K")]
        .into_iter()
        .find(|&(shift, _)| n != 0 && n.is_multiple_of(1 << shift))
        .map_or_else(
            || n.to_string(),
            |(shift, unit)| format!("{}{unit}", n >> shift),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5x")
            .unwrap_err()
            .contains("unknown duration unit"));
        assert!(parse_duration("abc").is_err());
        // Too large is said as such, not as "must be positive".
        for huge in ["1000000h", "99999999999999999999s", "1000000000.5"] {
            let e = parse_duration(huge).unwrap_err();
            assert!(e.contains("is too large; give at most"), "{huge}: {e}");
        }
        assert_eq!(
            parse_duration("1000000000"),
            Ok(Duration::from_secs(1_000_000_000))
        );
    }

    #[test]
    fn sizes_and_counts() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("16K"), Ok(16384));
        assert_eq!(parse_size("16KiB"), Ok(16384));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert!(parse_size("1Q").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert_eq!(parse_count("16K"), Ok(16384));
        assert!(parse_count("0").is_err());
        assert_eq!(parse_count("128M"), Ok(TABLE_ENTRIES_MAX));
        for huge in ["4G", "129M", "134217729"] {
            let e = parse_count(huge).unwrap_err();
            assert!(e.contains("at most 128M (134217728)"), "{huge}: {e}");
        }
        assert_eq!(human_count(16384), "16K");
        assert_eq!(human_count(3 << 20), "3M");
        assert_eq!(human_count(1 << 30), "1G");
        assert_eq!(human_count(1000), "1000");
        assert_eq!(human_count(0), "0");
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["leak-record", "-p", "1"]).unwrap();
        assert_eq!(cli.interval, Duration::from_secs(5));
        assert_eq!(cli.duration, None);
        assert_eq!(cli.max_allocs, 1 << 20);
        assert_eq!(cli.max_stacks, 16384);
        assert_eq!(cli.bundle_max, 64 << 20);
        assert_eq!((cli.min_size, cli.max_size), (None, None));
        assert!(!cli.mmap && !cli.quiet && !cli.force && !cli.bundle_symbols);
        assert!(!cli.kernel && !cli.percpu && !cli.no_pages && cli.comm.is_none());
        assert!(cli.cache.is_none());
        assert_eq!(cli.sample_bytes, None);
    }

    #[test]
    fn sample_bytes_are_a_positive_size() {
        assert_eq!(parse_sample_bytes("64K"), Ok(65536));
        assert_eq!(parse_sample_bytes("1"), Ok(1));
        assert_eq!(parse_sample_bytes("4G"), Ok(1 << 32));
        assert!(parse_sample_bytes("0").is_err());
        assert!(parse_sample_bytes("5G").is_err());
        assert!(parse_sample_bytes("lots").is_err());
    }

    #[test]
    fn kernel_options_need_kernel_mode() {
        // Checked by hand (one line from record::run), with -p and beside a command alike.
        for flag in [
            "--comm=x",
            "--cache=filp",
            "--percpu",
            "--no-pages",
            "--wa-missing-free",
        ] {
            let name = flag.split('=').next().unwrap();
            for rest in [&["--", "prog"][..], &["-p", "1"]] {
                let cli = Cli::try_parse_from([&["leak-record", flag][..], rest].concat()).unwrap();
                assert_eq!(cli.kernel_option_without_kernel(), Some(name), "{flag}");
            }
        }
        let cli = Cli::try_parse_from(["leak-record", "--", "prog"]).unwrap();
        assert_eq!(cli.kernel_option_without_kernel(), None);
    }

    #[test]
    fn kernel_mode_options_parse_together_and_conflict_with_user_ones() {
        let cli =
            Cli::try_parse_from(["leak-record", "--kernel", "-p", "1", "--comm", "x"]).unwrap();
        assert!(cli.kernel && !cli.percpu && !cli.no_pages);
        assert_eq!(cli.pid, Some(1));
        assert_eq!(cli.kernel_option_without_kernel(), None);
        assert!(Cli::try_parse_from(["leak-record", "--kernel", "--mmap"]).is_err());
        assert!(
            Cli::try_parse_from(["leak-record", "--kernel", "--cache", "x", "--percpu"]).is_err()
        );
    }

    #[test]
    fn command_arguments_pass_through() {
        let cli = Cli::try_parse_from(["leak-record", "-o", "x.zst", "--", "prog", "-p", "--flag"])
            .unwrap();
        assert_eq!(cli.command, ["prog", "-p", "--flag"]);
        assert_eq!(cli.pid, None);
        assert!(Cli::try_parse_from(["leak-record", "-p", "1", "--", "prog"]).is_err());
    }
}
