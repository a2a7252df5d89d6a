//! The live progress display: an indicatif spinner on stderr with the running level, its
//! window, and requests per second so far; finished levels stay printed above it.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress display; hidden when disabled or when stderr is not a terminal.
pub struct Progress {
    bar: ProgressBar,
    scope: parking_lot::Mutex<String>,
    level: parking_lot::Mutex<String>,
}

impl Progress {
    /// A display drawn on stderr when `enabled`.
    pub fn new(enabled: bool) -> Self {
        let target = if enabled {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(
            ProgressStyle::with_template("{spinner:.cyan} [{elapsed_precise}] {msg}")
                .expect("static template")
                .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ "),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        Self {
            bar,
            scope: parking_lot::Mutex::default(),
            level: parking_lot::Mutex::default(),
        }
    }

    /// A display that draws nothing.
    pub fn hidden() -> Self {
        Self::new(false)
    }

    /// Names what the next levels belong to (a report scenario); empty for none.
    pub fn set_scope(&self, scope: &str) {
        *self.scope.lock() = scope.to_string();
    }

    fn prefixed(&self, text: &str) -> String {
        let scope = self.scope.lock();
        if scope.is_empty() {
            text.to_string()
        } else {
            format!("{scope}: {text}")
        }
    }

    /// Announces a new level.
    pub fn start(&self, level: &str) {
        *self.level.lock() = self.prefixed(level);
        self.bar.set_message(self.level.lock().clone());
    }

    /// Updates the running line.
    pub fn tick(&self, status: &str) {
        self.bar
            .set_message(format!("{} | {status}", self.level.lock()));
    }

    /// Prints a finished line above the spinner.
    pub fn finish(&self, line: &str) {
        if !self.bar.is_hidden() {
            self.bar.println(format!("  {}", self.prefixed(line)));
        }
    }

    /// Runs `f` (which prints) with the spinner hidden.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    /// Removes the spinner.
    pub fn clear(&self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
