//! The HTML report in a real headless browser (Debian's chromium, installed by the test
//! command): it loads from file:// with no console error and no network request (the CSP would
//! log a refusal), its DOM holds the leak's function and verdict, sorting works, a screenshot
//! is not blank, and hostile symbol names, paths and command lines stay inert text. Also the
//! golden report of the demo recording (LEAK_REPORT_BLESS=1 regenerates it).
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::path::{Path, PathBuf};
use std::process::Command;

use leak_format::{BundleContent, BundledSymbol, RecordingBuilder};

const BIN: &str = env!("CARGO_BIN_EXE_leak-report");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

const HOSTILE: [&str; 4] = [
    "<script>alert(1)</script>",
    "\"onmouseover=alert(2) x=\"",
    "std::vector<std::pair<int, char>>::push_back",
    "</title><img src=x onerror=alert(3)>",
];

/// A recording whose names try to break out of the HTML.
fn hostile_recording(dir: &Path) -> PathBuf {
    let mut b = RecordingBuilder::new();
    b.header_mut().target.command_line = vec!["<b>svc</b>".into(), "\"; alert(4); \"".into()];
    b.module(
        1,
        "/opt/<img src=x onerror=alert(5)>/lib\"onload=\"x.so",
        Some(vec![7; 20]),
    );
    let table: Vec<BundledSymbol> = HOSTILE
        .iter()
        .enumerate()
        .map(|(i, name)| BundledSymbol {
            offset: 0x1000 * (i as u64 + 1),
            size: 0x100,
            name: (*name).to_string(),
        })
        .collect();
    // Each hostile function leaks steadily on its own stack.
    for (i, _) in HOSTILE.iter().enumerate() {
        b.stack(
            16 + i as u32,
            &[(1, 0x1000 * (i as u64 + 1) + 0x10), (1, 0x4010)],
        );
    }
    for s in 0..60u64 {
        let rows: Vec<(u32, u64, u64)> = (0..HOSTILE.len() as u32)
            .map(|i| (16 + i, 4096 * (s + 1) * u64::from(i + 1), s + 1))
            .collect();
        b.snapshot(&rows);
    }
    b.bundle(
        1,
        BundleContent::SymbolTable,
        leak_format::encode_symbol_table(&table),
    );
    b.end(leak_format::EndReason::Duration);
    let path = dir.join("hostile.zst");
    std::fs::write(&path, b.to_bytes()).unwrap();
    path
}

fn report(recording: &Path, out: &Path) {
    let o = Command::new(BIN)
        .arg(recording)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The chromium binary, or None (and a printed reason) when it may be skipped.
fn chromium() -> Option<PathBuf> {
    for c in [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ] {
        if Path::new(c).exists() {
            return Some(PathBuf::from(c));
        }
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("chromium is missing in CI: the test command must install it");
    }
    eprintln!("skipping browser test: chromium is not installed (scripts/test.sh installs it)");
    None
}

/// Runs headless chromium on `url` with `args`; returns (stdout, stderr).
fn headless(browser: &Path, dir: &Path, args: &[&str], url: &str) -> (String, String) {
    let profile = tempfile::tempdir_in(dir).unwrap();
    // Under `timeout`: a browser that wedges fails the test (empty output) instead of hanging it.
    let o = Command::new("timeout")
        .args(["--kill-after=10", "120"])
        .arg(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Console messages from the page (chromium logs them as `CONSOLE(line)`), and CSP refusals.
fn page_problems(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| {
            l.contains("CONSOLE")
                || l.contains("Refused to")
                || l.contains("Content Security Policy")
        })
        .collect()
}

/// Every start tag of serialized HTML (text `<` is serialized as `&lt;`).
fn tags(dom: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = dom;
    while let Some(i) = rest.find('<') {
        let after = &rest[i + 1..];
        let end = after.find('>').unwrap_or(after.len());
        out.push(&after[..end]);
        rest = &after[end..];
    }
    out
}

/// The attribute names of a start tag's text (`name a="x y" b='z' c=w d`), quotes respected.
fn attribute_names(tag: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut chars = tag.chars().peekable();
    // The tag name.
    while chars.peek().is_some_and(|c| !c.is_whitespace()) {
        chars.next();
    }
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == '/') {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() || c == '=' {
                break;
            }
            name.push(c);
            chars.next();
        }
        if name.is_empty() {
            return names;
        }
        names.push(name);
        if chars.peek() == Some(&'=') {
            chars.next();
            match chars.peek().copied() {
                Some(q @ ('"' | '\'')) => {
                    chars.next();
                    for c in chars.by_ref() {
                        if c == q {
                            break;
                        }
                    }
                }
                _ => {
                    while chars.peek().is_some_and(|c| !c.is_whitespace()) {
                        chars.next();
                    }
                }
            }
        }
    }
}

#[test]
fn attribute_names_respect_quotes() {
    assert_eq!(
        attribute_names("tr class=\"a b\" data-x=\"x onerror=y\" id=3 hidden"),
        ["class", "data-x", "id", "hidden"]
    );
    assert_eq!(
        attribute_names("img src=x onerror=alert(1)"),
        ["src", "onerror"]
    );
}

