//! Delivery on a Redis Cluster: one RESP3 pub/sub connection per shard primary, and a
//! sharded subscription (`SSUBSCRIBE`) per relay channel that this relay's clients follow.
//!
//! - A subscribe registers the session in the local hub, then [`Shards::listen_to`]
//!   `SSUBSCRIBE`s the channel on the primary that owns its slot and waits for the
//!   confirmation, then the broker reads the position and replay: the single-server
//!   argument (parent module) holds per channel, since one primary executes the channel's
//!   scripts and its `SPUBLISH`es in one order and one connection delivers them in it.
//! - A shard's connection that drops (`Disconnection` push), stops answering `PING`, or
//!   whose slots moved to another primary (failover, resharding: the slot map is re-read
//!   every tick) closes the local subscribers of *that shard's* channels with 1011; they
//!   reconnect and recover from the history. The subscribe that overlapped it fails.
//! - Revocations: a sharded channel in the revocation slot, subscribed while ready; every
//!   (re)subscription reloads the stored revocations first.
//! - Canary: every tick this relay `SPUBLISH`es a sequence number on a private channel in
//!   each primary's slots and listens for it on that shard's connection; the round trip is
//!   `sealcast_broker_canary_rtt_us{name="host:port"}`, and a shard whose canary has not come
//!   back for 5 s (`canary.rs`) makes the relay not ready (so no load balancer keeps
//!   sending clients to a relay whose delivery is broken).
//! - Channels nobody follows here any more are `SUNSUBSCRIBE`d on the sweep.
//!
//! One relay thus receives only its clients' channels: a publication costs its shard one
//! delivery per relay that follows the channel, so the cluster-wide ceiling grows with the
//! shards (each shard's primary carries its own channels) rather than being one server's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{ConnectionAddr, ConnectionInfo, PushInfo, PushKind, Value};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use super::commands::Commands;
use super::layout::Layout;
use super::message::{Inbound, MAX_BURST};
use super::revocations::{REVOCATION_MESSAGE, load_revocations, parse_revocation_message};
use super::{COMMAND_TIMEOUT, unavailable};
use crate::broker::{BrokerError, RevocationHook};
use crate::hub::{ChannelKey, Hub};
use crate::protocol::CloseCode;
use crate::telemetry::Metrics;
use canary::Canary;
use slots::{owner, parse_slots, primaries};

mod canary;
mod slots;

/// How often the slot map, the shards' connections and the canaries are checked.
const TICK: Duration = Duration::from_secs(1);

/// A shard primary, `(host, port)`.
type Addr = (String, u16);

/// This relay's delivery from a Redis Cluster.
pub(super) struct Shards {
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    commands: Commands,
    /// The first seed's connection settings (credentials, TLS), used for every node.
    seed: ConnectionInfo,
    layout: Layout,
    /// A random id naming this relay's canary channels.
    relay_id: String,
    state: tokio::sync::Mutex<State>,
    canaries: parking_lot::Mutex<HashMap<String, Canary>>,
    ready: AtomicBool,
    revoke: OnceLock<RevocationHook>,
    next_node: AtomicU64,
    me: Weak<Shards>,
}

#[derive(Default)]
struct State {
    /// Each primary's slot ranges, from `CLUSTER SLOTS`.
    ranges: Vec<(u16, u16, Addr)>,
    nodes: HashMap<Addr, Node>,
    /// Each followed channel, with the node connection it is subscribed on.
    channels: HashMap<ChannelKey, (Addr, u64)>,
    /// The node connection the revocation channel is subscribed on.
    revocations: Option<(Addr, u64)>,
}

struct Node {
    id: u64,
    conn: MultiplexedConnection,
}

impl Shards {
    pub(super) fn new(
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        commands: Commands,
        seed: ConnectionInfo,
        layout: Layout,
    ) -> Arc<Shards> {
        Arc::new_cyclic(|me| Shards {
            hub,
            metrics,
            commands,
            seed,
            layout,
            relay_id: hex::encode(rand::random::<[u8; 6]>()),
            state: tokio::sync::Mutex::new(State::default()),
            canaries: parking_lot::Mutex::new(HashMap::new()),
            ready: AtomicBool::new(false),
            revoke: OnceLock::new(),
            next_node: AtomicU64::new(1),
            me: me.clone(),
        })
    }

