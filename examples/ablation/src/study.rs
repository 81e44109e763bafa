//! The study: an initial policy, a stronger reference DPO-trained from it on clean pairs, and
//! for each reference and `sdpo_threshold` a training run per seed on noisy pairs; then the
//! token-level methods (ConfPO, SePO, TIS-DPO, critical tokens, TGDPO) with their scoring
//! models trained from the same initial policy on the same clean pairs; every run scored by
//! the same evaluator.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use sdpo_core::{LossType, LossTypes};
use sdpo_models::{CausalLm, ModelConfig};
use sdpo_train::inspect::{InspectColumn, InspectedPair};
use sdpo_train::reference::Split;
use sdpo_train::{Inspector, SaveStrategy, SilentObserver, Start, TrainConfig, Trainer};
use serde_json::{Value, json};

use crate::data::{self, COMPLETION_LEN, DECISIVE, Kind, Pair, Rng};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Output directory: data, models, runs, `results.json`, `results.md`.
    pub out: PathBuf,
    /// Training seeds per arm (each: its own noisy training set and shuffling).
    pub seeds: usize,
    /// Training lengths compared, in epochs over the noisy training pairs.
    pub epochs: Vec<f64>,
    /// Epochs of the stronger reference over the clean pairs.
    pub reference_epochs: f64,
    /// The `sdpo_threshold` values (0 = plain DPO, TRL's sigmoid loss).
    pub thresholds: Vec<f64>,
    /// The token-level methods compared (each with the initial policy as its policy).
    pub methods: Vec<LossType>,
}

impl Options {
    /// The full study.
    pub fn full(out: PathBuf) -> Self {
        Self {
            out,
            seeds: 5,
            epochs: vec![1.0, 3.0],
            reference_epochs: 3.0,
            thresholds: vec![0.0, 0.3, 0.6, 0.8],
            methods: LossType::TOKEN_METHODS.to_vec(),
        }
    }

    /// The CI smoke version: one seed, one epoch, every arm.
    pub fn quick(out: PathBuf) -> Self {
        Self {
            seeds: 1,
            epochs: vec![1.0],
            reference_epochs: 1.0,
            ..Self::full(out)
        }
    }
}

const TRAIN_PAIRS: usize = 256;
const REFERENCE_PAIRS: usize = 512;
const HELD_OUT_PAIRS: usize = 128;
const SELECTION_PAIRS: usize = 64;
const BATCH: usize = 16;
const LEARNING_RATE: f64 = 5e-3;
const BETA: f64 = 0.1;
const INITIAL_SEED: u64 = 0;
const DATA_SEED: u64 = 2026;

/// The evaluator's numbers for one policy (the scoring reference is always the initial policy).
#[derive(Debug, Clone, Copy, Default)]
pub struct Scores {
    /// Held-out clean pairs whose implicit reward margin (policy minus initial policy, chosen
    /// minus rejected, summed log-probs) is > 0.
    pub clean_accuracy: f64,
    /// Mean implicit reward margin on the clean pairs, in nats.
    pub clean_margin: f64,
    /// Mean |implicit reward margin| on distractor-only pairs, in nats (0 = nothing spurious).
    pub distractor_margin: f64,
    /// Held-out clean pairs where the policy itself gives the chosen completion the higher
    /// log-likelihood.
    pub likelihood_accuracy: f64,
}

/// Where an arm's token weights fall on held-out noisy pairs. For a selection (SDPO, ConfPO,
/// SePO: weights 0 or 1) these are the kept tokens' precision and recall and the kept
/// fraction; for a weighting method the same sums over its real weights.
#[derive(Debug, Clone, Copy, Default)]
pub struct Selection {
    /// The share of the weight on decisive tokens (for a selection: kept tokens that are
    /// decisive).
    pub precision: f64,
    /// The mean weight of a decisive token (for a selection: decisive tokens that are kept).
    pub recall: f64,
    /// The mean weight of a completion token (for a selection: the kept fraction).
    pub kept: f64,
}

