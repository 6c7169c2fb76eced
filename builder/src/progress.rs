//! Progress of the long steps (downloads, compression): an indicatif bar on stderr when stderr
//! is a terminal and the user did not ask for `-q`, nothing otherwise (the steps log plain lines
//! instead).
//!
//! This module owns the decision whether to draw; the stages only create a [`Bar`] and feed it
//! byte counts.

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

static ALLOWED: AtomicBool = AtomicBool::new(false);

/// Allows bars (the CLI calls this unless `-q`); the library draws none by default.
pub fn allow(on: bool) {
    ALLOWED.store(on, Ordering::Relaxed);
}

/// Whether bars are drawn: allowed, and stderr is a terminal.
pub fn drawing() -> bool {
    ALLOWED.load(Ordering::Relaxed) && io::stderr().is_terminal()
}

/// A byte-counting bar, or nothing when bars are not drawn.
pub struct Bar(Option<ProgressBar>);

impl Bar {
    /// A bar for `label` (`busybox: downloading`), with the total when known.
    pub fn bytes(label: &str, total: Option<u64>) -> Bar {
        if !drawing() {
            return Bar(None);
        }
        let (bar, template) = match total {
            Some(t) => (
                ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr()),
                "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})",
            ),
            None => (
                ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
                "{spinner} {msg} {bytes} ({bytes_per_sec})",
            ),
        };
        let style = ProgressStyle::with_template(template)
            .expect("the templates are valid")
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(label.to_string());
        bar.tick();
        Bar(Some(bar))
    }

    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }

    /// Leaves the bar's last state on screen.
    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish();
        }
    }

    /// Whether this bar is drawn.
    pub fn is_drawn(&self) -> bool {
        self.0.is_some()
    }
}

/// A writer that advances a bar by the bytes passing through it.
pub struct Counting<'a, W: Write> {
    pub inner: W,
    pub bar: &'a Bar,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counting_passes_bytes_through_and_draws_nothing_when_not_allowed() {
        allow(false);
        let bar = Bar::bytes("x", Some(10));
        assert!(!bar.is_drawn());
        let mut c = Counting {
            inner: Vec::new(),
            bar: &bar,
        };
        c.write_all(b"hello").unwrap();
        bar.finish();
        assert_eq!(c.inner, b"hello");
    }
}
