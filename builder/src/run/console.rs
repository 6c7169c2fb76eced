//! The guest's serial console: streamed to the terminal as it arrives, its last lines kept for
//! error reports, and read for the two lines that end a run - fledge-init's report of the
//! workload's exit status and a kernel panic.
//!
//! fledge-init prints `fledge-init: exit-status=N` (`fledge_abi::exit_status`) just before it
//! powers off; with `fledge.log=both`, its default, the line reaches the console even under
//! `quiet loglevel=1`. The kernel prints `Kernel panic - not syncing` at emergency level,
//! which `loglevel=1` still shows.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Lines kept for error reports.
const TAIL_LINES: usize = 40;
/// The longest line kept whole (a guest printing without newlines cannot grow memory).
const MAX_LINE: usize = 4096;

/// What the console has shown so far.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// The workload's status from fledge-init's report line.
    pub status: Option<i32>,
    /// The kernel's panic line.
    pub panic: Option<String>,
    /// Whether the guest printed anything yet.
    pub any_output: bool,
    /// Whether the kernel said it powers off or restarts (an orderly end, status line or not).
    pub shut_down: bool,
    tail: VecDeque<String>,
    partial: String,
}

impl Seen {
    /// The last lines printed, oldest first, for an error message.
    pub fn tail(&self) -> String {
        let mut out: Vec<&str> = self.tail.iter().map(String::as_str).collect();
        if !self.partial.is_empty() {
            out.push(&self.partial);
        }
        out.join("\n")
    }

    /// Takes in console bytes (CRs dropped: the serial line discipline adds them).
    fn feed(&mut self, bytes: &[u8]) {
        self.any_output |= !bytes.is_empty();
        for chunk in String::from_utf8_lossy(bytes).split_inclusive('\n') {
            let (text, done) = match chunk.strip_suffix('\n') {
                Some(t) => (t, true),
                None => (chunk, false),
            };
            for c in text.chars().filter(|&c| c != '\r') {
                if self.partial.len() < MAX_LINE {
                    self.partial.push(c);
                }
            }
            if done {
                let line = std::mem::take(&mut self.partial);
                self.line(line);
            }
        }
    }

    fn line(&mut self, line: String) {
        if let Some(s) = status_line(&line) {
            self.status = Some(s);
        }
        if line.contains("reboot: Power down") || line.contains("reboot: Restarting system") {
            self.shut_down = true;
        }
        if self.panic.is_none() && line.contains("Kernel panic - not syncing") {
            self.panic = Some(line.trim().to_owned());
        }
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }
}

/// The workload's status if `line` is fledge-init's exit-status line.
pub fn status_line(line: &str) -> Option<i32> {
    fledge_abi::exit_status::parse(line).map(i32::from)
}

/// The console reader: a thread copying QEMU's stdout to `out` and into a shared [`Seen`].
pub struct Console {
    seen: Arc<Mutex<Seen>>,
    thread: Option<JoinHandle<()>>,
}

impl Console {
    /// Starts copying `from` (QEMU's stdout) to `out` (the terminal, or a sink).
    pub fn start(mut from: impl Read + Send + 'static, mut out: Box<dyn Write + Send>) -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = Arc::clone(&seen);
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let _ = out.write_all(&buf[..n]);
                let _ = out.flush();
                lock(&shared).feed(&buf[..n]);
            }
        });
        Console {
            seen,
            thread: Some(thread),
        }
    }

    /// A copy of what has been seen so far.
    pub fn seen(&self) -> Seen {
        lock(&self.seen).clone()
    }

    /// Waits for the stream to end (QEMU has exited), then returns everything seen.
    pub fn finish(mut self) -> Seen {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.seen()
    }
}

fn lock(m: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_of_fledge_init() {
        let cases = [
            ("fledge-init: exit-status=7", Some(7)),
            ("[    2.1] fledge-init: exit-status=143\r", Some(143)),
            ("fledge-init: /bin/kestrel exited with status 7", None),
            ("fledge-init: exit-status=300", None),
        ];
        for (i, (line, want)) in cases.iter().enumerate() {
            assert_eq!(status_line(line), *want, "case {i}: {line}");
        }
    }

    #[test]
    fn feed_splits_lines_across_chunks_and_keeps_a_tail() {
        let mut s = Seen::default();
        s.feed(b"boot\r\nfledge-init: exit-st");
        assert_eq!(s.status, None);
        s.feed(b"atus=7\r\n[ 2.0] Kernel panic - not syncing: Attempted to kill init!\n");
        assert_eq!(s.status, Some(7));
        assert!(s.panic.as_deref().unwrap().ends_with("kill init!"));
        assert!(!s.shut_down);
        s.feed(b"[    4.389467] reboot: Power down\r\n");
        assert!(s.shut_down);
        for i in 0..100 {
            s.feed(format!("line {i}\n").as_bytes());
        }
        s.feed(b"partial");
        let tail = s.tail();
        assert!(tail.starts_with("line 60\n"), "{tail}");
        assert!(tail.ends_with("line 99\npartial"), "{tail}");
    }

    #[test]
    fn console_copies_and_parses() {
        let input: &[u8] = b"hello\nfledge-init: exit-status=137\n";
        let c = Console::start(input, Box::new(std::io::sink()));
        let seen = c.finish();
        assert_eq!(seen.status, Some(137));
        assert!(seen.any_output);
        assert_eq!(seen.tail(), "hello\nfledge-init: exit-status=137");
    }
}
