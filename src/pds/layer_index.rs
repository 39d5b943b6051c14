//! Derived tables over the `io.atcr.hold.layer` records, in `hold.redb` next to the repo, so
//! the quota check, `notifyManifest`, `getLayersForManifest`, per-user export/delete, GC and
//! the admin panel never walk the whole layer collection:
//!
//! ```text
//! layer_records      rkey -> (userDid, digest, size, manifest)   every indexed layer record
//! layer_user_digests (userDid, digest) -> (records naming it, size counted)
//! layer_usage        userDid -> (unique digests, total bytes)    quota usage (quota::Usage)
//! layer_by_manifest  (manifest AT-URI, rkey) -> digest
//! layer_by_user      (userDid, rkey) -> ()
//! ```
//!
//! **Invariant**: the tables describe exactly the layer records of the repo at the stored
//! head. They are changed only by [`apply`], which [`HoldStore::commit_change`] runs inside
//! the commit's own write transaction (blocks + head + event + these rows commit or fail
//! together), and rebuilt from the records by [`HoldStore::rebuild_layer_index`] when the
//! marker `layer_index_v1` is missing from `meta` (a hold from before them), in one
//! transaction with the marker.
//!
//! Usage counts a digest once per user with the size of the first record naming it (what
//! `quota::Usage` does over the records in rkey order); the size stays while any record of
//! that (user, digest) remains. Sizes come from the blob store, so records of one digest
//! agree and a rebuild gives the same figures.

use redb::{ReadableTable, TableDefinition};

use super::store::{HoldStore, HoldStoreError};

const LAYER_RECORDS: TableDefinition<&str, (&str, &str, u64, &str)> =
    TableDefinition::new("layer_records");
const LAYER_USER_DIGESTS: TableDefinition<(&str, &str), (u64, u64)> =
    TableDefinition::new("layer_user_digests");
const LAYER_USAGE: TableDefinition<&str, (u64, u64)> = TableDefinition::new("layer_usage");
const LAYER_BY_MANIFEST: TableDefinition<(&str, &str), &str> =
    TableDefinition::new("layer_by_manifest");
const LAYER_BY_USER: TableDefinition<(&str, &str), ()> = TableDefinition::new("layer_by_user");

/// Meta key set once the tables cover every layer record.
pub(crate) const MARKER: &str = "layer_index_v1";

/// The indexed fields of one layer record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerFields {
    pub user: String,
    pub digest: String,
    pub size: u64,
    pub manifest: String,
}

impl LayerFields {
    /// From a record as JSON; `None` when it names no user or digest (not counted anywhere,
    /// as before: usage keyed on `userDid`, digests on `digest`).
    pub fn from_json(v: &serde_json::Value) -> Option<LayerFields> {
        Some(LayerFields {
            user: v["userDid"].as_str()?.to_string(),
            digest: v["digest"].as_str()?.to_string(),
            size: v["size"].as_u64().unwrap_or(0),
            manifest: v["manifest"].as_str().unwrap_or("").to_string(),
        })
    }
}

/// One layer record's change in a commit: its fields now, or `None` (deleted, or no longer
/// indexable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerChange {
    pub rkey: String,
    pub now: Option<LayerFields>,
}

/// The user's usage: (unique digests, total bytes).
pub type UsageFigures = (u64, u64);

