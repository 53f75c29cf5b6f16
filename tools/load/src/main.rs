//! `sealcast-load`: drives a real relay over real sockets on 127.0.0.1 and reports memory
//! per connection, connect rate, fan-out throughput and latency, and connect-storm
//! recovery. Exits non-zero if anything was lost or duplicated. See BENCHMARKS.md.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use sealcast_load::broker::{Broker, BrokerKind, RedisServers};
use sealcast_load::conns::{self, StormOptions};
use sealcast_load::fanout::{self, FanoutOptions};
use sealcast_load::noisy::{self, NoisyOptions, Relays};
use sealcast_load::relay::{
    self, NOISY_SECRET_ENV, Relay, RelaySettings, SECRET_ENV, TenantLimits, TlsMode,
};
use sealcast_load::report::Report;
use sealcast_load::tenant::TenantOptions;
use sealcast_load::tls::TlsClient;

#[derive(Parser)]
#[command(
    name = "sealcast-load",
    about = "Load generator for the sealcast relay"
)]
struct Cli {
    #[command(flatten)]
    target: Target,
    /// Write the reports as JSON to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Args)]
struct Target {
    /// Relay binary to start (ignored with --attach).
    #[arg(long, global = true, default_value = "target/release/sealcast")]
    relay_bin: PathBuf,
    /// Attach to a running relay at this address instead of starting one; it must have
    /// app `load`, key `k1` with the secret in $SEALCAST_LOAD_SECRET (and for `noisy`,
    /// app `noisy`, key `k1` with the secret in $SEALCAST_LOAD_NOISY_SECRET).
    #[arg(long, global = true, requires = "pid")]
    attach: Option<SocketAddr>,
    /// The attached relay's pid, for /proc readings.
    #[arg(long, global = true)]
    pid: Option<u32>,
    /// [websocket] outbound_queue_frames of a started relay.
    #[arg(long, global = true, default_value_t = 1024)]
    queue_frames: usize,
    /// [history] max_per_channel of a started relay.
    #[arg(long, global = true, default_value_t = 1000)]
    history_per_channel: usize,
    /// [http] max_batch of a started relay.
    #[arg(long, global = true, default_value_t = 1000)]
    max_batch: usize,
    /// Sockets opened at once while setting up.
    #[arg(long, global = true, default_value_t = 256)]
    concurrency: usize,
    #[command(flatten)]
    production: Production,
}

/// Production settings: TLS between the clients and the relay, the relay on Redis.
#[derive(Args)]
struct Production {
    /// Serve `wss://` and `https://`: a started relay gets a `[tls]` table with a freshly
    /// generated ECDSA P-256 certificate (its TLS policy stays the relay's defaults) and
    /// every client connects over TLS.
    #[arg(long, global = true, conflicts_with = "attach")]
    tls: bool,
    /// With --attach: the relay serves `wss://` with a certificate issued by this CA (PEM).
    #[arg(long, global = true, requires = "attach")]
    tls_ca: Option<PathBuf>,
    /// With --tls-ca: the name the relay's certificate is checked against (default: the
    /// --attach address).
    #[arg(long, global = true, requires = "tls_ca")]
    tls_name: Option<String>,
    /// Clients resume their TLS sessions when they reconnect (TLS 1.3 tickets, each
    /// client with its own session store, as browsers): the `storm` with and without.
    #[arg(long, global = true)]
    tls_resume: bool,
    /// With --tls: clients check the relay's handshake signature (CertificateVerify) on
    /// one handshake in N, and accept only the certificate made for the started relay.
    /// The relay's work is unchanged (it signs every full handshake); the clients' CPU,
    /// which real clients spend on their own machines, is not taken from the relay's
    /// cores. Default 1: every handshake, as a browser.
    #[arg(long, global = true, default_value_t = 1, requires = "tls", value_parser = clap::value_parser!(u64).range(1..))]
    tls_check_every: u64,
    /// Run a started relay on Redis at this URL (`redis://127.0.0.1:6379`); with
    /// `--broker-kind redis-cluster`, the cluster's seed URLs, comma-separated. With
    /// --attach: the attached relay's Redis, read for `INFO commandstats` only.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        conflicts_with = "redis_server"
    )]
    broker: Vec<String>,
    /// `[broker] kind` of --broker or --redis-server.
    #[arg(long, global = true, value_enum, default_value_t = KindArg::Redis)]
    broker_kind: KindArg,
    /// Start a private redis-server on a free port for the relay (a cluster of three
    /// primaries with `--broker-kind redis-cluster`) and stop it at the end.
    #[arg(long, global = true, conflicts_with = "attach")]
    redis_server: bool,
    /// The redis-server binary of --redis-server.
    #[arg(long, global = true, default_value = "redis-server")]
    redis_server_bin: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum KindArg {
    /// One Redis.
    Redis,
    /// A Redis Cluster.
    RedisCluster,
}

