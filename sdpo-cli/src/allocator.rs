//! glibc's allocator, set for training: freed tensor memory stays in the process.
//!
//! By default glibc serves every block above a moving threshold (at most 32 MiB) with a fresh
//! `mmap` and hands freed memory back to the kernel at once, so every step faults in and zeroes
//! its activations, logits chunks and gradients again: 8-13 % of a flex training step was the
//! kernel doing so (docs/benchmarks.md, issue 31's section). Serving blocks up to 32 MiB from
//! the heap and keeping up to 1 GiB of freed heap reuses that memory instead, for ~100-300 MB
//! more peak memory.
//!
//! A user's own `GLIBC_TUNABLES` with `glibc.malloc.` settings wins: then nothing is changed.

/// Largest block served from the heap (glibc's upper bound for this setting).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;

/// Freed memory at the top of the heap kept before any is returned to the kernel.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 1 << 30;

/// Applies the settings above (glibc on Linux; elsewhere nothing to do). Returns whether
/// they were applied.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let user_set = std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc."));
        if user_set {
            return false;
        }
        // SAFETY: `mallopt` only changes glibc's allocator parameters; it is called before any
        // other thread exists, and an out-of-range value is refused (returns 0), not applied.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    #[test]
    fn glibc_takes_the_settings_unless_the_user_set_its_malloc_tunables() {
        let user_set = std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc."));
        assert_eq!(super::keep_freed_memory(), !user_set);
    }
}