/// Applies `changes` inside `txn` (the commit's transaction).
pub(crate) fn apply(
    txn: &redb::WriteTransaction,
    changes: &[LayerChange],
) -> Result<(), HoldStoreError> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut recs = txn.open_table(LAYER_RECORDS)?;
    let mut pairs = txn.open_table(LAYER_USER_DIGESTS)?;
    let mut usage = txn.open_table(LAYER_USAGE)?;
    let mut by_manifest = txn.open_table(LAYER_BY_MANIFEST)?;
    let mut by_user = txn.open_table(LAYER_BY_USER)?;
    for c in changes {
        let old = recs.remove(c.rkey.as_str())?.map(|g| {
            let (u, d, s, m) = g.value();
            LayerFields {
                user: u.to_string(),
                digest: d.to_string(),
                size: s,
                manifest: m.to_string(),
            }
        });
        if let Some(old) = old {
            by_user.remove((old.user.as_str(), c.rkey.as_str()))?;
            if !old.manifest.is_empty() {
                by_manifest.remove((old.manifest.as_str(), c.rkey.as_str()))?;
            }
            let key = (old.user.as_str(), old.digest.as_str());
            let (count, size) = pairs.get(key)?.map(|g| g.value()).unwrap_or((0, 0));
            if count <= 1 {
                pairs.remove(key)?;
                let (n, total) = usage
                    .get(old.user.as_str())?
                    .map(|g| g.value())
                    .unwrap_or((0, 0));
                if n <= 1 {
                    usage.remove(old.user.as_str())?;
                } else {
                    usage.insert(old.user.as_str(), (n - 1, total.saturating_sub(size)))?;
                }
            } else {
                pairs.insert(key, (count - 1, size))?;
            }
        }
        if let Some(new) = &c.now {
            recs.insert(
                c.rkey.as_str(),
                (
                    new.user.as_str(),
                    new.digest.as_str(),
                    new.size,
                    new.manifest.as_str(),
                ),
            )?;
            by_user.insert((new.user.as_str(), c.rkey.as_str()), ())?;
            if !new.manifest.is_empty() {
                by_manifest.insert(
                    (new.manifest.as_str(), c.rkey.as_str()),
                    new.digest.as_str(),
                )?;
            }
            let key = (new.user.as_str(), new.digest.as_str());
            let existing = pairs.get(key)?.map(|g| g.value());
            match existing {
                Some((count, size)) => {
                    pairs.insert(key, (count + 1, size))?;
                }
                None => {
                    pairs.insert(key, (1, new.size))?;
                    let (n, total) = usage
                        .get(new.user.as_str())?
                        .map(|g| g.value())
                        .unwrap_or((0, 0));
                    usage.insert(new.user.as_str(), (n + 1, total + new.size))?;
                }
            }
        }
    }
    Ok(())
}

/// Everything in the tables, for tests and the rebuild check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerIndexDump {
    pub records: Vec<(String, LayerFields)>,
    pub pairs: Vec<((String, String), (u64, u64))>,
    pub usage: Vec<(String, UsageFigures)>,
    pub by_manifest: Vec<((String, String), String)>,
    pub by_user: Vec<(String, String)>,
}

impl HoldStore {
    /// Whether the layer tables cover every layer record.
    pub fn layer_index_ready(&self) -> Result<bool, HoldStoreError> {
        Ok(self.get_meta(MARKER)?.is_some())
    }

    /// Empties the layer tables and fills them from `records` (every layer record of the
    /// repo at the head: rkey and fields), with the marker, in one transaction.
    pub fn rebuild_layer_index(
        &self,
        records: impl Iterator<Item = Result<(String, Option<LayerFields>), HoldStoreError>>,
    ) -> Result<u64, HoldStoreError> {
        let txn = self.db().begin_write()?;
        let mut n = 0u64;
        {
            txn.delete_table(LAYER_RECORDS)?;
            txn.delete_table(LAYER_USER_DIGESTS)?;
            txn.delete_table(LAYER_USAGE)?;
            txn.delete_table(LAYER_BY_MANIFEST)?;
            txn.delete_table(LAYER_BY_USER)?;
            let mut batch = Vec::with_capacity(1024);
            for r in records {
                let (rkey, now) = r?;
                n += 1;
                batch.push(LayerChange { rkey, now });
                if batch.len() == 1024 {
                    apply(&txn, &batch)?;
                    batch.clear();
                }
            }
            apply(&txn, &batch)?;
            // The tables exist even for a hold without layer records.
            apply_open_all(&txn)?;
            txn.open_table(super::store::META_TABLE)?
                .insert(MARKER, b"1".as_slice())?;
        }
        txn.commit()?;
        Ok(n)
    }

    /// (unique digests, total bytes) of `user`'s layer records.
    pub fn layer_usage(&self, user: &str) -> Result<UsageFigures, HoldStoreError> {
        let txn = self.db().begin_read()?;
        let t = txn.open_table(LAYER_USAGE)?;
        let v = t.get(user)?.map(|g| g.value()).unwrap_or((0, 0));
        Ok(v)
    }

