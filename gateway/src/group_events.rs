//! Group membership changes made through the admin API, told to every
//! node (`Store::announce`, topic [`GROUP_TOPIC`]) so that protocols with
//! a live view of a group can show them: XMPP sends them as room presence
//! (`xmpp::muc`). Transient like every announcement: a node that is down
//! misses it, and its clients see the membership at their next join.

use imgate_core::store::Store;
use serde::{Deserialize, Serialize};

/// The announcement topic of membership changes.
pub const GROUP_TOPIC: &str = "group.members";
/// Members listed in one announcement (larger groups: the change is not
/// announced; clients see it at their next join).
pub const MAX_ANNOUNCED_MEMBERS: usize = 1000;

/// Who joined or left a group, and its members after the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupChange {
    pub group: String,
    pub owner: String,
    pub members: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

/// Announce `change` (best effort: a failure is logged, the change itself
/// is already stored).
pub async fn announce(store: &dyn Store, change: GroupChange) {
    if change.added.is_empty() && change.removed.is_empty() {
        return;
    }
    if change.members.len() > MAX_ANNOUNCED_MEMBERS {
        return;
    }
    match serde_json::to_string(&change) {
        Ok(payload) => {
            if let Err(e) = store.announce(GROUP_TOPIC.to_string(), payload).await {
                tracing::debug!(error = %e, "group change not announced");
            }
        }
        Err(e) => tracing::warn!(error = %e, "group change not encodable"),
    }
}
