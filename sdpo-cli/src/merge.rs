//! `sdpo merge`: fold a PEFT LoRA adapter into its base model and write a full Hugging Face
//! checkpoint (PEFT's `merge_and_unload()` + `save_pretrained`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use sdpo_models::CausalLm;
use sdpo_models::lora::resolve_adapter_base;

/// Tokenizer files carried over to the merged checkpoint (from the adapter directory when it
/// has them, as TRL saves the tokenizer next to the adapter, else from the base).
const TOKENIZER_FILES: [&str; 5] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
];

/// Arguments of `sdpo merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The PEFT adapter directory (`adapter_config.json` + `adapter_model.safetensors`).
    #[arg(long, value_name = "DIR")]
    pub adapter: PathBuf,
    /// Where to write the merged checkpoint (`config.json` + `model.safetensors`, float32).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The base model directory. Default: the adapter's `base_model_name_or_path` when that is
    /// a local directory.
    #[arg(long, value_name = "DIR")]
    pub base: Option<PathBuf>,
    /// The backend: flex (CPU), wgpu or tch, among those compiled in. Default: `BURN_DEVICE`,
    /// else the first compiled in.
    #[arg(long, env = "BURN_DEVICE", value_name = "BACKEND")]
    pub device: Option<String>,
}

/// Loads the base and the adapter (strictly), merges, saves, and copies the tokenizer files.
pub fn run(args: &MergeArgs) -> Result<()> {
    let base = resolve_adapter_base(&args.adapter, args.base.as_deref())
        .context("cannot find the base model (pass --base DIR)")?;
    let (backend, device) = crate::device::select_device(args.device.as_deref())?;
    eprintln!("backend: {backend}");
    let model = CausalLm::from_pretrained(&base, &device)
        .with_context(|| format!("cannot load the base model {}", base.display()))?
        .load_adapter(&args.adapter)
        .with_context(|| format!("cannot load the adapter {}", args.adapter.display()))?;
    let adapter = model
        .adapter()
        .map_or(0, |a| a.adapted.len() + a.trained.len());
    model
        .merge_adapters()
        .save_pretrained(&args.out)
        .with_context(|| format!("cannot write the merged model to {}", args.out.display()))?;
    copy_tokenizer_files(&[&args.adapter, &base], &args.out)?;
    eprintln!(
        "merged {} ({adapter} layers) into {} -> {}",
        args.adapter.display(),
        base.display(),
        args.out.display()
    );
    Ok(())
}

/// Copies each tokenizer file from the first of `sources` that has it.
fn copy_tokenizer_files(sources: &[&Path], to: &Path) -> Result<()> {
    for name in TOKENIZER_FILES {
        if let Some(src) = sources.iter().map(|d| d.join(name)).find(|p| p.is_file()) {
            std::fs::copy(&src, to.join(name))
                .with_context(|| format!("cannot copy {} to {}", src.display(), to.display()))?;
        }
    }
    Ok(())
}
