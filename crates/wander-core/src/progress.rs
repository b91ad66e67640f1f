//! Progress bars on stderr with rate and ETA. On a terminal they redraw in place; when stderr
//! is a file or a pipe (CI logs, `nohup`), each bar prints its state as a plain line every
//! 30 seconds instead, so a long stage still shows its ETA; `WANDER_NO_PROGRESS` silences them.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

/// A progress bar (indicatif's), re-exported so library crates need no direct dependency.
pub type Bar = ProgressBar;

/// A progress bar for `total` units of work, labelled with `what` (e.g. "rows", "tok").
pub fn bar(total: u64, label: &str, unit: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(total), draw_target());
    let template = format!(
        "{{prefix:>12}} [{{elapsed_precise}}] {{wide_bar}} {{human_pos}}/{{human_len}} {unit} {{per_sec}} ETA {{eta}} {{msg}}"
    );
    pb.set_style(
        ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_prefix(label.to_string());
    pb
}

/// A spinner for work of unknown size.
pub fn spinner(label: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(None, draw_target());
    pb.set_style(
        ProgressStyle::with_template("{prefix:>12} {spinner} {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.set_prefix(label.to_string());
    pb
}

/// How often a bar prints a line when stderr is not a terminal.
const LOG_INTERVAL: Duration = Duration::from_secs(30);

fn draw_target() -> ProgressDrawTarget {
    use std::io::IsTerminal;
    if std::env::var_os("WANDER_NO_PROGRESS").is_some() {
        ProgressDrawTarget::hidden()
    } else if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::term_like_with_hz(Box::new(LogLines::new(LOG_INTERVAL)), 1)
    }
}

/// A "terminal" that turns a bar's redraws into one stderr line per `interval`: cursor
/// movements are ignored and a frame is printed only when the interval has passed.
#[derive(Debug)]
struct LogLines {
    interval: Duration,
    state: Mutex<(Instant, String)>,
}

impl LogLines {
    fn new(interval: Duration) -> Self {
        LogLines {
            interval,
            state: Mutex::new((Instant::now(), String::new())),
        }
    }

    fn frame(&self) -> std::sync::MutexGuard<'_, (Instant, String)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl TermLike for LogLines {
    fn width(&self) -> u16 {
        // The bar takes what the counts and ETA leave of this width; wide enough that a
        // line is never wrapped, narrow enough to read in a log.
        120
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.write_str(s)
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.frame().1.push_str(s);
        Ok(())
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        let mut frame = self.frame();
        let line = frame.1.trim().to_string();
        frame.1.clear();
        if !line.is_empty() && frame.0.elapsed() >= self.interval {
            frame.0 = Instant::now();
            writeln!(std::io::stderr(), "{line}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_print_at_most_once_per_interval() {
        let term = LogLines::new(Duration::from_millis(50));
        term.write_str("early").unwrap();
        term.flush().unwrap();
        assert!(
            term.frame().1.is_empty(),
            "a frame is dropped, not accumulated"
        );
        let before = term.frame().0;
        std::thread::sleep(Duration::from_millis(60));
        term.write_str("late  ").unwrap();
        term.flush().unwrap();
        assert!(
            term.frame().0 > before,
            "a frame after the interval is printed"
        );
    }
}
