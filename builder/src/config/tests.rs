//! `fledge.toml`: defaults, every rule and its message.

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_str(text, Path::new("/p/fledge.toml"))
}

fn err(text: &str) -> String {
    parse(text)
        .expect_err("config should be rejected")
        .to_string()
}

const HEAD: &str = "version = \"1\"\nstrategy = \"initramfs\"\n";

#[test]
fn defaults_for_minimal_file() {
    let c = parse(HEAD).unwrap();
    assert_eq!(
        c.init,
        InitMode::Default {
            agent: AgentSource::Release {
                version: "latest".into()
            }
        }
    );
    assert_eq!(c.busybox.location, DEFAULT_BUSYBOX_URL);
    assert_eq!(c.busybox.sha256.as_deref(), Some(DEFAULT_BUSYBOX_SHA256));
    assert!(!c.supervise);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn seed_examples_are_accepted() {
    let default = format!(
        "{HEAD}[agent]\nsource_strategy = \"release\"\nversion = \"latest\"\n[source]\n\
         busybox_url = \"https://busybox.net/x/busybox\"\nbusybox_sha256 = \"\"\n\
         [mappings]\n\"./myapp\" = \"/usr/bin/myapp\"\n"
    );
    let c = parse(&default).unwrap();
    assert_eq!(c.mappings.len(), 1);
    assert_eq!(c.mappings[0].source, Path::new("/p/./myapp"));
    assert_eq!(c.busybox.sha256, None);

    let custom = format!(
        "{HEAD}[init]\npath = \"./my-init\"\n[source]\nbusybox_url = \"https://b/busybox\"\n\
         [mappings]\n\"./my-init\" = \"/init\"\n\"./myapp\" = \"/usr/bin/myapp\"\n"
    );
    let c = parse(&custom).unwrap();
    assert_eq!(
        c.init,
        InitMode::Custom {
            init: CustomInit::Host("/p/./my-init".into())
        }
    );

    let none = format!(
        "{HEAD}[init]\nnone = true\n[source]\nbusybox_url = \"https://b/busybox\"\n\
         [mappings]\n\"./my-supervisor\" = \"/init\"\n"
    );
    assert_eq!(parse(&none).unwrap().init, InitMode::None);
}

#[test]
fn mappings_scoped_into_init_are_honoured_with_a_warning() {
    let text = format!(
        "{HEAD}[source]\nbusybox_url = \"https://b/busybox\"\n[init]\npath = \"./init.sh\"\n\n\
         mappings = {{ \"./init.sh\" = \"/init\" }}\n"
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.mappings.len(), 1);
    assert_eq!(c.mappings[0].dest, "/init");
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("belongs to [init]") && w.contains(":8")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn unknown_keys_warn_but_do_not_fail() {
    let text = format!("{HEAD}colour = \"blue\"\n[source]\nmirror = \"x\"\n");
    let c = parse(&text).unwrap();
    assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
    assert!(c
        .warnings
        .iter()
        .any(|w| w.contains("`colour`") && w.contains(":3")));
    assert!(c.warnings.iter().any(|w| w.contains("`source.mirror`")));
}

#[test]
fn agent_strategies() {
    let local = format!("{HEAD}[agent]\nsource_strategy = \"local\"\npath = \"bin/kestrel\"\n");
    assert_eq!(
        parse(&local).unwrap().init,
        InitMode::Default {
            agent: AgentSource::Local {
                path: "/p/bin/kestrel".into(),
                sha256: None
            }
        }
    );
    // A checksum applies to a local agent, and an http strategy may name a file:// URL.
    let checked = format!("{local}checksum = \"{}\"\n", "cd".repeat(32));
    assert_eq!(
        parse(&checked).unwrap().init,
        InitMode::Default {
            agent: AgentSource::Local {
                path: "/p/bin/kestrel".into(),
                sha256: Some("cd".repeat(32))
            }
        }
    );
    let file = format!("{HEAD}[agent]\nsource_strategy = \"http\"\nurl = \"file:///srv/k\"\n");
    assert!(matches!(
        parse(&file).unwrap().init,
        InitMode::Default { agent: AgentSource::Http { url, .. } } if url == "file:///srv/k"
    ));
    let http = format!(
        "{HEAD}[agent]\nsource_strategy = \"http\"\nurl = \"https://x/k\"\nchecksum = \"sha256:{}\"\n",
        "AB".repeat(32)
    );
    assert_eq!(
        parse(&http).unwrap().init,
        InitMode::Default {
            agent: AgentSource::Http {
                url: "https://x/k".into(),
                sha256: Some("ab".repeat(32))
            }
        }
    );
}

#[test]
fn init_workload_keys() {
    let text = format!(
        "{HEAD}[init]\ncommand = [\"/usr/bin/app\", \"a b\"]\nworkdir = \"/srv\"\n\
         user = \"app:staff\"\nhostname = \"h1\"\nnofile = 4096\n[init.env]\nB = \"2\"\nA = \"x=y\"\n"
    );
    let c = parse(&text).unwrap();
    assert_eq!(
        c.init,
        InitMode::Custom {
            init: CustomInit::Command
        }
    );
    assert_eq!(
        c.workload,
        WorkloadKeys {
            command: vec!["/usr/bin/app".into(), "a b".into()],
            env: vec![("A".into(), "x=y".into()), ("B".into(), "2".into())],
            workdir: Some("/srv".into()),
            user: Some("app:staff".into()),
            hostname: Some("h1".into()),
            nofile: Some(4096),
        }
    );
    let c = parse(&format!("{HEAD}[init]\npath = \"./i\"\nuser = \"1000\"\n")).unwrap();
    assert!(matches!(
        c.init,
        InitMode::Custom {
            init: CustomInit::Host(_)
        }
    ));
    assert_eq!(c.workload.user.as_deref(), Some("1000"));
    let bad = [
        ("[init]\ncommand = []\n", "`init.command`"),
        (
            "[init]\npath = \"./i\"\ncommand = [\"x\"]\n",
            "`init.command`",
        ),
        ("[init]\nnone = true\nenv = { A = \"1\" }\n", "`init`"),
        ("[init]\nworkdir = \"srv\"\n", "`init.workdir`"),
        ("[init]\nuser = \"a b\"\n", "`init.user`"),
        ("[init]\nhostname = \"a/b\"\n", "`init.hostname`"),
        ("[init]\nnofile = 0\n", "`init.nofile`"),
        ("[init]\nenv = { \"\" = \"1\" }\n", "`init.env`"),
        (
            "[init]\ncommand = [\"x\"]\n[agent]\nsource_strategy = \"local\"\npath = \"k\"\n",
            "`agent`",
        ),
    ];
    for (i, (body, key)) in bad.into_iter().enumerate() {
        let e = err(&format!("{HEAD}{body}"));
        assert!(e.contains(key), "case {i}: {e}");
    }
}

#[test]
fn supervise_and_build_extensions() {
    let text = format!(
        "{HEAD}[init]\nsupervise = true\n[build]\ncompression = \"zstd\"\ncompression_level = 5\n"
    );
    let c = parse(&text).unwrap();
    assert!(c.supervise);
    assert!(
        matches!(c.init, InitMode::Default { .. }),
        "supervise alone keeps default mode"
    );
    assert_eq!(c.compression, Some(Compression::Zstd));
    assert_eq!(c.compression_level, Some(5));
}

/// Each rule: (name, config text, what the message must contain).
#[test]
fn every_rule_names_its_key() {
    let sha = "0".repeat(64);
    let cases: Vec<(&str, String, &[&str])> = vec![
        ("no version", "strategy = \"initramfs\"\n".into(), &["`version`", "missing"]),
        ("bad version", "version = \"2\"\nstrategy = \"initramfs\"\n".into(), &["fledge.toml:1", "`version`", "\"2\""]),
        ("no strategy", "version = \"1\"\n".into(), &["`strategy`", "missing"]),
        ("ext4 disk", "version = \"1\"\nstrategy = \"oci_rootfs\"\n[filesystem]\ntype = \"ext4\"\nsize_buffer_mb = 10\n".into(), &["fledge.toml:4", "`filesystem.type`", "\"ext4\"", "use type = \"squashfs\""]),
        ("bad overlay", "version = \"1\"\nstrategy = \"oci_rootfs\"\n[filesystem]\noverlay_size = \"lots\"\n".into(), &["fledge.toml:4", "`filesystem.overlay_size`", "\"lots\""]),
        ("bad strategy", "version = \"1\"\nstrategy = \"disk\"\n".into(), &["`strategy`", "\"disk\""]),
        ("none+path", format!("{HEAD}[init]\npath = \"/x\"\nnone = true\n"), &["`init`", "none = true"]),
        ("empty init path", format!("{HEAD}[init]\npath = \"\"\n"), &["`init.path`", "empty"]),
        ("init path /init", format!("{HEAD}[init]\npath = \"/init\"\n"), &["`init.path`", "none = true"]),
        ("agent in custom", format!("{HEAD}[init]\npath = \"./i\"\n[agent]\nsource_strategy = \"local\"\npath = \"k\"\n"), &["`agent`", "custom init"]),
        ("agent in none", format!("{HEAD}[init]\nnone = true\n[agent]\nsource_strategy = \"local\"\npath = \"k\"\n"), &["`agent`", "none = true"]),
        ("supervise in none", format!("{HEAD}[init]\nnone = true\nsupervise = true\n"), &["`init.supervise`"]),
        ("no strategy in agent", format!("{HEAD}[agent]\nversion = \"latest\"\n"), &["`agent.source_strategy`", "missing"]),
        ("bad agent strategy", format!("{HEAD}[agent]\nsource_strategy = \"git\"\n"), &["`agent.source_strategy`", "\"git\""]),
        ("release no version", format!("{HEAD}[agent]\nsource_strategy = \"release\"\n"), &["`agent.version`", "required"]),
        ("local no path", format!("{HEAD}[agent]\nsource_strategy = \"local\"\n"), &["`agent.path`", "required"]),
        ("http no url", format!("{HEAD}[agent]\nsource_strategy = \"http\"\n"), &["`agent.url`", "required"]),
        ("http bad url", format!("{HEAD}[agent]\nsource_strategy = \"http\"\nurl = \"ftp://x\"\n"), &["`agent.url`", "http://"]),
        ("bad checksum", format!("{HEAD}[agent]\nsource_strategy = \"http\"\nurl = \"http://x\"\nchecksum = \"md5:1\"\n"), &["`agent.checksum`", "64 hex"]),
        ("bad busybox sha", format!("{HEAD}[source]\nbusybox_sha256 = \"xyz\"\n"), &["`source.busybox_sha256`"]),
        ("empty busybox url", format!("{HEAD}[source]\nbusybox_url = \"\"\n"), &["`source.busybox_url`", "empty"]),
        ("busybox scheme", format!("{HEAD}[source]\nbusybox_url = \"ftp://x/bb\"\nbusybox_sha256 = \"{sha}\"\n"), &["`source.busybox_url`", "ftp://"]),
        ("dockerfile", format!("{HEAD}[source]\ndockerfile = \"Dockerfile\"\n"), &["`source.dockerfile`", "container engine"]),
        ("image", format!("{HEAD}[source]\nimage = \"Nginx:x\"\n"), &["`source.image`", "repository name"]),
        ("image platform", format!("{HEAD}[source]\nimage = \"nginx\"\nimage_platform = \"amd64\"\n"), &["`source.image_platform`", "linux/amd64"]),
        ("platform alone", format!("{HEAD}[source]\nimage_platform = \"linux/arm64\"\n"), &["`source.image_platform`", "not set"]),
        ("from_image without image", format!("{HEAD}[init]\nfrom_image = true\n"), &["`init.from_image`", "no image"]),
        ("from_image and path", format!("{HEAD}[init]\nfrom_image = true\npath = \"/x\"\n[source]\nimage = \"nginx\"\n"), &["`init.from_image`", "cannot go with"]),
        ("relative dest", format!("{HEAD}[mappings]\n\"a\" = \"usr/bin/a\"\n"), &["fledge.toml:4", "mappings.\"a\"", "absolute"]),
        ("dotdot dest", format!("{HEAD}[mappings]\n\"a\" = \"/usr/../etc/a\"\n"), &["mappings.\"a\"", "`..`"]),
        ("empty dest", format!("{HEAD}[mappings]\n\"a\" = \"\"\n"), &["mappings.\"a\"", "empty destination"]),
        ("empty source", format!("{HEAD}[mappings]\n\"\" = \"/a\"\n"), &["`mappings`", "empty source"]),
        ("bad compression", format!("{HEAD}[build]\ncompression = \"brotli\"\n"), &["`build.compression`", "\"brotli\""]),
        ("bad applet", format!("{HEAD}[source]\nbusybox_applets = [\"a/b\"]\n"), &["`source.busybox_applets`"]),
        ("syntax", format!("{HEAD}[mappings\n"), &["fledge.toml:3", "invalid TOML"]),
        ("wrong type", "version = 1\nstrategy = \"initramfs\"\n".into(), &["fledge.toml:1", "`version`", "wrong type", "quote the value"]),
        ("wrong bool", format!("{HEAD}[init]\nnone = \"yes\"\n"), &["fledge.toml:4", "`init.none`", "true or false"]),
        ("dotted host path", format!("{HEAD}[mappings]\napp.bin = \"/init\"\n"), &["`mappings.app.bin`", "quote host paths"]),
        ("control char", format!("{HEAD}[mappings]\n\"a\" = \"/init\\u0000\"\n"), &["mappings.\"a\"", "control character"]),
        ("level", format!("{HEAD}[build]\ncompression = \"lz4\"\ncompression_level = 3\n"), &["fledge.toml:5", "`build.compression_level`", "lz4"]),
    ];
    for (name, text, needles) in cases {
        let msg = err(&text);
        assert!(
            msg.starts_with("/p/fledge.toml"),
            "case {name}: message should name the file: {msg}"
        );
        for n in needles {
            assert!(msg.contains(n), "case {name}: {msg:?} should contain {n:?}");
        }
    }
}

#[test]
fn placeholder_digests_from_the_docs_warn_and_verify_nothing() {
    let text = format!(
        "{HEAD}[source]\nbusybox_url = \"https://b/bb\"\nbusybox_sha256 = \"<optional sha256>\"\n"
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.busybox.sha256, None);
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("placeholder") && w.contains("source.busybox_sha256")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn sha256_forms() {
    let hex = "a".repeat(64);
    assert_eq!(parse_sha256(&hex).as_deref(), Some(hex.as_str()));
    assert_eq!(
        parse_sha256(&format!("sha256:{}", hex.to_uppercase())).as_deref(),
        Some(hex.as_str())
    );
    assert_eq!(parse_sha256("sha256:abc"), None);
    assert_eq!(parse_sha256(&"g".repeat(64)), None);
}

#[test]
fn dots_are_refused_by_path_component_only() {
    let ok = parse(&format!(
        "{HEAD}[init]\npath = \"/opt/app..v2/run\"\n[mappings]\n\"a\" = \"/opt/app..v2/run\"\n\"b\" = \"/srv/..hidden\"\n"
    ))
    .unwrap();
    assert_eq!(ok.mappings[0].dest, "/opt/app..v2/run");
    for body in [
        "[mappings]\n\"a\" = \"/opt/../etc/x\"\n",
        "[mappings]\n\"a\" = \"/opt/..\"\n",
        "[init]\npath = \"/opt/../init2\"\n",
    ] {
        let e = err(&format!("{HEAD}{body}"));
        assert!(e.contains("`..`"), "{body}: {e}");
    }
}

#[test]
fn build_library_keys() {
    let c = parse(HEAD).unwrap();
    assert_eq!(c.libraries, Libraries::default());
    let text = format!("{HEAD}[build]\nlibraries = \"off\"\nsysroot = \"alpine\"\nextra_libraries = [\"libnss_dns.so.2\"]\n");
    let c = parse(&text).unwrap();
    assert!(!c.libraries.auto);
    assert!(
        c.libraries.sysroot.ends_with("alpine"),
        "{:?}",
        c.libraries.sysroot
    );
    assert_eq!(c.libraries.extra, ["libnss_dns.so.2"]);
    for (i, (bad, key)) in [
        ("libraries = \"some\"", "`build.libraries`"),
        ("sysroot = \"\"", "`build.sysroot`"),
        ("extra_libraries = [\"\"]", "`build.extra_libraries`"),
    ]
    .iter()
    .enumerate()
    {
        let e = parse(&format!("{HEAD}[build]\n{bad}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(key), "case {i}: {e}");
    }
}

#[test]
fn a_nul_in_an_env_value_is_blamed_on_the_value() {
    let e = err(&format!(
        "{HEAD}[init]\nenv = {{ GOOD_NAME = \"a\\u0000b\" }}\n"
    ));
    assert!(
        e.contains("`init.env`") && e.contains("in the value of \"GOOD_NAME\""),
        "{e}"
    );
}

#[test]
fn build_sbom_key() {
    assert!(parse(HEAD).unwrap().sbom, "on by default");
    let off = parse(&format!("{HEAD}[build]\nsbom = false\n")).unwrap();
    assert!(!off.sbom);
    assert!(off.warnings.is_empty(), "a known key: {:?}", off.warnings);
    assert!(
        parse(&format!("{HEAD}[build]\nsbom = true\n"))
            .unwrap()
            .sbom
    );
    let e = err(&format!("{HEAD}[build]\nsbom = \"no\"\n"));
    assert!(
        e.contains("build.sbom") && e.contains("fledge.toml:4"),
        "{e}"
    );
}

#[test]
fn arch_selects_platform_and_busybox() {
    assert_eq!(parse(HEAD).unwrap().arch, Arch::X86_64);
    let bb = "[source]\nbusybox_url = \"./busybox-arm64\"\nimage = \"oci:./layout\"\n";
    let c = parse(&format!("{HEAD}[build]\narch = \"aarch64\"\n{bb}")).unwrap();
    assert_eq!(c.arch, Arch::Aarch64);
    assert_eq!(c.image.unwrap().platform.to_string(), "linux/arm64");
    let c = parse(&format!(
        "{HEAD}[build]\narch = \"arm64\"\n{bb}image_platform = \"linux/arm64/v8\"\n"
    ))
    .unwrap();
    assert_eq!(c.image.unwrap().platform.to_string(), "linux/arm64/v8");
    // x86_64 keeps amd64; --arch wins over the file
    let c = parse(&format!("{HEAD}{bb}")).unwrap();
    assert_eq!(c.image.unwrap().platform.to_string(), "linux/amd64");
    let text = format!("{HEAD}[build]\narch = \"x86_64\"\n{bb}");
    let c = Config::from_str_for(&text, Path::new("/p/fledge.toml"), Some(Arch::Aarch64)).unwrap();
    assert_eq!(c.arch, Arch::Aarch64);

    // aarch64 has no pinned default busybox: the key to set is named, before any download
    let e = err(&format!("{HEAD}[build]\narch = \"aarch64\"\n"));
    assert!(
        e.contains("`source.busybox_url`") && e.contains("aarch64"),
        "{e}"
    );
    let e = Config::from_str_for(HEAD, Path::new("/p/fledge.toml"), Some(Arch::Aarch64))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`source.busybox_url` is needed for aarch64"),
        "{e}"
    );

    let e = err(&format!("{HEAD}[build]\narch = \"riscv64\"\n"));
    assert!(
        e.starts_with("/p/fledge.toml:4: `build.arch` is \"riscv64\""),
        "{e}"
    );
}

#[test]
fn oci_rootfs_takes_the_original_filesystem_table() {
    let c = parse("version = \"1\"\nstrategy = \"oci_rootfs\"\n").unwrap();
    assert_eq!(c.rootfs, Some(Rootfs::default()));
    assert_eq!(c.rootfs.unwrap().overlay_size, "1G");
    let c = parse(
        "version = \"1\"\nstrategy = \"oci_rootfs\"\n[filesystem]\ntype = \"squashfs\"\ncompression_level = 19\noverlay_size = \"512M\"\nsize_buffer_mb = 100\n",
    )
    .unwrap();
    let r = c.rootfs.as_ref().unwrap();
    assert_eq!(
        (r.compression_level, r.overlay_size.as_str()),
        (Some(19), "512M")
    );
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("fledge.toml:7") && w.contains("`filesystem.size_buffer_mb`")),
        "{:?}",
        c.warnings
    );
    // An initramfs build ignores the table, saying so.
    let c = parse(&format!("{HEAD}[filesystem]\ntype = \"ext4\"\n")).unwrap();
    assert!(c.rootfs.is_none());
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("[filesystem]") && w.contains("ignored")),
        "{:?}",
        c.warnings
    );
}
