//! `sdpo inspect`'s numbers on the batch of `sdpo_e2e.json` (policy `models/llama`, reference
//! `models/llama_tied`): the scored tokens, both models' per-token log-probs, and for each of the
//! fixture's thresholds the kept masks, the sequences' score thresholds, the four kept sums, the
//! rewards and the per-pair losses must equal PyTorch's (fixtures README §4). The text view
//! rendered from our numbers must equal the text view rendered from the fixture's numbers
//! (allowing only the last printed digit of a number to differ). Both log-prob paths: the whole
//! batch and the memory-bounded engine (`gradient_checkpointing`).

use sdpo_core::{LossConfig, LossType, LossTypes, PreferenceLoss};
use sdpo_models::CausalLm;
use sdpo_report::{
    InspectPair, InspectReport, InspectToken, PairSelection, SequenceSelection, TextStyle,
    render_inspect_text,
};
use sdpo_testkit::{Tolerance, assert_close};
use sdpo_train::ScoringModels;
use sdpo_train::inspect::{InspectedPair, InspectedSequence, inspect_batch};
use sdpo_train::logps::{LogpsPath, MemoryBudget, RowLayout};
use sdpo_train::reference::{Reference, Split};
use serde_json::Value;

mod e2e_batch;
use e2e_batch::{id_rows, sdpo_e2e_batch};

fn floats(v: &Value, what: &str) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what}: not a list"))
        .iter()
        .map(|x| match x {
            Value::Null => f64::NEG_INFINITY,
            x => x.as_f64().unwrap_or_else(|| panic!("{what}: not a number")),
        })
        .collect()
}

fn float_rows(v: &Value, what: &str) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what}: not a list of rows"))
        .iter()
        .map(|row| floats(row, what))
        .collect()
}

fn bool_rows(v: &Value, what: &str) -> Vec<Vec<bool>> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what}: not a list of rows"))
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap_or_else(|| panic!("{what}: not a row"))
                .iter()
                .map(|x| x.as_bool().or(x.as_i64().map(|i| i != 0)).expect(what))
                .collect()
        })
        .collect()
}

/// One side of the fixture, as `InspectedSequence` holds it (scored positions only).
fn expected_sequence(fixture: &Value, side: &str, row: usize) -> InspectedSequence {
    let mask = &bool_rows(&fixture[format!("{side}_loss_mask")], "loss mask")[row];
    let positions: Vec<usize> = (0..mask.len()).filter(|&p| mask[p]).collect();
    let ids = &id_rows(&fixture[side]["input_ids"])[row];
    let pick = |key: &str| -> Vec<f64> {
        let all = &float_rows(&fixture[key], key)[row];
        positions.iter().map(|&p| all[p]).collect()
    };
    let policy_logps = pick(&format!("policy_{side}_logps"));
    let ref_logps = pick(&format!("ref_{side}_logps"));
    let scores: Vec<f64> = policy_logps
        .iter()
        .zip(&ref_logps)
        .map(|(p, r)| if side == "chosen" { r - p } else { p - r })
        .collect();
    let results = fixture["results"].as_array().expect("results");
    let kept: Vec<Vec<bool>> = results
        .iter()
        .map(|r| {
            let kept = &bool_rows(&r[format!("{side}_kept_mask")], "kept mask")[row];
            positions.iter().map(|&p| kept[p]).collect()
        })
        .collect();
    InspectedSequence {
        token_ids: positions.iter().map(|&p| ids[p + 1] as u32).collect(),
        policy_logps,
        ref_logps,
        // SDPO's weights are its kept flags, its method scores the SDPO scores.
        weights: kept
            .iter()
            .map(|k| k.iter().map(|&k| f64::from(u8::from(k))).collect())
            .collect(),
        method_scores: vec![scores.clone(); results.len()],
        scores,
        kept,
        thresholds: results
            .iter()
            .map(|r| floats(&r[format!("{side}_threshold")], "threshold")[row])
            .collect(),
        policy_sums: results
            .iter()
            .map(|r| floats(&r[format!("policy_{side}_sum")], "sum")[row])
            .collect(),
        ref_sums: results
            .iter()
            .map(|r| floats(&r[format!("ref_{side}_sum")], "sum")[row])
            .collect(),
    }
}

fn expected_pairs(fixture: &Value) -> Vec<InspectedPair> {
    let results = fixture["results"].as_array().expect("results");
    let per_q = |key: &str, row: usize| -> Vec<f64> {
        results.iter().map(|r| floats(&r[key], key)[row]).collect()
    };
    let prompts = id_rows(&fixture["prompts"]);
    (0..prompts.len())
        .map(|row| InspectedPair {
            index: row,
            origin: String::new(),
            prompt_ids: prompts[row].iter().map(|&id| id as u32).collect(),
            chosen: expected_sequence(fixture, "chosen", row),
            rejected: expected_sequence(fixture, "rejected", row),
            chosen_rewards: per_q("chosen_rewards", row),
            rejected_rewards: per_q("rejected_rewards", row),
            losses: per_q("losses", row),
        })
        .collect()
}