    /// Usage of every user with layer records.
    pub fn layer_usage_all(&self) -> Result<Vec<(String, UsageFigures)>, HoldStoreError> {
        let txn = self.db().begin_read()?;
        let t = txn.open_table(LAYER_USAGE)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            out.push((k.value().to_string(), v.value()));
        }
        Ok(out)
    }

    /// Bytes `layers` would add to `user`'s usage: digests the user has no record of yet,
    /// each once. O(layers).
    pub fn layer_bytes_added<'a>(
        &self,
        user: &str,
        layers: impl IntoIterator<Item = (&'a str, u64)>,
    ) -> Result<u64, HoldStoreError> {
        let txn = self.db().begin_read()?;
        let t = txn.open_table(LAYER_USER_DIGESTS)?;
        let mut seen = std::collections::BTreeSet::new();
        let mut added = 0u64;
        for (d, s) in layers {
            if seen.insert(d) && t.get((user, d))?.is_none() {
                added += s;
            }
        }
        Ok(added)
    }

    /// (rkey, digest) of the layer records naming `manifest`. O(its layers).
    pub fn layers_of_manifest(
        &self,
        manifest: &str,
    ) -> Result<Vec<(String, String)>, HoldStoreError> {
        let txn = self.db().begin_read()?;
        let t = txn.open_table(LAYER_BY_MANIFEST)?;
        let mut out = Vec::new();
        for row in t.range((manifest, "")..)? {
            let (k, v) = row?;
            let (m, rkey) = k.value();
            if m != manifest {
                break;
            }
            out.push((rkey.to_string(), v.value().to_string()));
        }
        Ok(out)
    }

    /// Record keys of `user`'s layer records, in rkey order. O(their number).
    pub fn layer_rkeys_of_user(&self, user: &str) -> Result<Vec<String>, HoldStoreError> {
        let txn = self.db().begin_read()?;
        let t = txn.open_table(LAYER_BY_USER)?;
        let mut out = Vec::new();
        for row in t.range((user, "")..)? {
            let (k, _) = row?;
            let (u, rkey) = k.value();
            if u != user {
                break;
            }
            out.push(rkey.to_string());
        }
        Ok(out)
    }

    /// Every digest some layer record names (distinct).
    pub fn layer_digests(&self) -> Result<std::collections::HashSet<String>, HoldStoreError> {
        let txn = self.db().begin_read()?;
        let t = txn.open_table(LAYER_USER_DIGESTS)?;
        let mut out = std::collections::HashSet::new();
        for row in t.iter()? {
            let (k, _) = row?;
            out.insert(k.value().1.to_string());
        }
        Ok(out)
    }

    /// The whole index (tests; the rebuild check).
    pub fn layer_index_dump(&self) -> Result<LayerIndexDump, HoldStoreError> {
        let txn = self.db().begin_read()?;
        let mut d = LayerIndexDump::default();
        for row in txn.open_table(LAYER_RECORDS)?.iter()? {
            let (k, v) = row?;
            let (u, dg, s, m) = v.value();
            d.records.push((
                k.value().to_string(),
                LayerFields {
                    user: u.into(),
                    digest: dg.into(),
                    size: s,
                    manifest: m.into(),
                },
            ));
        }
        for row in txn.open_table(LAYER_USER_DIGESTS)?.iter()? {
            let (k, v) = row?;
            let (u, dg) = k.value();
            d.pairs.push(((u.into(), dg.into()), v.value()));
        }
        for row in txn.open_table(LAYER_USAGE)?.iter()? {
            let (k, v) = row?;
            d.usage.push((k.value().into(), v.value()));
        }
        for row in txn.open_table(LAYER_BY_MANIFEST)?.iter()? {
            let (k, v) = row?;
            let (m, r) = k.value();
            d.by_manifest
                .push(((m.into(), r.into()), v.value().to_string()));
        }
        for row in txn.open_table(LAYER_BY_USER)?.iter()? {
            let (k, _) = row?;
            let (u, r) = k.value();
            d.by_user.push((u.into(), r.into()));
        }
        Ok(d)
    }
}

