//! The bad-input corpus in `tests/bad_inputs/`: one file per failure kind. Each error message
//! must name the file, the line (JSONL), index (JSON array) or row group/record batch and row
//! (Parquet/Arrow) and the field (column); with `skip_invalid_records` the bad record is skipped,
//! counted and its reason kept. Failures about a whole file (truncated, empty, missing column)
//! stop reading even when skipping. The Parquet/Arrow files are written by
//! `tools/make_arrow_fixtures.py`.

use sdpo_data::{DataConfig, DataError, PreferenceProcessor, TruncationMode};

use crate::common::{bad_inputs_dir, smollm2, unlimited};

/// A Mistral-style template that refuses two user turns in a row.
const ALTERNATING: &str = "{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}";

struct Case {
    file: &'static str,
    /// `line N`, `index N`, `row group G, row R`, `record batch B, row R`, a file part
    /// (`row group 0`), or empty for a failure about the whole file.
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
        Case {
            file: "truncated.parquet",
            location: "",
            field: None,
            detail: "cannot read Parquet: ",
            kind: |e| matches!(e, DataError::Columnar { .. }),
            kept_when_skipping: None,
        },
        Case {
            file: "empty.parquet",
            location: "",
            field: None,
            detail: "cannot read Parquet: the file is empty (0 bytes)",
            kind: |e| matches!(e, DataError::Columnar { .. }),
            kept_when_skipping: None,
        },
        Case {
            file: "gzip_codec.parquet",
            location: "row group 0",
            field: None,
            detail: "cannot read Parquet: ",
            kind: |e| matches!(e, DataError::Columnar { .. }) && e.to_string().contains("flate2"),
            kept_when_skipping: None,
        },
        Case {
            file: "missing_column.parquet",
            location: "",
            field: None,
            detail: "column `rejected` (`rejected_column`) not found; the file's columns are: prompt, chosen, reject",
            kind: |e| matches!(e, DataError::MissingColumn { .. }),
            kept_when_skipping: None,
        },
        Case {
            file: "wrong_type_column.parquet",
            location: "row group 0, row 0",
            field: Some("chosen"),
            detail: "expected a string or a list of messages, found a number",
            kind: |e| matches!(e, DataError::WrongType { .. }),
            // The column is int64: every row is skipped, and counted.
            kept_when_skipping: Some(0),
        },
        Case {
            file: "null_rejected.parquet",
            location: "row group 1, row 3",
            field: Some("rejected"),
            detail: "is null",
            kind: |e| matches!(e, DataError::NullValue { .. }),
            kept_when_skipping: Some(3),
        },
        Case {
            file: "null_content.arrow",
            location: "record batch 0, row 1",
            field: Some("chosen[0].content"),
            detail: "missing",
            kind: |e| matches!(e, DataError::MissingField { .. }),
            kept_when_skipping: Some(1),
        },
        Case {
            file: "truncated.arrow",
            location: "record batch 0",
            field: None,
            detail: "cannot read Arrow IPC: ",
            kind: |e| matches!(e, DataError::Columnar { .. }),
            kept_when_skipping: None,
        },
    ]
}

/// Records skipped when skipping: every row of a file whose column has the wrong type.
fn skipped_count(case: &Case) -> usize {
    match case.file {
        "wrong_type_column.parquet" => 3,
        _ => 1,
    }
}

/// Whether the failure is about the whole file rather than one record.
fn file_level(case: &Case) -> bool {
    case.kept_when_skipping.is_none() && !case.file.ends_with(".json")
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
            config.truncation_mode = Some(TruncationMode::KeepStart);
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
        let prefix = if case.location.is_empty() {
            format!("{}: ", path.display())
        } else {
            format!("{}: {}: ", path.display(), case.location)
        };
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
        assert_eq!(err.origin().is_some(), !file_level(&case), "{}", case.file);
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
                let skipped = skipped_count(&case);
                assert_eq!(dataset.report.skipped_total(), skipped, "{}", case.file);
                assert_eq!(dataset.report.records_read, kept + skipped, "{}", case.file);
                let reason = &dataset.report.reasons[0];
                assert!(reason.contains(case.location), "{}: {reason}", case.file);
                assert!(reason.contains(case.detail), "{}: {reason}", case.file);
            }
            // A broken JSON array cannot be resynchronised: reading stops even when skipping.
            None => assert!(result.is_err(), "{}", case.file),
        }
    }
}
