//! LeakSanitizer-style suppressions: `leak:PATTERN` lines, `*` wildcards, optional `^`/`$`
//! anchors, otherwise a substring match, against the function, module or file of any frame.
use std::path::Path;

use crate::symbolize::SymFrame;

/// A parsed suppressions file.
#[derive(Debug, Clone, Default)]
pub struct Suppressions {
    patterns: Vec<String>,
}

impl Suppressions {
    /// Reads a file; a line that is not a comment, blank or `leak:` is an error naming it.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read suppressions {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses suppressions text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut patterns = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once(':') {
                Some(("leak", p)) if !p.trim().is_empty() => patterns.push(p.trim().to_string()),
                _ => {
                    return Err(format!(
                        "line {}: expected `leak:PATTERN`, found `{line}`",
                        n + 1
                    ))
                }
            }
        }
        Ok(Suppressions { patterns })
    }

    /// The first pattern matching any frame, if any.
    pub fn matching(&self, frames: &[SymFrame]) -> Option<&str> {
        self.patterns.iter().map(String::as_str).find(|p| {
            frames.iter().any(|f| {
                [
                    // `[not code]` is no name a pattern should match.
                    f.function.as_deref().filter(|_| !f.is_not_code()),
                    Some(f.module.as_str()),
                    f.file.as_deref(),
                ]
                .into_iter()
                .flatten()
                .any(|text| matches(p, text))
            })
        })
    }

    /// Number of patterns.
    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    /// No patterns at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

/// LSan matching: `^` anchors at the start, `$` at the end, `*` is any run of characters;
/// an unanchored pattern may match anywhere.
pub fn matches(pattern: &str, text: &str) -> bool {
    let (start, p) = match pattern.strip_prefix('^') {
        Some(p) => (true, p),
        None => (false, pattern),
    };
    let (end, p) = match p.strip_suffix('$') {
        Some(p) => (true, p),
        None => (false, p),
    };
    let mut glob = String::new();
    if !start {
        glob.push('*');
    }
    glob.push_str(p);
    if !end {
        glob.push('*');
    }
    glob_match(glob.as_bytes(), text.as_bytes())
}

/// `*` matches any run (iterative, linear backtracking).
fn glob_match(p: &[u8], t: &[u8]) -> bool {
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str, module: &str, file: Option<&str>) -> SymFrame {
        SymFrame {
            function: Some(function.into()),
            file: file.map(Into::into),
            line: Some(1),
            module: module.into(),
            offset: 0,
            inlined: false,
        }
    }

    #[test]
    fn lsan_patterns() {
        assert!(matches("leak_here", "leak_here"));
        assert!(
            matches("leak", "my_leak_here"),
            "unanchored is a substring match"
        );
        assert!(!matches("^leak", "my_leak_here"));
        assert!(matches("^my_*_here$", "my_leak_here"));
        assert!(!matches("here$", "here_and_then"));
        assert!(matches(
            "std::vector<*>::push_back",
            "std::vector<int>::push_back"
        ));
        assert!(matches("*", "anything"));
        assert!(!matches("abc", ""));
    }

    #[test]
    fn any_frame_function_module_or_file() {
        let s = Suppressions::parse("# known\nleak:libfoo.so\n\nleak:^cache_*\n").unwrap();
        assert_eq!(s.len(), 2);
        let stack = [
            frame("main", "/usr/bin/svc", Some("svc.c")),
            frame("x", "/usr/lib/libfoo.so.1", None),
        ];
        assert_eq!(s.matching(&stack), Some("libfoo.so"));
        let stack = [frame("cache_insert", "/usr/bin/svc", None)];
        assert_eq!(s.matching(&stack), Some("^cache_*"));
        let stack = [frame("leak_here", "/usr/bin/svc", Some("leaky.c"))];
        assert_eq!(s.matching(&stack), None);
        let e = Suppressions::parse("race:foo\n").unwrap_err();
        assert!(e.contains("line 1") && e.contains("leak:PATTERN"), "{e}");
    }
}
