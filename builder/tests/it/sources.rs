//! End to end: where busybox and the agent may come from, and that a digest applies wherever
//! they come from.

use crate::common::{hex, Project, AGENT, BUSYBOX};

fn config(p: &Project, source: &str, agent: &str) {
    let text = format!(
        "version = \"1\"\nstrategy = \"initramfs\"\n[source]\n{source}\n[agent]\n{agent}\n"
    );
    p.file("fledge.toml", text.as_bytes(), 0o644);
}

#[test]
fn file_urls_and_agent_checksums_are_honoured_by_build_and_validate() {
    let p = Project::new();
    let busybox = format!(
        "busybox_url = \"file://localhost{}\"\nbusybox_sha256 = \"{}\"",
        p.path("tools/busybox").display(),
        hex(BUSYBOX)
    );
    let wrong = "0".repeat(64);
    let cases = [
        ("local, right digest", format!("source_strategy = \"local\"\npath = \"tools/kestrel\"\nchecksum = \"{}\"", hex(AGENT)), None),
        ("local, wrong digest", format!("source_strategy = \"local\"\npath = \"tools/kestrel\"\nchecksum = \"{wrong}\""), Some("sha256 mismatch")),
        ("http file://, right digest", format!("source_strategy = \"http\"\nurl = \"file://tools/kestrel\"\nchecksum = \"sha256:{}\"", hex(AGENT)), None),
        ("http file://, wrong digest", format!("source_strategy = \"http\"\nurl = \"file://tools/kestrel\"\nchecksum = \"{wrong}\""), Some("sha256 mismatch")),
    ];
    for (name, agent, fails) in cases {
        config(&p, &busybox, &agent);
        for cmd in [&["validate"][..], &["build", "-o", "img"]] {
            let o = p.fledge(cmd);
            let err = String::from_utf8_lossy(&o.stderr);
            match fails {
                None => assert!(o.status.success(), "{name} {cmd:?}: {err}"),
                Some(want) => {
                    assert_eq!(o.status.code(), Some(1), "{name} {cmd:?}: {err}");
                    assert!(
                        err.contains(want) && err.contains("kestrel agent"),
                        "{name} {cmd:?}: {err}"
                    );
                }
            }
        }
    }
}
