//! interop-vectors/mst and firehose/commit-proof-fixtures.json, known root CIDs from the
//! reference implementation's tests, and model-based property tests.
use atcr::atproto::repo::blockstore::{Blockstore, MemoryBlockstore};
use atcr::atproto::repo::cid::parse_cid;
use atcr::atproto::repo::mst::{common_prefix_len, diff_trees, key_height, Mst};
use atcr::atproto::repo::{cid_for_dag_cbor, BlockMap, Cid};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

const LEAF: &str = "bafyreie5cvv4h45feadgeuwhbcutmh6t2ceseocckahdoe6uat64zmz454";

fn leaf() -> Cid {
    parse_cid(LEAF).unwrap()
}

fn build(keys: &[&str]) -> Mst {
    Mst::from_entries(keys.iter().map(|k| (*k, leaf()))).unwrap()
}

fn commit_into(mst: &mut Mst, store: &MemoryBlockstore) -> Cid {
    let (root, blocks) = mst.commit().unwrap();
    store.put_many(&blocks).unwrap();
    root
}

#[test]
fn key_heights() {
    let list = crate::common::read_json("mst/key_heights.json");
    for f in list.as_array().unwrap() {
        let key = f["key"].as_str().unwrap();
        assert_eq!(
            u64::from(key_height(key.as_bytes())),
            f["height"].as_u64().unwrap(),
            "{key}"
        );
    }
}

#[test]
fn common_prefix() {
    let list = crate::common::read_json("mst/common_prefix.json");
    for f in list.as_array().unwrap() {
        let (l, r) = (f["left"].as_str().unwrap(), f["right"].as_str().unwrap());
        assert_eq!(
            common_prefix_len(l.as_bytes(), r.as_bytes()) as u64,
            f["len"].as_u64().unwrap()
        );
    }
}

/// example_keys.txt names each key `<letter><height>/<digits>`.
#[test]
fn example_keys_have_their_named_height() {
    let keys = crate::common::read_lines("mst/example_keys.txt");
    assert!(keys.len() > 100);
    for k in &keys {
        let named = k.as_bytes()[1] - b'0';
        assert_eq!(key_height(k.as_bytes()), u32::from(named), "{k}");
    }
    // a tree over all of them survives a store round trip and lists in order
    let refs: Vec<&str> = keys.iter().map(|s| s.as_str()).collect();
    let mut mst = build(&refs);
    let store = MemoryBlockstore::new();
    let root = commit_into(&mut mst, &store);
    let loaded = Mst::load(&store, root).unwrap();
    let listed: Vec<String> = loaded
        .entries(&store)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(listed, sorted);
}

/// Root CIDs from the reference implementation's MST tests (packages/repo/tests/mst.test.ts).
#[test]
fn known_root_cids() {
    let p = |s: &str| format!("com.example.record/{s}");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![],
            "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm",
        ),
        (
            vec![p("3jqfcqzm3fo2j")],
            "bafyreibj4lsc3aqnrvphp5xmrnfoorvru4wynt6lwidqbm2623a6tatzdu",
        ),
        (
            vec![p("3jqfcqzm3fx2j")],
            "bafyreih7wfei65pxzhauoibu3ls7jgmkju4bspy4t2ha2qdjnzqvoy33ai",
        ),
        (
            [
                "3jqfcqzm3fp2j",
                "3jqfcqzm3fr2j",
                "3jqfcqzm3fs2j",
                "3jqfcqzm3ft2j",
                "3jqfcqzm4fc2j",
            ]
            .map(p)
            .to_vec(),
            "bafyreicmahysq4n6wfuxo522m6dpiy7z7qzym3dzs756t5n7nfdgccwq7m",
        ),
        (
            ["3jqfcqzm3ft2j", "3jqfcqzm3fz2j", "3jqfcqzm3fx2j"]
                .map(p)
                .to_vec(),
            "bafyreiavxaxdz7o7rbvr3zg2liox2yww46t7g6hkehx4i4h3lwudly7dhy",
        ),
    ];
    for (keys, expected) in cases {
        let refs: Vec<&str> = keys.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            build(&refs).root_cid().unwrap().to_string(),
            expected,
            "{keys:?}"
        );
    }
    // trims the top of the tree on delete
    let store = MemoryBlockstore::new();
    let keys = [
        "3jqfcqzm3fn2j",
        "3jqfcqzm3fo2j",
        "3jqfcqzm3fp2j",
        "3jqfcqzm3fs2j",
        "3jqfcqzm3ft2j",
        "3jqfcqzm3fu2j",
    ]
    .map(p);
    let refs: Vec<&str> = keys.iter().map(|s| s.as_str()).collect();
    let mut mst = build(&refs);
    assert_eq!(
        mst.root_cid().unwrap().to_string(),
        "bafyreifnqrwbk6ffmyaz5qtujqrzf5qmxf7cbxvgzktl4e3gabuxbtatv4"
    );
    mst.delete(&store, &p("3jqfcqzm3fs2j")).unwrap();
    assert_eq!(
        mst.root_cid().unwrap().to_string(),
        "bafyreie4kjuxbwkhzg2i5dljaswcroeih4dgiqq6pazcmunwt2byd725vi"
    );
}

