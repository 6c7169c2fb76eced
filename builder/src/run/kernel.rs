//! The guest kernel for `fledge run`: where it is looked for, its release (read from the bzImage
//! header, never by running anything) and which drivers it has built in (its `modules.builtin`),
//! which decides the machine type.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::RunError;

/// How to get a kernel when none is found: Debian's, extracted without installing it.
pub const HOW_TO_GET: &str = "get Debian's without installing it: `apt-get download` the \
     linux-image-*-amd64 package that `apt-cache depends linux-image-amd64` names and `dpkg -x` \
     it (qemu/fetch-kernel.sh in fledge's source does this), then pass --kernel or set \
     FLEDGE_KERNEL";

/// Finds the kernel the way `fledge run` does, reading `$FLEDGE_KERNEL` and `/boot`.
pub fn locate(given: Option<&Path>) -> Result<PathBuf, RunError> {
    find(
        given,
        std::env::var_os("FLEDGE_KERNEL").map(PathBuf::from),
        Path::new("/boot"),
    )
}

/// The places a kernel is looked for, in order: `--kernel`, `$FLEDGE_KERNEL`,
/// `/boot/vmlinuz-$(uname -r)`, then the newest `/boot/vmlinuz-*`.
pub fn find(given: Option<&Path>, env: Option<PathBuf>, boot: &Path) -> Result<PathBuf, RunError> {
    if let Some(p) = given {
        return usable(p, "--kernel");
    }
    if let Some(p) = env.filter(|p| !p.as_os_str().is_empty()) {
        return usable(&p, "FLEDGE_KERNEL");
    }
    let running = running_release().map(|r| boot.join(format!("vmlinuz-{r}")));
    if let Some(p) = running.as_ref().filter(|p| p.is_file()) {
        return Ok(p.clone());
    }
    if let Some(p) = newest(boot) {
        return Ok(p);
    }
    let running = running
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| format!("{}/vmlinuz-$(uname -r)", boot.display()));
    Err(RunError::NoKernel {
        tried: format!(
            "--kernel, $FLEDGE_KERNEL, {running}, {}/vmlinuz-*",
            boot.display()
        ),
    })
}

fn usable(p: &Path, from: &'static str) -> Result<PathBuf, RunError> {
    if p.is_file() {
        Ok(p.to_path_buf())
    } else {
        Err(RunError::KernelMissing {
            path: p.to_path_buf(),
            from,
        })
    }
}

/// `uname -r` of this machine, from procfs.
fn running_release() -> Option<String> {
    let r = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    Some(r.trim().to_owned()).filter(|r| !r.is_empty())
}

/// The `vmlinuz-*` in `dir` with the highest version (numeric parts compared as numbers).
fn newest(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<(Vec<u64>, String, PathBuf)> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            let version = name.strip_prefix("vmlinuz-")?.to_owned();
            let path = e.path();
            path.is_file().then(|| (version_key(&version), name, path))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, _, p)| p)
}

/// `6.1.0-48-amd64` -> `[6, 1, 0, 48]`: the numbers, in order, for sorting.
fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// The architecture a kernel image boots: an arm64 `Image` (magic `ARM\x64` at 0x38) or an x86
/// bzImage (`HdrS` at 0x202); `None` for anything else.
pub fn arch(image: &[u8]) -> Option<crate::arch::Arch> {
    if image.get(0x38..0x3c) == Some(b"ARM\x64") {
        Some(crate::arch::Arch::Aarch64)
    } else if image.get(0x202..0x206) == Some(b"HdrS") {
        Some(crate::arch::Arch::X86_64)
    } else {
        None
    }
}

/// The kernel release of a bzImage (`6.1.0-48-amd64`): the first word of the version string the
/// setup header points at (x86 boot protocol 2.00+: magic `HdrS` at 0x202, the string's offset
/// minus 0x200 at 0x20e). An arm64 `Image` (magic `ARM\x64` at 0x38) has no such pointer: its
/// release is the word after the first `Linux version ` in it. `None` for anything else.
pub fn release(image: &[u8]) -> Option<String> {
    if image.get(0x38..0x3c) == Some(b"ARM\x64") {
        const BANNER: &[u8] = b"Linux version ";
        let at = image.windows(BANNER.len()).position(|w| w == BANNER)? + BANNER.len();
        let text = &image[at..(at + 256).min(image.len())];
        let end = text.iter().position(|&b| b == 0 || b == b' ')?;
        let r = std::str::from_utf8(&text[..end]).ok()?;
        return (!r.is_empty()).then(|| r.to_owned());
    }
    const MAGIC_AT: usize = 0x202;
    const VERSION_PTR_AT: usize = 0x20e;
    if image.get(MAGIC_AT..MAGIC_AT + 4)? != b"HdrS" {
        return None;
    }
    let ptr = u16::from_le_bytes(
        image
            .get(VERSION_PTR_AT..VERSION_PTR_AT + 2)?
            .try_into()
            .ok()?,
    );
    let start = usize::from(ptr) + 0x200;
    let text = image.get(start..(start + 256).min(image.len()))?;
    let end = text.iter().position(|&b| b == 0 || b == b' ')?;
    let r = std::str::from_utf8(&text[..end]).ok()?;
    (!r.is_empty()).then(|| r.to_owned())
}

