//! Structure-aware generation: values shaped like the files each parser expects (the right
//! keys with wrong types, huge or negative numbers, deep nesting, declared sizes that do not
//! match the bytes), built from [`arbitrary::Unstructured`].

use arbitrary::{Result, Unstructured};
use serde_json::{Map, Value, json};

/// Numbers that break size arithmetic and bounds.
const EDGE_NUMBERS: [f64; 14] = [
    0.0,
    -1.0,
    1.0,
    2.0,
    3.0,
    64.0,
    65536.0,
    4294967296.0,
    1e12,
    1.8446744073709552e19,
    -9.3e18,
    0.5,
    1e308,
    -0.0,
];

/// A number: small, edge, or arbitrary.
pub fn number(u: &mut Unstructured<'_>) -> Result<Value> {
    Ok(match u.int_in_range(0..=3)? {
        0 => json!(u.int_in_range(0..=16u32)?),
        1 => json!(*u.choose(&EDGE_NUMBERS)?),
        2 => json!(u.arbitrary::<i64>()?),
        _ => json!(u.arbitrary::<f64>()?),
    })
}

/// A short string: a vocabulary word, text, or arbitrary unicode.
pub fn string(u: &mut Unstructured<'_>, words: &[&str]) -> Result<String> {
    Ok(match u.int_in_range(0..=3)? {
        0 | 1 if !words.is_empty() => u.choose(words)?.to_string(),
        2 => "x".repeat(u.int_in_range(0..=300)?),
        _ => u.arbitrary::<String>()?,
    })
}

/// An arbitrary JSON value whose object keys come mostly from `keys`, at most `depth` deep.
pub fn value(u: &mut Unstructured<'_>, keys: &[&str], depth: u32) -> Result<Value> {
    let kind = if depth == 0 {
        u.int_in_range(0..=3)?
    } else {
        u.int_in_range(0..=6)?
    };
    Ok(match kind {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => number(u)?,
        3 => Value::String(string(u, keys)?),
        4 => {
            let len = u.int_in_range(0..=4)?;
            Value::Array(
                (0..len)
                    .map(|_| value(u, keys, depth - 1))
                    .collect::<Result<_>>()?,
            )
        }
        _ => object(u, keys, depth - 1)?,
    })
}

/// An object of up to six entries keyed from `keys`.
pub fn object(u: &mut Unstructured<'_>, keys: &[&str], depth: u32) -> Result<Value> {
    let mut map = Map::new();
    for _ in 0..u.int_in_range(0..=6)? {
        let key = string(u, keys)?;
        map.insert(key, value(u, keys, depth)?);
    }
    Ok(Value::Object(map))
}

/// `template` (an object of the right keys and plausible values) with some entries replaced by
/// arbitrary values, some removed and some added.
pub fn perturb(u: &mut Unstructured<'_>, template: Value, keys: &[&str]) -> Result<Value> {
    let Value::Object(mut map) = template else {
        return Ok(template);
    };
    let names: Vec<String> = map.keys().cloned().collect();
    for name in names {
        match u.int_in_range(0..=9)? {
            0 => {
                map.remove(&name);
            }
            1 | 2 => {
                map.insert(name, value(u, keys, 2)?);
            }
            _ => {}
        }
    }
    if u.ratio(1, 4)? {
        let key = string(u, keys)?;
        map.insert(key, value(u, keys, 2)?);
    }
    Ok(Value::Object(map))
}

/// A value nested `depth` deep (arrays or objects), as text.
pub fn deep_json(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    let depth = *u.choose(&[200usize, 5_000, 100_000])?;
    let (open, close) = if u.arbitrary()? {
        ("[", "]")
    } else {
        ("{\"a\":", "}")
    };
    Ok(format!("{}1{}", open.repeat(depth), close.repeat(depth)).into_bytes())
}