#[test]
fn commit_proof_fixtures() {
    let list = crate::common::read_json("firehose/commit-proof-fixtures.json");
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 6);
    for f in list {
        let name = f["comment"].as_str().unwrap();
        let strs = |k: &str| -> Vec<String> {
            f[k].as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect()
        };
        let value = parse_cid(f["leafValue"].as_str().unwrap()).unwrap();
        let (keys, adds, dels) = (strs("keys"), strs("adds"), strs("dels"));
        let store = MemoryBlockstore::new();
        let mut mst = Mst::new();
        for k in &keys {
            mst.insert(&store, k, value).unwrap();
        }
        let before = commit_into(&mut mst, &store);
        assert_eq!(
            before.to_string(),
            f["rootBeforeCommit"].as_str().unwrap(),
            "{name}: before"
        );

        // apply from a freshly loaded tree so lazy loading is exercised
        let mut mst = Mst::load(&store, before).unwrap();
        for k in &adds {
            mst.insert(&store, k, value).unwrap();
        }
        for k in &dels {
            assert!(mst.delete(&store, k).unwrap().is_some());
        }
        let after = commit_into(&mut mst, &store);
        assert_eq!(
            after.to_string(),
            f["rootAfterCommit"].as_str().unwrap(),
            "{name}: after"
        );

        let mut proof = BlockMap::new();
        for k in adds.iter().chain(&dels) {
            proof.extend(mst.covering_proof(&store, k).unwrap());
        }
        let got: BTreeSet<String> = proof.keys().map(|c| c.to_string()).collect();
        let want: BTreeSet<String> = strs("blocksInProof").into_iter().collect();
        assert_eq!(got, want, "{name}: proof blocks");

        // inversion using only the proof blocks recovers the previous root
        let proof_store = MemoryBlockstore::from_blocks(proof);
        let mut inv = Mst::load(&proof_store, after).unwrap();
        for k in &adds {
            inv.delete(&proof_store, k).unwrap();
        }
        for k in &dels {
            inv.insert(&proof_store, k, value).unwrap();
        }
        assert_eq!(inv.root_cid().unwrap(), before, "{name}: inversion");

        // diff between the two stored trees matches the ops
        let d = diff_trees(&store, Some(before), after).unwrap();
        let added: BTreeSet<&str> = d.adds.iter().map(|(k, _)| k.as_str()).collect();
        let deleted: BTreeSet<&str> = d.deletes.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(added, adds.iter().map(|s| s.as_str()).collect());
        assert_eq!(deleted, dels.iter().map(|s| s.as_str()).collect());
        assert!(d.updates.is_empty());
        assert!(d.new_nodes.contains(&after));
    }
}

