//! Switching to a root file system disk, in a boot initramfs (one that holds
//! [`rootfs::BOOT_MARKER`]): mount the disk read-only, put a tmpfs overlay of `overlay_size` on
//! top, leave the initramfs's mounts, move the overlay onto `/` and exec the disk's own `/init`,
//! which boots as it would from an initramfs. The kernel command line names the disk the way
//! Volant does (`root=/dev/vda rootfstype=squashfs overlay_size=1G`).

use alloc::format;
use alloc::string::{String, ToString};
use core::ffi::CStr;
use core::time::Duration;

use fledge_abi::{paths, rootfs};

use crate::error::Error;
use crate::mounts;
use crate::sys::{self, Errno};

/// Where the disk, the tmpfs and the merged root are mounted inside the initramfs.
const LOWER: &CStr = c"/.fledge-root/lower";
const RW: &CStr = c"/.fledge-root/rw";
const UPPER: &CStr = c"/.fledge-root/rw/upper";
const WORK: &CStr = c"/.fledge-root/rw/work";
const MERGED: &CStr = c"/.fledge-root/merged";

/// Whether this init runs in a boot initramfs.
pub fn wanted() -> bool {
    sys::lstat_mode(&sys::cstring(rootfs::BOOT_MARKER), false).is_some()
}

/// Mounts the disk and execs its `/init`; returns only the failure.
pub fn switch(cmdline: &str) -> Error {
    let baked = sys::read_to_string(&sys::cstring(rootfs::BOOT_MARKER), 4096).unwrap_or_default();
    match try_switch(rootfs::args(&baked, cmdline)) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn try_switch(a: rootfs::Args) -> Result<core::convert::Infallible, Error> {
    let step = |what: String| move |cause: Errno| Error::Root { what, cause };
    wait_for(a.device, a.wait_ms)?;
    for d in [c"/.fledge-root", LOWER, RW, MERGED] {
        match sys::mkdir(d, 0o755) {
            Ok(()) => {}
            Err(e) if e.0 == libc::EEXIST => {}
            Err(cause) => return Err(Error::Mkdir { path: d, cause }),
        }
    }
    let device = sys::cstring(a.device);
    sys::mount(
        &device,
        LOWER,
        &sys::cstring(a.fstype),
        libc::MS_RDONLY,
        None,
    )
    .map_err(step(format!(
        "failed to mount the root file system disk {} ({}) read-only",
        a.device, a.fstype
    )))?;
    let size = sys::cstring(&format!("size={},mode=0755", a.overlay_size));
    sys::mount(
        c"tmpfs",
        RW,
        c"tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        Some(&size),
    )
    .map_err(step(format!(
        "failed to mount the {} tmpfs over the root file system (overlay_size)",
        a.overlay_size
    )))?;
    for d in [UPPER, WORK] {
        sys::mkdir(d, 0o755).map_err(|cause| Error::Mkdir { path: d, cause })?;
    }
    let layers = c"lowerdir=/.fledge-root/lower,upperdir=/.fledge-root/rw/upper,workdir=/.fledge-root/rw/work";
    sys::mount(c"overlay", MERGED, c"overlay", 0, Some(layers)).map_err(step(
        "failed to mount the overlay of the root file system (is the overlay driver built in or in the boot initramfs?)".to_string(),
    ))?;
    if sys::lstat_mode(c"/.fledge-root/merged/init", true).is_none() {
        return Err(Error::Root {
            what: format!(
                "the root file system disk {} has no {}",
                a.device,
                paths::INIT
            ),
            cause: Errno(libc::ENOENT),
        });
    }
    // The disk's init mounts what it needs; the initramfs's mounts would only hide it.
    mounts::unmount_all(mounts::MOUNTS);
    sys::chdir(MERGED).map_err(step("failed to enter the root file system".into()))?;
    sys::mount(c".", c"/", c"", libc::MS_MOVE, None)
        .map_err(step("failed to move the root file system onto /".into()))?;
    sys::chroot(c".").map_err(step("failed to switch to the root file system".into()))?;
    sys::chdir(c"/").map_err(step("failed to enter the root file system".into()))?;
    let argv = [paths::INIT.to_string()];
    let cmd = sys::Command::new(paths::INIT, &argv, &sys::environment(), None, None, &[])
        .expect("constant strings have no NUL");
    let (_, cause) = cmd.exec();
    Err(Error::Root {
        what: format!("failed to start {} of the root file system", paths::INIT),
        cause,
    })
}

/// Waits for the disk's device node (devtmpfs makes it when the driver finds the disk).
fn wait_for(device: &str, wait_ms: u64) -> Result<(), Error> {
    let path = sys::cstring(device);
    let deadline = sys::now() + Duration::from_millis(wait_ms);
    loop {
        if sys::lstat_mode(&path, true).is_some() {
            return Ok(());
        }
        if sys::now() >= deadline {
            return Err(Error::RootMissing {
                device: device.to_string(),
                waited_ms: wait_ms,
            });
        }
        sys::sleep(Duration::from_millis(10));
    }
}