/// A chat message list (role/content objects), sometimes malformed.
pub fn messages(u: &mut Unstructured<'_>, roles: &[&str]) -> Result<Value> {
    let len = u.int_in_range(0..=3)?;
    let mut list = Vec::new();
    for _ in 0..len {
        let message = json!({
            "role": u.choose(roles)?,
            "content": string(u, &["Hi", "Hello", "", "<|im_end|>", "{{ x }}"])?,
        });
        list.push(perturb(
            u,
            message,
            &["role", "content", "tool_calls", "name", "type", "text"],
        )?);
    }
    Ok(Value::Array(list))
}

/// Serializes `value` as JSON text (compact or pretty).
pub fn to_json(u: &mut Unstructured<'_>, value: &Value) -> Result<Vec<u8>> {
    let bytes = if u.arbitrary()? {
        serde_json::to_vec(value)
    } else {
        serde_json::to_vec_pretty(value)
    };
    Ok(bytes.unwrap_or_default())
}

/// A TOML scalar or inline value for a key.
pub fn toml_value(u: &mut Unstructured<'_>, words: &[&str]) -> Result<String> {
    Ok(match u.int_in_range(0..=7)? {
        0 => u.arbitrary::<bool>()?.to_string(),
        1 => u.arbitrary::<i64>()?.to_string(),
        2 => format!("{:?}", u.arbitrary::<f64>()?),
        3 => format!("{:?}", string(u, words)?),
        4 => format!(
            "[{}]",
            (0..u.int_in_range(0..=3)?)
                .map(|_| format!("{:?}", string(u, words).unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        5 => format!("{{ a = {} }}", u.int_in_range(0..=9u8)?),
        6 => u
            .choose(&[
                "1e400",
                "-0",
                "nan",
                "inf",
                "0x7fffffffffffffff",
                "18446744073709551616",
            ])?
            .to_string(),
        _ => u.int_in_range(0..=4096u32)?.to_string(),
    })
}

/// Safetensors bytes: a header of tensors with dtypes, shapes and offsets that may lie, and a
/// body of arbitrary length.
pub fn safetensors(u: &mut Unstructured<'_>, names: &[&str]) -> Result<Vec<u8>> {
    const DTYPES: [&str; 10] = [
        "F32", "F16", "BF16", "I64", "U8", "I8", "F64", "BOOL", "U32", "Q4",
    ];
    let mut header = Map::new();
    let mut offset: u64 = 0;
    for _ in 0..u.int_in_range(0..=5)? {
        let name = string(u, names)?;
        let dtype = *u.choose(&DTYPES)?;
        let rank = u.int_in_range(0..=3)?;
        let mut shape = Vec::new();
        for _ in 0..rank {
            shape.push(match u.int_in_range(0..=5)? {
                0 => u64::MAX,
                1 => 1 << 33,
                2 => 0,
                _ => u64::from(u.int_in_range(1..=8u8)?),
            });
        }
        let size = shape
            .iter()
            .fold(4u64, |a, &b| a.saturating_mul(b))
            .min(1 << 16);
        let (start, end) = if u.ratio(3, 4)? {
            (offset, offset + size)
        } else {
            (u.arbitrary::<u32>()? as u64, u.arbitrary::<u32>()? as u64)
        };
        offset = end;
        header.insert(
            name,
            json!({"dtype": dtype, "shape": shape, "data_offsets": [start, end]}),
        );
    }
    if u.arbitrary()? {
        header.insert("__metadata__".into(), json!({"format": "pt"}));
    }
    let text = serde_json::to_vec(&Value::Object(header)).unwrap_or_default();
    let declared = if u.ratio(7, 8)? {
        text.len() as u64
    } else {
        u.arbitrary::<u64>()?
    };
    let mut bytes = declared.to_le_bytes().to_vec();
    bytes.extend_from_slice(&text);
    let body = (offset.min(1 << 16) as usize)
        .saturating_add(u.int_in_range(0..=16)?)
        .saturating_sub(u.int_in_range(0..=16)?);
    bytes.extend(std::iter::repeat_n(0u8, body));
    Ok(bytes)
}
