//! A build context's `.dockerignore`, applied as Docker's own client applies it before it sends a
//! context: the engine does not (its API takes the context as it is given), so without this a
//! `.env` the file lists would be baked into the image by `COPY . .`.
//!
//! The rules are Docker's (moby's patternmatcher): each line trimmed, `#` lines and blank lines
//! skipped, `!` makes an exception; a pattern is cleaned (a leading `/` or `./` and a trailing
//! `/` dropped), its `*` and `?` stop at `/`, `**` spans directories; it excludes a path when it
//! matches the path or one of its parent directories; the last line that matches decides. The
//! globs are globset's (ripgrep's), with `*` kept within one path component.

use globset::{GlobBuilder, GlobMatcher};

/// The rules of one `.dockerignore`.
pub struct Rules {
    rules: Vec<(GlobMatcher, bool)>,
}

impl Rules {
    /// The rules of a `.dockerignore`'s text; a pattern globset cannot read is an error naming
    /// its line.
    pub fn parse(text: &str) -> anyhow::Result<Rules> {
        let mut rules = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exception, pattern) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let cleaned = clean(pattern);
            anyhow::ensure!(!cleaned.is_empty() || !exception, ".dockerignore line {}: `!` with no pattern", n + 1);
            let glob = GlobBuilder::new(&cleaned)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| anyhow::anyhow!(".dockerignore line {}: {e}", n + 1))?;
            rules.push((glob.compile_matcher(), exception));
        }
        Ok(Rules { rules })
    }

    /// Whether `path` (relative to the context, `/`-separated) is left out of the context.
    pub fn excludes(&self, path: &str) -> bool {
        // The path and each of its parent directories, as Docker matches them.
        let parents: Vec<&str> = path.char_indices().filter(|(_, c)| *c == '/').map(|(i, _)| &path[..i]).chain([path]).collect();
        let mut excluded = false;
        for (glob, exception) in &self.rules {
            if parents.iter().any(|p| glob.is_match(p)) {
                excluded = !exception;
            }
        }
        excluded
    }

    /// Whether a `!` line could bring back something under an excluded directory (then the
    /// directory is walked rather than skipped whole).
    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|(_, e)| *e)
    }
}

/// A pattern as Go's filepath.Clean leaves it, without a leading `/`.
fn clean(pattern: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in pattern.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_follow_dockers() {
        let r = Rules::parse("# secrets\n.env\n/secrets/\n*.log\n!keep.log\nbuild/**/tmp\n  \ndocs/*.md\n").unwrap();
        for excluded in [".env", "secrets", "secrets/key.pem", "app.log", "build/a/b/tmp", "build/tmp", "build/tmp/x", "docs/a.md"] {
            assert!(r.excludes(excluded), "{excluded} should be left out");
        }
        for kept in ["server.js", "keep.log", "src/.env", "logs/app.log", "docs/sub/a.md", "secretsx", "Dockerfile"] {
            assert!(!r.excludes(kept), "{kept} should be sent");
        }
        assert!(r.has_exceptions());
        // The last line that matches decides.
        let r = Rules::parse("!a.txt\n*.txt\n").unwrap();
        assert!(r.excludes("a.txt"));
        assert!(Rules::parse("!\n").is_err());
    }
}
