//! The process's peak resident memory, for the figures a scale run reports per stage.
//!
//! Linux keeps a high-water mark of the resident set (`VmHWM` in `/proc/self/status`) and
//! lets a process reset it (writing `5` to `/proc/self/clear_refs`, Linux 4.0 and later), so
//! one process running stage after stage can say what each stage itself peaked at, not only
//! the largest so far. Elsewhere both return `None`/`false` and callers report nothing.

/// Peak resident set size of this process since it started or since the last successful
/// [`reset_peak_rss`], in bytes (None where `/proc/self/status` has no `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resets the high-water mark to the current resident set; false where the kernel does not
/// allow it (then [`peak_rss_bytes`] keeps counting from the process's start).
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reset_forgets_an_earlier_peak() {
        let Some(_) = peak_rss_bytes() else {
            return; // not Linux: nothing to measure
        };
        // 256 MiB touched, then freed: the mark holds it until the reset.
        let mut big = vec![0u8; 256 << 20];
        for i in (0..big.len()).step_by(4096) {
            big[i] = 1;
        }
        std::hint::black_box(&big);
        let with_big = peak_rss_bytes().unwrap();
        drop(big);
        if !reset_peak_rss() {
            return; // an old kernel: the mark cannot be reset
        }
        let after = peak_rss_bytes().unwrap();
        assert!(
            after + (200 << 20) < with_big,
            "peak after the reset {after} vs {with_big} with 256 MiB held"
        );
    }
}
