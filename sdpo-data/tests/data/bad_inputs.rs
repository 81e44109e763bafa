//! The bad-input corpus in `tests/bad_inputs/`: one file per failure kind. Each error message
//! must name the file, the line (JSONL) or index (JSON array) and the field; with
//! `skip_invalid_records` the bad record is skipped, counted and its reason kept.

use sdpo_data::{DataConfig, DataError, PreferenceProcessor, TruncationMode};

use crate::common::{bad_inputs_dir, smollm2, unlimited};

/// A Mistral-style template that refuses two user turns in a row.
const ALTERNATING: &str = "{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}";

struct Case {
    file: &'static str,
    /// `line N` or `index N`.
    location: &'static str,
    /// The field the message must name, if the failure is about one.
    field: Option<&'static str>,
    /// Further text the message must contain.
    detail: &'static str,
    kind: fn(&DataError) -> bool,
    /// Pairs kept with skipping; `None`: the failure stops reading even when skipping.
    kept_when_skipping: Option<usize>,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            file: "malformed_json.jsonl",
            location: "line 2",
            field: None,
            detail: "malformed JSON: EOF while parsing an object at column",
            kind: |e| matches!(e, DataError::MalformedJson { .. }),
            kept_when_skipping: Some(2),
        },
        Case {
            file: "missing_field.jsonl",
            location: "line 2",
            field: Some("rejected"),
            detail: "missing",
            kind: |e| matches!(e, DataError::MissingField { .. }),
            kept_when_skipping: Some(1),
        },
        Case {
            file: "wrong_type.jsonl",
            location: "line 3",
            field: Some("chosen"),
            detail: "expected a string or a list of messages, found a number",
            kind: |e| matches!(e, DataError::WrongType { .. }),
            kept_when_skipping: Some(2),
        },
        Case {
            file: "empty_chosen.jsonl",
            location: "line 2",
            field: Some("chosen"),
            detail: "is empty",
            kind: |e| matches!(e, DataError::EmptyField { .. }),
            kept_when_skipping: Some(1),
        },
        Case {
            file: "empty_rejected.json",
            location: "index 1",
            field: Some("rejected"),
            detail: "is empty",
            kind: |e| matches!(e, DataError::EmptyField { .. }),
            kept_when_skipping: Some(1),
        },
        Case {
            file: "unknown_role.jsonl",
            location: "line 2",
            field: Some("chosen[0].role"),
            detail: "unknown role `robot`",
            kind: |e| matches!(e, DataError::UnknownRole { .. }),
            kept_when_skipping: Some(1),
        },
        Case {
            file: "missing_content.jsonl",
            location: "line 1",
            field: Some("prompt[0].content"),
            detail: "missing",
            kind: |e| matches!(e, DataError::MissingField { .. }),
            kept_when_skipping: Some(1),
        },
        Case {
            file: "wrong_type_message.jsonl",
            location: "line 3",
            field: Some("chosen[0]"),
            detail: "expected a message object with `role` and `content`, found a string",
            kind: |e| matches!(e, DataError::WrongType { .. }),
            kept_when_skipping: Some(2),
        },
        Case {
            file: "wrong_type_content.jsonl",
            location: "line 1",
            field: Some("chosen[0].content"),
            detail: "expected a string, found a list",
            kind: |e| matches!(e, DataError::WrongType { .. }),
            kept_when_skipping: Some(1),
        },
        Case {
            file: "mixed_formats.jsonl",
            location: "line 2",
            field: Some("prompt"),
            detail: "expected a string, like `chosen`, found a list",
            kind: |e| matches!(e, DataError::WrongType { .. }),
            kept_when_skipping: Some(1),
        },
        Case {
            file: "prompt_ends_with_system.jsonl",
            location: "line 2",
            field: Some("prompt[0].role"),
            detail: "last message must be from user, tool or assistant, found `system`",
            kind: |e| matches!(e, DataError::InvalidRecord { .. }),
            kept_when_skipping: Some(1),
        },
        Case {
            file: "no_shared_prompt.jsonl",
            location: "line 1",
            field: Some("chosen"),
            detail: "no implicit prompt can be extracted",
            kind: |e| matches!(e, DataError::InvalidRecord { .. }),
            kept_when_skipping: Some(1),
        },
        Case {
            file: "invalid_utf8.jsonl",
            location: "line 2",
            field: Some("prompt"),
            detail: "invalid UTF-8 at byte 16 of the line",
            kind: |e| matches!(e, DataError::InvalidUtf8 { .. }),
            kept_when_skipping: Some(2),
        },
        Case {
            file: "not_an_object.json",
            location: "index 1",
            field: Some("<record>"),
            detail: "expected a JSON object with `chosen` and `rejected`, found a number",
            kind: |e| matches!(e, DataError::WrongType { .. }),
            kept_when_skipping: Some(2),
        },
        Case {
            file: "template_render.jsonl",
            location: "line 2",
            field: Some("prompt"),
            detail: "Conversation roles must alternate",
            kind: |e| matches!(e, DataError::TemplateRender { .. }),
            kept_when_skipping: Some(1),
        },
        Case {
            file: "prompt_fills_max_length.jsonl",
            location: "line 2",
            field: Some("prompt"),
            detail: "prompt has 10 tokens, so truncating to max_length = 6 (keep_start) leaves no completion token",
            kind: |e| matches!(e, DataError::CompletionTruncatedAway { .. }),
            kept_when_skipping: Some(1),
        },
        Case {
            file: "no_scored_token.jsonl",
            location: "line 2",
            field: Some("chosen"),
            detail: "no completion token is scored after the next-token shift",
            kind: |e| matches!(e, DataError::NoScoredToken { .. }),
            kept_when_skipping: Some(2),
        },
        Case {
            file: "malformed_array.json",
            location: "index 2",
            field: None,
            detail: "malformed JSON: expected `,` or `}` at line 4 column",
            kind: |e| matches!(e, DataError::MalformedJson { .. }),
            kept_when_skipping: None,
        },
        Case {
            file: "invalid_utf8_array.json",
            location: "index 1",
            field: None,
            detail: "invalid UTF-8",
            kind: |e| matches!(e, DataError::InvalidUtf8 { .. }),
            kept_when_skipping: None,
        },
    ]
}

