//! End to end at the edges of the process: a stdout that cannot be written, a reader that goes
//! away, a download that stalls, and a build interrupted while downloading.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fledge::archive::{Content, Entry, Kind, NewcWriter};

use crate::common::Project;

/// An image of `n` empty files, uncompressed.
fn image(p: &Project, name: &str, n: u32) {
    let mut w = NewcWriter::new(Vec::new());
    for i in 0..n {
        w.append(&Entry {
            path: fledge::archive::Name::new(&format!("f{i:06}")),
            kind: Kind::File(Content::Empty),
            perm: 0o644,
            uid: 0,
            gid: 0,
            ino: i + 1,
            nlink: 1,
            mtime: 0,
        })
        .unwrap();
    }
    std::fs::write(p.path(name), w.finish().unwrap()).unwrap();
}

#[test]
fn a_full_stdout_fails_and_a_closed_pipe_ends_quietly() {
    let p = Project::new();
    image(&p, "img", 20_000);
    for args in [&["inspect", "img"][..], &["inspect", "--json", "img"]] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let o = p.command(args).stdout(full).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.starts_with("error: cannot write the listing of img: No space left on device"),
            "{args:?}: {err}"
        );
    }
    // The other commands' output too.
    p.config(crate::common::DEFAULT_MODE);
    for args in [
        &["validate"][..],
        &["build", "-o", "x.img"],
        &["completions", "bash"],
    ] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let o = p.command(args).stdout(full).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("error: cannot write to stdout: No space left on device"),
            "{args:?}: {err}"
        );
    }
    let mut child = p
        .command(&["inspect", "img"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&o.stderr), "");
}

/// Serves headers and a few bytes of a large body, then nothing.
fn stalling_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/busybox", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = s.read(&mut [0u8; 4096]);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\nabc");
                std::thread::sleep(Duration::from_secs(60));
            });
        }
    });
    url
}

fn remote_busybox(p: &Project, url: &str) {
    let text = format!(
        "version = \"1\"\nstrategy = \"initramfs\"\n[source]\nbusybox_url = \"{url}\"\n{}",
        crate::common::DEFAULT_MODE
    );
    p.file("fledge.toml", text.as_bytes(), 0o644);
}

#[test]
fn a_stalled_download_names_the_idle_timeout_set_in_the_environment() {
    let p = Project::new();
    remote_busybox(&p, &stalling_server());
    let t = Instant::now();
    let o = p.fledge_env(&["build"], &[("FLEDGE_HTTP_IDLE_TIMEOUT", "0.5")]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        err.contains("the server sent nothing for 0.5 s while reading the body (idle timeout, FLEDGE_HTTP_IDLE_TIMEOUT)"),
        "{err}"
    );
    assert!(err.contains("source_strategy = \"local\""), "{err}");
}

#[test]
fn an_interrupted_download_leaves_nothing_in_the_cache() {
    let p = Project::new();
    remote_busybox(&p, &stalling_server());
    let mut child = p
        .command(&["build"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let blobs = p.path("cache/blobs");
    let temps = || -> Vec<String> {
        std::fs::read_dir(&blobs)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let t = Instant::now();
    while temps().is_empty() {
        assert!(t.elapsed() < Duration::from_secs(10), "no download started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert_eq!(temps(), Vec::<String>::new());
}
