//! Problems found in a topology file, with their location, and how they are shown.
//!
//! Every problem carries `line:column` and a byte span so it prints as `FILE:LINE:COL: message`
//! followed by the source snippet (drawn by miette). Problems are collected, not thrown: `validate`
//! reports every semantic problem of a file at once.

use std::fmt;

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, NamedSource, SourceSpan};

use super::raw::Loc;

/// One thing wrong with a topology file.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Problem {
    pub line: u64,
    pub column: u64,
    pub message: String,
    /// What to do about it, when there is something specific to say.
    pub help: Option<String>,
    #[serde(skip)]
    pub offset: usize,
    #[serde(skip)]
    pub len: usize,
    /// Byte spans of the source that hold a secret written inline: never shown in a snippet.
    #[serde(skip)]
    pub conceal: Vec<(usize, usize)>,
}

impl Problem {
    pub fn at(loc: Loc, message: impl Into<String>) -> Self {
        Problem {
            line: loc.line,
            column: loc.column,
            message: message.into(),
            help: None,
            offset: loc.offset,
            len: loc.len,
            conceal: Vec::new(),
        }
    }

    /// The value at `loc` is a secret: snippets show it as `*`.
    pub fn concealing(mut self, loc: Loc) -> Self {
        self.conceal.push((loc.offset, loc.len));
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// All problems of one file, with the file's text for snippets.
#[derive(Debug, Clone)]
pub struct Problems {
    pub file: String,
    pub source: String,
    pub problems: Vec<Problem>,
}

impl std::error::Error for Problems {}

impl fmt::Display for Problems {
    /// Plain form: one `FILE:LINE:COL: message` line per problem.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}:{}: {}", self.file, p.line, p.column, p.message)?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{message}")]
struct Snippet {
    message: String,
    #[source_code]
    src: NamedSource<String>,
    #[label("{label}")]
    span: SourceSpan,
    label: String,
    #[help]
    help: Option<String>,
}

impl Problems {
    /// Every problem as `FILE:LINE:COL: message`, each followed by its snippet.
    pub fn report(&self, color: bool) -> String {
        let theme = if color {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        let handler = GraphicalReportHandler::new_themed(theme).with_context_lines(1);
        let source = self.concealed_source();
        let mut out = String::new();
        for p in &self.problems {
            out.push_str(&format!("{}:{}:{}: {}\n", self.file, p.line, p.column, p.message));
            let offset = p.offset.min(source.len());
            let len = p.len.min(source.len() - offset);
            let snippet = Snippet {
                message: "here".into(),
                src: NamedSource::new(&self.file, source.clone()),
                span: (offset, len).into(),
                label: short_label(&p.message),
                help: p.help.clone(),
            };
            // Rendering into a String cannot fail in practice; fall back to nothing if it does.
            let mut s = String::new();
            if handler.render_report(&mut s, &snippet).is_ok() {
                // The first line repeats the message placeholder; the header above already says it.
                let body: Vec<&str> = s.lines().skip(1).collect();
                out.push_str(&body.join("\n"));
                out.push('\n');
            }
        }
        out.push_str(&format!(
            "{}: {} problem{}\n",
            self.file,
            self.problems.len(),
            if self.problems.len() == 1 { "" } else { "s" }
        ));
        out
    }
}

impl Problems {
    /// The source as snippets show it: each secret a problem found written inline, and the value
    /// of every key that names a secret (a context line may show one that no problem reached: a
    /// parse error stops at the first), replaced by `*` of the same byte length, so every span
    /// still points where it did.
    fn concealed_source(&self) -> String {
        let mut spans: Vec<(usize, usize)> = self.problems.iter().flat_map(|p| p.conceal.iter().copied()).collect();
        spans.extend(secret_looking_values(&self.source));
        self.source
            .char_indices()
            .map(|(i, c)| {
                let hidden = spans.iter().any(|&(o, l)| i < o + l && i + c.len_utf8() > o) && c != '\n';
                if hidden { "*".repeat(c.len_utf8()) } else { c.to_string() }
            })
            .collect()
    }
}

/// Names that say their value is a secret (an app.env entry, a key in any mapping).
pub const SECRET_WORDS: [&str; 6] = ["PASSWORD", "SECRET", "TOKEN", "PRIVATE_KEY", "API_KEY", "WEBHOOK"];

pub fn names_a_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_WORDS.iter().any(|w| upper.contains(w))
}

/// `KEY: value` lines whose key names a secret and whose value is written out (not a `{env:}` or
/// `{file:}` reference, nor empty): the value's byte span.
fn secret_looking_values(source: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = 0;
    for line in source.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let key_start = body.len() - body.trim_start_matches([' ', '\t', '-']).len();
        if let Some(colon) = body[key_start..].find(':') {
            let key = body[key_start..key_start + colon].trim_matches(['"', '\'', ' ']);
            let value = &body[key_start + colon + 1..];
            let trimmed = value.trim_start();
            if names_a_secret(key) && !trimmed.is_empty() && !trimmed.starts_with('{') && !trimmed.starts_with('#') {
                let at = start + key_start + colon + 1 + (value.len() - trimmed.len());
                spans.push((at, trimmed.len()));
            }
        }
        start += line.len();
    }
    spans
}

/// The message under the snippet when it is short; the header line above always has it whole.
fn short_label(message: &str) -> String {
    if message.chars().count() > 50 { "here".into() } else { message.to_string() }
}
