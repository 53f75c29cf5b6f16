//! The load generator behind `sealcast-load` (BENCHMARKS.md): drives a real relay binary
//! over real sockets on 127.0.0.1. A crate of its own, so the relay never compiles it. Written on [`sealcast_client::wire`] (its lean codec,
//! [`sealcast_client::wire::lean`], for the many subscriber sockets; its [`Publisher`] for HTTP).
//!
//! - [`relay`]: start the relay from a generated config, or attach to one by pid; `/proc`
//!   readings (resident memory, its peak, CPU seconds).
//! - [`conns`]: `connections` (memory per idle subscribed connection, connect rate) and
//!   `storm` (everyone reconnects at once with `since`).
//! - [`fanout`]: deliveries/s, publish-to-deliver latency, loss, duplicates, CPU.
//! - [`noisy`]: one app's latency with another app idle, then pushing on all its limits
//!   ([`tenant`]: that other app's traffic).
//! - [`stamp`]: real AES-256-GCM payloads carrying their send time.
//! - [`report`]: the table and JSON; any loss or duplicate is a failure.
//! - [`tls`]: `wss://` and `https://` (a generated certificate for a spawned relay, the
//!   clients' trust and TLS sessions); [`dial`]: scenarios generic over `ws://`/`wss://`.
//! - [`broker`]: the relay on Redis or a Redis Cluster (optionally started by the tool),
//!   Redis commands per publication.
//!
//! [`Publisher`]: sealcast_client::wire::Publisher

pub mod broker;
pub mod conns;
pub mod dial;
pub mod fanout;
pub mod noisy;
pub mod procfs;
pub mod relay;
pub mod report;
pub mod stamp;
pub mod sub;
pub mod tenant;
pub mod tls;
