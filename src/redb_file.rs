//! Opening redb files, and consistent copies of them while they are in use.
//!
//! Every redb database of the data dir is opened through [`open`], which keeps a weak handle
//! to it in a process-wide list. `atcr backup` ([`crate::backup`]) walks that list, so it can
//! snapshot every database the server has open (including tables and files added later)
//! without knowing their tables: [`snapshot`] holds the database's write lock while it copies
//! the file, then opens the copy with redb and checks its integrity.
//!
//! Why a file copy under the write lock is consistent: redb writes every page and the header
//! of a commit to the file before `commit` returns (`Durability::Immediate` and `Eventual`;
//! `Durability::None`, which only a later durable commit persists, must not be used by a
//! store opened here), and read transactions never write. So while we hold the one write
//! transaction nothing changes in the file. The copy carries the "open" flag of a live file;
//! redb repairs that on the first open of the copy (allocator state, checksums), which
//! [`snapshot`] does at once, so what lands in a backup is a cleanly closed, verified file.
//! Writers wait for the length of one file copy (page-cache speed); readers never wait.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use redb::Database;

/// The redb databases this process has open (path as given to [`open`], canonicalised).
static OPEN: Mutex<Vec<(PathBuf, Weak<Database>)>> = Mutex::new(Vec::new());

/// Open (creating when missing) the redb file at `path` and remember it for [`open_under`].
pub fn open(path: &Path) -> Result<Arc<Database>, redb::DatabaseError> {
    let db = Arc::new(Database::create(path)?);
    let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
    open.retain(|(_, weak)| weak.strong_count() > 0);
    open.push((key, Arc::downgrade(&db)));
    Ok(db)
}

/// The databases this process has open whose files lie directly in `dir`, by file path.
pub fn open_under(dir: &Path) -> Vec<(PathBuf, Arc<Database>)> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
    open.iter()
        .filter(|(path, _)| path.parent() == Some(dir.as_path()))
        .filter_map(|(path, weak)| weak.upgrade().map(|db| (path.clone(), db)))
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{0}: {1}")]
    Io(PathBuf, io::Error),
    #[error("{0}: {1}")]
    Redb(PathBuf, String),
    #[error("{0}: the copy failed redb's integrity check")]
    Corrupt(PathBuf),
}

/// Copy the database `db`, open on the file `path`, to the new file `dest` (0600) as one
/// consistent state, and verify the copy ([`verify`]). Blocks writers of `db` while the bytes
/// are copied. Returns the copy's size.
pub fn snapshot(db: &Database, path: &Path, dest: &Path) -> Result<u64, SnapshotError> {
    let redb_err =
        |e: &dyn std::fmt::Display| SnapshotError::Redb(path.to_path_buf(), e.to_string());
    let write_lock = db.begin_write().map_err(|e| redb_err(&e))?;
    let copied = copy_new(path, dest);
    // Nothing was written in this transaction: dropping it releases the lock.
    drop(write_lock);
    copied?;
    verify(dest)?;
    std::fs::metadata(dest)
        .map(|m| m.len())
        .map_err(|e| SnapshotError::Io(dest.to_path_buf(), e))
}

/// Snapshot a redb file no process has open (`atcr backup` with the server stopped).
pub fn snapshot_closed(path: &Path, dest: &Path) -> Result<u64, SnapshotError> {
    let db = Database::open(path).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => SnapshotError::Redb(
            path.to_path_buf(),
            "in use by another process that is not serving `atcr backup` (is every redb \
             file of the server opened through redb_file::open?)"
                .into(),
        ),
        e => SnapshotError::Redb(path.to_path_buf(), e.to_string()),
    })?;
    snapshot(&db, path, dest)
}

/// Open the (unused) redb file at `path`, letting redb repair an unclean header, and check
/// the checksums of every page. Leaves the file cleanly closed. redb panics on some damaged
/// pages (allocator state) instead of returning an error: that counts as corrupt too.
pub fn verify(path: &Path) -> Result<(), SnapshotError> {
    std::panic::catch_unwind(|| verify_inner(path))
        .unwrap_or_else(|_| Err(SnapshotError::Corrupt(path.to_path_buf())))
}

