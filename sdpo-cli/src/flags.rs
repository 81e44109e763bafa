//! The arguments of `sdpo train|eval|precompute-ref|export-pairs` split into those of `sdpo`
//! itself (clap parses them) and TRL-style flags (`--learning_rate 5e-7`), which
//! [`crate::config_file::load_config`] applies as TRL's `HfArgumentParser` would.

/// Flags of `sdpo` itself that take a value (everything else of the form `--key` is a TRL key).
const OWN_FLAGS_WITH_VALUE: [&str; 8] = [
    "--config",
    "-c",
    "--set",
    "--device",
    "--resume-from-checkpoint",
    "--checkpoint",
    "--shard",
    "--out",
];

/// Flags of `sdpo` itself without a value.
const OWN_SWITCHES: [&str; 5] = ["--help", "-h", "--version", "-V", "--merge"];

/// Splits the arguments of `sdpo train|eval|precompute-ref|export-pairs` into those clap parses and TRL-style
/// flags: `--key`, `--key value`, `--key v1 v2 ...` (values up to the next `--`) and
/// `--key=value`. Other subcommands are left alone.
pub fn split_trl_flags(args: Vec<String>) -> (Vec<String>, Vec<(String, Vec<String>)>) {
    let takes_trl = args
        .get(1)
        .is_some_and(|c| ["train", "eval", "precompute-ref", "export-pairs"].contains(&c.as_str()));
    if !takes_trl {
        return (args, Vec::new());
    }
    let mut own = args[..2].to_vec();
    let mut trl: Vec<(String, Vec<String>)> = Vec::new();
    let mut rest = args.into_iter().skip(2).peekable();
    while let Some(arg) = rest.next() {
        let name = arg.split('=').next().unwrap_or(&arg).to_string();
        if OWN_FLAGS_WITH_VALUE.contains(&name.as_str()) {
            let inline = arg.contains('=');
            own.push(arg);
            if !inline && let Some(value) = rest.next() {
                own.push(value);
            }
        } else if OWN_SWITCHES.contains(&arg.as_str()) || !arg.starts_with("--") {
            own.push(arg);
        } else if let Some((key, value)) = arg[2..].split_once('=') {
            trl.push((key.to_string(), vec![value.to_string()]));
        } else {
            let mut values = Vec::new();
            while let Some(next) = rest.next_if(|a| !a.starts_with("--")) {
                values.push(next);
            }
            trl.push((arg[2..].to_string(), values));
        }
    }
    (own, trl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trl_flags_are_split_from_sdpos_own() {
        let args: Vec<String> = "sdpo train --config run.yaml --learning_rate 5.0e-7 \
            --no_remove_unused_columns --lora_target_modules q_proj v_proj --set beta=0.2 \
            --output_dir=out --device flex --gradient_checkpointing"
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let (own, trl) = split_trl_flags(args);
        assert_eq!(
            own,
            [
                "sdpo", "train", "--config", "run.yaml", "--set", "beta=0.2", "--device", "flex"
            ]
        );
        let expected: Vec<(String, Vec<String>)> = [
            ("learning_rate", vec!["5.0e-7"]),
            ("no_remove_unused_columns", vec![]),
            ("lora_target_modules", vec!["q_proj", "v_proj"]),
            ("output_dir", vec!["out"]),
            ("gradient_checkpointing", vec![]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into_iter().map(str::to_string).collect()))
        .collect();
        assert_eq!(trl, expected);
        let other: Vec<String> = ["sdpo", "report", "--x"].map(str::to_string).to_vec();
        assert_eq!(split_trl_flags(other.clone()).0, other);
    }
}