/// One training run of one arm.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The arm's `loss_type`: `sigmoid` (q = 0), `sdpo`, or a token-level method.
    pub method: LossType,
    /// `"initial policy"`, `"stronger reference"`, or for a token-level method its models.
    pub reference: &'static str,
    /// `sdpo_threshold`.
    pub threshold: f64,
    /// Epochs trained.
    pub epochs: f64,
    /// Training seed.
    pub seed: u64,
    /// After training.
    pub scores: Scores,
    /// The arm's own selection before its first step.
    pub selection_start: Selection,
    /// The arm's own selection after its last step.
    pub selection_end: Selection,
    /// Final training loss.
    pub final_loss: f64,
    /// Wall time of the training run, seconds.
    pub seconds: f64,
}

/// Everything the study measured.
#[derive(Debug, Clone)]
pub struct Study {
    /// The initial policy scored by the evaluator.
    pub initial: Scores,
    /// The stronger reference scored by the evaluator.
    pub reference: Scores,
    /// The reverse reference (DPO on the swapped clean pairs: TIS-DPO's `pi-`) scored by the
    /// evaluator.
    pub reverse: Scores,
    /// Share of completion tokens (EOS included) that are decisive.
    pub decisive_share: f64,
    /// Every run.
    pub runs: Vec<RunResult>,
    /// Wall time of the whole study, seconds.
    pub seconds: f64,
}

struct Layout {
    tokenizer: PathBuf,
    initial: PathBuf,
    reference: PathBuf,
    reverse: PathBuf,
    chosen_sft: PathBuf,
    rejected_sft: PathBuf,
    reference_train: PathBuf,
    reference_train_swapped: PathBuf,
    held_out_clean: PathBuf,
    held_out_distractors: PathBuf,
    held_out_noisy: PathBuf,
    noisy: Vec<(PathBuf, Vec<Pair>)>,
    selection_pairs: Vec<Pair>,
}

fn tiny_llama_config(vocab: usize) -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab,
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
        "hidden_act": "silu", "max_position_embeddings": 64, "initializer_range": 0.02,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": true,
        "bos_token_id": 1, "eos_token_id": 1, "pad_token_id": 0, "torch_dtype": "float32"
    })
}

fn copy_tokenizer(from: &Path, to: &Path) -> Result<()> {
    for name in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(from.join(name), to.join(name))
            .with_context(|| format!("copy {name} into {}", to.display()))?;
    }
    Ok(())
}

fn prepare(options: &Options, device: &Device) -> Result<Layout> {
    let out = &options.out;
    let data_dir = out.join("data");
    std::fs::create_dir_all(&data_dir).with_context(|| format!("create {}", data_dir.display()))?;
    let tokenizer = out.join("tokenizer");
    data::write_tokenizer(&tokenizer)?;

    let mut rng = Rng::new(DATA_SEED);
    let mut write = |name: &str, kind: Kind, n: usize| -> Result<(PathBuf, Vec<Pair>)> {
        let pairs = data::generate(kind, n, &mut rng);
        let path = data_dir.join(name);
        data::write_jsonl(&path, &pairs)?;
        Ok((path, pairs))
    };
    let (reference_train, clean) =
        write("reference_train_clean.jsonl", Kind::Clean, REFERENCE_PAIRS)?;
    // The same clean pairs with chosen and rejected swapped: what the reverse models learn.
    let swapped: Vec<Pair> = clean
        .iter()
        .map(|pair| Pair {
            chosen: pair.rejected.clone(),
            rejected: pair.chosen.clone(),
            ..pair.clone()
        })
        .collect();
    let reference_train_swapped = data_dir.join("reference_train_clean_swapped.jsonl");
    data::write_jsonl(&reference_train_swapped, &swapped)?;
    let (held_out_clean, _) = write("held_out_clean.jsonl", Kind::Clean, HELD_OUT_PAIRS)?;
    let (held_out_distractors, _) = write(
        "held_out_distractors.jsonl",
        Kind::DistractorOnly,
        HELD_OUT_PAIRS,
    )?;
    let (held_out_noisy, selection_pairs) =
        write("held_out_noisy.jsonl", Kind::Noisy, SELECTION_PAIRS)?;
    let mut noisy = Vec::new();
    for seed in 0..options.seeds {
        noisy.push(write(
            &format!("train_noisy_seed{seed}.jsonl"),
            Kind::Noisy,
            TRAIN_PAIRS,
        )?);
    }

    let initial = out.join("initial");
    std::fs::create_dir_all(&initial).with_context(|| format!("create {}", initial.display()))?;
    let config_path = initial.join("config.json");
    std::fs::write(
        &config_path,
        tiny_llama_config(data::vocabulary().len()).to_string(),
    )
    .with_context(|| format!("write {}", config_path.display()))?;
    let config = ModelConfig::from_pretrained_dir(&initial)?;
    CausalLm::from_config(&config, INITIAL_SEED, device).save_pretrained(&initial)?;
    copy_tokenizer(&tokenizer, &initial)?;

    Ok(Layout {
        tokenizer,
        initial,
        reference: out.join("stronger_reference"),
        reverse: out.join("reverse_reference"),
        chosen_sft: out.join("chosen_sft"),
        rejected_sft: out.join("rejected_sft"),
        reference_train,
        reference_train_swapped,
        held_out_clean,
        held_out_distractors,
        held_out_noisy,
        noisy,
        selection_pairs,
    })
}

