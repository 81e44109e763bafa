//! Serde for `f64` fields that may hold NaN or infinities (a sequence without valid tokens has
//! threshold `-inf`): finite values are JSON numbers, the others the strings `"NaN"`, `"inf"`,
//! `"-inf"` (JSON has no such numbers, and serde_json would write `null` and fail to read it).

use serde::{Deserialize, Deserializer, Serializer};

/// Serialises one `f64`.
pub(crate) fn serialize<S: Serializer>(v: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() {
        serializer.serialize_f64(*v)
    } else if v.is_nan() {
        serializer.serialize_str("NaN")
    } else if *v > 0.0 {
        serializer.serialize_str("inf")
    } else {
        serializer.serialize_str("-inf")
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Repr {
    Number(f64),
    Text(String),
    Null(()),
}

/// Deserialises one `f64` written by [`serialize`] (a `null` reads as NaN).
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    match Repr::deserialize(deserializer)? {
        Repr::Number(v) => Ok(v),
        Repr::Null(()) => Ok(f64::NAN),
        Repr::Text(text) => match text.as_str() {
            "NaN" | "nan" => Ok(f64::NAN),
            "inf" | "Infinity" => Ok(f64::INFINITY),
            "-inf" | "-Infinity" => Ok(f64::NEG_INFINITY),
            other => Err(serde::de::Error::custom(format!(
                "expected a number, \"NaN\", \"inf\" or \"-inf\", got \"{other}\""
            ))),
        },
    }
}

/// The same for `Vec<f64>`.
pub(crate) mod vec {
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};

    struct One(f64);

    impl serde::Serialize for One {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            super::serialize(&self.0, serializer)
        }
    }

    impl<'de> Deserialize<'de> for One {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            super::deserialize(deserializer).map(One)
        }
    }

    /// Serialises a `Vec<f64>`.
    pub(crate) fn serialize<S: Serializer>(v: &[f64], serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(v.len()))?;
        for x in v {
            seq.serialize_element(&One(*x))?;
        }
        seq.end()
    }

    /// Deserialises a `Vec<f64>`.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<f64>, D::Error> {
        Ok(Vec::<One>::deserialize(deserializer)?
            .into_iter()
            .map(|o| o.0)
            .collect())
    }
}
