//! A counting global allocator: the system's, with the bytes live and
//! their peak, for tests and benches that measure memory (each measuring
//! binary installs it with `#[global_allocator]`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

/// The system allocator, counting the bytes live and their peak.
pub struct CountingAlloc {
    live: AtomicUsize,
    peak: AtomicUsize,
}

impl CountingAlloc {
    pub const fn new() -> CountingAlloc {
        CountingAlloc {
            live: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// Bytes allocated and not yet freed.
    pub fn live(&self) -> usize {
        self.live.load(SeqCst)
    }

    /// The most bytes live at once since the start or the last
    /// [`reset_peak`](Self::reset_peak).
    pub fn peak(&self) -> usize {
        self.peak.load(SeqCst)
    }

    /// Starts a new peak at `level` bytes.
    pub fn reset_peak(&self, level: usize) {
        self.peak.store(level, SeqCst);
    }

    fn grow(&self, by: usize) {
        let live = self.live.fetch_add(by, SeqCst) + by;
        self.peak.fetch_max(live, SeqCst);
    }
}

impl Default for CountingAlloc {
    fn default() -> Self {
        CountingAlloc::new()
    }
}

// SAFETY: every call goes to `System` unchanged; only counters are added.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            self.grow(l.size());
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        self.live.fetch_sub(l.size(), SeqCst);
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, size: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, size) };
        if !q.is_null() {
            if size >= l.size() {
                self.grow(size - l.size());
            } else {
                self.live.fetch_sub(l.size() - size, SeqCst);
            }
        }
        q
    }
}
