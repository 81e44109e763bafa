//! `sdpo export-pairs`: the exact rows the reference sees for every pair of a run's splits
//! (token ids and completion masks, after the chat template and truncation), so that another
//! engine (`tools/ref_logps.py`: transformers, vLLM) computes the reference's log-probs of the
//! same tokens and writes them as a cache this run reads (docs/reference-cache.md).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::build::reference_identity_of;
use super::cache::{CacheKey, Computation, PairRows, rows_sha256};
use crate::config::TrainConfig;
use crate::error::{TrainError, io};
use crate::observer::TrainObserver;
use crate::startup::RunData;

/// The `format` of an exported pairs file's first line.
pub const PAIRS_FORMAT: &str = "sdpo-pairs";

/// Writes `out_dir/{split}.jsonl` for every split of `config`: a header line (format, split,
/// pair count, the content parts of the cache key but `reference`, and the identity of the
/// reference the run names), then one line per pair in dataset order. Returns the files.
pub fn export_pairs(
    config: &TrainConfig,
    out_dir: &Path,
    observer: &mut dyn TrainObserver,
) -> Result<Vec<PathBuf>, TrainError> {
    let data = RunData::load(config, observer)?;
    let reference = reference_identity_of(config)?;
    std::fs::create_dir_all(out_dir).map_err(io("create directory", out_dir))?;
    let mut written = Vec::new();
    for (split, dataset) in data.splits() {
        let name = match split {
            super::Split::Train => "train",
            super::Split::Eval => "eval",
        };
        let rows = rows_sha256(dataset, &data.collator)?;
        // How the log-probs are computed is not a content part; any value gives the same
        // content parts.
        let computation = Computation {
            precision: sdpo_models::MatmulPrecision::F32,
            kernels: "none",
        };
        let key = CacheKey::for_run(config, rows, computation, reference.clone());
        let mut header = serde_json::Map::new();
        header.insert("format".into(), PAIRS_FORMAT.into());
        header.insert("format_version".into(), 1.into());
        header.insert("split".into(), name.into());
        header.insert("pairs_total".into(), dataset.len().into());
        for (part, value) in key.parts().take(CacheKey::CONTENT_PARTS) {
            let field = if part == "reference" {
                "expected_reference"
            } else {
                part
            };
            header.insert(field.into(), value.into());
        }
        header.insert("content_key".into(), key.content_key().into());
        let path = out_dir.join(format!("{name}.jsonl"));
        let tmp = path.with_extension("jsonl.tmp");
        let file = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
        let mut w = BufWriter::new(file);
        let mut line = |value: serde_json::Value| writeln!(w, "{value}").map_err(io("write", &tmp));
        line(serde_json::Value::Object(header))?;
        for index in 0..dataset.len() {
            let rows = PairRows::of(dataset, &data.collator, index)?;
            line(serde_json::json!({
                "pair": index,
                "chosen_ids": rows.ids[0],
                "chosen_completion_mask": rows.completion_mask[0],
                "rejected_ids": rows.ids[1],
                "rejected_completion_mask": rows.completion_mask[1],
            }))?;
        }
        w.flush().map_err(io("write", &tmp))?;
        drop(w);
        std::fs::rename(&tmp, &path).map_err(io("rename into place", &path))?;
        observer.on_message(&format!(
            "{name}: {} pairs exported to `{}`",
            dataset.len(),
            path.display()
        ));
        written.push(path);
    }
    Ok(written)
}
