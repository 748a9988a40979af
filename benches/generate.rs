//! Benchmark: generating one script as a whole process (start, parse facts, load
//! the target, evaluate, render, print), against the 5 ms budget.
//! Run with `cargo bench`; it prints the figures and says whether the budget holds.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 300;
const BUDGET: Duration = Duration::from_millis(5);

fn measure(args: &[&str]) -> Vec<Duration> {
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            let status = Command::new(env!("CARGO_BIN_EXE_mingen"))
                .args(args)
                .stdout(Stdio::null())
                .status()
                .expect("run mingen");
            let elapsed = start.elapsed();
            assert!(status.success(), "mingen {args:?} failed");
            elapsed
        })
        .collect();
    times.sort();
    times
}

fn main() {
    let facts = std::env::temp_dir().join("mingen-bench-facts.toml");
    std::fs::write(&facts, "disk = \"sda\"\nipv6 = \"used\"\nssh_ports = [2222]\n").expect("write facts");
    let facts_arg = facts.to_str().expect("utf-8 path");
    let cases: [(&str, Vec<&str>); 4] = [
        ("guide host (defaults)", vec![]),
        ("facts file", vec!["--facts", facts_arg]),
        ("3.22 target (derived)", vec!["--target", "alpine-3.22-kvm"]),
        ("plan", vec!["plan"]),
    ];
    let mut over = false;
    println!("{:<24} {:>9} {:>9} {:>9} {:>9}  ({RUNS} runs each)", "case", "min", "median", "p95", "max");
    for (name, args) in cases {
        let t = measure(&args);
        let (min, median, p95, max) = (t[0], t[RUNS / 2], t[RUNS * 95 / 100], t[RUNS - 1]);
        println!(
            "{name:<24} {:>7.2}ms {:>7.2}ms {:>7.2}ms {:>7.2}ms",
            min.as_secs_f64() * 1e3,
            median.as_secs_f64() * 1e3,
            p95.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        );
        over |= median > BUDGET;
    }
    println!(
        "budget: median at most {} ms per script, as a whole process: {}",
        BUDGET.as_millis(),
        if over { "EXCEEDED" } else { "met" }
    );
}
