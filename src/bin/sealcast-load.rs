//! `sealcast-load`: drives a real relay over real sockets on 127.0.0.1 and reports memory
//! per connection, connect rate, fan-out throughput and latency, and connect-storm
//! recovery. Exits non-zero if anything was lost or duplicated. See BENCHMARKS.md.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use sealcast::load::conns::{self, StormOptions};
use sealcast::load::fanout::{self, FanoutOptions};
use sealcast::load::relay::{self, Relay, RelaySettings, SECRET_ENV};
use sealcast::load::report::Report;

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
    /// app `load`, key `k1` with the secret in $SEALCAST_LOAD_SECRET.
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
}

#[derive(Subcommand)]
enum Scenario {
    /// Print the relay config the tool would generate, to start a relay for --attach
    /// (with the app secret in $SEALCAST_LOAD_SECRET).
    Config,
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let t = &cli.target;
    let settings = RelaySettings {
        queue_frames: t.queue_frames,
        history_per_channel: t.history_per_channel,
        max_batch: t.max_batch,
        ..RelaySettings::default()
    };
    if matches!(cli.scenario, Scenario::Config) {
        print!("{}", relay::config_toml(&settings));
        return Ok(());
    }
    let fd_limit = relay::raise_fd_limit();
    eprintln!("sealcast-load: open files limit {fd_limit}");
    let relay = match t.attach {
        Some(addr) => {
            let secret = std::env::var(SECRET_ENV)
                .with_context(|| format!("--attach needs the app secret in ${SECRET_ENV}"))?;
            Relay::attach(addr, t.pid.context("--pid")?, secret.into_bytes())
        }
        None => Relay::spawn(&t.relay_bin, &settings).await?,
    };
    eprintln!("sealcast-load: relay pid {} on {}", relay.pid, relay.addr);
    let report = match cli.scenario {
        Scenario::Config => unreachable!("handled above"),
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
    finish(report, cli.json.as_deref())
}

fn finish(report: Report, json: Option<&std::path::Path>) -> anyhow::Result<()> {
    print!("{}", report.table());
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(&report.json())?)?;
    }
    if !report.ok() {
        eprintln!("sealcast-load: FAILED: {}", report.failures.join("; "));
        std::process::exit(1);
    }
    Ok(())
}
