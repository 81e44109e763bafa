//! Integration tests of sdpo-data, built as one binary.

mod bad_inputs;
mod collation;
mod columnar;
mod common;
mod formats;
mod golden;
mod properties;
