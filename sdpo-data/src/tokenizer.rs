//! [`PreferenceTokenizer`]: a HF tokenizer directory (`tokenizer.json`, `tokenizer_config.json`,
//! optional `chat_template.jinja`) loaded offline, and [`TokenizerInfo`], the facts about it
//! that must agree between a policy and its reference model.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tokenizers::Tokenizer;

use crate::error::DataError;
use crate::record::Message;
use crate::template::{ChatTemplate, TemplateTokens};

/// One special token: its text and its id in the vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpecialToken {
    /// The token text, e.g. `<|im_end|>`.
    pub content: String,
    /// Its id.
    pub id: u32,
}

/// What a tokenizer is, as far as training needs to know: sizes and special tokens.
///
/// Two models can share preference batches only if their `TokenizerInfo`s agree;
/// [`TokenizerInfo::differences`] says where they do not.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenizerInfo {
    /// Vocabulary size including added tokens.
    pub vocab_size: usize,
    /// `bos_token` from `tokenizer_config.json`.
    pub bos: Option<SpecialToken>,
    /// `eos_token` from `tokenizer_config.json`.
    pub eos: Option<SpecialToken>,
    /// `pad_token` from `tokenizer_config.json` (falls back to `eos` when absent, as TRL does).
    pub pad: Option<SpecialToken>,
    /// `unk_token` from `tokenizer_config.json`.
    pub unk: Option<SpecialToken>,
    /// `add_bos_token` (default `false`): prompts start with BOS.
    pub add_bos_token: bool,
    /// Whether a chat template is available.
    pub has_chat_template: bool,
}

impl TokenizerInfo {
    /// BOS id, if any.
    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos.as_ref().map(|t| t.id)
    }

    /// EOS id, if any.
    pub fn eos_token_id(&self) -> Option<u32> {
        self.eos.as_ref().map(|t| t.id)
    }

    /// Padding id, if any (pad, else eos).
    pub fn pad_token_id(&self) -> Option<u32> {
        self.pad.as_ref().map(|t| t.id)
    }

    /// One line per fact that differs between `self` and `other` (empty when they agree), e.g.
    /// `eos: <|im_end|> (2) vs </s> (2)`.
    pub fn differences(&self, other: &TokenizerInfo) -> Vec<String> {
        fn show(token: &Option<SpecialToken>) -> String {
            match token {
                Some(t) => format!("{} ({})", t.content, t.id),
                None => "none".into(),
            }
        }
        let mut out = Vec::new();
        if self.vocab_size != other.vocab_size {
            out.push(format!(
                "vocab_size: {} vs {}",
                self.vocab_size, other.vocab_size
            ));
        }
        for (name, a, b) in [
            ("bos", &self.bos, &other.bos),
            ("eos", &self.eos, &other.eos),
            ("pad", &self.pad, &other.pad),
            ("unk", &self.unk, &other.unk),
        ] {
            if a != b {
                out.push(format!("{name}: {} vs {}", show(a), show(b)));
            }
        }
        if self.add_bos_token != other.add_bos_token {
            out.push(format!(
                "add_bos_token: {} vs {}",
                self.add_bos_token, other.add_bos_token
            ));
        }
        out
    }
}

/// A tokenizer with its special tokens and chat template, loaded from a HF directory.
#[derive(Debug)]
pub struct PreferenceTokenizer {
    tokenizer: Tokenizer,
    info: TokenizerInfo,
    template: Option<ChatTemplate>,
    dir: PathBuf,
}

