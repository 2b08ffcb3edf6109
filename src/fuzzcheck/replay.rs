//! The fuzz targets' checks without cargo-fuzz: every committed corpus file
//! (`fuzz/corpus/<target>/`), then a bounded pass of deterministic random mutations of them.
//! Runs in `cargo test` (build host only).

use super::TARGETS;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::PathBuf;

/// Mutated inputs per target unless `RWSGI_FUZZ_REPLAY_RUNS` says otherwise.
const DEFAULT_RUNS: usize = 20_000;
const MAX_LEN: usize = 4096;

/// xorshift64*: a fixed seed makes every run check the same inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Bytes the parsers give meaning to.
const INTERESTING: &[u8] = b"\xff\n\r\t\0 =\"'\\/:%{},.#-_0179aZ\x7f\x80\xc3\xe9";

fn mutate(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut d = corpus[rng.below(corpus.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(d.len() + 1);
        let last = d.len().saturating_sub(1);
        match rng.below(6) {
            0 if !d.is_empty() => d[at.min(last)] ^= 1 << rng.below(8),
            1 if !d.is_empty() => d[at.min(last)] = INTERESTING[rng.below(INTERESTING.len())],
            2 => d.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
            3 => {
                let end = (at + rng.below(8)).min(d.len());
                d.drain(at..end);
            }
            4 => {
                let end = (at + rng.below(16)).min(d.len());
                let copy = d[at..end].to_vec();
                let to = rng.below(d.len() + 1);
                d.splice(to..to, copy);
            }
            _ => {
                let other = &corpus[rng.below(corpus.len())];
                let from = rng.below(other.len() + 1);
                let end = (from + rng.below(32)).min(other.len());
                d.splice(at..at, other[from..end].iter().copied());
            }
        }
    }
    d.truncate(MAX_LEN);
    d
}

fn run_one(target: &str, check: fn(&[u8]), input: &[u8], origin: &str) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(input))) {
        eprintln!(
            "fuzz check {target} failed on {origin}; input (escaped): \"{}\"",
            input.escape_ascii()
        );
        resume_unwind(panic);
    }
}

fn corpus_of(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.expect("corpus entry").path();
            let data = std::fs::read(&p).expect("corpus file");
            (p, data)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn committed_corpus_and_random_mutations_pass_every_check() {
    let runs = std::env::var("RWSGI_FUZZ_REPLAY_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_RUNS);
    for &(target, check) in TARGETS {
        let files = corpus_of(target);
        assert!(!files.is_empty(), "fuzz/corpus/{target} is empty");
        for (path, data) in &files {
            run_one(target, check, data, &path.display().to_string());
        }
        let corpus: Vec<Vec<u8>> = files.into_iter().map(|(_, d)| d).collect();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ target.len() as u64);
        for i in 0..runs {
            let input = mutate(&mut rng, &corpus);
            run_one(target, check, &input, &format!("random mutation {i}"));
        }
    }
}

#[test]
fn every_target_has_a_fuzz_target_file() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    for &(target, _) in TARGETS {
        let src = std::fs::read_to_string(dir.join(format!("{target}.rs")))
            .unwrap_or_else(|e| panic!("fuzz/fuzz_targets/{target}.rs: {e}"));
        assert!(src.contains("mod_rwsgi::fuzzcheck::"), "{target}.rs");
    }
}
