//! Pairs per second to read, tokenize and collate a generated 20k-pair file (standard and
//! conversational), as JSONL and as Parquet, with the SmolLM2 tokenizer from `fixtures/`:
//! TRL 0.28's pipeline (`tokenize_and_collate_*`, `parquet_*`) and TRL 1.16's
//! (`v1_prepare_*`: read and tokenize only, what TRL's `_prepare_dataset` does;
//! `bench/data_prepare_bench.sh` runs TRL's own on the same files).
//!
//! `cargo bench -p sdpo-data --bench data_pipeline`. The JSONL files are generated
//! deterministically into `$SDPO_DATA_BENCH_DIR` (default: the system temp dir) on first run
//! (`SDPO_DATA_BENCH_PREPARE=1` only writes them and exits); the Parquet copies are written by
//! `datasets` (`bench/data_arrow_bench.sh` does all of it, then runs the Python comparisons
//! `bench/data_tokenize_bench.py` and `bench/data_arrow_bench.py` on the same files).

use std::io::Write;
use std::path::PathBuf;

use divan::counter::ItemsCount;
use sdpo_data::{BatchSampler, DataConfig, PreferenceProcessor, PreferenceTokenizer, TrlPipeline};

const PAIRS: usize = 20_000;
const BATCH: usize = 8;

fn main() {
    if std::env::var_os("SDPO_DATA_BENCH_PREPARE").is_some() {
        let (standard, chat) = ensure_files();
        eprintln!("{} and {} ready", standard.display(), chat.display());
        return;
    }
    divan::main();
}

fn fixtures_dir() -> PathBuf {
    match std::env::var_os("SDPO_FIXTURES") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures"),
    }
}

fn bench_dir() -> PathBuf {
    match std::env::var_os("SDPO_DATA_BENCH_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => std::env::temp_dir().join("sdpo-data-bench"),
    }
}

/// A small deterministic generator (64-bit LCG) of English-like sentences.
struct Words(u64);

impl Words {
    const VOCAB: [&'static str; 32] = [
        "the",
        "model",
        "answer",
        "question",
        "because",
        "data",
        "tokens",
        "quickly",
        "never",
        "preference",
        "chosen",
        "rejected",
        "sky",
        "blue",
        "green",
        "is",
        "a",
        "an",
        "of",
        "to",
        "and",
        "in",
        "that",
        "it",
        "for",
        "on",
        "with",
        "as",
        "was",
        "3.14",
        "2026",
        "naïve",
    ];

    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn sentence(&mut self, min: u64, max: u64) -> String {
        let n = min + self.next() % (max - min + 1);
        let words: Vec<&str> = (0..n)
            .map(|_| Self::VOCAB[(self.next() % 32) as usize])
            .collect();
        words.join(" ")
    }
}

/// Writes `pairs_standard.jsonl` and `pairs_chat.jsonl` (20k pairs each) unless present.
fn ensure_files() -> (PathBuf, PathBuf) {
    let dir = bench_dir();
    let standard = dir.join("pairs_standard.jsonl");
    let chat = dir.join("pairs_chat.jsonl");
    if standard.exists() && chat.exists() {
        return (standard, chat);
    }
    std::fs::create_dir_all(&dir).expect("bench dir");
    let mut words = Words(42);
    let mut s = std::io::BufWriter::new(std::fs::File::create(&standard).expect("create"));
    let mut c = std::io::BufWriter::new(std::fs::File::create(&chat).expect("create"));
    for _ in 0..PAIRS {
        let prompt = words.sentence(20, 200);
        let chosen = words.sentence(10, 150);
        let rejected = words.sentence(10, 150);
        let line = serde_json::json!({"prompt": prompt, "chosen": format!(" {chosen}"), "rejected": format!(" {rejected}")});
        writeln!(s, "{line}").expect("write");
        let line = serde_json::json!({
            "prompt": [{"role": "user", "content": prompt}],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
        });
        writeln!(c, "{line}").expect("write");
    }
    s.flush().expect("flush");
    c.flush().expect("flush");
    (standard, chat)
}

/// TRL 0.28's pipeline: `max_length` 512, `max_prompt_length` 256, `keep_end`.
fn processor() -> PreferenceProcessor {
    let tokenizer =
        PreferenceTokenizer::from_dir(fixtures_dir().join("smollm2")).expect("tokenizer");
    let config = DataConfig {
        max_length: Some(512),
        max_prompt_length: Some(Some(256)),
        ..DataConfig::v0_28()
    };
    PreferenceProcessor::new(tokenizer, config).expect("processor")
}

