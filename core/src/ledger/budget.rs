//! Daily spend budgets per tenant and per API key: checked before a call, reconciled with the
//! call's real cost after it. Spend survives restarts (it is reloaded from the day's totals).

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::json;

use super::events::Event;
use super::record::{pusd_to_usd, Totals};
use crate::config::{BudgetSpec, BudgetsConfig, HardAction};

/// What a budget is kept for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// A tenant.
    Tenant,
    /// An API key.
    Key,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Self::Tenant => "tenant",
            Self::Key => "key",
        }
    }
}

#[derive(Debug, Default, Clone)]
struct DaySpend {
    day: String,
    pusd: u64,
    soft_fired: bool,
    hard_fired: bool,
}

/// The decision before a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead.
    Allow,
    /// Refuse: the hard level is reached.
    Reject {
        /// Which budget.
        what: String,
    },
    /// Serve chat with this model instead.
    Downgrade {
        /// Which budget.
        what: String,
        /// Model to use.
        model: String,
    },
}

/// Budgets and today's spend.
pub struct Budgets {
    cfg: BudgetsConfig,
    spend: Mutex<HashMap<(Scope, String), DaySpend>>,
}

impl Budgets {
    /// From configuration.
    pub fn new(cfg: BudgetsConfig) -> Self {
        Self {
            cfg,
            spend: Mutex::new(HashMap::new()),
        }
    }

    /// Whether any budget is configured (the request path skips everything otherwise).
    pub fn is_empty(&self) -> bool {
        self.cfg.tenants.is_empty() && self.cfg.keys.is_empty()
    }

    fn spec(&self, scope: Scope, name: &str) -> Option<&BudgetSpec> {
        match scope {
            Scope::Tenant => self.cfg.tenants.get(name),
            Scope::Key => self.cfg.keys.get(name),
        }
    }

    /// Seed today's spend from the stored daily totals.
    pub fn load_day(
        &self,
        day: &str,
        totals: &std::collections::BTreeMap<String, std::collections::BTreeMap<String, Totals>>,
    ) {
        let Ok(mut spend) = self.spend.lock() else {
            return;
        };
        for (scope, dim) in [(Scope::Tenant, "tenant"), (Scope::Key, "key")] {
            for (name, t) in totals.get(dim).into_iter().flatten() {
                let Some(spec) = self.spec(scope, name) else {
                    continue;
                };
                spend.insert(
                    (scope, name.clone()),
                    DaySpend {
                        day: day.to_owned(),
                        pusd: t.cost_pusd,
                        soft_fired: spec.soft.is_some_and(|s| t.cost_pusd >= s),
                        hard_fired: spec.hard.is_some_and(|h| t.cost_pusd >= h),
                    },
                );
            }
        }
    }

    fn spent(&self, scope: Scope, name: &str, day: &str) -> u64 {
        self.spend
            .lock()
            .ok()
            .and_then(|s| s.get(&(scope, name.to_owned())).cloned())
            .filter(|d| d.day == day)
            .map_or(0, |d| d.pusd)
    }

    /// Decide before a call by `tenant` with `key_id`.
    pub fn check(&self, tenant: &str, key_id: Option<&str>, day: &str) -> Verdict {
        if self.is_empty() {
            return Verdict::Allow;
        }
        let scopes = [(Scope::Key, key_id), (Scope::Tenant, Some(tenant))];
        for (scope, name) in scopes {
            let Some(name) = name else { continue };
            let Some(spec) = self.spec(scope, name) else {
                continue;
            };
            let Some(hard) = spec.hard else { continue };
            if self.spent(scope, name, day) >= hard {
                let what = format!("{} `{name}`", scope.as_str());
                return match (spec.on_hard, &spec.downgrade_to) {
                    (HardAction::Downgrade, Some(model)) => Verdict::Downgrade {
                        what,
                        model: model.clone(),
                    },
                    _ => Verdict::Reject { what },
                };
            }
        }
        Verdict::Allow
    }

