//! Saving writes a Hugging Face checkpoint that loads back identically; sharded and
//! half-precision checkpoints load; seeded random models are reproducible.

mod common;

use std::collections::BTreeMap;

use common::{
    Golden, RawTensor, copy_model, golden_logits_of, model_dir, read_config, read_raw, tiny_models,
    write_raw,
};
use safetensors::Dtype;
use sdpo_models::{CausalLm, HfConfig, ModelConfig};
use sdpo_testkit::max_abs_diff;

#[test]
fn save_then_load_gives_identical_logits_and_hf_layout() {
    for dev in sdpo_testkit::test_devices!() {
        for name in &tiny_models() {
            let model = CausalLm::from_pretrained(model_dir(name), &dev.device).expect("load");
            let before = golden_logits_of(&model, name, &dev.device);
            let out = tempfile::tempdir().expect("tempdir");
            model.save_pretrained(out.path()).expect("save");

            // Same keys, dtypes, shapes and bytes as the file transformers wrote.
            let original = read_raw(&model_dir(name).join("model.safetensors"));
            let saved = read_raw(&out.path().join("model.safetensors"));
            assert_eq!(
                original.keys().collect::<Vec<_>>(),
                saved.keys().collect::<Vec<_>>(),
                "{name}: saved key set"
            );
            for (key, t) in &original {
                let s = &saved[key];
                assert_eq!(s.dtype, Dtype::F32, "{name}/{key}: dtype");
                assert_eq!(s.shape, t.shape, "{name}/{key}: shape");
                assert!(s.data == t.data, "{name}/{key}: bytes differ");
            }
            let bytes = std::fs::read(out.path().join("model.safetensors")).expect("read");
            let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("header");
            let meta = meta.metadata().clone().unwrap_or_default();
            assert_eq!(
                meta.get("format").map(String::as_str),
                Some("pt"),
                "{name}: metadata"
            );

            // config.json keeps every key of the source, with the dtype set to float32.
            let src = read_config(&model_dir(name));
            let written = read_config(out.path());
            for (key, value) in &src {
                if key != "dtype" {
                    assert_eq!(written.get(key), Some(value), "{name}: config key {key}");
                }
            }
            assert_eq!(written["dtype"], "float32");

            let reloaded = CausalLm::from_pretrained(out.path(), &dev.device).expect("reload");
            let after = golden_logits_of(&reloaded, name, &dev.device);
            assert_eq!(before, after, "{name} on {}: logits changed", dev.name);
            println!(
                "[{}] {name}: save -> load identical ({} logits)",
                dev.name,
                after.len()
            );
        }
    }
}

/// Splits `llama` over two shards with an index and checks the logits do not change.
#[test]
fn sharded_checkpoint_loads() {
    for dev in sdpo_testkit::test_devices!() {
        let tmp = copy_model("llama");
        let single = tmp.path().join("model.safetensors");
        let tensors = read_raw(&single);
        std::fs::remove_file(&single).expect("rm");
        let mut shards: [BTreeMap<String, RawTensor>; 2] = Default::default();
        let mut weight_map = serde_json::Map::new();
        for (i, (key, t)) in tensors.into_iter().enumerate() {
            let file = format!("model-0000{}-of-00002.safetensors", i % 2 + 1);
            weight_map.insert(key.clone(), file.into());
            shards[i % 2].insert(key, t);
        }
        for (i, shard) in shards.iter().enumerate() {
            write_raw(
                &tmp.path()
                    .join(format!("model-0000{}-of-00002.safetensors", i + 1)),
                shard,
            );
        }
        let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
        std::fs::write(
            tmp.path().join("model.safetensors.index.json"),
            index.to_string(),
        )
        .expect("index");

        let sharded = CausalLm::from_pretrained(tmp.path(), &dev.device).expect("sharded");
        let reference = CausalLm::from_pretrained(model_dir("llama"), &dev.device).expect("single");
        assert_eq!(
            golden_logits_of(&sharded, "llama", &dev.device),
            golden_logits_of(&reference, "llama", &dev.device),
            "sharded logits on {}",
            dev.name
        );
        println!("[{}] sharded llama (2 shards) = single file", dev.name);
    }
}

