//! Hostile data stays clean: templates that recurse or loop without end, write without end, a
//! `tools` column that is not JSON, a `chat_template_kwargs` that is not an object. Each is an
//! error naming the file, the line and the field, reached in bounded time and memory (the
//! template's instruction budget, recursion limit and output cap; the test finishing is the
//! proof that it is bounded).

use crate::common::{processor_with, write_temp};
use sdpo_data::{DataConfig, DataError};

const USER_TURN: &str = r#""prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello"}], "rejected": [{"role": "assistant", "content": "Go"}]"#;

fn first_error(template: &str, extra_fields: &str) -> DataError {
    let line = format!("{{{USER_TURN}{extra_fields}}}\n");
    let path = write_temp("hostile.jsonl", format!("{}{line}", good_line()).as_bytes());
    let processor = processor_with(DataConfig::default(), Some(template));
    let err = processor.process_file(&path).expect_err("must fail");
    let message = err.to_string();
    assert!(
        message.contains("hostile.jsonl: line 2"),
        "names the record: {message}"
    );
    err
}

fn good_line() -> String {
    format!("{{{USER_TURN}}}\n")
}

const PLAIN: &str = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}";

#[test]
fn a_template_that_recurses_without_end_fails_on_its_record() {
    let template = "{% macro down(n) %}{{ down(n + 1) }}{% endmacro %}{% if tools %}{{ down(0) }}{% endif %}{{ 'x' }}";
    // The first record (no tools) renders; the second (with tools) recurses.
    let err = first_error(template, r#", "tools": "[{\"type\": \"function\"}]""#);
    let message = err.to_string();
    assert!(matches!(err, DataError::TemplateRender { .. }), "{message}");
    assert!(message.contains("recursion"), "{message}");
}

#[test]
fn a_template_that_writes_without_end_is_cut_off() {
    let template = "{% if big is defined %}{% for a in range(100000) %}{{ 'x' * 1000000 }}{% endfor %}{% endif %}ok";
    let err = first_error(template, r#", "chat_template_kwargs": {"big": true}"#);
    let message = err.to_string();
    assert!(message.contains("MiB"), "{message}");
}

#[test]
fn endless_loops_are_bounded_by_the_instruction_budget() {
    let template = "{% if spin is defined %}{% for a in range(100000) %}{% for b in range(100000) %}{% set c = a * b %}{% endfor %}{% endfor %}{% endif %}ok";
    let err = first_error(template, r#", "chat_template_kwargs": {"spin": 1}"#);
    let message = err.to_string();
    assert!(message.contains("fuel"), "{message}");
}

#[test]
fn a_tools_column_that_is_not_json_names_the_record() {
    let err = first_error(PLAIN, r#", "tools": "[{not json""#);
    let message = err.to_string();
    assert!(
        message.contains("field `tools`") && message.contains("JSON"),
        "{message}"
    );
    let err = first_error(PLAIN, r#", "tools": "{\"name\": \"x\"}""#);
    assert!(err.to_string().contains("field `tools`"), "{err}");
    let err = first_error(PLAIN, r#", "tools": [1]"#);
    assert!(err.to_string().contains("field `tools[0]`"), "{err}");
}

#[test]
fn chat_template_kwargs_must_be_an_object_of_template_arguments() {
    let err = first_error(PLAIN, r#", "chat_template_kwargs": "enable_thinking""#);
    let message = err.to_string();
    assert!(
        message.contains("field `chat_template_kwargs`") && message.contains("an object"),
        "{message}"
    );
    let err = first_error(
        PLAIN,
        r#", "chat_template_kwargs": {"add_generation_prompt": false}"#,
    );
    assert!(
        err.to_string()
            .contains("chat_template_kwargs.add_generation_prompt"),
        "{err}"
    );
}

#[test]
fn a_template_error_names_the_template_line() {
    let template = "{% for m in messages %}\n{% if m.role == 'assistant' and tools %}\n{{ raise_exception('no tools here') }}\n{% endif %}{{ m.content }}{% endfor %}";
    let err = first_error(template, r#", "tools": "[{\"type\": \"function\"}]""#);
    let message = err.to_string();
    assert!(
        message.contains("no tools here") && message.contains("line 3"),
        "{message}"
    );
}

#[test]
fn a_text_past_max_text_bytes_is_refused_before_tokenizing_and_can_be_skipped() {
    let config = DataConfig {
        max_text_bytes: Some(1000),
        ..DataConfig::default()
    };
    // Under the bound the record is kept; one byte past it, refused naming the field.
    let at_bound = "a".repeat(1000 - " Hello".len() - "Hi".len() - "<|im_end|>".len());
    let past = format!("{at_bound}a");
    let lines = format!(
        "{{\"prompt\": \"Hi\", \"chosen\": \" Hello{at_bound}\", \"rejected\": \" Go\"}}\n{{\"prompt\": \"Hi\", \"chosen\": \" Hello{past}\", \"rejected\": \" Go\"}}\n"
    );
    let path = write_temp("long.jsonl", lines.as_bytes());
    let err = processor_with(config.clone(), None)
        .process_file(&path)
        .expect_err("must fail");
    let message = err.to_string();
    assert!(
        matches!(
            &err,
            DataError::TextTooLong {
                bytes: 1001,
                limit: 1000,
                ..
            }
        ),
        "{message}"
    );
    assert!(
        message.contains("long.jsonl: line 2: field `chosen`")
            && message.contains("max_text_bytes"),
        "{message}"
    );

    let skipping = DataConfig {
        skip_invalid_records: true,
        ..config
    };
    let dataset = processor_with(skipping, None).process_file(&path).unwrap();
    assert_eq!(dataset.len(), 1);
    assert_eq!(dataset.report.skipped_invalid, 1);
    assert_eq!(dataset.report.records_read, 2);
}

#[test]
fn the_default_text_bound_grows_with_max_length() {
    let default = DataConfig::default();
    assert_eq!(default.max_length, Some(1024));
    assert_eq!(
        default.max_text_bytes(),
        sdpo_data::MIN_DEFAULT_MAX_TEXT_BYTES
    );
    let long = DataConfig {
        max_length: Some(131_072),
        ..DataConfig::default()
    };
    assert_eq!(
        long.max_text_bytes(),
        131_072 * sdpo_data::DEFAULT_TEXT_BYTES_PER_TOKEN
    );
    let unlimited = DataConfig {
        max_length: None,
        ..DataConfig::default()
    };
    assert_eq!(
        unlimited.max_text_bytes(),
        sdpo_data::MIN_DEFAULT_MAX_TEXT_BYTES
    );
}

#[test]
fn a_template_rendering_past_the_text_bound_stops_there() {
    // 10 MB: under the template's 32 MiB output cap, far past the default text bound, which
    // stops the render (rendering the rest took seconds for nothing).
    let template = "{% if big is defined %}{% for a in range(100) %}{{ 'x' * 100000 }}{% endfor %}{% endif %}ok";
    let err = first_error(template, r#", "chat_template_kwargs": {"big": true}"#);
    let message = err.to_string();
    assert!(matches!(err, DataError::TemplateRender { .. }), "{message}");
    let bound = DataConfig::default().max_text_bytes();
    assert!(
        message.contains("max_text_bytes") && message.contains(&format!("passed {}", bound + 27)),
        "{message}"
    );
}

#[test]
fn a_rendered_conversation_just_past_the_text_bound_is_refused_before_tokenizing() {
    // The render may run a little past the bound (room for the continuation marker): the text
    // itself is then refused with its length.
    let config = DataConfig {
        max_text_bytes: Some(200),
        ..DataConfig::default()
    };
    let template = "{% for m in messages %}{{ m.content }}{% endfor %}{% if big is defined %}{{ 'x' * 205 }}{% endif %}";
    let line = format!("{{{USER_TURN}, \"chat_template_kwargs\": {{\"big\": true}}}}\n");
    let path = write_temp("hostile.jsonl", line.as_bytes());
    let err = processor_with(config, Some(template))
        .process_file(&path)
        .expect_err("must fail");
    let message = err.to_string();
    assert!(
        matches!(err, DataError::TextTooLong { limit: 200, .. }),
        "{message}"
    );
}
