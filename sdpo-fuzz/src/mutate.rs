//! Byte-level mutation of seed files, as AFL's havoc stage does it: bit flips, interesting
//! values, numbers in the text made huge or negative, chunks deleted, duplicated or spliced in
//! from another seed, deep nesting inserted. Each mutation keeps the input under
//! [`crate::MAX_INPUT_BYTES`].

use rand::Rng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;

use crate::MAX_INPUT_BYTES;

/// Byte values that break parsers more often than random ones.
const INTERESTING_BYTES: [u8; 12] = [
    0, 1, 0x7f, 0x80, 0xff, b'"', b'\\', b'{', b'[', b'\n', b':', b',',
];

/// Numbers that break size arithmetic when they replace one in the text.
const INTERESTING_NUMBERS: [&str; 12] = [
    "0",
    "-1",
    "4294967296",
    "18446744073709551615",
    "9223372036854775807",
    "-9223372036854775808",
    "1e309",
    "NaN",
    "65536",
    "1e-400",
    "2147483648",
    "340282366920938463463374607431768211456",
];

/// Applies 1 to 8 random mutations to `input`; `splice` is another seed to take chunks from.
pub fn mutate(rng: &mut ChaCha8Rng, mut input: Vec<u8>, splice: &[u8]) -> Vec<u8> {
    let rounds = 1 + rng.random_range(0..8);
    for _ in 0..rounds {
        mutate_once(rng, &mut input, splice);
    }
    input.truncate(MAX_INPUT_BYTES);
    input
}

fn mutate_once(rng: &mut ChaCha8Rng, input: &mut Vec<u8>, splice: &[u8]) {
    let len = input.len();
    let at = |rng: &mut ChaCha8Rng| {
        if len == 0 {
            0
        } else {
            rng.random_range(0..len)
        }
    };
    match rng.random_range(0..11) {
        0 if len > 0 => {
            let i = at(rng);
            input[i] ^= 1 << rng.random_range(0..8);
        }
        1 if len > 0 => {
            let i = at(rng);
            input[i] = *INTERESTING_BYTES.choose(rng).unwrap_or(&0);
        }
        2 if len > 0 => {
            let i = at(rng);
            input[i] = rng.random();
        }
        3 => {
            // Delete a chunk.
            if len > 1 {
                let start = at(rng);
                let end = (start + 1 + rng.random_range(0..64.min(len - start))).min(len);
                input.drain(start..end);
            }
        }
        4 if len > 0 => {
            // Duplicate a chunk in place.
            let start = at(rng);
            let end = (start + 1 + rng.random_range(0..256)).min(len);
            let chunk = input[start..end].to_vec();
            let to = at(rng);
            input.splice(to..to, chunk);
        }
        5 if !splice.is_empty() => {
            // Splice in a chunk of another seed.
            let start = rng.random_range(0..splice.len());
            let end = (start + 1 + rng.random_range(0..512)).min(splice.len());
            let to = at(rng);
            input.splice(to..to, splice[start..end].iter().copied());
        }
        6 => replace_number(rng, input),
        7 => {
            // Deep nesting at a random place.
            let depth = [64, 1_000, 100_000].choose(rng).copied().unwrap_or(64);
            let (open, close): (&[u8], &[u8]) = *[
                (&b"["[..], &b"]"[..]),
                (b"{\"a\":", b"}"),
                (b"- ", b""),
                (b"[a.", b"]"),
            ]
            .choose(rng)
            .unwrap_or(&(&b"["[..], &b"]"[..]));
            let to = at(rng);
            let mut nest = open.repeat(depth);
            if rng.random_bool(0.5) {
                nest.extend(close.repeat(depth));
            }
            input.splice(to..to, nest);
        }
        8 if len > 0 => {
            // Truncate.
            input.truncate(at(rng));
        }
        9 if len > 8 => {
            // Overwrite a little-endian word with a huge or odd value (binary headers).
            let i = rng.random_range(0..len - 8);
            let value: u64 = *[u64::MAX, 1 << 40, (1 << 32) + 1, 0, u64::MAX / 2, 7]
                .choose(rng)
                .unwrap_or(&0);
            input[i..i + 8].copy_from_slice(&value.to_le_bytes());
        }
        _ => {
            let i = at(rng);
            input.insert(
                i.min(input.len()),
                *INTERESTING_BYTES.choose(rng).unwrap_or(&0),
            );
        }
    }
}

/// Replaces one run of ASCII digits with an interesting number.
fn replace_number(rng: &mut ChaCha8Rng, input: &mut Vec<u8>) {
    let digits: Vec<usize> = (0..input.len())
        .filter(|&i| input[i].is_ascii_digit())
        .collect();
    let Some(&start) = digits.choose(rng) else {
        return;
    };
    let mut end = start;
    while end < input.len() && input[end].is_ascii_digit() {
        end += 1;
    }
    let number = INTERESTING_NUMBERS.choose(rng).unwrap_or(&"0");
    input.splice(start..end, number.bytes());
}
