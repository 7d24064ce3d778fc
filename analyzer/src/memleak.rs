//! Reads the periodic text output of bcc's `memleak.py` and libbpf-tools' `memleak` ("Top N
//! stacks with outstanding allocations"), both layouts, into the same series as a recording.
//! A stack missing from an interval's top N is unknown there, not zero.
use std::collections::BTreeMap;

use leak_format::{AllocKind, StackStats};

use crate::series::{Recording, Series, TimelinePoint};
use crate::symbolize::SymFrame;

/// Seconds between intervals when the log's timestamps cannot be read.
const FALLBACK_INTERVAL: f64 = 5.0;

/// Does this text look like a memleak log?
pub fn looks_like(text: &str) -> bool {
    text.lines()
        .take(10_000)
        .any(|l| l.contains("stacks with outstanding allocations"))
}

struct Interval {
    /// Byte offset of its `Top N stacks` line in the text.
    start: usize,
    clock: Option<f64>,
    stacks: Vec<(u64, u64, Vec<String>)>,
}

/// `[11:16:33]`, `[1:2:3]` (libbpf-tools does not pad) or `[2024-01-02 11:16:33]`: seconds of day.
fn parse_clock(line: &str) -> Option<f64> {
    let inner = line.strip_prefix('[')?.split(']').next()?;
    let time = inner.rsplit(' ').next()?;
    let mut parts = time.split(':').map(|p| p.trim().parse::<f64>().ok());
    let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
    Some(h * 3600.0 + m * 60.0 + s)
}

/// `80 bytes in 5 allocations from stack` (optionally `id(3)` after it, or a leading tab):
/// the bytes and the count. `None` for a line not shaped like one; an error for one shaped
/// like one that cannot be read (a count above 2^64 - 1, which memleak never prints): taken
/// for a frame, its frames would join the stack before it.
fn parse_header(line: &str) -> Option<Result<(u64, u64), String>> {
    let t = line.trim();
    let (bytes, rest) = t.split_once(" bytes in ")?;
    let (count, rest) = rest.split_once(" allocations from stack")?;
    let number = |s: &str, what: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|_| format!("the {what} is not a number below 2^64"))
    };
    let read = || {
        if !(rest.is_empty() || rest.trim_start().starts_with("id(")) {
            return Err(format!("`{rest}` follows \"from stack\""));
        }
        Ok((
            number(bytes, "byte count")?,
            number(count, "allocation count")?,
        ))
    };
    Some(read().map_err(|why| {
        format!("expected `N bytes in M allocations from stack`, found `{t}`: {why}")
    }))
}

/// A frame line without the parts that vary between runs: libbpf-tools' `3 [<0000…>] ` index
/// and address, bcc's optional `0x…\t` address.
fn frame_text(line: &str) -> String {
    let mut t = line.trim();
    if let Some(rest) = t.split_once(" [<").and_then(|(idx, rest)| {
        idx.trim().parse::<u32>().ok()?;
        rest.split_once(">]").map(|(_, r)| r)
    }) {
        t = rest.trim();
    }
    if let Some(rest) = t.strip_prefix("0x") {
        if let Some((addr, sym)) = rest.split_once(|c: char| c.is_whitespace()) {
            if addr.chars().all(|c| c.is_ascii_hexdigit()) {
                t = sym.trim();
            }
        }
    }
    t.to_string()
}

/// `func+0x1d [module]`, `func+0x1d /src/file.c:12`, `func+0x1d`, `[unknown]`, `<null sym>`.
/// Read from the right: demangled C++ names hold spaces (`operator new(unsigned long)`,
/// `std::vector<int, std::allocator<int> >::push_back(int const&)`), modules and paths as
/// printed by bcc and libbpf-tools do not. A name may start with `<` (Rust trait impls:
/// `<alloc::vec::Vec<T> as core::clone::Clone>::clone+0x1d`); only a placeholder bracketed
/// whole (`[unknown]`, `<null sym>`) names no function.
fn to_frame(text: &str) -> SymFrame {
    let mut sym = text;
    let (mut module, mut file, mut line) = (String::new(), None, None);
    if let Some((head, m)) = text
        .strip_suffix(']')
        .and_then(|t| t.rsplit_once(" ["))
        .filter(|(_, m)| {
            // bcc prints pseudo-modules bracketed: `[[vdso]]`.
            let inner = m
                .strip_prefix('[')
                .and_then(|m| m.strip_suffix(']'))
                .unwrap_or(m);
            !inner.is_empty() && !inner.contains(['[', ']'])
        })
    {
        (sym, module) = (head.trim_end(), m.to_string());
    } else if let Some((head, path, l)) = source_form(text) {
        (sym, file, line) = (head, Some(path.to_string()), Some(l));
    }
    let unknown = sym.starts_with('[') || (sym.starts_with('<') && sym.ends_with('>'));
    let (function, offset) = match offset_of(sym) {
        _ if unknown => (None, 0),
        Some((f, off)) => (Some(f.to_string()), off),
        None => (Some(sym.to_string()), 0),
    };
    if unknown && module.is_empty() && file.is_none() {
        module = text.to_string();
    }
    SymFrame {
        function,
        file,
        line,
        module,
        offset,
        inlined: false,
    }
}

