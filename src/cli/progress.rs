//! What a person at a terminal sees while a plan runs: one live line per place (a host, or the
//! docker engine) with its current step, its actions done of those planned and how long it has
//! run, above one line for the whole run with an estimate of what is left. A place's line goes
//! once all its actions are done, so that at 50 hosts the screen holds the hosts still at work;
//! when a run fails, the lines of the places it stopped at stay on screen above the error.
//!
//! Only on a terminal: pipelines keep the plain `place: step` lines (`session::say`) and JSON.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The live display of one run.
pub struct Board {
    multi: MultiProgress,
    /// The whole run: every place's actions.
    run: ProgressBar,
    places: Mutex<Places>,
    /// At most this many places have a line at once (the terminal's rows less the run's line
    /// and a margin): a display taller than the terminal cannot be redrawn in place.
    room: usize,
}

#[derive(Default)]
struct Places {
    /// Place -> (actions planned, actions done).
    count: BTreeMap<String, (u64, u64)>,
    /// The places shown, least recently active first.
    lines: Vec<(String, ProgressBar)>,
    /// Places at work: a step begun and no action done since. A place between two phases of
    /// the run (its uploads done, its restarts not begun) is not.
    busy: std::collections::BTreeSet<String>,
    /// Places whose every action is done.
    finished: usize,
}

const TICK: Duration = Duration::from_millis(250);

fn place_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>16.bold} [{bar:16.cyan/blue}] {pos:>3}/{len:<3} {elapsed:>4} {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

fn run_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>16.bold} [{bar:16.green}] {pos:>3}/{len:<3} {elapsed:>4} {msg}, about {eta} left")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// The first 16 characters of a place's name (its line's prefix).
fn short(place: &str) -> String {
    let mut s: String = place.chars().take(16).collect();
    if s.len() < place.len() {
        s.pop();
        s.push('~');
    }
    s
}

impl Board {
    /// On stderr, when it is a terminal; None elsewhere (then the plain lines are printed).
    pub fn on_terminal(places: &[(String, usize)]) -> Option<Board> {
        use std::io::IsTerminal;
        let plain = std::env::var("SCALECTL_PLAIN_PROGRESS").is_ok_and(|v| !v.is_empty() && v != "0");
        if !std::io::stderr().is_terminal() || plain {
            return None;
        }
        let rows = console::Term::stderr().size_checked().map_or(24, |(rows, _)| rows as usize);
        Some(Board::new(places, ProgressDrawTarget::stderr(), rows))
    }

    /// A board drawing to `target`, a terminal of `rows` rows.
    pub fn new(places: &[(String, usize)], target: ProgressDrawTarget, rows: usize) -> Board {
        let multi = MultiProgress::with_draw_target(target);
        let total: u64 = places.iter().map(|(_, n)| *n as u64).sum();
        let run = multi.add(ProgressBar::new(total).with_style(run_style()).with_prefix("all"));
        run.enable_steady_tick(TICK);
        let count = places.iter().map(|(p, n)| (p.clone(), (*n as u64, 0))).collect();
        let board = Board { multi, run, places: Mutex::new(Places { count, ..Places::default() }), room: rows.saturating_sub(3).clamp(1, 40) };
        board.run.set_message(board.summary(&board.places.lock().unwrap_or_else(|e| e.into_inner())));
        board
    }

    fn summary(&self, p: &Places) -> String {
        let n = p.count.len();
        format!("{} of {n} {} done", p.finished, if n == 1 { "place" } else { "places" })
    }

    /// `place` began a step.
    pub fn say(&self, place: &str, step: &str) {
        let mut p = self.places.lock().unwrap_or_else(|e| e.into_inner());
        let bar = self.line(&mut p, place);
        bar.set_message(step.to_string());
        p.busy.insert(place.to_string());
    }

    /// `n` more of `place`'s actions are done; its line goes once all are.
    pub fn done(&self, place: &str, n: usize) {
        let mut p = self.places.lock().unwrap_or_else(|e| e.into_inner());
        let (planned, done) = p.count.get(place).copied().unwrap_or((0, 0));
        let now = (done + n as u64).min(planned);
        p.count.insert(place.to_string(), (planned, now));
        p.busy.remove(place);
        self.run.inc(now - done);
        if let Some(i) = p.lines.iter().position(|(name, _)| name == place) {
            p.lines[i].1.set_position(now);
            if now == planned {
                let (_, bar) = p.lines.remove(i);
                bar.finish_and_clear();
                self.multi.remove(&bar);
            }
        }
        if now == planned && done < planned {
            p.finished += 1;
        }
        self.run.set_message(self.summary(&p));
    }

    /// A line of its own, moved to the most recently active; the least recently active line
    /// gives way when the terminal has no room for another.
    fn line(&self, p: &mut Places, place: &str) -> ProgressBar {
        if let Some(i) = p.lines.iter().position(|(name, _)| name == place) {
            let line = p.lines.remove(i);
            let bar = line.1.clone();
            p.lines.push(line);
            return bar;
        }
        if p.lines.len() >= self.room {
            let (_, old) = p.lines.remove(0);
            old.finish_and_clear();
            self.multi.remove(&old);
        }
        let (planned, done) = p.count.get(place).copied().unwrap_or((0, 0));
        let bar = self.multi.insert_before(&self.run, ProgressBar::new(planned).with_style(place_style()).with_prefix(short(place)));
        bar.set_position(done);
        bar.enable_steady_tick(TICK);
        p.lines.push((place.to_string(), bar.clone()));
        bar
    }

