//! The stable stand-in for `cargo fuzz run request_decode` (which needs nightly): generated and
//! mutated request frames through the gateway's decoding path, for a while, reporting inputs per
//! second and the first input that panics. `scripts/fuzz-gateway` runs it in release mode.
//!
//! ```text
//! fuzz_decode [--seconds N] [--seed S] [--write-corpus DIR] [--replay FILE]
//! ```
//! - `--write-corpus DIR` writes the seed frames (real encoded requests) and exits: a starting
//!   corpus for `cargo fuzz run request_decode DIR`.
//! - `--replay FILE` feeds one saved input (a crash, or a libFuzzer artifact) and exits.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn main() -> ExitCode {
    let mut seconds = 60u64;
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_default();
        match arg.as_str() {
            "--seconds" => seconds = value().parse().unwrap_or(seconds),
            "--seed" => seed = value().parse().unwrap_or(seed),
            "--write-corpus" => return write_corpus(PathBuf::from(value())),
            "--replay" => return replay(PathBuf::from(value())),
            other => {
                eprintln!(
                    "unknown argument {other:?}; see the doc comment of gateway/examples/fuzz_decode.rs"
                );
                return ExitCode::from(2);
            }
        }
    }
    println!("fuzz_decode: seed {seed}, {seconds} s");
    let mut total = harness::Report::default();
    // Report every 10 s; one run per slice, each with its own seed derived from the first.
    let mut slice = 0u64;
    while total.elapsed < Duration::from_secs(seconds) {
        let left = Duration::from_secs(seconds).saturating_sub(total.elapsed);
        let report = harness::run(
            seed.wrapping_add(slice.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            left.min(Duration::from_secs(10)),
            u64::MAX,
        );
        slice += 1;
        total.inputs += report.inputs;
        total.elapsed += report.elapsed;
        for (sum, n) in total.depths.iter_mut().zip(report.depths) {
            *sum += n;
        }
        println!("{}", total.summary());
        if let Some((input, message)) = report.crash {
            let path = std::env::temp_dir().join(format!("keen-fuzz-crash-{seed}-{slice}.bin"));
            let _ = std::fs::write(&path, &input);
            println!(
                "CRASH: {message}\ninput ({} bytes, saved to {}): {}",
                input.len(),
                path.display(),
                harness::hex(&input)
            );
            return ExitCode::FAILURE;
        }
    }
    println!("no crash");
    ExitCode::SUCCESS
}

fn write_corpus(dir: PathBuf) -> ExitCode {
    if let Err(error) = std::fs::create_dir_all(&dir) {
        eprintln!("{}: {error}", dir.display());
        return ExitCode::FAILURE;
    }
    let corpus = harness::corpus();
    for (i, frame) in corpus.frames.iter().enumerate() {
        if let Err(error) = std::fs::write(dir.join(format!("seed-{i:04}")), frame) {
            eprintln!("{}: {error}", dir.display());
            return ExitCode::FAILURE;
        }
    }
    println!(
        "{} seed frames written to {}",
        corpus.frames.len(),
        dir.display()
    );
    ExitCode::SUCCESS
}

fn replay(file: PathBuf) -> ExitCode {
    match std::fs::read(&file) {
        Ok(input) => {
            let depth = harness::one_input(&input);
            println!("{}: no panic, reached {depth:?}", file.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{}: {error}", file.display());
            ExitCode::FAILURE
        }
    }
}
