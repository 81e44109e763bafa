//! [`PreferenceTokenizer`]: a HF tokenizer directory (`tokenizer.json`, `tokenizer_config.json`,
//! optional `chat_template.jinja` and `additional_chat_templates/*.jinja`) loaded offline, and
//! [`TokenizerInfo`], the facts about it that must agree between a policy and its reference
//! model.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tokenizers::Tokenizer;

use crate::error::DataError;
use crate::template::{ChatTemplate, RenderInput, TemplateTokens};
use crate::templates::ChatTemplates;

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

/// A tokenizer with its special tokens and chat templates, loaded from a HF directory.
#[derive(Debug, Clone)]
pub struct PreferenceTokenizer {
    tokenizer: Tokenizer,
    info: TokenizerInfo,
    templates: ChatTemplates,
    dir: PathBuf,
}

impl PreferenceTokenizer {
    /// Loads `dir/tokenizer.json` and `dir/tokenizer_config.json`. The chat templates are, as
    /// transformers 5 loads them, `dir/chat_template.jinja` (the default) and
    /// `dir/additional_chat_templates/NAME.jinja` (named ones) when those files exist, else
    /// `chat_template` from the config (a string, or a list of `{name, template}`). Never
    /// touches the network.
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
            let text = crate::error::read_text(&config_path)?;
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
        let tokens = template_tokens(&config);
        let templates = ChatTemplates::load(dir, &config, &config_path, &tokens)?;
        let info = TokenizerInfo {
            vocab_size: tokenizer.get_vocab_size(true),
            bos,
            eos,
            pad,
            unk,
            add_bos_token,
            has_chat_template: !templates.is_empty(),
        };
        Ok(Self {
            tokenizer,
            info,
            templates,
            dir: dir.to_path_buf(),
        })
    }

    /// Replaces the chat templates with one (e.g. a user-supplied `--chat-template` file, or
    /// `tokenizer.chat_template = ...` in Python).
    ///
    /// # Errors
    /// [`DataError::TemplateSyntax`] when `source` does not parse.
    pub fn with_chat_template(mut self, source: &str) -> Result<Self, DataError> {
        let tokens = self.templates.tokens().clone();
        let template =
            ChatTemplate::new(source, tokens, &self.dir.join("<chat template override>"))?;
        self.templates = ChatTemplates::single(template);
        self.info.has_chat_template = true;
        Ok(self)
    }

    /// As [`Self::with_chat_template`] for an already compiled template (one made with
    /// [`ChatTemplate::with_clock`], for example).
    pub fn with_compiled_chat_template(mut self, template: ChatTemplate) -> Self {
        self.templates = ChatTemplates::single(template);
        self.info.has_chat_template = true;
        self
    }

    /// The special tokens a chat template sees (those `tokenizer_config.json` names).
    pub fn template_tokens(&self) -> &TemplateTokens {
        self.templates.tokens()
    }

    /// Sizes and special tokens.
    pub fn info(&self) -> &TokenizerInfo {
        &self.info
    }

    /// The directory this was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The default chat template, if any.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.templates.default_template()
    }

    /// All chat templates (the default and named ones).
    pub fn chat_templates(&self) -> &ChatTemplates {
        &self.templates
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

    /// Renders a conversation with the chat template transformers would pick (the `tool_use`
    /// template when there are tools and one exists, else the default; see
    /// [`ChatTemplate::render`]); `None` when the tokenizer has no template.
    pub fn apply_chat_template(
        &self,
        input: &RenderInput<'_>,
    ) -> Option<Result<String, minijinja::Error>> {
        self.templates
            .select(input.tools.is_some())
            .map(|template| template.and_then(|t| t.render(input)))
    }

    /// [`Self::apply_chat_template`] on a bare conversation (no tools, no template arguments).
    pub fn render_messages(
        &self,
        messages: &[crate::record::Message],
        add_generation_prompt: bool,
        continue_final_message: bool,
    ) -> Option<Result<String, minijinja::Error>> {
        self.apply_chat_template(&RenderInput {
            messages,
            add_generation_prompt,
            continue_final_message,
            ..RenderInput::default()
        })
    }
}

/// transformers' `special_tokens_map`: the named special tokens the config sets, as strings.
fn template_tokens(config: &Value) -> TemplateTokens {
    let token = |key: &str| match config.get(key) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Object(o)) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    };
    TemplateTokens {
        bos_token: token("bos_token"),
        eos_token: token("eos_token"),
        unk_token: token("unk_token"),
        sep_token: token("sep_token"),
        pad_token: token("pad_token"),
        cls_token: token("cls_token"),
        mask_token: token("mask_token"),
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