    pub(super) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Subscribes this relay to `key`'s sharded channel (once, whatever the number of local
    /// subscribers) and returns the node connection's id, for [`Shards::still_listening`].
    pub(super) async fn listen_to(&self, key: &ChannelKey) -> Result<u64, BrokerError> {
        let mut st = self.state.lock().await;
        if let Some((_, id)) = st.channels.get(key) {
            return Ok(*id);
        }
        let name = self.layout.shard_channel(key);
        let (addr, id) = self.ssubscribe(&mut st, Layout::slot(key), &name).await?;
        st.channels.insert(key.clone(), (addr, id));
        Ok(id)
    }

    /// Whether `key` is still subscribed on the node connection `id` (nothing was lost
    /// since [`Shards::listen_to`]).
    pub(super) async fn still_listening(&self, key: &ChannelKey, id: u64) -> bool {
        let st = self.state.lock().await;
        st.channels.get(key).is_some_and(|(_, n)| *n == id)
    }

    /// `SSUBSCRIBE`s `name` on the primary of `slot`, re-reading the slot map once if the
    /// node refuses (`MOVED`) or cannot be reached.
    async fn ssubscribe(
        &self,
        st: &mut State,
        slot: u16,
        name: &str,
    ) -> Result<(Addr, u64), BrokerError> {
        let mut last = None;
        for attempt in 0..2 {
            if attempt > 0 || owner(&st.ranges, slot).is_none() {
                self.refresh(st).await?;
            }
            let Some(addr) = owner(&st.ranges, slot) else {
                return Err(BrokerError::Unavailable);
            };
            let (id, mut conn) = match self.node(st, &addr).await {
                Ok(n) => n,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            let cmd = redis::cmd("SSUBSCRIBE").arg(name).clone();
            let sub = cmd.exec_async(&mut conn);
            match tokio::time::timeout(COMMAND_TIMEOUT, sub).await {
                Ok(Ok(())) => return Ok((addr, id)),
                Ok(Err(e)) => last = Some(e),
                Err(_) => {
                    last = Some(redis::RedisError::from(std::io::Error::from(
                        std::io::ErrorKind::TimedOut,
                    )))
                }
            }
        }
        Err(match last {
            Some(e) => unavailable(&self.metrics, "ssubscribe", &e),
            None => BrokerError::Unavailable,
        })
    }

    /// The connection to a primary, opened (with its reader task) if needed.
    async fn node(
        &self,
        st: &mut State,
        addr: &Addr,
    ) -> redis::RedisResult<(u64, MultiplexedConnection)> {
        if let Some(n) = st.nodes.get(addr) {
            return Ok((n.id, n.conn.clone()));
        }
        let info = self.node_info(addr);
        let (tx, rx) = unbounded_channel();
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_push_sender(tx);
        let client = redis::Client::open(info)?;
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let id = self.next_node.fetch_add(1, Ordering::Relaxed);
        st.nodes.insert(
            addr.clone(),
            Node {
                id,
                conn: conn.clone(),
            },
        );
        tokio::spawn(read_node(self.me.clone(), addr.clone(), id, rx));
        Ok((id, conn))
    }

    /// The seed's settings aimed at another node, speaking RESP3 (push messages).
    fn node_info(&self, (host, port): &Addr) -> ConnectionInfo {
        let addr = match self.seed.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host: host.clone(),
                port: *port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host.clone(), *port),
        };
        let settings = self
            .seed
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        self.seed
            .clone()
            .set_addr(addr)
            .set_redis_settings(settings)
    }

    /// Re-reads the slot map; channels (and the revocation subscription) whose slot now has
    /// another primary than the one they are subscribed on are dropped, their subscribers
    /// closed with 1011.
    async fn refresh(&self, st: &mut State) -> Result<(), BrokerError> {
        let mut commands = self.commands.clone();
        let slots = tokio::time::timeout(
            COMMAND_TIMEOUT,
            redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async(&mut commands),
        )
        .await
        .map_err(|_| BrokerError::Unavailable)?
        .map_err(|e| unavailable(&self.metrics, "cluster slots", &e))?;
        let ranges = parse_slots(&slots).ok_or(BrokerError::Unavailable)?;
        if ranges == st.ranges {
            return Ok(());
        }
        st.ranges = ranges;
        let moved: Vec<ChannelKey> = st
            .channels
            .iter()
            .filter(|(k, (a, _))| owner(&st.ranges, Layout::slot(k)).as_ref() != Some(a))
            .map(|(k, _)| k.clone())
            .collect();
        for key in moved {
            st.channels.remove(&key);
            self.hub.close_channel(&key, CloseCode::BrokerUnavailable);
        }
        if let Some((a, _)) = &st.revocations
            && owner(&st.ranges, self.layout.revocation_slot()).as_ref() != Some(a)
        {
            st.revocations = None;
        }
        self.canaries
            .lock()
            .retain(|_, c| owner(&st.ranges, c.slot).as_ref() == Some(&c.addr));
        Ok(())
    }

    /// A node connection was lost: its channels' subscribers are closed (1011), the
    /// revocation subscription is redone if it was there, and its canary forgotten.
    async fn node_lost(&self, addr: &Addr, id: u64) {
        let mut st = self.state.lock().await;
        if st.nodes.get(addr).is_some_and(|n| n.id == id) {
            st.nodes.remove(addr);
        }
        let lost: Vec<ChannelKey> = st
            .channels
            .iter()
            .filter(|(_, (_, n))| *n == id)
            .map(|(k, _)| k.clone())
            .collect();
        let mut closed = 0;
        for key in &lost {
            st.channels.remove(key);
            closed += self.hub.close_channel(key, CloseCode::BrokerUnavailable);
        }
        if st.revocations.as_ref().is_some_and(|(_, n)| *n == id) {
            st.revocations = None;
            self.ready.store(false, Ordering::Release);
            self.metrics.broker_up.set(0);
        }
        self.canaries.lock().retain(|_, c| c.node != id);
        self.metrics.broker_disconnects.inc();
        tracing::warn!(
            shard = %format!("{}:{}", addr.0, addr.1),
            channels = lost.len(),
            closed,
            "Redis Cluster shard connection lost: its channels' subscribers closed to recover"
        );
    }

    /// The server ended a channel's subscription on node connection `id`: its local
    /// subscribers are closed (1011) to recover, as for a lost connection.
    async fn dropped(&self, name: &[u8], id: u64) {
        let Some(key) = std::str::from_utf8(name)
            .ok()
            .and_then(|n| self.layout.channel_of(n))
        else {
            return;
        };
        let mut st = self.state.lock().await;
        if st.channels.get(&key).is_some_and(|(_, n)| *n == id) {
            st.channels.remove(&key);
            self.hub.close_channel(&key, CloseCode::BrokerUnavailable);
        }
    }

    /// One message from a shard connection: a publication joins `inbound` (relayed in
    /// batches, `message.rs`); a revocation is applied after what came before it.
    fn on_message<'a>(&self, channel: &[u8], payload: &'a [u8], inbound: &mut Inbound<'a>) {
        if let Some(rev) = payload.strip_prefix(REVOCATION_MESSAGE.as_bytes()) {
            if channel == self.layout.revocation_channel().0.as_bytes()
                && let Some(apply) = self.revoke.get()
            {
                inbound.flush(&self.hub);
                match parse_revocation_message(rev) {
                    Some(r) => apply(&r),
                    None => {
                        self.metrics.broker_malformed_messages.inc();
                    }
                }
            }
            return;
        }
        let Ok(name) = std::str::from_utf8(channel) else {
            return;
        };
        if let Some(c) = self.canaries.lock().get_mut(name) {
            self.canary_back(c, payload);
            return;
        }
        inbound.add(payload, &self.metrics);
    }

    /// `SUNSUBSCRIBE`s the channels this relay no longer follows (from the sweep).
    pub(super) async fn prune(&self) {
        let mut st = self.state.lock().await;
        let unused: Vec<ChannelKey> = st
            .channels
            .keys()
            .filter(|k| !self.hub.has_subscribers(k))
            .cloned()
            .collect();
        for key in unused {
            let Some((addr, _)) = st.channels.remove(&key) else {
                continue;
            };
            if let Some(node) = st.nodes.get(&addr) {
                let mut conn = node.conn.clone();
                let name = self.layout.shard_channel(&key);
                let cmd = redis::cmd("SUNSUBSCRIBE").arg(name).clone();
                let unsub = cmd.exec_async(&mut conn);
                // A failure leaves a subscription whose messages find no local subscriber.
                let _ = tokio::time::timeout(COMMAND_TIMEOUT, unsub).await;
            }
        }
    }

    /// The supervisor: waits for the revocation hook, then every [`TICK`] checks the
    /// commands, the slot map, the node connections, the revocation subscription and the
    /// canaries, and sets readiness. Ends when the broker is dropped.
    pub(super) async fn supervise(
        weak: Weak<Shards>,
        mut hook: tokio::sync::watch::Receiver<Option<RevocationHook>>,
    ) {
        let revoke: RevocationHook = match hook.wait_for(Option::is_some).await {
            Ok(h) => h.as_ref().map(Arc::clone).expect("waited for"),
            Err(_) => return,
        };
        if let Some(s) = weak.upgrade() {
            let _ = s.revoke.set(revoke);
        }
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(s) = weak.upgrade() else { return };
            let ready = s.check().await;
            let was = s.ready.swap(ready, Ordering::AcqRel);
            s.metrics.broker_up.set(i64::from(ready));
            if was != ready {
                tracing::info!(ready, "Redis Cluster broker readiness changed");
            }
        }
    }

    /// One supervisor pass; true when everything works.
    async fn check(&self) -> bool {
        let mut st = self.state.lock().await;
        if self.refresh(&mut st).await.is_err() {
            return false;
        }
        // A node that stops answering is treated as lost.
        let nodes: Vec<(Addr, u64, MultiplexedConnection)> = st
            .nodes
            .iter()
            .map(|(a, n)| (a.clone(), n.id, n.conn.clone()))
            .collect();
        drop(st);
        for (addr, id, mut conn) in nodes {
            let cmd = redis::cmd("PING");
            let ping = cmd.query_async::<Value>(&mut conn);
            if !matches!(tokio::time::timeout(COMMAND_TIMEOUT, ping).await, Ok(Ok(_))) {
                self.node_lost(&addr, id).await;
            }
        }
        let mut st = self.state.lock().await;
        if st.revocations.is_none() && !self.resubscribe_revocations(&mut st).await {
            return false;
        }
        let primaries = primaries(&st.ranges);
        let mut healthy = true;
        for (addr, (first, last)) in primaries {
            healthy &= self.canary(&mut st, &addr, first, last).await;
        }
        healthy
    }

    async fn resubscribe_revocations(&self, st: &mut State) -> bool {
        let Some(apply) = self.revoke.get() else {
            return false;
        };
        let (name, _) = self.layout.revocation_channel();
        let Ok(sub) = self
            .ssubscribe(st, self.layout.revocation_slot(), &name)
            .await
        else {
            return false;
        };
        let mut commands = self.commands.clone();
        let prefix = self.layout.revocation_prefix();
        let loaded = load_revocations(
            &mut commands,
            &prefix,
            self.layout.revocation_slot(),
            &**apply,
        );
        match tokio::time::timeout(COMMAND_TIMEOUT * 5, loaded).await {
            Ok(Ok(())) => {
                st.revocations = Some(sub);
                true
            }
            Ok(Err(e)) => {
                unavailable(&self.metrics, "load revocations", &e);
                false
            }
            Err(_) => false,
        }
    }
}

