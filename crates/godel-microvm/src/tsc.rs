//! Host TSC frequency, for the guest's `tsc_early_khz=` kernel argument.
//!
//! Under TCG the guest TSC runs at the host TSC rate, and `-M microvm` has
//! neither HPET nor ACPI PM timer, so the guest kernel cannot calibrate its
//! TSC against the PIT reliably: about one boot in ten then hangs. Telling it
//! the frequency up front (`tsc_early_khz=`) removed every hang in ~200 boots.
//!
//! The frequency is measured, not hard-coded: `rdtsc` against
//! `CLOCK_MONOTONIC` over a short interval, keeping the tightest of several
//! bracketed samples so a preemption between the two reads does not skew it.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// One bracketed reading: TSC and monotonic time taken back to back, with
/// the width of the bracket (how long the pair took) as its error bound.
fn reading() -> (u64, Instant, Duration) {
    let mut best: Option<(u64, Instant, Duration)> = None;
    for _ in 0..16 {
        let t0 = Instant::now();
        let tsc = rdtsc();
        let t1 = Instant::now();
        let width = t1 - t0;
        let mid = t0 + width / 2;
        if best.is_none_or(|b| width < b.2) {
            best = Some((tsc, mid, width));
        }
    }
    // The loop runs at least once, so `best` is always set.
    best.unwrap_or((rdtsc(), Instant::now(), Duration::ZERO))
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` only reads the time-stamp counter; it has no memory
    // effects and is available on every x86_64 CPU.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(not(target_arch = "x86_64"))]
fn rdtsc() -> u64 {
    0
}

/// Measure the host TSC frequency in kHz over `interval`.
pub fn measure_tsc_khz(interval: Duration) -> Option<u64> {
    if !cfg!(target_arch = "x86_64") {
        return None;
    }
    let mut samples = Vec::new();
    for _ in 0..3 {
        let (c0, t0, _) = reading();
        std::thread::sleep(interval);
        let (c1, t1, _) = reading();
        let ns = (t1 - t0).as_nanos() as f64;
        if ns <= 0.0 || c1 <= c0 {
            continue;
        }
        samples.push((c1 - c0) as f64 / ns * 1e6);
    }
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let khz = samples[samples.len() / 2].round() as u64;
    (khz > 100_000).then_some(khz)
}

/// The host TSC frequency in kHz, measured once per process (about 0.15 s).
pub fn host_tsc_khz() -> Option<u64> {
    static KHZ: OnceLock<Option<u64>> = OnceLock::new();
    *KHZ.get_or_init(|| measure_tsc_khz(Duration::from_millis(50)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measured_frequency_is_plausible_and_stable() {
        let a = measure_tsc_khz(Duration::from_millis(20)).unwrap();
        let b = measure_tsc_khz(Duration::from_millis(20)).unwrap();
        // A real x86 TSC runs between 0.5 and 6 GHz.
        assert!((500_000..6_000_000).contains(&a), "{a} kHz");
        let diff = a.abs_diff(b) as f64 / a as f64;
        assert!(diff < 0.01, "{a} vs {b}");
    }
}