    /// Add a finished call's cost; returns the events of any level crossed.
    pub fn reconcile(
        &self,
        tenant: &str,
        key_id: Option<&str>,
        day: &str,
        cost: u64,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        if self.is_empty() || cost == 0 {
            return events;
        }
        let Ok(mut spend) = self.spend.lock() else {
            return events;
        };
        for (scope, name) in [(Scope::Key, key_id), (Scope::Tenant, Some(tenant))] {
            let Some(name) = name else { continue };
            let Some(spec) = self.spec(scope, name) else {
                continue;
            };
            let entry = spend.entry((scope, name.to_owned())).or_default();
            if entry.day != day {
                *entry = DaySpend {
                    day: day.to_owned(),
                    ..DaySpend::default()
                };
            }
            entry.pusd = entry.pusd.saturating_add(cost);
            let level = |kind: &str, limit: u64| {
                Event::new(
                    kind,
                    json!({
                        "scope": scope.as_str(),
                        "name": name,
                        "day": day,
                        "spent_usd": pusd_to_usd(entry.pusd),
                        "limit_usd": pusd_to_usd(limit),
                        "action": match kind {
                            "budget.hard_limit_reached" => match spec.on_hard {
                                HardAction::Reject => "reject",
                                HardAction::Downgrade => "downgrade",
                            },
                            _ => "warn",
                        },
                    }),
                )
            };
            if let Some(soft) = spec.soft {
                if !entry.soft_fired && entry.pusd >= soft {
                    events.push(level("budget.soft_limit_reached", soft));
                    entry.soft_fired = true;
                }
            }
            if let Some(hard) = spec.hard {
                if !entry.hard_fired && entry.pusd >= hard {
                    events.push(level("budget.hard_limit_reached", hard));
                    entry.hard_fired = true;
                }
            }
        }
        events
    }

    /// Today's spend against each configured budget, for `/admin/stats`.
    pub fn view(&self, day: &str) -> serde_json::Value {
        let mut out = Vec::new();
        for (scope, map) in [
            (Scope::Tenant, &self.cfg.tenants),
            (Scope::Key, &self.cfg.keys),
        ] {
            for (name, spec) in map {
                let spent = self.spent(scope, name, day);
                out.push(json!({
                    "scope": scope.as_str(),
                    "name": name,
                    "spent_usd": pusd_to_usd(spent),
                    "soft_usd": spec.soft.map(pusd_to_usd),
                    "hard_usd": spec.hard.map(pusd_to_usd),
                    "over_soft": spec.soft.is_some_and(|s| spent >= s),
                    "over_hard": spec.hard.is_some_and(|h| spent >= h),
                }));
            }
        }
        serde_json::Value::Array(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budgets() -> Budgets {
        let mut cfg = BudgetsConfig::default();
        cfg.tenants.insert(
            "acme".to_owned(),
            BudgetSpec {
                soft: Some(50),
                hard: Some(100),
                on_hard: HardAction::Reject,
                downgrade_to: None,
            },
        );
        cfg.keys.insert(
            "k1".to_owned(),
            BudgetSpec {
                soft: None,
                hard: Some(30),
                on_hard: HardAction::Downgrade,
                downgrade_to: Some("local/smollm2".to_owned()),
            },
        );
        Budgets::new(cfg)
    }

    #[test]
    fn levels_fire_once_and_enforce() {
        let b = budgets();
        let d = "2026-01-01";
        assert_eq!(b.check("acme", None, d), Verdict::Allow);
        assert!(b.reconcile("acme", None, d, 40).is_empty());
        let ev = b.reconcile("acme", None, d, 20);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].kind, "budget.soft_limit_reached");
        assert!(b.reconcile("acme", None, d, 1).is_empty(), "fires once");
        let ev = b.reconcile("acme", None, d, 50);
        assert_eq!(ev[0].kind, "budget.hard_limit_reached");
        assert!(matches!(b.check("acme", None, d), Verdict::Reject { .. }));
        // A new day starts from zero.
        assert_eq!(b.check("acme", None, "2026-01-02"), Verdict::Allow);
        // The key's hard level downgrades instead.
        b.reconcile("other", Some("k1"), d, 30);
        assert!(matches!(
            b.check("other", Some("k1"), d),
            Verdict::Downgrade { model, .. } if model == "local/smollm2"
        ));
    }
}
