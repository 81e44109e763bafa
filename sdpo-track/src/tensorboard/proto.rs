//! The protocol-buffer messages of a TensorBoard event file, declared for `prost` with the
//! field numbers of TensorFlow's `event.proto`, `summary.proto`, `tensor.proto`,
//! `tensor_shape.proto` and `types.proto` (as shipped in TensorBoard's `compat/proto`) and of
//! TensorBoard's `plugins/custom_scalar/layout.proto`. Only the fields sdpo-rs writes are
//! declared; a reader skips the others, as protobuf readers do.

/// One record of an event file (`tensorflow.Event`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    /// Seconds since the Unix epoch.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    /// The global step.
    #[prost(int64, tag = "2")]
    pub step: i64,
    /// What the event holds.
    #[prost(oneof = "event::What", tags = "3, 5")]
    pub what: Option<event::What>,
}

/// The `what` oneof of [`Event`].
pub mod event {
    /// What an event holds.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum What {
        /// The first event of a file: `"brain.Event:2"`.
        #[prost(string, tag = "3")]
        FileVersion(String),
        /// Summaries (scalars, text, plugin data).
        #[prost(message, tag = "5")]
        Summary(super::Summary),
    }
}

/// `tensorflow.Summary`: a list of tagged values.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    /// The values.
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<summary::Value>,
}

/// The nested messages of [`Summary`].
pub mod summary {
    /// `tensorflow.Summary.Value`: one tagged value.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Value {
        /// The tag (`train/loss`, ...).
        #[prost(string, tag = "1")]
        pub tag: String,
        /// Which plugin reads the value (absent for plain scalars).
        #[prost(message, optional, tag = "9")]
        pub metadata: Option<super::SummaryMetadata>,
        /// The value.
        #[prost(oneof = "value::Value", tags = "2, 8")]
        pub value: Option<value::Value>,
    }

    /// The `value` oneof of [`Value`].
    pub mod value {
        /// A scalar or a tensor.
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            /// A float32 scalar (what `SummaryWriter.add_scalar` writes).
            #[prost(float, tag = "2")]
            SimpleValue(f32),
            /// A tensor (text and plugin payloads).
            #[prost(message, tag = "8")]
            Tensor(super::super::TensorProto),
        }
    }
}

/// `tensorflow.SummaryMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryMetadata {
    /// The plugin that owns the value.
    #[prost(message, optional, tag = "1")]
    pub plugin_data: Option<PluginData>,
}

/// `tensorflow.SummaryMetadata.PluginData`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PluginData {
    /// `"text"`, `"custom_scalars"`, ...
    #[prost(string, tag = "1")]
    pub plugin_name: String,
    /// The plugin's own metadata (empty for version 0 of the text plugin).
    #[prost(bytes = "vec", tag = "2")]
    pub content: Vec<u8>,
}

/// `tensorflow.DataType.DT_STRING`.
pub const DT_STRING: i32 = 7;

/// `tensorflow.TensorProto`, for string tensors.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    /// The element type ([`DT_STRING`]).
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    /// The shape.
    #[prost(message, optional, tag = "2")]
    pub tensor_shape: Option<TensorShapeProto>,
    /// The strings.
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub string_val: Vec<Vec<u8>>,
}

/// `tensorflow.TensorShapeProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    /// The dimensions, outermost first (none for a scalar).
    #[prost(message, repeated, tag = "2")]
    pub dim: Vec<Dim>,
}

/// `tensorflow.TensorShapeProto.Dim`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Dim {
    /// The size.
    #[prost(int64, tag = "1")]
    pub size: i64,
}

/// `tensorboard.Layout` of the custom-scalars plugin: how its dashboard groups charts.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Layout {
    /// The layout version (0).
    #[prost(int32, tag = "1")]
    pub version: i32,
    /// The sections of the dashboard.
    #[prost(message, repeated, tag = "2")]
    pub category: Vec<Category>,
}

/// `tensorboard.Category`: a titled section of charts.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Category {
    /// The section's title.
    #[prost(string, tag = "1")]
    pub title: String,
    /// Its charts.
    #[prost(message, repeated, tag = "2")]
    pub chart: Vec<Chart>,
    /// Collapsed at first.
    #[prost(bool, tag = "3")]
    pub closed: bool,
}

/// `tensorboard.Chart`: one chart of several tags.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Chart {
    /// The chart's title.
    #[prost(string, tag = "1")]
    pub title: String,
    /// The lines (a multiline chart).
    #[prost(message, optional, tag = "2")]
    pub multiline: Option<MultilineChartContent>,
}

/// `tensorboard.MultilineChartContent`: the tags drawn, as regular expressions.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MultilineChartContent {
    /// Regular expressions over tags.
    #[prost(string, repeated, tag = "1")]
    pub tag: Vec<String>,
}