/// The kernel's built-in drivers by module name (`virtio_mmio`), from the first
/// `modules.builtin` found for `release`: beside the kernel (`modules/`, as qemu/fetch-kernel.sh
/// leaves it, or `lib/modules/<release>/`), then `/lib/modules/<release>/`. `None` when there is
/// none: then nothing is known to be built in.
pub fn builtins(kernel: &Path, release: &str) -> Option<(PathBuf, BTreeSet<String>)> {
    let dir = kernel.parent().unwrap_or(Path::new("."));
    let candidates = [
        dir.join("modules/modules.builtin"),
        dir.join("lib/modules")
            .join(release)
            .join("modules.builtin"),
        Path::new("/lib/modules")
            .join(release)
            .join("modules.builtin"),
    ];
    candidates.into_iter().find_map(|p| {
        let text = std::fs::read_to_string(&p).ok()?;
        Some((p, module_names(&text)))
    })
}

/// Module names of a `modules.builtin`-style list (`kernel/drivers/virtio/virtio_mmio.ko` ->
/// `virtio_mmio`); `-` and `_` are the same in module names, so `-` becomes `_`.
pub fn module_names(text: &str) -> BTreeSet<String> {
    text.lines().filter_map(module_name).collect()
}

/// The module name of one path to a `.ko` (compressed or not).
pub fn module_name(path: &str) -> Option<String> {
    let file = path.trim().rsplit('/').next()?;
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|s| file.strip_suffix(s))?;
    (!stem.is_empty()).then(|| stem.replace('-', "_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bzimage(version: &str) -> Vec<u8> {
        let mut img = vec![0u8; 0x400];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        let at: u16 = 0x300 - 0x200;
        img[0x20e..0x210].copy_from_slice(&at.to_le_bytes());
        img[0x300..0x300 + version.len()].copy_from_slice(version.as_bytes());
        img
    }

    #[test]
    fn release_comes_from_the_setup_header() {
        let img = bzimage("6.1.0-48-amd64 (debian-kernel@lists.debian.org) #1 SMP");
        assert_eq!(release(&img).as_deref(), Some("6.1.0-48-amd64"));
        assert_eq!(release(b"not a kernel"), None);
        let mut bad = bzimage("x");
        bad[0x20e..0x210].copy_from_slice(&0xffffu16.to_le_bytes());
        assert_eq!(release(&bad), None, "pointer past the end");
    }

    #[test]
    fn release_of_an_arm64_image_is_its_banner() {
        let mut img = vec![0u8; 0x1000];
        img[0x38..0x3c].copy_from_slice(b"ARM\x64");
        let banner = b"Linux version 6.1.0-57-arm64 (debian-kernel@lists.debian.org)\0";
        img[0x800..0x800 + banner.len()].copy_from_slice(banner);
        assert_eq!(release(&img).as_deref(), Some("6.1.0-57-arm64"));
        img[0x800] = b'X';
        assert_eq!(release(&img), None, "no banner, no release");
        assert_eq!(arch(&img), Some(crate::arch::Arch::Aarch64));
        assert_eq!(arch(&bzimage("x")), Some(crate::arch::Arch::X86_64));
        assert_eq!(arch(b"not a kernel"), None);
    }

    #[test]
    fn module_names_normalise_dashes_and_suffixes() {
        let text = "kernel/drivers/virtio/virtio_mmio.ko\nkernel/net/ipv4/tcp-cubic.ko.xz\n\
                    kernel/a/b.ko.zst\nnot-a-module.txt\n";
        let names: Vec<_> = module_names(text).into_iter().collect();
        assert_eq!(names, ["b", "tcp_cubic", "virtio_mmio"]);
    }

    #[test]
    fn search_order_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let boot = dir.path().join("boot");
        std::fs::create_dir(&boot).unwrap();
        // Nothing anywhere: the error names every place.
        let e = find(None, None, &boot).unwrap_err().to_string();
        assert!(e.contains("--kernel, $FLEDGE_KERNEL"), "{e}");
        assert!(e.contains("vmlinuz-*"), "{e}");
        assert!(e.contains("fetch-kernel.sh"), "{e}");
        // The newest /boot/vmlinuz-* by version, not by name.
        for v in ["6.1.0-9-amd64", "6.1.0-10-amd64", "5.10.0-30-amd64"] {
            std::fs::write(boot.join(format!("vmlinuz-{v}")), "k").unwrap();
        }
        assert_eq!(
            find(None, None, &boot).unwrap(),
            boot.join("vmlinuz-6.1.0-10-amd64")
        );
        // FLEDGE_KERNEL wins over /boot, --kernel over both; a named file must exist.
        let k = dir.path().join("k");
        std::fs::write(&k, "k").unwrap();
        assert_eq!(find(None, Some(k.clone()), &boot).unwrap(), k);
        let e = find(Some(&dir.path().join("nope")), Some(k), &boot)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--kernel") && e.contains("nope"), "{e}");
    }
}
