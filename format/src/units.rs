//! Units shared by both command lines: sizes with binary suffixes and UTC calendar dates.

/// Parses `4096`, `16K`, `16KiB`, `1M`, `2G`, `1T` (binary units); a bare number is bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size; use e.g. 4096, 16K, 1M, 2G"))?;
    let unit = unit.trim();
    if let Some(sep) = unit.chars().next().filter(|c| matches!(c, '.' | ',')) {
        let hint =
            whole_form(value, sep, &unit[1..]).unwrap_or_else(|| "e.g. 2560K for 2.5M".into());
        return Err(format!(
            "'{s}' is not a whole number; use a smaller unit ({hint})"
        ));
    }
    let Some(shift) = unit_shift(unit) else {
        return Err(format!(
            "unknown size unit '{unit}' in '{s}'; use K, M, G or T"
        ));
    };
    value
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size '{s}' is too large"))
}

/// The binary shift of a size unit (`K` 10, `MiB` 20...; none or `B` 0).
fn unit_shift(unit: &str) -> Option<u32> {
    Some(match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return None,
    })
}

/// What `whole.fraction UNIT` (`sep`: the `.` or `,` typed) is as a whole number of the next
/// smaller unit (`2.5M` → `2560K`, `1.5K` → `1536`), or of bytes (`1.3K` → `about 1331`); None
/// for what does not parse or is too large anyway.
fn whole_form(whole: u64, sep: char, fraction_and_unit: &str) -> Option<String> {
    let digits = fraction_and_unit.find(|c: char| !c.is_ascii_digit());
    let (fraction, unit) = fraction_and_unit.split_at(digits.unwrap_or(fraction_and_unit.len()));
    let shift = unit_shift(unit.trim()).filter(|&s| s > 0)?;
    let scale = 10u128.checked_pow(u32::try_from(fraction.len()).ok().filter(|&n| n <= 18)?)?;
    let fraction: u128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().ok()?
    };
    let scaled = (u128::from(whole) * scale + fraction).checked_mul(1u128 << shift)?;
    // Bytes: a size that fits in no u64 is refused whatever its form.
    u64::try_from(scaled / scale).ok()?;
    let smaller = shift - 10;
    let step = scale << smaller;
    let name = ["", "K", "M", "G"][(smaller / 10) as usize];
    let given = fraction_and_unit.trim();
    Some(if scaled.is_multiple_of(step) {
        format!("{}{name} for {whole}{sep}{given}", scaled / step)
    } else {
        format!("about {} bytes for {whole}{sep}{given}", scaled / scale)
    })
}

/// `1536` → `1.5 KiB` (binary units; the same in both tools' messages).
pub fn human_bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n.abs();
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    let shown = if u == 0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    };
    // A small negative rate rounds to 0: "0 B", not "-0 B".
    let zero = shown.chars().all(|c| c == '0' || c == '.');
    let sign = if n < 0.0 && !zero { "-" } else { "" };
    format!("{sign}{shown} {}", UNITS[u])
}

/// The name of Linux signal `n` (x86-64 and arm64 numbers), for messages: `6` → `SIGABRT`.
pub fn signal_name(n: i32) -> Option<&'static str> {
    const NAMES: [&str; 31] = [
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    usize::try_from(n)
        .ok()
        .and_then(|i| i.checked_sub(1))
        .and_then(|i| NAMES.get(i))
        .copied()
}

/// The UTC date and time of `secs` seconds since the Unix epoch:
/// (year, month, day, hour, minute, second), by Howard Hinnant's days-to-civil algorithm.
pub fn utc_fields(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let z = (secs / 86400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    let s = (secs % 86400) as u32;
    (y, m, d, s / 3600, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_named_by_their_linux_numbers() {
        assert_eq!(signal_name(6), Some("SIGABRT"));
        assert_eq!(signal_name(9), Some("SIGKILL"));
        assert_eq!(signal_name(11), Some("SIGSEGV"));
        assert_eq!(signal_name(31), Some("SIGSYS"));
        assert_eq!(signal_name(0), None);
        assert_eq!(signal_name(34), None);
        assert_eq!(signal_name(-1), None);
    }

    #[test]
    fn human_bytes_never_says_minus_zero() {
        assert_eq!(human_bytes(-0.3), "0 B");
        assert_eq!(human_bytes(-0.0), "0 B");
        assert_eq!(human_bytes(-0.6), "-1 B");
        assert_eq!(human_bytes(-1536.0), "-1.5 KiB");
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("16K"), Ok(16384));
        assert_eq!(parse_size("16KiB"), Ok(16384));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert!(parse_size("1Q").is_err());
        assert!(parse_size("2.5M")
            .unwrap_err()
            .contains("not a whole number; use a smaller unit (2560K for 2.5M)"));
        assert!(parse_size("1.5K").unwrap_err().contains("(1536 for 1.5K)"));
        assert!(parse_size("1.3K")
            .unwrap_err()
            .contains("(about 1331 bytes for 1.3K)"));
        assert!(parse_size("0.25G")
            .unwrap_err()
            .contains("(256M for 0.25G)"));
        assert!(parse_size("2.5Q")
            .unwrap_err()
            .contains("(e.g. 2560K for 2.5M)"));
        assert!(parse_size("1,5K").unwrap_err().contains("(1536 for 1,5K)"));
        // Too large in any form, or too many digits: the example.
        for s in [
            "20000000.5T",
            "1000000000.000000000000000001T",
            "1.99999999999999999999K",
        ] {
            assert!(
                parse_size(s).unwrap_err().contains("(e.g. 2560K for 2.5M)"),
                "{s}"
            );
        }
        assert!(parse_size("x").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn dates() {
        assert_eq!(utc_fields(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(utc_fields(1_795_000_000), (2026, 11, 18, 11, 6, 40));
        assert_eq!(utc_fields(951_782_400), (2000, 2, 29, 0, 0, 0));
    }
}
