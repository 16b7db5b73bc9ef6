//! The outbox: durable records waiting for the platform, and the platform's committed cursor.
//! Only the sync client holds an [`Outbox`]; it reads records in order and acknowledges what
//! the platform confirmed, and the acknowledged records are deleted.

use std::sync::atomic::Ordering;

use super::{be_u64, decode_record, delete_through, Store, StoreError, K_SYNCED};
use crate::verification::record::Record;

impl Store {
    /// This store generation's name (the platform keys records by it and `seq`).
    pub(crate) fn store_id(&self) -> &str {
        &self.store_id
    }

    /// The highest seq the platform has confirmed holding (every earlier one too).
    pub(crate) fn synced_through(&self) -> u64 {
        self.synced_through.load(Ordering::SeqCst)
    }

    /// Records written but not yet confirmed by the platform.
    pub(crate) fn backlog(&self) -> u64 {
        (self.next_seq() - 1).saturating_sub(self.synced_through())
    }

    /// Up to `limit` durable records the platform has not confirmed, oldest first.
    pub(crate) fn unsynced(&self, limit: usize) -> Result<Vec<Record>, StoreError> {
        self.unsynced_from(self.synced_through() + 1, limit)
    }

    /// Up to `limit` durable records with `seq >= from` (a sync client reading ahead of the
    /// platform's confirmations).
    pub(crate) fn unsynced_from(&self, from: u64, limit: usize) -> Result<Vec<Record>, StoreError> {
        self.usable()?;
        let from = from.max(self.synced_through() + 1);
        let durable = self.durable_seq();
        let mut out = Vec::with_capacity(limit.min(1024));
        for kv in self.records.range(from.to_be_bytes()..) {
            let (k, v) = kv?;
            if be_u64(&k).is_none_or(|seq| seq > durable) || out.len() >= limit {
                break;
            }
            out.push(decode_record(&v)?);
        }
        Ok(out)
    }

    /// Time of the oldest record still waiting for the platform.
    pub(crate) fn oldest_unsynced_ms(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.unsynced(1)?.first().map(|r| r.at_ms))
    }

    /// The platform holds every record up to `through`: persist that (fsynced), then delete
    /// those records. A cursor behind the current one changes nothing; one beyond the durable
    /// records is refused (the platform cannot hold what was never offered).
    pub(crate) fn ack_synced(&self, through: u64) -> Result<usize, StoreError> {
        let _sync = self.sync_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.usable()?;
        let before = self.synced_through();
        if through <= before {
            return Ok(0);
        }
        if through > self.durable_seq() {
            return Err(StoreError::AckBeyondDurable {
                through,
                durable: self.durable_seq(),
            });
        }
        self.meta.insert(K_SYNCED, &through.to_be_bytes())?;
        self.durability.sync()?;
        self.synced_through.store(through, Ordering::SeqCst);
        // From the first record, not `before + 1`: confirmed records a cut kept from being
        // deleted go too.
        delete_through(&self.records, through)
    }

    /// Persists the platform policy cache (its own file, complete or absent after a cut,
    /// fsynced before this returns; see the store's layout for why not in sled).
    pub(crate) fn save_policy(&self, bytes: &[u8]) -> Result<(), StoreError> {
        self.usable()?;
        crate::files::write_durable(&self.policy_path, bytes, crate::files::PRIVATE_FILE)?;
        Ok(())
    }

    /// The persisted platform policy cache, if any.
    pub(crate) fn load_policy(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.usable()?;
        match std::fs::read(&self.policy_path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Io {
                path: self.policy_path.clone(),
                source: e,
            }),
        }
    }
}

/// The sync client's view of the store: records waiting for the platform, in order, and the
/// acknowledgement of what the platform confirmed (after which those records are deleted);
/// and the platform policy the terminal persisted.
#[derive(Debug, Clone)]
pub struct Outbox(pub(super) std::sync::Arc<Store>);

impl Outbox {
    /// This store generation's name: with `seq`, what the platform keys records by.
    pub fn store_id(&self) -> &str {
        self.0.store_id()
    }

    /// The highest seq the platform has confirmed holding (every earlier one too).
    pub fn synced_through(&self) -> u64 {
        self.0.synced_through()
    }

    /// Records written but not yet confirmed by the platform.
    pub fn backlog(&self) -> u64 {
        self.0.backlog()
    }

    /// Up to `limit` durable records with `seq >= from` that the platform has not confirmed
    /// (a client reading ahead of the platform's confirmations), oldest first.
    pub fn unsynced_from(&self, from: u64, limit: usize) -> Result<Vec<Record>, StoreError> {
        self.0.unsynced_from(from, limit)
    }

    /// Time of the oldest record still waiting for the platform.
    pub fn oldest_unsynced_ms(&self) -> Result<Option<i64>, StoreError> {
        self.0.oldest_unsynced_ms()
    }

    /// The platform holds every record up to `through`: persist that (fsynced), then delete
    /// those records; returns how many were deleted. A cursor behind the current one changes
    /// nothing; one beyond the durable records is refused.
    pub fn ack_synced(&self, through: u64) -> Result<usize, StoreError> {
        self.0.ack_synced(through)
    }

    /// Persists the platform policy cache (fsynced before this returns).
    pub fn save_policy(&self, bytes: &[u8]) -> Result<(), StoreError> {
        self.0.save_policy(bytes)
    }

    /// The persisted platform policy cache, if any.
    pub fn load_policy(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.load_policy()
    }
}