impl KindArg {
    fn kind(self) -> BrokerKind {
        match self {
            KindArg::Redis => BrokerKind::Redis,
            KindArg::RedisCluster => BrokerKind::RedisCluster,
        }
    }
}

#[derive(Subcommand)]
enum Scenario {
    /// Print the relay config the tool would generate, to start a relay for --attach
    /// (with the app secret in $SEALCAST_LOAD_SECRET; with --broker, the Redis URL in
    /// $SEALCAST_LOAD_REDIS_URL; without `[tls]`, add your own).
    Config {
        /// The two-app config of `noisy` (second secret in $SEALCAST_LOAD_NOISY_SECRET).
        #[arg(long)]
        noisy: bool,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Hold N idle, authenticated, subscribed connections; memory per connection, connect rate.
    Connections {
        /// Connections (one process holds up to about 19,900 with a 20,000 fd limit).
        #[arg(long, default_value_t = 1000)]
        conns: usize,
        /// Subscribers per channel.
        #[arg(long, default_value_t = 100)]
        per_channel: usize,
        /// Seconds to hold them after measuring.
        #[arg(long, default_value_t = 0)]
        hold: u64,
    },
    /// Fan-out throughput and publish-to-deliver latency.
    Fanout {
        /// Subscribers.
        #[arg(long, default_value_t = 1000)]
        subs: usize,
        /// Channels (subscribers spread round-robin).
        #[arg(long, default_value_t = 1)]
        channels: usize,
        /// Publications per second in total; 0 = as fast as delivered (under --window).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Publications per request; 1 uses POST /v1/publish.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Requests in flight.
        #[arg(long, default_value_t = 4)]
        publishers: usize,
        /// Seconds of publishing.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Most publications.
        #[arg(long, default_value_t = u64::MAX)]
        count: u64,
        /// Length of the base64 data of each publication.
        #[arg(long, default_value_t = 200)]
        payload_bytes: usize,
        /// Most undelivered publications per subscriber (keep under queue_frames).
        #[arg(long, default_value_t = 256)]
        window: u64,
        /// Seconds of latency discarded at the start.
        #[arg(long, default_value_t = 1)]
        warmup: u64,
        /// One delivery in this many is decrypted and authenticated in full.
        #[arg(long, default_value_t = 64)]
        verify_every: u64,
    },
    /// Noisy neighbour: app `load` fans out (latency measured) with app `noisy` idle, then
    /// with `noisy` pushing on its publish, channel, revocation and subscribe limits.
    Noisy {
        /// Subscribers of app `load` (B), on one channel.
        #[arg(long, default_value_t = 1000)]
        subs: usize,
        /// B's publications per second (single publish).
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        /// Seconds of each phase (A off, then A on).
        #[arg(long, default_value_t = 15)]
        duration: u64,
        /// Seconds of latency discarded at the start of each phase.
        #[arg(long, default_value_t = 2)]
        warmup: u64,
        /// Rounds (a fresh relay each, unless attached).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// B's publish requests in flight.
        #[arg(long, default_value_t = 4)]
        publishers: usize,
        /// One of B's deliveries in this many is decrypted and authenticated in full.
        #[arg(long, default_value_t = 64)]
        verify_every: u64,
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        a: NoisyArgs,
    },
    /// N clients reconnect at once with `since`; time until all recovered, relay peak memory.
    Storm {
        /// Clients.
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Clients per channel.
        #[arg(long, default_value_t = 100)]
        per_channel: usize,
        /// Publications per channel missed while away.
        #[arg(long, default_value_t = 10)]
        missed: usize,
    },
}

/// Per-app limits of the two-app relay of `noisy` (written into its config).
#[derive(Args, Clone, Copy)]
struct LimitArgs {
    /// [limits] publish_rate_per_app (and its burst). The default, 2,000/s in single
    /// publishes, is what this tool can offer on 2 shared cores next to B's 20,000
    /// deliveries/s without becoming the bottleneck itself (see BENCHMARKS.md).
    #[arg(long, default_value_t = 2000)]
    app_publish_rate: u32,
    /// [limits] revoke_rate_per_app (the relay's default).
    #[arg(long, default_value_t = 100)]
    app_revoke_rate: u32,
    /// [limits] revoke_burst_per_app (the relay's default).
    #[arg(long, default_value_t = 100)]
    app_revoke_burst: u32,
    /// [limits] subscribe_rate_per_connection (the relay's default).
    #[arg(long, default_value_t = 20)]
    app_subscribe_rate: u32,
    /// [limits] subscribe_burst_per_connection (the relay's default).
    #[arg(long, default_value_t = 256)]
    app_subscribe_burst: u32,
    /// The noisy app's channel quota (max_channels in its [[apps]] table); small, so
    /// that it is reached within a phase.
    #[arg(long, default_value_t = 1000)]
    app_max_channels: usize,
    /// The noisy app's revocation quota (max_revocations); reached within a phase at the
    /// default revoke rate.
    #[arg(long, default_value_t = 1000)]
    app_max_revocations: usize,
}

impl LimitArgs {
    fn limits(&self) -> TenantLimits {
        TenantLimits {
            publish_rate: self.app_publish_rate.max(1),
            revoke_rate: self.app_revoke_rate.max(1),
            revoke_burst: self.app_revoke_burst.max(1),
            subscribe_rate: self.app_subscribe_rate.max(1),
            subscribe_burst: self.app_subscribe_burst.max(1),
            max_channels: self.app_max_channels,
            max_revocations: self.app_max_revocations,
        }
    }
}

/// What the noisy app (A) does while B is measured.
#[derive(Args)]
struct NoisyArgs {
    /// A offers this many times its publish rate (some answered 429).
    #[arg(long, default_value_t = 1.25)]
    app_overload: f64,
    /// A's publications per request (1 = POST /v1/publish).
    #[arg(long, default_value_t = 1)]
    app_batch: usize,
    /// A's publish requests in flight at most.
    #[arg(long, default_value_t = 64)]
    app_in_flight: usize,
    /// Every this many of A's publications goes to a never-used channel (0: none), so
    /// that A reaches its channel quota (then 503).
    #[arg(long, default_value_t = 2)]
    app_fresh_every: u64,
    /// A's other publications go to this many channels in turn.
    #[arg(long, default_value_t = 16)]
    app_channels: usize,
    /// A offers this many times its revoke rate (429 beyond), until its quota (503).
    #[arg(long, default_value_t = 1.5)]
    app_revoke_overload: f64,
    /// A's connections churning subscriptions (subscribe then unsubscribe, fresh names).
    #[arg(long, default_value_t = 4)]
    app_sub_conns: usize,
    /// Subscribe frames per second on each churning connection.
    #[arg(long, default_value_t = 100.0)]
    app_sub_rate: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let t = &cli.target;
    let p = &t.production;
    // Kept until the end: dropping it stops the private Redis.
    let redis = if p.redis_server {
        let r = RedisServers::start(&p.redis_server_bin, p.broker_kind.kind())?;
        eprintln!(
            "sealcast-load: {} on {}",
            p.broker_kind.kind().name(),
            r.broker.urls.join(",")
        );
        Some(r)
    } else {
        None
    };
    let broker = match &redis {
        Some(r) => Some(r.broker.clone()),
        None if !p.broker.is_empty() => Some(Broker::new(p.broker_kind.kind(), p.broker.clone())),
        None => None,
    };
    let mut settings = RelaySettings {
        queue_frames: t.queue_frames,
        history_per_channel: t.history_per_channel,
        max_batch: t.max_batch,
        tls: p.tls.then_some(TlsMode {
            resume: p.tls_resume,
            check_every: p.tls_check_every,
        }),
        broker: broker.clone(),
        ..RelaySettings::default()
    };
    if let Scenario::Config { noisy, limits } = &cli.scenario {
        settings.tenant = noisy.then(|| limits.limits());
        print!("{}", relay::config_toml(&settings));
        return Ok(());
    }
    let fd_limit = relay::raise_fd_limit();
    eprintln!("sealcast-load: open files limit {fd_limit}");
    if let Scenario::Noisy {
        subs,
        rate,
        duration,
        warmup,
        rounds,
        publishers,
        verify_every,
        limits,
        a,
    } = &cli.scenario
    {
        let l = limits.limits();
        settings.tenant = Some(l);
        let o = NoisyOptions {
            b: FanoutOptions {
                subs: *subs,
                channels: 1,
                rate: *rate,
                batch: 1,
                publishers: *publishers,
                duration: Duration::from_secs(*duration),
                count: u64::MAX,
                payload_bytes: 200,
                window: 256,
                warmup: Duration::from_secs(*warmup),
                verify_every: *verify_every,
                concurrency: t.concurrency,
            },
            a: TenantOptions {
                publish_rate: f64::from(l.publish_rate) * a.app_overload,
                batch: a.app_batch.clamp(1, t.max_batch),
                in_flight: a.app_in_flight,
                fresh_every: a.app_fresh_every,
                channels: a.app_channels,
                revoke_rate: f64::from(l.revoke_rate) * a.app_revoke_overload,
                sub_conns: a.app_sub_conns,
                sub_rate: a.app_sub_rate,
                payload_bytes: 200,
            },
            limits: l,
            rounds: *rounds,
        };
        let report = match t.attach {
            Some(addr) => {
                let relay = attach(addr, t, true, broker)?;
                relay.wait_ready().await?;
                noisy::run(Relays::Attached(&relay), &o).await?
            }
            None => noisy::run(Relays::Spawn(&t.relay_bin, &settings), &o).await?,
        };
        return finish(report, &settings, t, cli.json.as_deref(), redis);
    }
    let relay = match t.attach {
        Some(addr) => {
            let relay = attach(addr, t, false, broker)?;
            relay.wait_ready().await?;
            relay
        }
        None => Relay::spawn(&t.relay_bin, &settings).await?,
    };
    eprintln!(
        "sealcast-load: relay pid {} at {}",
        relay.pid,
        relay.ws_url()
    );
    let report = match cli.scenario {
        Scenario::Config { .. } | Scenario::Noisy { .. } => unreachable!("handled above"),
        Scenario::Connections {
            conns,
            per_channel,
            hold,
        } => {
            conns::connections(
                &relay,
                conns,
                per_channel,
                t.concurrency,
                Duration::from_secs(hold),
            )
            .await?
        }
        Scenario::Fanout {
            subs,
            channels,
            rate,
            batch,
            publishers,
            duration,
            count,
            payload_bytes,
            window,
            warmup,
            verify_every,
        } => {
            let o = FanoutOptions {
                subs,
                channels,
                rate,
                batch: batch.min(t.max_batch),
                publishers,
                duration: Duration::from_secs(duration),
                count,
                payload_bytes,
                window,
                warmup: Duration::from_secs(warmup),
                verify_every,
                concurrency: t.concurrency,
            };
            fanout::run(&relay, &o).await?
        }
        Scenario::Storm {
            clients,
            per_channel,
            missed,
        } => {
            let o = StormOptions {
                clients,
                per_channel,
                missed,
                concurrency: t.concurrency,
                payload_bytes: 200,
            };
            conns::storm(&relay, &o).await?
        }
    };
    drop(relay);
    finish(report, &settings, t, cli.json.as_deref(), redis)
}

/// A running relay, with the app secrets from the environment (over `wss://` with
/// --tls-ca; its Redis read for commandstats with --broker).
fn attach(
    addr: SocketAddr,
    t: &Target,
    noisy: bool,
    broker: Option<Broker>,
) -> anyhow::Result<Relay> {
    let p = &t.production;
    let tls = match &p.tls_ca {
        Some(ca) => {
            let pem = std::fs::read(ca).with_context(|| format!("--tls-ca {}", ca.display()))?;
            let name = p.tls_name.clone().unwrap_or_else(|| addr.ip().to_string());
            Some(TlsClient::new(&pem, &name, p.tls_resume, None)?)
        }
        None => None,
    };
    let secret = std::env::var(SECRET_ENV)
        .with_context(|| format!("--attach needs the app secret in ${SECRET_ENV}"))?;
    let noisy_secret = if noisy {
        let s = std::env::var(NOISY_SECRET_ENV).with_context(|| {
            format!("--attach with noisy needs the second secret in ${NOISY_SECRET_ENV}")
        })?;
        Some(s.into_bytes())
    } else {
        None
    };
    let mut relay = Relay::attach(
        addr,
        t.pid.context("--pid")?,
        secret.into_bytes(),
        noisy_secret,
        tls,
    )?;
    relay.broker = broker;
    Ok(relay)
}

/// Prints the report (with the transport and broker it ran on) and writes its JSON; then
/// stops a private Redis and exits non-zero if the run failed.
fn finish(
    mut report: Report,
    settings: &RelaySettings,
    t: &Target,
    json: Option<&std::path::Path>,
    redis: Option<RedisServers>,
) -> anyhow::Result<()> {
    let p = &t.production;
    let tls = settings.tls.is_some() || p.tls_ca.is_some();
    let mut transport = match (tls, p.tls_resume) {
        (false, _) => "ws",
        (true, false) => "wss",
        (true, true) => "wss+resumption",
    }
    .to_string();
    if tls && p.tls_check_every > 1 {
        transport += &format!(
            " (relay signature checked on 1 in {} handshakes)",
            p.tls_check_every
        );
    }
    let broker = match &settings.broker {
        Some(b) => b.kind.name(),
        None if t.attach.is_some() => "(attached)",
        None => "memory",
    };
    report.prepend("broker", broker, "");
    report.prepend("transport", transport, "");
    print!("{}", report.table());
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(&report.json())?)?;
    }
    drop(redis);
    if !report.ok() {
        eprintln!("sealcast-load: FAILED: {}", report.failures.join("; "));
        std::process::exit(1);
    }
    Ok(())
}
