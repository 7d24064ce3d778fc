//! The memleak (bcc / libbpf-tools) text-log parser on hostile text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Parsed whatever looks_like says, with a small cap so thinning is exercised too.
    let _ = leak_report::memleak::looks_like(&text);
    let _ = leak_report::memleak::parse(&text, 8);
});
