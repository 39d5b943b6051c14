//! CAR reader/writer limits, the high-level Repo API, export + verification, record
//! proofs, firehose commit data, and the CAR handed to the reference TS verifier.
use atcr::atproto::repo::car::{read_car, read_car_with_root, write_car, CarLimits, CarReader};
use atcr::atproto::repo::crypto::{KeyAlgorithm, SigningKey};
use atcr::atproto::repo::dagcbor::encode;
use atcr::atproto::repo::datamodel::record_from_json;
use atcr::atproto::repo::{
    fuzz_car, verify_record_proof, verify_repo_car, Action, BlockMap, Commit, MemoryBlockstore,
    Repo, RepoError, Tid, Write,
};
use bytes::Bytes;
use proptest::prelude::*;
use serde_json::json;
use std::sync::Arc;

const DID: &str = "did:web:hold.example.com";

fn key() -> SigningKey {
    SigningKey::from_bytes(KeyAlgorithm::P256, &[0x42; 32]).unwrap()
}

fn record(i: usize) -> Bytes {
    let v = record_from_json(&json!({
        "$type": "io.atcr.tag",
        "repository": format!("repo-{i}"),
        "tag": "latest",
        "createdAt": "2024-01-01T00:00:00.000Z",
        "n": i,
    }))
    .unwrap();
    encode(&v).unwrap().into()
}

fn create(c: &str, rkey: &str, i: usize) -> Write {
    Write::Create {
        collection: c.into(),
        rkey: rkey.into(),
        record: record(i),
    }
}

fn populated() -> Repo<Arc<MemoryBlockstore>> {
    let store = Arc::new(MemoryBlockstore::new());
    let (mut repo, first) = Repo::create(DID, key(), store).unwrap();
    assert!(first.ops.is_empty());
    for batch in 0..5 {
        let writes: Vec<Write> = (0..20)
            .map(|i| {
                create(
                    "io.atcr.tag",
                    &format!("t{:03}", batch * 20 + i),
                    batch * 20 + i,
                )
            })
            .chain((0..4).map(|i| create("io.atcr.manifest", &format!("m{batch}{i}"), i)))
            .collect();
        repo.apply_writes(&writes).unwrap();
    }
    repo
}

#[test]
fn car_roundtrip_and_limits() {
    let mut blocks = BlockMap::new();
    for i in 0..10 {
        let b = encode(&format!("block {i}")).unwrap();
        blocks.insert(atcr::atproto::repo::cid_for_dag_cbor(&b), b.into());
    }
    let raw = atcr::atproto::repo::cid_for_raw(b"blob");
    blocks.insert(raw, Bytes::from_static(b"blob"));
    let root = *blocks.keys().next().unwrap();
    let car = write_car(root, &blocks).unwrap();
    let (r, back) = read_car_with_root(&car, CarLimits::default()).unwrap();
    assert_eq!((r, &back), (root, &blocks));

    let streamed: Vec<_> = CarReader::new(&car[..], CarLimits::default())
        .unwrap()
        .collect();
    assert_eq!(streamed.len(), 11);

    let tight = |f: fn(&mut CarLimits)| {
        let mut l = CarLimits::default();
        f(&mut l);
        read_car(&car, l).is_err()
    };
    assert!(tight(|l| l.max_blocks = 5));
    assert!(tight(|l| l.max_block_size = 4));
    assert!(tight(|l| l.max_header_size = 10));
    assert!(tight(|l| l.max_total_bytes = 100));

    // a flipped data byte breaks the hash check; truncation is an error
    let mut bad = car.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(read_car(&bad, CarLimits::default()).is_err());
    assert!(read_car(&car[..car.len() - 3], CarLimits::default()).is_err());
    for cut in 0..car.len() {
        fuzz_car(&car[..cut]);
    }
    for i in 0..car.len().min(200) {
        let mut m = car.clone();
        m[i] ^= 0x55;
        fuzz_car(&m);
    }
}