/// TRL 1.16's pipeline: `max_length` 512, `keep_start` (its defaults but the length).
fn processor_v1() -> PreferenceProcessor {
    let tokenizer =
        PreferenceTokenizer::from_dir(fixtures_dir().join("smollm2")).expect("tokenizer");
    let config = DataConfig {
        trl_semantics: TrlPipeline::V1,
        max_length: Some(512),
        ..DataConfig::default()
    };
    PreferenceProcessor::new(tokenizer, config).expect("processor")
}

/// Reads and tokenizes (no collation: TRL's `_prepare_dataset` stops there too); prints the
/// id count and two checksums the Python side prints for the same records.
fn prepare(processor: &PreferenceProcessor, path: &PathBuf) -> usize {
    let dataset = processor.process_file(path).expect("process");
    let (mut ids, mut sum, mut sum_sq) = (0u64, 0u64, 0u64);
    for pair in &dataset.pairs {
        for list in [&pair.prompt_ids, &pair.chosen_ids, &pair.rejected_ids] {
            for &id in list.iter() {
                ids += 1;
                sum += u64::from(id);
                sum_sq = sum_sq.wrapping_add(u64::from(id) * u64::from(id));
            }
        }
    }
    eprintln!(
        "{} (TRL 1.x): {} pairs kept of {}, {ids} ids, sum {sum}, sum of squares {sum_sq}",
        path.display(),
        dataset.len(),
        dataset.report.records_read
    );
    dataset.len()
}

fn run(processor: &PreferenceProcessor, path: &PathBuf) -> usize {
    let dataset = processor.process_file(path).expect("process");
    let collator = processor.collator().expect("collator");
    let sampler = BatchSampler::new(dataset.len(), BATCH, 0).expect("sampler");
    let mut tokens = 0;
    for indices in sampler.epoch(0) {
        let batch = collator
            .collate_indices(&dataset, &indices)
            .expect("collate");
        tokens += batch.input_ids.len();
    }
    assert_eq!(dataset.len(), PAIRS);
    // Printed every run so the Python baseline's id count can be compared.
    let ids: usize = dataset
        .pairs
        .iter()
        .map(|p| p.prompt_ids.len() + p.chosen_ids.len() + p.rejected_ids.len())
        .sum();
    eprintln!(
        "{}: {} pairs, {ids} ids, content hash {}",
        path.display(),
        dataset.len(),
        dataset.content_hash_hex()
    );
    tokens
}

#[divan::bench(sample_count = 5, sample_size = 1)]
fn tokenize_and_collate_standard(bencher: divan::Bencher) {
    let (standard, _) = ensure_files();
    let processor = processor();
    bencher
        .counter(ItemsCount::new(PAIRS))
        .bench(|| run(&processor, &standard));
}

#[divan::bench(sample_count = 5, sample_size = 1)]
fn tokenize_and_collate_chat(bencher: divan::Bencher) {
    let (_, chat) = ensure_files();
    let processor = processor();
    bencher
        .counter(ItemsCount::new(PAIRS))
        .bench(|| run(&processor, &chat));
}

/// The Parquet copy of a JSONL bench file (written by `bench/data_arrow_bench.sh`).
fn parquet_copy(name: &str) -> PathBuf {
    let path = bench_dir().join(format!("pairs_{name}.parquet"));
    assert!(
        path.exists(),
        "{} missing: run bench/data_arrow_bench.sh",
        path.display()
    );
    path
}

#[divan::bench(sample_count = 5, sample_size = 1)]
fn parquet_tokenize_and_collate_standard(bencher: divan::Bencher) {
    let path = parquet_copy("standard");
    let processor = processor();
    bencher
        .counter(ItemsCount::new(PAIRS))
        .bench(|| run(&processor, &path));
}

#[divan::bench(sample_count = 5, sample_size = 1)]
fn parquet_tokenize_and_collate_chat(bencher: divan::Bencher) {
    let path = parquet_copy("chat");
    let processor = processor();
    bencher
        .counter(ItemsCount::new(PAIRS))
        .bench(|| run(&processor, &path));
}

#[divan::bench(sample_count = 5, sample_size = 1)]
fn v1_prepare_standard(bencher: divan::Bencher) {
    let (standard, _) = ensure_files();
    let processor = processor_v1();
    bencher
        .counter(ItemsCount::new(PAIRS))
        .bench(|| prepare(&processor, &standard));
}

#[divan::bench(sample_count = 5, sample_size = 1)]
fn v1_prepare_chat(bencher: divan::Bencher) {
    let (_, chat) = ensure_files();
    let processor = processor_v1();
    bencher
        .counter(ItemsCount::new(PAIRS))
        .bench(|| prepare(&processor, &chat));
}
