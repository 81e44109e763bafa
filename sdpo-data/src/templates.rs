//! [`ChatTemplates`]: a tokenizer's chat templates as transformers 5 loads and picks them: a
//! default one and named ones (`additional_chat_templates/NAME.jinja`, or a config list of
//! `{name, template}`), the `tool_use` one chosen when a conversation comes with tools.

use std::path::Path;

use minijinja::{Error, ErrorKind};
use serde_json::Value;

use crate::error::DataError;
use crate::template::{ChatTemplate, TemplateTokens};

/// The directory of named templates next to `tokenizer_config.json`.
pub const ADDITIONAL_TEMPLATES_DIR: &str = "additional_chat_templates";

/// A tokenizer's chat templates: none, one, or several by name.
#[derive(Debug, Clone, Default)]
pub struct ChatTemplates {
    tokens: TemplateTokens,
    /// `(name, template)`; a single unnamed template is stored as `default`.
    named: Vec<(String, ChatTemplate)>,
}

impl ChatTemplates {
    /// One template, as `default`.
    pub fn single(template: ChatTemplate) -> Self {
        Self {
            tokens: template.tokens().clone(),
            named: vec![("default".into(), template)],
        }
    }

    /// Loads the templates of the tokenizer directory `dir`: `chat_template.jinja` and
    /// `additional_chat_templates/*.jinja` when present (they take priority, as in
    /// transformers), else the config's `chat_template` (a string, or a list of
    /// `{name, template}`).
    ///
    /// # Errors
    /// [`DataError::Io`], [`DataError::TokenizerConfig`] (a malformed `chat_template` entry),
    /// [`DataError::TemplateSyntax`].
    pub fn load(
        dir: &Path,
        config: &Value,
        config_path: &Path,
        tokens: &TemplateTokens,
    ) -> Result<Self, DataError> {
        let mut named = Vec::new();
        let compile = |source: &str, path: &Path| ChatTemplate::new(source, tokens.clone(), path);
        let read = |path: &Path| crate::error::read_text(path);
        let jinja_path = dir.join("chat_template.jinja");
        if jinja_path.is_file() {
            named.push((
                "default".to_string(),
                compile(&read(&jinja_path)?, &jinja_path)?,
            ));
        }
        let extra_dir = dir.join(ADDITIONAL_TEMPLATES_DIR);
        if extra_dir.is_dir() {
            let mut paths: Vec<_> = std::fs::read_dir(&extra_dir)
                .map_err(|source| DataError::Io {
                    path: extra_dir.clone(),
                    source,
                })?
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|p| p.extension().is_some_and(|e| e == "jinja"))
                .collect();
            paths.sort();
            for path in paths {
                let name = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                named.push((name, compile(&read(&path)?, &path)?));
            }
        }
        if named.is_empty() {
            for (name, source) in config_templates(config, config_path)? {
                named.push((name, compile(&source, config_path)?));
            }
        }
        Ok(Self {
            tokens: tokens.clone(),
            named,
        })
    }

    /// Whether there is no template at all.
    pub fn is_empty(&self) -> bool {
        self.named.is_empty()
    }

    /// The special tokens the templates see.
    pub fn tokens(&self) -> &TemplateTokens {
        &self.tokens
    }

    /// The `default` template, if there is one.
    pub fn default_template(&self) -> Option<&ChatTemplate> {
        self.get("default")
    }

    /// The template named `name`.
    pub fn get(&self, name: &str) -> Option<&ChatTemplate> {
        self.named.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// The template names, in loading order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.named.iter().map(|(n, _)| n.as_str())
    }

    /// transformers' `get_chat_template`: with tools, the `tool_use` template if there is one,
    /// else the `default` one (a single template is always it); `None` without templates.
    ///
    /// # Errors
    /// An `InvalidOperation` error when there are several templates and no `default`.
    pub fn select(&self, has_tools: bool) -> Option<Result<&ChatTemplate, Error>> {
        if self.named.is_empty() {
            return None;
        }
        if self.named.len() == 1 {
            return Some(Ok(&self.named[0].1));
        }
        let pick = has_tools
            .then(|| self.get("tool_use"))
            .flatten()
            .or_else(|| self.get("default"));
        Some(pick.ok_or_else(|| {
            let names: Vec<&str> = self.names().collect();
            Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "the tokenizer has several chat templates and none named `default` ({})",
                    names.join(", ")
                ),
            )
        }))
    }
}

/// `chat_template` from the config: a string (`default`), or HF's list of `{name, template}`.
fn config_templates(
    config: &Value,
    config_path: &Path,
) -> Result<Vec<(String, String)>, DataError> {
    let bad = |reason: &str| DataError::TokenizerConfig {
        path: config_path.to_path_buf(),
        field: "chat_template".into(),
        reason: reason.into(),
    };
    match config.get("chat_template") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![("default".into(), s.clone())]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                match (
                    item.get("name").and_then(Value::as_str),
                    item.get("template").and_then(Value::as_str),
                ) {
                    (Some(name), Some(template)) => Ok((name.to_string(), template.to_string())),
                    _ => Err(bad(
                        "each entry of the list needs a string `name` and `template`",
                    )),
                }
            })
            .collect(),
        Some(_) => Err(bad("expected a string or a list of {name, template}")),
    }
}