fn processor_for(case: &Case, skip: bool) -> PreferenceProcessor {
    let mut config = DataConfig {
        skip_invalid_records: skip,
        ..unlimited()
    };
    let mut tokenizer = smollm2();
    match case.file {
        "template_render.jsonl" => tokenizer = tokenizer.with_chat_template(ALTERNATING).unwrap(),
        "prompt_fills_max_length.jsonl" => {
            config.max_length = Some(6);
            config.truncation_mode = TruncationMode::KeepStart;
        }
        _ => {}
    }
    PreferenceProcessor::new(tokenizer, config).unwrap()
}

#[test]
fn corpus_has_one_case_per_file() {
    let mut files: Vec<String> = std::fs::read_dir(bad_inputs_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut listed: Vec<String> = cases().iter().map(|c| c.file.to_string()).collect();
    listed.sort();
    assert_eq!(files, listed, "every corpus file has a case and vice versa");
}

#[test]
fn every_bad_input_names_file_location_and_field() {
    let mut checked = 0;
    for case in cases() {
        let path = bad_inputs_dir().join(case.file);
        let err = processor_for(&case, false)
            .process_file(&path)
            .expect_err(case.file);
        let message = err.to_string();
        eprintln!("{message}");
        assert!(
            (case.kind)(&err),
            "{}: unexpected variant: {err:?}",
            case.file
        );
        let prefix = format!("{}: {}: ", path.display(), case.location);
        assert!(
            message.starts_with(&prefix),
            "{}: `{message}` should start with `{prefix}`",
            case.file
        );
        if let Some(field) = case.field {
            let named = format!("field `{field}`");
            assert!(
                message.contains(&named),
                "{}: `{message}` lacks {named}",
                case.file
            );
        }
        assert!(
            message.contains(case.detail),
            "{}: `{message}` lacks `{}`",
            case.file,
            case.detail
        );
        assert!(err.origin().is_some());
        checked += 1;
    }
    eprintln!("bad_inputs: {checked} files checked");
}

#[test]
fn skipping_counts_and_keeps_the_reason() {
    for case in cases() {
        let path = bad_inputs_dir().join(case.file);
        let result = processor_for(&case, true).process_file(&path);
        match case.kept_when_skipping {
            Some(kept) => {
                let dataset = result.unwrap_or_else(|e| panic!("{}: {e}", case.file));
                assert_eq!(dataset.len(), kept, "{}", case.file);
                assert_eq!(dataset.report.skipped_total(), 1, "{}", case.file);
                assert_eq!(dataset.report.records_read, kept + 1, "{}", case.file);
                let reason = &dataset.report.reasons[0];
                assert!(reason.contains(case.location), "{}: {reason}", case.file);
                assert!(reason.contains(case.detail), "{}: {reason}", case.file);
            }
            // A broken JSON array cannot be resynchronised: reading stops even when skipping.
            None => assert!(result.is_err(), "{}", case.file),
        }
    }
}
