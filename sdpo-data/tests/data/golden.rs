//! Parity with the fixtures produced by Python `tokenizers` and transformers.

use serde_json::Value;

use crate::common::{fixtures_dir, processor, read_json, smollm2, smollm2_dir, unlimited};
use sdpo_data::{Message, PairBody, PreferenceRecord, RecordOrigin};

fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .expect("id list")
        .iter()
        .map(|v| u32::try_from(v.as_u64().expect("id")).expect("u32 id"))
        .collect()
}

#[test]
fn tokenizer_golden_every_case() {
    let text = std::fs::read_to_string(fixtures_dir().join("tokenizer_golden.json")).unwrap();
    let golden: Value = serde_json::from_str(&text).unwrap();
    let tok = smollm2();
    assert_eq!(
        tok.info().vocab_size as u64,
        golden["vocab_size_with_added"].as_u64().unwrap()
    );
    let cases = golden["cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    let mut checked = 0;
    for case in cases {
        let index = &case["index"];
        let text = case["text"].as_str().unwrap();
        assert_eq!(text.len() as u64, case["utf8_len"].as_u64().unwrap());
        let with_special = tok.encode_with_special_tokens(text, true).unwrap();
        assert_eq!(with_special, ids(&case["ids"]), "case {index}: ids");
        let without = tok.encode_with_special_tokens(text, false).unwrap();
        assert_eq!(
            without,
            ids(&case["ids_no_special"]),
            "case {index}: ids_no_special"
        );
        // The processor's own encode path (no post-processor specials) must agree too.
        assert_eq!(tok.encode(text).unwrap(), without, "case {index}: encode");
        let decoded = tok.inner().decode(&with_special, false).unwrap();
        assert_eq!(
            decoded,
            case["decoded"].as_str().unwrap(),
            "case {index}: decoded"
        );
        let decoded_skip = tok.inner().decode(&with_special, true).unwrap();
        assert_eq!(
            decoded_skip,
            case["decoded_skip_special"].as_str().unwrap(),
            "case {index}: decoded_skip_special"
        );
        assert_eq!(decoded == text, case["lossless"].as_bool().unwrap());
        checked += 1;
    }
    eprintln!("tokenizer_golden: {checked} cases checked");
    assert_eq!(checked, cases.len());
}

/// The prompt of `smollm2/golden.json` rendered from chat messages (the one with `messages`).
fn chat_prompt() -> Value {
    let golden = read_json(&smollm2_dir().join("golden.json"));
    let chats: Vec<&Value> = golden["prompts"]
        .as_array()
        .expect("prompts")
        .iter()
        .filter(|p| p["messages"].is_array())
        .collect();
    assert_eq!(
        chats.len(),
        1,
        "smollm2/golden.json should hold exactly one prompt with `messages`"
    );
    chats[0].clone()
}

fn messages(value: &Value) -> Vec<Message> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect()
}

#[test]
fn chat_template_renders_and_tokenizes_like_transformers() {
    let chat = chat_prompt();
    let tok = smollm2();
    let msgs = messages(&chat["messages"]);
    let rendered = tok.render_messages(&msgs, false, false).unwrap().unwrap();
    assert_eq!(rendered, chat["text"].as_str().unwrap());
    assert_eq!(tok.encode(&rendered).unwrap(), ids(&chat["input_ids"]));
}