#[test]
fn repo_writes_reads_and_lists() {
    let mut repo = populated();
    let (cid, value) = repo.get_record("io.atcr.tag", "t007").unwrap().unwrap();
    assert_eq!(value, record(7));
    assert_eq!(cid, atcr::atproto::repo::cid_for_dag_cbor(&value));
    assert!(repo.get_record("io.atcr.tag", "nope").unwrap().is_none());

    let page1 = repo.list_records("io.atcr.tag", 30, None, false).unwrap();
    assert_eq!(page1.len(), 30);
    assert_eq!(page1[0].rkey, "t000");
    let page2 = repo
        .list_records("io.atcr.tag", 1000, Some(&page1[29].rkey), false)
        .unwrap();
    assert_eq!(page2.len(), 70);
    assert_eq!(page2[0].rkey, "t030");
    let rev = repo.list_records("io.atcr.tag", 3, None, true).unwrap();
    assert_eq!(
        rev.iter().map(|r| r.rkey.as_str()).collect::<Vec<_>>(),
        ["t099", "t098", "t097"]
    );
    let rev2 = repo
        .list_records("io.atcr.tag", 2, Some("t097"), true)
        .unwrap();
    assert_eq!(rev2[0].rkey, "t096");
    assert_eq!(
        repo.list_records("io.atcr.manifest", 100, None, false)
            .unwrap()
            .len(),
        20
    );
    assert!(repo
        .list_records("io.atcr.other", 100, None, false)
        .unwrap()
        .is_empty());

    let prev_rev = repo.rev().to_string();
    let prev_data = repo.data_root();
    let res = repo
        .apply_writes(&[
            Write::Update {
                collection: "io.atcr.tag".into(),
                rkey: "t001".into(),
                record: record(1001),
            },
            Write::Delete {
                collection: "io.atcr.tag".into(),
                rkey: "t002".into(),
            },
            create("io.atcr.tag", "t100", 100),
        ])
        .unwrap();
    assert!(res.rev.as_str() > prev_rev.as_str());
    assert_eq!(res.since.as_deref(), Some(prev_rev.as_str()));
    assert_eq!(res.prev_data, Some(prev_data));
    let actions: Vec<_> = res
        .ops
        .iter()
        .map(|o| (o.action, o.path.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            (Action::Update, "io.atcr.tag/t001"),
            (Action::Delete, "io.atcr.tag/t002"),
            (Action::Create, "io.atcr.tag/t100"),
        ]
    );
    assert!(res.ops[1].cid.is_none() && res.ops[1].prev.is_some());
    // the event CAR holds the commit, the new records and enough to invert the ops
    let (root, blocks) = read_car_with_root(&res.car, CarLimits::default()).unwrap();
    assert_eq!(root, res.commit_cid);
    for cid in res.new_blocks.keys() {
        assert!(blocks.contains_key(cid));
    }
    let c = Commit::decode(&blocks[&root]).unwrap();
    c.verify(&key().public_key()).unwrap();
    assert_eq!(c.data, res.data);
    assert_eq!(c.version, 3);
    assert!(c.prev.is_none());
    let mut inv =
        atcr::atproto::repo::Mst::load(&MemoryBlockstore::from_blocks(blocks.clone()), c.data)
            .unwrap();
    let proof_store = MemoryBlockstore::from_blocks(blocks);
    inv.delete(&proof_store, "io.atcr.tag/t100").unwrap();
    inv.insert(&proof_store, "io.atcr.tag/t002", res.ops[1].prev.unwrap())
        .unwrap();
    inv.insert(&proof_store, "io.atcr.tag/t001", res.ops[0].prev.unwrap())
        .unwrap();
    assert_eq!(inv.root_cid().unwrap(), prev_data);

    // diff between the commits matches the ops
    let d = atcr::atproto::repo::diff_trees(repo.store(), Some(prev_data), res.data).unwrap();
    assert_eq!((d.adds.len(), d.updates.len(), d.deletes.len()), (1, 1, 1));

    // failures leave the repo untouched
    let head = repo.head();
    for bad in [
        vec![create("io.atcr.tag", "t001", 1)],
        vec![Write::Delete {
            collection: "io.atcr.tag".into(),
            rkey: "zzz".into(),
        }],
        vec![Write::Update {
            collection: "io.atcr.tag".into(),
            rkey: "zzz".into(),
            record: record(1),
        }],
        vec![create("not an nsid", "x", 1)],
        vec![create("io.atcr.tag", "..", 1)],
        vec![Write::Create {
            collection: "io.atcr.tag".into(),
            rkey: "f".into(),
            record: Bytes::from_static(&[0xfb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]),
        }],
    ] {
        assert!(repo.apply_writes(&bad).is_err());
        assert_eq!(repo.head(), head);
    }
    assert!(matches!(
        repo.apply_writes(&[create("io.atcr.tag", "t001", 1)]),
        Err(RepoError::AlreadyExists(_))
    ));

    // reopen from the head
    let reopened = Repo::load(repo.store().clone(), key(), repo.head()).unwrap();
    assert_eq!(reopened.list_all().unwrap(), repo.list_all().unwrap());
    assert!(Repo::load(
        repo.store().clone(),
        SigningKey::generate_p256(),
        repo.head()
    )
    .is_err());
    assert!(Tid::parse(repo.rev()).is_ok());
}