fn verify_inner(path: &Path) -> Result<(), SnapshotError> {
    let redb_err =
        |e: &dyn std::fmt::Display| SnapshotError::Redb(path.to_path_buf(), e.to_string());
    let mut db = Database::open(path).map_err(|e| redb_err(&e))?;
    match db.check_integrity() {
        Ok(_) => {}
        Err(redb::DatabaseError::Storage(redb::StorageError::Corrupted(_))) => {
            return Err(SnapshotError::Corrupt(path.to_path_buf()))
        }
        Err(e) => return Err(redb_err(&e)),
    }
    // Every table must open: a header that repairs but names nothing readable is no copy.
    let txn = db.begin_read().map_err(|e| redb_err(&e))?;
    txn.list_tables().map_err(|e| redb_err(&e))?.for_each(drop);
    Ok(())
}

/// Copy `src` to the new file `dest` (0600, fsynced).
fn copy_new(src: &Path, dest: &Path) -> Result<(), SnapshotError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io_err = |p: &Path| {
        let p = p.to_path_buf();
        move |e| SnapshotError::Io(p, e)
    };
    let mut from = File::open(src).map_err(io_err(src))?;
    let mut to = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)
        .map_err(io_err(dest))?;
    io::copy(&mut from, &mut to).map_err(io_err(dest))?;
    to.sync_all().map_err(io_err(dest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableTable, ReadableTableMetadata, TableDefinition};

    const T: TableDefinition<u64, &[u8]> = TableDefinition::new("t");

    fn put(db: &Database, from: u64, n: u64) {
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(T).unwrap();
            for i in from..from + n {
                t.insert(i, vec![i as u8; 100].as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }

    #[test]
    fn open_databases_are_listed_by_directory_while_alive() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir.path().join("a.redb")).unwrap();
        let listed = open_under(dir.path());
        assert_eq!(listed.len(), 1);
        assert!(listed[0].0.ends_with("a.redb"));
        drop(listed);
        drop(db);
        assert!(open_under(dir.path()).is_empty());
    }

    #[test]
    fn snapshot_while_writers_run_is_a_verified_prefix_of_the_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.redb");
        let db = open(&path).unwrap();
        put(&db, 0, 100);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (db, stop) = (db.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut round = 1;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && round < 300 {
                    put(&db, round * 100, 100);
                    round += 1;
                }
            })
        };
        let mut sizes = Vec::new();
        for i in 0..5 {
            let dest = dir.path().join(format!("copy{i}.redb"));
            snapshot(&db, &path, &dest).unwrap();
            // Every commit is all or nothing in the copy: whole rounds of 100 keys.
            let copy = Database::open(&dest).unwrap();
            let txn = copy.begin_read().unwrap();
            let t = txn.open_table(T).unwrap();
            let n = t.len().unwrap();
            assert_eq!(n % 100, 0, "a commit was cut in half: {n} keys");
            assert_eq!(t.last().unwrap().unwrap().0.value(), n - 1);
            sizes.push(n);
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap();
        // The writer went on between the copies (and they never went back in time).
        assert!(sizes.windows(2).all(|w| w[0] <= w[1]), "{sizes:?}");
        assert!(sizes.first() < sizes.last(), "{sizes:?}");
        // The source is still fine and the copies are cleanly closed (re-open is quiet).
        put(&db, 1_000_000, 1);
        verify(&dir.path().join("copy0.redb")).unwrap();
    }

    #[test]
    fn a_damaged_copy_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.redb");
        let db = open(&path).unwrap();
        put(&db, 0, 20_000);
        let dest = dir.path().join("copy.redb");
        snapshot(&db, &path, &dest).unwrap();
        // Flip a byte in every page past the header.
        let mut bytes = std::fs::read(&dest).unwrap();
        for page in (4096..bytes.len()).step_by(4096) {
            bytes[page + 100] ^= 0x5a;
        }
        std::fs::write(&dest, bytes).unwrap();
        assert!(verify(&dest).is_err());
    }

    #[test]
    fn a_file_held_by_another_handle_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("held.redb");
        let _db = Database::create(&path).unwrap();
        let err = snapshot_closed(&path, &dir.path().join("c.redb")).unwrap_err();
        assert!(err.to_string().contains("held.redb"), "{err}");
        assert!(err.to_string().contains("in use"), "{err}");
    }
}
