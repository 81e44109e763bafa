//! `sdpo merge`: a PEFT adapter (the `llama_r4` fixture) merged into its base gives a plain
//! checkpoint with PEFT's merged logits; the base comes from `--base` or from the adapter's
//! `base_model_name_or_path`; a Hub id there is an error asking for `--base`.

use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};
use safetensors::SafeTensors;
use sdpo_models::CausalLm;

mod common;
use common::{sdpo, text};

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Largest |merged checkpoint's logits - PEFT's merged logits| on the fixture's inputs.
fn merged_logits_diff(dir: &Path) -> f32 {
    let golden_path = sdpo_testkit::fixtures_dir().join("lora/llama_r4/golden.safetensors");
    let bytes = std::fs::read(golden_path).unwrap();
    let golden = SafeTensors::deserialize(&bytes).unwrap();
    let ints = |name: &str| {
        let t = golden.tensor(name).unwrap();
        let v: Vec<i64> = t
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let shape = [t.shape()[0], t.shape()[1]];
        Tensor::<2, Int>::from_data(TensorData::new(v, shape), &Device::flex())
    };
    let model = CausalLm::from_pretrained(dir, &Device::flex()).expect("merged checkpoint");
    assert!(model.adapter().is_none());
    let got: Vec<f32> = model
        .forward(ints("input_ids"), ints("attention_mask"))
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap();
    let want = f32s(golden.tensor("logits_merged").unwrap().data());
    // NaN counts as infinitely far.
    sdpo_testkit::max_abs_diff(&got, &want) as f32
}

#[test]
fn merge_with_explicit_base_writes_the_merged_checkpoint() {
    let fixtures = sdpo_testkit::fixtures_dir();
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("merged");
    let adapter = fixtures.join("lora/llama_r4");
    let base = fixtures.join("models/llama");
    let out = sdpo(
        &[
            "merge",
            "--adapter",
            adapter.to_str().unwrap(),
            "--base",
            base.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let d = merged_logits_diff(&out_dir);
    assert!(d <= 1e-4, "merged logits differ from PEFT's by {d}");
    println!("sdpo merge --base: max |ours - PEFT merged| = {d:.2e}");
}

#[test]
fn merge_finds_a_local_base_from_the_adapter_config() {
    // The fixture's `base_model_name_or_path` is `models/llama`, relative to the fixtures
    // folder: run from there, as a user runs from where they trained.
    let fixtures = sdpo_testkit::fixtures_dir();
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("merged");
    let out = sdpo(
        &[
            "merge",
            "--adapter",
            "lora/llama_r4",
            "--out",
            out_dir.to_str().unwrap(),
        ],
        &fixtures,
    );
    assert!(out.status.success(), "{}", text(&out));
    let d = merged_logits_diff(&out_dir);
    assert!(d <= 1e-4, "merged logits differ from PEFT's by {d}");
}

#[test]
fn merge_refuses_a_hub_base_and_a_broken_adapter() {
    let fixtures = sdpo_testkit::fixtures_dir();
    let tmp = tempfile::tempdir().unwrap();
    let adapter = tmp.path().join("adapter");
    std::fs::create_dir_all(&adapter).unwrap();
    let config = std::fs::read_to_string(fixtures.join("lora/llama_r4/adapter_config.json"))
        .unwrap()
        .replace(
            "\"models/llama\"",
            "\"HuggingFaceTB/SmolLM2-135M-Instruct\"",
        );
    std::fs::write(adapter.join("adapter_config.json"), config).unwrap();
    std::fs::copy(
        fixtures.join("lora/llama_r4/adapter_model.safetensors"),
        adapter.join("adapter_model.safetensors"),
    )
    .unwrap();
    let out = sdpo(
        &["merge", "--adapter", "adapter", "--out", "merged"],
        tmp.path(),
    );
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--base") && stderr.contains("HuggingFaceTB/SmolLM2-135M-Instruct"),
        "{stderr}"
    );
    assert!(!tmp.path().join("merged").exists());

    // A truncated adapter file: a clear error naming it, nothing written.
    let weights = adapter.join("adapter_model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let base = fixtures.join("models/llama");
    let out = sdpo(
        &[
            "merge",
            "--adapter",
            "adapter",
            "--base",
            base.to_str().unwrap(),
            "--out",
            "merged",
        ],
        tmp.path(),
    );
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("truncated"), "{stderr}");
    assert!(!tmp.path().join("merged").exists());
}
