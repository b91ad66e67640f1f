//! Progress bars on stderr with rate and ETA; silent when stderr is not a terminal or when
//! `WANDER_NO_PROGRESS` is set, so logs and `--json` output stay clean.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

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

fn draw_target() -> ProgressDrawTarget {
    if std::env::var_os("WANDER_NO_PROGRESS").is_some() {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    }
}
