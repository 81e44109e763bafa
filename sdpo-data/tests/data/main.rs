//! Integration tests of sdpo-data, built as one binary.

mod bad_inputs;
mod chat_templates;
mod collation;
mod columnar;
mod common;
mod formats;
mod golden;
mod hostile;
mod hub_dataset;
mod pipelines;
mod properties;
mod trl_v1;
