//! Tenant isolation under hostile load, over the real binary: no budget shared by every
//! app (or every client) that one app, one leaked token or one silent socket can exhaust.
//! Each module is one family of budgets; each test would fail on a relay that shares it.

#[path = "../common/mod.rs"]
mod common;

mod channels;
mod history;
mod http;
mod keys;
mod redis_db;
mod revocation;
mod tls;
