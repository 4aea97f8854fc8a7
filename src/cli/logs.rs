//! `scalectl logs`: the app's log lines from every instance, merged in time order and labelled
//! with the instance that wrote them (each host's journal over SSH, or the engine's logs of each
//! replica); with `--follow`, new lines as they come.

use std::io::Write;
use std::time::Duration;

use super::args::{FleetArgs, Output};
use super::session;
use super::Failure;
use crate::deploy::{LogLine, LogQuery};

#[derive(Debug, clap::Args)]
#[command(after_help = "Lines are `TIME INSTANCE MESSAGE`, oldest first; `-o json` prints one JSON object per line \
({\"time\", \"instance\", \"message\"}). An instance is HOST-PORT on hosts (app-1-3000, or a worker: app-1-worker-1), a slot on docker (api-1, worker-1).\n\n\
Examples:\n  scalectl logs -f scale.yaml --since 10m\n  scalectl logs -f scale.yaml --instance app-1-3000 --follow\n  \
scalectl logs -f scale.yaml -o json | jq -r 'select(.message | contains(\"error\"))'")]
pub struct Args {
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Only this instance (HOST-PORT, HOST-worker-N, or a docker slot such as api-1 or worker-1)
    #[arg(long, value_name = "NAME")]
    pub instance: Option<String>,
    /// How far back to start
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub since: Duration,
    /// At most this many earlier lines per host (or replica)
    #[arg(short = 'n', long, default_value_t = 200, value_name = "N")]
    pub lines: usize,
    /// Keep printing new lines as they come (until interrupted)
    #[arg(long)]
    pub follow: bool,
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

pub fn run(a: Args, color: bool) -> Result<(), Failure> {
    let target = session::open(&a.fleet, color)?;
    let q = LogQuery { since: a.since, lines: a.lines, follow: a.follow, instance: a.instance.clone() };
    let width = a.instance.as_ref().map_or(12, String::len);
    let json = a.output == Output::Json;
    let print = move |l: &LogLine| {
        let line = if json { json_line(l) } else { text_line(l, width) };
        let mut out = std::io::stdout().lock();
        // A closed pipe (`| head`) ends the output, not the process with an error.
        let _ = writeln!(out, "{line}").and_then(|_| out.flush());
    };
    target.logs(&q, &print)?;
    Ok(())
}

fn time(l: &LogLine) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_micros(l.time_us.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// A line for a terminal: the program's bytes are not the operator's terminal's commands, so every
/// control character (ESC of an ANSI or OSC sequence, a carriage return that hides what came
/// before, C1 controls) and every bidirectional override is shown escaped, never sent raw. Tabs stay.
fn text_line(l: &LogLine, width: usize) -> String {
    format!("{} {:<width$} {}", time(l), inert(&l.instance), inert(&l.message))
}

fn inert(s: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| (c.is_control() && c != '\t') || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !s.chars().any(unsafe_char) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            c if !unsafe_char(c) => out.push(c),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    out.into()
}

fn json_line(l: &LogLine) -> String {
    serde_json::json!({"time": time(l), "instance": l.instance, "message": l.message}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_says_when_and_which_instance() {
        let l = LogLine { time_us: 1_764_590_400_123_456, instance: "app-1-3000".into(), message: "{\"msg\":\"x\"}".into() };
        assert_eq!(text_line(&l, 12), "2025-12-01T12:00:00.123Z app-1-3000   {\"msg\":\"x\"}");
        let v: serde_json::Value = serde_json::from_str(&json_line(&l)).unwrap();
        assert_eq!(v["instance"], "app-1-3000");
        assert_eq!(v["message"], "{\"msg\":\"x\"}");
    }

    #[test]
    fn a_program_cannot_send_its_terminal_sequences_to_the_operator() {
        // Clears the screen, sets the window title (OSC), hides the line with a carriage return,
        // a C1 CSI, a right-to-left override; a tab stays a tab.
        let message = "ok\x1b[2J\x1b]0;owned\x07\rhidden\u{9b}31m\u{202e}txt\tend".to_string();
        let l = LogLine { time_us: 0, instance: "app-1-3000".into(), message: message.clone() };
        let text = text_line(&l, 12);
        assert!(!text.chars().any(|c| c.is_control() && c != '\t'), "{text:?}");
        assert!(text.ends_with("ok\\x1b[2J\\x1b]0;owned\\x07\\x0dhidden\\u{9b}31m\\u{202e}txt\tend"), "{text}");
        // JSON keeps the bytes as they were (escaped by JSON itself).
        let v: serde_json::Value = serde_json::from_str(&json_line(&l)).unwrap();
        assert_eq!(v["message"], message.as_str());
    }
}
