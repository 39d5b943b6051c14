//! The registry store's federation tables (see [`super`] for the others):
//!
//! ```text
//! blob_holds     (repo, digest) -> (hold DID, size)   blobs of a repository kept by a remote hold
//! remote_uploads upload id      -> session JSON       OCI upload sessions streaming to a remote hold
//! ```
//!
//! `blob_holds` answers "which hold stores this blob of this repository" for pulls and for
//! manifest pushes. It is written when an upload to a remote hold completes, when a blob is
//! mounted on a remote hold, and when a manifest fetched from a PDS names a remote hold in
//! `holdDid` (one row per config/layer blob, size from the manifest's descriptor). A
//! repository's local link (`blob_links`) wins over a row here.

use redb::{ReadableTable, TableDefinition};

use super::{MetaStore, Pair, StoreError, REPOS};
use crate::oci::types::Digest;

pub(super) const BLOB_HOLDS: TableDefinition<Pair, (&str, u64)> =
    TableDefinition::new("blob_holds");
pub(super) const REMOTE_UPLOADS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("remote_uploads");

impl MetaStore {
    /// The remote hold keeping `digest` for `repo`, and its size.
    pub fn blob_hold(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<Option<(String, u64)>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(BLOB_HOLDS)?;
        Ok(t.get((repo, digest.to_string().as_str()))?.map(|v| {
            let (hold, size) = v.value();
            (hold.to_string(), size)
        }))
    }

    /// Records that `hold` keeps `digest` for `repo` (and that the repository exists).
    pub fn link_remote_blobs(
        &self,
        repo: &str,
        blobs: &[(Digest, u64)],
        hold: &str,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(BLOB_HOLDS)?;
            for (d, size) in blobs {
                t.insert((repo, d.to_string().as_str()), (hold, *size))?;
            }
            txn.open_table(REPOS)?.insert(repo, ())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// A completed remote upload: the blob row is written and the session forgotten, atomically.
    pub fn finish_remote_upload(
        &self,
        id: &str,
        repo: &str,
        digest: &Digest,
        hold: &str,
        size: u64,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            txn.open_table(BLOB_HOLDS)?
                .insert((repo, digest.to_string().as_str()), (hold, size))?;
            txn.open_table(REPOS)?.insert(repo, ())?;
            txn.open_table(REMOTE_UPLOADS)?.remove(id)?;
        }
        txn.commit()?;
        Ok(())
    }

    pub fn unlink_remote_blob(&self, repo: &str, digest: &Digest) -> Result<bool, StoreError> {
        let txn = self.db.begin_write()?;
        let existed = txn
            .open_table(BLOB_HOLDS)?
            .remove((repo, digest.to_string().as_str()))?
            .is_some();
        txn.commit()?;
        Ok(existed)
    }

    pub fn put_remote_upload(&self, id: &str, session: &[u8]) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(REMOTE_UPLOADS)?.insert(id, session)?;
        txn.commit()?;
        Ok(())
    }

    pub fn get_remote_upload(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(REMOTE_UPLOADS)?;
        Ok(t.get(id)?.map(|v| v.value().to_vec()))
    }

    pub fn delete_remote_upload(&self, id: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(REMOTE_UPLOADS)?.remove(id)?;
        txn.commit()?;
        Ok(())
    }

    pub fn list_remote_uploads(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read()?;
        let mut out = Vec::new();
        for row in txn.open_table(REMOTE_UPLOADS)?.iter()? {
            let (k, v) = row?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_blob_rows() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(&dir.path().join("r.redb")).unwrap();
        let d = Digest::sha256_of(b"layer");
        assert_eq!(s.blob_hold("alice.test/app", &d).unwrap(), None);
        s.put_remote_upload("fed-1", b"{}").unwrap();
        assert_eq!(s.list_remote_uploads().unwrap().len(), 1);
        s.finish_remote_upload("fed-1", "alice.test/app", &d, "did:web:b", 5)
            .unwrap();
        assert_eq!(
            s.blob_hold("alice.test/app", &d).unwrap(),
            Some(("did:web:b".into(), 5))
        );
        assert!(s.get_remote_upload("fed-1").unwrap().is_none());
        assert!(s.repo_exists("alice.test/app").unwrap());
        // Per repository, like local links.
        assert_eq!(s.blob_hold("alice.test/other", &d).unwrap(), None);
        s.link_remote_blobs("bob.test/x", &[(d.clone(), 5)], "did:web:c")
            .unwrap();
        assert!(s.unlink_remote_blob("bob.test/x", &d).unwrap());
        assert!(!s.unlink_remote_blob("bob.test/x", &d).unwrap());
    }
}
