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
        }
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
        let mut out = String::new();
        for p in &self.problems {
            out.push_str(&format!("{}:{}:{}: {}\n", self.file, p.line, p.column, p.message));
            let offset = p.offset.min(self.source.len());
            let len = p.len.min(self.source.len() - offset);
            let snippet = Snippet {
                message: "here".into(),
                src: NamedSource::new(&self.file, self.source.clone()),
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

/// The message under the snippet when it is short; the header line above always has it whole.
fn short_label(message: &str) -> String {
    if message.chars().count() > 50 { "here".into() } else { message.to_string() }
}
