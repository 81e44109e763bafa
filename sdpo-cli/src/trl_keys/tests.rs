//! Checks the TRL key table against TRL itself (`fixtures/trl/keys.json`), `TrainConfig` and
//! docs/configuration.md.

use super::*;
use serde_json::Value;

fn trl_fixture_keys() -> Vec<Value> {
    let text = sdpo_testkit::read_fixture("trl/keys.json");
    let json: Value = serde_json::from_str(&text).expect("keys.json is JSON");
    json["keys"].as_array().expect("keys").clone()
}

fn kind_fits(kind: Kind, python_type: &str) -> bool {
    let has = |s: &str| python_type.contains(s);
    match kind {
        Kind::Bool => has("bool"),
        Kind::Int => has("int"),
        Kind::Float | Kind::Steps => has("float"),
        Kind::Str => has("str") || has("Strategy") || has("Names") || has("SchedulerType"),
        Kind::StrList => has("list[str]"),
        Kind::FloatList => has("list[float]"),
        Kind::Dict => has("dict"),
        Kind::Any => true,
    }
}

#[test]
fn the_catalogue_has_every_trl_key_with_trls_default_and_type() {
    let keys = trl_fixture_keys();
    assert!(!keys.is_empty());
    for key in &keys {
        let name = key["name"].as_str().unwrap();
        let entry = lookup(name).unwrap_or_else(|| panic!("TRL key `{name}` is not classified"));
        let default: Value = serde_json::from_str(entry.default).unwrap();
        let same = match (&default, &key["default"]) {
            (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
            (a, b) => a == b,
        };
        assert!(
            same,
            "`{name}`: catalogue default {default}, TRL's {}",
            key["default"]
        );
        let python_type = key["type"].as_str().unwrap();
        assert!(
            kind_fits(entry.kind, python_type),
            "`{name}`: {:?} for `{python_type}`",
            entry.kind
        );
    }
    let in_fixture: Vec<&str> = keys.iter().filter_map(|k| k["name"].as_str()).collect();
    for entry in TRL_KEYS {
        assert!(
            entry.source == Source::Legacy || in_fixture.contains(&entry.name),
            "`{}` is in the catalogue but not a TRL key",
            entry.name
        );
    }
    println!("{} TRL keys classified", keys.len());
}

#[test]
fn honoured_keys_exist_and_a_configuration_dumped_from_trl_loads() {
    let known = sdpo_train::TrainConfig::known_keys();
    for entry in TRL_KEYS.iter().filter(|e| e.status == Status::Honoured) {
        assert!(
            known.contains(entry.name),
            "`{}` is honoured but not a TrainConfig key",
            entry.name
        );
    }
    // Every TRL key at TRL's default: loads, with no warning.
    let mut all = serde_json::Map::new();
    for key in trl_fixture_keys() {
        all.insert(
            key["name"].as_str().unwrap().to_string(),
            key["default"].clone(),
        );
    }
    let prepared = crate::trl_config::prepare(all).expect("TRL's defaults load");
    assert!(prepared.warnings.is_empty(), "{:?}", prepared.warnings);
    let config: sdpo_train::TrainConfig =
        serde_json::from_value(Value::Object(prepared.map)).expect("a TrainConfig");
    assert_eq!(config.loss.loss_types().len(), 1);
    assert!(
        config.gradient_checkpointing,
        "TRL's gradient_checkpointing = true is kept"
    );
}

#[test]
fn every_trl_key_has_a_row_in_the_configuration_reference() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    let doc = std::fs::read_to_string(&path).expect("docs/configuration.md");
    let section = doc
        .split("## Every TRL key")
        .nth(1)
        .expect("docs/configuration.md has a section `## Every TRL key`");
    let missing: Vec<&str> = TRL_KEYS
        .iter()
        .map(|e| e.name)
        .filter(|name| !section.contains(&format!("| `{name}` |")))
        .collect();
    assert!(missing.is_empty(), "TRL keys without a row: {missing:?}");
}

#[test]
fn transformers_spellings_of_8bit_adamw_load_as_it_and_other_optimizers_are_refused() {
    let load = |optim: &str| {
        let mut map = serde_json::Map::new();
        map.insert("optim".into(), Value::from(optim));
        crate::trl_config::prepare(map).map(|prepared| {
            serde_json::from_value::<sdpo_train::TrainConfig>(Value::Object(prepared.map))
                .expect("a TrainConfig")
                .optim
        })
    };
    for spelling in ["adamw_8bit", "adamw_bnb_8bit", "paged_adamw_8bit"] {
        assert_eq!(
            load(spelling).expect(spelling),
            sdpo_train::Optimizer::Adamw8bit,
            "{spelling}"
        );
    }
    assert_eq!(
        load("adamw_torch").unwrap(),
        sdpo_train::Optimizer::AdamwTorch
    );
    let err = load("adafactor")
        .expect_err("adafactor is refused")
        .to_string();
    assert!(err.contains("optim") && err.contains("adamw_8bit"), "{err}");
}

#[test]
fn model_init_kwargs_dtype_sets_dtype_and_other_options_are_refused_by_name() {
    let prepare = |kwargs: Value, extra: &[(&str, Value)]| {
        let mut input = serde_json::Map::new();
        for (key, value) in extra {
            input.insert(key.to_string(), value.clone());
        }
        input.insert("model_init_kwargs".into(), kwargs);
        crate::trl_config::prepare(input)
    };
    for spelling in ["dtype", "torch_dtype"] {
        let prepared = prepare(serde_json::json!({ spelling: "bfloat16" }), &[]).expect(spelling);
        let config: sdpo_train::TrainConfig =
            serde_json::from_value(Value::Object(prepared.map)).expect("a TrainConfig");
        assert_eq!(config.dtype, sdpo_train::ModelDtype::Bfloat16, "{spelling}");
    }
    // A JSON object in a string, as a command-line flag gives it.
    let prepared = prepare(Value::String(r#"{"dtype": "float16"}"#.into()), &[]).unwrap();
    assert_eq!(prepared.map["dtype"], "float16");
    // The same value given twice is fine, a contradiction is not.
    prepare(
        serde_json::json!({"dtype": "bfloat16"}),
        &[("dtype", "bfloat16".into())],
    )
    .expect("the same dtype twice");
    let err = prepare(
        serde_json::json!({"dtype": "bfloat16"}),
        &[("dtype", "float32".into())],
    )
    .expect_err("two dtypes")
    .to_string();
    assert!(err.contains("dtype") && err.contains("float32"), "{err}");
    let err = prepare(serde_json::json!({"device_map": "auto"}), &[])
        .expect_err("device_map")
        .to_string();
    assert!(err.contains("model_init_kwargs.device_map"), "{err}");
}
