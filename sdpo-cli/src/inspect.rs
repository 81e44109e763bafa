//! `sdpo inspect`: which completion tokens SDPO (at one or more thresholds) and the
//! token-level methods train on, for real pairs, side by side, as one self-contained HTML page
//! or as terminal text. The numbers come from the trainer's own selection and weights
//! (`Inspection::inspect_columns`); this file only picks the pairs and columns, decodes the
//! tokens and hands the report to `sdpo-report`.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use sdpo_core::LossType;
use sdpo_data::PreferenceTokenizer;
use sdpo_report::{
    InspectColumn as ReportColumn, InspectPair, InspectReport, InspectToken, PairSelection,
    SequenceSelection, TextStyle,
};
use sdpo_train::inspect::{InspectColumn, Inspector};
use sdpo_train::inspect::{InspectedPair, InspectedSequence};
use sdpo_train::reference::{Reference, Split};

use crate::common_args::CommonArgs;
use crate::progress::TerminalProgress;

/// The output format of `sdpo inspect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One self-contained HTML page.
    Html,
    /// Text for a terminal: kept tokens bracketed, coloured by score.
    Text,
}

/// When the text format uses ANSI colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Color {
    /// When writing to a terminal.
    Auto,
    /// Always.
    Always,
    /// Never (for piping).
    Never,
}

/// Options of `sdpo inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Configuration and device.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The policy to inspect (a `checkpoint-N` or a final model); default: the initial policy.
    #[arg(long, value_name = "DIR")]
    pub checkpoint: Option<PathBuf>,
    /// Which pairs: `eval` (the eval_file), `train` (the train_file) or a preference file.
    #[arg(long, default_value = "eval", value_name = "eval|train|PATH")]
    pub file: String,
    /// Inspect the first N pairs (default 8; ignored with --index).
    #[arg(long, value_name = "N")]
    pub pairs: Option<usize>,
    /// Inspect these pairs (0-based, comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "I,J,...")]
    pub index: Vec<usize>,
    /// An SDPO threshold q to show (repeatable, side by side); default: `sdpo_threshold`
    /// (or the configured token-level method, when `loss_type` is one).
    #[arg(long = "threshold", value_name = "Q")]
    pub thresholds: Vec<f64>,
    /// A token-level method to show (repeatable, side by side, after the thresholds):
    /// `confpo`, `sepo`, `tisdpo`, `critical_token` or `tgdpo`, with its keys and scoring
    /// models from the configuration.
    #[arg(long = "method", value_name = "LOSS_TYPE")]
    pub methods: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "html")]
    pub format: Format,
    /// ANSI colours in the text format.
    #[arg(long, value_enum, default_value = "auto")]
    pub color: Color,
    /// Where to write the output [default: inspect.html for HTML, stdout for text].
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Runs `sdpo inspect`.
pub fn run(args: &InspectArgs) -> Result<()> {
    let (mut config, device, _) = crate::prepare(&args.common, false)?;
    let (split, source) = match args.file.as_str() {
        "train" => (
            Split::Train,
            format!("train_file `{}`", config.train_file.display()),
        ),
        "eval" => match &config.eval_file {
            Some(file) => (Split::Eval, format!("eval_file `{}`", file.display())),
            None => bail!(
                "there is no eval_file to inspect; use --file train or --file PATH (or --set eval_file=PATH)"
            ),
        },
        path => {
            config.eval_file = Some(PathBuf::from(path));
            (Split::Eval, format!("`{path}`"))
        }
    };
    for &q in &args.thresholds {
        if !(0.0..=1.0).contains(&q) {
            bail!("--threshold {q}: an SDPO threshold is a quantile in [0, 1]");
        }
    }
    let mut columns: Vec<InspectColumn> = args
        .thresholds
        .iter()
        .map(|&q| InspectColumn::Sdpo(q))
        .collect();
    for name in &args.methods {
        let method: LossType = name
            .parse()
            .ok()
            .filter(|m: &LossType| m.is_token_method())
            .with_context(|| {
                format!(
                    "--method {name}: not a token-level method; known: {}",
                    LossType::TOKEN_METHODS.map(LossType::name).join(", ")
                )
            })?;
        columns.push(InspectColumn::Method(method));
    }
    if columns.is_empty() {
        columns.push(match config.loss.loss_types() {
            [method] if method.is_token_method() => InspectColumn::Method(*method),
            _ => InspectColumn::Sdpo(config.loss.sdpo_threshold),
        });
    }
    let tokenizer = PreferenceTokenizer::from_dir(config.tokenizer_dir())
        .context("cannot load the tokenizer")?;
    let policy = match &args.checkpoint {
        Some(dir) => format!("`{}`", dir.display()),
        None => format!(
            "the initial policy `{}`",
            config.model_name_or_path.display()
        ),
    };
    let beta = config.loss.beta;
    let mut view = TerminalProgress::new();
    let inspector = Inspector::new(config, &device, args.checkpoint.as_deref(), &mut view)
        .context("cannot prepare inspection")?;
    let inspection = inspector.inspection();
    let available = inspection.num_pairs(split);
    let indices: Vec<usize> = if args.index.is_empty() {
        (0..args.pairs.unwrap_or(8).min(available)).collect()
    } else {
        args.index.clone()
    };
    if indices.is_empty() {
        bail!("{source} has no pairs to inspect");
    }
    let reference = match (
        inspector.reference(),
        &inspector.config().ref_model_name_or_path,
    ) {
        (Reference::None, _) => "none (reference_free)".to_string(),
        (Reference::Precomputed { .. }, _) => "precomputed reference log-probs".to_string(),
        (Reference::Model(_), Some(dir)) => format!("`{}`", dir.display()),
        (Reference::Model(_), None) => "a frozen copy of the initial policy".to_string(),
    };
    let inspected = inspection
        .inspect_columns(split, &indices, &columns, &mut view)
        .context("cannot inspect")?;
    let decode = |id: u32| {
        tokenizer
            .decode(&[id])
            .map_err(|e| anyhow::anyhow!("cannot decode token {id}: {e}"))
    };
    let mut pairs = Vec::with_capacity(inspected.len());
    for pair in &inspected {
        pairs.push(to_report_pair(pair, &tokenizer, &decode)?);
    }
    let report = InspectReport {
        source,
        policy,
        reference,
        beta,
        columns: columns
            .iter()
            .map(|column| match column {
                InspectColumn::Sdpo(q) => ReportColumn::sdpo(*q),
                InspectColumn::Method(method) => ReportColumn::method(method.name()),
            })
            .collect(),
        pairs,
    };
    match args.format {
        Format::Html => {
            let out = args
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from("inspect.html"));
            sdpo_report::write_inspect_html(&report, &out)
                .with_context(|| format!("cannot write `{}`", out.display()))?;
            eprintln!(
                "inspected {} pairs ({} token elements); written to {}",
                report.pairs.len(),
                report.html_token_elements(),
                out.display()
            );
        }
        Format::Text => {
            let to_terminal = args.out.is_none() && std::io::stdout().is_terminal();
            let style = match args.color {
                Color::Always => TextStyle::Ansi,
                Color::Never => TextStyle::Plain,
                Color::Auto if to_terminal => TextStyle::Ansi,
                Color::Auto => TextStyle::Plain,
            };
            let text = sdpo_report::render_inspect_text(&report, style)?;
            match &args.out {
                Some(path) => std::fs::write(path, text)
                    .with_context(|| format!("cannot write `{}`", path.display()))?,
                None => print!("{text}"),
            }
        }
    }
    Ok(())
}