#[test]
fn export_verify_and_record_proofs() {
    let repo = populated();
    let car = repo.export_car().unwrap();
    let pubkey = key().public_key();
    let v = verify_repo_car(&car, Some(DID), &pubkey, CarLimits::default()).unwrap();
    assert_eq!(v.commit_cid, repo.head());
    assert_eq!(v.records.len(), 120);
    assert!(verify_repo_car(
        &car,
        Some("did:web:other.example"),
        &pubkey,
        CarLimits::default()
    )
    .is_err());
    assert!(verify_repo_car(
        &car,
        None,
        &SigningKey::generate_p256().public_key(),
        CarLimits::default()
    )
    .is_err());
    // export is deterministic and complete: a fresh store rebuilt from it reopens
    assert_eq!(car, repo.export_car().unwrap());
    let (_, blocks) = read_car(&car, CarLimits::default()).unwrap();
    let store = MemoryBlockstore::from_blocks(blocks);
    let copy = Repo::load(&store, key(), repo.head()).unwrap();
    assert_eq!(copy.list_all().unwrap().len(), 120);

    let proof = repo.record_proof_car("io.atcr.tag", "t042").unwrap();
    let got = verify_record_proof(&proof, Some(DID), &pubkey, "io.atcr.tag", "t042").unwrap();
    assert_eq!(got.unwrap().1, record(42));
    assert!(proof.len() < car.len() / 4);
    let absent = repo.record_proof_car("io.atcr.tag", "t042x").unwrap();
    assert!(
        verify_record_proof(&absent, Some(DID), &pubkey, "io.atcr.tag", "t042x")
            .unwrap()
            .is_none()
    );
    fuzz_car(&car);
}

