//! `GET /v1/events`: a Server-Sent Events stream of a user's new messages.
//! Each event is one message JSON as `data:` with `id:` = its messageUid;
//! `Last-Event-ID` (or `?since=`) resumes: everything after it is replayed
//! from the store before live messages follow. A reader that falls behind
//! the live feed is caught up from the store, not dropped.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use imgate_core::model::json::MessageJson;
use imgate_core::model::Message;
use imgate_core::pipeline::Protocol;
use imgate_core::store::{UserFeed, UserFeedEnd};
use serde::Deserialize;

use super::auth::ClientAuth;
use super::query::JsonQuery;
use super::ApiError;
use crate::state::AppState;

const REPLAY_PAGE: usize = 200;

#[derive(Deserialize)]
pub struct EventsQuery {
    #[serde(default)]
    since: Option<String>,
}

struct Cursor {
    state: AppState,
    user: String,
    feed: UserFeed,
    /// Highest messageUid sent (or the resume point).
    last: u64,
    /// Replaying from the store until caught up.
    replaying: bool,
    buffer: VecDeque<Arc<Message>>,
}

pub async fn events(
    State(state): State<AppState>,
    ClientAuth(principal): ClientAuth,
    JsonQuery(q): JsonQuery<EventsQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or(q.since.as_deref())
        .map(|s| s.trim().parse::<u64>())
        .transpose()
        .map_err(|_| {
            ApiError::new(
                imgate_core::ErrorCode::InvalidParameter,
                "Last-Event-ID must be a messageUid",
            )
        })?;
    let user = principal.user_id;
    // Read the resume point before subscribing and replay from it after:
    // nothing committed in between can fall through the gap.
    let start = match resume {
        Some(id) => id,
        None => state.store.last_message_id(&user).await?,
    };
    let feed = state.store.subscribe_user(&user);
    let cursor = Cursor {
        feed,
        user,
        last: start,
        replaying: true,
        buffer: VecDeque::new(),
        state,
    };
    let stream = stream::unfold(cursor, |mut c| async move {
        let msg = next_message(&mut c).await?;
        c.last = msg.message_id;
        c.state.metrics.message_out(Protocol::Http);
        let data = serde_json::to_string(&MessageJson::from_message(&msg)).unwrap_or_default();
        let event = Event::default().id(msg.message_id.to_string()).data(data);
        Some((Ok(event), c))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

async fn next_message(c: &mut Cursor) -> Option<Arc<Message>> {
    loop {
        if let Some(m) = c.buffer.pop_front() {
            return Some(m);
        }
        if c.replaying {
            // The buffer is empty, so `last` is the last message sent.
            let page = c
                .state
                .store
                .sync(&c.user, c.last, REPLAY_PAGE)
                .await
                .ok()?;
            c.replaying = page.has_more;
            c.buffer.extend(page.messages);
            continue;
        }
        let shutdown = c.state.clone();
        tokio::select! {
            next = c.feed.next() => match next {
                Ok(m) if m.message_id > c.last => return Some(m),
                Ok(_) => continue,
                // Too slow for the live feed: catch up from the store.
                Err(UserFeedEnd::Lagged) => c.replaying = true,
                Err(UserFeedEnd::Closed) => return None,
            },
            _ = shutdown.draining() => return None,
        }
    }
}
