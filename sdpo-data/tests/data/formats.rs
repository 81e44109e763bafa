//! Each input format, BOS/EOS rules, truncation modes, file layouts, skipping, config parsing.

use sdpo_data::{
    DataConfig, DataError, PairBody, PreferenceProcessor, PreferenceTokenizer, TokenizedDataset,
    TokenizedPair, TruncationMode, load_records,
};

use crate::common::{encode, processor, smollm2, smollm2_dir, temp_dir, unlimited, write_temp};

const SYSTEM: &str = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n";

fn one_pair(config: DataConfig, line: &str) -> sdpo_data::TokenizedPair {
    let path = write_temp("pair.jsonl", line.as_bytes());
    let dataset = processor(config).process_file(&path).unwrap();
    assert_eq!(dataset.len(), 1);
    dataset.pairs[0].clone()
}

#[test]
fn standard_format_appends_eos_once() {
    let tok = smollm2();
    let pair = one_pair(
        unlimited(),
        r#"{"prompt": "The sky is", "chosen": " blue.", "rejected": " green.<|im_end|>"}"#,
    );
    assert_eq!(pair.prompt_ids, encode(&tok, "The sky is"));
    let mut chosen = encode(&tok, " blue.");
    chosen.push(2);
    assert_eq!(pair.chosen_ids, chosen);
    // Already ends with EOS: not appended twice.
    let rejected = encode(&tok, " green.<|im_end|>");
    assert_eq!(rejected.last(), Some(&2));
    assert_eq!(pair.rejected_ids, rejected);
    // No BOS: SmolLM2 does not ask for one.
    assert_ne!(pair.prompt_ids.first(), Some(&1));
}

#[test]
fn conversational_format_uses_the_chat_template() {
    let tok = smollm2();
    let line = r#"{"prompt": [{"role": "user", "content": "What color is the sky?"}],
        "chosen": [{"role": "assistant", "content": "It is blue."}],
        "rejected": [{"role": "assistant", "content": "It is green."}]}"#
        .replace('\n', " ");
    let pair = one_pair(unlimited(), &line);
    let prompt = format!(
        "{SYSTEM}<|im_start|>user\nWhat color is the sky?<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(pair.prompt_ids, encode(&tok, &prompt));
    // The completion is the assistant turn closed by the template; no extra EOS.
    assert_eq!(pair.chosen_ids, encode(&tok, "It is blue.<|im_end|>\n"));
    assert_eq!(pair.rejected_ids, encode(&tok, "It is green.<|im_end|>\n"));
}

#[test]
fn implicit_prompt_conversational_equals_explicit() {
    let explicit = r#"{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello!"}], "rejected": [{"role": "assistant", "content": "Go away."}]}"#;
    let implicit = r#"{"chosen": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}], "rejected": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go away."}]}"#;
    let a = one_pair(unlimited(), explicit);
    let b = one_pair(unlimited(), implicit);
    assert_eq!(a, b);
    // A system message replaces the default one.
    let tok = smollm2();
    assert_eq!(
        a.prompt_ids,
        encode(
            &tok,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        )
    );
}

#[test]
fn implicit_prompt_standard_splits_like_trl() {
    let path = write_temp(
        "implicit.jsonl",
        br#"{"chosen": "Q: sky colour? A: blue", "rejected": "Q: sky colour? A: green"}"#,
    );
    let (records, _) = load_records(&path, false).unwrap();
    let PairBody::Standard {
        prompt,
        chosen,
        rejected,
    } = &records[0].body
    else {
        panic!("expected a standard record");
    };
    // TRL's extract_prompt: the space before the first difference goes to the completions.
    assert_eq!(prompt, "Q: sky colour? A:");
    assert_eq!(chosen, " blue");
    assert_eq!(rejected, " green");
}

#[test]
fn string_prompt_with_conversations_is_ignored_and_extracted() {
    // TRL's maybe_extract_prompt: a string prompt next to conversations is replaced.
    let line = r#"{"prompt": "Hi", "chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "No"}]}"#;
    let path = write_temp("mixed-prompt.jsonl", line.as_bytes());
    let (records, _) = load_records(&path, false).unwrap();
    let PairBody::Conversational { prompt, chosen, .. } = &records[0].body else {
        panic!("expected conversational");
    };
    assert_eq!(prompt.len(), 1);
    assert_eq!(chosen[0].content, "Hello");
}