#[test]
fn demo_report_loads_clean_and_sorts_in_a_real_browser() {
    let Some(browser) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("report.html");
    report(&root().join("fixtures/recordings/demo.zst"), &html);
    let url = format!("file://{}", html.display());
    let (dom, err) = headless(&browser, dir.path(), &["--dump-dom"], &url);
    assert!(
        page_problems(&err).is_empty(),
        "console/CSP problems: {:?}",
        page_problems(&err)
    );
    assert!(
        dom.contains("leak_per_request"),
        "the leaking function is in the DOM"
    );
    assert!(dom.contains("1 continuous leak found"));
    assert!(dom.contains("continuous leak</span>"));
    // The script ran (allowed by its hash): it wrote the row count.
    assert!(
        dom.contains("3 of 3 stacks shown"),
        "the inline script did not run"
    );
    // No request can leave the page: no URL but SVG namespaces.
    let html_text = std::fs::read_to_string(&html).unwrap();
    let urls = html_text
        .match_indices("http://")
        .chain(html_text.match_indices("https://"));
    for (i, _) in urls {
        // Namespace declarations (xmlns="...", xmlns:fg="...") name, they never fetch.
        let before = &html_text[i.saturating_sub(40)..i];
        let attr = before.rsplit(' ').next().unwrap_or("");
        let tail = &html_text[i..(i + 40).min(html_text.len())];
        assert!(
            attr.starts_with("xmlns"),
            "a URL in the report: {attr}{tail}"
        );
    }
    // Sorting: ascending by outstanding bytes puts the freed churn stack (0 B) first, the
    // 2 MiB cache last.
    let (sorted, err) = headless(
        &browser,
        dir.path(),
        &["--dump-dom"],
        &format!("{url}#sort=outstanding-asc"),
    );
    assert!(page_problems(&err).is_empty(), "{:?}", page_problems(&err));
    let order: Vec<&str> = sorted
        .match_indices("<tr class=\"v-")
        .map(|(i, _)| &sorted[i..i + 200])
        .map(|row| {
            row.split("data-id=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
        })
        .collect();
    assert_eq!(
        order,
        ["16", "17", "18"],
        "rows sorted by outstanding bytes ascending"
    );
    assert!(sorted.contains("class=\"asc\""));
    // Element ids are unique (the two flame graphs had the same ones), and no control is drawn
    // that needs a script the page does not run (inferno's search and zoom reset).
    let mut ids: Vec<&str> = html_text
        .match_indices(" id=\"")
        .map(|(i, m)| html_text[i + m.len()..].split('"').next().unwrap())
        .collect();
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count, "duplicate element ids");
    assert!(!html_text.contains(">Search<") && !html_text.contains(">Reset Zoom<"));
    // Each stack's details take a full-width row under it: one per stack, spanning every
    // column of the header.
    let columns = html_text.matches("<th>").count() + html_text.matches("<th ").count();
    assert_eq!(columns, 9);
    assert_eq!(
        html_text
            .matches(&format!("<tr class=\"more\"><td colspan=\"{columns}\">"))
            .count(),
        3
    );
    // A screenshot that is not blank.
    let png = dir.path().join("shot.png");
    let (_, err) = headless(
        &browser,
        dir.path(),
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,1600",
        ],
        &url,
    );
    assert!(png.exists(), "{err}");
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let pixels = &buf[..info.buffer_size()];
    let distinct: std::collections::BTreeSet<&[u8]> = pixels
        .chunks(info.color_type.samples())
        .take(2_000_000)
        .collect();
    assert!(
        distinct.len() > 50,
        "the screenshot looks blank: {} colours",
        distinct.len()
    );
}

#[test]
fn hostile_names_render_as_inert_text() {
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("hostile.html");
    report(&hostile_recording(dir.path()), &html);
    let text = std::fs::read_to_string(&html).unwrap();
    assert_eq!(
        text.matches("<script").count(),
        1,
        "only the report's own script"
    );
    assert!(!text.contains("<img"), "no element made from data");
    let Some(browser) = chromium() else { return };
    let url = format!("file://{}", html.display());
    let (dom, err) = headless(&browser, dir.path(), &["--dump-dom"], &url);
    assert!(
        page_problems(&err).is_empty(),
        "console/CSP problems: {:?}",
        page_problems(&err)
    );
    // In the DOM the names are text: serialized with `<` as `&lt;`.
    for name in HOSTILE {
        let escaped = name
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        assert!(dom.contains(&escaped), "{name} is not in the DOM as text");
    }
    // No element or attribute came from the data: one script, no img, no event handler.
    let tags = tags(&dom);
    assert_eq!(tags.iter().filter(|t| t.starts_with("script")).count(), 1);
    assert!(
        tags.iter().all(|t| !t.starts_with("img")),
        "an <img> element was injected"
    );
    for t in &tags {
        for name in attribute_names(t) {
            assert!(
                !name.to_ascii_lowercase().starts_with("on"),
                "event handler attribute in <{t}>"
            );
        }
    }
    assert!(dom.contains("4 continuous leaks found"));
}

