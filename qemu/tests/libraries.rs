//! Dynamically linked programs boot: real Debian programs of the build machine (curl with its
//! deep glibc closure, perl running a script as the custom init), a musl-dynamic program and an
//! `$ORIGIN` program are mapped exactly as static ones would be, and the guest runs each. A
//! program whose library is missing from the sysroot fails the build with a message that says
//! what to do.
//!
//! Needs what the smoke runs need plus `gcc`, `musl-gcc` (musl-tools), `perl` and `curl`; without
//! them each test prints `SKIP` and passes, except under `CI=true`.

use std::path::{Path, PathBuf};
use std::process::Command;

use fledge_qemu::host::{ci, Host};
use fledge_qemu::project::Project;
use fledge_qemu::tools::Tools;
use fledge_qemu::vm::{Boot, Check};

/// The custom init: perl (from the host, with its libraries) runs the other programs.
const BOOT_PL: &str = r#"#!/usr/bin/perl
print "LIBS-PERL pid=$$\n";
system("/usr/bin/curl", "--version") == 0 or print "LIBS-FAIL curl\n";
system("/usr/local/bin/hello-musl") == 0 or print "LIBS-FAIL musl\n";
system("/opt/app/bin/app") == 0 or print "LIBS-FAIL origin\n";
exec "/bin/busybox", "poweroff", "-f";
"#;

/// Skips (or, under CI, fails) when a tool the test needs is missing.
fn need(test: &str, programs: &[&str]) -> bool {
    for p in programs {
        if fledge_qemu::host::which(p).is_none() {
            let why =
                format!("{test}: {p} is not installed (apt-get install gcc musl-tools perl curl)");
            assert!(!ci(), "{why}");
            eprintln!("SKIP {why}");
            return false;
        }
    }
    true
}

fn cc(compiler: &str, args: &[&str]) {
    let out = Command::new(compiler)
        .args(args)
        .output()
        .expect("compiler runs");
    assert!(
        out.status.success(),
        "{compiler} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds the musl program and the `$ORIGIN` program (`bin/app` + `lib/libgreet.so.1`, RUNPATH
/// `$ORIGIN/../lib`) in `dir`.
fn programs(dir: &Path) -> (PathBuf, PathBuf) {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let w = |name: &str, text: &str| {
        let p = src.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let musl = dir.join("hello-musl");
    let hello = w(
        "hello.c",
        "#include <stdio.h>\nint main(void){puts(\"LIBS-MUSL ok\");return 0;}\n",
    );
    cc("musl-gcc", &[&hello, "-o", musl.to_str().unwrap()]);
    let app = dir.join("app");
    std::fs::create_dir_all(app.join("bin")).unwrap();
    std::fs::create_dir_all(app.join("lib")).unwrap();
    let greet = w(
        "greet.c",
        "#include <stdio.h>\nvoid greet(void){puts(\"LIBS-ORIGIN ok\");}\n",
    );
    let lib = app.join("lib/libgreet.so.1");
    cc(
        "gcc",
        &[
            "-shared",
            "-fPIC",
            "-Wl,-soname,libgreet.so.1",
            &greet,
            "-o",
            lib.to_str().unwrap(),
        ],
    );
    let main = w(
        "app.c",
        "void greet(void);\nint main(void){greet();return 0;}\n",
    );
    let exe = app.join("bin/app");
    cc(
        "gcc",
        &[
            &main,
            "-o",
            exe.to_str().unwrap(),
            lib.to_str().unwrap(),
            "-Wl,-rpath,$ORIGIN/../lib",
        ],
    );
    (musl, app)
}

#[test]
fn dynamic_programs_boot_with_their_libraries() {
    let test = "dynamic_programs_boot_with_their_libraries";
    let Some(host) = Host::for_test(test) else {
        return;
    };
    if !need(test, &["gcc", "musl-gcc", "perl", "curl"]) {
        return;
    }
    let tools = Tools::get().unwrap_or_else(|e| panic!("{test}: {e}"));
    let p = Project::new(
        &host,
        "[init]\npath = \"/usr/local/bin/boot.pl\"\n\n[mappings]\n\
         \"boot.pl\" = \"/usr/local/bin/boot.pl\"\n\
         \"/usr/bin/perl\" = \"/usr/bin/perl\"\n\
         \"/usr/bin/curl\" = \"/usr/bin/curl\"\n\
         \"hello-musl\" = \"/usr/local/bin/hello-musl\"\n\
         \"app\" = \"/opt/app\"\n",
    )
    .unwrap();
    programs(p.path());
    std::fs::write(p.path().join("boot.pl"), BOOT_PL).unwrap();
    let image = p.build(tools, "zstd", &["-v"]).unwrap();
    let log = Boot::new("libraries", &image).run(&host).unwrap();
    log.assert(&[
        Check::contains("LIBS-PERL pid=1"),
        Check::contains("curl 7"),
        Check::contains("LIBS-MUSL ok"),
        Check::contains("LIBS-ORIGIN ok"),
        Check::absent("LIBS-FAIL"),
        Check::absent("error while loading shared libraries"),
        Check::NoPanic,
        Check::PowerOff,
    ]);
    eprintln!(
        "libraries image: {} bytes, booted in {:.1}s wall under TCG",
        std::fs::metadata(&image).unwrap().len(),
        log.elapsed.as_secs_f64()
    );
}

#[test]
fn a_library_missing_from_the_sysroot_fails_the_build() {
    let test = "a_library_missing_from_the_sysroot_fails_the_build";
    if !need(test, &["gcc", "musl-gcc"]) {
        return;
    }
    let Some(host) = Host::for_test(test) else {
        return;
    };
    let tools = Tools::get().unwrap_or_else(|e| panic!("{test}: {e}"));
    // A sysroot with the loader and libc but not libgreet; the program is mapped alone.
    let p = Project::new(
        &host,
        "[init]\npath = \"/usr/bin/app\"\n\n[build]\nsysroot = \"root\"\n\n[mappings]\n\"app/bin/app\" = \"/usr/bin/app\"\n",
    )
    .unwrap();
    programs(p.path());
    let multi = p.path().join("root/usr/lib/x86_64-linux-gnu");
    std::fs::create_dir_all(&multi).unwrap();
    for f in ["ld-linux-x86-64.so.2", "libc.so.6"] {
        std::fs::copy(Path::new("/lib/x86_64-linux-gnu").join(f), multi.join(f)).unwrap();
    }
    std::fs::create_dir_all(p.path().join("root/lib64")).unwrap();
    std::os::unix::fs::symlink("usr/lib", p.path().join("root/lib")).unwrap();
    std::os::unix::fs::symlink(
        "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        p.path().join("root/lib64/ld-linux-x86-64.so.2"),
    )
    .unwrap();
    let err = p
        .build(tools, "gzip", &[])
        .expect_err("the build must fail")
        .to_string();
    for want in [
        "`mappings.\"app/bin/app\"` places /usr/bin/app, which cannot start in the guest",
        "/usr/bin/app needs libgreet.so.1",
        "/usr/lib/x86_64-linux-gnu",
        "`build.sysroot`",
        "`build.extra_libraries`",
        "[mappings]",
    ] {
        assert!(err.contains(want), "{want:?} missing from: {err}");
    }
    assert!(!p.path().join("image.cpio.gz").exists(), "nothing written");
}
