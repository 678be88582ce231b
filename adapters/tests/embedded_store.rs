//! The `Store` contract (`store_contract`) on the embedded store: real
//! redb files in a temp dir, reopened in the same process.

#[macro_use]
mod store_contract;

use imgate_adapters::embedded::{EmbeddedConfig, EmbeddedStore};
use imgate_core::store::DeviceFeed;
use imgate_core::Store;
use store_contract::Backend;

struct Embedded {
    dir: tempfile::TempDir,
}

impl Embedded {
    fn new() -> Embedded {
        Embedded {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }
}

impl Backend for Embedded {
    type S = EmbeddedStore;

    async fn open(&self) -> EmbeddedStore {
        EmbeddedStore::open(EmbeddedConfig::new(self.dir.path())).expect("open store")
    }

    async fn attach(&self, store: &EmbeddedStore, user: &str, device: &str) -> DeviceFeed {
        store.attach_device(user, device).await.expect("attach")
    }

    async fn close(&self, store: EmbeddedStore) {
        store.close().await;
    }
}

/// A fresh store in its own temp dir for every test.
fn embedded(_test: &str) -> Option<Embedded> {
    Some(Embedded::new())
}

contract_tests!(embedded);
