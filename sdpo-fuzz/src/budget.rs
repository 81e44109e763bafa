//! Each input's memory and time budget.
//!
//! [`CountingAllocator`] wraps the system allocator, counts the bytes live, the peak since the
//! current input began, and refuses any allocation that would take one input past
//! [`MEMORY_BOUND`] above what was live when it began: it records the finding where the
//! supervisor reads it ([`Progress`]) and aborts before the allocation happens. A watchdog thread
//! does the same for an input that runs past its time budget. A binary installs the allocator
//! with `#[global_allocator]`; without it the counters stay at zero and nothing is bounded.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The most one input may allocate on top of what was live when it began: 512 MiB. No file of
/// the corpus (at most [`crate::MAX_INPUT_BYTES`]) needs more than a few MiB; a parser that
/// believes a declared size (a 10 GB tensor in a 1 KB header) crosses it at once.
pub const MEMORY_BOUND: usize = 512 << 20;

/// The most one input may run: 10 s (debug builds of the slowest parser take milliseconds).
pub const TIME_BUDGET: Duration = Duration::from_secs(10);

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static BASELINE: AtomicUsize = AtomicUsize::new(0);
static ARMED: AtomicBool = AtomicBool::new(false);

/// The system allocator with a live-byte count and the per-input bound.
pub struct CountingAllocator;

// SAFETY: every method forwards to `System` with the caller's layout and pointer unchanged; the
// counters are plain atomics, and the over-budget path aborts without allocating.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        admit(layout.size());
        // SAFETY: the caller's contract is `System::alloc`'s.
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            added(layout.size());
        }
        pointer
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        admit(layout.size());
        // SAFETY: as above.
        let pointer = unsafe { System.alloc_zeroed(layout) };
        if !pointer.is_null() {
            added(layout.size());
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(pointer, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let grows = new_size.saturating_sub(layout.size());
        admit(grows);
        // SAFETY: as above.
        let moved = unsafe { System.realloc(pointer, layout, new_size) };
        if !moved.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            added(new_size);
        }
        moved
    }
}

fn added(size: usize) {
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

/// Aborts (after recording the finding) when `size` more bytes would take the current input
/// past [`MEMORY_BOUND`].
fn admit(size: usize) {
    if !ARMED.load(Ordering::Relaxed) {
        return;
    }
    let above =
        (LIVE.load(Ordering::Relaxed) + size).saturating_sub(BASELINE.load(Ordering::Relaxed));
    if above > MEMORY_BOUND {
        ARMED.store(false, Ordering::Relaxed);
        Progress::record_fatal(Verdict::OverMemory);
        std::process::abort();
    }
}

/// What ended an input the harness could not continue after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Verdict {
    /// Still running, or the process died without saying why (a signal, a stack overflow).
    Died = 0,
    /// An allocation beyond [`MEMORY_BOUND`] was refused.
    OverMemory = 1,
    /// The input ran past [`TIME_BUDGET`].
    OverTime = 2,
}

impl Verdict {
    fn from_word(word: u64) -> Verdict {
        match word {
            1 => Verdict::OverMemory,
            2 => Verdict::OverTime,
            _ => Verdict::Died,
        }
    }

    /// The finding's kind as a file-name word.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Died => "crash",
            Verdict::OverMemory => "memory",
            Verdict::OverTime => "hang",
        }
    }
}

static PROGRESS_FILE: std::sync::OnceLock<File> = std::sync::OnceLock::new();
static CURRENT: AtomicU64 = AtomicU64::new(u64::MAX);
static STARTED_NS: AtomicU64 = AtomicU64::new(0);

/// The child's progress as the supervisor reads it after a death: the index of the input under
/// way and the verdict, two little-endian words at the start of a file. Written with `pwrite`
/// from a file opened beforehand, so recording allocates nothing.
pub struct Progress;

impl Progress {
    /// Opens (creating) the progress file and starts the watchdog. Call once per process.
    pub fn install(path: &Path) -> std::io::Result<()> {
        let file = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(path)?;
        file.write_all_at(&[0u8; 16], 0)?;
        let _ = PROGRESS_FILE.set(file);
        std::thread::Builder::new()
            .name("sdpo-fuzz watchdog".into())
            .spawn(watchdog)?;
        Ok(())
    }

    /// Reads `(index, verdict)` back; `None` when no input had begun.
    pub fn read(path: &Path) -> std::io::Result<Option<(u64, Verdict)>> {
        let bytes = std::fs::read(path)?;
        if bytes.len() < 16 {
            return Ok(None);
        }
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]));
        let index = word(0);
        Ok((index != 0).then(|| (index - 1, Verdict::from_word(word(8)))))
    }

    fn record_fatal(verdict: Verdict) {
        if let Some(file) = PROGRESS_FILE.get() {
            let _ = file.write_all_at(&(verdict as u64).to_le_bytes(), 8);
        }
    }
}

fn clock() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

fn watchdog() {
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let current = CURRENT.load(Ordering::Relaxed);
        if current == u64::MAX {
            continue;
        }
        let ran = clock().saturating_sub(STARTED_NS.load(Ordering::Relaxed));
        if CURRENT.load(Ordering::Relaxed) == current && ran > TIME_BUDGET.as_nanos() as u64 {
            Progress::record_fatal(Verdict::OverTime);
            std::process::exit(86);
        }
    }
}

/// The bytes and time one input took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InputCost {
    /// The peak of live bytes while it ran, above what was live when it began.
    pub peak_bytes: usize,
    /// Its wall time.
    pub elapsed: Duration,
}

/// Marks input `index` as begun: resets the peak, arms the bound, records the index where the
/// supervisor finds it.
pub fn begin(index: u64) {
    let live = LIVE.load(Ordering::Relaxed);
    BASELINE.store(live, Ordering::Relaxed);
    PEAK.store(live, Ordering::Relaxed);
    if let Some(file) = PROGRESS_FILE.get() {
        let _ = file.write_all_at(&(index + 1).to_le_bytes(), 0);
    }
    STARTED_NS.store(clock(), Ordering::Relaxed);
    CURRENT.store(index, Ordering::Relaxed);
    ARMED.store(true, Ordering::Relaxed);
}

/// Marks the current input as done and returns its cost.
pub fn end() -> InputCost {
    ARMED.store(false, Ordering::Relaxed);
    CURRENT.store(u64::MAX, Ordering::Relaxed);
    let elapsed = Duration::from_nanos(clock().saturating_sub(STARTED_NS.load(Ordering::Relaxed)));
    InputCost {
        peak_bytes: PEAK
            .load(Ordering::Relaxed)
            .saturating_sub(BASELINE.load(Ordering::Relaxed)),
        elapsed,
    }
}
