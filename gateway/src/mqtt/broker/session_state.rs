//! The broker-side state of one MQTT session (MQTT 5 §4.1): its
//! subscriptions, the queue of messages not yet sent, the outbound
//! messages in flight, and the link to the connection serving it (if any).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use imgate_codecs::mqtt::{QoS, SubOptions};
use tokio::sync::Notify;

use super::message::{Delivery, StoredDelivery};
use super::persist::{StoredSession, StoredSub};

/// One subscription of a session.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub options: SubOptions,
    pub subscription_id: Option<u32>,
}

/// An outbound message waiting for the client's ack.
#[derive(Debug, Clone)]
pub enum Inflight {
    /// A generic message; `released` once PUBREC came (QoS 2, PUBREL sent).
    Generic { delivery: Delivery, released: bool },
    /// An IM inbox delivery: the client's PUBACK is the store ack.
    Im { message_id: u64 },
}

/// The connection currently serving a session.
#[derive(Debug, Clone)]
pub struct ConnLink {
    pub generation: u64,
    pub notify: Arc<Notify>,
}

#[derive(Debug)]
pub struct SessionState {
    pub user: String,
    pub device: String,
    pub subs: HashMap<String, Subscription>,
    /// `im/inbox/<user>` subscription: granted QoS and subscription id.
    pub im_inbox: Option<(QoS, Option<u32>)>,
    /// `im/ack/<clientId>` subscription: granted QoS.
    pub im_ack: Option<QoS>,
    pub queue: VecDeque<Delivery>,
    pub inflight: BTreeMap<u16, Inflight>,
    pub next_pkid: u16,
    /// Session expiry interval in seconds; 0 ends with the connection,
    /// `u32::MAX` never expires.
    pub expiry_secs: u32,
    pub conn: Option<ConnLink>,
    pub offline_since: Option<Instant>,
    /// Set when the queue overflowed with QoS ≥ 1: the connection is told
    /// to disconnect (0x97) and the session is discarded.
    pub overflowed: bool,
}

impl SessionState {
    pub fn new(user: &str, device: &str) -> Self {
        SessionState {
            user: user.to_owned(),
            device: device.to_owned(),
            subs: HashMap::new(),
            im_inbox: None,
            im_ack: None,
            queue: VecDeque::new(),
            inflight: BTreeMap::new(),
            next_pkid: 1,
            expiry_secs: 0,
            conn: None,
            offline_since: None,
            overflowed: false,
        }
    }

    /// A free packet identifier (none if all 65535 are in flight).
    pub fn allocate_pkid(&mut self) -> Option<u16> {
        for _ in 0..u16::MAX {
            let id = self.next_pkid;
            self.next_pkid = if id == u16::MAX { 1 } else { id + 1 };
            if !self.inflight.contains_key(&id) {
                return Some(id);
            }
        }
        None
    }

    pub fn to_stored(&self) -> StoredSession {
        StoredSession {
            user: self.user.clone(),
            device: self.device.clone(),
            expiry_secs: self.expiry_secs,
            subs: self
                .subs
                .iter()
                .map(|(f, s)| StoredSub {
                    filter: f.clone(),
                    qos: s.options.qos.as_u8(),
                    no_local: s.options.no_local,
                    retain_as_published: s.options.retain_as_published,
                    subscription_id: s.subscription_id,
                })
                .collect(),
            im_inbox: self.im_inbox.map(|(q, id)| (q.as_u8(), id)),
            im_ack: self.im_ack.map(QoS::as_u8),
            queue: self
                .queue
                .iter()
                .filter(|d| d.qos != QoS::AtMostOnce)
                .map(StoredDelivery::from_delivery)
                .collect(),
            inflight: self
                .inflight
                .iter()
                .filter_map(|(id, f)| match f {
                    Inflight::Generic { delivery, released } => {
                        Some((*id, StoredDelivery::from_delivery(delivery), *released))
                    }
                    Inflight::Im { .. } => None,
                })
                .collect(),
        }
    }

    pub fn from_stored(s: StoredSession) -> Self {
        let mut state = SessionState::new(&s.user, &s.device);
        state.expiry_secs = s.expiry_secs;
        for sub in s.subs {
            let Some(qos) = QoS::from_u8(sub.qos) else {
                continue;
            };
            state.subs.insert(
                sub.filter,
                Subscription {
                    options: SubOptions {
                        qos,
                        no_local: sub.no_local,
                        retain_as_published: sub.retain_as_published,
                        retain_handling: 0,
                    },
                    subscription_id: sub.subscription_id,
                },
            );
        }
        state.im_inbox = s.im_inbox.and_then(|(q, id)| Some((QoS::from_u8(q)?, id)));
        state.im_ack = s.im_ack.and_then(QoS::from_u8);
        state.queue = s
            .queue
            .into_iter()
            .filter_map(StoredDelivery::into_delivery)
            .collect();
        for (id, d, released) in s.inflight {
            if let Some(delivery) = d.into_delivery() {
                state
                    .inflight
                    .insert(id, Inflight::Generic { delivery, released });
            }
        }
        state.offline_since = Some(Instant::now());
        state
    }
}