/// libbpf-tools' `name+0x1d /path/file.c:12` split into `name+0x1d`, the path and the line
/// (names and paths may hold spaces: the split is after the offset).
fn source_form(text: &str) -> Option<(&str, &str, u32)> {
    text.rmatch_indices("+0x").find_map(|(i, _)| {
        let (hex, src) = text[i + 3..].split_once(' ')?;
        u64::from_str_radix(hex, 16).ok()?;
        let (path, line) = src.trim().rsplit_once(':')?;
        Some((&text[..i + 3 + hex.len()], path, line.parse().ok()?)).filter(|_| !path.is_empty())
    })
}

/// `name+0x1d` split into the name and the offset.
fn offset_of(sym: &str) -> Option<(&str, u64)> {
    let (f, off) = sym.rsplit_once("+0x")?;
    Some((f, u64::from_str_radix(off, 16).ok()?))
}

/// Seconds of the day: a clock read further back than this from the one before wrapped at
/// midnight (forward is the shorter way round the dial); a smaller step back is out of order.
const HALF_DAY: f64 = 43_200.0;

/// Each interval's time, from its bracketed clock: a clock more than 12 h behind the one
/// before is the next day (`[23:59:58]` then `[0:0:3]`), one less behind (`[10:00:05]` then
/// `[09:00:05]`: an edited or spliced log, a clock set back) is counted in `out_of_order` and
/// placed one interval (the last step forward, else 5 s) after the one before. Without a
/// clock for every interval, one interval per 5 s.
fn interval_times(intervals: &[Interval], out_of_order: &mut u64) -> Vec<f64> {
    let mut times = Vec::with_capacity(intervals.len());
    let all_clocks = intervals.iter().all(|i| i.clock.is_some());
    let mut day = 0.0;
    let mut step = FALLBACK_INTERVAL;
    let mut prev: Option<f64> = None;
    for (i, iv) in intervals.iter().enumerate() {
        let t = match (all_clocks, iv.clock, prev) {
            (true, Some(c), Some(p)) => {
                if c + day < p - HALF_DAY {
                    day += 86400.0;
                }
                let t = c + day;
                if t < p {
                    *out_of_order += 1;
                    p + step
                } else {
                    if t > p {
                        step = t - p;
                    }
                    t
                }
            }
            (true, Some(c), None) => c,
            _ => i as f64 * FALLBACK_INTERVAL,
        };
        prev = Some(t);
        times.push(t);
    }
    times
}

/// Where a log ends in the middle of a line, said of a log (a recording's `tail` says
/// "recording is truncated").
pub fn cut_at(offset: u64) -> String {
    format!("the memleak log is cut at byte {offset}, in the middle of a line")
}

