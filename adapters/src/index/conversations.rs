//! Each user's conversations: one entry per (user, conversation) with the
//! newest message id, the read position and the unread count, kept in the
//! same transaction as the messages (so both stores, and every RabbitMQ
//! node, count alike).
//!
//! - A stored message touches the entry of each recipient user: its id
//!   becomes the newest; it adds one unread for a recipient other than
//!   its sender when its persist flag is 3 and it is after the read
//!   position. Imports and conversions touch without counting (history
//!   a user arrives with is read).
//! - A removed message (recall, expiry) takes its unread back; one aged
//!   out by the retention takes the whole entry when it was the newest or
//!   the last one left.
//! - Marking read moves the position forward and recounts what follows
//!   it (at most [`MAX_RECOUNT`] messages looked at).
//!
//! The list is read by scanning a user's entries (at most
//! [`MAX_CONVERSATIONS`]) and sorting them by newest id; each listed
//! conversation's last message is read from its history (so a recalled,
//! expired or `toUsers`-narrowed message is never shown).

use imgate_core::model::{Conversation, Message};
use imgate_core::store::{ConversationPage, ConversationSummary, ReadState, MAX_CONVERSATIONS};
use imgate_core::StoreError;
use redb::{ReadTransaction, ReadableTable, Table, TableDefinition};

use super::messages::Rows;
use super::row::{self, StoredMessage};
use super::tables::{self, corrupt, io};

/// (user, conversation history key) → binary [`Entry`].
pub const CONVERSATIONS: TableDefinition<(&[u8], &[u8]), &[u8]> =
    TableDefinition::new("conversations");

/// Messages a mark-read recount looks at, at most (the count saturates).
pub const MAX_RECOUNT: usize = 10_000;

pub type ConversationTable<'t> = Table<'t, (&'static [u8], &'static [u8]), &'static [u8]>;

/// One user's view of one conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub last_id: u64,
    pub read_upto: u64,
    pub unread: u64,
    /// As the user sees it (a private chat's target is the peer).
    pub conversation: Conversation,
}

impl Entry {
    fn encode(&self) -> Vec<u8> {
        let target = self.conversation.target.as_bytes();
        let mut out = Vec::with_capacity(32 + target.len());
        out.extend_from_slice(&self.last_id.to_be_bytes());
        out.extend_from_slice(&self.read_upto.to_be_bytes());
        out.extend_from_slice(&self.unread.to_be_bytes());
        out.extend_from_slice(&self.conversation.kind.to_be_bytes());
        out.extend_from_slice(&self.conversation.line.to_be_bytes());
        out.extend_from_slice(target);
        out
    }

    fn decode(b: &[u8]) -> Result<Entry, StoreError> {
        if b.len() < 32 {
            return Err(corrupt("conversation entry too short"));
        }
        let u = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_be_bytes(a)
        };
        let i = |at: usize| {
            let mut a = [0u8; 4];
            a.copy_from_slice(&b[at..at + 4]);
            i32::from_be_bytes(a)
        };
        let target = std::str::from_utf8(&b[32..])
            .map_err(|_| corrupt("conversation entry target is not UTF-8"))?;
        Ok(Entry {
            last_id: u(0),
            read_upto: u(8),
            unread: u(16),
            conversation: Conversation {
                kind: i(24),
                target: target.to_string(),
                line: i(28),
            },
        })
    }
}

/// Whether `m` adds to `user`'s unread count (persist flag 3, not their
/// own).
pub fn counts_for(m: &Message, user: &str) -> bool {
    m.payload.counts_as_unread() && m.sender != user
}

fn get(table: &ConversationTable<'_>, user: &str, key: &str) -> Result<Option<Entry>, StoreError> {
    match table.get((user.as_bytes(), key.as_bytes())).map_err(io)? {
        Some(v) => Entry::decode(v.value()).map(Some),
        None => Ok(None),
    }
}

fn put(
    table: &mut ConversationTable<'_>,
    user: &str,
    key: &str,
    entry: &Entry,
) -> Result<(), StoreError> {
    table
        .insert((user.as_bytes(), key.as_bytes()), entry.encode().as_slice())
        .map_err(io)?;
    Ok(())
}

/// A stored message reaches `user`'s conversation `key`.
pub fn touch(
    table: &mut ConversationTable<'_>,
    user: &str,
    key: &str,
    m: &Message,
    count: bool,
) -> Result<(), StoreError> {
    let mut e = get(table, user, key)?.unwrap_or(Entry {
        last_id: 0,
        read_upto: 0,
        unread: 0,
        conversation: m.conversation.seen_by(&m.sender, user),
    });
    if m.message_id > e.last_id {
        e.last_id = m.message_id;
        e.conversation = m.conversation.seen_by(&m.sender, user);
    }
    if count && counts_for(m, user) && m.message_id > e.read_upto {
        e.unread += 1;
    }
    put(table, user, key, &e)
}

