//! Hub repository ids (`owner/name`, `owner/name@revision`) and what a configuration value that
//! is not a local path has to look like to be one.

use crate::error::HubError;

/// A model or a dataset repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RepoKind {
    /// A model (or adapter, or tokenizer) repository.
    Model,
    /// A dataset repository (`datasets/` in URLs and `datasets--` in the cache).
    Dataset,
}

impl RepoKind {
    /// hf-hub's name for the kind.
    pub(crate) fn hf(self) -> hf_hub::RepoType {
        match self {
            RepoKind::Model => hf_hub::RepoType::Model,
            RepoKind::Dataset => hf_hub::RepoType::Dataset,
        }
    }

    /// `model` or `dataset`, for messages.
    pub fn name(self) -> &'static str {
        match self {
            RepoKind::Model => "model",
            RepoKind::Dataset => "dataset",
        }
    }
}

/// A repository at a revision.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoRef {
    /// `owner/name` (or a legacy single-name id such as `gpt2`).
    pub id: String,
    /// A branch, a tag or a commit id; `main` unless given.
    pub revision: String,
    /// Model or dataset.
    pub kind: RepoKind,
}

/// The default branch of a Hub repository.
pub const DEFAULT_REVISION: &str = "main";

impl RepoRef {
    /// Parses `spec`: `owner/name` or `owner/name@revision`. `revision` (a configuration key
    /// such as `model_revision`) applies when the id carries none; both at once must agree.
    ///
    /// # Errors
    /// [`HubError::InvalidId`] when `spec` is not a valid repository id (the rules of
    /// `huggingface_hub.utils.validate_repo_id`: at most one `/`, at most 96 characters, only
    /// letters, digits, `-`, `_`, `.`, no `--` or `..`, not starting or ending with `-` or
    /// `.`), or when the two revisions differ.
    pub fn parse(spec: &str, revision: Option<&str>, kind: RepoKind) -> Result<Self, HubError> {
        let invalid = |reason: String| HubError::InvalidId {
            spec: spec.to_string(),
            reason,
        };
        let (id, at) = match spec.split_once('@') {
            Some((_, "")) => {
                return Err(invalid("the revision after `@` is empty".into()));
            }
            Some((id, rev)) => (id, Some(rev)),
            None => (spec, None),
        };
        validate_id(id).map_err(invalid)?;
        let revision = match (at, revision) {
            (Some(a), Some(b)) if a != b && b != DEFAULT_REVISION => {
                return Err(invalid(format!(
                    "the id asks for revision `{a}` and the revision key for `{b}`"
                )));
            }
            (Some(a), _) => a,
            (None, Some(b)) => b,
            (None, None) => DEFAULT_REVISION,
        };
        Ok(Self {
            id: id.to_string(),
            revision: revision.to_string(),
            kind,
        })
    }

    /// hf-hub's description of the repository at this revision.
    pub(crate) fn hf(&self) -> hf_hub::Repo {
        hf_hub::Repo::with_revision(self.id.clone(), self.kind.hf(), self.revision.clone())
    }

    /// The cache folder name, `models--owner--name` or `datasets--owner--name` (hf-hub's).
    pub fn folder_name(&self) -> String {
        self.hf().folder_name()
    }
}

impl std::fmt::Display for RepoRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} `{}`", self.kind.name(), self.id)?;
        if self.revision != DEFAULT_REVISION {
            write!(f, " at `{}`", self.revision)?;
        }
        Ok(())
    }
}

/// Whether `revision` is a full commit id (40 hex digits).
pub fn is_commit_id(revision: &str) -> bool {
    revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit())
}

fn validate_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("it is empty".into());
    }
    if id.len() > 96 {
        return Err(format!("it has {} characters; at most 96", id.len()));
    }
    let parts: Vec<&str> = id.split('/').collect();
    if parts.len() > 2 {
        return Err("a Hub id has at most one `/` (`owner/name`)".into());
    }
    for part in parts {
        if part.is_empty() {
            return Err("the owner and the name must not be empty".into());
        }
        if let Some(c) = part
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(format!(
                "`{c}` is not allowed (letters, digits, `-`, `_` and `.` only)"
            ));
        }
        if part.starts_with(['-', '.']) || part.ends_with(['-', '.']) {
            return Err("a part may not start or end with `-` or `.`".into());
        }
    }
    if id.contains("--") || id.contains("..") {
        return Err("`--` and `..` are not allowed".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_revisions_and_their_errors() {
        let r = RepoRef::parse("Qwen/Qwen2-0.5B-Instruct", None, RepoKind::Model).unwrap();
        assert_eq!(
            (r.id.as_str(), r.revision.as_str()),
            ("Qwen/Qwen2-0.5B-Instruct", "main")
        );
        assert_eq!(r.folder_name(), "models--Qwen--Qwen2-0.5B-Instruct");
        let r = RepoRef::parse(
            "trl-lib/ultrafeedback_binarized@v1",
            None,
            RepoKind::Dataset,
        )
        .unwrap();
        assert_eq!(r.revision, "v1");
        assert_eq!(
            r.folder_name(),
            "datasets--trl-lib--ultrafeedback_binarized"
        );
        let r = RepoRef::parse("gpt2", Some("abc"), RepoKind::Model).unwrap();
        assert_eq!(r.revision, "abc");
        // The id's revision and the key's default agree; two different ones do not.
        assert!(RepoRef::parse("a/b@dev", Some("main"), RepoKind::Model).is_ok());
        for bad in [
            "a/b/c",
            "./model",
            "a//b",
            "a/b@",
            "-a/b",
            "a--b/c",
            "a/b c",
            "/abs/path",
        ] {
            let err = RepoRef::parse(bad, None, RepoKind::Model).unwrap_err();
            assert!(matches!(err, HubError::InvalidId { .. }), "{bad}: {err}");
        }
        let err = RepoRef::parse("a/b@dev", Some("v2"), RepoKind::Model).unwrap_err();
        assert!(
            err.to_string().contains("`dev`") && err.to_string().contains("`v2`"),
            "{err}"
        );
        assert!(is_commit_id(&"a".repeat(40)) && !is_commit_id("main"));
    }
}
