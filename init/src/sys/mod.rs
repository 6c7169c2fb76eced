//! The init's only door to the kernel: every system call, behind safe wrappers, and the runtime
//! pieces that `std` would otherwise provide - the C entry point, the global allocator (a bump
//! arena in front of the C library's `malloc`) and the panic handler. Nothing outside this module
//! uses `unsafe`.
//!
//! System calls go through `rustix` (raw, no C library wrapper) wherever it has a safe API; the
//! C library remains for what rustix leaves to it: `fork`/`execve`, signal masks and waits,
//! `kill` with any signal (real-time ones too), netlink group membership and `F_SETOWN`, and the
//! network interface ioctls. Every descriptor the init opens is an `OwnedFd`.
//!
//! - [`arena`]: the memory the first allocations come from;
//! - [`fs`]: files, mounts, the console and kernel modules;
//! - [`proc`]: processes, signals, time, limits and the end of the machine;
//! - [`net`]: the interface-configuration socket and the generic netlink socket.
#![allow(unsafe_code)]

mod arena;
mod fs;
mod net;
mod proc;

pub use fs::*;
pub use net::*;
pub use proc::*;

use alloc::ffi::CString;
use core::ffi::{c_int, CStr};
use core::fmt;

// Without `std` nothing else asks the linker for the C library (the `libc` crate leaves that to
// `std` when its default `std` feature is on, as it is elsewhere in the workspace).
#[link(name = "c")]
extern "C" {}

/// The C entry point. The binary has no `std`: its panic machinery alone (the default panic
/// hook's backtrace symboliser) would be most of the binary. `std`'s `main` wrapper would also
/// open `/dev/null` onto closed fds 0-2 and abort when it cannot - at boot `/dev` may still be
/// empty, and an abort in PID 1 panics the kernel - and set SIGPIPE to ignored, which the target
/// would inherit.
#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(_argc: c_int, _argv: *const *const core::ffi::c_char) -> c_int {
    crate::run()
}

/// The allocator: the [`arena`] first, then the C library's `malloc`, which is linked in anyway.
#[cfg(not(test))]
struct Malloc;

#[cfg(not(test))]
#[global_allocator]
static ALLOCATOR: Malloc = Malloc;

/// What `malloc` aligns to on every Linux C library the init is built for.
#[cfg(not(test))]
const MALLOC_ALIGN: usize = 16;

/// Memory for `layout` from `malloc` (or `posix_memalign` for a larger alignment); null when
/// there is none.
#[cfg(not(test))]
fn malloc(layout: core::alloc::Layout) -> *mut u8 {
    let mut p = core::ptr::null_mut();
    // SAFETY: malloc has no preconditions; for posix_memalign the alignment (a Layout's) is a
    // power of two, here above 16 and so a multiple of the pointer size, and `p` is writable.
    let rc = unsafe {
        if layout.align() <= MALLOC_ALIGN {
            p = libc::malloc(layout.size());
            0
        } else {
            libc::posix_memalign(&mut p, layout.align(), layout.size())
        }
    };
    if rc == 0 {
        p.cast()
    } else {
        core::ptr::null_mut()
    }
}

/// Arena memory for `layout` while it lasts, else `malloc`'s.
#[cfg(not(test))]
fn allocate(layout: core::alloc::Layout) -> *mut u8 {
    arena::alloc(layout).unwrap_or_else(|| malloc(layout))
}

// SAFETY: the arena hands out disjoint, aligned pieces of its own memory, and takes back only
// what it handed out (told apart by address); malloc/realloc/free and posix_memalign return
// memory of at least the requested size and alignment (or null), and free accepts what they
// returned.
#[cfg(not(test))]
unsafe impl core::alloc::GlobalAlloc for Malloc {
    unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
        allocate(layout)
    }

    unsafe fn dealloc(&self, p: *mut u8, _layout: core::alloc::Layout) {
        match arena::offset(p) {
            Some(offset) => arena::free(offset),
            // SAFETY: `p` came from malloc or posix_memalign (the GlobalAlloc contract: it was
            // allocated here, and not from the arena).
            None => unsafe { libc::free(p.cast()) },
        }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: core::alloc::Layout, size: usize) -> *mut u8 {
        match arena::offset(p) {
            Some(offset) if arena::resize(offset, layout.size(), size) => return p,
            Some(_) => {}
            None if layout.align() <= MALLOC_ALIGN => {
                // SAFETY: `p` came from malloc (small alignment) and `size` is non-zero.
                return unsafe { libc::realloc(p.cast(), size).cast() };
            }
            None => {}
        }
        let Ok(new_layout) = core::alloc::Layout::from_size_align(size, layout.align()) else {
            return core::ptr::null_mut();
        };
        let q = allocate(new_layout);
        if !q.is_null() {
            // SAFETY: `p` is valid for `layout.size()` bytes and `q` for `size`; `q` is a new
            // allocation, so they do not overlap; `p` was allocated here with `layout`.
            unsafe {
                core::ptr::copy_nonoverlapping(p, q, layout.size().min(size));
                self.dealloc(p, layout);
            }
        }
        q
    }
}

