//! The durable outbox of index writes this appliance makes itself: the direct writes after a
//! push, a delete or a star, and the pull-count deltas. A redb file beside the index
//! (`<index>.outbox.redb`), so a write survives a primary that is down, a local index file
//! that cannot be written, and a restart in between.
//!
//! Invariants (ARCHITECTURE.md repeats them):
//! - An entry is durable (fsynced) before the caller is told it is queued; entries get
//!   consecutive sequence numbers and are applied strictly in that order, one index
//!   transaction each ([`super::drain`]).
//! - An entry leaves the outbox only after the index committed it. The same transaction
//!   records the entry's sequence number in `outbox_applied` (keyed by this outbox's id), and
//!   an entry at or below that number is never applied again: applying is exactly-once even
//!   when the process dies between the index commit and the removal here.
//! - Bounded: at most [`MAX_ENTRIES`] entries and [`MAX_BYTES`] bytes. A record write that
//!   does not fit is dropped and counted (`dropped`; the backfill can rebuild it); pull counts
//!   are never dropped: they stay in memory, merged per repository, until they fit.
//!
//! This module is storage only (no SQL, no network); `drain.rs` moves entries to the index.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use super::apply::RecordChange;

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

/// Most entries the outbox holds.
pub const MAX_ENTRIES: u64 = 100_000;
/// Most bytes of entries the outbox holds.
pub const MAX_BYTES: u64 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("index outbox {path}: {message}")]
    Storage { path: PathBuf, message: String },
    #[error("index outbox is full ({entries} entries, {bytes} bytes)")]
    Full { entries: u64, bytes: u64 },
    #[error("index outbox is closed (shutting down)")]
    Closed,
}

/// One queued write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Record changes of one DID's repository (what the PDS now holds).
    Records { did: String, changes: Vec<Change> },
    /// Pulls counted since the last flush: (DID, repository, count), and when.
    Pulls {
        counts: Vec<(String, String, u64)>,
        at: String,
    },
}

/// A [`RecordChange`] as stored (the outbox's own format, so the index's types can change
/// without breaking a queue written by an older build).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub collection: String,
    pub rkey: String,
    /// `None`: the record was deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
}

impl From<&RecordChange> for Change {
    fn from(c: &RecordChange) -> Self {
        match c {
            RecordChange::Upsert {
                collection,
                rkey,
                value,
            } => Change {
                collection: collection.clone(),
                rkey: rkey.clone(),
                value: Some(value.clone()),
            },
            RecordChange::Delete { collection, rkey } => Change {
                collection: collection.clone(),
                rkey: rkey.clone(),
                value: None,
            },
        }
    }
}

impl From<Change> for RecordChange {
    fn from(c: Change) -> Self {
        match c.value {
            Some(value) => RecordChange::Upsert {
                collection: c.collection,
                rkey: c.rkey,
                value,
            },
            None => RecordChange::Delete {
                collection: c.collection,
                rkey: c.rkey,
            },
        }
    }
}

/// A queued entry: its sequence number and the write (or why it does not decode).
pub type Entry = (u64, Result<Op, String>);

/// The outbox file; cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` once closed: the file lock is released even while stray handles live on.
    db: std::sync::RwLock<Option<Arc<Database>>>,
    path: PathBuf,
    /// Identifies this outbox in the index's `outbox_applied` table (several appliances may
    /// share one primary, each with its own sequence).
    id: String,
    entries: AtomicU64,
    bytes: AtomicU64,
    next_seq: AtomicU64,
    max_entries: u64,
    max_bytes: u64,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("path", &self.inner.path)
            .field("entries", &self.len())
            .finish()
    }
}