/// Parses a whole log into a recording (frames already symbolized). A log cut in the middle
/// of a line (copied while memleak wrote it, a full disk) loses its last interval, which is
/// incomplete: the recording's `tail` says where, as for a truncated recording.
pub fn parse(text: &str, cap: usize) -> Result<Recording, String> {
    // memleak ends every line it prints: text after the last newline is a cut line.
    let complete = text.rfind('\n').map_or(0, |i| i + 1);
    let (text, cut) = (&text[..complete], &text[complete..]);
    let mut intervals: Vec<Interval> = Vec::new();
    let mut current: Option<(u64, u64, Vec<String>)> = None;
    let flush = |intervals: &mut Vec<Interval>, current: &mut Option<(u64, u64, Vec<String>)>| {
        if let (Some(iv), Some(stack)) = (intervals.last_mut(), current.take()) {
            iv.stacks.push(stack);
        }
    };
    let mut start = 0;
    for (n, raw) in text.split_inclusive('\n').enumerate() {
        let line = raw.trim_end_matches(['\n', '\r']);
        let line_start = start;
        start += raw.len();
        if line.contains("stacks with outstanding allocations") {
            flush(&mut intervals, &mut current);
            intervals.push(Interval {
                start: line_start,
                clock: parse_clock(line.trim()),
                stacks: Vec::new(),
            });
        } else if let Some(header) = parse_header(line) {
            let (bytes, count) = header.map_err(|e| format!("line {}: {e}", n + 1))?;
            flush(&mut intervals, &mut current);
            current = Some((bytes, count, Vec::new()));
        } else if let Some((_, _, frames)) = current.as_mut() {
            let is_frame = line.starts_with('\t') || line.starts_with("  ");
            if is_frame && !line.trim().is_empty() && !line.trim_start().starts_with("addr = ") {
                frames.push(frame_text(line));
            } else if !is_frame {
                flush(&mut intervals, &mut current);
            }
        }
    }
    flush(&mut intervals, &mut current);
    let mut tail = None;
    if !cut.is_empty() {
        // The last interval is incomplete, unless the cut line was the next one's
        // `[clock] Top N stacks` line (stack and frame lines start with a count or a tab).
        let offset = match intervals.last() {
            Some(last) if !cut.starts_with('[') => {
                let start = last.start;
                intervals.pop();
                start
            }
            _ => complete,
        };
        let truncated = leak_format::Error::Tail {
            offset: offset as u64,
            problem: leak_format::TailProblem::Truncated,
        };
        if intervals.is_empty() {
            return Err(format!(
                "nothing to analyze: {}, before the end of its first interval",
                cut_at(offset as u64)
            ));
        }
        tail = Some(truncated);
    }
    if intervals.is_empty() {
        return Err("no \"Top N stacks with outstanding allocations\" interval found".into());
    }
    let mut rec = Recording {
        memleak_log: true,
        tail,
        ..Recording::default()
    };
    let times = interval_times(&intervals, &mut rec.order.out_of_order);
    let t0 = times[0];
    let mut ids: BTreeMap<Vec<String>, u32> = BTreeMap::new();
    let mut first_seen: BTreeMap<u32, usize> = BTreeMap::new();
    for (i, iv) in intervals.iter().enumerate() {
        let mut listed: BTreeMap<u32, StackStats> = BTreeMap::new();
        for (bytes, count, frames) in &iv.stacks {
            let next = 16 + ids.len() as u32;
            let id = *ids.entry(frames.clone()).or_insert(next);
            first_seen.entry(id).or_insert(i);
            let st = listed.entry(id).or_insert(StackStats {
                stack: id,
                kind: AllocKind::Heap,
                ..StackStats::default()
            });
            // The same stack printed twice in one interval (a log of several processes): sum,
            // saturating (counts near 2^64 are damage, not memory, but must not wrap to small).
            st.alloc_bytes = st.alloc_bytes.saturating_add(*bytes);
            st.alloc_count = st.alloc_count.saturating_add(*count);
        }
        let t = times[i] - t0;
        for (&id, &first) in &first_seen {
            if first > i {
                continue;
            }
            // Not `or_default()`, which clippy suggests: `Series::new` is not the default (it
            // starts one snapshot per sample, strictly increasing).
            #[allow(clippy::unwrap_or_default)]
            rec.series
                .entry((id, AllocKind::Heap))
                .or_insert_with(Series::new)
                .push(t, listed.get(&id), cap);
        }
        rec.timeline.push(TimelinePoint {
            t,
            outstanding: listed
                .values()
                .fold(0, |sum: u64, s| sum.saturating_add(s.alloc_bytes)),
            memory: None,
            unknown_free: 0,
        });
        rec.duration = t;
    }
    rec.snapshots = intervals.len() as u32;
    for (frames, id) in ids {
        rec.presymbolized
            .insert(id, frames.iter().map(|f| to_frame(f)).collect());
    }
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BCC: &str = "Attaching to pid 5193, Ctrl+C to quit.\n\
[11:16:33] Top 2 stacks with outstanding allocations:\n\
\t80 bytes in 5 allocations from stack\n\
\t\t0x0000559b4b6e31a9\tmain+0x6d [a.out]\n\
\t\t__libc_start_main+0xf0 [libc-2.23.so]\n\
\t400 bytes in 4 allocations from stack\n\
\t\tleak_here+0x1d [a.out]\n\
\t\tmain+0x5d [a.out]\n\
[11:16:38] Top 1 stacks with outstanding allocations:\n\
\t800 bytes in 8 allocations from stack\n\
\t\tleak_here+0x1d [a.out]\n\
\t\tmain+0x5d [a.out]\n";

    const LIBBPF: &str = "[23:59:58] Top 2 stacks with outstanding allocations:\n\
400 bytes in 4 allocations from stack\n\
\t0 [<0000559b4b6e31a9>] leak_here+0x1d [a.out]\n\
\t1 [<0000559b4b6e3111>] main+0x5d [a.out]\n\
80 bytes in 5 allocations from stack\n\
\t0 [<000055aaaaaaaaaa>] main+0x6d /src/a.c:12\n\
[0:0:3] Top 1 stacks with outstanding allocations:\n\
800 bytes in 8 allocations from stack\n\
\t0 [<0000559b4b6e31a9>] leak_here+0x1d [a.out]\n\
\t1 [<0000559b4b6e3111>] main+0x5d [a.out]\n";

    fn values(rec: &Recording, id: u32) -> Vec<Option<f64>> {
        rec.series[&(id, AllocKind::Heap)]
            .points()
            .iter()
            .map(|p| p.bytes)
            .collect()
    }

    #[test]
    fn bcc_layout() {
        let rec = parse(BCC, 64).unwrap();
        assert_eq!(rec.snapshots, 2);
        assert!((rec.duration - 5.0).abs() < 1e-9);
        // Ids follow first appearance: main-only stack 16, leak_here stack 17.
        assert_eq!(
            values(&rec, 16),
            [Some(80.0), None],
            "missing from the top N = unknown"
        );
        assert_eq!(values(&rec, 17), [Some(400.0), Some(800.0)]);
        let f = &rec.presymbolized[&17][0];
        assert_eq!(
            (f.function.as_deref(), f.module.as_str(), f.offset),
            (Some("leak_here"), "a.out", 0x1d)
        );
        let f = &rec.presymbolized[&16][0];
        assert_eq!(
            f.function.as_deref(),
            Some("main"),
            "the address prefix is dropped"
        );
    }

    #[test]
    fn libbpf_tools_layout_across_midnight() {
        let rec = parse(LIBBPF, 64).unwrap();
        assert_eq!(rec.snapshots, 2);
        assert!((rec.duration - 5.0).abs() < 1e-9, "{}", rec.duration);
        assert_eq!(values(&rec, 16), [Some(400.0), Some(800.0)]);
        assert_eq!(values(&rec, 17), [Some(80.0), None]);
        let f = &rec.presymbolized[&17][0];
        assert_eq!((f.file.as_deref(), f.line), (Some("/src/a.c"), Some(12)));
    }

    #[test]
    fn frames_are_read_from_the_right_so_cpp_names_keep_their_spaces() {
        /// Text, function, module, offset, source file and line.
        type Case<'a> = (
            &'a str,
            Option<&'a str>,
            &'a str,
            u64,
            Option<(&'a str, u32)>,
        );
        let cases: [Case; 11] = [
            (
                "operator new(unsigned long)+0x1c [libstdc++.so.6.0.30]",
                Some("operator new(unsigned long)"),
                "libstdc++.so.6.0.30",
                0x1c,
                None,
            ),
            (
                "operator new[](unsigned long)+0x1c [libstdc++.so.6.0.30]",
                Some("operator new[](unsigned long)"),
                "libstdc++.so.6.0.30",
                0x1c,
                None,
            ),
            (
                "std::vector<int, std::allocator<int> >::_M_realloc_insert(int const&)+0x2a [svc]",
                Some("std::vector<int, std::allocator<int> >::_M_realloc_insert(int const&)"),
                "svc",
                0x2a,
                None,
            ),
            (
                "Foo::bar() const+0x9 /src/foo file.cc:41",
                Some("Foo::bar() const"),
                "",
                9,
                Some(("/src/foo file.cc", 41)),
            ),
            (
                "Foo::bar() const+0x9 /src/foo.cc:41",
                Some("Foo::bar() const"),
                "",
                9,
                Some(("/src/foo.cc", 41)),
            ),
            ("[unknown] [libc.so.6]", None, "libc.so.6", 0, None),
            (
                "__vdso_time+0x10 [[vdso]]",
                Some("__vdso_time"),
                "[vdso]",
                0x10,
                None,
            ),
            ("[unknown]", None, "[unknown]", 0, None),
            ("<null sym>", None, "<null sym>", 0, None),
            // Rust trait impls start with `<`: the name and offset are kept (both layouts).
            (
                "<alloc::vec::Vec<T> as core::clone::Clone>::clone+0x1d [svc]",
                Some("<alloc::vec::Vec<T> as core::clone::Clone>::clone"),
                "svc",
                0x1d,
                None,
            ),
            (
                "<A as T>::f+0x9 /src/a.rs:7",
                Some("<A as T>::f"),
                "",
                9,
                Some(("/src/a.rs", 7)),
            ),
        ];
        for (text, function, module, offset, src) in cases {
            let f = to_frame(text);
            assert_eq!(f.function.as_deref(), function, "{text}");
            assert_eq!((f.module.as_str(), f.offset), (module, offset), "{text}");
            assert_eq!(f.file.as_deref().zip(f.line), src, "{text}");
        }
    }

    #[test]
    fn rust_trait_impls_keep_their_names_and_stay_apart() {
        let log = "[10:0:0] Top 2 stacks with outstanding allocations:\n\
2000 bytes in 20 allocations from stack\n\
\t0 [<000055d4a000001d>] <A as T>::f+0x1d [svc]\n\
4096 bytes in 4 allocations from stack\n\
\t0 [<000055d4a0000044>] <B as T>::g+0x44 [svc]\n";
        let rec = parse(log, 64).unwrap();
        let first = |id: u32| {
            let f = &rec.presymbolized[&id][0];
            (f.function.clone(), f.module.clone(), f.offset)
        };
        assert_eq!(first(16), (Some("<A as T>::f".into()), "svc".into(), 0x1d));
        assert_eq!(first(17), (Some("<B as T>::g".into()), "svc".into(), 0x44));
    }

    #[test]
    fn byte_counts_near_two_to_the_64_saturate() {
        // Two stacks of 2^63 bytes in one interval, then one stack printed twice in one.
        let log = "[10:0:0] Top 2 stacks with outstanding allocations:\n\
9223372036854775808 bytes in 1 allocations from stack\n\
\t0 [<000055d4a000002a>] cache_store+0x2a [svc]\n\
9223372036854775808 bytes in 4 allocations from stack\n\
\t0 [<000055d4a0000044>] init_tables+0x44 [svc]\n\
[10:0:5] Top 2 stacks with outstanding allocations:\n\
9223372036854775808 bytes in 1 allocations from stack\n\
\t0 [<000055d4a000002a>] cache_store+0x2a [svc]\n\
9223372036854775808 bytes in 18446744073709551615 allocations from stack\n\
\t0 [<000055d4a000002a>] cache_store+0x2a [svc]\n";
        let rec = parse(log, 64).unwrap();
        let outstanding: Vec<u64> = rec.timeline.iter().map(|p| p.outstanding).collect();
        assert_eq!(outstanding, [u64::MAX, u64::MAX]);
        let max = u64::MAX as f64;
        assert_eq!(values(&rec, 16), [Some(2f64.powi(63)), Some(max)]);
        let counts: Vec<_> = rec.series[&(16, AllocKind::Heap)]
            .points()
            .iter()
            .map(|p| p.count)
            .collect();
        assert_eq!(counts, [Some(1.0), Some(max)]);
    }

    #[test]
    fn an_unreadable_stack_header_is_an_error_not_a_frame() {
        // A byte count above 2^64 - 1: read as a frame, the stack's frames joined the one
        // before it.
        let log = BCC.replace("\t400 bytes", "\t99999999999999999999999 bytes");
        let e = parse(&log, 64).unwrap_err();
        assert_eq!(
            e,
            "line 6: expected `N bytes in M allocations from stack`, found \
             `99999999999999999999999 bytes in 4 allocations from stack`: the byte count is not \
             a number below 2^64"
        );
        let log = LIBBPF.replace("80 bytes in 5 allocations", "80 bytes in -5 allocations");
        let e = parse(&log, 64).unwrap_err();
        assert!(
            e.starts_with("line 5: ")
                && e.ends_with("the allocation count is not a number below 2^64"),
            "{e}"
        );
        let log = LIBBPF.replace("from stack\n", "from stack, twice\n");
        let e = parse(&log, 64).unwrap_err();
        assert!(e.ends_with("`, twice` follows \"from stack\""), "{e}");
        // `id(3)` after it is read.
        let log = LIBBPF.replace("from stack\n", "from stack id(3)\n");
        assert_eq!(parse(&log, 64).unwrap().snapshots, 2);
    }

    /// What `leak-report` warns about for this recording.
    fn warnings(rec: &Recording) -> Vec<String> {
        use crate::analysis::{analyze, Detector, Settings};
        use crate::symbolize::{Options, Resolver};
        let resolver = Resolver::new(&rec.modules, &rec.bundles, &rec.maps, &Options::default());
        let settings = Settings {
            detector: Detector::Robust,
            detect: crate::detect::Config::default(),
            memory_limit: None,
        };
        analyze(rec, &resolver, &settings).warnings
    }

    #[test]
    fn a_clock_set_back_less_than_12_hours_is_out_of_order_not_the_next_day() {
        let at = |clocks: &[&str]| {
            let log: String = clocks
                .iter()
                .map(|c| format!("[{c}] Top 1 stacks with outstanding allocations:\n"))
                .collect();
            let rec = parse(&log, 64).unwrap();
            let times: Vec<f64> = rec.timeline.iter().map(|p| p.t).collect();
            // (These logs are too short to judge, which is said too.)
            let w: Vec<String> = warnings(&rec)
                .into_iter()
                .filter(|w| !w.contains("usable samples a verdict needs"))
                .collect();
            (times, rec.order.out_of_order, w)
        };
        // An hour back: not 23 h forward; placed one interval (5 s) after the one before.
        let (times, out_of_order, w) = at(&["10:00:00", "09:00:05", "10:00:10", "10:00:15"]);
        assert_eq!((times, out_of_order), (vec![0.0, 5.0, 10.0, 15.0], 1));
        assert!(
            w.iter().any(|w| w.starts_with(
                "1 interval(s) of the memleak log have a clock behind the one before them"
            )),
            "{w:?}"
        );
        // The last step forward is the interval; 13:00 then 11:00 is 2 h back, not 22 h on.
        let (times, out_of_order, _) = at(&["12:59:00", "13:00:00", "11:00:00"]);
        assert_eq!((times, out_of_order), (vec![0.0, 60.0, 120.0], 1));
        // Midnight: more than 12 h back is the next day (which a step back then stays on).
        let (times, out_of_order, w) = at(&["23:00:00", "0:0:0", "1:0:0", "0:59:00"]);
        assert_eq!(
            (times, out_of_order),
            (vec![0.0, 3600.0, 7200.0, 10800.0], 1)
        );
        assert_eq!(w.len(), 1, "{w:?}");
        let (times, out_of_order, w) = at(&["23:59:58", "0:0:3"]);
        assert_eq!((times, out_of_order, w), (vec![0.0, 5.0], 0, vec![]));
    }

    #[test]
    fn a_log_cut_mid_line_loses_its_incomplete_last_interval_with_a_warning() {
        // Cut in the last frame (`main+0x5` of `main+0x5d [a.out]`): the last interval goes.
        let cut = &BCC[..BCC.len() - 10];
        let second = BCC.find("[11:16:38]").unwrap();
        let rec = parse(cut, 64).unwrap();
        assert_eq!((rec.snapshots, rec.timeline.len()), (1, 1));
        let tail = rec.tail.as_ref().map(ToString::to_string);
        assert_eq!(
            tail,
            Some(format!("recording is truncated at byte {second}"))
        );
        assert!(
            rec.presymbolized.values().all(|f| f.len() == 2),
            "no phantom stack of the cut frame"
        );
        let w = warnings(&rec);
        assert!(
            w.contains(&format!(
                "the memleak log is cut at byte {second}, in the middle of a line; analyzed \
                 the 1 complete interval before it"
            )),
            "{w:?}"
        );
        // Cut in the next interval's clock line: the one before it is complete.
        let rec = parse(&LIBBPF[..LIBBPF.find("0:3]").unwrap()], 64).unwrap();
        assert_eq!(rec.snapshots, 1);
        assert_eq!(values(&rec, 17), [Some(80.0)]);
        let e = parse(&LIBBPF[..40], 64).unwrap_err();
        assert_eq!(
            e,
            "nothing to analyze: the memleak log is cut at byte 0, in the middle of a line, before \
             the end of its first interval"
        );
        // Whole lines are not cut.
        assert!(parse(BCC, 64).unwrap().tail.is_none());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse("hello\nworld\n", 8).is_err());
        assert!(!looks_like("hello"));
        assert!(looks_like(BCC) && looks_like(LIBBPF));
    }
}