impl PreferenceTokenizer {
    /// Loads `dir/tokenizer.json` and `dir/tokenizer_config.json`. The chat template is
    /// `dir/chat_template.jinja` when that file exists (transformers 5 prefers it), else
    /// `chat_template` from the config (a string, or a list of `{name, template}` from which
    /// `default` is taken). Never touches the network.
    ///
    /// # Errors
    /// [`DataError::Io`], [`DataError::TokenizerLoad`], [`DataError::TokenizerConfig`] (bad
    /// token entry, token missing from the vocabulary) or [`DataError::TemplateSyntax`].
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, DataError> {
        let dir = dir.as_ref();
        let tokenizer_path = dir.join("tokenizer.json");
        let tokenizer =
            Tokenizer::from_file(&tokenizer_path).map_err(|source| DataError::TokenizerLoad {
                path: tokenizer_path.clone(),
                source,
            })?;
        let config_path = dir.join("tokenizer_config.json");
        let config: Value = if config_path.exists() {
            let text = std::fs::read_to_string(&config_path).map_err(|source| DataError::Io {
                path: config_path.clone(),
                source,
            })?;
            serde_json::from_str(&text).map_err(|err| DataError::TokenizerConfig {
                path: config_path.clone(),
                field: "<file>".into(),
                reason: format!("not valid JSON: {err}"),
            })?
        } else {
            Value::Object(Default::default())
        };
        let token = |key: &str| special_token(&tokenizer, &config, key, &config_path);
        let bos = token("bos_token")?;
        let eos = token("eos_token")?;
        let pad = token("pad_token")?.or_else(|| eos.clone());
        let unk = token("unk_token")?;
        let add_bos_token = match config.get("add_bos_token") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(DataError::TokenizerConfig {
                    path: config_path,
                    field: "add_bos_token".into(),
                    reason: "expected true or false".into(),
                });
            }
        };
        let tokens = TemplateTokens {
            bos_token: bos.as_ref().map(|t| t.content.clone()),
            eos_token: eos.as_ref().map(|t| t.content.clone()),
            pad_token: pad.as_ref().map(|t| t.content.clone()),
            unk_token: unk.as_ref().map(|t| t.content.clone()),
        };
        let jinja_path = dir.join("chat_template.jinja");
        let template = if jinja_path.exists() {
            let source = std::fs::read_to_string(&jinja_path).map_err(|source| DataError::Io {
                path: jinja_path.clone(),
                source,
            })?;
            Some(ChatTemplate::new(&source, tokens, &jinja_path)?)
        } else {
            match config_template(&config, &config_path)? {
                Some(source) => Some(ChatTemplate::new(&source, tokens, &config_path)?),
                None => None,
            }
        };
        let info = TokenizerInfo {
            vocab_size: tokenizer.get_vocab_size(true),
            bos,
            eos,
            pad,
            unk,
            add_bos_token,
            has_chat_template: template.is_some(),
        };
        Ok(Self {
            tokenizer,
            info,
            template,
            dir: dir.to_path_buf(),
        })
    }

    /// Replaces the chat template (e.g. a user-supplied `--chat-template` file).
    ///
    /// # Errors
    /// [`DataError::TemplateSyntax`] when `source` does not parse.
    pub fn with_chat_template(mut self, source: &str) -> Result<Self, DataError> {
        let tokens = TemplateTokens {
            bos_token: self.info.bos.as_ref().map(|t| t.content.clone()),
            eos_token: self.info.eos.as_ref().map(|t| t.content.clone()),
            pad_token: self.info.pad.as_ref().map(|t| t.content.clone()),
            unk_token: self.info.unk.as_ref().map(|t| t.content.clone()),
        };
        self.template = Some(ChatTemplate::new(
            source,
            tokens,
            &self.dir.join("<chat template override>"),
        )?);
        self.info.has_chat_template = true;
        Ok(self)
    }

    /// Sizes and special tokens.
    pub fn info(&self) -> &TokenizerInfo {
        &self.info
    }

    /// The directory this was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The chat template, if any.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.template.as_ref()
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The text of `ids`, special tokens included (`decode(ids, skip_special_tokens=False)`);
    /// one id at a time gives each token's own text (part of a character for byte-level
    /// tokens that split one).
    ///
    /// # Errors
    /// The tokenizer's error (an id outside the vocabulary).
    pub fn decode(&self, ids: &[u32]) -> Result<String, tokenizers::Error> {
        self.tokenizer.decode(ids, false)
    }

    /// Token ids of `text`, without the post-processor's special tokens (BOS is this crate's
    /// decision, see [`TokenizerInfo::add_bos_token`]); special-token strings inside `text`
    /// (`<|im_start|>`) become their ids.
    ///
    /// # Errors
    /// The tokenizer's error.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, tokenizers::Error> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.tokenizer.encode_fast(text, false)?.get_ids().to_vec())
    }

    /// Token ids of `text` with `add_special_tokens` as given (what Python's
    /// `tokenizer(text, add_special_tokens=...)` returns).
    ///
    /// # Errors
    /// The tokenizer's error.
    pub fn encode_with_special_tokens(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> Result<Vec<u32>, tokenizers::Error> {
        Ok(self
            .tokenizer
            .encode_fast(text, add_special_tokens)?
            .get_ids()
            .to_vec())
    }

    /// Renders a conversation with the chat template (see [`ChatTemplate::render`]); `None`
    /// when the tokenizer has no template.
    pub fn apply_chat_template(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        continue_final_message: bool,
    ) -> Option<Result<String, minijinja::Error>> {
        self.template
            .as_ref()
            .map(|t| t.render(messages, add_generation_prompt, continue_final_message))
    }
}

/// A special token entry: a string, or an AddedToken object `{"content": ...}`; null or absent
/// means none. The text must be in the vocabulary.
fn special_token(
    tokenizer: &Tokenizer,
    config: &Value,
    key: &str,
    config_path: &Path,
) -> Result<Option<SpecialToken>, DataError> {
    let bad = |reason: String| DataError::TokenizerConfig {
        path: config_path.to_path_buf(),
        field: key.into(),
        reason,
    };
    let content = match config.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => match o.get("content") {
            Some(Value::String(s)) => s.clone(),
            _ => return Err(bad("an object entry needs a string `content`".into())),
        },
        Some(_) => return Err(bad("expected a string or {\"content\": ...}".into())),
    };
    match tokenizer.token_to_id(&content) {
        Some(id) => Ok(Some(SpecialToken { content, id })),
        None => Err(bad(format!(
            "`{content}` is not in tokenizer.json's vocabulary"
        ))),
    }
}

/// `chat_template` as a string, or HF's named list (the `default` entry).
fn config_template(config: &Value, config_path: &Path) -> Result<Option<String>, DataError> {
    let bad = |reason: &str| DataError::TokenizerConfig {
        path: config_path.to_path_buf(),
        field: "chat_template".into(),
        reason: reason.into(),
    };
    match config.get("chat_template") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Array(items)) => {
            for item in items {
                if item.get("name").and_then(Value::as_str) == Some("default") {
                    return match item.get("template") {
                        Some(Value::String(s)) => Ok(Some(s.clone())),
                        _ => Err(bad("the `default` entry has no string `template`")),
                    };
                }
            }
            Err(bad("a list of named templates without a `default` entry"))
        }
        Some(_) => Err(bad("expected a string or a list of {name, template}")),
    }
}