fn check_sequence(got: &InspectedSequence, want: &InspectedSequence, what: &str) {
    assert_eq!(got.token_ids, want.token_ids, "{what}: scored token ids");
    let tol = Tolerance::elementwise(1e-5, 1e-5);
    assert_close(
        &got.policy_logps,
        &want.policy_logps,
        tol,
        &format!("{what}: policy log-probs"),
    );
    assert_close(
        &got.ref_logps,
        &want.ref_logps,
        tol,
        &format!("{what}: reference log-probs"),
    );
    assert_close(&got.scores, &want.scores, tol, &format!("{what}: scores"));
    assert_eq!(got.kept.len(), want.kept.len(), "{what}: thresholds");
    for (k, (g, w)) in got.kept.iter().zip(&want.kept).enumerate() {
        assert_eq!(g, w, "{what}: kept tokens at threshold #{k}");
    }
    assert_eq!(
        got.weights, want.weights,
        "{what}: SDPO weights are the kept flags"
    );
    assert_eq!(
        got.method_scores.len(),
        want.method_scores.len(),
        "{what}: columns"
    );
    for (g, w) in got.method_scores.iter().zip(&want.method_scores) {
        assert_close(g, w, tol, &format!("{what}: method scores"));
    }
    // A sequence's threshold is -inf only without scored tokens: both sides must agree.
    for (g, w) in got.thresholds.iter().zip(&want.thresholds) {
        assert!(
            (g.is_infinite() && g == w) || (g - w).abs() <= 1e-5 + 1e-5 * w.abs(),
            "{what}: score threshold {g} vs {w}"
        );
    }
    let tol = Tolerance::elementwise(1e-4, 1e-5);
    assert_close(
        &got.policy_sums,
        &want.policy_sums,
        tol,
        &format!("{what}: policy kept sums"),
    );
    assert_close(
        &got.ref_sums,
        &want.ref_sums,
        tol,
        &format!("{what}: reference kept sums"),
    );
}

