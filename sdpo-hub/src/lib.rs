//! Hugging Face Hub ids for sdpo-rs, resolved as Python's `huggingface_hub` resolves them and
//! into the same cache, so a model downloaded by `transformers` is found here and the other
//! way round.
//!
//! [`Resolver::resolve`] turns a configuration value into a local directory:
//!
//! 1. a local path of that name, if it exists, used as written;
//! 2. else a Hub id (`owner/name`, `owner/name@revision`) found in the Hugging Face cache
//!    (`HF_HUB_CACHE`, `HF_HOME/hub`, `XDG_CACHE_HOME/huggingface/hub`,
//!    `~/.cache/huggingface/hub`; `refs/<revision>` to `snapshots/<commit>/`);
//! 3. else, unless `HF_HUB_OFFLINE=1`, the files the [`Role`] needs downloaded from
//!    `HF_ENDPOINT` (with `HF_TOKEN`) into that cache: resumed from a partial file after a
//!    kill, retried when a transfer breaks off, and checked against the size and checksum the
//!    Hub's headers announce before anything is put in the cache.
//!
//! An error lists every place looked at and says whether the run is offline. Progress goes to
//! a [`DownloadProgress`]; this crate prints nothing.
//!
//! ```no_run
//! use sdpo_hub::{HubSettings, NoProgress, Resolver, Role};
//! let mut resolver = Resolver::new(HubSettings::from_env());
//! let model = resolver.resolve("HuggingFaceTB/SmolLM2-135M-Instruct", None, Role::Model, &mut NoProgress)?;
//! println!("{}", model.path.display()); // .../models--HuggingFaceTB--SmolLM2-135M-Instruct/snapshots/<commit>
//! # Ok::<(), sdpo_hub::HubError>(())
//! ```
//!
//! Hugging Face's `hf-hub` crate provides the repository listing (`Api::info`), the URL scheme
//! and the cache folder names; the cache discovery, offline mode, token variables, resumable
//! verified transfers and the fallbacks are this crate's (`docs/hub.md` says why).

#![warn(missing_docs)]

pub mod cache;
mod checksum;
pub mod client;
pub mod download;
mod error;
mod progress;
mod repo;
mod resolve;
mod role;
mod settings;

pub use error::{HubError, Looked};
pub use progress::{DownloadProgress, NoProgress};
pub use repo::{DEFAULT_REVISION, RepoKind, RepoRef, is_commit_id};
pub use resolve::{Origin, Resolved, Resolver};
pub use role::Role;
pub use settings::{DEFAULT_ENDPOINT, HubSettings};
