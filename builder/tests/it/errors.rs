//! The error text of the most likely mistakes, end to end: for each, `fledge build` exits 1,
//! prints exactly this one line (what, where, how to fix) and writes nothing.

use crate::common::{hex, Project, BUSYBOX, DEFAULT_MODE};

/// (case, fledge.toml body after the common head, the whole expected stderr without `error: `).
/// `HEAD` in a body is replaced by the common head (version, strategy, local busybox); bodies
/// without it are the whole file.
const CASES: &[(&str, &str, &str)] = &[
    (
        "wrong sha256",
        "version = \"1\"\nstrategy = \"initramfs\"\n[source]\nbusybox_url = \"tools/busybox\"\nbusybox_sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\nAGENT",
        "busybox from tools/busybox: sha256 mismatch: expected 0000000000000000000000000000000000000000000000000000000000000000, got BUSYBOX_SHA; check the digest in your config or the file it points to",
    ),
    (
        "malformed sha256",
        "version = \"1\"\nstrategy = \"initramfs\"\n[source]\nbusybox_url = \"tools/busybox\"\nbusybox_sha256 = \"abc\"\nAGENT",
        "fledge.toml:5: `source.busybox_sha256` must be a sha256 digest: 64 hex digits, optionally prefixed `sha256:`",
    ),
    (
        "missing mapping source",
        "HEAD AGENT[mappings]\n\"./nope/app\" = \"/usr/bin/app\"\n",
        "fledge.toml:10: `mappings.\"./nope/app\"` names ./nope/app, which cannot be read (No such file or directory (os error 2)): fix the path (relative to the config's directory) or create it",
    ),
    (
        "agent in custom mode",
        "HEAD [init]\npath = \"./x\"\nAGENT",
        "fledge.toml:8: `agent` is not allowed with `init.path` (custom init): the kestrel agent runs only in default mode; remove [agent], or remove [init] to use the agent",
    ),
    (
        "relative destination",
        "HEAD AGENT[mappings]\n\"tools/kestrel\" = \"usr/bin/k\"\n",
        "fledge.toml:10: `mappings.\"tools/kestrel\"` has destination \"usr/bin/k\", which must be absolute: write \"/usr/bin/k\"",
    ),
    (
        "`..` in destination",
        "HEAD AGENT[mappings]\n\"tools/kestrel\" = \"/usr/../etc/k\"\n",
        "fledge.toml:10: `mappings.\"tools/kestrel\"` has destination \"/usr/../etc/k\", which must not contain `..`: write the absolute image path it means",
    ),
    (
        "a file named as the newc trailer",
        "HEAD AGENT[mappings]\n\"tools/kestrel\" = \"/TRAILER!!!\"\n",
        "fledge.toml:10: `mappings.\"tools/kestrel\"` puts /TRAILER!!! in the image, but the newc format ends an archive at an entry named TRAILER!!!: the kernel would not create it (give it another name)",
    ),
    (
        "no /init in none mode",
        "HEAD [init]\nnone = true\n",
        "fledge.toml: `init.none` is true, but no mapping provides /init: add `\"./your-init\" = \"/init\"` under [mappings]",
    ),
    (
        "unreachable URL",
        "version = \"1\"\nstrategy = \"initramfs\"\n[source]\nbusybox_url = \"http://127.0.0.1:1/x\"\nAGENT",
        "busybox: cannot download http://127.0.0.1:1/x: Connection refused (os error 111) (tried twice); check the URL and the network; to build offline, use a local copy: a path or file:// URL for busybox, [agent] source_strategy = \"local\" (or a file:// url) for the agent",
    ),
    (
        "unreadable busybox (a directory)",
        "version = \"1\"\nstrategy = \"initramfs\"\n[source]\nbusybox_url = \"tools\"\nAGENT",
        "busybox: ./tools is not a regular file; point the config at the file itself",
    ),
    (
        "missing busybox file",
        "version = \"1\"\nstrategy = \"initramfs\"\n[source]\nbusybox_url = \"tools/bb\"\nAGENT",
        "busybox: cannot read ./tools/bb: No such file or directory (os error 2); check the path in the config (relative paths start at the config's directory)",
    ),
    (
        "custom init is a directory",
        "HEAD [init]\npath = \"./tools\"\n",
        "fledge.toml: `init.path` names ./tools, which is not a regular file: point `init.path` at your init script or program",
    ),
    (
        "oci_rootfs on ext4",
        "version = \"1\"\nstrategy = \"oci_rootfs\"\n[filesystem]\ntype = \"ext4\"\n",
        "fledge.toml:4: `filesystem.type` is \"ext4\", a disk only root can make (losetup, mount); fledge writes \"squashfs\" disks, without root and reproducibly: use type = \"squashfs\"",
    ),
    (
        "missing version",
        "strategy = \"initramfs\"\nAGENT",
        "fledge.toml: `version` is missing: add `version = \"1\"`",
    ),
    (
        "bad TOML syntax",
        "HEAD AGENT[mappings\n",
        "fledge.toml:9: invalid TOML: unclosed table, expected `]`",
    ),
    (
        "unknown compression",
        "HEAD AGENT[build]\ncompression = \"bzip9\"\n",
        "fledge.toml:10: `build.compression` is \"bzip9\": use one of gzip, zstd, xz, lz4, none",
    ),
    (
        "duplicate mapping destination",
        "HEAD AGENT[mappings]\n\"tools/kestrel\" = \"/usr/bin/k\"\n\"./tools/busybox\" = \"/usr/bin/k\"\n",
        "fledge.toml:10: `mappings.\"tools/kestrel\"` writes /usr/bin/k, which mappings.\"./tools/busybox\" (line 11) also writes: each path may come from one mapping only",
    ),
    (
        "mapping onto /bin/kestrel",
        "HEAD AGENT[mappings]\n\"tools/busybox\" = \"/bin/kestrel\"\n",
        "fledge.toml:10: `mappings.\"tools/busybox\"` writes /bin/kestrel, where fledge puts the kestrel agent: set [agent] source_strategy = \"local\" and path = \"...\" instead",
    ),
    (
        "init.path with none = true",
        "HEAD [init]\npath = \"./x\"\nnone = true\n",
        "fledge.toml:6: `init` sets both `path` and `none = true`: keep `path` for a custom init that fledge-init starts, or `none = true` for your own /init",
    ),
    (
        "unknown agent strategy",
        "HEAD [agent]\nsource_strategy = \"git\"\n",
        "fledge.toml:7: `agent.source_strategy` is \"git\": use \"release\", \"local\" or \"http\"",
    ),
];