/// A run configuration on the study's data and tokenizer.
fn run_config(
    layout: &Layout,
    policy: &Path,
    reference: &Path,
    train: &Path,
    out: PathBuf,
) -> TrainConfig {
    let mut config = TrainConfig {
        output_dir: out,
        model_name_or_path: policy.to_path_buf(),
        ref_model_name_or_path: Some(reference.to_path_buf()),
        tokenizer_name_or_path: Some(layout.tokenizer.clone()),
        train_file: train.to_path_buf(),
        learning_rate: LEARNING_RATE,
        weight_decay: 0.0,
        per_device_train_batch_size: BATCH,
        per_device_eval_batch_size: SELECTION_PAIRS.max(HELD_OUT_PAIRS),
        logging_steps: 1_000_000.into(),
        save_strategy: SaveStrategy::No,
        ..TrainConfig::default()
    };
    config.loss.beta = BETA;
    config.loss.loss_type = LossTypes::One(LossType::Sigmoid);
    config.data.max_length = Some(64);
    config
}

fn sums(pair: &InspectedPair) -> (f64, f64, f64, f64) {
    let total = |v: &[f64]| v.iter().sum::<f64>();
    (
        total(&pair.chosen.policy_logps),
        total(&pair.chosen.ref_logps),
        total(&pair.rejected.policy_logps),
        total(&pair.rejected.ref_logps),
    )
}

/// Every pair of `file`, inspected with `policy` against the initial policy at q = 0.
fn inspect_against_initial(
    layout: &Layout,
    policy: &Path,
    file: &Path,
    device: &Device,
) -> Result<Vec<InspectedPair>> {
    let scratch = layout
        .initial
        .parent()
        .unwrap_or(Path::new("."))
        .join("eval-scratch");
    let mut config = run_config(layout, policy, &layout.initial, file, scratch);
    config.eval_file = Some(file.to_path_buf());
    let inspector = Inspector::new(config, device, None, &mut SilentObserver)
        .with_context(|| format!("load {} for evaluation", policy.display()))?;
    let inspection = inspector.inspection();
    let indices: Vec<usize> = (0..inspection.num_pairs(Split::Eval)).collect();
    Ok(inspection.inspect(Split::Eval, &indices, &[0.0])?)
}