// The precompiled `alloc` library is built for unwinding: its landing pads name the two symbols
// below. Panics here never unwind (the handler never returns), so neither is ever called.
/// Named by landing pads in precompiled library code; unreachable.
#[cfg(all(not(test), panic = "abort"))]
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}

/// Named by landing pads in precompiled library code; unreachable.
#[cfg(all(not(test), panic = "abort"))]
#[unsafe(no_mangle)]
#[allow(non_snake_case)]
extern "C" fn _Unwind_Resume() -> ! {
    panic!("unwinding is not supported")
}

/// A panic is a bug; it ends PID 1 the way any fatal error does (one line, sync, exit action).
#[cfg(all(not(test), panic = "abort"))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    crate::panicked(info)
}

/// An `errno` value; prints as the C library's text for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

impl From<rustix::io::Errno> for Errno {
    fn from(e: rustix::io::Errno) -> Errno {
        Errno(e.raw_os_error())
    }
}

/// A rustix result with this module's error type.
fn r<T>(result: rustix::io::Result<T>) -> Result<T, Errno> {
    result.map_err(Errno::from)
}

impl Errno {
    fn last() -> Errno {
        // SAFETY: __errno_location returns this thread's errno, valid for the whole thread.
        Errno(unsafe { *libc::__errno_location() })
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 128];
        // SAFETY: the buffer is valid for its length; the XSI strerror_r (musl and, through the
        // libc crate, glibc's __xpg_strerror_r) always NUL-terminates within it.
        let rc = unsafe { libc::strerror_r(self.0, buf.as_mut_ptr().cast(), buf.len()) };
        let text = CStr::from_bytes_until_nul(&buf)
            .ok()
            .and_then(|s| s.to_str().ok())
            .filter(|s| rc == 0 && !s.is_empty());
        match text {
            Some(s) => f.write_str(s),
            None => write!(f, "errno {}", self.0),
        }
    }
}

/// `s` as a C string; one with a NUL inside becomes the empty string, which no call accepts.
pub fn cstring(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

/// A C library call's result: `-1` means the reason is in `errno`.
fn check(rc: c_int) -> Result<c_int, Errno> {
    if rc == -1 {
        Err(Errno::last())
    } else {
        Ok(rc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    #[test]
    fn read_to_string_reads_whole_files_and_refuses_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path =
            |name: &str| std::ffi::CString::new(dir.path().join(name).to_str().unwrap()).unwrap();
        let long = "x".repeat(1000);
        std::fs::write(dir.path().join("long"), &long).unwrap();
        std::fs::write(dir.path().join("bad"), b"\xff\xfe").unwrap();
        assert_eq!(
            read_to_string(&path("long"), 1000).as_deref(),
            Ok(long.as_str())
        );
        assert_eq!(read_to_string(&path("long"), 999), Err(Errno(libc::EFBIG)));
        assert_eq!(read_to_string(&path("bad"), 1000), Err(Errno(libc::EILSEQ)));
        assert_eq!(
            read_to_string(&path("missing"), 1000),
            Err(Errno(libc::ENOENT))
        );
    }

    #[test]
    fn the_monotonic_clock_moves_forward() {
        let a = now();
        std::thread::sleep(Duration::from_millis(5));
        assert!(now() >= a + Duration::from_millis(5));
    }

    #[test]
    fn errno_prints_the_c_library_text() {
        assert_eq!(Errno(libc::ENOENT).to_string(), "No such file or directory");
        assert_eq!(Errno(libc::EACCES).to_string(), "Permission denied");
    }
}
