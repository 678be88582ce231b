//! Writing the index inside one write transaction: a message is one row
//! (appended to the open chunk, `chunk.rs`), one conversation-index entry,
//! one timeline entry and one conversation-list update per recipient user
//! (`conversations.rs`), and an expiry entry if it expires (`prune.rs`);
//! daily counts are added up in memory and written once per transaction.
//! A live-only message (persist flag 0 or 4) writes nothing but its daily
//! count: it is delivered, never stored.

use std::collections::HashMap;

use imgate_core::id::timestamp_of;
use imgate_core::model::Message;
use imgate_core::store::{Group, ImportMessage};
use imgate_core::{utc_day, StoreError};
use redb::{ReadableTable, Table, WriteTransaction};

use super::conversations::{self, ConversationTable, CONVERSATIONS};
use super::dedupe::DedupeMemory;
use super::messages::{each_from, Tail};
use super::prune::EXPIRES;
use super::row::{self, StoredMessage};
use super::tables::{self, corrupt, io};
use super::{daily_sent, import};

/// The index's tables, open in one write transaction.
pub struct IndexWrite<'t> {
    pub(crate) messages: Table<'t, u64, &'static [u8]>,
    pub(crate) timeline: Table<'t, (&'static [u8], u64), ()>,
    pub(crate) conv_index: Table<'t, (&'static [u8], u64), ()>,
    groups: Table<'t, &'static str, &'static [u8]>,
    settings: Table<'t, &'static str, &'static str>,
    pub(crate) imports: Table<'t, &'static str, u64>,
    pub meta: Table<'t, &'static str, u64>,
    daily_sent: Table<'t, (i64, &'static str), u64>,
    pub(crate) conversations: ConversationTable<'t>,
    pub(crate) expires: Table<'t, (i64, u64), ()>,
    /// The message table's open last chunk.
    tail: Tail,
    /// Messages counted in this transaction, per UTC day and sender.
    daily: HashMap<i64, HashMap<String, u64>>,
}

/// Why a message leaves the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Removal {
    Recall,
    Expired,
    AgedOut,
}

/// What a resend check found: the original's id, and the original itself
/// unless it was recalled since.
pub type Resend = (u64, Option<Message>);

