//! The broker-side state of one MQTT session (MQTT 5 §4.1): its
//! subscriptions, the queue of messages not yet sent, the outbound
//! messages in flight, and the link to the connection serving it (if any).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use imgate_codecs::mqtt::{QoS, SubOptions};
use tokio::sync::Notify;

use super::message::Delivery;
use super::persist::{LoadedSession, PersistOp, StoredSession, StoredSub};

/// One subscription of a session.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub options: SubOptions,
    pub subscription_id: Option<u32>,
}

/// A delivery in a session's queue. `seq` numbers its record in
/// `mqtt.redb` (0: not stored, as QoS 0 and non-persistent sessions).
#[derive(Debug, Clone)]
pub struct Queued {
    pub delivery: Delivery,
    pub seq: u64,
}

/// An outbound message waiting for the client's ack.
#[derive(Debug, Clone)]
pub enum Inflight {
    /// A generic message; `released` once PUBREC came (QoS 2, PUBREL sent);
    /// `seq` as in [`Queued`].
    Generic {
        delivery: Delivery,
        released: bool,
        seq: u64,
    },
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
    pub queue: VecDeque<Queued>,
    /// The next record number in `mqtt.redb` (numbers are never reused).
    pub next_seq: u64,
    /// Whether `mqtt.redb` holds this session (its rows must go with it).
    pub stored: bool,
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
            next_seq: 1,
            stored: false,
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

    /// The settings and subscriptions as persisted.
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
        }
    }

    /// Number a QoS ≥ 1 delivery for `mqtt.redb` if the session is
    /// persistent: its seq and the write (none: keep it in memory only).
    pub fn store_new(&mut self, key: &str, d: &Delivery) -> Option<(u64, PersistOp)> {
        if self.expiry_secs == 0 || d.qos == QoS::AtMostOnce {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        Some((seq, PersistOp::PutQueued(key.to_owned(), seq, d.clone())))
    }

    /// The writes that make this session as persisted as it is now: its
    /// settings, and every QoS ≥ 1 message not stored yet (a session that
    /// just became persistent). Nothing for a non-persistent session.
    pub fn save(&mut self, key: &str) -> Vec<PersistOp> {
        if self.expiry_secs == 0 {
            return vec![];
        }
        self.stored = true;
        let mut ops = vec![PersistOp::PutSession(
            key.to_owned(),
            Box::new(self.to_stored()),
        )];
        let mut next = self.next_seq;
        let mut number = |seq: &mut u64, d: &Delivery| -> Option<u64> {
            (*seq == 0 && d.qos != QoS::AtMostOnce).then(|| {
                *seq = next;
                next += 1;
                *seq
            })
        };
        for (id, f) in self.inflight.iter_mut() {
            if let Inflight::Generic {
                delivery,
                released,
                seq,
            } = f
            {
                if let Some(n) = number(seq, delivery) {
                    ops.push(PersistOp::PutQueued(key.to_owned(), n, delivery.clone()));
                    ops.push(PersistOp::PutInflight(key.to_owned(), n, *id, *released));
                }
            }
        }
        for q in self.queue.iter_mut() {
            if let Some(n) = number(&mut q.seq, &q.delivery) {
                ops.push(PersistOp::PutQueued(key.to_owned(), n, q.delivery.clone()));
            }
        }
        self.next_seq = next;
        ops
    }

    /// The session's rows were deleted while it stays in memory: nothing
    /// of it is stored any more.
    pub fn forget_stored(&mut self) {
        self.stored = false;
        for q in self.queue.iter_mut() {
            q.seq = 0;
        }
        for f in self.inflight.values_mut() {
            if let Inflight::Generic { seq, .. } = f {
                *seq = 0;
            }
        }
    }

    pub fn from_stored(loaded: LoadedSession) -> Self {
        let s = loaded.session;
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
        // Rows come in seq order: the queue keeps its publish order.
        for (seq, delivery, mark) in loaded.messages {
            state.next_seq = state.next_seq.max(seq + 1);
            match mark {
                Some((id, released)) if !state.inflight.contains_key(&id) => {
                    state.inflight.insert(
                        id,
                        Inflight::Generic {
                            delivery,
                            released,
                            seq,
                        },
                    );
                }
                _ => state.queue.push_back(Queued { delivery, seq }),
            }
        }
        state.offline_since = Some(Instant::now());
        state.stored = true;
        state
    }
}
