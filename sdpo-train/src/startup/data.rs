//! The tokenized data of a run: the train and eval splits from files, a dataset or a
//! mixture, what reading them did, and the checks every model gets against them.

use std::path::{Path, PathBuf};

use sdpo_data::{
    Collator, PreferenceProcessor, PreferenceTokenizer, TokenizedDataset, TokenizerInfo,
};
use sdpo_models::{CausalLm, ModelConfig};

use super::model_error;
use crate::config::TrainConfig;
use crate::error::TrainError;
use crate::observer::TrainObserver;
use crate::reference::Split;
use crate::steps::IntervalStrategy;

/// The tokenized data of a run and how it is batched.
pub(crate) struct RunData {
    /// Where the tokenizer files come from (copied into checkpoints).
    pub tokenizer_dir: PathBuf,
    /// What the training pairs were read from (`train_file`, `dataset_name` or `datasets`).
    pub train_source: PathBuf,
    /// What the evaluation pairs were read from, if any.
    pub eval_source: Option<PathBuf>,
    /// The tokenizer's vocabulary and special tokens.
    pub tokenizer: TokenizerInfo,
    /// The training pairs.
    pub train: TokenizedDataset,
    /// The evaluation pairs.
    pub eval: Option<TokenizedDataset>,
    /// Pads and truncates pairs into batches.
    pub collator: Collator,
}

impl RunData {
    /// Reads and tokenizes the train (and eval) files; reports what was read and skipped.
    pub fn load(
        config: &TrainConfig,
        observer: &mut dyn TrainObserver,
    ) -> Result<Self, TrainError> {
        let tokenizer_dir = config.tokenizer_dir().to_path_buf();
        let tokenizer = PreferenceTokenizer::from_dir(&tokenizer_dir)?;
        let info = tokenizer.info().clone();
        let processor = PreferenceProcessor::new(tokenizer, config.data.clone())?;
        let (train_source, train, eval) = read_splits(config, &processor, observer)?;
        report_data(observer, "train", &train_source, &train);
        if train.is_empty() {
            return Err(TrainError::NoData { path: train_source });
        }
        if let Some((path, eval)) = &eval {
            report_data(observer, "eval", path, eval);
        }
        let (eval_source, eval) = match eval {
            Some((path, eval)) => (Some(path), Some(eval)),
            None => (None, None),
        };
        Ok(Self {
            tokenizer_dir,
            train_source,
            eval_source,
            tokenizer: info,
            collator: processor.collator()?,
            train,
            eval,
        })
    }

    /// Pairs in the train split, or in the eval split (0 without one).
    pub fn num_pairs(&self, split: Split) -> usize {
        match split {
            Split::Train => self.train.len(),
            Split::Eval => self.eval.as_ref().map_or(0, TokenizedDataset::len),
        }
    }

    /// The splits this run has: train, then eval if there is one.
    pub fn splits(&self) -> impl Iterator<Item = (Split, &TokenizedDataset)> {
        std::iter::once((Split::Train, &self.train))
            .chain(self.eval.as_ref().map(|eval| (Split::Eval, eval)))
    }

    /// The longest row any batch of this run will have, after truncation and padding.
    fn longest_row(&self, config: &TrainConfig) -> usize {
        let longest = self
            .train
            .lengths()
            .into_iter()
            .chain(
                self.eval
                    .as_ref()
                    .map(TokenizedDataset::lengths)
                    .unwrap_or_default(),
            )
            .max()
            .unwrap_or(0);
        match config.data.pad_to_multiple_of.filter(|&m| m > 1) {
            Some(m) => longest.div_ceil(m) * m,
            None => longest,
        }
    }

    /// Checks that `model` (loaded from `dir`) can run this data: every token id is a row of
    /// its embedding, and (GPT-2) every row fits its learned positions. Run for every model
    /// before its first forward pass: the policy, the reference, a checkpoint being resumed or
    /// evaluated.
    pub fn check_model(
        &self,
        model: &CausalLm,
        dir: &Path,
        config: &TrainConfig,
    ) -> Result<(), TrainError> {
        let model_config: &ModelConfig = model.config();
        model_config
            .check_vocab_covers(self.tokenizer.vocab_size)
            .map_err(model_error(dir))?;
        model_config
            .check_sequence_length(self.longest_row(config))
            .map_err(|e| TrainError::Config {
                key: "max_length".into(),
                reason: format!(
                    "`{}`: {e}; set max_length <= {}",
                    dir.display(),
                    model_config.max_position_embeddings
                ),
            })
    }
}