/// Writes a repo CAR for scripts/verify-with-reference.mjs when ATPROTO_REPO_CAR_OUT is set.
#[test]
fn write_car_for_reference_verifier() {
    let Ok(path) = std::env::var("ATPROTO_REPO_CAR_OUT") else {
        return;
    };
    let mut repo = populated();
    // a firehose-style commit on top of the previous export, for verifyDiffCar
    std::fs::write(format!("{path}.prev.car"), repo.export_car().unwrap()).unwrap();
    let res = repo
        .apply_writes(&[
            Write::Update {
                collection: "io.atcr.tag".into(),
                rkey: "t001".into(),
                record: record(1001),
            },
            Write::Delete {
                collection: "io.atcr.tag".into(),
                rkey: "t002".into(),
            },
            create("io.atcr.tag", "t100", 100),
        ])
        .unwrap();
    std::fs::write(format!("{path}.commit.car"), &res.car).unwrap();
    std::fs::write(&path, repo.export_car().unwrap()).unwrap();
    let (cid, _) = repo.get_record("io.atcr.tag", "t042").unwrap().unwrap();
    let meta = json!({
        "did": DID,
        "didKey": key().public_key().did_key(),
        "commit": repo.head().to_string(),
        "data": repo.data_root().to_string(),
        "rev": repo.rev(),
        "records": repo.list_all().unwrap().len(),
        "commitOps": res.ops.iter().map(|o| json!({"action": o.action.as_str(), "path": o.path})).collect::<Vec<_>>(),
        "sampleRecord": { "collection": "io.atcr.tag", "rkey": "t042", "cid": cid.to_string() },
    });
    std::fs::write(
        format!("{path}.json"),
        serde_json::to_string_pretty(&meta).unwrap(),
    )
    .unwrap();
    std::fs::write(
        format!("{path}.proof.car"),
        repo.record_proof_car("io.atcr.tag", "t042").unwrap(),
    )
    .unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary bytes, alone or behind a valid CAR header, never panic the parsers.
    #[test]
    fn fuzz_entry_points_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        fuzz_car(&data);
        atcr::atproto::repo::fuzz_dagcbor(&data);
        let mut car = write_car(atcr::atproto::repo::cid_for_dag_cbor(b"x"), &BlockMap::new()).unwrap();
        car.extend_from_slice(&data);
        fuzz_car(&car);
    }
}

/// Signs a commit over `data` and exports `blocks` + commit as a CAR.
fn signed_car(data: atcr::atproto::repo::Cid, mut blocks: BlockMap) -> Vec<u8> {
    let commit = atcr::atproto::repo::UnsignedCommit::new(DID, data, Tid::now().as_str(), None)
        .unwrap()
        .sign(&key())
        .unwrap();
    let (cid, bytes) = commit.to_block().unwrap();
    blocks.insert(cid, bytes.into());
    write_car(cid, &blocks).unwrap()
}

fn leafless_node(child: atcr::atproto::repo::Cid) -> (atcr::atproto::repo::Cid, Bytes) {
    use atcr::atproto::repo::dagcbor::Ipld;
    let node = Ipld::Map(
        [
            ("e".to_string(), Ipld::List(vec![])),
            ("l".to_string(), Ipld::Link(child)),
        ]
        .into(),
    );
    let (cid, bytes) = atcr::atproto::repo::dagcbor::encode_with_cid(&node).unwrap();
    (cid, bytes.into())
}

#[test]
fn hostile_trees_are_rejected() {
    let store = MemoryBlockstore::new();
    let (mut repo, _) = Repo::create(DID, key(), &store).unwrap();
    repo.apply_writes(&[create("io.atcr.tag", "only", 1)])
        .unwrap();
    let (_, blocks) = read_car(&repo.export_car().unwrap(), CarLimits::default()).unwrap();
    let mut blocks: BlockMap = blocks
        .into_iter()
        .filter(|(c, _)| *c != repo.head())
        .collect();

    // an extra leafless root layer: readable, but not the canonical shape
    let (extra, bytes) = leafless_node(repo.data_root());
    blocks.insert(extra, bytes);
    let car = signed_car(extra, blocks.clone());
    let err = verify_repo_car(&car, Some(DID), &key().public_key(), CarLimits::default());
    assert!(matches!(err, Err(RepoError::NonCanonicalMst)), "{err:?}");

    // a chain of 300 leafless nodes must fail cleanly, not overflow the stack
    let mut top = repo.data_root();
    for _ in 0..300 {
        let (cid, bytes) = leafless_node(top);
        blocks.insert(cid, bytes);
        top = cid;
    }
    let car = signed_car(top, blocks);
    assert!(verify_repo_car(&car, Some(DID), &key().public_key(), CarLimits::default()).is_err());
    fuzz_car(&car);
}
