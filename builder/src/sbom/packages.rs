//! Package databases the SBOM reads: a container image's own dpkg `status` (with the file lists
//! of `var/lib/dpkg/info/*.list`) or apk `installed`, and the dpkg database of the library
//! sysroot.
//!
//! Every package the image's database lists as installed becomes an SPDX package inside the
//! container image's; an image file a package's list names moves to that package. For the
//! shared libraries, only the sysroot's packages that own a placed library are listed (the
//! sysroot is often the build machine itself). Paths in a list are resolved through the
//! symlinks of the tree they describe (`/lib -> usr/lib`), so a merged-/usr layout matches.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::{digest, Facts, Package};
use crate::archive::{Content, Kind};
use crate::plan::{Origin, Plan};

/// The largest database file read (a full Debian system's `status` is a few MiB).
const MAX_DB: u64 = 64 << 20;

/// One installed package of a database, with the paths its list names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub files: Vec<String>,
}

/// Which package each file moves to (`None`: it stays with its origin's); packages found are
/// added to `packages`.
pub(crate) fn claims(
    f: &Facts,
    files: &[(&str, &Content, &Origin)],
    packages: &mut Vec<Package>,
    by_key: &BTreeMap<String, usize>,
) -> Vec<Option<usize>> {
    let mut out = vec![None; files.len()];
    if let Some(&image) = by_key.get("image") {
        image_claims(f.plan, files, packages, image, &mut out);
    }
    if let Some(&libs) = by_key.get("libraries") {
        sysroot_claims(&f.config.libraries.sysroot, files, packages, libs, &mut out);
    }
    out
}

/// The container image's own database.
fn image_claims(
    plan: &Plan,
    files: &[(&str, &Content, &Origin)],
    packages: &mut Vec<Package>,
    image: usize,
    out: &mut [Option<usize>],
) {
    let body = |p: &str| match plan.nodes.get(p).map(|n| &n.kind) {
        Some(Kind::File(c)) => digest::read(c, MAX_DB),
        _ => None,
    };
    let distro = body("/etc/os-release")
        .and_then(|b| os_id(&String::from_utf8_lossy(&b)))
        .unwrap_or_else(|| "debian".into());
    let (kind, installed) = if let Some(status) = body("/var/lib/dpkg/status") {
        let mut pkgs = dpkg_status(&String::from_utf8_lossy(&status));
        for p in &mut pkgs {
            let list = [format!("{}:{}", p.name, p.arch), p.name.clone()]
                .iter()
                .find_map(|n| body(&format!("/var/lib/dpkg/info/{n}.list")));
            if let Some(l) = list {
                p.files = String::from_utf8_lossy(&l)
                    .lines()
                    .map(str::to_string)
                    .collect();
            }
        }
        ("deb", pkgs)
    } else if let Some(db) = body("/lib/apk/db/installed") {
        ("apk", apk_installed(&String::from_utf8_lossy(&db)))
    } else {
        return;
    };
    let wanted: HashMap<&str, usize> = files
        .iter()
        .enumerate()
        .filter(|(_, (_, _, o))| matches!(o, Origin::Image { .. }))
        .map(|(i, (p, _, _))| (*p, i))
        .collect();
    for p in installed {
        packages.push(Package {
            purl: Some(purl(kind, &distro, &p)),
            version: Some(p.version.clone()),
            source_info: Some(format!("listed by the image's {} database", db_name(kind))),
            parent: Some(image),
            name: p.name.clone(),
            ..Package::default()
        });
        let me = packages.len() - 1;
        for listed in &p.files {
            if let Some(&i) = wanted.get(plan.resolved(listed).as_str()) {
                out[i] = Some(me);
            }
        }
    }
}

fn db_name(kind: &str) -> &'static str {
    if kind == "deb" {
        "dpkg (var/lib/dpkg/status)"
    } else {
        "apk (lib/apk/db/installed)"
    }
}

/// The sysroot's dpkg database, for the library files taken from it.
fn sysroot_claims(
    sysroot: &Path,
    files: &[(&str, &Content, &Origin)],
    packages: &mut Vec<Package>,
    libs: usize,
    out: &mut [Option<usize>],
) {
    let Ok(root) = sysroot.canonicalize() else {
        return;
    };
    // The library files by their real path in the sysroot.
    let mut wanted: HashMap<PathBuf, Vec<usize>> = HashMap::new();
    for (i, (_, c, o)) in files.iter().enumerate() {
        if let (Origin::Library { .. }, Content::Path { path, .. }) = (o, c) {
            if let Ok(real) = path.canonicalize() {
                wanted.entry(real).or_default().push(i);
            }
        }
    }
    if wanted.is_empty() {
        return;
    }
    let names: HashSet<&std::ffi::OsStr> = wanted.keys().filter_map(|p| p.file_name()).collect();
    let info = root.join("var/lib/dpkg/info");
    let Ok(status) = crate::util::read_bounded(&root.join("var/lib/dpkg/status"), MAX_DB) else {
        return;
    };
    let installed = dpkg_status(&status);
    let mut dirs: HashMap<PathBuf, Option<PathBuf>> = HashMap::new();
    let mut made: HashMap<String, usize> = HashMap::new();
    let distro = std::fs::read_to_string(root.join("etc/os-release"))
        .ok()
        .and_then(|t| os_id(&t))
        .unwrap_or_else(|| "debian".into());
    for p in &installed {
        let list = [
            format!("{}:{}.list", p.name, p.arch),
            format!("{}.list", p.name),
        ]
        .iter()
        .find_map(|n| crate::util::read_bounded(&info.join(n), MAX_DB).ok());
        let Some(list) = list else { continue };
        for line in list.lines() {
            let listed = Path::new(line);
            let (Some(dir), Some(name)) = (listed.parent(), listed.file_name()) else {
                continue;
            };
            if !names.contains(name) {
                continue;
            }
            let real_dir = dirs.entry(dir.to_path_buf()).or_insert_with(|| {
                root.join(dir.strip_prefix("/").unwrap_or(dir))
                    .canonicalize()
                    .ok()
            });
            let Some(real_dir) = real_dir else { continue };
            let Some(idx) = wanted.get(&real_dir.join(name)) else {
                continue;
            };
            let me = *made.entry(p.name.clone()).or_insert_with(|| {
                packages.push(Package {
                    name: p.name.clone(),
                    version: Some(p.version.clone()),
                    purl: Some(purl("deb", &distro, p)),
                    source_info: Some("owns the library in build.sysroot's dpkg database".into()),
                    parent: Some(libs),
                    ..Package::default()
                });
                packages.len() - 1
            });
            for &i in idx {
                out[i] = Some(me);
            }
        }
    }
}