/// Creates the tables (so reads never meet a missing table).
pub(crate) fn apply_open_all(txn: &redb::WriteTransaction) -> Result<(), HoldStoreError> {
    txn.open_table(LAYER_RECORDS)?;
    txn.open_table(LAYER_USER_DIGESTS)?;
    txn.open_table(LAYER_USAGE)?;
    txn.open_table(LAYER_BY_MANIFEST)?;
    txn.open_table(LAYER_BY_USER)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::atproto::repo::Write;
    use crate::config::Config;
    use crate::pds::{collection_where, record_cbor, HoldPds};
    use serde_json::json;
    use std::sync::Arc;

    const LAYER: &str = "io.atcr.hold.layer";

    fn layer(user: &str, digest: &str, size: u64, manifest: &str) -> bytes::Bytes {
        record_cbor(&json!({
            "$type": LAYER, "digest": digest, "size": size, "mediaType": "x",
            "manifest": manifest, "userDid": user, "createdAt": "2025-01-01T00:00:00Z",
        }))
        .unwrap()
    }

    fn create(rkey: &str, rec: bytes::Bytes) -> Write {
        Write::Create {
            collection: LAYER.into(),
            rkey: rkey.into(),
            record: rec,
        }
    }

    /// Usage as the records define it (quota::Usage over all records, rkey order).
    fn scanned(pds: &HoldPds) -> Vec<(String, UsageFigures)> {
        let recs = pds
            .repo
            .read()
            .map(|r| collection_where(&r, LAYER, |_| true).unwrap())
            .unwrap();
        let mut per: std::collections::BTreeMap<String, crate::hold::quota::Usage> =
            Default::default();
        for (_, v) in &recs {
            if let Some(f) = LayerFields::from_json(v) {
                per.entry(f.user).or_default().add(&f.digest, f.size);
            }
        }
        per.into_iter()
            .map(|(u, x)| (u, (x.unique_blobs() as u64, x.total())))
            .collect()
    }

    fn open(config: &Config) -> Arc<HoldPds> {
        HoldPds::open_unsynced(config).unwrap()
    }

    #[test]
    fn incremental_equals_rebuild_and_deletes_decrement() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.server.data_dir = dir.path().to_path_buf();
        let pds = open(&config);
        let (a, b) = ("did:plc:aaaa", "did:plc:bbbb");
        let (ma, mb) = (
            "at://did:plc:aaaa/io.atcr.manifest/1",
            "at://did:plc:aaaa/io.atcr.manifest/2",
        );
        pds.write_blocking(|_| {
            Ok(vec![
                create("3k000000000a1", layer(a, "sha256:x", 10, ma)),
                create("3k000000000a2", layer(a, "sha256:y", 5, ma)),
                create("3k000000000a3", layer(a, "sha256:x", 10, mb)),
                create("3k000000000b1", layer(b, "sha256:x", 10, "")),
                // Not indexable (no userDid): counted nowhere, like before.
                create(
                    "3k000000000z1",
                    record_cbor(&json!({"$type": LAYER, "digest": "sha256:q"})).unwrap(),
                ),
            ])
        })
        .unwrap();
        let store = pds.store().clone();
        assert_eq!(store.layer_usage(a).unwrap(), (2, 15));
        assert_eq!(store.layer_usage(b).unwrap(), (1, 10));
        assert_eq!(store.layer_usage("did:plc:none").unwrap(), (0, 0));
        assert_eq!(
            store
                .layer_bytes_added(a, [("sha256:x", 10), ("sha256:z", 7), ("sha256:z", 7)])
                .unwrap(),
            7
        );
        assert_eq!(store.layers_of_manifest(ma).unwrap().len(), 2);
        assert_eq!(store.layer_rkeys_of_user(a).unwrap().len(), 3);
        assert_eq!(store.layer_usage_all().unwrap(), scanned(&pds));

        // One of two records of (a, x) goes: x still counted once. Then the other.
        pds.write_blocking(|_| {
            Ok(vec![Write::Delete {
                collection: LAYER.into(),
                rkey: "3k000000000a1".into(),
            }])
        })
        .unwrap();
        assert_eq!(store.layer_usage(a).unwrap(), (2, 15));
        assert_eq!(store.layer_usage_all().unwrap(), scanned(&pds));
        pds.write_blocking(|_| {
            Ok(vec![
                Write::Delete {
                    collection: LAYER.into(),
                    rkey: "3k000000000a3".into(),
                },
                // An update moves the record to another user and manifest.
                Write::Update {
                    collection: LAYER.into(),
                    rkey: "3k000000000a2".into(),
                    record: layer(b, "sha256:y", 5, mb),
                },
            ])
        })
        .unwrap();
        assert_eq!(store.layer_usage(a).unwrap(), (0, 0));
        assert_eq!(store.layer_usage(b).unwrap(), (2, 15));
        assert!(store.layers_of_manifest(ma).unwrap().is_empty());
        assert_eq!(
            store.layers_of_manifest(mb).unwrap(),
            vec![("3k000000000a2".to_string(), "sha256:y".to_string())]
        );
        assert_eq!(store.layer_usage_all().unwrap(), scanned(&pds));
        assert_eq!(
            store.layer_digests().unwrap(),
            ["sha256:x", "sha256:y"].map(String::from).into()
        );
        let incremental = store.layer_index_dump().unwrap();
        assert_eq!(incremental.records.len(), 2);

        // A rebuild from the records gives the same tables.
        {
            let repo = pds.repo.read().unwrap();
            crate::pds::rebuild_layer_index(&store, &repo).unwrap();
        }
        assert_eq!(store.layer_index_dump().unwrap(), incremental);

        // A hold without the marker (from before the index) rebuilds it on open.
        {
            let txn = store.db().begin_write().unwrap();
            txn.delete_table(LAYER_USAGE).unwrap();
            txn.open_table(crate::pds::store::META_TABLE)
                .unwrap()
                .remove(MARKER)
                .unwrap();
            txn.commit().unwrap();
        }
        drop(store);
        drop(pds);
        let pds = open(&config);
        assert!(pds.store().layer_index_ready().unwrap());
        assert_eq!(pds.store().layer_index_dump().unwrap(), incremental);
    }
}
