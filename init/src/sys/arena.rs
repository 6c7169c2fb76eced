//! The first 64 KiB the init allocates: a bump arena in `.bss`, in front of `malloc`.
//!
//! A boot allocates a few kilobytes (the options, the spec, the environment, the exec's C
//! strings), in many sizes. From `malloc` each new size class costs `brk`/`mmap`/`munmap` calls
//! (musl's allocator maps and unmaps pages per size class), which are slow in an emulated guest;
//! from the arena a boot makes none. Freed arena memory is not reused, except that the latest
//! allocation can be rolled back or resized in place (a growing `Vec` or `String`). What does not
//! fit goes to `malloc`, and every pointer is told apart by its address.
//!
//! The init is single-threaded (a forked child has its own copy), so the offsets are plain
//! relaxed atomics: only their interior mutability is needed.

/// Where the next allocation may start, and where the latest one starts (`None` once it has been
/// rolled back): offsets into an arena of `cap` bytes at address `base`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bump {
    pub next: usize,
    pub last: Option<usize>,
}

impl Bump {
    #[cfg(test)]
    pub const EMPTY: Bump = Bump {
        next: 0,
        last: None,
    };

    /// Room for `size` bytes aligned to `align` (a power of two) at `base + offset`: the
    /// offset and the state after, or `None` when it does not fit in `cap`.
    pub fn alloc(
        self,
        base: usize,
        cap: usize,
        size: usize,
        align: usize,
    ) -> Option<(Bump, usize)> {
        let addr = base.checked_add(self.next)?.checked_add(align - 1)? & !(align - 1);
        let start = addr - base;
        let end = start.checked_add(size)?;
        (end <= cap).then_some((
            Bump {
                next: end,
                last: Some(start),
            },
            start,
        ))
    }

    /// Frees the allocation at `offset`: only the latest one gives its room back.
    pub fn free(self, offset: usize) -> Bump {
        if self.last == Some(offset) {
            Bump {
                next: offset,
                last: None,
            }
        } else {
            self
        }
    }

    /// Resizes the allocation at `offset`, now `old` bytes, to `size` in place: the latest one
    /// while it fits in `cap`, any other one only to shrink. `None`: it must move.
    pub fn resize(self, offset: usize, old: usize, size: usize, cap: usize) -> Option<Bump> {
        if self.last == Some(offset) {
            let end = offset.checked_add(size)?;
            (end <= cap).then_some(Bump {
                next: end,
                last: self.last,
            })
        } else {
            (size <= old).then_some(self)
        }
    }
}

#[cfg(not(test))]
pub use global::*;

#[cfg(not(test))]
mod global {
    use core::alloc::Layout;
    use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    use super::Bump;

    const SIZE: usize = 64 << 10;
    /// `usize::MAX` in [`LAST`] stands for `None`.
    const NONE: usize = usize::MAX;

    #[repr(C, align(16))]
    struct Memory([u8; SIZE]);

    /// Only ever reached through a raw pointer ([`base`]), handed out in disjoint pieces.
    static mut MEMORY: Memory = Memory([0; SIZE]);
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    static LAST: AtomicUsize = AtomicUsize::new(NONE);

    fn base() -> *mut u8 {
        (&raw mut MEMORY).cast()
    }

    fn state() -> Bump {
        let last = LAST.load(Relaxed);
        Bump {
            next: NEXT.load(Relaxed),
            last: (last != NONE).then_some(last),
        }
    }

    fn set(b: Bump) {
        NEXT.store(b.next, Relaxed);
        LAST.store(b.last.unwrap_or(NONE), Relaxed);
    }

    /// The offset of `p` when it points into the arena.
    pub fn offset(p: *mut u8) -> Option<usize> {
        (p as usize)
            .checked_sub(base() as usize)
            .filter(|&o| o < SIZE)
    }

    /// Arena memory for `layout`, or `None` when it does not fit.
    pub fn alloc(layout: Layout) -> Option<*mut u8> {
        let (b, start) = state().alloc(base() as usize, SIZE, layout.size(), layout.align())?;
        set(b);
        Some(base().wrapping_add(start))
    }

    /// Frees the arena allocation at `offset`.
    pub fn free(offset: usize) {
        set(state().free(offset));
    }

    /// Resizes the arena allocation at `offset` (now `old` bytes) in place, if it can be.
    pub fn resize(offset: usize, old: usize, size: usize) -> bool {
        match state().resize(offset, old, size, SIZE) {
            Some(b) => {
                set(b);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: usize = 256;

    #[test]
    fn allocations_are_aligned_and_bounded() {
        // A base that is not itself aligned to the larger alignments.
        let base = 0x1008;
        let (b, a) = Bump::EMPTY.alloc(base, CAP, 3, 1).unwrap();
        assert_eq!((a, b.next, b.last), (0, 3, Some(0)));
        let (b, c) = b.alloc(base, CAP, 8, 8).unwrap();
        assert_eq!(c, 8, "0x100b rounds up to 0x1010");
        assert_eq!((base + c) % 8, 0);
        let (b, d) = b.alloc(base, CAP, 16, 64).unwrap();
        assert_eq!((base + d) % 64, 0);
        assert_eq!(d, 0x1040 - base);
        assert_eq!(b.next, d + 16);
        // Exactly the rest fits; one byte more does not, and leaves the state to the caller.
        let rest = CAP - b.next;
        assert!(b.alloc(base, CAP, rest + 1, 1).is_none());
        let (full, e) = b.alloc(base, CAP, rest, 1).unwrap();
        assert_eq!((e, full.next), (b.next, CAP));
        assert!(full.alloc(base, CAP, 1, 1).is_none());
        assert!(Bump::EMPTY.alloc(base, CAP, usize::MAX, 1).is_none());
        assert!(Bump::EMPTY.alloc(usize::MAX - 4, CAP, 1, 16).is_none());
    }

    #[test]
    fn only_the_latest_allocation_rolls_back() {
        let (b, x) = Bump::EMPTY.alloc(0, CAP, 10, 1).unwrap();
        let (b, y) = b.alloc(0, CAP, 20, 1).unwrap();
        assert_eq!(b.free(x), b, "an earlier allocation is left in place");
        let rolled = b.free(y);
        assert_eq!(
            rolled,
            Bump {
                next: y,
                last: None
            }
        );
        assert_eq!(rolled.free(y), rolled, "a second free changes nothing");
        assert_eq!(rolled.free(x), rolled);
        let (_, z) = rolled.alloc(0, CAP, 5, 1).unwrap();
        assert_eq!(z, y, "the room is used again");
    }

    #[test]
    fn the_latest_allocation_grows_in_place_while_it_fits() {
        let (b, x) = Bump::EMPTY.alloc(0, CAP, 10, 1).unwrap();
        let (b, y) = b.alloc(0, CAP, 20, 1).unwrap();
        let grown = b.resize(y, 20, 100, CAP).unwrap();
        assert_eq!(
            grown,
            Bump {
                next: y + 100,
                last: Some(y)
            }
        );
        let shrunk = grown.resize(y, 100, 1, CAP).unwrap();
        assert_eq!(shrunk.next, y + 1);
        assert!(b.resize(y, 20, CAP - y + 1, CAP).is_none());
        assert_eq!(b.resize(y, 20, CAP - y, CAP).unwrap().next, CAP);
        // An earlier one only shrinks (in place, its room stays taken); growing moves it.
        assert_eq!(b.resize(x, 10, 4, CAP), Some(b));
        assert_eq!(b.resize(x, 10, 10, CAP), Some(b));
        assert!(b.resize(x, 10, 11, CAP).is_none());
    }
}