/// The `ID=` of an os-release file.
fn os_id(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("ID="))
        .map(|v| v.trim().trim_matches('"').to_string())
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

/// The installed packages of a dpkg `status` file.
pub fn dpkg_status(text: &str) -> Vec<Installed> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let field = |name: &str| {
            para.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.trim().to_string())
        };
        let installed = field("Status").is_some_and(|s| s.ends_with(" installed"));
        if let (true, Some(name), Some(version)) = (installed, field("Package"), field("Version")) {
            out.push(Installed {
                name,
                version,
                arch: field("Architecture").unwrap_or_default(),
                files: Vec::new(),
            });
        }
    }
    out.sort_by(|a, b| (&a.name, &a.arch).cmp(&(&b.name, &b.arch)));
    out
}

/// The packages of an apk `installed` database, with their files (`F:` dir, `R:` file).
pub fn apk_installed(text: &str) -> Vec<Installed> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let (mut name, mut version, mut arch, mut dir) = (None, None, String::new(), String::new());
        let mut files = Vec::new();
        for l in para.lines() {
            let Some((k, v)) = l.split_once(':') else {
                continue;
            };
            match k {
                "P" => name = Some(v.to_string()),
                "V" => version = Some(v.to_string()),
                "A" => arch = v.to_string(),
                "F" => dir = v.to_string(),
                "R" => files.push(format!("/{dir}/{v}").replace("//", "/")),
                _ => {}
            }
        }
        if let (Some(name), Some(version)) = (name, version) {
            out.push(Installed {
                name,
                version,
                arch,
                files,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The package URL (purl) of a package: `pkg:deb/debian/NAME@VERSION?arch=ARCH`.
fn purl(kind: &str, distro: &str, p: &Installed) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let mut s = format!("pkg:{kind}/{distro}/{}@{}", enc(&p.name), enc(&p.version));
    if !p.arch.is_empty() {
        s.push_str(&format!("?arch={}", enc(&p.arch)));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_status_lists_installed_packages_only() {
        let text = "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9+deb12u4\nDescription: x\n more\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n\nPackage: base-files\nStatus: install ok installed\nVersion: 12.4\nArchitecture: amd64\n";
        let p = dpkg_status(text);
        let names: Vec<_> = p
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str()))
            .collect();
        assert_eq!(names, [("base-files", "12.4"), ("libc6", "2.36-9+deb12u4")]);
        assert_eq!(
            purl("deb", "debian", &p[1]),
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64"
        );
    }

    #[test]
    fn apk_installed_gives_packages_and_their_files() {
        let text = "C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\nF:lib\nR:ld-musl-x86_64.so.1\nR:libc.musl-x86_64.so.1\n\nP:busybox\nV:1.36.1-r5\nA:x86_64\nF:bin\nR:busybox\n";
        let p = apk_installed(text);
        assert_eq!(p[0].name, "busybox");
        assert_eq!(p[0].files, ["/bin/busybox"]);
        assert_eq!(
            p[1].files,
            ["/lib/ld-musl-x86_64.so.1", "/lib/libc.musl-x86_64.so.1"]
        );
    }

    #[test]
    fn list_paths_resolve_through_the_images_links() {
        use crate::plan::Planned;
        let mut plan = Plan::default();
        let link =
            |t: &str| Planned::new(Kind::Symlink(t.into()), 0o777, Origin::Image { layer: 1 });
        let dir = || Planned::new(Kind::Dir, 0o755, Origin::Image { layer: 1 });
        plan.nodes.insert("/lib".into(), link("usr/lib"));
        plan.nodes.insert("/usr".into(), dir());
        plan.nodes.insert("/usr/lib".into(), dir());
        plan.nodes.insert("/usr/lib/x".into(), link("/etc"));
        assert_eq!(plan.resolved("/lib/libc.so.6"), "/usr/lib/libc.so.6");
        assert_eq!(plan.resolved("/lib/x/passwd"), "/etc/passwd");
        assert_eq!(
            plan.resolved("/lib"),
            "/lib",
            "the last component is not followed"
        );
        assert_eq!(plan.resolved("/../../bin/sh"), "/bin/sh");
    }
}
