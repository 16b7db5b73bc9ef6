//! The verification core: the YM1 code format, the four algorithms and their keys, the trust
//! state a terminal holds, the pure verifier and the record it leaves.
//!
//! **Must not know:** files, clocks, storage, threads or the network. Everything here is handed
//! the time, the trust state and a replay view, so every rule is table-tested; reading trust
//! files is [`crate::local_trust`]'s job, keeping records the store's.

pub mod code;
pub mod keys;
pub mod record;
pub mod trust;
pub mod verdict;
pub mod verifier;
