//! Where a channel's keys and messages live, on one Redis server or on a Redis Cluster.
//!
//! One server: `<prefix>:m:<app>:<channel>`, `<prefix>:h:...`, `<prefix>:i:...`, one epoch
//! base `<prefix>:base`, one channel set per app `<prefix>:c:<app>`, and every message on
//! `<prefix>:p:<db>` (`PUBLISH`).
//!
//! Redis Cluster runs a script on one shard only, over keys of one hash slot. So every key
//! of a channel carries the hash tag `{<app>.<group>}`, where the group is the channel's
//! CRC16 modulo [`GROUPS`]: an app's channels spread over up to 16 slots (hence over the
//! shards), and each group has its own epoch base `<prefix>:base:{<app>.<group>}` and its
//! own channel set `<prefix>:c:{<app>.<group>}` in the same slot as its channels, which is
//! what lets the scripts stay atomic. The consequences:
//! - The epoch argument of the scripts holds per group: the base lives in the same slot as
//!   the channel state, moves with it when the slot migrates, and is lost with it when the
//!   shard loses its data set, so a channel never reuses an epoch.
//! - The per-app channel quota is enforced per group: each group admits
//!   `ceil(max_channels / 16)` channels, so an app never exceeds the quota by more than 15
//!   channels, and may be refused a little earlier when its channel names hash unevenly.
//! - Publications go on the sharded pub/sub channel `<prefix>:s:{<app>.<group>}<channel>`
//!   (`SPUBLISH`, same slot, so the script may publish it): a relay `SSUBSCRIBE`s to
//!   exactly the channels its own clients follow.
//! - Revocations use the slot of `{<prefix>.rv}`: keys `<prefix>:rv:{<prefix>.rv}:...` and
//!   the sharded channel `<prefix>:r:{<prefix>.rv}` (rare writes, one shard).

use crate::broker::SharedRevocation;
use crate::hub::ChannelKey;

use super::revocations::kind_value;

/// How many slot groups an app's channels spread over in a Redis Cluster.
pub(super) const GROUPS: u16 = 16;

/// Redis Cluster's number of hash slots.
const SLOTS: u16 = 16384;

/// The names of one deployment's keys and messages.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    prefix: String,
    /// `<prefix>:p:<db>` on one server (pub/sub ignores the database index, so the name
    /// carries it); unused on a cluster.
    pubsub_channel: String,
    cluster: bool,
}

/// A channel's keys: meta, history, epoch base, the app's channel set (or its group's).
pub(super) struct ChannelKeys {
    pub(super) keys: [String; 4],
    /// Where the publish script announces it, and with which command.
    pub(super) announce: String,
    pub(super) command: &'static str,
}

impl Layout {
    pub(super) fn single(prefix: &str, db: i64) -> Layout {
        Layout {
            prefix: prefix.into(),
            pubsub_channel: format!("{prefix}:p:{db}"),
            cluster: false,
        }
    }

    pub(super) fn cluster(prefix: &str) -> Layout {
        Layout {
            prefix: prefix.into(),
            pubsub_channel: String::new(),
            cluster: true,
        }
    }

    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The single server's pub/sub channel.
    pub(super) fn pubsub_channel(&self) -> &str {
        &self.pubsub_channel
    }

    /// `{<app>.<group>}` (a cluster hash tag; app ids have neither braces nor spaces).
    fn tag(key: &ChannelKey) -> String {
        let group = crc16(key.channel.as_str().as_bytes()) % GROUPS;
        format!("{{{}.{group}}}", key.app.as_str())
    }

    /// The hash slot of a channel's keys (cluster).
    pub(super) fn slot(key: &ChannelKey) -> u16 {
        let tag = Self::tag(key);
        crc16(&tag.as_bytes()[1..tag.len() - 1]) % SLOTS
    }