#[test]
fn conversational_pair_concatenates_to_the_golden_ids() {
    // Prompt = the turns before the last assistant turn, chosen = that turn: prompt ids +
    // chosen ids, tokenized separately, must equal transformers' ids of the whole rendered
    // conversation (TRL's rule: the completion is the rendering minus the prompt rendering).
    let chat = chat_prompt();
    let text = chat["text"].as_str().expect("text");
    let msgs = messages(&chat["messages"]);
    let split = msgs
        .iter()
        .rposition(|m| m.role == "assistant")
        .expect("an assistant turn in the chat prompt");
    assert_eq!(
        split,
        msgs.len() - 1,
        "the assistant turn is the last message"
    );
    // A rejected answer that is not the chosen one.
    let rejected_content = format!("{} (rejected)", msgs[split].content);
    let record = PreferenceRecord {
        origin: RecordOrigin::in_memory(0),
        body: PairBody::Conversational {
            prompt: msgs[..split].to_vec(),
            chosen: msgs[split..].to_vec(),
            rejected: vec![Message::new("assistant", &rejected_content)],
        },
        tools: None,
        chat_template_kwargs: Vec::new(),
    };
    let pair = processor(unlimited()).tokenize_record(&record).unwrap();
    let mut joined = pair.prompt_ids.clone();
    joined.extend(&pair.chosen_ids);
    assert_eq!(joined, ids(&chat["input_ids"]));
    // The completion starts exactly at the assistant's content (the turn header belongs to the
    // prompt, as the generation prompt) and runs to the end of the golden text; the rejected
    // completion is its content followed by the same tail of the template.
    let content = msgs[split].content.as_str();
    let start = text
        .rfind(content)
        .expect("the assistant content appears in the golden text");
    let tail = &text[start + content.len()..];
    let tok = smollm2();
    assert_eq!(pair.chosen_ids, tok.encode(&text[start..]).unwrap());
    assert_eq!(
        pair.rejected_ids,
        tok.encode(&format!("{rejected_content}{tail}")).unwrap()
    );
}

#[test]
fn special_tokens_match_the_config() {
    // Expected values come from the checkpoint's own files: the token strings named in
    // tokenizer_config.json, their ids in tokenizer.json, and the model config's ids.
    let dir = smollm2_dir();
    let tokenizer_config = read_json(&dir.join("tokenizer_config.json"));
    let tokenizer_json = read_json(&dir.join("tokenizer.json"));
    let model_config = read_json(&dir.join("config.json"));
    let added = tokenizer_json["added_tokens"]
        .as_array()
        .expect("added_tokens");
    let id_of = |key: &str| -> Option<u32> {
        let content = tokenizer_config[key].as_str()?;
        let token = added
            .iter()
            .find(|t| t["content"] == content)
            .unwrap_or_else(|| panic!("{key} {content:?} is not an added token"));
        Some(u32::try_from(token["id"].as_u64().expect("id")).expect("u32"))
    };
    let config_id = |key: &str| model_config[key].as_u64().map(|id| id as u32);

    let info = smollm2().info().clone();
    let base = tokenizer_json["model"]["vocab"]
        .as_object()
        .expect("vocab")
        .len();
    let added_beyond_base = added
        .iter()
        .filter(|t| t["id"].as_u64().expect("id") as usize >= base)
        .count();
    assert_eq!(info.vocab_size, base + added_beyond_base, "vocab size");
    assert_eq!(
        Some(info.vocab_size as u64),
        model_config["vocab_size"].as_u64(),
        "tokenizer and model agree on the vocabulary"
    );
    assert_eq!(info.bos_token_id(), id_of("bos_token"), "bos");
    assert_eq!(info.eos_token_id(), id_of("eos_token"), "eos");
    assert_eq!(info.pad_token_id(), id_of("pad_token"), "pad");
    assert_eq!(info.unk.as_ref().map(|t| t.id), id_of("unk_token"), "unk");
    // The model config names the same ids (SmolLM2: bos 1, eos 2, pad 2).
    assert_eq!(info.bos_token_id(), config_id("bos_token_id"), "config bos");
    assert_eq!(info.eos_token_id(), config_id("eos_token_id"), "config eos");
    assert_eq!(info.pad_token_id(), config_id("pad_token_id"), "config pad");
    assert_eq!(
        info.add_bos_token,
        tokenizer_config["add_bos_token"].as_bool().unwrap_or(false)
    );
    assert_eq!(
        info.has_chat_template,
        tokenizer_config["chat_template"].is_string()
    );
    assert!(info.differences(&info).is_empty());
}
