//! MQTT receivers of the IM path: each logs in as its own user, subscribes
//! `im/inbox/<user>` at QoS 1 and PUBACKs every delivery (the delivery
//! ack, DESIGN §5.3), recording each message's sequence number and latency
//! from the text of `im_payload`. Any sender (MQTT, XMPP, PB) can target
//! these receivers.

use std::sync::Arc;
use std::time::Duration;

use imgate_codecs::mqtt::{QoS, Version};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::Credential;
use crate::mqtt_client::{self, Conn, Login};
use crate::schedule::Schedule;
use crate::stats::Arrivals;

/// Shared by every receiver of a run.
pub struct InboxRun {
    /// The sequence space of the run (`0..messages`).
    pub messages: usize,
    pub schedule: Schedule,
    pub errors: std::sync::Mutex<Vec<String>>,
}

impl InboxRun {
    pub fn error(&self, e: impl std::fmt::Display) {
        if let Ok(mut v) = self.errors.lock() {
            v.push(e.to_string());
        }
    }

    /// The errors so far.
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// One connected, subscribed receiver and how many messages it expects.
pub struct Inbox {
    conn: Conn,
    expects: usize,
}

/// Log `cred` in over MQTT and subscribe its inbox.
pub async fn open(
    addr: &str,
    version: Version,
    cred: &Credential,
    expects: usize,
) -> anyhow::Result<Inbox> {
    let login = Login {
        username: Some(cred.user.clone()),
        password: Some(cred.token.clone()),
        client_id: cred.device.clone(),
    };
    let mut conn = mqtt_client::connect(addr, version, &login, false).await?;
    mqtt_client::subscribe(
        &mut conn,
        &format!("im/inbox/{}", cred.user),
        QoS::AtLeastOnce,
    )
    .await?;
    Ok(Inbox { conn, expects })
}

/// Receive until the inbox has all it expects or `stop` fires.
pub fn spawn(
    mut inbox: Inbox,
    run: Arc<InboxRun>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<Arrivals> {
    tokio::spawn(async move {
        let mut arrivals = Arrivals::new(run.messages);
        let expects = inbox.expects;
        let outcome = mqtt_client::receive(&mut inbox.conn, &mut stop, |p| {
            let now = run.schedule.now();
            match crate::im_payload::text_of_message(&p.payload)
                .as_deref()
                .and_then(crate::im_payload::parse)
            {
                Some((sent, seq)) => arrivals.record(seq, sent, now),
                None => run.error(format!(
                    "inbox: a delivery without a bench text on {}",
                    p.topic
                )),
            }
            arrivals.unique >= expects
        })
        .await;
        if let Err(e) = outcome {
            run.error(format!("inbox: {e:#}"));
        }
        mqtt_client::disconnect(&mut inbox.conn).await;
        arrivals
    })
}

/// Stop every receiver `wait` after now (the senders are done).
pub fn stop_after(stop: watch::Sender<bool>, wait: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        let _ = stop.send(true);
    });
}