/// A message left `user`'s conversation `key`; `aged_out`: by the
/// retention (everything older went before it); `emptied`: and nothing
/// newer is left in the conversation.
pub fn untouch(
    table: &mut ConversationTable<'_>,
    user: &str,
    key: &str,
    m: &Message,
    aged_out: bool,
    emptied: bool,
) -> Result<(), StoreError> {
    let Some(mut e) = get(table, user, key)? else {
        return Ok(());
    };
    if emptied || (aged_out && e.last_id <= m.message_id) {
        table
            .remove((user.as_bytes(), key.as_bytes()))
            .map_err(io)?;
        return Ok(());
    }
    if counts_for(m, user) && m.message_id > e.read_upto && e.unread > 0 {
        e.unread -= 1;
        put(table, user, key, &e)?;
    }
    Ok(())
}

/// Move `user`'s read position in `key` to `upto` (0: its newest) and
/// recount; None if the user has no such conversation. `row` reads a
/// message row as the transaction sees it.
pub fn mark_read(
    table: &mut ConversationTable<'_>,
    conv_index: &Table<'_, (&'static [u8], u64), ()>,
    row: impl Fn(u64) -> Result<Option<StoredMessage>, StoreError>,
    user: &str,
    key: &str,
    upto: u64,
) -> Result<Option<ReadState>, StoreError> {
    let Some(mut e) = get(table, user, key)? else {
        return Ok(None);
    };
    let upto = if upto == 0 { e.last_id } else { upto };
    if upto > e.read_upto {
        e.read_upto = upto;
        e.unread = 0;
        if upto < e.last_id {
            let from = upto.saturating_add(1);
            for entry in conv_index
                .range((key.as_bytes(), from)..=(key.as_bytes(), u64::MAX))
                .map_err(io)?
                .take(MAX_RECOUNT)
            {
                let id = entry.map_err(io)?.0.value().1;
                if let Some(s) = row(id)? {
                    if s.recipients.iter().any(|r| r == user) && counts_for(&s.message, user) {
                        e.unread += 1;
                    }
                }
            }
        }
        put(table, user, key, &e)?;
    }
    Ok(Some(ReadState {
        read_upto: e.read_upto,
        unread: e.unread,
    }))
}

/// `user`'s conversations whose newest id is below `before` (0: all),
/// newest first, at most `limit`.
pub fn list(
    txn: &ReadTransaction,
    user: &str,
    before: u64,
    limit: usize,
    now: i64,
) -> Result<ConversationPage, StoreError> {
    let limit = limit.max(1);
    let before = if before == 0 { u64::MAX } else { before };
    let table = txn.open_table(CONVERSATIONS).map_err(io)?;
    let mut entries = Vec::new();
    for item in table
        .range((user.as_bytes(), &b""[..])..)
        .map_err(io)?
        .take(MAX_CONVERSATIONS)
    {
        let (k, v) = item.map_err(io)?;
        let (u, key) = k.value();
        if u != user.as_bytes() {
            break;
        }
        let e = Entry::decode(v.value())?;
        if e.last_id < before {
            let key = std::str::from_utf8(key).map_err(|_| corrupt("conversation key"))?;
            entries.push((key.to_string(), e));
        }
    }
    entries.sort_by_key(|e| std::cmp::Reverse(e.1.last_id));
    let has_more = entries.len() > limit;
    entries.truncate(limit);
    let index = txn.open_table(tables::CONV_INDEX).map_err(io)?;
    let messages = txn.open_table(tables::MESSAGES).map_err(io)?;
    let mut rows = Rows::new(&messages);
    let mut page = ConversationPage {
        conversations: Vec::with_capacity(entries.len()),
        has_more,
    };
    for (key, e) in entries {
        let mut last = None;
        for item in index
            .range((key.as_bytes(), 0)..=(key.as_bytes(), e.last_id))
            .map_err(io)?
            .rev()
            .take(MAX_RECOUNT)
        {
            let id = item.map_err(io)?.0.value().1;
            let Some(s) = rows.get(id)? else { continue };
            if s.recipients.iter().any(|r| r == user) && !s.message.is_expired(now) {
                last = Some(std::sync::Arc::new(s.message));
                break;
            }
        }
        page.conversations.push(ConversationSummary {
            conversation: e.conversation,
            last_message: last,
            last_message_id: e.last_id,
            read_upto: e.read_upto,
            unread: e.unread,
        });
    }
    Ok(page)
}

