//! The stable fallback of the `request_decode` fuzz target, as a test: generated and mutated
//! request frames through the gateway's decoding path for ~10 s (`KEEN_FUZZ_SECONDS`), from a
//! fixed seed (`KEEN_FUZZ_SEED` to vary it). A panic fails the test and prints the input.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::time::Duration;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Every seed is a request the gateway decodes whole: the corpus starts from real traffic.
#[test]
fn every_seed_is_a_request_the_gateway_decodes() {
    let corpus = harness::corpus();
    let mut deepest = [0usize; 4];
    for frame in &corpus.frames {
        deepest[harness::one_input(frame) as usize] += 1;
    }
    // The refused-from-the-header seeds stop at Request; Produce seeds reach their records, but
    // for the deliberately broken ones (two batches in a partition, a transaction).
    assert_eq!(deepest[0] + deepest[1], 0, "{deepest:?}");
    assert!(deepest[3] >= 50, "{deepest:?}");
    assert!(corpus.frames.len() > 150, "{} seeds", corpus.frames.len());
}

#[test]
fn request_decoding_survives_mutated_and_random_frames() {
    let seconds = env_or("KEEN_FUZZ_SECONDS", 10);
    let seed = env_or("KEEN_FUZZ_SEED", 0x6b65_656e_6675_7a7a);
    let report = harness::run(seed, Duration::from_secs(seconds), u64::MAX);
    println!("seed {seed}: {}", report.summary());
    if let Some((input, message)) = &report.crash {
        panic!(
            "decoding panicked ({message}) on a {}-byte input: {}",
            input.len(),
            harness::hex(input)
        );
    }
    assert!(report.inputs >= 10_000, "{}", report.summary());
    // The generator reaches every stage, down to decoded records.
    assert!(report.depths.iter().all(|&n| n > 0), "{}", report.summary());
}
