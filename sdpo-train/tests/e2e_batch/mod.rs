//! The batch of `sdpo_e2e.json` (fixtures README §4) as the collator would hand it over:
//! chosen rows then rejected rows, `[2B, T]` row-major.

use sdpo_data::PreferenceBatch;
use serde_json::Value;

/// A `[B][T]` list of integer lists.
pub fn id_rows(v: &Value) -> Vec<Vec<i64>> {
    v.as_array()
        .expect("a list of rows")
        .iter()
        .map(|row| {
            row.as_array()
                .expect("a row")
                .iter()
                .map(|x| x.as_i64().expect("an integer"))
                .collect()
        })
        .collect()
}

/// The fixture's chosen and rejected rows as one preference batch.
pub fn sdpo_e2e_batch(fixture: &Value) -> PreferenceBatch {
    let rows = |key: &str| -> Vec<i64> {
        let mut out = id_rows(&fixture["chosen"][key]);
        out.extend(id_rows(&fixture["rejected"][key]));
        out.into_iter().flatten().collect()
    };
    let chosen = id_rows(&fixture["chosen"]["input_ids"]);
    let (b, t) = (chosen.len(), chosen[0].len());
    PreferenceBatch {
        batch_size: b,
        seq_len: t,
        input_ids: rows("input_ids"),
        attention_mask: rows("attention_mask"),
        completion_mask: rows("completion_mask"),
        pair_indices: (0..b).collect(),
        truncated: vec![false; 2 * b],
    }
}
