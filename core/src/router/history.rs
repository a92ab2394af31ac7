//! Versions of the routing policy, kept in sled: every policy applied (from the config file,
//! `PUT /admin/routing/policy` or a rollback) is a numbered version, so an operator can see
//! what changed when and go back to any earlier one. A policy applied through the API
//! outlives a restart as long as the config file's `[routing]` is the one it was applied over.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::policy::RawRouting;
use crate::ledger::StoreError;

/// Versions kept; older ones are dropped.
const KEEP: usize = 200;

/// Where a version came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The config file's `[routing]` at start.
    Config,
    /// `PUT /admin/routing/policy`.
    Api,
    /// `POST /admin/routing/rollback`.
    Rollback,
}

/// One applied policy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PolicyVersion {
    /// 1, 2, 3, … in the order applied.
    pub version: u64,
    /// When, RFC 3339.
    pub applied_at: String,
    /// Where it came from.
    pub source: Source,
    /// For a rollback: the version it restored.
    pub restored: Option<u64>,
    /// The policy (`None`: routing off).
    pub policy: Option<RawRouting>,
    /// Digest of the config file's `[routing]` it was applied over.
    pub config_digest: String,
}

/// The version log (one sled tree, keyed by big-endian version).
#[derive(Clone)]
pub struct PolicyHistory {
    tree: sled::Tree,
    /// Serialises "install, then record": concurrent applies get distinct versions, and the
    /// newest version is always the policy in force.
    order: std::sync::Arc<std::sync::Mutex<()>>,
}

/// A stable digest of the config file's `[routing]` table.
pub fn config_digest(raw: Option<&RawRouting>) -> String {
    let json = serde_json::to_vec(&raw).unwrap_or_default();
    hex::encode(&Sha256::digest(&json)[..12])
}

impl PolicyHistory {
    /// Open the tree.
    pub fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(Self {
            tree: db.open_tree("routing_policies")?,
            order: std::sync::Arc::default(),
        })
    }

    fn decode(v: &[u8]) -> Result<PolicyVersion, StoreError> {
        Ok(serde_json::from_slice(v)?)
    }

    /// The newest version.
    pub fn latest(&self) -> Result<Option<PolicyVersion>, StoreError> {
        self.tree.last()?.map(|(_, v)| Self::decode(&v)).transpose()
    }

    /// One version.
    pub fn get(&self, version: u64) -> Result<Option<PolicyVersion>, StoreError> {
        self.tree
            .get(version.to_be_bytes())?
            .map(|v| Self::decode(&v))
            .transpose()
    }

    /// Newest first.
    pub fn list(&self, limit: usize) -> Result<Vec<PolicyVersion>, StoreError> {
        self.tree
            .iter()
            .rev()
            .take(limit)
            .map(|item| Self::decode(&item?.1))
            .collect()
    }

    /// Append a version and make it durable before answering.
    pub fn record(
        &self,
        policy: Option<RawRouting>,
        source: Source,
        restored: Option<u64>,
        config_digest: &str,
    ) -> Result<PolicyVersion, StoreError> {
        self.install_and_record(policy, source, restored, config_digest, || {})
    }

    /// Put a policy in force (`install`) and record it as the next version, one apply at a
    /// time.
    pub fn install_and_record(
        &self,
        policy: Option<RawRouting>,
        source: Source,
        restored: Option<u64>,
        config_digest: &str,
        install: impl FnOnce(),
    ) -> Result<PolicyVersion, StoreError> {
        let _one_at_a_time = self.order.lock().unwrap_or_else(|e| e.into_inner());
        install();
        let version = self.latest()?.map_or(1, |v| v.version + 1);
        let v = PolicyVersion {
            version,
            applied_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            source,
            restored,
            policy,
            config_digest: config_digest.to_owned(),
        };
        self.tree
            .insert(version.to_be_bytes(), serde_json::to_vec(&v)?)?;
        while self.tree.len() > KEEP {
            if self.tree.pop_min()?.is_none() {
                break;
            }
        }
        self.tree.flush()?;
        Ok(v)
    }

    /// The policy to start with: the last one applied over this same config `[routing]`
    /// (through the API or a rollback), else the config's own, recorded as a new version when
    /// it differs from the newest.
    pub fn startup(&self, config: Option<&RawRouting>) -> Result<PolicyVersion, StoreError> {
        let digest = config_digest(config);
        match self.latest()? {
            Some(v) if v.config_digest == digest => Ok(v),
            _ => self.record(config.cloned(), Source::Config, None, &digest),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(threshold: f64) -> RawRouting {
        RawRouting {
            threshold,
            ..RawRouting::default()
        }
    }

    #[test]
    fn api_versions_survive_a_restart_until_the_config_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path()).expect("sled");
        let h = PolicyHistory::open(&db).expect("tree");
        let cfg = raw(0.5);
        let first = h.startup(Some(&cfg)).expect("startup");
        assert_eq!((first.version, first.source), (1, Source::Config));
        // The same config again: nothing new.
        assert_eq!(h.startup(Some(&cfg)).expect("startup").version, 1);
        let digest = config_digest(Some(&cfg));
        let api = h
            .record(Some(raw(0.8)), Source::Api, None, &digest)
            .expect("record");
        assert_eq!(api.version, 2);
        // Restart over the same config: the API's version stays in force.
        let again = h.startup(Some(&cfg)).expect("startup");
        assert_eq!(again.policy, Some(raw(0.8)));
        // A changed config file wins and becomes version 3.
        let changed = h.startup(Some(&raw(0.3))).expect("startup");
        assert_eq!((changed.version, changed.source), (3, Source::Config));
        let list = h.list(10).expect("list");
        assert_eq!(
            list.iter().map(|v| v.version).collect::<Vec<_>>(),
            [3, 2, 1]
        );
        assert_eq!(
            h.get(2).expect("get").map(|v| v.policy),
            Some(Some(raw(0.8)))
        );
    }
}