/// The evaluator: the same for every arm, with the initial policy as the scoring reference.
fn score(layout: &Layout, policy: &Path, device: &Device) -> Result<Scores> {
    let clean = inspect_against_initial(layout, policy, &layout.held_out_clean, device)?;
    let distractors =
        inspect_against_initial(layout, policy, &layout.held_out_distractors, device)?;
    let n = clean.len() as f64;
    let mut scores = Scores::default();
    for pair in &clean {
        let (pc, rc, pr, rr) = sums(pair);
        let margin = (pc - rc) - (pr - rr);
        scores.clean_margin += margin / n;
        scores.clean_accuracy += f64::from(u8::from(margin > 0.0)) / n;
        scores.likelihood_accuracy += f64::from(u8::from(pc > pr)) / n;
    }
    for pair in &distractors {
        let (pc, rc, pr, rr) = sums(pair);
        scores.distractor_margin += ((pc - rc) - (pr - rr)).abs() / distractors.len() as f64;
    }
    Ok(scores)
}

/// Where `trainer`'s token weights in `column` fall on the held-out noisy pairs (see
/// [`Selection`]).
fn selection(trainer: &Trainer, pairs: &[Pair], column: InspectColumn) -> Result<Selection> {
    let indices: Vec<usize> = (0..pairs.len()).collect();
    let inspected = trainer.inspection().inspect_columns(
        Split::Eval,
        &indices,
        &[column],
        &mut SilentObserver,
    )?;
    let (mut weight, mut decisive_weight, mut decisive, mut tokens) = (0.0, 0.0, 0usize, 0usize);
    for (pair, truth) in inspected.iter().zip(pairs) {
        for side in [&pair.chosen, &pair.rejected] {
            if side.token_ids.len() != COMPLETION_LEN + 1 {
                bail!(
                    "pair {}: {} scored completion tokens, expected {} words + EOS",
                    pair.index,
                    side.token_ids.len(),
                    COMPLETION_LEN
                );
            }
            for (i, &w) in side.weights[0].iter().enumerate() {
                let is_decisive = truth.decisive.contains(&i);
                tokens += 1;
                decisive += usize::from(is_decisive);
                weight += w;
                if is_decisive {
                    decisive_weight += w;
                }
            }
        }
    }
    let ratio = |a: f64, b: f64| if b == 0.0 { 0.0 } else { a / b };
    Ok(Selection {
        precision: ratio(decisive_weight, weight),
        recall: ratio(decisive_weight, decisive as f64),
        kept: ratio(weight, tokens as f64),
    })
}

fn train_run(config: TrainConfig, device: &Device) -> Result<(Trainer, f64)> {
    let out = config.output_dir.clone();
    let mut trainer = Trainer::new(config, device, Start::Fresh, &mut SilentObserver)
        .with_context(|| format!("prepare {}", out.display()))?;
    let records = trainer
        .train(None, &mut SilentObserver)
        .with_context(|| format!("train {}", out.display()))?;
    // The mean training loss of the run (transformers' end-of-run `train_loss`).
    let loss = records
        .iter()
        .rev()
        .find_map(|r| r.values.get("train_loss").copied())
        .unwrap_or(f64::NAN);
    Ok((trainer, loss))
}

/// Trains a model from the initial policy on the clean pairs (`file`) with `loss_type` into
/// `out`, with the tokenizer next to it: the study's stronger reference and the token-level
/// methods' scoring models.
fn train_helper_model(
    layout: &Layout,
    options: &Options,
    loss_type: LossType,
    file: &Path,
    out: &Path,
    device: &Device,
) -> Result<()> {
    let mut config = run_config(
        layout,
        &layout.initial,
        &layout.initial,
        file,
        out.to_path_buf(),
    );
    config.loss.loss_type = LossTypes::One(loss_type);
    config.num_train_epochs = options.reference_epochs;
    config.seed = DATA_SEED;
    train_run(config, device)?;
    copy_tokenizer(&layout.tokenizer, out)
}

/// One training run of an arm on `seed`'s noisy pairs, scored, with its selection before the
/// first step and after the last.
struct ArmRun<'a> {
    method: LossType,
    reference_name: &'static str,
    threshold: f64,
    epochs: f64,
    seed: usize,
    tag: String,
    config: TrainConfig,
    column: InspectColumn,
    layout: &'a Layout,
}