impl<'t> IndexWrite<'t> {
    pub fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        Ok(IndexWrite {
            messages: txn.open_table(tables::MESSAGES).map_err(io)?,
            timeline: txn.open_table(tables::TIMELINE).map_err(io)?,
            conv_index: txn.open_table(tables::CONV_INDEX).map_err(io)?,
            groups: txn.open_table(tables::GROUPS).map_err(io)?,
            settings: txn.open_table(tables::SETTINGS).map_err(io)?,
            imports: txn.open_table(tables::IMPORTS).map_err(io)?,
            meta: txn.open_table(tables::META).map_err(io)?,
            daily_sent: txn.open_table(daily_sent::DAILY_SENT).map_err(io)?,
            conversations: txn.open_table(CONVERSATIONS).map_err(io)?,
            expires: txn.open_table(EXPIRES).map_err(io)?,
            tail: Tail::default(),
            daily: HashMap::new(),
        })
    }

    pub fn row(&self, id: u64) -> Result<Option<StoredMessage>, StoreError> {
        match self.tail.get(&self.messages, id)? {
            Some(v) => row::decode(id, &v).map(Some).map_err(corrupt),
            None => Ok(None),
        }
    }

    /// Store a new message (counted for its sender's day and as unread
    /// for its recipients). A live-only one is only counted for the day.
    pub fn insert(&mut self, stored: &StoredMessage) -> Result<(), StoreError> {
        if !stored.message.payload.is_live_only() {
            self.put(stored, true)?;
        }
        let m = &stored.message;
        let day = self.daily.entry(utc_day(m.server_ts)).or_default();
        match day.get_mut(m.sender.as_str()) {
            Some(n) => *n += 1,
            None => {
                day.insert(m.sender.clone(), 1);
            }
        }
        Ok(())
    }

    /// Row, conversation entry and timelines, not counted (imports,
    /// conversions): neither in the daily count nor as unread.
    pub fn insert_uncounted(&mut self, stored: &StoredMessage) -> Result<(), StoreError> {
        self.put(stored, false)
    }

    fn put(&mut self, stored: &StoredMessage, unread: bool) -> Result<(), StoreError> {
        let m = &stored.message;
        let id = m.message_id;
        self.tail
            .put(&mut self.messages, id, &row::encode(stored))?;
        let key = m.conversation.history_key(&m.sender);
        self.conv_index
            .insert((key.as_bytes(), id), ())
            .map_err(io)?;
        for user in &stored.recipients {
            self.timeline
                .insert((user.as_bytes(), id), ())
                .map_err(io)?;
            conversations::touch(&mut self.conversations, user, &key, m, unread)?;
        }
        if let Some(at) = m.expires_at() {
            self.expires.insert((at, id), ()).map_err(io)?;
        }
        Ok(())
    }

    /// Take a message out of history, sync, every timeline and unread
    /// count (recall).
    pub fn remove(&mut self, id: u64) -> Result<Option<StoredMessage>, StoreError> {
        self.remove_as(id, Removal::Recall)
    }

    /// [`Self::remove`] for a reason: pruned (expired or aged out), a
    /// conversation with nothing left leaves the user's list; aged out, one
    /// whose newest message it was too.
    pub(crate) fn remove_as(
        &mut self,
        id: u64,
        why: Removal,
    ) -> Result<Option<StoredMessage>, StoreError> {
        let aged_out = why == Removal::AgedOut;
        let Some(bytes) = self.tail.remove(&mut self.messages, id)? else {
            return Ok(None);
        };
        let stored = row::decode(id, &bytes).map_err(corrupt)?;
        let m = &stored.message;
        let key = m.conversation.history_key(&m.sender);
        self.conv_index.remove((key.as_bytes(), id)).map_err(io)?;
        // Pruned with nothing newer left (the newer ones recalled or
        // expired): the conversation is gone.
        let emptied = why != Removal::Recall
            && self
                .conv_index
                .range((key.as_bytes(), id)..=(key.as_bytes(), u64::MAX))
                .map_err(io)?
                .next()
                .is_none();
        for user in &stored.recipients {
            self.timeline.remove((user.as_bytes(), id)).map_err(io)?;
            conversations::untouch(&mut self.conversations, user, &key, m, aged_out, emptied)?;
        }
        if let Some(at) = m.expires_at() {
            self.expires.remove((at, id)).map_err(io)?;
        }
        Ok(Some(stored))
    }

    /// `user` read conversation `key` up to `upto` (0: its newest).
    pub fn mark_read(
        &mut self,
        user: &str,
        key: &str,
        upto: u64,
    ) -> Result<Option<imgate_core::store::ReadState>, StoreError> {
        let (tail, messages) = (&self.tail, &self.messages);
        let row = |id: u64| -> Result<Option<StoredMessage>, StoreError> {
            match tail.get(messages, id)? {
                Some(v) => row::decode(id, &v).map(Some).map_err(corrupt),
                None => Ok(None),
            }
        };
        conversations::mark_read(
            &mut self.conversations,
            &self.conv_index,
            row,
            user,
            key,
            upto,
        )
    }

    /// A resend of `(sender, client_msg_id)` stored less than `window_ms`
    /// before `now` (by the original's timestamp), if any. The memory's
    /// candidate is checked against its row, so a hash collision never
    /// answers for another message.
    pub fn resend_of(
        &self,
        memory: &DedupeMemory,
        sender: &str,
        client_msg_id: &str,
        now: i64,
        window_ms: i64,
    ) -> Result<Option<Resend>, StoreError> {
        if client_msg_id.is_empty() {
            return Ok(None);
        }
        let Some(id) = memory.candidate(sender, client_msg_id) else {
            return Ok(None);
        };
        match self.row(id)? {
            Some(s) => {
                let m = s.message;
                let same = m.sender == sender && m.client_msg_id == client_msg_id;
                Ok((same && now - m.server_ts < window_ms).then_some((id, Some(m))))
            }
            // Recalled since: still a resend while in the window.
            None => Ok((now - timestamp_of(id) < window_ms).then_some((id, None))),
        }
    }

    pub fn put_group(&mut self, group: &Group) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(group).map_err(corrupt)?;
        self.groups
            .insert(group.id.as_str(), bytes.as_slice())
            .map_err(io)?;
        Ok(())
    }

    pub fn delete_group(&mut self, group_id: &str) -> Result<bool, StoreError> {
        Ok(self.groups.remove(group_id).map_err(io)?.is_some())
    }

    pub fn put_setting(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        self.settings.insert(key, value).map_err(io)?;
        Ok(())
    }

    /// Imported messages (migration), a whole batch in this
    /// transaction: for each, `(id, duplicate)` or why it was refused
    /// (`import.rs`).
    pub fn import_batch(&mut self, batch: &[ImportMessage]) -> Result<import::Placed, StoreError> {
        import::import_batch(self, batch)
    }

    /// Rows in ascending id order, each chunk they land in read and
    /// written once (imports).
    pub(crate) fn put_rows_sorted(&mut self, rows: &[(u64, Vec<u8>)]) -> Result<(), StoreError> {
        self.tail.put_sorted(&mut self.messages, rows)
    }

    /// Write the rows still held in memory (the open chunk). `finish`
    /// does it too.
    pub fn flush_rows(&mut self) -> Result<(), StoreError> {
        self.tail.flush(&mut self.messages)
    }

    /// Write this transaction's daily counts and drop counts older than
    /// yesterday (of `now`, the store's clock). Call once, before commit.
    pub fn finish(mut self, now: i64) -> Result<(), StoreError> {
        self.tail.flush(&mut self.messages)?;
        for (day, senders) in std::mem::take(&mut self.daily) {
            for (user, n) in senders {
                daily_sent::add(&mut self.daily_sent, day, &user, n)?;
            }
        }
        daily_sent::expire(&mut self.daily_sent, now)
    }
}

/// Rebuild the resend memory from the rows of the last `window_ms` before
/// `now` (newest first, at most the memory's capacity).
pub fn rebuild_dedupe(
    txn: &redb::ReadTransaction,
    memory: &mut DedupeMemory,
    now: i64,
    window_ms: i64,
    capacity: usize,
) -> Result<(), StoreError> {
    memory.clear();
    let messages = txn.open_table(tables::MESSAGES).map_err(io)?;
    let from = imgate_core::id::first_id_at(now - window_ms);
    // The newest `capacity` keys of the window, oldest first.
    let mut keys = std::collections::VecDeque::new();
    each_from(&messages, from, |id, bytes| {
        let (sender, cmid) = row::dedupe_key(bytes).map_err(corrupt)?;
        if !cmid.is_empty() {
            if keys.len() == capacity {
                keys.pop_front();
            }
            keys.push_back((id, sender.to_string(), cmid.to_string()));
        }
        Ok(true)
    })?;
    for (id, sender, cmid) in keys {
        memory.insert(&sender, &cmid, id, now);
    }
    Ok(())
}
