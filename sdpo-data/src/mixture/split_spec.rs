//! `datasets`' split expressions: `train`, `train+test`, `train[:1000]`, `train[10%:20%]`,
//! `train[-5:]`, with percentages rounded to the closest row (ties to even) as `datasets`
//! rounds them.

use crate::config::check_split_name;

/// One part of a split expression: a split and an optional row range.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct SplitPart {
    pub name: String,
    pub start: Option<Bound>,
    pub end: Option<Bound>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Bound {
    Rows(i64),
    Percent(f64),
}

impl Bound {
    /// The row index this bound stands for in a split of `len` rows (`datasets` rounds
    /// percentages to the closest row and clamps).
    pub fn resolve(self, len: usize) -> usize {
        let len_i = len as i64;
        let index = match self {
            Bound::Rows(r) if r < 0 => len_i + r,
            Bound::Rows(r) => r,
            Bound::Percent(p) => {
                let raw = p * len as f64 / 100.0;
                let rounded = raw.round_ties_even() as i64;
                if p < 0.0 { len_i + rounded } else { rounded }
            }
        };
        index.clamp(0, len_i) as usize
    }
}

pub(super) fn parse_split(spec: &str) -> Result<Vec<SplitPart>, String> {
    spec.split('+')
        .map(|part| {
            let part = part.trim();
            let (name, range) = match part.split_once('[') {
                Some((name, rest)) => {
                    let range = rest
                        .strip_suffix(']')
                        .ok_or_else(|| format!("`{part}`: a slice must end with `]`"))?;
                    (name.trim(), Some(range))
                }
                None => (part, None),
            };
            check_split_name("split", name).map_err(|e| e.to_string())?;
            let (start, end) = match range {
                None => (None, None),
                Some(range) => {
                    let (a, b) = range
                        .split_once(':')
                        .ok_or_else(|| format!("`{part}`: a slice is `[start:end]`"))?;
                    (parse_bound(a, part)?, parse_bound(b, part)?)
                }
            };
            Ok(SplitPart {
                name: name.to_string(),
                start,
                end,
            })
        })
        .collect()
}

fn parse_bound(text: &str, part: &str) -> Result<Option<Bound>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let bad = || format!("`{part}`: `{text}` is not a row number or a percentage");
    match text.strip_suffix('%') {
        Some(p) => p
            .trim()
            .parse::<f64>()
            .map(|p| Some(Bound::Percent(p)))
            .map_err(|_| bad()),
        None => text
            .parse::<i64>()
            .map(|r| Some(Bound::Rows(r)))
            .map_err(|_| bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_expressions_parse_like_datasets() {
        let parts = parse_split("train[:10%]+test[5:-5]").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].end, Some(Bound::Percent(10.0)));
        assert_eq!(parts[1].start, Some(Bound::Rows(5)));
        assert_eq!(Bound::Rows(-5).resolve(100), 95);
        assert_eq!(Bound::Percent(10.0).resolve(25), 2); // 2.5 rounds to even
        assert_eq!(Bound::Percent(30.0).resolve(25), 8); // 7.5 rounds to even
        assert!(parse_split("train[1:").is_err());
        assert!(parse_split("train[a:b]").is_err());
    }
}