#[test]
fn prompt_ending_with_assistant_continues_that_turn() {
    let tok = smollm2();
    let line = r#"{"prompt": [{"role": "user", "content": "Count"}, {"role": "assistant", "content": "1, 2,"}], "chosen": [{"role": "assistant", "content": " 3"}], "rejected": [{"role": "assistant", "content": " 4"}]}"#;
    let pair = one_pair(unlimited(), line);
    let prompt = format!("{SYSTEM}<|im_start|>user\nCount<|im_end|>\n<|im_start|>assistant\n1, 2,");
    assert_eq!(pair.prompt_ids, encode(&tok, &prompt));
    // The rest of the full rendering after that prompt: "<|im_end|>\n<|im_start|>assistant\n 3<|im_end|>\n".
    assert_eq!(
        pair.chosen_ids,
        encode(&tok, "<|im_end|>\n<|im_start|>assistant\n 3<|im_end|>\n")
    );
}

/// A copy of the SmolLM2 tokenizer directory with `add_bos_token: true`.
fn bos_tokenizer() -> PreferenceTokenizer {
    let dir = temp_dir("bos");
    std::fs::copy(
        smollm2_dir().join("tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    let config = std::fs::read_to_string(smollm2_dir().join("tokenizer_config.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&config).unwrap();
    config["add_bos_token"] = true.into();
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    PreferenceTokenizer::from_dir(&dir).unwrap()
}

#[test]
fn bos_when_asked_and_never_twice() {
    let tok = bos_tokenizer();
    assert!(tok.info().add_bos_token);
    let processor = PreferenceProcessor::new(tok, unlimited()).unwrap();
    let path = write_temp(
        "bos.jsonl",
        concat!(
            r#"{"prompt": "Hi", "chosen": "a", "rejected": "b"}"#,
            "\n",
            r#"{"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]}"#,
            "\n"
        )
        .as_bytes(),
    );
    let dataset = processor.process_file(&path).unwrap();
    let standard = &dataset.pairs[0];
    assert_eq!(standard.prompt_ids[0], 1);
    assert_ne!(standard.prompt_ids[1], 1);
    // The chat template already starts with <|im_start|> (= BOS here): not added again.
    let chat = &dataset.pairs[1];
    assert_eq!(chat.prompt_ids[0], 1);
    assert_ne!(chat.prompt_ids[1], 1);
    assert_eq!(
        chat.prompt_ids,
        encode(
            processor.tokenizer(),
            &format!("{SYSTEM}<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
        )
    );
}

#[test]
fn max_prompt_length_keep_end_and_keep_start() {
    let tok = smollm2();
    let line = r#"{"prompt": "one two three four five six seven eight", "chosen": " nine", "rejected": " ten"}"#;
    let full = encode(&tok, "one two three four five six seven eight");
    assert_eq!(full.len(), 8);
    for (mode, expected) in [
        (TruncationMode::KeepEnd, full[5..].to_vec()),
        (TruncationMode::KeepStart, full[..3].to_vec()),
    ] {
        let config = DataConfig {
            max_prompt_length: Some(Some(3)),
            max_length: None,
            truncation_mode: Some(mode),
            ..DataConfig::v0_28()
        };
        let path = write_temp("long-prompt.jsonl", line.as_bytes());
        let dataset = processor(config).process_file(&path).unwrap();
        assert_eq!(dataset.pairs[0].prompt_ids, expected, "{mode:?}");
        assert_eq!(dataset.report.prompts_truncated, 1);
    }
}

#[test]
fn completion_truncated_away_is_an_error_or_a_counted_drop() {
    let lines = concat!(
        r#"{"prompt": "one two three four five six", "chosen": " x", "rejected": " y"}"#,
        "\n",
        r#"{"prompt": "one", "chosen": " x", "rejected": " y"}"#,
        "\n"
    );
    let path = write_temp("fills.jsonl", lines.as_bytes());
    let config = DataConfig {
        max_length: Some(4),
        max_prompt_length: Some(None),
        truncation_mode: Some(TruncationMode::KeepStart),
        ..DataConfig::v0_28()
    };
    let err = processor(config.clone()).process_file(&path).unwrap_err();
    assert!(matches!(
        err,
        DataError::CompletionTruncatedAway { prompt_len: 6, .. }
    ));
    let message = err.to_string();
    assert!(
        message.contains("fills.jsonl: line 1: field `prompt`"),
        "{message}"
    );

    let skipping = DataConfig {
        skip_invalid_records: true,
        ..config
    };
    let dataset = processor(skipping).process_file(&path).unwrap();
    assert_eq!(dataset.len(), 1);
    assert_eq!(dataset.report.dropped_truncated, 1);
    assert_eq!(dataset.report.skipped_invalid, 0);
    assert_eq!(dataset.report.records_read, 2);
    assert!(dataset.report.reasons[0].contains("line 1"));

    // keep_end never empties a completion: the prompt's start is cut at collation instead.
    let keep_end = DataConfig {
        max_length: Some(4),
        max_prompt_length: Some(None),
        ..DataConfig::v0_28()
    };
    let dataset = processor(keep_end).process_file(&path).unwrap();
    assert_eq!(dataset.len(), 2);
    assert_eq!(dataset.report.pairs_over_max_length, 1);
}

#[test]
fn json_array_and_jsonl_give_the_same_dataset() {
    let records = [
        r#"{"prompt": "a", "chosen": "b", "rejected": "c"}"#,
        r#"{"prompt": [{"role": "user", "content": "u"}], "chosen": [{"role": "assistant", "content": "v"}], "rejected": [{"role": "assistant", "content": "w"}]}"#,
    ];
    // JSONL with a byte-order mark, CRLF line ends and a blank line.
    let jsonl = format!("\u{feff}{}\r\n\r\n{}\r\n", records[0], records[1]);
    let array = format!("  [\n{},\n{}\n]\n", records[0], records[1]);
    let p = processor(unlimited());
    let a = p
        .process_file(write_temp("x.jsonl", jsonl.as_bytes()))
        .unwrap();
    let b = p
        .process_file(write_temp("x.json", array.as_bytes()))
        .unwrap();
    assert_eq!(a.pairs, b.pairs);
    assert_eq!(a.content_hash(), b.content_hash());
    assert_eq!(a.origins[1].location, sdpo_data::RecordLocation::Line(3));
    assert_eq!(b.origins[1].location, sdpo_data::RecordLocation::Index(1));
}

#[test]
fn skip_mode_reports_count_and_reasons() {
    let lines = concat!(
        r#"{"prompt": "a", "chosen": "b", "rejected": "c"}"#,
        "\n",
        r#"{"prompt": "a", "chosen": "b"}"#,
        "\n",
        r#"{"prompt": "a", "chosen": "", "rejected": "c"}"#,
        "\n",
        "not json\n",
        r#"{"prompt": "a", "chosen": "b", "rejected": "c"}"#,
        "\n"
    );
    let path = write_temp("mixed.jsonl", lines.as_bytes());
    let config = DataConfig {
        skip_invalid_records: true,
        max_reported_reasons: 2,
        ..unlimited()
    };
    let dataset = processor(config).process_file(&path).unwrap();
    assert_eq!(dataset.len(), 2);
    let report = &dataset.report;
    assert_eq!(report.records_read, 5);
    assert_eq!(report.pairs_kept, 2);
    assert_eq!(report.skipped_invalid, 3);
    assert_eq!(report.skipped_total(), 3);
    assert_eq!(
        report.reasons.len(),
        2,
        "only the first max_reported_reasons"
    );
    assert!(
        report.reasons[0].contains("line 2: field `rejected`: missing"),
        "{:?}",
        report.reasons
    );
    assert!(
        report.reasons[1].contains("line 3: field `chosen`: is empty"),
        "{:?}",
        report.reasons
    );
    // Without skipping, the first bad record stops processing.
    let err = processor(unlimited()).process_file(&path).unwrap_err();
    assert!(err.to_string().contains("line 2"));
}

#[test]
fn content_hash_is_stable_and_sensitive() {
    let path = write_temp(
        "hash.jsonl",
        br#"{"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}"#,
    );
    let a = processor(unlimited()).process_file(&path).unwrap();
    let b = processor(unlimited()).process_file(&path).unwrap();
    assert_eq!(a.content_hash(), b.content_hash());
    let c = processor(DataConfig {
        max_length: Some(3),
        max_prompt_length: Some(None),
        ..DataConfig::v0_28()
    })
    .process_file(&path)
    .unwrap();
    assert_eq!(a.pairs, c.pairs);
    assert_ne!(
        a.content_hash(),
        c.content_hash(),
        "max_length is part of the key"
    );
}

/// The hash keys the reference log-prob cache across runs and versions, so its value is part of
/// the format: pinned to literals. They were computed by an independent implementation (Python,
/// from the byte layout documented on `content_hash`: FNV-1a 64 of `b"sdpo-data/v1"`,
/// `max_length` as u64 LE (u64::MAX for none), the truncation mode's name, the pair count as
/// u64 LE, then per pair and side the id count as u64 LE and each id as u32 LE). A change here
/// invalidates every cache on disk: bump the version string instead of editing the literals.
#[test]
fn content_hash_is_pinned_to_its_documented_layout() {
    let pairs = vec![
        TokenizedPair {
            prompt_ids: vec![1, 2, 3],
            chosen_ids: vec![4, 5],
            rejected_ids: vec![6],
        },
        TokenizedPair {
            prompt_ids: vec![70000],
            chosen_ids: vec![],
            rejected_ids: vec![2, 2],
        },
    ];
    let dataset = |max_length, truncation_mode| TokenizedDataset {
        pairs: pairs.clone(),
        max_length,
        truncation_mode,
        ..TokenizedDataset::default()
    };
    let cases = [
        (None, TruncationMode::KeepEnd, 0x6b8e_d270_070e_76c9_u64),
        (Some(64), TruncationMode::KeepEnd, 0xf069_1b8a_05dc_81e1),
        (Some(64), TruncationMode::KeepStart, 0x9350_566d_ef88_17d4),
    ];
    for (max_length, mode, expected) in cases {
        let d = dataset(max_length, mode);
        assert_eq!(
            d.content_hash(),
            expected,
            "max_length {max_length:?}, {mode:?}"
        );
        assert_eq!(d.content_hash_hex(), format!("{expected:016x}"));
    }
    assert_eq!(
        TokenizedDataset::default().content_hash(),
        0x0a97_7dc0_3d2d_d2a9
    );
}

#[test]
fn config_reads_trl_names_and_rejects_typos() {
    let config: DataConfig = serde_json::from_str(
        r#"{"max_length": 256, "max_prompt_length": null, "truncation_mode": "keep_start", "pad_to_multiple_of": 8, "skip_invalid_records": true}"#,
    )
    .unwrap();
    assert_eq!(config.max_length, Some(256));
    assert_eq!(config.max_prompt_length, Some(None));
    assert_eq!(config.truncation_mode, Some(TruncationMode::KeepStart));
    assert_eq!(config.pad_to_multiple_of, Some(8));
    assert!(config.skip_invalid_records);
    let default: DataConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(default, DataConfig::default());
    assert_eq!(default.truncation_mode(), TruncationMode::KeepStart);
    assert!(serde_json::from_str::<DataConfig>(r#"{"max_lenght": 3}"#).is_err());
    assert!(serde_json::from_str::<DataConfig>(r#"{"truncation_mode": "middle"}"#).is_err());
    let zero = DataConfig {
        pad_to_multiple_of: Some(0),
        ..DataConfig::v0_28()
    };
    assert!(PreferenceProcessor::new(smollm2(), zero).is_err());
}

#[test]
fn tokenizer_differences_name_what_differs() {
    let a = smollm2().info().clone();
    let b = bos_tokenizer().info().clone();
    assert_eq!(
        b.differences(&a),
        vec!["add_bos_token: true vs false".to_string()]
    );
    let mut c = a.clone();
    c.vocab_size = 32000;
    c.eos = None;
    let diffs = a.differences(&c);
    assert_eq!(diffs.len(), 2);
    assert!(diffs[0].contains("vocab_size: 49152 vs 32000"));
    assert!(diffs[1].contains("eos: <|im_end|> (2) vs none"));
}

#[test]
fn template_helpers_behave_like_transformers() {
    // `.strip()` (pycompat), `tojson` with Python separators, loop controls, raise_exception.
    let template = "{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}[{{ m.content.strip() }}|{{ m | tojson }}]{% endfor %}{% if messages|length > 3 %}{{ raise_exception('too many: ' ~ messages|length) }}{% endif %}";
    let tok = smollm2().with_chat_template(template).unwrap();
    let msgs = vec![
        sdpo_data::Message::new("system", "s"),
        sdpo_data::Message::new("user", "  hi <b>  "),
    ];
    let out = tok.render_messages(&msgs, false, false).unwrap().unwrap();
    assert_eq!(out, r#"[hi <b>|{"role": "user", "content": "  hi <b>  "}]"#);
    let four = vec![sdpo_data::Message::new("user", "x"); 4];
    let err = tok
        .render_messages(&four, false, false)
        .unwrap()
        .unwrap_err();
    assert!(format!("{err:#}").contains("too many: 4"), "{err:#}");
    assert!(matches!(
        smollm2().with_chat_template("{% for %}"),
        Err(DataError::TemplateSyntax { .. })
    ));
}

#[test]
fn chat_template_jinja_file_wins_over_config() {
    let dir = temp_dir("jinja");
    std::fs::copy(
        smollm2_dir().join("tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    std::fs::copy(
        smollm2_dir().join("tokenizer_config.json"),
        dir.join("tokenizer_config.json"),
    )
    .unwrap();
    std::fs::write(
        dir.join("chat_template.jinja"),
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}{{ eos_token }}{% endfor %}",
    )
    .unwrap();
    let tok = PreferenceTokenizer::from_dir(&dir).unwrap();
    let out = tok
        .render_messages(&[sdpo_data::Message::new("user", "q")], false, false)
        .unwrap()
        .unwrap();
    assert_eq!(out, "<user>q<|im_end|>");
}