/// The train split and the optional eval split, from `train_file`/`eval_file`, else a
/// `datasets` mixture (eval: its held-out `test` split), else `dataset_name` (eval: its
/// `dataset_test_split` when the dataset has one). `eval_file` always wins for evaluation.
#[allow(clippy::type_complexity)]
fn read_splits(
    config: &TrainConfig,
    processor: &PreferenceProcessor,
    observer: &mut dyn TrainObserver,
) -> Result<
    (
        PathBuf,
        TokenizedDataset,
        Option<(PathBuf, TokenizedDataset)>,
    ),
    TrainError,
> {
    let data = &config.data;
    let eval_file = || -> Result<Option<(PathBuf, TokenizedDataset)>, TrainError> {
        match &config.eval_file {
            Some(path) => Ok(Some((path.clone(), processor.process_eval_file(path)?))),
            None => Ok(None),
        }
    };
    if !config.train_file.as_os_str().is_empty() {
        let train = processor.process_file(&config.train_file)?;
        return Ok((config.train_file.clone(), train, eval_file()?));
    }
    if let Some(mixture) = data.mixture()? {
        if data.dataset_name.is_some() {
            observer.on_message(
                "warning: both `datasets` and `dataset_name` are set: the `datasets` mixture is read and `dataset_name` is ignored (as TRL does)",
            );
        }
        let train = processor.process_mixture(&mixture, "train")?;
        let eval = match eval_file()? {
            Some(eval) => Some(eval),
            None if mixture.split_names().contains(&"test") => Some((
                PathBuf::from("datasets mixture (held-out test split)"),
                processor.process_mixture(&mixture, "test")?,
            )),
            None => None,
        };
        return Ok((PathBuf::from("datasets mixture"), train, eval));
    }
    let Some(name) = &data.dataset_name else {
        return Err(TrainError::Config {
            key: "train_file".into(),
            reason: "is required (or dataset_name, or a datasets mixture)".into(),
        });
    };
    let dataset = PathBuf::from(name);
    let train = processor.process_dataset(&dataset, &data.dataset_train_split)?;
    // As `trl/scripts/dpo.py`: the test split is evaluated only when `eval_strategy` asks for
    // evaluation (TRL's default, "no", reads none).
    let wants_eval = matches!(
        config.eval_strategy,
        Some(IntervalStrategy::Steps | IntervalStrategy::Epoch)
    );
    let eval = match eval_file()? {
        Some(eval) => Some(eval),
        None if !wants_eval => None,
        None if processor.dataset_has_split(&dataset, &data.dataset_test_split)? => Some((
            dataset.clone(),
            processor.process_dataset(&dataset, &data.dataset_test_split)?,
        )),
        None => {
            observer.on_message(&format!(
                "dataset `{name}` has no `{}` split: no evaluation (set dataset_test_split or eval_file)",
                data.dataset_test_split
            ));
            None
        }
    };
    Ok((dataset, train, eval))
}

fn report_data(
    observer: &mut dyn TrainObserver,
    split: &str,
    path: &Path,
    data: &TokenizedDataset,
) {
    let r = &data.report;
    let mut msg = format!(
        "{split} data `{}`: {} records, {} pairs",
        path.display(),
        r.records_read,
        r.pairs_kept
    );
    if r.skipped_total() > 0 {
        msg.push_str(&format!(
            "; skipped {} ({} invalid, {} empty after truncation, {} without a scored completion token): {}",
            r.skipped_total(),
            r.skipped_invalid,
            r.dropped_truncated,
            r.dropped_unscored,
            r.reasons.join(" | ")
        ));
    }
    if r.prompts_truncated > 0 {
        msg.push_str(&format!("; {} prompts truncated", r.prompts_truncated));
    }
    if r.prompts_not_prefix > 0 {
        msg.push_str(&format!(
            "; {} prompts whose tokens are not a prefix of prompt + completion (the diverging end of the prompt is left out, as TRL 1.x does)",
            r.prompts_not_prefix
        ));
    }
    if r.pairs_unscored > 0 {
        msg.push_str(&format!(
            "; warning: {} pairs have a completion with no token left to score after truncation to max_length (kept, as TRL 1.x keeps them)",
            r.pairs_unscored
        ));
    }
    observer.on_message(&msg);
}
