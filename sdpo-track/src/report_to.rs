//! `report_to`: which integrations receive the run's metrics, as transformers'
//! `TrainingArguments.report_to` names them.
//!
//! `"none"` (the default, as in transformers 5), `"all"` (every supported integration that can
//! run here), one name, or a list of names. A name transformers knows but sdpo-rs does not
//! provide (`wandb`, `trackio`, ...) and a name nobody knows are errors listing what is
//! supported, so a typo or a missing integration never trains without the logging the user
//! asked for.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::TrackError;

/// An integration sdpo-rs provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Integration {
    /// TensorBoard event files (transformers' `TensorBoardCallback`).
    TensorBoard,
    /// An MLflow tracking server through its REST API (transformers' `MLflowCallback`).
    Mlflow,
}

impl Integration {
    /// Every supported integration, in the order `"all"` starts them.
    pub const ALL: [Integration; 2] = [Integration::TensorBoard, Integration::Mlflow];

    /// The name in `report_to`.
    pub fn name(self) -> &'static str {
        match self {
            Self::TensorBoard => "tensorboard",
            Self::Mlflow => "mlflow",
        }
    }

    /// The integration called `name`, if sdpo-rs provides it.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|i| i.name() == name)
    }
}

/// transformers 5.24's other `report_to` integrations (`INTEGRATION_TO_CALLBACK`), which
/// sdpo-rs does not provide.
pub const TRANSFORMERS_ONLY: [&str; 12] = [
    "azure_ml",
    "clearml",
    "codecarbon",
    "comet_ml",
    "dagshub",
    "dvclive",
    "flyte",
    "kubeflow",
    "neptune",
    "swanlab",
    "trackio",
    "wandb",
];

/// The `report_to` setting.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ReportTo {
    /// Only `metrics.jsonl` (and the run report).
    #[default]
    None,
    /// Every supported integration that can run with this environment; one that cannot (MLflow
    /// without a tracking server) is skipped with a note instead of an error.
    All,
    /// These integrations, each required.
    Some(Vec<Integration>),
}

fn supported() -> String {
    let names: Vec<String> = Integration::ALL
        .iter()
        .map(|i| format!("\"{}\"", i.name()))
        .collect();
    format!("supported: {} (or \"all\", \"none\")", names.join(", "))
}

impl ReportTo {
    /// Parses the names as a configuration gives them: one string or a list.
    ///
    /// # Errors
    /// [`TrackError::ReportTo`] for an unknown or unavailable name, or `"all"` / `"none"`
    /// mixed with other names.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<Self, TrackError> {
        let names: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
        match names.as_slice() {
            [] | ["none"] => return Ok(Self::None),
            ["all"] => return Ok(Self::All),
            _ => {}
        }
        let mut out: Vec<Integration> = Vec::new();
        for name in names {
            let integration = match name {
                "all" | "none" => {
                    return Err(TrackError::ReportTo {
                        reason: format!(
                            "\"{name}\" must stand alone, not in a list with other names; {}",
                            supported()
                        ),
                    });
                }
                _ => Integration::from_name(name).ok_or_else(|| TrackError::ReportTo {
                    reason: if TRANSFORMERS_ONLY.contains(&name) {
                        format!(
                            "`{name}` is a transformers integration that sdpo-rs does not provide; {}",
                            supported()
                        )
                    } else {
                        format!("`{name}` is not an integration; {}", supported())
                    },
                })?,
            };
            if !out.contains(&integration) {
                out.push(integration);
            }
        }
        Ok(Self::Some(out))
    }

    /// The names as a configuration would write them.
    pub fn names(&self) -> Vec<&'static str> {
        match self {
            Self::None => vec!["none"],
            Self::All => vec!["all"],
            Self::Some(list) => list.iter().map(|i| i.name()).collect(),
        }
    }

    /// Whether nothing besides `metrics.jsonl` is asked for.
    pub fn is_none(&self) -> bool {
        matches!(self, Self::None) || matches!(self, Self::Some(list) if list.is_empty())
    }
}

impl Serialize for ReportTo {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::None | Self::All => serializer.serialize_str(self.names()[0]),
            Self::Some(_) => self.names().serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for ReportTo {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        let names = match Raw::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom("expected an integration name or a list of names")
        })? {
            Raw::One(name) => vec![name],
            Raw::Many(names) => names,
        };
        Self::from_names(&names).map_err(|e| match e {
            TrackError::ReportTo { reason } => serde::de::Error::custom(reason),
            other => serde::de::Error::custom(other.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lists_and_the_two_words() {
        assert_eq!(ReportTo::from_names::<&str>(&[]).unwrap(), ReportTo::None);
        assert_eq!(ReportTo::from_names(&["none"]).unwrap(), ReportTo::None);
        assert_eq!(ReportTo::from_names(&["all"]).unwrap(), ReportTo::All);
        assert_eq!(
            ReportTo::from_names(&["mlflow", "tensorboard", "mlflow"]).unwrap(),
            ReportTo::Some(vec![Integration::Mlflow, Integration::TensorBoard])
        );
        let parse = |json: &str| serde_json::from_str::<ReportTo>(json);
        assert_eq!(
            parse("\"tensorboard\"").unwrap(),
            ReportTo::Some(vec![Integration::TensorBoard])
        );
        assert_eq!(parse("[\"all\"]").unwrap(), ReportTo::All);
        for value in [
            ReportTo::None,
            ReportTo::All,
            ReportTo::Some(vec![Integration::TensorBoard, Integration::Mlflow]),
        ] {
            let json = serde_json::to_string(&value).unwrap();
            assert_eq!(parse(&json).unwrap(), value, "{json}");
        }
    }

    #[test]
    fn unknown_and_unavailable_integrations_list_what_is_supported() {
        let err = ReportTo::from_names(&["wandb"]).unwrap_err().to_string();
        assert!(
            err.contains("`wandb` is a transformers integration that sdpo-rs does not provide")
                && err.contains("\"tensorboard\", \"mlflow\""),
            "{err}"
        );
        let err = ReportTo::from_names(&["tensorbord"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`tensorbord` is not an integration"), "{err}");
        let err = ReportTo::from_names(&["all", "mlflow"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"all\" must stand alone"), "{err}");
        let err = serde_json::from_str::<ReportTo>("[\"trackio\"]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`trackio`"), "{err}");
        let err = serde_json::from_str::<ReportTo>("3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("an integration name or a list"), "{err}");
    }
}
