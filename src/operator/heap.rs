//! The allocator's side of the footprint. glibc keeps memory a burst freed (a fan-out's
//! list and create responses) for reuse instead of returning it: after 1000 node runs the
//! operator held 15 MiB of live data and 40 MiB free but kept (`make bench`). Trimming
//! now and then gives that back; elsewhere (musl) the allocator returns it by itself.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often free memory is looked at.
const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Free memory worth giving back: below it, a trim is not worth the walk of the arenas.
const TRIM_ABOVE: usize = 4 << 20;

/// The allocator's (bytes in use, bytes free but kept), where it can tell (glibc).
pub fn stats() -> Option<(usize, usize)> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's counters.
        let info = unsafe { libc::mallinfo2() };
        Some((info.uordblks + info.hblkhd, info.fordblks))
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

/// Gives free memory back to the system every few seconds while more than
/// [`TRIM_ABOVE`] is kept, until `stop`.
pub async fn trim_periodically(stop: CancellationToken) {
    let mut tick = tokio::time::interval(TRIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // glibc still counts the pages a trim gave back as free: trim again only when the free
    // memory moved, not every tick of an idle operator.
    let mut trimmed_at = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Some((in_use, free)) = stats()
            && free > TRIM_ABOVE
            && free.abs_diff(trimmed_at) > TRIM_ABOVE / 4
        {
            trim();
            trimmed_at = free;
            tracing::debug!(in_use, free, "gave free memory back");
        }
    }
}

fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free pages; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rss_bytes() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
        let pages: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .expect("rss");
        pages * 4096
    }

    #[test]
    fn trimming_gives_freed_memory_back() {
        if stats().is_none() {
            return; // not glibc: the allocator returns memory by itself
        }
        // 64 MiB in blocks below the mmap threshold, then one block after them that stays:
        // freeing the others leaves them inside the heap, kept, as after a burst.
        let blocks: Vec<Vec<u8>> = (0..64 * 1024).map(|i| vec![i as u8; 1024]).collect();
        let pin = vec![1u8; 1024];
        drop(blocks);
        let (_, free) = stats().expect("glibc");
        assert!(free > 48 << 20, "freed blocks are kept: {free}");
        let before = rss_bytes();
        trim();
        let after = rss_bytes();
        assert!(before > after + (32 << 20), "RSS {before} -> {after}");
        drop(pin);
    }
}
