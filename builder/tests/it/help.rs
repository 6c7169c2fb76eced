//! Snapshot tests of `fledge --help` and `fledge build --help`: the text users read first.
//! Rewrite the snapshots with `UPDATE_SNAPSHOTS=1 cargo test -p fledge --test it help` after a
//! deliberate change, and review the diff.

use std::path::PathBuf;
use std::process::Command;

fn check(args: &[&str], snapshot: &str) {
    let o = Command::new(env!("CARGO_BIN_EXE_fledge"))
        .args(args)
        .env("COLUMNS", "100")
        .env_remove("FLEDGE_CACHE_DIR")
        .output()
        .unwrap();
    assert!(o.status.success(), "fledge {args:?} failed");
    let got = String::from_utf8(o.stdout).unwrap();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(snapshot);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; create it with UPDATE_SNAPSHOTS=1", path.display()));
    assert!(
        got == want,
        "fledge {args:?} differs from {}; if the change is intended, rerun with UPDATE_SNAPSHOTS=1\n--- got\n{got}\n--- want\n{want}",
        path.display()
    );
}

#[test]
fn top_level_help() {
    check(&["--help"], "help.txt");
}

#[test]
fn build_help() {
    check(&["build", "--help"], "build-help.txt");
}
