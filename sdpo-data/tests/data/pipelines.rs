//! The two pipelines side by side (`trl_semantics`): defaults per version, the whole-text split
//! of TRL 1.x and what it counts, drops versus errors, and the configuration rules.

use crate::common::{encode, processor, processor_with, smollm2, write_temp};
use sdpo_data::{DataConfig, DataError, TrlPipeline, TruncationMode};

#[test]
fn each_version_has_its_own_defaults() {
    let v1 = DataConfig::default();
    assert_eq!(v1.trl_semantics, TrlPipeline::V1);
    assert_eq!(v1.truncation_mode(), TruncationMode::KeepStart);
    assert_eq!(v1.max_prompt_length(), None);
    let old = DataConfig::v0_28();
    assert_eq!(old.truncation_mode(), TruncationMode::KeepEnd);
    assert_eq!(old.max_prompt_length(), Some(512));
    let from_json: DataConfig =
        serde_json::from_str(r#"{"trl_semantics": "0.28", "max_prompt_length": null}"#).unwrap();
    assert_eq!(
        from_json.max_prompt_length(),
        None,
        "null switches the limit off"
    );
    let from_json: DataConfig = serde_json::from_str(r#"{"truncation_mode": "keep_end"}"#).unwrap();
    assert_eq!(from_json.truncation_mode(), TruncationMode::KeepEnd);
}

#[test]
fn max_prompt_length_is_refused_under_trl_1x() {
    let config: DataConfig = serde_json::from_str(r#"{"max_prompt_length": 64}"#).unwrap();
    let err = config.validate().unwrap_err().to_string();
    assert!(
        err.contains("max_prompt_length") && err.contains("trl_semantics = \"0.28\""),
        "{err}"
    );
    let ok: DataConfig =
        serde_json::from_str(r#"{"trl_semantics": "0.28", "max_prompt_length": 64}"#).unwrap();
    ok.validate().unwrap();
}

#[test]
fn plain_text_is_tokenized_whole_with_the_eos_text() {
    let tok = smollm2();
    let path = write_temp(
        "v1.jsonl",
        br#"{"prompt": "The sky is", "chosen": " blue.", "rejected": " green.<|im_end|>"}
"#,
    );
    let dataset = processor(DataConfig::default())
        .process_file(&path)
        .unwrap();
    let pair = &dataset.pairs[0];
    let whole = encode(&tok, "The sky is blue.<|im_end|>");
    assert_eq!(pair.prompt_ids, encode(&tok, "The sky is"));
    assert_eq!(
        [pair.prompt_ids.clone(), pair.chosen_ids.clone()].concat(),
        whole
    );
    // Already ends with the EOS text: not appended twice.
    assert_eq!(
        [pair.prompt_ids.clone(), pair.rejected_ids.clone()].concat(),
        encode(&tok, "The sky is green.<|im_end|>")
    );
    assert_eq!(dataset.report.prompts_not_prefix, 0);
}

#[test]
fn a_prompt_whose_tokens_merge_into_the_completion_is_cut_where_they_diverge() {
    let tok = smollm2();
    // "wor" + "ld" tokenize as one word when whole: the prompt's last token is not a prefix.
    let path = write_temp(
        "merge.jsonl",
        br#"{"prompt": "Hello wor", "chosen": "ld!", "rejected": "ld?"}
"#,
    );
    let dataset = processor(DataConfig::default())
        .process_file(&path)
        .unwrap();
    let pair = &dataset.pairs[0];
    let prompt = encode(&tok, "Hello wor");
    let whole = encode(&tok, "Hello world!<|im_end|>");
    assert!(pair.prompt_ids.len() < prompt.len());
    assert_eq!(pair.prompt_ids, prompt[..pair.prompt_ids.len()]);
    assert_eq!(
        [pair.prompt_ids.clone(), pair.chosen_ids.clone()].concat(),
        whole
    );
    assert_eq!(dataset.report.prompts_not_prefix, 1);
}

#[test]
fn a_prompt_that_fills_max_length_is_dropped_under_1x_and_an_error_under_0_28() {
    let lines = "{\"prompt\": \"one two three four five six seven eight nine ten\", \"chosen\": \" a\", \"rejected\": \" b\"}\n{\"prompt\": \"Hi\", \"chosen\": \" a\", \"rejected\": \" b\"}\n";
    let path = write_temp("fill.jsonl", lines.as_bytes());
    let v1 = DataConfig {
        max_length: Some(6),
        ..DataConfig::default()
    };
    let dataset = processor(v1).process_file(&path).unwrap();
    assert_eq!(dataset.len(), 1);
    assert_eq!(dataset.report.dropped_truncated, 1);
    assert!(
        dataset.report.reasons[0].contains("fill.jsonl: line 1"),
        "{:?}",
        dataset.report.reasons
    );
    let old = DataConfig {
        max_length: Some(6),
        truncation_mode: Some(TruncationMode::KeepStart),
        ..DataConfig::v0_28()
    };
    let err = processor(old).process_file(&path).unwrap_err();
    assert!(
        matches!(err, DataError::CompletionTruncatedAway { .. }),
        "{err}"
    );
    // keep_end never drops.
    let keep_end = DataConfig {
        max_length: Some(6),
        truncation_mode: Some(TruncationMode::KeepEnd),
        ..DataConfig::default()
    };
    assert_eq!(processor(keep_end).process_file(&path).unwrap().len(), 2);
}

#[test]
fn the_prompt_always_gets_the_generation_prompt_under_1x() {
    // A prompt that ends with an assistant turn: TRL 1.x still renders it with the generation
    // prompt (no continue_final_message), so the prompt is cut where it meets the full text.
    let template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}</{{ m.role }}>{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}";
    let line = r#"{"prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Well"}], "chosen": [{"role": "assistant", "content": " yes"}], "rejected": [{"role": "assistant", "content": " no"}]}"#;
    let path = write_temp("continue.jsonl", format!("{line}\n").as_bytes());
    let tok = smollm2();
    let dataset = processor_with(DataConfig::default(), Some(template))
        .process_file(&path)
        .unwrap();
    let pair = &dataset.pairs[0];
    let full = encode(
        &tok,
        "<user>Hi</user><assistant>Well</assistant><assistant> yes</assistant>",
    );
    assert_eq!(
        [pair.prompt_ids.clone(), pair.chosen_ids.clone()].concat(),
        full
    );
    // 0.28 continues the final message instead: the prompt ends inside it.
    let old = DataConfig {
        max_prompt_length: Some(None),
        ..DataConfig::v0_28()
    };
    let dataset = processor_with(old, Some(template))
        .process_file(&path)
        .unwrap();
    let prompt_text = tok.decode(&dataset.pairs[0].prompt_ids).unwrap();
    assert!(prompt_text.ends_with("Well"), "{prompt_text}");
}