    /// The run ended: on success every line goes (the closing line says the rest); on failure
    /// the places still at work stay on screen with the step they stopped at, and those that
    /// were waiting between two phases go.
    pub fn end(&self, ok: bool) {
        let p = self.places.lock().unwrap_or_else(|e| e.into_inner());
        if ok {
            for (_, bar) in &p.lines {
                bar.finish_and_clear();
            }
            self.run.finish_and_clear();
            let _ = self.multi.clear();
        } else {
            for (place, bar) in &p.lines {
                if p.busy.contains(place) {
                    bar.abandon();
                } else {
                    bar.finish_and_clear();
                    self.multi.remove(bar);
                }
            }
            self.run.abandon_with_message(format!("stopped; {}", self.summary(&p)));
        }
    }

    /// The number of place lines shown now.
    #[cfg(test)]
    fn shown(&self) -> usize {
        self.places.lock().unwrap().lines.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indicatif::InMemoryTerm;

    fn board(places: &[(&str, usize)], rows: u16) -> (Board, InMemoryTerm) {
        let term = InMemoryTerm::new(rows, 100);
        let places: Vec<(String, usize)> = places.iter().map(|(p, n)| (p.to_string(), *n)).collect();
        let b = Board::new(&places, ProgressDrawTarget::term_like(Box::new(term.clone())), rows as usize);
        (b, term)
    }

    /// What the terminal shows once the board has drawn (draws are rate-limited).
    fn screen(b: &Board, term: &InMemoryTerm) -> String {
        b.run.tick();
        std::thread::sleep(Duration::from_millis(300));
        b.run.tick();
        term.contents()
    }

    #[test]
    fn each_busy_host_has_a_line_with_its_step_and_count_above_the_whole_run() {
        let (b, term) = board(&[("web-1", 4), ("web-2", 3), ("cache", 2)], 20);
        b.say("web-1", "installing nginx");
        b.done("web-1", 1);
        b.say("web-2", "uploading release abc (2 MB)");
        let s = screen(&b, &term);
        let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 3, "{s}");
        assert!(lines[0].contains("web-1") && lines[0].contains("1/4") && lines[0].contains("installing nginx"), "{s}");
        assert!(lines[1].contains("web-2") && lines[1].contains("0/3") && lines[1].contains("uploading release abc"), "{s}");
        assert!(lines[2].contains("all") && lines[2].contains("1/9") && lines[2].contains("0 of 3 places done"), "{s}");
    }

    #[test]
    fn a_host_whose_actions_are_all_done_leaves_the_screen_and_counts_as_done() {
        let (b, term) = board(&[("web-1", 2), ("web-2", 2)], 20);
        b.say("web-1", "writing 3 files");
        b.say("web-2", "writing 3 files");
        b.done("web-1", 2);
        let s = screen(&b, &term);
        assert!(!s.contains("web-1"), "{s}");
        assert!(s.contains("web-2") && s.contains("2/4") && s.contains("1 of 2 places done"), "{s}");
        // A count beyond the plan's (a rollback's steps) never runs the bar past its length.
        b.done("web-2", 5);
        assert_eq!(b.run.position(), 4);
        assert!(screen(&b, &term).contains("2 of 2 places done"));
    }

    #[test]
    fn fifty_busy_hosts_never_draw_more_lines_than_the_terminal_has() {
        let hosts: Vec<(String, usize)> = (1..=50).map(|i| (format!("app-{i}"), 3)).collect();
        let refs: Vec<(&str, usize)> = hosts.iter().map(|(h, n)| (h.as_str(), *n)).collect();
        let (b, term) = board(&refs, 12);
        for (h, _) in &hosts {
            b.say(h, "installing packages");
        }
        assert_eq!(b.shown(), 9);
        let s = screen(&b, &term);
        // The most recently active hosts are the ones shown, and the whole run's line is last.
        assert!(s.contains("app-50") && !s.contains("app-41 "), "{s}");
        let last = s.lines().filter(|l| !l.trim().is_empty()).last().unwrap_or("");
        assert!(last.contains("0/150") && last.contains("0 of 50 places done"), "{s}");
    }

    #[test]
    fn a_failed_run_keeps_the_hosts_it_stopped_at_on_screen() {
        let (b, term) = board(&[("web-1", 3), ("web-2", 3)], 20);
        b.say("web-1", "writing 2 files");
        b.done("web-1", 3);
        b.say("web-2", "restarting app@3001, waiting for /ready");
        b.end(false);
        let s = screen(&b, &term);
        assert!(s.contains("web-2") && s.contains("restarting app@3001"), "{s}");
        assert!(s.contains("stopped; 1 of 2 places done"), "{s}");
        assert!(!s.contains("web-1"), "{s}");
    }

    #[test]
    fn a_failed_run_clears_the_hosts_that_were_waiting_between_phases() {
        let (b, term) = board(&[("web-1", 3), ("web-2", 3), ("web-3", 3)], 20);
        // Every host uploads (one action each), then web-2 fails restarting; web-1 and web-3
        // wait for their turn, their uploads done.
        for h in ["web-1", "web-2", "web-3"] {
            b.say(h, "uploading release abc (2 MB)");
            b.done(h, 1);
        }
        b.say("web-2", "restarting app@3001, waiting for /ready");
        b.end(false);
        let s = screen(&b, &term);
        assert!(s.contains("web-2") && s.contains("restarting app@3001"), "{s}");
        assert!(!s.contains("web-1") && !s.contains("web-3"), "{s}");
        assert!(s.contains("stopped; 0 of 3 places done"), "{s}");
    }

    #[test]
    fn a_long_name_is_cut_with_a_mark() {
        assert_eq!(short("db"), "db");
        assert_eq!(short("a-very-long-host-name-indeed"), "a-very-long-hos~");
    }
}