fn storage(path: &Path, e: impl std::fmt::Display) -> OutboxError {
    OutboxError::Storage {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

impl Outbox {
    /// Open (or create) the outbox file.
    pub fn open(path: &Path) -> Result<Outbox, OutboxError> {
        Self::open_bounded(path, MAX_ENTRIES, MAX_BYTES)
    }

    /// [`Outbox::open`] with other bounds (tests).
    pub fn open_bounded(
        path: &Path,
        max_entries: u64,
        max_bytes: u64,
    ) -> Result<Outbox, OutboxError> {
        let err = |e: &dyn std::fmt::Display| storage(path, e);
        // A handle dropped a moment ago (a restart within one process) may still be held by
        // a background task finishing its step: wait for it briefly.
        let mut tries = 0;
        let db = loop {
            // Through `redb_file` so `atcr backup` snapshots it consistently while in use.
            match crate::redb_file::open(path) {
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if tries < 50 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                r => break r.map_err(|e| err(&e))?,
            }
        };
        let txn = db.begin_write().map_err(|e| err(&e))?;
        let (id, entries, bytes, next_seq) = {
            let mut meta = txn.open_table(META).map_err(|e| err(&e))?;
            let existing = meta
                .get("id")
                .map_err(|e| err(&e))?
                .map(|v| v.value().to_string());
            let id = match existing {
                Some(id) => id,
                None => {
                    let id = uuid::Uuid::new_v4().to_string();
                    meta.insert("id", id.as_str()).map_err(|e| err(&e))?;
                    id
                }
            };
            let table = txn.open_table(ENTRIES).map_err(|e| err(&e))?;
            let entries = table.len().map_err(|e| err(&e))?;
            let mut bytes = 0u64;
            for row in table.iter().map_err(|e| err(&e))? {
                let (_, v) = row.map_err(|e| err(&e))?;
                bytes += v.value().len() as u64;
            }
            let last = table.last().map_err(|e| err(&e))?.map(|(k, _)| k.value());
            // Sequence numbers never go back, even when the outbox was emptied: the highest
            // ever used is kept in the meta table.
            let stored: u64 = meta
                .get("next_seq")
                .map_err(|e| err(&e))?
                .and_then(|v| v.value().parse().ok())
                .unwrap_or(1);
            drop(meta);
            (id, entries, bytes, stored.max(last.map_or(1, |l| l + 1)))
        };
        txn.commit().map_err(|e| err(&e))?;
        Ok(Outbox {
            inner: Arc::new(Inner {
                db: std::sync::RwLock::new(Some(db)),
                path: path.to_path_buf(),
                id,
                entries: AtomicU64::new(entries),
                bytes: AtomicU64::new(bytes),
                next_seq: AtomicU64::new(next_seq),
                max_entries,
                max_bytes,
            }),
        })
    }

    /// An outbox without a file: every push is refused as [`OutboxError::Closed`].
    pub fn detached() -> Outbox {
        Outbox {
            inner: Arc::new(Inner {
                db: std::sync::RwLock::new(None),
                path: PathBuf::new(),
                id: String::new(),
                entries: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
                next_seq: AtomicU64::new(1),
                max_entries: 0,
                max_bytes: 0,
            }),
        }
    }

    pub fn id(&self) -> &str {
        &self.inner.id
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Entries waiting.
    pub fn len(&self) -> u64 {
        self.inner.entries.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of entries waiting.
    pub fn bytes(&self) -> u64 {
        self.inner.bytes.load(Ordering::Relaxed)
    }

    pub fn max_entries(&self) -> u64 {
        self.inner.max_entries
    }

    pub fn max_bytes(&self) -> u64 {
        self.inner.max_bytes
    }

    /// Close the file (blocking: waits for an operation in progress). Later operations fail
    /// with [`OutboxError::Closed`].
    pub fn close(&self) {
        self.inner
            .db
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// Append an entry durably (blocking: call from `spawn_blocking`); returns its sequence
    /// number. Refused with [`OutboxError::Full`] when it would break a bound.
    pub fn push(&self, op: &Op) -> Result<u64, OutboxError> {
        let path = &self.inner.path;
        let value = serde_json::to_vec(op).map_err(|e| storage(path, e))?;
        let (entries, bytes) = (self.len(), self.bytes());
        if entries + 1 > self.inner.max_entries || bytes + value.len() as u64 > self.inner.max_bytes
        {
            return Err(OutboxError::Full { entries, bytes });
        }
        let db = self.inner.db.read().unwrap_or_else(|e| e.into_inner());
        let db = db.as_ref().ok_or(OutboxError::Closed)?;
        let mut txn = db.begin_write().map_err(|e| storage(path, e))?;
        txn.set_durability(Durability::Immediate);
        // Numbered inside the write transaction (redb runs one at a time), so concurrent
        // pushes never share a number.
        let seq = {
            let mut meta = txn.open_table(META).map_err(|e| storage(path, e))?;
            let seq = meta
                .get("next_seq")
                .map_err(|e| storage(path, e))?
                .and_then(|v| v.value().parse().ok())
                .unwrap_or(1u64)
                .max(self.inner.next_seq.load(Ordering::SeqCst));
            meta.insert("next_seq", (seq + 1).to_string().as_str())
                .map_err(|e| storage(path, e))?;
            let mut table = txn.open_table(ENTRIES).map_err(|e| storage(path, e))?;
            table
                .insert(seq, value.as_slice())
                .map_err(|e| storage(path, e))?;
            seq
        };
        txn.commit().map_err(|e| storage(path, e))?;
        self.inner.next_seq.fetch_max(seq + 1, Ordering::SeqCst);
        self.inner.entries.fetch_add(1, Ordering::Relaxed);
        self.inner
            .bytes
            .fetch_add(value.len() as u64, Ordering::Relaxed);
        Ok(seq)
    }

    /// The oldest entry (blocking). An entry that no longer decodes (a newer build's format)
    /// is returned as `Err` with its sequence number, so the caller can drop it.
    pub fn first(&self) -> Result<Option<Entry>, OutboxError> {
        let path = &self.inner.path;
        let db = self.inner.db.read().unwrap_or_else(|e| e.into_inner());
        let db = db.as_ref().ok_or(OutboxError::Closed)?;
        let txn = db.begin_read().map_err(|e| storage(path, e))?;
        let table = txn.open_table(ENTRIES).map_err(|e| storage(path, e))?;
        let Some((k, v)) = table.first().map_err(|e| storage(path, e))? else {
            return Ok(None);
        };
        let op = serde_json::from_slice(v.value()).map_err(|e| e.to_string());
        Ok(Some((k.value(), op)))
    }

    /// Remove an entry once the index holds it (blocking).
    pub fn remove(&self, seq: u64) -> Result<(), OutboxError> {
        let path = &self.inner.path;
        let db = self.inner.db.read().unwrap_or_else(|e| e.into_inner());
        let db = db.as_ref().ok_or(OutboxError::Closed)?;
        let mut txn = db.begin_write().map_err(|e| storage(path, e))?;
        txn.set_durability(Durability::Immediate);
        let removed = {
            let mut table = txn.open_table(ENTRIES).map_err(|e| storage(path, e))?;
            let v = table.remove(seq).map_err(|e| storage(path, e))?;
            v.map(|v| v.value().len() as u64)
        };
        txn.commit().map_err(|e| storage(path, e))?;
        if let Some(n) = removed {
            self.inner.entries.fetch_sub(1, Ordering::Relaxed);
            self.inner.bytes.fetch_sub(n, Ordering::Relaxed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(n: u8) -> Op {
        Op::Records {
            did: "did:plc:ewvi7nxzyoun6zhxrhs64oiz".into(),
            changes: vec![
                Change {
                    collection: "io.atcr.tag".into(),
                    rkey: format!("app_v{n}"),
                    value: Some(serde_json::json!({"tag": format!("v{n}")})),
                },
                Change {
                    collection: "io.atcr.tag".into(),
                    rkey: "gone".into(),
                    value: None,
                },
            ],
        }
    }

    #[test]
    fn entries_survive_a_reopen_in_order_and_sequences_never_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.redb");
        let o = Outbox::open(&path).unwrap();
        let id = o.id().to_string();
        assert_eq!(o.push(&records(1)).unwrap(), 1);
        assert_eq!(o.push(&records(2)).unwrap(), 2);
        let pulls = Op::Pulls {
            counts: vec![("did:plc:x".into(), "app".into(), 3)],
            at: "2026-01-01T00:00:00Z".into(),
        };
        assert_eq!(o.push(&pulls).unwrap(), 3);
        assert_eq!(o.len(), 3);
        let bytes = o.bytes();
        assert!(bytes > 0);
        drop(o);

        let o = Outbox::open(&path).unwrap();
        assert_eq!(o.id(), id, "the outbox keeps its identity");
        assert_eq!((o.len(), o.bytes()), (3, bytes));
        let (seq, op) = o.first().unwrap().unwrap();
        assert_eq!((seq, op.unwrap()), (1, records(1)));
        o.remove(1).unwrap();
        o.remove(1).unwrap(); // idempotent
        assert_eq!(o.first().unwrap().unwrap().0, 2);
        o.remove(2).unwrap();
        let (seq, op) = o.first().unwrap().unwrap();
        assert_eq!((seq, op.unwrap()), (3, pulls));
        o.remove(3).unwrap();
        assert!(o.first().unwrap().is_none());
        assert_eq!((o.len(), o.bytes()), (0, 0));
        drop(o);
        // Emptied and reopened: numbering continues (an index that recorded seq 3 as
        // applied must never see a new entry 3).
        let o = Outbox::open(&path).unwrap();
        assert_eq!(o.push(&records(4)).unwrap(), 4);
    }

    #[test]
    fn concurrent_pushes_get_distinct_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::open(&dir.path().join("o.redb")).unwrap();
        let threads: Vec<_> = (0..8u8)
            .map(|n| {
                let o = o.clone();
                std::thread::spawn(move || {
                    (0..5)
                        .map(|_| o.push(&records(n)).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut seqs: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        seqs.sort();
        assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
        assert_eq!(o.len(), 40);
    }

    #[test]
    fn bounds_refuse_entries_that_do_not_fit() {
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::open_bounded(&dir.path().join("o.redb"), 2, 1 << 20).unwrap();
        o.push(&records(1)).unwrap();
        o.push(&records(2)).unwrap();
        assert!(matches!(
            o.push(&records(3)),
            Err(OutboxError::Full { entries: 2, .. })
        ));
        o.remove(1).unwrap();
        o.push(&records(3)).unwrap();
        let small = Outbox::open_bounded(&dir.path().join("s.redb"), 10, 64).unwrap();
        assert!(matches!(
            small.push(&records(1)),
            Err(OutboxError::Full { .. })
        ));
        assert!(small.is_empty());
    }

    #[test]
    fn record_changes_round_trip() {
        let up = RecordChange::Upsert {
            collection: "io.atcr.manifest".into(),
            rkey: "abc".into(),
            value: serde_json::json!({"a": 1}),
        };
        let del = RecordChange::Delete {
            collection: "io.atcr.tag".into(),
            rkey: "t".into(),
        };
        for c in [up, del] {
            let stored: Change = (&c).into();
            let back: RecordChange =
                serde_json::from_slice::<Change>(&serde_json::to_vec(&stored).unwrap())
                    .unwrap()
                    .into();
            assert_eq!(back, c);
        }
    }
}