/// Build every entry from the stored rows, everything counted as read
/// (a file written before conversations were kept).
pub fn rebuild(txn: &redb::WriteTransaction) -> Result<usize, StoreError> {
    let messages = txn.open_table(tables::MESSAGES).map_err(io)?;
    let mut table = txn.open_table(CONVERSATIONS).map_err(io)?;
    let mut expires = txn.open_table(super::prune::EXPIRES).map_err(io)?;
    let mut n = 0usize;
    super::messages::each_from(&messages, 0, |id, bytes| {
        let s = row::decode(id, bytes).map_err(corrupt)?;
        let key = s.message.conversation.history_key(&s.message.sender);
        for user in &s.recipients {
            touch(&mut table, user, &key, &s.message, false)?;
        }
        if let Some(at) = s.message.expires_at() {
            expires.insert((at, id), ()).map_err(io)?;
        }
        n += 1;
        Ok(true)
    })?;
    // History from before counts as read.
    let mut all = Vec::new();
    for item in table.iter().map_err(io)? {
        let (k, v) = item.map_err(io)?;
        let (u, key) = k.value();
        let mut e = Entry::decode(v.value())?;
        e.read_upto = e.last_id;
        all.push((u.to_vec(), key.to_vec(), e));
    }
    for (u, key, e) in all {
        table
            .insert((u.as_slice(), key.as_slice()), e.encode().as_slice())
            .map_err(io)?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_damage_is_an_error() {
        let e = Entry {
            last_id: u64::MAX - 1,
            read_upto: 7,
            unread: 3,
            conversation: Conversation {
                kind: 1,
                target: "team-ü".into(),
                line: -2,
            },
        };
        assert_eq!(Entry::decode(&e.encode()).unwrap(), e);
        assert!(Entry::decode(&e.encode()[..31]).is_err());
        let mut bad = e.encode();
        bad.push(0xff);
        assert!(Entry::decode(&bad).is_err());
    }

    fn stored(id: u64, from: &str, to: &str, flag: i32) -> StoredMessage {
        let mut payload = imgate_core::model::MessagePayload::text("x");
        payload.persist_flag = flag;
        StoredMessage {
            message: Message {
                message_id: id,
                sender: from.into(),
                conversation: Conversation::private(to),
                payload,
                server_ts: imgate_core::id::timestamp_of(id),
                client_msg_id: String::new(),
                to_users: vec![],
            },
            recipients: vec![from.into(), to.into()],
            sender_device: None,
        }
    }

    #[test]
    fn unread_counts_follow_inserts_reads_removals_and_the_retention() {
        use super::super::write::IndexWrite;
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("c.redb")).unwrap();
        let base = imgate_core::id::first_id_at(1_800_000_000_000);
        let id = |n: u64| base + (n << 22);
        let txn = db.begin_write().unwrap();
        tables::create_all(&txn).unwrap();
        let key = Conversation::private("bob").history_key("alice");
        {
            let mut t = IndexWrite::open(&txn).unwrap();
            t.insert(&stored(id(1), "alice", "bob", 3)).unwrap();
            t.insert(&stored(id(2), "alice", "bob", 1)).unwrap();
            t.insert(&stored(id(3), "bob", "alice", 3)).unwrap();
            t.insert(&stored(id(4), "alice", "bob", 3)).unwrap();
            t.insert(&stored(id(5), "alice", "bob", 0)).unwrap();
            t.finish(0).unwrap();
        }
        txn.commit().unwrap();
        let state = |db: &redb::Database, user: &str| {
            let r = db.begin_read().unwrap();
            let p = list(&r, user, 0, 10, 0).unwrap();
            p.conversations
                .first()
                .map(|c| (c.last_message_id, c.read_upto, c.unread))
        };
        // Flag 3 from alice counts; flag 1, bob's own and flag 0 do not.
        assert_eq!(state(&db, "bob"), Some((id(4), 0, 2)));
        assert_eq!(state(&db, "alice"), Some((id(4), 0, 1)));
        let txn = db.begin_write().unwrap();
        {
            let mut t = IndexWrite::open(&txn).unwrap();
            let r = t.mark_read("bob", &key, id(2)).unwrap().unwrap();
            assert_eq!((r.read_upto, r.unread), (id(2), 1));
            // A recalled unread one is given back; a read one is not.
            t.remove(id(4)).unwrap();
            t.remove(id(1)).unwrap();
            assert!(t.mark_read("carol", &key, 0).unwrap().is_none());
            t.finish(0).unwrap();
        }
        txn.commit().unwrap();
        assert_eq!(state(&db, "bob"), Some((id(4), id(2), 0)));
        // The retention takes the conversation once its newest went.
        let txn = db.begin_write().unwrap();
        {
            let mut t = IndexWrite::open(&txn).unwrap();
            let p = t.prune(0, Some(id(3) + 1), 100).unwrap();
            assert_eq!((p.aged_out, p.more), (2, false));
            t.finish(0).unwrap();
        }
        txn.commit().unwrap();
        assert_eq!(state(&db, "bob"), None);
    }
}
