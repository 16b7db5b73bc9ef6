//! Replay tags: the index of spent dynamic codes (tag → window end), its view from inside the
//! writer lock, its restoration after a crash and the purge of tags whose window has ended.

use super::{be_i64, decode_stored, StoreError, GUARD_PENDING};
use crate::verification::verifier::{ReplayStatus, ReplayTag, ReplayView};

/// How many of the newest records `open` checks for a replay tag missing from the index. Only
/// the very last can be (a crash between its insert and the tag's), but checking a few more
/// costs nothing.
const TAG_RESTORE_WINDOW: usize = 16;

/// Removes replay-index entries whose window ended before `now_ms`.
pub(super) fn purge_tags_before(replay: &sled::Tree, now_ms: i64) -> Result<usize, StoreError> {
    let mut n = 0;
    for kv in replay.iter() {
        let (k, v) = kv?;
        if be_i64(&v).is_none_or(|end| end < now_ms) {
            replay.remove(k)?;
            n += 1;
        }
    }
    Ok(n)
}

/// Re-inserts replay tags of the newest records that are missing from the replay index.
pub(super) fn restore_replay_tags(
    records: &sled::Tree,
    replay: &sled::Tree,
) -> Result<usize, StoreError> {
    let mut restored = 0;
    for kv in records.iter().rev().take(TAG_RESTORE_WINDOW) {
        let (_, v) = kv?;
        let stored = decode_stored(&v)?;
        if let (Some(tag), Some(until)) = (stored.replay_tag, stored.replay_until_ms) {
            let tag = hex::decode(tag).map_err(|e| StoreError::Corrupt {
                what: "replay tag",
                detail: e.to_string(),
            })?;
            if replay.get(&tag)?.is_none() {
                replay.insert(tag, &until.to_be_bytes())?;
                restored += 1;
            }
        }
    }
    Ok(restored)
}

/// The replay tree seen from inside the writer lock.
pub(super) struct TreeReplayView<'a> {
    pub(super) replay: &'a sled::Tree,
    pub(super) guard_from_ms: Option<i64>,
    pub(super) now_ms: i64,
}

impl ReplayView for TreeReplayView<'_> {
    fn replay_status(&self, tag: &ReplayTag, window_start_ms: i64) -> ReplayStatus {
        if let Some(g) = self.guard_from_ms {
            if g == GUARD_PENDING || window_start_ms < g {
                return ReplayStatus::Unknown;
            }
        }
        match self.replay.get(tag.0) {
            Ok(Some(v)) => match be_i64(&v) {
                Some(end) if end < self.now_ms => ReplayStatus::Fresh,
                _ => ReplayStatus::Spent,
            },
            Ok(None) => ReplayStatus::Fresh,
            // Cannot read the tag: fail closed.
            Err(_) => ReplayStatus::Unknown,
        }
    }
}