#[test]
fn range_listing() {
    let keys = crate::common::read_lines("mst/example_keys.txt");
    let refs: Vec<&str> = keys.iter().map(|s| s.as_str()).collect();
    let mut mst = build(&refs);
    let store = MemoryBlockstore::new();
    let root = commit_into(&mut mst, &store);
    let mst = Mst::load(&store, root).unwrap();
    let mut sorted = keys.clone();
    sorted.sort();
    let c_keys: Vec<&String> = sorted.iter().filter(|k| k.starts_with("C")).collect();
    // "C" prefix isn't a collection boundary, but list_prefix works on any prefix
    let got = mst.list_prefix(&store, "C", None, false, 1000).unwrap();
    assert_eq!(got.iter().map(|(k, _)| k).collect::<Vec<_>>(), c_keys);
    let page1 = mst.list_prefix(&store, "C", None, false, 3).unwrap();
    let page2 = mst
        .list_prefix(&store, "C", Some(&page1[2].0), false, 3)
        .unwrap();
    assert_eq!(page2[0].0, *c_keys[3]);
    let rev = mst.list_prefix(&store, "C", None, true, 2).unwrap();
    assert_eq!(rev[0].0, **c_keys.last().unwrap());
    let rev2 = mst
        .list_prefix(&store, "C", Some(&rev[1].0), true, 100)
        .unwrap();
    assert_eq!(rev2.len(), c_keys.len() - 2);
    let r = mst
        .range(
            &store,
            Bound::Excluded("B0/601692"),
            Bound::Included("B2/827649"),
            false,
            100,
        )
        .unwrap();
    assert_eq!(
        r.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["B1/986427", "B2/827649"]
    );
}

fn value_for(i: u32) -> Cid {
    cid_for_dag_cbor(&i.to_be_bytes())
}

#[derive(Debug, Clone)]
enum Op {
    Put(u16, u32),
    Del(u16),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u16..300, any::<u32>()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (0u16..300).prop_map(Op::Del),
    ]
}

fn key_of(i: u16) -> String {
    format!("com.example.record/k{i:04}")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Random insert/delete sequences (with periodic commit + reload) agree with a
    /// BTreeMap, and the root equals that of a tree built from scratch in another order.
    #[test]
    fn matches_btreemap_model(ops in proptest::collection::vec(op_strategy(), 1..250)) {
        let store = MemoryBlockstore::new();
        let mut mst = Mst::new();
        let mut model: BTreeMap<String, Cid> = BTreeMap::new();
        let mut prev_root: Option<Cid> = None;
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Put(k, v) => {
                    let old = mst.insert(&store, &key_of(*k), value_for(*v)).unwrap();
                    prop_assert_eq!(old, model.insert(key_of(*k), value_for(*v)));
                }
                Op::Del(k) => {
                    let old = mst.delete(&store, &key_of(*k)).unwrap();
                    prop_assert_eq!(old, model.remove(&key_of(*k)));
                }
            }
            if i % 37 == 36 {
                let (root, blocks) = mst.commit().unwrap();
                store.put_many(&blocks).unwrap();
                if let Some(p) = prev_root {
                    let d = diff_trees(&store, Some(p), root).unwrap();
                    for (_, cid) in d.adds.iter() { prop_assert!(model.values().any(|v| v == cid)); }
                    for n in &d.new_nodes { prop_assert!(store.has(n).unwrap()); }
                }
                prev_root = Some(root);
                mst = Mst::load(&store, root).unwrap();
            }
        }
        let entries = mst.entries(&store).unwrap();
        prop_assert_eq!(entries.clone(), model.clone().into_iter().collect::<Vec<_>>());
        for (k, v) in &model {
            prop_assert_eq!(mst.get(&store, k).unwrap(), Some(*v));
        }
        prop_assert_eq!(mst.get(&store, "com.example.record/missing").unwrap(), None);

        let mut rev: Vec<_> = model.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        rev.reverse();
        let fresh = Mst::from_entries(rev).unwrap();
        prop_assert_eq!(fresh.root_cid().unwrap(), mst.root_cid().unwrap());

        // full diff from empty equals the model
        let (root, blocks) = mst.commit().unwrap();
        store.put_many(&blocks).unwrap();
        let d = diff_trees(&store, None, root).unwrap();
        prop_assert_eq!(d.adds, model.into_iter().collect::<Vec<_>>());
    }
}
