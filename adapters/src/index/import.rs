//! Where an imported message (`Store::import`) goes: an id in its own
//! millisecond on the reserved import node id ([`import_ids`]), or the id
//! an earlier import of the same old id got.

use imgate_core::id::import_ids;
use imgate_core::store::{ImportMessage, IMPORT_LIVE_ONLY, IMPORT_MS_FULL, IMPORT_TOO_OLD};
use imgate_core::StoreError;
use redb::ReadableTable;

use super::tables::io;
use super::write::IndexWrite;

/// `(id, true)` for an old id imported before, `(id, false)` for the first
/// free id of the message's millisecond, or why it is refused.
pub(crate) fn choose_id(
    t: &IndexWrite<'_>,
    item: &ImportMessage,
) -> Result<Result<(u64, bool), String>, StoreError> {
    if let Some(id) = t.imports.get(item.old_id.as_str()).map_err(io)? {
        return Ok(Ok((id.value(), true)));
    }
    if item.message.payload.is_live_only() {
        return Ok(Err(IMPORT_LIVE_ONLY.into()));
    }
    let Some(candidates) = import_ids(item.message.server_ts) else {
        return Ok(Err(IMPORT_TOO_OLD.into()));
    };
    for id in candidates {
        if !t.row_exists(id)? {
            return Ok(Ok((id, false)));
        }
    }
    Ok(Err(IMPORT_MS_FULL.into()))
}
