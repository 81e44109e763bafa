//! Parity with the fixtures produced by Python `tokenizers` and transformers.

use serde_json::Value;

use crate::common::{fixtures_dir, processor, smollm2, smollm2_dir, unlimited};
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

fn chat_prompt() -> Value {
    let text = std::fs::read_to_string(smollm2_dir().join("golden.json")).unwrap();
    let golden: Value = serde_json::from_str(&text).unwrap();
    golden["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "chat")
        .expect("a `chat` prompt in smollm2/golden.json")
        .clone()
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
    let rendered = tok
        .apply_chat_template(&msgs, false, false)
        .unwrap()
        .unwrap();
    assert_eq!(rendered, chat["text"].as_str().unwrap());
    assert_eq!(tok.encode(&rendered).unwrap(), ids(&chat["input_ids"]));
}

#[test]
fn conversational_pair_concatenates_to_the_golden_ids() {
    // Prompt = the user turn, chosen = the assistant turn: prompt ids + chosen ids, tokenized
    // separately, must equal transformers' ids of the whole rendered conversation.
    let chat = chat_prompt();
    let msgs = messages(&chat["messages"]);
    let split = msgs.iter().position(|m| m.role == "assistant").unwrap();
    let record = PreferenceRecord {
        origin: RecordOrigin::in_memory(0),
        body: PairBody::Conversational {
            prompt: msgs[..split].to_vec(),
            chosen: msgs[split..].to_vec(),
            rejected: vec![Message::new("assistant", "7.")],
        },
    };
    let pair = processor(unlimited()).tokenize_record(&record).unwrap();
    let mut joined = pair.prompt_ids.clone();
    joined.extend(&pair.chosen_ids);
    assert_eq!(joined, ids(&chat["input_ids"]));
    // The completion is exactly the assistant turn: "2 + 3 = 5.<|im_end|>\n".
    let tok = smollm2();
    assert_eq!(
        pair.chosen_ids,
        tok.encode("2 + 3 = 5.<|im_end|>\n").unwrap()
    );
    assert_eq!(pair.rejected_ids, tok.encode("7.<|im_end|>\n").unwrap());
}

#[test]
fn special_tokens_match_the_config() {
    let info = smollm2().info().clone();
    assert_eq!(info.vocab_size, 49152);
    assert_eq!(info.bos_token_id(), Some(1));
    assert_eq!(info.eos_token_id(), Some(2));
    assert_eq!(info.pad_token_id(), Some(2));
    assert_eq!(info.unk.as_ref().map(|t| t.id), Some(0));
    assert!(!info.add_bos_token);
    assert!(info.has_chat_template);
    assert!(info.differences(&info).is_empty());
}
