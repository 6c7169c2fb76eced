//! The temp-project helper shared by the end-to-end tests of the user-facing commands.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

pub const BUSYBOX: &[u8] = &elf_stub::<103>(b"not really busybox, but bytes to carry\n");
pub const AGENT: &[u8] = &elf_stub::<85>(b"agent stand-in bytes\n");

/// A 64-byte ELF header of a static x86_64 executable (no program headers) followed by `tail`:
/// a stand-in the build's runnable check takes for a program. `N` is 64 + `tail.len()`.
pub const fn elf_stub<const N: usize>(tail: &[u8]) -> [u8; N] {
    let head: [u8; 64] = [
        0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, // ident: 64-bit, LE
        2, 0, 62, 0, 1, 0, 0, 0, // ET_EXEC, EM_X86_64, version 1
        0, 0, 0, 0, 0, 0, 0, 0, // entry
        0, 0, 0, 0, 0, 0, 0, 0, // phoff
        0, 0, 0, 0, 0, 0, 0, 0, // shoff
        0, 0, 0, 0, 64, 0, 56, 0, 0, 0, 64, 0, 0, 0, 0, 0, // flags, sizes, no headers
    ];
    assert!(
        N == 64 + tail.len(),
        "elf_stub: N must be 64 + the tail's length"
    );
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = if i < 64 { head[i] } else { tail[i - 64] };
        i += 1;
    }
    out
}
pub const DEFAULT_MODE: &str = "[agent]\nsource_strategy = \"local\"\npath = \"tools/kestrel\"\n";

/// A project directory with a fake busybox and agent, and helpers to run fledge in it.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new() -> Project {
        let p = Project {
            dir: tempfile::tempdir().unwrap(),
        };
        p.file("tools/busybox", BUSYBOX, 0o755);
        p.file("tools/kestrel", AGENT, 0o755);
        p
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn file(&self, rel: &str, body: &[u8], mode: u32) {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, body).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Writes fledge.toml: the common head plus `body`.
    pub fn config(&self, body: &str) {
        let text = format!(
            "version = \"1\"\nstrategy = \"initramfs\"\n[source]\nbusybox_url = \"tools/busybox\"\nbusybox_sha256 = \"{}\"\n{body}",
            hex(BUSYBOX)
        );
        self.file("fledge.toml", text.as_bytes(), 0o644);
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fledge"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("FLEDGE_CACHE_DIR", self.path("cache"))
            .env_remove("SOURCE_DATE_EPOCH");
        cmd
    }

    pub fn fledge(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs fledge with extra environment variables.
    pub fn fledge_env(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        let mut cmd = self.command(args);
        cmd.envs(envs.iter().copied());
        cmd.output().unwrap()
    }

    /// Builds `out` uncompressed and returns its bytes.
    pub fn build(&self, out: &str, envs: &[(&str, &str)]) -> Vec<u8> {
        let o = self.fledge_env(&["build", "-o", out, "--compression", "none"], envs);
        assert!(
            o.status.success(),
            "build failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        fs::read(self.path(out)).unwrap()
    }

    /// Runs fledge and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.fledge(args);
        assert!(
            o.status.success(),
            "fledge {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// Every file under the project except the cache, relative.
    pub fn files(&self) -> Vec<String> {
        fn walk(root: &std::path::Path, d: &std::path::Path, out: &mut Vec<String>) {
            for e in fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                if rel == "cache" {
                    continue;
                }
                if p.is_dir() && !p.is_symlink() {
                    walk(root, &p, out);
                } else {
                    out.push(rel);
                }
            }
        }
        let mut v = Vec::new();
        walk(self.dir.path(), self.dir.path(), &mut v);
        v.sort();
        v
    }
}

pub fn hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}
