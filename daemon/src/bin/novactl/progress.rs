//! A spinner on stderr while the daemon works (starting, stopping, creating...). Only for a
//! person at a terminal: never with --json, never when stderr is a file or pipe.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

pub struct Spinner {
    bar: Option<ProgressBar>,
    started: Instant,
}

impl Spinner {
    pub fn start(enabled: bool, message: String) -> Spinner {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
                bar.set_style(style);
            }
            bar.set_message(message);
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Spinner {
            bar,
            started: Instant::now(),
        }
    }

    /// Clears the spinner and returns the suffix for the result line: the elapsed time when
    /// a spinner was shown and the wait was noticeable.
    pub fn finish(mut self) -> String {
        let elapsed = self.started.elapsed();
        match self.bar.take() {
            Some(bar) => {
                bar.finish_and_clear();
                if elapsed >= Duration::from_secs(1) {
                    format!(" ({:.1}s)", elapsed.as_secs_f64())
                } else {
                    String::new()
                }
            }
            None => String::new(),
        }
    }
}

impl Drop for Spinner {
    /// On an error path the spinner must not linger above the error message.
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
