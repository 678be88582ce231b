//! Answers for IQ requests routed to another node (RFC 6120 §10.5.3.2 on
//! a cluster). An IQ request for a full JID that is not on this node is
//! announced with a token ([`super::routing`]); the node that hands it to
//! the resource's session announces the token back on [`ACK_TOPIC`]. If
//! no node does within [`ACK_WAIT`], the resource is connected nowhere
//! and the sender gets `<service-unavailable/>`, as on a single node.
//!
//! The wait runs in its own task (the sender's session goes on), bounded
//! in time and in number ([`MAX_PENDING`]); past that bound a request is
//! routed without an answer on absence, as before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use imgate_codecs::xmpp::Element;
use imgate_core::Store;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::errors::{condition_element, error_reply};
use super::XmppContext;
use crate::sessions::cluster::follow_topic;

/// The announcement topic of delivered routed requests.
pub const ACK_TOPIC: &str = "xmpp.route.ack";
/// How long a node waits for another node to take a routed request.
pub const ACK_WAIT: Duration = Duration::from_secs(3);
/// Routed requests awaiting their ack on one node at most.
pub const MAX_PENDING: usize = 4096;

/// The announced ack of one routed request.
#[derive(Debug, Serialize, Deserialize)]
pub struct RouteAck {
    pub token: String,
}

/// This node's routed requests awaiting an ack, by token.
#[derive(Default)]
pub struct PendingAcks {
    waiting: Mutex<HashMap<String, oneshot::Sender<()>>>,
}

fn lock(
    m: &Mutex<HashMap<String, oneshot::Sender<()>>>,
) -> MutexGuard<'_, HashMap<String, oneshot::Sender<()>>> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl PendingAcks {
    /// Await an ack for `token`; None when [`MAX_PENDING`] are waiting.
    fn register(&self, token: &str) -> Option<oneshot::Receiver<()>> {
        let mut waiting = lock(&self.waiting);
        if waiting.len() >= MAX_PENDING {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        waiting.insert(token.to_string(), tx);
        Some(rx)
    }

    fn forget(&self, token: &str) {
        lock(&self.waiting).remove(token);
    }

    /// A node took the request `token`.
    pub fn acked(&self, token: &str) {
        if let Some(tx) = lock(&self.waiting).remove(token) {
            let _ = tx.send(());
        }
    }

    /// How many requests are waiting (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.waiting).len()
    }
}

/// A new token for a routed request, registered as waiting; None when
/// too many wait.
pub fn expect(ctx: &XmppContext) -> Option<(String, oneshot::Receiver<()>)> {
    let token = super::random_id();
    let rx = ctx.acks.register(&token)?;
    Some((token, rx))
}

/// Answer `request` (sent by `user`'s `resource`) `<service-unavailable/>`
/// unless a node acks it within [`ACK_WAIT`]; in the background.
pub fn answer_if_unclaimed(
    ctx: Arc<XmppContext>,
    token: String,
    ack: oneshot::Receiver<()>,
    request: &Element,
    user: &str,
    resource: &str,
) {
    let (user, resource) = (user.to_string(), resource.to_string());
    let sender = format!("{user}@{}/{resource}", ctx.normalizer.domain());
    let err = condition_element(
        "service-unavailable",
        "cancel",
        "253 that resource is not connected",
    );
    let reply = error_reply(request, &sender, err);
    tokio::spawn(async move {
        if let Ok(Ok(())) = tokio::time::timeout(ACK_WAIT, ack).await {
            return;
        }
        ctx.acks.forget(&token);
        ctx.router.send_to_resource(&user, &resource, reply);
    });
}

/// Announce that this node took the routed request `token`.
pub fn announce(store: Arc<dyn Store>, token: String) {
    let Ok(payload) = serde_json::to_string(&RouteAck { token }) else {
        return;
    };
    tokio::spawn(async move {
        if let Err(e) = store.announce(ACK_TOPIC.to_string(), payload).await {
            tracing::debug!(error = %e, "xmpp: a routed request's ack was not announced");
        }
    });
}

/// Apply every node's acks to this node's waiting requests until the
/// store closes.
pub async fn follow(store: Arc<dyn Store>, ctx: Arc<XmppContext>) {
    follow_topic(store, ACK_TOPIC, |a: RouteAck, _local| {
        ctx.acks.acked(&a.token)
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_ack_wakes_its_waiter_and_is_forgotten() {
        let p = PendingAcks::default();
        let rx = p.register("t1").expect("room");
        p.acked("t1");
        assert!(rx.await.is_ok());
        assert_eq!(p.len(), 0);
        p.acked("unknown");
    }

    #[test]
    fn waiting_requests_are_bounded() {
        let p = PendingAcks::default();
        let held: Vec<_> = (0..MAX_PENDING)
            .map(|i| p.register(&i.to_string()).expect("room"))
            .collect();
        assert!(p.register("one more").is_none());
        p.forget("0");
        assert!(p.register("one more").is_some());
        drop(held);
    }
}