impl ArmRun<'_> {
    fn run(self, options: &Options, device: &Device, started: Instant) -> Result<RunResult> {
        let run_started = Instant::now();
        let selection_pairs = &self.layout.selection_pairs;
        let before = Trainer::new(
            self.config.clone(),
            device,
            Start::Fresh,
            &mut SilentObserver,
        )?;
        let selection_start = selection(&before, selection_pairs, self.column)?;
        drop(before);
        let (trainer, final_loss) = train_run(self.config, device)?;
        let selection_end = selection(&trainer, selection_pairs, self.column)?;
        let seconds = run_started.elapsed().as_secs_f64();
        let scores = score(
            self.layout,
            &options.out.join("runs").join(&self.tag),
            device,
        )?;
        eprintln!(
            "[{:>5.0} s] {} ({}), {} epoch(s), seed {}: clean accuracy {:.3}, distractor \
             |margin| {:.3}, precision {:.3} -> {:.3}, {:.1} s",
            started.elapsed().as_secs_f64(),
            self.column.label(),
            self.reference_name,
            self.epochs,
            self.seed,
            scores.clean_accuracy,
            scores.distractor_margin,
            selection_start.precision,
            selection_end.precision,
            seconds
        );
        Ok(RunResult {
            method: self.method,
            reference: self.reference_name,
            threshold: self.threshold,
            epochs: self.epochs,
            seed: self.seed as u64,
            scores,
            selection_start,
            selection_end,
            final_loss,
            seconds,
        })
    }
}

/// The models a token-level method's arm scores with, in words (the table's reference column).
pub fn method_models(method: LossType) -> &'static str {
    match method {
        LossType::Confpo => "none (the policy's confidence)",
        LossType::Sepo => "oracle: stronger reference vs initial policy",
        LossType::Tisdpo => "initial policy; pi+/pi-: stronger/reverse reference",
        LossType::CriticalToken => "initial policy; chosen/rejected SFT models",
        LossType::Tgdpo => "initial policy; reward: stronger reference",
        _ => "initial policy",
    }
}

/// `config` set up for the token-level `method` with the study's scoring models.
fn method_config(mut config: TrainConfig, method: LossType, layout: &Layout) -> TrainConfig {
    config.loss.loss_type = LossTypes::One(method);
    match method {
        // The authors' run (their CPOConfig default 0.1 is CPO's): SimPO needs a larger beta.
        LossType::Confpo => {
            config.loss.beta = 1.5;
            config.loss.simpo_gamma = 1.6;
            config.ref_model_name_or_path = None;
        }
        LossType::Sepo => config.sepo_oracle_model_name_or_path = Some(layout.reference.clone()),
        LossType::Tisdpo => {
            config.tisdpo_positive_model_name_or_path = Some(layout.reference.clone());
            config.tisdpo_negative_model_name_or_path = Some(layout.reverse.clone());
        }
        LossType::CriticalToken => {
            config.ct_positive_model_name_or_path = Some(layout.chosen_sft.clone());
            config.ct_negative_model_name_or_path = Some(layout.rejected_sft.clone());
        }
        LossType::Tgdpo => config.tgdpo_reward_model_name_or_path = Some(layout.reference.clone()),
        _ => {}
    }
    config
}

