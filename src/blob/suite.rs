//! The conformance suite every blob backend must pass (`tests/blob_backends.rs` runs it for
//! each backend). It panics with a message on the first failed expectation.

use bytes::Bytes;
use futures_util::StreamExt;

use super::{BlobError, BlobStore, ChunkStream};
use crate::oci::types::range::ByteRange;
use crate::oci::types::{Algorithm, Digest};

fn chunks_of(data: &[u8], size: usize) -> ChunkStream {
    let parts: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(size.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Box::pin(futures_util::stream::iter(parts))
}

async fn read_all(store: &dyn BlobStore, d: &Digest, range: Option<ByteRange>) -> Vec<u8> {
    let read = store.read(d, range).await.expect("read");
    let mut out = Vec::new();
    let mut s = read.stream;
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.expect("chunk"));
    }
    assert_eq!(
        out.len() as u64,
        read.len,
        "read length header must match bytes sent"
    );
    out
}

/// Run every check against `store`. `tag` keeps upload ids unique when stores are shared.
pub async fn run(store: &dyn BlobStore, tag: &str) {
    // 12 MB: more than two 5 MiB S3 parts, so multipart paths run too.
    let data: Vec<u8> = (0..12_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let digest = Digest::sha256_of(&data);

    // Unknown blob
    assert!(
        store.stat(&digest).await.unwrap().is_none(),
        "fresh store must not know the blob"
    );
    assert!(matches!(
        store.read(&digest, None).await,
        Err(BlobError::NotFound(_))
    ));

    // Chunked upload in two appends, hashed while written
    let id = format!("{tag}-upload-1");
    store.upload_create(&id).await.unwrap();
    assert_eq!(store.upload_len(&id).await.unwrap(), Some(0));
    let half = data.len() / 2;
    let a = store
        .upload_append(
            &id,
            0,
            Algorithm::Sha256.hasher(),
            chunks_of(&data[..half], 65536),
        )
        .await
        .unwrap();
    assert_eq!(a.len, half as u64);
    // An append at the wrong offset is refused and changes nothing
    let wrong = store
        .upload_append(&id, 7, Algorithm::Sha256.hasher(), chunks_of(b"xx", 1))
        .await;
    assert!(
        matches!(wrong, Err(BlobError::OffsetMismatch { expected, .. }) if expected == half as u64)
    );
    let b = store
        .upload_append(&id, a.len, a.hasher, chunks_of(&data[half..], 100_003))
        .await
        .unwrap();
    assert_eq!(b.len, data.len() as u64);
    assert_eq!(
        b.hasher.clone().finish(),
        digest,
        "streaming hash must equal the content digest"
    );
    // A rehash from disk gives the same state (restart recovery)
    let re = store.upload_rehash(&id, Algorithm::Sha256).await.unwrap();
    assert_eq!(re.len, b.len);
    assert_eq!(re.hasher.finish(), digest);
    // Not visible before commit
    assert!(
        store.stat(&digest).await.unwrap().is_none(),
        "staged upload must not be visible"
    );
    assert!(store.upload_list().await.unwrap().contains(&id));
    assert_eq!(
        store.upload_commit(&id, &digest).await.unwrap(),
        data.len() as u64
    );
    assert_eq!(
        store.upload_len(&id).await.unwrap(),
        None,
        "commit consumes the upload"
    );
    assert_eq!(store.stat(&digest).await.unwrap(), Some(data.len() as u64));
    assert_eq!(read_all(store, &digest, None).await, data);

    // Ranges
    let r = ByteRange {
        start: 1_000_000,
        end: 1_999_999,
    };
    assert_eq!(
        read_all(store, &digest, Some(r)).await,
        &data[1_000_000..2_000_000]
    );
    let tail = ByteRange {
        start: data.len() as u64 - 5,
        end: data.len() as u64 - 1,
    };
    assert_eq!(
        read_all(store, &digest, Some(tail)).await,
        &data[data.len() - 5..]
    );

    // Dedup: committing the same content again keeps one copy
    let id2 = format!("{tag}-upload-2");
    store.upload_create(&id2).await.unwrap();
    store
        .upload_append(
            &id2,
            0,
            Algorithm::Sha256.hasher(),
            chunks_of(&data, 1 << 20),
        )
        .await
        .unwrap();
    store.upload_commit(&id2, &digest).await.unwrap();
    assert_eq!(read_all(store, &digest, None).await.len(), data.len());
    assert!(store.list().await.unwrap().contains(&digest));

    // Abort leaves nothing behind
    let id3 = format!("{tag}-upload-3");
    store.upload_create(&id3).await.unwrap();
    store
        .upload_append(
            &id3,
            0,
            Algorithm::Sha256.hasher(),
            chunks_of(b"abandoned", 3),
        )
        .await
        .unwrap();
    store.upload_abort(&id3).await.unwrap();
    assert_eq!(store.upload_len(&id3).await.unwrap(), None);
    store.upload_abort(&id3).await.unwrap();

    // A client error mid-stream keeps what was written and reports it
    let id4 = format!("{tag}-upload-4");
    store.upload_create(&id4).await.unwrap();
    let failing: ChunkStream = Box::pin(futures_util::stream::iter(vec![
        Ok(Bytes::from_static(b"12345")),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "client went away",
        )),
    ]));
    assert!(matches!(
        store
            .upload_append(&id4, 0, Algorithm::Sha256.hasher(), failing)
            .await,
        Err(BlobError::Client(_))
    ));
    assert_eq!(store.upload_len(&id4).await.unwrap(), Some(5));
    store.upload_abort(&id4).await.unwrap();

    // Empty blob
    let empty = Digest::sha256_of(b"");
    let id5 = format!("{tag}-upload-5");
    store.upload_create(&id5).await.unwrap();
    store.upload_commit(&id5, &empty).await.unwrap();
    assert_eq!(store.stat(&empty).await.unwrap(), Some(0));
    assert!(read_all(store, &empty, None).await.is_empty());

    // Delete
    assert!(store.delete(&digest).await.unwrap());
    assert!(!store.delete(&digest).await.unwrap());
    assert!(store.stat(&digest).await.unwrap().is_none());
    assert!(store.delete(&empty).await.unwrap());
    assert!(matches!(
        store.upload_len("../../etc").await,
        Err(BlobError::UploadNotFound(_))
    ));
}
