//! A device's catch-up source: pages of its user's timeline after a
//! position, read on the blocking pool (see `DeviceFeed::from_cursor`).

use std::sync::Arc;

use imgate_core::store::{BoxFuture, CatchUp, CatchUpPage, StoreResult};

use crate::index::read;

/// Messages per catch-up page.
const PAGE: usize = 256;

pub struct DeviceTimeline {
    db: Arc<redb::Database>,
    user: Arc<str>,
    device: Arc<str>,
}

impl DeviceTimeline {
    pub fn new(db: Arc<redb::Database>, user: &str, device: &str) -> Self {
        DeviceTimeline {
            db,
            user: user.into(),
            device: device.into(),
        }
    }
}

impl CatchUp for DeviceTimeline {
    fn after(&self, position: u64) -> BoxFuture<'static, StoreResult<CatchUpPage>> {
        let (user, device) = (self.user.clone(), self.device.clone());
        Box::pin(super::read_on(self.db.clone(), move |txn| {
            read::device_page(txn, &user, &device, position, PAGE)
        }))
    }
}