    pub(super) fn channel(&self, key: &ChannelKey) -> ChannelKeys {
        let p = &self.prefix;
        let (app, ch) = (key.app.as_str(), key.channel.as_str());
        if self.cluster {
            let tag = Self::tag(key);
            ChannelKeys {
                keys: [
                    format!("{p}:m:{tag}{ch}"),
                    format!("{p}:h:{tag}{ch}"),
                    format!("{p}:base:{tag}"),
                    format!("{p}:c:{tag}"),
                ],
                announce: self.shard_channel(key),
                command: "SPUBLISH",
            }
        } else {
            ChannelKeys {
                keys: [
                    format!("{p}:m:{app}:{ch}"),
                    format!("{p}:h:{app}:{ch}"),
                    format!("{p}:base"),
                    format!("{p}:c:{app}"),
                ],
                announce: self.pubsub_channel.clone(),
                command: "PUBLISH",
            }
        }
    }

    /// The sharded pub/sub channel of a relay channel (cluster).
    pub(super) fn shard_channel(&self, key: &ChannelKey) -> String {
        format!(
            "{}:s:{}{}",
            self.prefix,
            Self::tag(key),
            key.channel.as_str()
        )
    }

    /// The relay channel of a sharded pub/sub channel name (the inverse of
    /// [`Layout::shard_channel`]); `None` for any other name.
    pub(super) fn channel_of(&self, name: &str) -> Option<ChannelKey> {
        let rest = name.strip_prefix(&self.prefix)?.strip_prefix(":s:{")?;
        let (tag, channel) = rest.split_once('}')?;
        let (app, _group) = tag.rsplit_once('.')?;
        let key = ChannelKey {
            app: crate::protocol::AppId::parse(app).ok()?,
            channel: crate::protocol::Channel::parse(channel).ok()?,
        };
        (self.shard_channel(&key) == name).then_some(key)
    }

    /// The per-group share of an app's channel quota on a cluster (see the module docs).
    pub(super) fn channel_quota(&self, max_channels: usize) -> usize {
        if self.cluster {
            max_channels.div_ceil(usize::from(GROUPS)).max(1)
        } else {
            max_channels
        }
    }

    /// A channel name never contains a space, so the space makes `<channel> <key>`
    /// unambiguous (a `:` would not: topics and keys may both contain one).
    pub(super) fn idempotency(&self, key: &ChannelKey, idempotency_key: &str) -> String {
        let p = &self.prefix;
        let (app, ch) = (key.app.as_str(), key.channel.as_str());
        if self.cluster {
            format!("{p}:i:{}{ch} {idempotency_key}", Self::tag(key))
        } else {
            format!("{p}:i:{app}:{ch} {idempotency_key}")
        }
    }

    /// What every revocation key starts with (`SCAN` pattern and parse prefix).
    pub(super) fn revocation_prefix(&self) -> String {
        if self.cluster {
            format!("{0}:rv:{{{0}.rv}}:", self.prefix)
        } else {
            format!("{}:rv:", self.prefix)
        }
    }

    pub(super) fn revocation_key(&self, r: &SharedRevocation) -> String {
        let (kind, value) = kind_value(&r.target);
        format!(
            "{}{}:{kind}:{value}",
            self.revocation_prefix(),
            r.app.as_str()
        )
    }

    /// Where revocations are announced, and with which command.
    pub(super) fn revocation_channel(&self) -> (String, &'static str) {
        if self.cluster {
            (format!("{0}:r:{{{0}.rv}}", self.prefix), "SPUBLISH")
        } else {
            (self.pubsub_channel.clone(), "PUBLISH")
        }
    }

    /// The slot of the revocation keys and channel (cluster).
    pub(super) fn revocation_slot(&self) -> u16 {
        crc16(format!("{}.rv", self.prefix).as_bytes()) % SLOTS
    }

