//! Tests of the whole module: example templates against Volant's JSON schema, the mapping, and
//! one test per Volant validation rule.

use super::volant::{self, Manifest};
use super::*;
use serde_json::{json, Value};
use std::fs;

const DIGEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/manifests")
        .join(name)
}

fn facts(artifact: &Path) -> BuildFacts<'_> {
    BuildFacts {
        artifact,
        sha256: DIGEST,
        url: None,
        base_url: None,
        program: None,
        image: None,
        agent: false,
        rootfs: false,
    }
}

/// Volant's schema, or `None` (with the reason printed) when `shared/` is not beside the repo;
/// under `CI=true` a missing schema fails.
fn schema() -> Option<Value> {
    let path = repo_root().join("../shared/schemas/plugin-manifest-v1.json");
    match fs::read_to_string(&path) {
        Ok(text) => Some(serde_json::from_str(&text).expect("schema is JSON")),
        Err(e) => {
            let why = format!("skipping schema check: cannot read {}: {e}", path.display());
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
            eprintln!("{why}");
            None
        }
    }
}

/// Asserts `json` satisfies Volant's JSON schema (when available).
fn assert_schema_valid(what: &str, json: &Value) {
    let Some(schema) = schema() else { return };
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(json)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what}: schema errors: {errors:#?}\n{json:#}"
    );
}