/// The text view's report for `pairs`; tokens are shown as `t<id>` (the tiny models have no
/// tokenizer).
fn report(pairs: &[InspectedPair], thresholds: &[f64], beta: f64) -> InspectReport {
    let tokens = |s: &InspectedSequence| -> Vec<InspectToken> {
        (0..s.token_ids.len())
            .map(|i| InspectToken {
                id: s.token_ids[i],
                text: format!("t{}", s.token_ids[i]),
                policy_logp: s.policy_logps[i],
                ref_logp: s.ref_logps[i],
                score: s.scores[i],
                kept: s.kept.iter().map(|k| k[i]).collect(),
                weights: s.weights.iter().map(|w| w[i]).collect(),
                column_scores: s.method_scores.iter().map(|m| m[i]).collect(),
            })
            .collect()
    };
    let selection = |s: &InspectedSequence, q: usize| SequenceSelection {
        threshold: s.thresholds[q],
        kept_tokens: s.kept[q].iter().filter(|&&k| k).count(),
        policy_logp_sum: s.policy_sums[q],
        ref_logp_sum: s.ref_sums[q],
    };
    InspectReport {
        source: "sdpo_e2e.json".into(),
        policy: "models/llama".into(),
        reference: "models/llama_tied".into(),
        beta,
        columns: thresholds
            .iter()
            .map(|&q| sdpo_report::InspectColumn::sdpo(q))
            .collect(),
        pairs: pairs
            .iter()
            .map(|p| InspectPair {
                index: p.index,
                origin: p.origin.clone(),
                prompt: p
                    .prompt_ids
                    .iter()
                    .map(|id| format!("t{id}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                chosen: tokens(&p.chosen),
                rejected: tokens(&p.rejected),
                selections: (0..thresholds.len())
                    .map(|q| PairSelection {
                        chosen: selection(&p.chosen, q),
                        rejected: selection(&p.rejected, q),
                        chosen_reward: p.chosen_rewards[q],
                        rejected_reward: p.rejected_rewards[q],
                        reward_margin: p.chosen_rewards[q] - p.rejected_rewards[q],
                        loss: p.losses[q],
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// Equal texts, except that a number may differ by one unit of its last printed digit (the
/// fixture's f32 numbers and ours may round differently at the fourth decimal).
fn assert_same_text(got: &str, want: &str, what: &str) {
    let (got_lines, want_lines): (Vec<_>, Vec<_>) = (got.lines().collect(), want.lines().collect());
    assert_eq!(got_lines.len(), want_lines.len(), "{what}: line count");
    for (n, (g, w)) in got_lines.iter().zip(&want_lines).enumerate() {
        let (gw, ww): (Vec<_>, Vec<_>) = (
            g.split_whitespace().collect(),
            w.split_whitespace().collect(),
        );
        let same = gw.len() == ww.len()
            && gw.iter().zip(&ww).all(|(a, b)| {
                a == b || {
                    let num = |s: &str| {
                        s.trim_matches(|c| c == '(' || c == ')' || c == '%')
                            .parse::<f64>()
                    };
                    let decimals = b
                        .split('.')
                        .nth(1)
                        .map_or(0, |d| d.chars().take_while(char::is_ascii_digit).count());
                    match (num(a), num(b)) {
                        (Ok(x), Ok(y)) => (x - y).abs() <= 1.01 * 10f64.powi(-(decimals as i32)),
                        _ => false,
                    }
                }
            });
        assert!(
            same,
            "{what}: line {} differs:\n ours:    {g:?}\n fixture: {w:?}",
            n + 1
        );
    }
}

#[test]
fn inspect_equals_pytorch_on_the_sdpo_e2e_batch() {
    let dir = sdpo_testkit::fixtures_dir();
    let fixture: Value =
        serde_json::from_str(&sdpo_testkit::read_fixture("sdpo_e2e.json")).expect("json");
    let beta = fixture["beta"].as_f64().expect("beta");
    let label_smoothing = fixture["label_smoothing"]
        .as_f64()
        .expect("label_smoothing");
    let results = fixture["results"].as_array().expect("results");
    let thresholds: Vec<f64> = results
        .iter()
        .map(|r| r["threshold"].as_f64().expect("threshold"))
        .collect();
    assert!(
        thresholds.len() >= 2,
        "the fixture has {} thresholds",
        thresholds.len()
    );
    let losses: Vec<PreferenceLoss> = thresholds
        .iter()
        .map(|&q| {
            PreferenceLoss::new(LossConfig {
                loss_type: LossTypes::One(LossType::Sdpo),
                beta,
                label_smoothing,
                sdpo_threshold: q,
                ..LossConfig::default()
            })
            .expect("loss")
        })
        .collect();
    let none = ScoringModels::none();
    let columns: Vec<(PreferenceLoss, &ScoringModels)> =
        losses.into_iter().map(|loss| (loss, &none)).collect();
    let want = expected_pairs(&fixture);
    let host = sdpo_e2e_batch(&fixture);
    let want_text = render_inspect_text(&report(&want, &thresholds, beta), TextStyle::Plain)
        .expect("render the fixture's numbers");
    let bounded = LogpsPath::bounded(MemoryBudget {
        bytes: 1,
        max_buffer_bytes: 1,
    });
    let paths = [
        LogpsPath::WHOLE,
        LogpsPath::WHOLE.with_layout(RowLayout::SharedPrompt),
        bounded,
        bounded.with_layout(RowLayout::SharedPrompt),
    ];
    for (dev, path) in sdpo_testkit::test_devices!()
        .into_iter()
        .flat_map(|dev| paths.map(|path| (dev.clone(), path)))
    {
        let name = format!("{} {path:?}", dev.name);
        let policy =
            CausalLm::from_pretrained(dir.join("models/llama"), &dev.device).expect("policy");
        let reference = Reference::Model(Box::new(
            CausalLm::from_pretrained(dir.join("models/llama_tied"), &dev.device)
                .expect("reference"),
        ));
        let got = inspect_batch(
            &policy,
            &reference,
            &path,
            Split::Train,
            &host,
            &columns,
            &dev.device,
        )
        .expect("inspect");
        assert_eq!(got.len(), want.len(), "[{name}] pairs");
        for (g, w) in got.iter().zip(&want) {
            let what = format!("[{name}] pair {}", w.index);
            assert_eq!(g.index, w.index, "{what}: index");
            assert_eq!(g.prompt_ids, w.prompt_ids, "{what}: prompt tokens");
            check_sequence(&g.chosen, &w.chosen, &format!("{what} chosen"));
            check_sequence(&g.rejected, &w.rejected, &format!("{what} rejected"));
            let tol = Tolerance::elementwise(1e-5, 1e-5);
            assert_close(
                &g.chosen_rewards,
                &w.chosen_rewards,
                tol,
                &format!("{what}: chosen rewards"),
            );
            assert_close(
                &g.rejected_rewards,
                &w.rejected_rewards,
                tol,
                &format!("{what}: rejected rewards"),
            );
            assert_close(&g.losses, &w.losses, tol, &format!("{what}: losses"));
        }
        let got_text = render_inspect_text(&report(&got, &thresholds, beta), TextStyle::Plain)
            .expect("render our numbers");
        assert_same_text(&got_text, &want_text, &format!("[{name}] text view"));
        println!(
            "[{name}] inspect: {} pairs x {} thresholds equal PyTorch's",
            got.len(),
            thresholds.len()
        );
    }
}
