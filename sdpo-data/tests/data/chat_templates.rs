//! Every chat template TRL ships, rendered as transformers renders it: `chat_templates.json`
//! (fixtures README §8). Each case must give transformers' text exactly, or fail where
//! transformers raised.

use chrono::NaiveDateTime;
use minijinja::value::{Value as TemplateValue, ValueKind};

use crate::common::{fixtures_dir, smollm2_dir};
use sdpo_data::{ChatTemplate, Message, PreferenceTokenizer, RenderInput, TemplateClock};

/// The fixture parsed into an order-preserving value (templates print tool schemas in order).
fn load() -> TemplateValue {
    let path = fixtures_dir().join("chat_templates.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn text(value: &TemplateValue, key: &str) -> String {
    value
        .get_attr(key)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("`{key}` should be a string"))
}

fn messages(value: &TemplateValue) -> Vec<Message> {
    value
        .try_iter()
        .expect("messages")
        .map(|m| Message {
            role: text(&m, "role"),
            content: text(&m, "content"),
            extra: m
                .try_iter()
                .expect("message keys")
                .filter(|k| k.as_str() != Some("role") && k.as_str() != Some("content"))
                .map(|k| (k.to_string(), m.get_item(&k).expect("value")))
                .collect(),
        })
        .collect()
}

#[test]
fn chat_templates_render_as_transformers() {
    let doc = load();
    assert_eq!(text(&doc, "format"), "chat_templates/v1");
    let now = NaiveDateTime::parse_from_str(&text(&doc, "strftime_now"), "%Y-%m-%dT%H:%M:%S")
        .expect("strftime_now")
        .and_utc()
        .fixed_offset();
    let tokenizer = PreferenceTokenizer::from_dir(fixtures_dir().join(text(&doc, "tokenizer_dir")))
        .unwrap_or_else(|_| PreferenceTokenizer::from_dir(smollm2_dir()).expect("tokenizer"));
    let tokens = tokenizer.template_tokens().clone();
    let mut compiled = Vec::new();
    for template in doc.get_attr("templates").unwrap().try_iter().unwrap() {
        let name = text(&template, "name");
        let source = text(&template, "chat_template");
        let chat = ChatTemplate::with_clock(
            &source,
            tokens.clone(),
            std::path::Path::new(&name),
            TemplateClock::Fixed(now),
        )
        .unwrap_or_else(|e| panic!("template `{name}` does not compile: {e}"));
        compiled.push((name, chat));
    }
    let (mut rendered, mut refused, mut failures) = (0, 0, Vec::new());
    let cases: Vec<TemplateValue> = doc.get_attr("cases").unwrap().try_iter().unwrap().collect();
    for case in &cases {
        let name = text(case, "template");
        let label = format!("{name} / {}", text(case, "case"));
        let (_, template) = compiled
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("{label}: unknown template"));
        let conversation = messages(&case.get_attr("messages").unwrap());
        let tools = case.get_attr("tools").unwrap();
        let kwargs: Vec<(String, TemplateValue)> = {
            let map = case.get_attr("chat_template_kwargs").unwrap();
            map.try_iter()
                .unwrap()
                .map(|k| (k.to_string(), map.get_item(&k).unwrap()))
                .collect()
        };
        let input = RenderInput {
            messages: &conversation,
            tools: (tools.kind() == ValueKind::Seq).then_some(&tools),
            kwargs: &kwargs,
            add_generation_prompt: case.get_attr("add_generation_prompt").unwrap().is_true(),
            continue_final_message: case.get_attr("continue_final_message").unwrap().is_true(),
            max_output_bytes: None,
        };
        let ours = template.render(&input);
        match case.get_attr("text").ok().filter(|t| !t.is_undefined()) {
            Some(expected) => {
                rendered += 1;
                match ours {
                    Ok(ours) if Some(ours.as_str()) == expected.as_str() => {}
                    Ok(ours) => failures.push(format!(
                        "{label}: text differs\n--- transformers\n{}\n--- sdpo-data\n{ours}",
                        expected.as_str().unwrap_or_default()
                    )),
                    Err(err) => failures.push(format!("{label}: failed: {err:#}")),
                }
            }
            None => {
                refused += 1;
                if let Ok(ours) = ours {
                    failures.push(format!(
                        "{label}: transformers raised `{}`, but sdpo-data rendered:\n{ours}",
                        text(case, "error")
                    ));
                }
            }
        }
    }
    eprintln!(
        "chat_templates: {} templates, {} cases ({rendered} rendered, {refused} refused), {} failures",
        compiled.len(),
        cases.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(rendered > 0);
}
