//! Configuration keys: which keys each part knows, reading a flat map of top-level keys into
//! the parts (with "did you mean" for a typo and the key named on a wrong type), and back.

use std::collections::BTreeSet;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use sdpo_core::LossConfig;
use sdpo_data::DataConfig;

use super::TrainConfig;

/// The keys a part of the configuration knows: every field its `Deserialize` accepts, read from
/// the field list serde hands to `deserialize_struct` (optional fields that are skipped when
/// serialized, such as `truncation_mode`, are keys all the same).
pub(crate) fn keys_of<T: DeserializeOwned>() -> BTreeSet<String> {
    let mut fields = BTreeSet::new();
    let _ = T::deserialize(FieldNames(&mut fields));
    fields
}

/// A deserializer that records the field names of the struct asked of it and then gives up.
struct FieldNames<'a>(&'a mut BTreeSet<String>);

impl<'de> serde::Deserializer<'de> for FieldNames<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("only the field names are read"))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.extend(fields.iter().map(|field| field.to_string()));
        self.deserialize_any(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// Deserializes one part from its keys. serde's own message for a wrong type does not say which
/// key it was, so on an error each key is tried alone to name the culprit.
fn parse_part<T: DeserializeOwned>(
    map: Map<String, Value>,
    parse: impl Fn(Value) -> Result<T, serde_json::Error>,
) -> Result<T, String> {
    match parse(Value::Object(map.clone())) {
        Ok(value) => Ok(value),
        Err(err) => {
            for (key, value) in map {
                let single = Map::from_iter([(key.clone(), value)]);
                if let Err(e) = parse(Value::Object(single)) {
                    return Err(format!("key `{key}`: {e}"));
                }
            }
            Err(err.to_string())
        }
    }
}

/// The closest known key to a misspelt one, when it is close enough to be a likely typo
/// (edit distance at most 2, or a quarter of the key's length).
pub fn closest_key<'a>(unknown: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    // No key is this long, and the distance costs its length times every known key's.
    if unknown.len() > 128 {
        return None;
    }
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, &cb) in b.iter().enumerate() {
                let cur = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
                prev = cur;
            }
        }
        row[b.len()]
    }
    known
        .map(|k| (distance(unknown, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| k)
}

impl TrainConfig {
    /// Every key a configuration file may hold.
    pub fn known_keys() -> BTreeSet<String> {
        let mut keys = keys_of::<LossConfig>();
        keys.extend(keys_of::<DataConfig>());
        if let Ok(Value::Object(own)) =
            TrainConfig::serialize(&TrainConfig::default(), serde_json::value::Serializer)
        {
            keys.extend(own.into_iter().map(|(k, _)| k));
        }
        keys
    }

    /// Builds a configuration from its top-level keys.
    fn from_map(map: Map<String, Value>) -> Result<Self, String> {
        let loss_keys = keys_of::<LossConfig>();
        let data_keys = keys_of::<DataConfig>();
        let known = Self::known_keys();
        let (mut loss, mut data, mut own) = (Map::new(), Map::new(), Map::new());
        for (key, value) in map {
            if loss_keys.contains(&key) {
                // `trl_semantics` picks both the loss and the data pipeline.
                if data_keys.contains(&key) {
                    data.insert(key.clone(), value.clone());
                }
                loss.insert(key, value);
            } else if data_keys.contains(&key) {
                data.insert(key, value);
            } else if known.contains(&key) {
                own.insert(key, value);
            } else {
                let hint = closest_key(&key, known.iter().map(String::as_str))
                    .map(|k| format!(" (did you mean `{k}`?)"))
                    .unwrap_or_default();
                return Err(format!(
                    "unknown key `{key}`{hint}; docs/configuration.md lists every key"
                ));
            }
        }
        // TOML has no null: 0 switches a length limit off.
        for key in ["max_length", "max_prompt_length"] {
            if data.get(key).and_then(Value::as_u64) == Some(0) {
                data.insert(key.into(), Value::Null);
            }
        }
        let mut config = parse_part(own, TrainConfig::deserialize)?;
        config.loss = parse_part(loss, serde_json::from_value)?;
        config.data = parse_part(data, serde_json::from_value)?;
        Ok(config)
    }

    /// All keys with their values, flat, as a configuration file holds them.
    pub fn to_map(&self) -> Map<String, Value> {
        let mut map = match TrainConfig::serialize(self, serde_json::value::Serializer) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        for part in [
            serde_json::to_value(&self.loss),
            serde_json::to_value(&self.data),
        ] {
            if let Ok(Value::Object(part)) = part {
                map.extend(part);
            }
        }
        map
    }
}

impl<'de> Deserialize<'de> for TrainConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = Map::<String, Value>::deserialize(deserializer)?;
        TrainConfig::from_map(map).map_err(D::Error::custom)
    }
}

impl Serialize for TrainConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_map().serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_documented_in_the_configuration_reference() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
        let doc = std::fs::read_to_string(&path).expect("docs/configuration.md");
        let missing: Vec<String> = TrainConfig::known_keys()
            .into_iter()
            .filter(|key| !doc.contains(&format!("| `{key}` |")))
            .collect();
        assert!(
            missing.is_empty(),
            "keys without a row in {}: {missing:?}",
            path.display()
        );
    }

    #[test]
    fn trl_semantics_picks_the_loss_and_the_data_pipeline() {
        let config: TrainConfig = serde_json::from_str(r#"{"trl_semantics": "0.28"}"#).unwrap();
        assert_eq!(config.loss.trl_semantics, sdpo_core::TrlSemantics::V0_28);
        assert_eq!(config.data.trl_semantics, sdpo_data::TrlPipeline::V0_28);
        assert_eq!(config.data.max_prompt_length(), Some(512));
        let default = TrainConfig::default();
        assert_eq!(default.data.trl_semantics, sdpo_data::TrlPipeline::V1);
        let back: TrainConfig = serde_json::from_value(Value::Object(config.to_map())).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn every_key_sits_at_the_top_level_and_round_trips() {
        let mut config = TrainConfig::default();
        config.loss.beta = 0.25;
        config.data.max_length = Some(77);
        config.data.truncation_mode = Some(sdpo_data::TruncationMode::KeepEnd);
        config.learning_rate = 3e-6;
        let map = config.to_map();
        for key in [
            "beta",
            "sdpo_threshold",
            "max_length",
            "truncation_mode",
            "learning_rate",
        ] {
            assert!(map.contains_key(key), "{key} missing from {map:?}");
        }
        let back: TrainConfig = serde_json::from_value(Value::Object(map)).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn unknown_keys_get_a_suggestion_and_wrong_types_are_named() {
        let err = serde_json::from_str::<TrainConfig>(r#"{"sdpo_treshold": 0.5}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown key `sdpo_treshold`") && err.contains("`sdpo_threshold`"),
            "{err}"
        );
        for (json, key) in [
            (r#"{"beta": "high"}"#, "beta"),
            (r#"{"max_length": -3}"#, "max_length"),
            (
                r#"{"per_device_train_batch_size": 8.5}"#,
                "per_device_train_batch_size",
            ),
        ] {
            let err = serde_json::from_str::<TrainConfig>(json)
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("key `{key}`")), "{json}: {err}");
        }
        // TOML has no null: 0 switches a length limit off.
        let config: TrainConfig = serde_json::from_str(r#"{"max_length": 0}"#).unwrap();
        assert_eq!(config.data.max_length, None);
    }
}