fn render_fixture(name: &str) -> Value {
    let t = load_template(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    render(&t, &facts(Path::new("/srv/images/plugin.cpio.gz")))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn render_text(text: &str) -> Result<Manifest, ManifestError> {
    let t = parse_template(text, Path::new("manifest.toml"))?;
    render_manifest(&t, &facts(Path::new("/out/plugin.cpio.gz")))
}

#[test]
fn every_example_passes_the_schema_with_the_artifact_checksum() {
    for name in [
        "minimal.toml",
        "webserver.toml",
        "nginx.toml",
        "seed-myapp.toml",
        "full.toml",
    ] {
        let json = render_fixture(name);
        assert_schema_valid(name, &json);
        assert_eq!(
            json["initramfs"]["checksum"],
            format!("sha256:{DIGEST}"),
            "{name}"
        );
        assert_eq!(
            json["initramfs"]["url"], "/srv/images/plugin.cpio.gz",
            "{name}"
        );
        assert!(
            json.get("network").and_then(|n| n.get("expose")).is_none(),
            "{name}"
        );
        assert!(json["initramfs"].get("format").is_none(), "{name}");
    }
}

/// The schema check must be able to fail: the original's output shape is rejected.
#[test]
fn the_schema_check_rejects_the_originals_shape() {
    let Some(schema) = schema() else { return };
    let validator = jsonschema::validator_for(&schema).unwrap();
    let mut json = render_fixture("nginx.toml");
    assert!(validator.is_valid(&json));
    json["initramfs"]["format"] = json!("cpio.gz");
    assert!(!validator.is_valid(&json), "initramfs.format");
    let mut json = render_fixture("nginx.toml");
    json["workload"]["entrypoint"] = json!("/usr/sbin/nginx");
    assert!(!validator.is_valid(&json), "string entrypoint");
    let mut json = render_fixture("nginx.toml");
    json["network"]["expose"] = json!([{"port": 80, "protocol": "tcp"}]);
    assert!(!validator.is_valid(&json), "network.expose");
}

#[test]
fn the_default_template_passes_the_schema() {
    let artifact = Path::new("/tmp/x/plugin.cpio.gz");
    let name = default_name(artifact);
    assert_eq!(name, "plugin");
    let json =
        serde_json::to_value(render(&default_template(&name), &facts(artifact)).unwrap()).unwrap();
    assert_schema_valid("default", &json);
    assert_eq!(json["name"], "plugin");
    assert_eq!(json["version"], "0.1.0");
    assert_eq!(json["runtime"], "plugin");
    assert_eq!(json["resources"], json!({"cpu_cores": 1, "memory_mb": 512}));
    assert_eq!(json["workload"]["entrypoint"], json!(["/bin/kestrel"]));
    assert_eq!(json["workload"]["base_url"], "http://127.0.0.1:8080");
    assert_eq!(json["enabled"], true);
    let typed = render_manifest(&default_template(&name), &facts(artifact)).unwrap();
    assert_eq!(serde_json::to_value(typed).unwrap(), json);
}

#[test]
fn webserver_maps_entrypoint_args_env_and_port() {
    let json = render_fixture("webserver.toml");
    assert_eq!(
        json["workload"],
        json!({
            "type": "http",
            "base_url": "http://127.0.0.1:9000",
            "entrypoint": ["/usr/local/bin/hello-web", "--listen", ":9000", "--config",
                           "/etc/hello/config.yaml"],
            "env": {"LISTEN_PORT": "9000", "RUST_LOG": "debug"},
        })
    );
    assert_eq!(json["network"], json!({"mode": "bridged"}));
    assert_eq!(json["schema_version"], "1.0");
    assert_eq!(json["$schema"], volant::SCHEMA_URL);
    assert_eq!(
        json["labels"],
        json!({"volant.image": "hello-web", "volant.plugin": "hello-web", "volant.runtime": "hello-web"})
    );
    assert!(json.get("env").is_none());
}

#[test]
fn nginx_keeps_args_verbatim_and_uses_the_first_port() {
    let json = render_fixture("nginx.toml");
    assert_eq!(
        json["workload"]["entrypoint"],
        json!(["/usr/sbin/nginx", "-g", "daemon off;"])
    );
    assert_eq!(json["workload"]["base_url"], "http://127.0.0.1:80");
    assert_eq!(json["runtime"], "nginx");
    assert_eq!(json["labels"]["volant.runtime"], "nginx");
}

#[test]
fn minimal_gets_the_agent_as_entrypoint_and_port_8080() {
    let json = render_fixture("minimal.toml");
    assert_eq!(json["workload"]["entrypoint"], json!([DEFAULT_ENTRYPOINT]));
    assert_eq!(json["workload"]["base_url"], "http://127.0.0.1:8080");
    assert_eq!(json["network"], json!({"mode": "vsock"}));
    assert_eq!(json["resources"], json!({"cpu_cores": 1, "memory_mb": 128}));
}

#[test]
fn full_template_keeps_every_volant_field() {
    let json = render_fixture("full.toml");
    assert_eq!(json["$schema"], "./plugin-manifest-v1.json");
    assert_eq!(json["enabled"], false);
    assert_eq!(json["labels"]["team"], "infra");
    assert_eq!(json["labels"]["volant.runtime"], "sink");
    assert_eq!(
        json["workload"]["entrypoint"],
        json!(["/opt/sink/bin/sink", "serve", "--verbose"])
    );
    assert_eq!(
        json["workload"]["env"],
        json!({"PORT": "7000", "FROM_WORKLOAD": "yes"})
    );
    assert_eq!(json["workload"]["workdir"], "/opt/sink");
    assert_eq!(json["workload"]["base_url"], "http://127.0.0.1:7000/api");
    assert_eq!(
        json["health_check"],
        json!({"endpoint": "/healthz", "timeout_ms": 2500})
    );
    assert_eq!(
        json["actions"]["reload"],
        json!({"method": "POST", "path": "/reload"})
    );
    assert_eq!(json["disks"][0]["format"], "qcow2");
    let ci = &json["cloud_init"];
    assert_eq!(ci["seed_mode"], "vfat");
    assert_eq!(ci["user_data"]["inline"], true);
    assert_eq!(ci["network_config"]["inline"], false);
    let meta: Value = serde_json::from_str(ci["meta_data"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(meta["instance-id"], "sink-1");
    assert_eq!(json["network"]["gateway"], "10.20.0.1");
    assert_eq!(json["devices"]["allowlist"], json!(["10de:*"]));
    assert_eq!(json["openapi"], "https://example.com/openapi.json");
}

#[test]
fn the_guides_manifest_example_is_produced() {
    let seed = json!({
      "$schema": "https://raw.githubusercontent.com/volantvm/volant/main/docs/schemas/plugin-manifest-v1.json",
      "schema_version": "1.0",
      "name": "myapp",
      "version": "0.1.0",
      "runtime": "myapp",
      "enabled": true,
      "initramfs": { "url": "/path/to/plugin.cpio.gz" },
      "resources": { "cpu_cores": 1, "memory_mb": 512 },
      "workload": {
        "type": "http",
        "entrypoint": ["/usr/bin/myapp"],
        "base_url": "http://127.0.0.1:8080"
      },
      "health_check": { "endpoint": "/", "timeout_ms": 10000 }
    });
    let t = load_template(&fixture("seed-myapp.toml")).unwrap();
    let mut ours = render(&t, &facts(Path::new("/path/to/plugin.cpio.gz"))).unwrap();
    // Additions over the example: the checksum and the labels Volant would add itself.
    let extra = ours.as_object_mut().unwrap();
    assert_eq!(
        extra.remove("labels"),
        Some(json!({"volant.image": "myapp", "volant.plugin": "myapp", "volant.runtime": "myapp"}))
    );
    assert_eq!(
        extra["initramfs"]
            .as_object_mut()
            .unwrap()
            .remove("checksum"),
        Some(json!(format!("sha256:{DIGEST}")))
    );
    assert_eq!(ours, seed);
}

#[test]
fn url_and_base_url_set_initramfs_url() {
    let t = default_template("app");
    let artifact = Path::new("/build/out/app.cpio.zst");
    let with = |url, base_url| {
        render_manifest(
            &t,
            &BuildFacts {
                artifact,
                sha256: DIGEST,
                url,
                base_url,
                program: None,
                image: None,
                agent: false,
                rootfs: false,
            },
        )
        .unwrap()
        .initramfs
        .unwrap()
        .url
    };
    assert_eq!(with(None, None), "/build/out/app.cpio.zst");
    assert_eq!(
        with(None, Some("https://cdn.example.com/p/")),
        "https://cdn.example.com/p/app.cpio.zst"
    );
    assert_eq!(
        with(None, Some("https://cdn.example.com/p")),
        "https://cdn.example.com/p/app.cpio.zst"
    );
    assert_eq!(
        with(Some("https://x.example/a.img"), Some("https://ignored/")),
        "https://x.example/a.img"
    );
}

#[test]
fn manifest_path_is_beside_the_artifact() {
    assert_eq!(
        manifest_path(Path::new("/a/b/plugin.cpio.gz"), "myapp"),
        Path::new("/a/b/myapp.manifest.json")
    );
    assert_eq!(
        manifest_path(Path::new("plugin.cpio.gz"), "x"),
        Path::new("x.manifest.json")
    );
}

#[test]
fn missing_template_is_an_error_only_when_explicit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manifest.toml");
    let err = load_or_default(&path, true, "app", DEFAULT_ENTRYPOINT).unwrap_err();
    assert!(matches!(err, ManifestError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("manifest.toml"), "{err}");
    let t = load_or_default(&path, false, "app", DEFAULT_ENTRYPOINT).unwrap();
    assert_eq!(t.name(), "app");
    assert!(t.origin().is_none());
    fs::write(&path, "name = \"given\"\nversion = \"1\"\n").unwrap();
    assert_eq!(
        load_or_default(&path, false, "app", DEFAULT_ENTRYPOINT)
            .unwrap()
            .name(),
        "given"
    );
}

#[test]
fn unknown_keys_do_not_fail() {
    let m = render_text("name = \"a\"\nversion = \"1\"\nfuture = 1\n[workload]\nshell = \"sh\"\n")
        .unwrap();
    assert_eq!(m.name, "a");
}

#[test]
fn syntax_and_type_errors_name_file_line_and_key() {
    let err = render_text("name = \"a\"\nversion = [\n").unwrap_err();
    assert!(matches!(err, ManifestError::Syntax { .. }), "{err}");
    assert!(err.to_string().starts_with("manifest.toml:"), "{err}");

    let err = render_text("name = \"a\"\nversion = \"1\"\n[resources]\nmemory_mb = \"lots\"\n")
        .unwrap_err();
    assert_eq!(err.field(), Some("resources.memory_mb"), "{err}");
    assert!(err.to_string().contains("expected an integer"), "{err}");
    assert!(
        err.to_string()
            .starts_with("manifest.toml:4: resources.memory_mb"),
        "{err}"
    );
}

#[test]
fn runtime_defaults_to_name() {
    let m = render_text("name = \"a\"\nversion = \"1\"\nruntime = \" \"\n").unwrap();
    assert_eq!(m.runtime, "a");
    assert_eq!(m.labels["volant.runtime"], "a");
}

/// A base manifest that passes; rule tests break one field of it.
const BASE: &str = "name = \"app\"\nversion = \"1.0\"\n";

/// Renders `BASE` + `extra` and returns the error, checking it names `field` (and, when the
/// field is in the template, its line).
fn expect_field(extra: &str, field: &str) -> ManifestError {
    let err = match render_text(&format!("{BASE}{extra}")) {
        Ok(m) => panic!("expected an error on {field}, got {m:?}"),
        Err(e) => e,
    };
    assert_eq!(err.field(), Some(field), "{err}");
    let text = err.to_string();
    assert!(text.contains(field), "message names the field: {text}");
    assert!(text.contains("; "), "message says how to fix: {text}");
    err
}

/// Validates `m` after `change` and checks the violation names `field`.
fn expect_rule(change: impl FnOnce(&mut Manifest), field: &str) {
    let mut m = render_manifest(&default_template("app"), &facts(Path::new("/o/p.img"))).unwrap();
    change(&mut m);
    let v = m.validate().unwrap_err();
    assert_eq!(v.field, field, "{v:?}");
}

#[test]
fn rule_name_required() {
    let err = match render_text("version = \"1\"\n") {
        Err(e) => e,
        Ok(m) => panic!("{m:?}"),
    };
    assert_eq!(err.field(), Some("name"), "{err}");
    expect_rule(|m| m.name = " ".into(), "name");
}

#[test]
fn rule_name_is_a_plain_identifier() {
    let err = render_text("name = \"my app\"\nversion = \"1\"\n").unwrap_err();
    assert_eq!(err.field(), Some("name"), "{err}");
    assert!(
        err.to_string().starts_with("manifest.toml:1: name"),
        "{err}"
    );
}

#[test]
fn rule_version_required() {
    let err = render_text("name = \"a\"\nversion = \"\"\n").unwrap_err();
    assert_eq!(err.field(), Some("version"), "{err}");
    assert!(
        err.to_string().starts_with("manifest.toml:2: version"),
        "{err}"
    );
}

#[test]
fn rule_runtime_non_empty() {
    expect_rule(|m| m.runtime = String::new(), "runtime");
}

#[test]
fn rule_schema_version_known() {
    expect_field("schema_version = \"v2\"\n", "schema_version");
}

#[test]
fn rule_cpu_cores_positive() {
    let err = expect_field("[resources]\ncpu_cores = 0\n", "resources.cpu_cores");
    assert!(err.to_string().starts_with("manifest.toml:4:"), "{err}");
}

#[test]
fn rule_memory_mb_positive() {
    expect_field("[resources]\nmemory_mb = -1\n", "resources.memory_mb");
}

#[test]
fn rule_action_needs_method() {
    let err = expect_field("[actions.stop]\npath = \"/stop\"\n", "actions.stop.method");
    assert!(err.to_string().starts_with("manifest.toml:3:"), "{err}");
}

#[test]
fn rule_action_needs_path() {
    expect_field("[actions.stop]\nmethod = \"POST\"\n", "actions.stop.path");
}

#[test]
fn rule_action_timeout_not_negative() {
    expect_field(
        "[actions.s]\nmethod = \"GET\"\npath = \"/\"\ntimeout_ms = -5\n",
        "actions.s.timeout_ms",
    );
}

#[test]
fn rule_workload_type_http_exec_or_grpc() {
    let err = expect_field("[workload]\ntype = \"soap\"\n", "workload.type");
    assert!(err.to_string().starts_with("manifest.toml:4:"), "{err}");
}

/// Newer Volant's `exec` and `grpc` workloads need an entrypoint but no `base_url`: none is
/// made up for them, one written or exposed is kept; `http` still gets its default.
#[test]
fn exec_and_grpc_workloads_need_no_base_url() {
    for kind in ["exec", "GRPC"] {
        let m = render_text(&format!(
            "{BASE}[workload]\ntype = \"{kind}\"\nentrypoint = \"/bin/job\"\n"
        ))
        .unwrap();
        assert_eq!(m.workload.kind, kind.to_ascii_lowercase());
        assert_eq!(m.workload.base_url, None, "{kind}");
        let json = serde_json::to_value(&m).unwrap();
        assert!(json["workload"].get("base_url").is_none(), "{json}");
    }
    let m = render_text(&format!(
        "{BASE}[workload]\ntype = \"grpc\"\n[[network.expose]]\nport = 50051\n"
    ))
    .unwrap();
    assert_eq!(
        m.workload.base_url.as_deref(),
        Some("http://127.0.0.1:50051")
    );
    let mut m = render_text(&format!("{BASE}[workload]\ntype = \"exec\"\n")).unwrap();
    m.workload.entrypoint.clear();
    let v = m.validate().unwrap_err();
    assert_eq!(v.field, "workload.entrypoint");
    assert!(v.problem.contains("an exec workload"), "{v:?}");
}

/// Renders `BASE` + `extra` as a default-mode build does (the agent holds 8080).
fn render_default_mode(extra: &str) -> Result<Manifest, ManifestError> {
    let t = parse_template(&format!("{BASE}{extra}"), Path::new("manifest.toml"))?;
    check_mode(&t, true)?;
    let f = BuildFacts {
        agent: true,
        ..facts(Path::new("/out/plugin.cpio.gz"))
    };
    render_manifest(&t, &f)
}

/// In default mode a workload port of 8080 is refused, naming the key that set it and why; the
/// same template builds in the other modes.
#[test]
fn default_mode_refuses_the_agents_port() {
    let cases = [
        (
            "[[network.expose]]\nport = 8080\n",
            "network.expose[0].port",
            4,
        ),
        (
            "[workload]\nbase_url = \"http://127.0.0.1:8080/api\"\n",
            "workload.base_url",
            4,
        ),
    ];
    for (extra, field, line) in cases {
        let err = render_default_mode(extra).unwrap_err();
        assert_eq!(err.field(), Some(field), "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("manifest.toml:{line}: {field} is port 8080")),
            "{text}"
        );
        assert!(text.contains("Volant's agent listens on"), "{text}");
        assert!(text.contains("8081"), "the fix names another port: {text}");
        assert!(render_text(&format!("{BASE}{extra}")).is_ok(), "{extra}");
    }
    // A container image exposing 8080 with nothing in the template.
    let t = parse_template(BASE, Path::new("manifest.toml")).unwrap();
    let image = ImageFacts {
        port: Some(8080),
        ..ImageFacts::default()
    };
    let f = BuildFacts {
        agent: true,
        image: Some(&image),
        ..facts(Path::new("/out/plugin.cpio.gz"))
    };
    let err = render_manifest(&t, &f).unwrap_err();
    assert_eq!(err.field(), Some("network.expose"), "{err}");
    assert!(
        err.to_string().contains("container image exposes it"),
        "{err}"
    );
    // Another port is fine.
    let m = render_default_mode("[[network.expose]]\nport = 9000\n").unwrap();
    assert_eq!(
        m.workload.base_url.as_deref(),
        Some("http://127.0.0.1:9000")
    );
}

/// Without a port anywhere, a default-mode manifest gets 8081, the others keep 8080; the
/// default manifest (no manifest.toml) too.
#[test]
fn default_mode_defaults_to_a_port_beside_the_agents() {
    let m = render_default_mode("").unwrap();
    assert_eq!(
        m.workload.base_url.as_deref(),
        Some(format!("http://127.0.0.1:{DEFAULT_AGENT_MODE_PORT}").as_str())
    );
    assert_ne!(DEFAULT_AGENT_MODE_PORT, volant::AGENT_PORT);
    let t = default_template("app");
    check_mode(&t, true).unwrap();
    let f = BuildFacts {
        agent: true,
        ..facts(Path::new("/out/plugin.cpio.gz"))
    };
    let json = render(&t, &f).unwrap();
    assert_eq!(json["workload"]["base_url"], "http://127.0.0.1:8081");
    assert_schema_valid("default, default mode", &json);
    let m = render_text(BASE).unwrap();
    assert_eq!(
        m.workload.base_url.as_deref(),
        Some("http://127.0.0.1:8080")
    );
}

/// What Go's `url.Parse` refuses is refused; what it takes is taken (Volant checks no more).
#[test]
fn rule_base_url_parses_as_go_does() {
    for bad in [
        "127.0.0.1:80",
        "http://h:8x",
        "http://a b/",
        "http://h/%zz",
        ":8080",
        "http://[::1",
    ] {
        expect_field(
            &format!("[workload]\nbase_url = \"{bad}\"\n"),
            "workload.base_url",
        );
    }
    for ok in [
        "http://h:99999",
        "http://:80",
        "localhost:8080",
        "unix:///run/app.sock",
        "http://[::1]:80/x?q=%zz",
    ] {
        let t = parse_template(
            &format!("{BASE}[workload]\nbase_url = \"{ok}\"\n"),
            Path::new("manifest.toml"),
        )
        .unwrap_or_else(|e| panic!("{ok}: {e}"));
        let m = render_manifest(&t, &facts(Path::new("/o/p.img"))).unwrap();
        assert_eq!(m.workload.base_url.as_deref(), Some(ok));
    }
    expect_rule(|m| m.workload.base_url = None, "workload.base_url");
    expect_rule(
        |m| m.workload.base_url = Some(" ".into()),
        "workload.base_url",
    );
}

#[test]
fn rule_entrypoint_first_non_empty() {
    expect_rule(|m| m.workload.entrypoint.clear(), "workload.entrypoint");
}

/// Templates Volant's `Normalize` + `Validate` accept are accepted and normalised as Volant
/// does, each change reported with its line.
#[test]
fn volant_normalisation_is_accepted_and_reported() {
    let text = format!(
        "{BASE}[workload]\nentrypoint = [\" /usr/bin/app \", \"\", \"--flag\", \" \"]\nbase_url = \"unix:///run/app.sock\"\n\
         [env]\n\" LOG \" = \" debug \"\n\" \" = \"dropped\"\n\
         [actions.\" \"]\nmethod = \"GET\"\npath = \"/x\"\n\
         [actions.\" stop \"]\nmethod = \" POST \"\npath = \"/stop\"\n\
         [[disks]]\nname = \"data\"\nsource = \"/d.img\"\nchecksum = \"{DIGEST}\"\n"
    );
    let t = parse_template(&text, Path::new("manifest.toml")).unwrap_or_else(|e| panic!("{e}"));
    let m = render_manifest(&t, &facts(Path::new("/o/p.img"))).unwrap();
    assert_eq!(m.workload.entrypoint, ["/usr/bin/app", "--flag"]);
    assert_eq!(
        m.workload.env.iter().collect::<Vec<_>>(),
        [(&"LOG".to_string(), &"debug".to_string())]
    );
    assert_eq!(m.actions.keys().collect::<Vec<_>>(), ["stop"]);
    assert_eq!(m.actions["stop"].method, "POST");
    assert_eq!(m.disks[0].checksum.as_deref(), Some(DIGEST));
    let notes = t.notes().join("\n");
    for want in [
        "manifest.toml:4: workload.entrypoint blank items dropped",
        "workload.base_url \"unix:///run/app.sock\" is not an http(s)://host[:port] URL",
        "trimmed to LOG=\"debug\"",
        "is a blank name: dropped",
        "action \" \" has a blank name: dropped",
        "disks[0].checksum",
        "has no algorithm prefix",
    ] {
        assert!(notes.contains(want), "no {want:?} in:\n{notes}");
    }
    // Nothing to say about a template that needs no normalising.
    let clean = parse_template(
        &format!("{BASE}[workload]\nentrypoint = [\"/app\"]\n"),
        Path::new("m.toml"),
    )
    .unwrap();
    assert_eq!(clean.notes(), &[] as &[String]);
}

#[test]
fn rule_args_need_an_entrypoint() {
    expect_field("[workload]\nargs = [\"-v\"]\n", "workload.args");
}

/// Volant takes any env name; one a program cannot read is a warning.
#[test]
fn env_names_volant_takes_are_kept_with_a_warning() {
    let t = parse_template(
        &format!("{BASE}[workload]\n[env]\n\"A=B\" = \"1\"\n"),
        Path::new("manifest.toml"),
    )
    .unwrap();
    assert!(
        t.notes().iter().any(|n| n.contains("holds '=' or a space")),
        "{:?}",
        t.notes()
    );
    let m = render_manifest(&t, &facts(Path::new("/o/p.img"))).unwrap();
    assert_eq!(m.workload.env["A=B"], "1");
}

#[test]
fn rule_env_set_once() {
    let err = expect_field(
        "[env]\nA = \"1\"\n[workload.env]\nA = \"2\"\n",
        "workload.env.A",
    );
    assert!(err.to_string().starts_with("manifest.toml:6:"), "{err}");
}

#[test]
fn rule_health_check_fields() {
    expect_field(
        "[health_check]\ntimeout_ms = -1\n",
        "health_check.timeout_ms",
    );
    expect_rule(
        |m| {
            m.health_check = Some(volant::HealthCheck {
                endpoint: String::new(),
                timeout_ms: 1,
            })
        },
        "health_check.endpoint",
    );
}

#[test]
fn rule_initramfs_url_kind() {
    let t = default_template("app");
    for (url, base) in [(Some("ftp://h/x"), None), (None, Some("s3://bucket"))] {
        let f = BuildFacts {
            artifact: Path::new("/o/p.img"),
            sha256: DIGEST,
            url,
            base_url: base,
            program: None,
            image: None,
            agent: false,
            rootfs: false,
        };
        let err = render(&t, &f).unwrap_err();
        assert_eq!(
            err.field(),
            Some("initramfs.url"),
            "{url:?} {base:?}: {err}"
        );
    }
    let err = render(&t, &facts(Path::new("relative/p.img"))).unwrap_err();
    assert_eq!(err.field(), Some("initramfs.url"), "{err}");
    assert!(err.to_string().contains("relative/p.img"), "{err}");
}

#[test]
fn rule_initramfs_url_required() {
    expect_rule(
        |m| m.initramfs.as_mut().unwrap().url = " ".into(),
        "initramfs.url",
    );
}

#[test]
fn rule_initramfs_checksum_prefixed() {
    let f = BuildFacts {
        sha256: "abc",
        ..facts(Path::new("/o/p.img"))
    };
    let err = render(&default_template("app"), &f).unwrap_err();
    assert_eq!(err.field(), Some("initramfs.checksum"), "{err}");
    expect_rule(
        |m| m.initramfs.as_mut().unwrap().checksum = Some(DIGEST.into()),
        "initramfs.checksum",
    );
}

#[test]
fn rule_disk_name_and_source_required() {
    expect_field("[[disks]]\nsource = \"/d.img\"\n", "disks[0].name");
    expect_field("[[disks]]\nname = \"d\"\n", "disks[0].source");
}

#[test]
fn rule_disk_format_raw_or_qcow2() {
    let err = expect_field(
        "[[disks]]\nname = \"a\"\nsource = \"/a\"\n[[disks]]\nname = \"d\"\nsource = \"/d\"\nformat = \"vmdk\"\n",
        "disks[1].format",
    );
    assert!(err.to_string().starts_with("manifest.toml:9:"), "{err}");
}

#[test]
fn rule_cloud_init_content_xor_path() {
    expect_field(
        "[cloud_init.user_data]\ncontent = \"x\"\npath = \"/y\"\n",
        "cloud_init.user_data.content",
    );
}

#[test]
fn rule_cloud_init_inline_with_content() {
    expect_field(
        "[cloud_init.network_config]\ninline = false\ncontent = \"x\"\n",
        "cloud_init.network_config.inline",
    );
}

#[test]
fn rule_cloud_init_not_inline_with_path() {
    expect_field(
        "[cloud_init.user_data]\ninline = true\npath = \"/y\"\n",
        "cloud_init.user_data.inline",
    );
}

#[test]
fn rule_cloud_init_seed_mode_vfat() {
    expect_field(
        "[cloud_init]\nseed_mode = \"iso\"\n",
        "cloud_init.seed_mode",
    );
}

#[test]
fn rule_cloud_init_datasource_required() {
    let m = render_text(&format!("{BASE}[cloud_init]\n")).unwrap();
    assert_eq!(m.cloud_init.unwrap().datasource, "NoCloud");
    expect_rule(
        |m| {
            m.cloud_init = Some(volant::CloudInit {
                datasource: String::new(),
                seed_mode: "vfat".into(),
                user_data: None,
                meta_data: None,
                network_config: None,
            })
        },
        "cloud_init.datasource",
    );
}

#[test]
fn rule_network_mode() {
    let err = expect_field("[network]\nmode = \"nat\"\n", "network.mode");
    assert!(err.to_string().starts_with("manifest.toml:4:"), "{err}");
}

#[test]
fn rule_bridged_subnet_needs_gateway_or_auto_assign() {
    expect_field(
        "[network]\nmode = \"bridged\"\nsubnet = \"10.0.0.0/24\"\n",
        "network.subnet",
    );
    for ok in ["gateway = \"10.0.0.1\"\n", "auto_assign = true\n"] {
        render_text(&format!(
            "{BASE}[network]\nmode = \"bridged\"\nsubnet = \"10.0.0.0/24\"\n{ok}"
        ))
        .unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
}

#[test]
fn rule_exposed_ports_in_range() {
    expect_field(
        "[[network.expose]]\nport = 70000\n",
        "network.expose[0].port",
    );
    expect_field(
        "[[network.expose]]\nport = 80\nprotocol = \"sctp\"\n",
        "network.expose[0].protocol",
    );
}

#[test]
fn a_disk_build_names_its_rootfs_and_passes_volants_schema_and_rules() {
    let f = BuildFacts {
        rootfs: true,
        ..facts(Path::new("/srv/out/app.squashfs"))
    };
    let json = render(&default_template("app"), &f).unwrap();
    assert!(json.get("initramfs").is_none(), "{json:#}");
    assert_eq!(json["rootfs"]["url"], "/srv/out/app.squashfs");
    assert_eq!(json["rootfs"]["checksum"], format!("sha256:{DIGEST}"));
    assert_eq!(json["rootfs"]["format"], "raw");
    assert_schema_valid("rootfs manifest", &json);
    // Volant's rules: exactly one boot artifact.
    let mut m = render_text(BASE).unwrap();
    m.rootfs = Some(crate::manifest::volant::Rootfs {
        url: "/d.squashfs".into(),
        checksum: None,
        format: "raw".into(),
    });
    assert_eq!(m.validate().unwrap_err().field, "rootfs");
    m.initramfs = None;
    m.validate().unwrap();
    m.rootfs.as_mut().unwrap().format = "squashfs".into();
    assert_eq!(m.validate().unwrap_err().field, "rootfs.format");
}
