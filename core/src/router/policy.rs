//! The routing policy: requests for the routing model (`auto` by default) go to a tier chosen
//! by hard rules first, then by the learned scorer against a threshold (per tenant). The policy
//! is an immutable snapshot, replaced whole by the admin API without a restart.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use switchyard_models::router::Scorer;

use crate::error::ApiError;
use crate::types::{ChatRequest, Content, Role};

/// `[routing]` as written (TOML or the admin API's JSON).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawRouting {
    /// The model name that asks for routing.
    #[serde(default = "auto")]
    pub model: String,
    /// Tier name → model (a `[models]` name, `provider/model`, or `local/smollm2`).
    #[serde(default)]
    pub tiers: BTreeMap<String, String>,
    /// Tier for requests the scorer rates below the threshold.
    #[serde(default)]
    pub weak: String,
    /// Tier for requests rated at or above it.
    #[serde(default)]
    pub strong: String,
    /// Score at or above which the strong tier answers.
    #[serde(default = "half")]
    pub threshold: f64,
    /// Per-tenant thresholds.
    #[serde(default)]
    pub thresholds: BTreeMap<String, f64>,
    /// Trained scorer file (`switchyard router eval --out`); without one, unmatched requests go
    /// to the weak tier.
    #[serde(default)]
    pub scorer: Option<PathBuf>,
    /// Hard rules, first match wins.
    #[serde(default)]
    pub rules: Vec<RawRule>,
    /// Target share of scored calls for the strong tier: the threshold is calibrated to the
    /// scores of the recent routed calls (the last `calibrate_calls` with features) so that
    /// this share would have gone strong. Replaces `threshold` once there are enough calls.
    #[serde(default)]
    pub strong_share: Option<f64>,
    /// How many recent routed calls calibrate the threshold (default 2,000).
    #[serde(default = "calibrate_calls")]
    pub calibrate_calls: usize,
    /// What a request whose estimated cost is over its `max_cost` gets: `downgrade` (the
    /// costliest tier that fits) or `reject`.
    #[serde(default)]
    pub on_max_cost: OverCost,
    /// Completion tokens assumed for cost estimates when a request sets no `max_tokens`.
    #[serde(default = "assumed_output_tokens")]
    pub assumed_output_tokens: u32,
}

/// What to do when a request's estimate is over its `max_cost`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OverCost {
    /// Use the costliest tier whose estimate fits.
    #[default]
    Downgrade,
    /// Refuse with `max_cost_exceeded`.
    Reject,
}

impl Default for RawRouting {
    /// The same defaults as an empty `[routing]` table.
    fn default() -> Self {
        Self {
            model: auto(),
            tiers: BTreeMap::new(),
            weak: String::new(),
            strong: String::new(),
            threshold: half(),
            thresholds: BTreeMap::new(),
            scorer: None,
            rules: Vec::new(),
            strong_share: None,
            calibrate_calls: calibrate_calls(),
            on_max_cost: OverCost::default(),
            assumed_output_tokens: assumed_output_tokens(),
        }
    }
}

fn calibrate_calls() -> usize {
    2000
}
fn assumed_output_tokens() -> u32 {
    256
}

fn auto() -> String {
    "auto".to_owned()
}
fn half() -> f64 {
    0.5
}

/// One rule: every condition given must hold.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// The `x-switchyard-task` hint equals this (e.g. `classify`, `summarize`, `short`).
    #[serde(default)]
    pub task: Option<String>,
    /// The request carries tools.
    #[serde(default)]
    pub has_tools: Option<bool>,
    /// The request carries images.
    #[serde(default)]
    pub has_images: Option<bool>,
    /// The prompt is at least this many characters.
    #[serde(default)]
    pub min_prompt_chars: Option<usize>,
    /// The caller's tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Tier to use.
    pub tier: String,
    /// Cascade: when the (local) tier answers with a confidence under `min_confidence`,
    /// escalate to this tier (whole answers only; streams go to it directly).
    #[serde(default)]
    pub escalate_to: Option<String>,
    /// Confidence needed to keep the local answer: the local model's mean token
    /// log-probability (at most 0; -1.0 means tokens at about 37% probability on average).
    #[serde(default)]
    pub min_confidence: Option<f64>,
}

/// A validated policy.
#[derive(Clone)]
pub struct Policy {
    /// As written.
    pub raw: RawRouting,
    scorer: Option<Arc<Scorer>>,
    /// The threshold in force: `raw.threshold`, or the calibrated one.
    threshold: f64,
    calibration: Option<Calibration>,
}

/// The result of calibrating the threshold to a strong-tier share.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Calibration {
    /// The threshold that sends `strong_share` of the calls to the strong tier.
    pub threshold: f64,
    /// Calls it was calibrated on.
    pub calls: usize,
    /// The share those calls would have sent strong at that threshold.
    pub achieved_share: f64,
}

/// Fewest scored calls a calibration trusts; with fewer, `threshold` stays in force.
pub const MIN_CALIBRATION_CALLS: usize = 20;