    /// A private canary channel of this relay in `slot`'s shard: a hash tag that falls in
    /// `[first, last]` is searched (bounded: every slot has one within a few hundred
    /// thousand candidates, and ranges are found in far fewer).
    pub(super) fn canary_channel(&self, first: u16, last: u16, relay: &str) -> Option<String> {
        (0u32..2_000_000)
            .map(|n| format!("k{n}"))
            .find(|t| (first..=last).contains(&(crc16(t.as_bytes()) % SLOTS)))
            .map(|t| format!("{}:k:{{{t}}}{relay}", self.prefix))
    }
}

/// Redis Cluster's key hash (CRC16-CCITT, XMODEM).
fn crc16(bytes: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{AppId, Channel};

    fn key(app: &str, ch: &str) -> ChannelKey {
        ChannelKey {
            app: AppId::parse(app).unwrap(),
            channel: Channel::parse(ch).unwrap(),
        }
    }

    /// Redis' own slot of a tagged key, by the rule of the cluster spec (the first `{`,
    /// up to the next `}`), for comparison.
    fn redis_slot(k: &str) -> u16 {
        let hashed = match k.find('{') {
            Some(o) => match k[o + 1..].find('}') {
                Some(len) if len > 0 => &k[o + 1..o + 1 + len],
                _ => k,
            },
            None => k,
        };
        crc16(hashed.as_bytes()) % SLOTS
    }

    #[test]
    fn every_key_of_a_channel_shares_its_slot_even_with_braces_in_the_name() {
        let l = Layout::cluster("sc");
        for ch in ["ns#a", "n{s}#b", "{x}#c", "n}{#d", "ns#t:1"] {
            let k = key("acme", ch);
            let slot = Layout::slot(&k);
            let c = l.channel(&k);
            for name in c
                .keys
                .iter()
                .chain([&c.announce, &l.idempotency(&k, "i{d}")])
            {
                assert_eq!(redis_slot(name), slot, "{name}");
            }
        }
        assert_eq!(
            redis_slot("123456789"),
            0x31C3 % SLOTS,
            "the spec's check value"
        );
    }

    #[test]
    fn an_apps_channels_spread_over_groups_and_the_quota_is_shared() {
        let l = Layout::cluster("sc");
        let slots: std::collections::HashSet<u16> = (0..200)
            .map(|i| Layout::slot(&key("acme", &format!("ns#t{i}"))))
            .collect();
        assert_eq!(slots.len(), usize::from(GROUPS));
        assert_eq!(l.channel_quota(1000), 63);
        assert_eq!(l.channel_quota(1), 1);
        assert_eq!(Layout::single("sc", 0).channel_quota(1000), 1000);
    }

    #[test]
    fn revocations_and_canaries_land_in_their_slots() {
        let l = Layout::cluster("sc");
        let rv = l.revocation_slot();
        assert_eq!(redis_slot(&l.revocation_channel().0), rv);
        let r = SharedRevocation {
            app: AppId::parse("acme").unwrap(),
            target: crate::revocation::Target::Sub("u:1".into()),
            until: 1,
        };
        assert_eq!(redis_slot(&l.revocation_key(&r)), rv);
        assert_eq!(l.revocation_key(&r), "sc:rv:{sc.rv}:acme:s:u:1");
        let k = key("acme", "n}{s#t");
        assert_eq!(l.channel_of(&l.shard_channel(&k)), Some(k));
        assert_eq!(l.channel_of("sc:s:{acme.99}ns#t"), None, "a wrong group");
        assert_eq!(l.channel_of(&l.revocation_channel().0), None);
        let c = l.canary_channel(5461, 10922, "r1").unwrap();
        assert!((5461..=10922).contains(&redis_slot(&c)), "{c}");
        let single = Layout::single("sc", 3);
        assert_eq!(single.revocation_key(&r), "sc:rv:acme:s:u:1");
        assert_eq!(single.revocation_channel(), ("sc:p:3".into(), "PUBLISH"));
    }
}
