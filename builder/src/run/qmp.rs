//! A minimal QMP client (QEMU's JSON machine protocol over a Unix socket): the greeting, the
//! capabilities handshake, and the two commands `fledge run` sends to end a guest politely.
//!
//! Every read and write is bounded by a timeout: a QEMU that stopped answering never blocks the
//! run, it only makes the polite path fail (the caller then kills QEMU).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long one QMP exchange may take.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest QMP line read (events carry little; this bounds a misbehaving peer).
const MAX_LINE: usize = 64 * 1024;

/// A connected QMP session (after `qmp_capabilities`).
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects to `socket`, retrying until `within` has passed (QEMU creates it shortly after
    /// it starts), and negotiates capabilities.
    pub fn connect(socket: &Path, within: Duration) -> io::Result<Qmp> {
        let deadline = Instant::now() + within;
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        let greeting = qmp.read()?;
        if greeting.get("QMP").is_none() {
            return Err(io::Error::other(format!("not a QMP greeting: {greeting}")));
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// Presses the ACPI power button.
    pub fn system_powerdown(&mut self) -> io::Result<()> {
        self.execute("system_powerdown", None).map(drop)
    }

    /// Types Ctrl-Alt-Delete on the PS/2 keyboard (on machines that have one).
    pub fn ctrl_alt_delete(&mut self) -> io::Result<()> {
        let keys = ["ctrl", "alt", "delete"].map(|k| json!({"type": "qcode", "data": k}));
        self.execute("send-key", Some(json!({ "keys": keys })))
            .map(drop)
    }

    /// Sends a command and waits for its `return` (events in between are skipped).
    fn execute(&mut self, command: &str, arguments: Option<Value>) -> io::Result<Value> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes())?;
        loop {
            let v = self.read()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(io::Error::other(format!("QMP {command}: {e}")));
            }
        }
    }

    fn read(&mut self) -> io::Result<Value> {
        let mut line = String::new();
        let n = (&mut self.reader)
            .take(MAX_LINE as u64)
            .read_line(&mut line)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        serde_json::from_str(&line).map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A fake QEMU: greets, then answers each command with `return` after an event.
    #[test]
    fn handshake_and_commands_skip_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            w.write_all(b"{\"QMP\": {\"version\": {}}}\n").unwrap();
            let mut seen = Vec::new();
            let mut line = String::new();
            while r.read_line(&mut line).unwrap() > 0 {
                let v: Value = serde_json::from_str(&line).unwrap();
                seen.push(v);
                w.write_all(b"{\"event\": \"POWERDOWN\"}\n{\"return\": {}}\n")
                    .unwrap();
                line.clear();
            }
            seen
        });
        let mut q = Qmp::connect(&path, Duration::from_secs(5)).unwrap();
        q.system_powerdown().unwrap();
        q.ctrl_alt_delete().unwrap();
        drop(q);
        let seen = server.join().unwrap();
        assert_eq!(seen[0]["execute"], "qmp_capabilities");
        assert_eq!(seen[1]["execute"], "system_powerdown");
        assert_eq!(seen[2]["execute"], "send-key");
        assert_eq!(seen[2]["arguments"]["keys"][2]["data"], "delete");
    }

    #[test]
    fn no_socket_fails_after_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let start = Instant::now();
        let e = Qmp::connect(&dir.path().join("none"), Duration::from_millis(100));
        assert!(e.is_err());
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