/// Where a request goes and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Tier name.
    pub tier: String,
    /// Model of the tier.
    pub model: String,
    /// `rule:<n>`, `score`, or `no_scorer`.
    pub reason: String,
    /// The scorer's value, when it ran.
    pub score: Option<f32>,
    /// Cascade: (tier, model, minimum confidence) to escalate to.
    pub escalate: Option<(String, String, f64)>,
}

impl Decision {
    /// The `x-switchyard-route` header value.
    pub fn header(&self) -> String {
        match self.score {
            Some(s) => format!("{}; reason={}; score={s:.2}", self.tier, self.reason),
            None => format!("{}; reason={}", self.tier, self.reason),
        }
    }
}

fn invalid(param: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::param(format!("routing.{}", param.into()), message)
}

impl Policy {
    /// Check a policy against the models that exist (`known` says whether a model name
    /// resolves) and load its scorer.
    pub fn new(raw: RawRouting, known: &dyn Fn(&str) -> bool) -> Result<Self, ApiError> {
        if raw.model.trim().is_empty() {
            return Err(invalid("model", "must not be empty"));
        }
        if known(&raw.model) {
            return Err(invalid(
                "model",
                format!(
                    "`{}` is already a model; routing needs a name of its own",
                    raw.model
                ),
            ));
        }
        if raw.tiers.is_empty() {
            return Err(invalid("tiers", "needs at least one tier"));
        }
        for (tier, model) in &raw.tiers {
            if !known(model) {
                return Err(invalid(
                    format!("tiers.{tier}"),
                    format!("unknown model `{model}`"),
                ));
            }
        }
        for (field, tier) in [("weak", &raw.weak), ("strong", &raw.strong)] {
            if !raw.tiers.contains_key(tier) {
                return Err(invalid(field, format!("`{tier}` is not one of the tiers")));
            }
        }
        let in_range = |v: f64| (0.0..=1.0).contains(&v);
        if !in_range(raw.threshold) {
            return Err(invalid("threshold", "must be in [0, 1]"));
        }
        if raw.strong_share.is_some_and(|s| !in_range(s)) {
            return Err(invalid("strong_share", "must be in [0, 1]"));
        }
        if raw.strong_share.is_some() && raw.scorer.is_none() {
            return Err(invalid(
                "strong_share",
                "needs a `scorer`: the share is calibrated on its scores",
            ));
        }
        if !(MIN_CALIBRATION_CALLS..=100_000).contains(&raw.calibrate_calls) {
            return Err(invalid(
                "calibrate_calls",
                format!("must be between {MIN_CALIBRATION_CALLS} and 100000"),
            ));
        }
        if !(1..=1_000_000).contains(&raw.assumed_output_tokens) {
            return Err(invalid(
                "assumed_output_tokens",
                "must be between 1 and 1000000",
            ));
        }
        for (tenant, t) in &raw.thresholds {
            if !in_range(*t) {
                return Err(invalid(format!("thresholds.{tenant}"), "must be in [0, 1]"));
            }
        }
        for (i, r) in raw.rules.iter().enumerate() {
            if let Some(t) = &r.escalate_to {
                if !raw.tiers.contains_key(t) {
                    return Err(invalid(
                        format!("rules[{i}].escalate_to"),
                        format!("`{t}` is not one of the tiers"),
                    ));
                }
            }
            if r.min_confidence
                .is_some_and(|c| !(-100.0..=0.0).contains(&c))
            {
                return Err(invalid(
                    format!("rules[{i}].min_confidence"),
                    "is a mean log-probability: between -100 and 0",
                ));
            }
            if !raw.tiers.contains_key(&r.tier) {
                return Err(invalid(
                    format!("rules[{i}].tier"),
                    format!("`{}` is not one of the tiers", r.tier),
                ));
            }
        }
        let scorer = match &raw.scorer {
            Some(path) => Some(Arc::new(
                Scorer::load(path).map_err(|e| invalid("scorer", e.to_string()))?,
            )),
            None => None,
        };
        Ok(Self {
            threshold: raw.threshold,
            raw,
            scorer,
            calibration: None,
        })
    }