fn tokens(
    sequence: &InspectedSequence,
    decode: &dyn Fn(u32) -> Result<String>,
) -> Result<Vec<InspectToken>> {
    (0..sequence.token_ids.len())
        .map(|i| {
            Ok(InspectToken {
                id: sequence.token_ids[i],
                text: decode(sequence.token_ids[i])?,
                policy_logp: sequence.policy_logps[i],
                ref_logp: sequence.ref_logps[i],
                score: sequence.scores[i],
                kept: sequence.kept.iter().map(|kept| kept[i]).collect(),
                weights: sequence.weights.iter().map(|w| w[i]).collect(),
                column_scores: sequence.method_scores.iter().map(|s| s[i]).collect(),
            })
        })
        .collect()
}

fn selection(sequence: &InspectedSequence, q: usize) -> SequenceSelection {
    SequenceSelection {
        threshold: sequence.thresholds[q],
        kept_tokens: sequence.kept[q].iter().filter(|&&k| k).count(),
        policy_logp_sum: sequence.policy_sums[q],
        ref_logp_sum: sequence.ref_sums[q],
    }
}

fn to_report_pair(
    pair: &InspectedPair,
    tokenizer: &PreferenceTokenizer,
    decode: &dyn Fn(u32) -> Result<String>,
) -> Result<InspectPair> {
    let prompt = tokenizer
        .decode(&pair.prompt_ids)
        .map_err(|e| anyhow::anyhow!("cannot decode the prompt of pair {}: {e}", pair.index))?;
    Ok(InspectPair {
        index: pair.index,
        origin: pair.origin.clone(),
        prompt,
        chosen: tokens(&pair.chosen, decode)?,
        rejected: tokens(&pair.rejected, decode)?,
        selections: (0..pair.losses.len())
            .map(|q| PairSelection {
                chosen: selection(&pair.chosen, q),
                rejected: selection(&pair.rejected, q),
                chosen_reward: pair.chosen_rewards[q],
                rejected_reward: pair.rejected_rewards[q],
                reward_margin: pair.chosen_rewards[q] - pair.rejected_rewards[q],
                loss: pair.losses[q],
            })
            .collect(),
    })
}