#[test]
fn each_likely_mistake_has_one_exact_sentence_and_writes_nothing() {
    let p = Project::new();
    let head = format!(
        "version = \"1\"\nstrategy = \"initramfs\"\n[source]\nbusybox_url = \"tools/busybox\"\nbusybox_sha256 = \"{}\"\n",
        hex(BUSYBOX)
    );
    let mut failures = Vec::new();
    for (name, body, want) in CASES {
        let text = body.replace("HEAD ", &head).replace("AGENT", DEFAULT_MODE);
        p.file("fledge.toml", text.as_bytes(), 0o644);
        let before = p.files();
        let o = p.fledge(&["-q", "build", "-o", "out/plugin.cpio.gz"]);
        let err = String::from_utf8_lossy(&o.stderr);
        let want = format!("error: {}\n", want.replace("BUSYBOX_SHA", &hex(BUSYBOX)));
        if o.status.code() != Some(1) {
            failures.push(format!(
                "{name}: exit {:?}, stderr {err:?}",
                o.status.code()
            ));
        }
        if err != want {
            failures.push(format!("{name}:\n  got  {err:?}\n  want {want:?}"));
        }
        assert!(o.stdout.is_empty(), "{name}: stdout {:?}", o.stdout);
        assert_eq!(p.files(), before, "{name}: nothing may be written");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