#[test]
fn demo_report_matches_the_golden_file() {
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("report.html");
    report(&root().join("fixtures/recordings/demo.zst"), &html);
    let again = dir.path().join("again.html");
    report(&root().join("fixtures/recordings/demo.zst"), &again);
    let got = std::fs::read_to_string(&html).unwrap();
    assert_eq!(
        got,
        std::fs::read_to_string(&again).unwrap(),
        "the report is not deterministic"
    );
    let golden = root().join("fixtures/golden/demo.html");
    if std::env::var_os("LEAK_REPORT_BLESS").is_some() {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(&golden, &got).unwrap();
    }
    let want = std::fs::read_to_string(&golden)
        .expect("fixtures/golden/demo.html (LEAK_REPORT_BLESS=1 creates it)");
    assert!(
        got == want,
        "the demo report changed; review it and run with LEAK_REPORT_BLESS=1"
    );
    assert!(got.len() < 500_000, "the report is {} bytes", got.len());
}

/// The DOM of a copy of `report` (HTML text) without its CSP (the probe script and any edit
/// are not the hashed ones), `edit`ed, with `probe` (a script) run after the page's own.
fn probed(
    browser: &Path,
    dir: &Path,
    report: &str,
    edit: &dyn Fn(String) -> String,
    probe: &str,
) -> String {
    let csp_start = report
        .find("<meta http-equiv=\"Content-Security-Policy\"")
        .unwrap();
    let csp_end = csp_start + report[csp_start..].find('>').unwrap() + 1;
    let copy = edit(format!("{}{}", &report[..csp_start], &report[csp_end..]))
        .replace("</body>", &format!("<script>{probe}</script></body>"));
    let page = dir.join("probed.html");
    std::fs::write(&page, copy).unwrap();
    let url = format!("file://{}", page.display());
    let (dom, err) = headless(browser, dir, &["--dump-dom"], &url);
    assert!(page_problems(&err).is_empty(), "{:?}", page_problems(&err));
    dom
}

/// The demo report's HTML text, made in `dir`.
fn demo_report(dir: &Path) -> String {
    let html = dir.join("report.html");
    report(&root().join("fixtures/recordings/demo.zst"), &html);
    std::fs::read_to_string(&html).unwrap()
}

/// In a browser without CSS `:has()` (Firefox before 121), opening a stack's summary still
/// shows its details row, through the page's script. Checked in chromium on a copy of the
/// report whose `:has()` rule is removed; the probe opens the first stack's details, reads
/// every details row's computed display, closes it and reads them again.
#[test]
fn details_open_without_css_has_through_the_script() {
    let Some(browser) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let text = demo_report(dir.path());
    let has_rule = "tbody.stack:has(details[open]) > tr.more, ";
    assert_eq!(text.matches(has_rule).count(), 1, "the CSS rule changed");
    let probe = r#"
var d = document.querySelector("tbody.stack details");
function shown() {
  return Array.prototype.map.call(document.querySelectorAll("tr.more"),
    function (r) { return getComputedStyle(r).display; }).join(",");
}
d.open = true;
setTimeout(function () {
  document.body.dataset.opened = shown();
  d.open = false;
  setTimeout(function () { document.body.dataset.closed = shown(); }, 100);
}, 100);
"#;
    let dom = probed(
        &browser,
        dir.path(),
        &text,
        &|t| t.replace(has_rule, ""),
        probe,
    );
    assert!(
        dom.contains("data-opened=\"table-row,none,none\""),
        "the first stack's details did not show: {}",
        &dom[dom.find("<body").unwrap_or(0)..][..200.min(dom.len())]
    );
    assert!(dom.contains("data-closed=\"none,none,none\""));
}

/// The filter matches a stack's frames (function, file, module), not the detector's reasons
/// in its details: "p =" and "trend" are in every stack's gates and no frame.
#[test]
fn the_filter_matches_frames_only() {
    let Some(browser) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let text = demo_report(dir.path());
    let probe = r#"
var f = document.getElementById("filter");
var out = [];
["p =", "trend", "leak_per_request", "leaky.c", "libc.so"].forEach(function (q) {
  f.value = q;
  f.dispatchEvent(new Event("input"));
  out.push(q + ":" + document.getElementById("shown").textContent);
});
document.body.dataset.filtered = out.join("|");
"#;
    let dom = probed(&browser, dir.path(), &text, &|t| t, probe);
    let want = "p =:0 of 3 stacks shown|trend:0 of 3 stacks shown|leak_per_request:1 of 3 \
                stacks shown|leaky.c:3 of 3 stacks shown|libc.so:3 of 3 stacks shown";
    assert!(
        dom.contains(&format!("data-filtered=\"{want}\"")),
        "{}",
        &dom[dom.find("<body").unwrap_or(0)..][..300.min(dom.len())]
    );
}
