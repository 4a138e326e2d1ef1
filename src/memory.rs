//! The memory a tool may plan for. Sizes that a config or a flag implies (parameters, one
//! image's activations, a schedule, a packed array) are computed in checked arithmetic and
//! compared with the machine's memory before anything that large is allocated, so an absurd
//! value is refused in one line instead of aborting on a failed allocation.

use std::sync::OnceLock;

/// The budget where `/proc/meminfo` cannot be read (not Linux): 64 GiB.
const FALLBACK_BYTES: u128 = 64 << 30;

/// The machine's memory in bytes (`MemTotal` of `/proc/meminfo`).
pub fn total_bytes() -> u128 {
    static TOTAL: OnceLock<u128> = OnceLock::new();
    *TOTAL.get_or_init(|| {
        std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| mem_total(&s)).unwrap_or(FALLBACK_BYTES)
    })
}

/// `MemTotal: N kB` of a `/proc/meminfo` text, in bytes.
fn mem_total(meminfo: &str) -> Option<u128> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u128 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The product of `dims` times `bytes_each`, or `None` when it overflows even a u128.
pub fn bytes_of(dims: &[usize], bytes_each: usize) -> Option<u128> {
    dims.iter().try_fold(bytes_each as u128, |acc, &d| acc.checked_mul(d as u128))
}

/// The largest batch of at most `max` items, and at least 1, whose `per_item` bytes (`None`:
/// beyond counting) stay within `budget`.
pub fn batch_within(per_item: Option<u128>, budget: u128, max: usize) -> usize {
    match per_item {
        Some(0) => max.max(1),
        Some(b) => usize::try_from(budget / b).unwrap_or(usize::MAX).clamp(1, max.max(1)),
        None => 1,
    }
}

/// An error message unless `bytes` (`None`: beyond counting) fits in the machine's memory;
/// `what` says what would need them.
pub fn ensure_fits(what: impl std::fmt::Display, bytes: Option<u128>) -> Result<(), String> {
    let total = total_bytes();
    match bytes {
        Some(b) if b <= total => Ok(()),
        _ => Err(format!(
            "{what} would need {}, more than the {} of memory of this machine",
            human(bytes),
            human(Some(total))
        )),
    }
}

/// `3.6 TB`, `512 MB`: bytes in decimal units, for messages.
pub fn human(bytes: Option<u128>) -> String {
    let Some(b) = bytes else { return "more bytes than can be counted".into() };
    const UNITS: [&str; 7] = ["bytes", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = b as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    match unit {
        0 => format!("{b} bytes"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mem_total_in_bytes() {
        assert_eq!(mem_total("MemTotal:       24000000 kB\nMemFree: 1 kB\n"), Some(24_576_000_000));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn sizes_overflow_into_none_and_are_refused() {
        assert_eq!(bytes_of(&[400, 784], 4), Some(1_254_400));
        assert_eq!(bytes_of(&[usize::MAX, usize::MAX, usize::MAX], 4), None);
        assert!(ensure_fits("x", Some(1)).is_ok());
        let e =
            ensure_fits("--hidden 1000000000: the network", bytes_of(&[1_000_000_000, 1_000_000_000], 4)).unwrap_err();
        assert!(e.starts_with("--hidden 1000000000: the network would need 4.0 EB, more than the "), "{e}");
        assert!(ensure_fits("x", None).unwrap_err().contains("more bytes than can be counted"));
    }

    #[test]
    fn a_batch_within_a_budget_is_between_one_and_the_most() {
        assert_eq!(batch_within(Some(100), 1_000, 500), 10);
        assert_eq!(batch_within(Some(1), 1_000, 500), 500);
        assert_eq!(batch_within(Some(2_000), 1_000, 500), 1);
        assert_eq!(batch_within(Some(0), 1_000, 500), 500);
        assert_eq!(batch_within(None, 1_000, 500), 1);
    }

    #[test]
    fn human_sizes_use_decimal_units() {
        assert_eq!(human(Some(999)), "999 bytes");
        assert_eq!(human(Some(3_600_000_000_000)), "3.6 TB");
    }
}