/// Runs the whole study, printing progress to stderr.
pub fn run(options: &Options) -> Result<Study> {
    let started = Instant::now();
    let device = Device::flex();
    let layout = prepare(options, &device)?;
    let decisive_share = DECISIVE as f64 / (COMPLETION_LEN + 1) as f64;

    eprintln!(
        "[{:>5.0} s] training the stronger reference (DPO on clean pairs)",
        started.elapsed().as_secs_f64()
    );
    train_helper_model(
        &layout,
        options,
        LossType::Sigmoid,
        &layout.reference_train,
        &layout.reference,
        &device,
    )?;
    let needs = |methods: &[LossType]| options.methods.iter().any(|m| methods.contains(m));
    if needs(&[LossType::Tisdpo]) {
        eprintln!(
            "[{:>5.0} s] training the reverse reference (DPO on swapped clean pairs: TIS-DPO's pi-)",
            started.elapsed().as_secs_f64()
        );
        train_helper_model(
            &layout,
            options,
            LossType::Sigmoid,
            &layout.reference_train_swapped,
            &layout.reverse,
            &device,
        )?;
    }
    if needs(&[LossType::CriticalToken]) {
        eprintln!(
            "[{:>5.0} s] training the critical-token pair (SFT on clean chosen / rejected completions)",
            started.elapsed().as_secs_f64()
        );
        for (file, out) in [
            (&layout.reference_train, &layout.chosen_sft),
            (&layout.reference_train_swapped, &layout.rejected_sft),
        ] {
            train_helper_model(&layout, options, LossType::Sft, file, out, &device)?;
        }
    }
    let initial = score(&layout, &layout.initial, &device)?;
    let reference = score(&layout, &layout.reference, &device)?;
    let reverse = if needs(&[LossType::Tisdpo]) {
        score(&layout, &layout.reverse, &device)?
    } else {
        Scores::default()
    };
    eprintln!(
        "[{:>5.0} s] clean-pair likelihood accuracy: initial policy {:.3}, stronger reference {:.3}",
        started.elapsed().as_secs_f64(),
        initial.likelihood_accuracy,
        reference.likelihood_accuracy
    );

    let mut runs = Vec::new();
    let references: [(&'static str, &Path, &str); 2] = [
        ("initial policy", &layout.initial, "initial"),
        ("stronger reference", &layout.reference, "stronger"),
    ];
    for (reference_name, reference_dir, short) in references {
        for &epochs in &options.epochs {
            for &q in &options.thresholds {
                for (seed, (train_file, _)) in layout.noisy.iter().enumerate() {
                    let tag = format!("{short}_q{q}_epochs{epochs}_seed{seed}");
                    let mut config = run_config(
                        &layout,
                        &layout.initial,
                        reference_dir,
                        train_file,
                        options.out.join("runs").join(&tag),
                    );
                    let method = if q > 0.0 {
                        config.loss.loss_type = LossTypes::One(LossType::Sdpo);
                        config.loss.sdpo_threshold = q;
                        LossType::Sdpo
                    } else {
                        LossType::Sigmoid
                    };
                    config.num_train_epochs = epochs;
                    config.seed = seed as u64;
                    config.eval_file = Some(layout.held_out_noisy.clone());
                    let arm = ArmRun {
                        method,
                        reference_name,
                        threshold: q,
                        epochs,
                        seed,
                        tag,
                        config,
                        column: InspectColumn::Sdpo(q),
                        layout: &layout,
                    };
                    runs.push(arm.run(options, &device, started)?);
                }
            }
        }
    }
    for &method in &options.methods {
        for &epochs in &options.epochs {
            for (seed, (train_file, _)) in layout.noisy.iter().enumerate() {
                let tag = format!("{method}_epochs{epochs}_seed{seed}");
                let mut config = run_config(
                    &layout,
                    &layout.initial,
                    &layout.initial,
                    train_file,
                    options.out.join("runs").join(&tag),
                );
                config = method_config(config, method, &layout);
                config.num_train_epochs = epochs;
                config.seed = seed as u64;
                config.eval_file = Some(layout.held_out_noisy.clone());
                let arm = ArmRun {
                    method,
                    reference_name: method_models(method),
                    threshold: f64::NAN,
                    epochs,
                    seed,
                    tag,
                    config,
                    column: InspectColumn::Method(method),
                    layout: &layout,
                };
                runs.push(arm.run(options, &device, started)?);
            }
        }
    }
    Ok(Study {
        initial,
        reference,
        reverse,
        decisive_share,
        runs,
        seconds: started.elapsed().as_secs_f64(),
    })
}
