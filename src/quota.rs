//! Per-app quotas: what one tenant may hold of the relay's shared memory (channels with
//! state, history bytes, live revocations). Defaults come from `[limits]`; an app may
//! override them in its `[[apps]]` table. Reloaded with the apps on SIGHUP.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::protocol::AppId;

/// One app's quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppQuota {
    /// Channels with state (`limits.max_channels_per_app`).
    pub max_channels: usize,
    /// History bytes (`limits.max_history_bytes_per_app`).
    pub max_history_bytes: usize,
    /// Live revocations (`limits.max_revocations_per_app`).
    pub max_revocations: usize,
}

/// An `[[apps]]` table's overrides of the `[limits]` defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaOverride {
    /// Overrides `limits.max_channels_per_app`.
    pub max_channels: Option<usize>,
    /// Overrides `limits.max_history_bytes_per_app`.
    pub max_history_bytes: Option<usize>,
    /// Overrides `limits.max_revocations_per_app`.
    pub max_revocations: Option<usize>,
}

impl AppQuota {
    fn with(self, o: &QuotaOverride) -> AppQuota {
        AppQuota {
            max_channels: o.max_channels.unwrap_or(self.max_channels),
            max_history_bytes: o.max_history_bytes.unwrap_or(self.max_history_bytes),
            max_revocations: o.max_revocations.unwrap_or(self.max_revocations),
        }
    }
}

/// Every app's quotas, replaceable while the relay runs.
#[derive(Debug)]
pub struct Quotas {
    default: ArcSwap<AppQuota>,
    per_app: ArcSwap<HashMap<AppId, AppQuota>>,
}

impl Quotas {
    /// The same quota for every app.
    pub fn uniform(quota: AppQuota) -> Arc<Quotas> {
        Arc::new(Quotas {
            default: ArcSwap::from_pointee(quota),
            per_app: ArcSwap::from_pointee(HashMap::new()),
        })
    }

    /// The quotas a config gives.
    pub fn from_config(config: &Config) -> Arc<Quotas> {
        let q = Quotas::uniform(default_of(config));
        q.reload(config);
        q
    }

    /// Takes the quotas of a freshly loaded config.
    pub fn reload(&self, config: &Config) {
        let default = default_of(config);
        let per_app = config
            .apps
            .iter()
            .map(|a| (a.id.clone(), default.with(&a.quota)))
            .collect();
        self.default.store(Arc::new(default));
        self.per_app.store(Arc::new(per_app));
    }

    /// `app`'s quotas.
    pub fn of(&self, app: &AppId) -> AppQuota {
        self.per_app
            .load()
            .get(app)
            .copied()
            .unwrap_or_else(|| **self.default.load())
    }
}

fn default_of(config: &Config) -> AppQuota {
    AppQuota {
        max_channels: config.limits.max_channels_per_app,
        max_history_bytes: config.limits.max_history_bytes_per_app,
        max_revocations: config.limits.max_revocations_per_app,
    }
}