/// Reads one node connection's pushes, in order, taking what is already queued at once
/// (up to [`MAX_BURST`]) so that publications are relayed in batches; ends when the
/// connection is lost.
async fn read_node(weak: Weak<Shards>, addr: Addr, id: u64, mut rx: UnboundedReceiver<PushInfo>) {
    let mut burst = Vec::with_capacity(MAX_BURST);
    while rx.recv_many(&mut burst, MAX_BURST).await > 0 {
        let Some(shards) = weak.upgrade() else { return };
        let mut inbound = Inbound::default();
        for push in &burst {
            match push.kind {
                PushKind::SMessage => {
                    if let [Value::BulkString(channel), Value::BulkString(payload)] = &push.data[..]
                    {
                        shards.on_message(channel, payload, &mut inbound);
                    }
                }
                PushKind::Disconnection => {
                    inbound.flush(&shards.hub);
                    shards.node_lost(&addr, id).await;
                    return;
                }
                // The server dropped a subscription (its slot moved away). Our own
                // SUNSUBSCRIBEs are already out of the map and change nothing, unless the
                // channel was subscribed again meanwhile: then a spurious 1011, which
                // recovers exactly.
                PushKind::SUnsubscribe => {
                    inbound.flush(&shards.hub);
                    if let Some(Value::BulkString(name)) = push.data.first() {
                        shards.dropped(name, id).await;
                    }
                }
                _ => {}
            }
        }
        inbound.flush(&shards.hub);
        drop(inbound);
        burst.clear();
    }
    if let Some(shards) = weak.upgrade() {
        shards.node_lost(&addr, id).await;
    }
}
