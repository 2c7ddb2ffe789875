//! Benchmark (placeholder).
pub struct BenchOptions;
pub struct BenchReport;
pub fn run_benchmark() {}
