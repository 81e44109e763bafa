//! The custom-scalars layout: TensorBoard's "Custom Scalars" dashboard shows the run report's
//! charts (the rewards of chosen and rejected in one chart, SDPO's kept fractions in one, ...),
//! with train and eval lines together.

use crate::run::ChartGroup;
use crate::tensorboard::proto::{Category, Chart, Layout, MultilineChartContent};
use crate::tensorboard::tag_for;

/// `text` with the characters that are special in a Python regular expression escaped.
fn escape_regex(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.^$|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The layout of one section holding a chart per group; each chart draws the train and eval
/// tags of the group's metrics (exact matches).
pub fn custom_scalars_layout(groups: &[ChartGroup]) -> Layout {
    let chart = |group: &ChartGroup| Chart {
        title: group.title.clone(),
        multiline: Some(MultilineChartContent {
            tag: group
                .metrics
                .iter()
                .flat_map(|m| [tag_for(m), tag_for(&format!("eval_{m}"))])
                .map(|tag| format!("^{}$", escape_regex(&tag)))
                .collect(),
        }),
    };
    Layout {
        version: 0,
        category: vec![Category {
            title: "sdpo run report".into(),
            chart: groups.iter().map(chart).collect(),
            closed: false,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_group_draws_its_train_and_eval_tags() {
        let layout = custom_scalars_layout(&[ChartGroup {
            title: "Rewards".into(),
            metrics: vec!["rewards/chosen".into(), "rewards/rejected".into()],
        }]);
        let chart = &layout.category[0].chart[0];
        assert_eq!(chart.title, "Rewards");
        assert_eq!(
            chart.multiline.as_ref().unwrap().tag,
            vec![
                "^train/rewards/chosen$",
                "^eval/rewards/chosen$",
                "^train/rewards/rejected$",
                "^eval/rewards/rejected$"
            ]
        );
        assert_eq!(escape_regex("a.b(c)"), "a\\.b\\(c\\)");
    }
}