/// Stores `qwen2` in BF16 / F16 and compares with an F32 file holding the same rounded
/// values: loading must widen exactly.
#[test]
fn bf16_and_f16_checkpoints_load_exactly() {
    type Round = fn(f32) -> (Vec<u8>, f32);
    let bf16: Round = |x| {
        let h = half::bf16::from_f32(x);
        (h.to_le_bytes().to_vec(), h.to_f32())
    };
    let f16: Round = |x| {
        let h = half::f16::from_f32(x);
        (h.to_le_bytes().to_vec(), h.to_f32())
    };
    for dev in sdpo_testkit::test_devices!() {
        for (label, dtype, round) in [("BF16", Dtype::BF16, bf16), ("F16", Dtype::F16, f16)] {
            let half_dir = copy_model("qwen2");
            let f32_dir = copy_model("qwen2");
            let tensors = read_raw(&half_dir.path().join("model.safetensors"));
            let mut halves = BTreeMap::new();
            let mut rounded = BTreeMap::new();
            for (key, t) in tensors {
                let (mut h, mut r) = (Vec::new(), Vec::new());
                for c in t.data.chunks_exact(4) {
                    let (bytes, value) = round(f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
                    h.extend(bytes);
                    r.extend(value.to_le_bytes());
                }
                halves.insert(
                    key.clone(),
                    RawTensor {
                        dtype,
                        shape: t.shape.clone(),
                        data: h,
                    },
                );
                rounded.insert(
                    key,
                    RawTensor {
                        dtype: Dtype::F32,
                        shape: t.shape,
                        data: r,
                    },
                );
            }
            write_raw(&half_dir.path().join("model.safetensors"), &halves);
            write_raw(&f32_dir.path().join("model.safetensors"), &rounded);
            let from_half = CausalLm::from_pretrained(half_dir.path(), &dev.device).expect("half");
            let from_f32 = CausalLm::from_pretrained(f32_dir.path(), &dev.device).expect("f32");
            let a = golden_logits_of(&from_half, "qwen2", &dev.device);
            let b = golden_logits_of(&from_f32, "qwen2", &dev.device);
            assert_eq!(a, b, "{label} on {}", dev.name);
            // And the rounding moved the logits away from the F32 golden, so the check bites.
            let golden = Golden::open(&model_dir("qwen2").join("golden.safetensors"));
            let moved = max_abs_diff(&a, &golden.f32("logits").0);
            assert!(moved > 0.0, "{label}: rounding had no effect");
            println!(
                "[{}] {label} checkpoint = F32 of rounded values (|Δ golden| {moved:.2e})",
                dev.name
            );
        }
    }
}

#[test]
fn from_config_is_seeded_and_saves_loadably() {
    for dev in sdpo_testkit::test_devices!() {
        for name in &tiny_models() {
            let hf = HfConfig::from_file(&model_dir(name).join("config.json")).expect("config");
            let config = ModelConfig::try_from(hf).expect("resolve");
            let a = CausalLm::from_config(&config, 7, &dev.device);
            let b = CausalLm::from_config(&config, 7, &dev.device);
            let c = CausalLm::from_config(&config, 8, &dev.device);
            let la = golden_logits_of(&a, name, &dev.device);
            assert!(
                la.iter().all(|x| x.is_finite()),
                "{name}: non-finite logits"
            );
            assert_eq!(
                la,
                golden_logits_of(&b, name, &dev.device),
                "{name}: same seed"
            );
            assert!(
                max_abs_diff(&la, &golden_logits_of(&c, name, &dev.device)) > 0.0,
                "{name}: seeds"
            );
            let out = tempfile::tempdir().expect("tempdir");
            a.save_pretrained(out.path()).expect("save");
            let back = CausalLm::from_pretrained(out.path(), &dev.device).expect("reload");
            assert_eq!(
                la,
                golden_logits_of(&back, name, &dev.device),
                "{name}: round trip"
            );
            assert_eq!(back.config().vocab_size, config.vocab_size);
            println!(
                "[{}] {name}: from_config(seed) reproducible, saved and reloaded",
                dev.name
            );
        }
    }
}