    /// This policy with its threshold calibrated on recent calls' scorer inputs (newest
    /// first), when it asks for a strong share and there are enough scored calls; otherwise
    /// unchanged.
    pub fn calibrated<'a>(mut self, recent: impl Iterator<Item = &'a [f32]>) -> Self {
        let (Some(share), Some(scorer)) = (self.raw.strong_share, &self.scorer) else {
            return self;
        };
        let mut scores: Vec<f32> = recent
            .filter(|f| f.len() == scorer.weights.len())
            .take(self.raw.calibrate_calls)
            .map(|f| scorer.score(f))
            .collect();
        if scores.len() < MIN_CALIBRATION_CALLS {
            return self;
        }
        scores.sort_by(f32::total_cmp);
        let n = scores.len();
        // The `share` highest scores go strong: the threshold is the lowest of them.
        let strong = ((share * n as f64).round() as usize).min(n);
        let threshold = if strong == 0 {
            // Above every score seen (a score of exactly 1.0 still goes strong).
            1.0
        } else {
            f64::from(scores[n - strong])
        };
        let achieved = scores
            .iter()
            .filter(|&&s| f64::from(s) >= threshold)
            .count();
        self.threshold = threshold;
        self.calibration = Some(Calibration {
            threshold,
            calls: n,
            achieved_share: achieved as f64 / n as f64,
        });
        self
    }

    /// The calibration in force, if any.
    pub fn calibration(&self) -> Option<Calibration> {
        self.calibration
    }

    /// The policy as written plus its calibration, for the admin API.
    pub fn view(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.raw).unwrap_or_default();
        if let Some(obj) = v.as_object_mut() {
            obj.insert(
                "calibration".to_owned(),
                serde_json::to_value(self.calibration).unwrap_or_default(),
            );
        }
        v
    }

    /// Tier names with their models, for `max_cost` downgrades.
    pub fn tiers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.raw.tiers.iter().map(|(t, m)| (t.as_str(), m.as_str()))
    }

    /// A decision for a named tier, with the reason given.
    pub fn to_tier(&self, name: &str, reason: String, score: Option<f32>) -> Decision {
        self.tier(name, reason, score)
    }

    /// Whether a request asks for routing.
    pub fn applies(&self, model: &str) -> bool {
        model == self.raw.model
    }

    /// How many tokens of the request's question the scorer's embedding reads, when there
    /// is a scorer (which needs it).
    pub fn embedding_window(&self) -> Option<usize> {
        self.scorer.as_ref().map(|s| s.window)
    }

    fn tier(&self, name: &str, reason: String, score: Option<f32>) -> Decision {
        Decision {
            tier: name.to_owned(),
            model: self.raw.tiers.get(name).cloned().unwrap_or_default(),
            reason,
            score,
            escalate: None,
        }
    }

    /// Decide from a request's inputs: rules first, then the score.
    pub fn decide(&self, inputs: &RouteInputs) -> Decision {
        self.by_rule(inputs)
            .unwrap_or_else(|| self.by_score(inputs))
    }

    /// Rules that decide without the scorer, if one matches.
    pub fn by_rule(&self, x: &RouteInputs) -> Option<Decision> {
        self.raw.rules.iter().enumerate().find_map(|(i, r)| {
            let ok = r
                .task
                .as_deref()
                .is_none_or(|t| Some(t) == x.task.as_deref())
                && r.has_tools.is_none_or(|v| v == x.tools)
                && r.has_images.is_none_or(|v| v == x.images)
                && r.min_prompt_chars.is_none_or(|n| x.chars >= n)
                && r.tenant.as_deref().is_none_or(|t| t == x.tenant);
            ok.then(|| {
                let mut d = self.tier(&r.tier, format!("rule:{i}"), None);
                d.escalate = r.escalate_to.as_ref().map(|t| {
                    (
                        t.clone(),
                        self.raw.tiers.get(t).cloned().unwrap_or_default(),
                        r.min_confidence.unwrap_or(-1.0),
                    )
                });
                d
            })
        })
    }

    /// Decide by score (needs `x.features`).
    pub fn by_score(&self, x: &RouteInputs) -> Decision {
        let (Some(scorer), Some(f)) = (&self.scorer, &x.features) else {
            return self.tier(&self.raw.weak, "no_scorer".to_owned(), None);
        };
        let score = scorer.score(f);
        let threshold = self
            .raw
            .thresholds
            .get(&x.tenant)
            .copied()
            .unwrap_or(self.threshold);
        let tier = if f64::from(score) >= threshold {
            &self.raw.strong
        } else {
            &self.raw.weak
        };
        self.tier(tier, "score".to_owned(), Some(score))
    }
}

/// What routing looks at, kept with the call's record so the what-if simulator replays
/// exactly what the router saw.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteInputs {
    /// The `x-switchyard-task` hint.
    pub task: Option<String>,
    /// Tools were offered.
    pub tools: bool,
    /// Images were sent.
    pub images: bool,
    /// Characters of [`prompt_text`].
    pub chars: usize,
    /// The caller's tenant.
    pub tenant: String,
    /// The scorer's input ([`switchyard_models::router::features`]), when an embedding was made.
    pub features: Option<Vec<f32>>,
}

impl RouteInputs {
    /// Everything but the features, from the request.
    pub fn of(req: &ChatRequest, task: Option<&str>, tenant: &str) -> Self {
        Self {
            task: task.map(str::to_owned),
            tools: req.tools.as_ref().is_some_and(|t| !t.is_empty()),
            images: req.messages.iter().any(|m| {
                matches!(&m.content, Some(Content::Parts(p)) if p.iter().any(|p| p.kind == "image_url"))
            }),
            chars: prompt_text(req).len(),
            tenant: tenant.to_owned(),
            features: None,
        }
    }
}

/// The text a request is judged on: system prompt and user turns, newest last.
pub fn prompt_text(req: &ChatRequest) -> String {
    req.text_of(|r| matches!(r, Role::System | Role::Developer | Role::User))
}

/// The policy in force, swapped whole.
pub type PolicySlot = Arc<arc_swap::ArcSwapOption<Policy>>;
