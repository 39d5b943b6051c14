//! The fuzz seed corpus (`fuzz/seeds/<target>/`): every seed must get past its parser's
//! first checks, or the fuzzer starts from noise. The ATProto seeds (CARs, DAG-CBOR blocks,
//! firehose frames) are made from a real repo signed with the W3C P-256 test key, the key
//! the fuzz entry points verify with, so mutations reach MST loading and op checks.
//!
//! `ATCR_WRITE_FUZZ_SEEDS=1 cargo test --lib fuzz_seeds` rewrites the generated seeds.

use std::path::{Path, PathBuf};

use crate::atproto::firehose::{parse_frame, Frame};
use crate::atproto::repo::car::{read_car, CarLimits};
use crate::atproto::repo::{dagcbor, KeyAlgorithm, MemoryBlockstore, Repo, SigningKey, Write};
use crate::oci::types::{manifest, Digest, Name, Reference};

/// The private half of `did:key:zDnaeTiq1PdzvZXUaMdezchcMJQpBdH2VN4pgrrEhMCCbmwSb`
/// (W3C did:key test vector, `tests/fixtures/crypto/w3c_didkey_P256.json`).
const FUZZ_KEY_BASE58: &str = "9p4VRzdmhsnq869vQjVCTrRry7u4TtfRxhvBFJTGU2Cp";

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds")
}

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = seeds_dir().join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds for {target}");
    out
}

fn record(v: serde_json::Value) -> bytes::Bytes {
    let ipld = crate::atproto::repo::datamodel::record_from_json(&v).unwrap();
    bytes::Bytes::from(dagcbor::encode(&ipld).unwrap())
}

fn write_generated_seeds() {
    let (_, key_bytes) = multibase::decode(format!("z{FUZZ_KEY_BASE58}")).unwrap();
    let key = SigningKey::from_bytes(KeyAlgorithm::P256, &key_bytes).unwrap();
    assert_eq!(
        key.public_key().did_key(),
        crate::atproto::repo::fuzz::FUZZ_DID_KEY
    );
    let did = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";
    let (mut repo, _) = Repo::create(did, key, MemoryBlockstore::new()).unwrap();
    let digest = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
    let create = |c: &str, k: &str, v| Write::Create {
        collection: c.into(),
        rkey: k.into(),
        record: record(v),
    };
    let first = repo
        .apply_writes(&[
            create(
                "io.atcr.manifest",
                "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
                serde_json::json!({"$type": "io.atcr.manifest", "repository": "app", "digest": digest,
                    "mediaType": manifest::OCI_MANIFEST, "schemaVersion": 2,
                    "holdDid": "did:web:hold.example.com", "createdAt": "2026-01-01T00:00:00Z",
                    "config": {"digest": digest, "size": 2, "mediaType": "application/vnd.oci.image.config.v1+json"},
                    "layers": [{"digest": digest, "size": 1024, "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip"}]}),
            ),
            create(
                "io.atcr.tag",
                "app:latest",
                serde_json::json!({"$type": "io.atcr.tag", "repository": "app", "tag": "latest",
                    "manifest": format!("at://{did}/io.atcr.manifest/44136fa3"), "createdAt": "2026-01-01T00:00:00Z"}),
            ),
            create(
                "io.atcr.sailor.profile",
                "self",
                serde_json::json!({"$type": "io.atcr.sailor.profile", "createdAt": "2026-01-01T00:00:00Z"}),
            ),
            create(
                "app.bsky.feed.post",
                "3kxyz",
                serde_json::json!({"$type": "app.bsky.feed.post", "text": "hi", "createdAt": "2026-01-01T00:00:00Z"}),
            ),
        ])
        .unwrap();
    let second = repo
        .apply_writes(&[
            Write::Update {
                collection: "io.atcr.tag".into(),
                rkey: "app:latest".into(),
                record: record(serde_json::json!({"$type": "io.atcr.tag", "repository": "app",
                    "tag": "latest", "manifest": "at://x/io.atcr.manifest/y", "createdAt": "2026-01-02T00:00:00Z"})),
            },
            Write::Delete {
                collection: "app.bsky.feed.post".into(),
                rkey: "3kxyz".into(),
            },
        ])
        .unwrap();

    let put = |target: &str, name: &str, bytes: &[u8]| {
        let dir = seeds_dir().join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    let car = repo.export_car().unwrap();
    put("car", "repo-export", &car);
    put(
        "car",
        "record-proof",
        &repo.record_proof_car("io.atcr.tag", "app:latest").unwrap(),
    );
    put("car", "commit-slice", &first.car);

    let (_, blocks) = read_car(&car, CarLimits::default()).unwrap();
    let commit = blocks.get(&repo.head()).unwrap();
    put("dagcbor", "commit", commit);
    for (i, (cid, bytes)) in blocks.iter().enumerate().take(6) {
        if *cid != repo.head() {
            put("dagcbor", &format!("block-{i}"), bytes);
        }
    }

    let time = "2026-01-01T00:00:00.000Z";
    put(
        "firehose",
        "commit-create",
        &crate::pds::encode_commit_frame(7, did, &first, time).unwrap(),
    );
    put(
        "firehose",
        "commit-update-delete",
        &crate::pds::encode_commit_frame(8, did, &second, time).unwrap(),
    );
    put(
        "firehose",
        "error",
        &crate::pds::encode_error_frame("FutureCursor", "cursor ahead"),
    );
    let frame = |t: &str, body: serde_json::Value| {
        let mut out = dagcbor::encode(&serde_json::json!({"op": 1, "t": t})).unwrap();
        out.extend(dagcbor::encode(&body).unwrap());
        out
    };
    put(
        "firehose",
        "identity",
        &frame(
            "#identity",
            serde_json::json!({"seq": 9, "did": did, "handle": "alice.test", "time": time}),
        ),
    );
    put(
        "firehose",
        "account",
        &frame(
            "#account",
            serde_json::json!({"seq": 10, "did": did, "active": false, "status": "deleted", "time": time}),
        ),
    );
    put(
        "firehose",
        "sync",
        &frame(
            "#sync",
            serde_json::json!({"seq": 11, "did": did, "rev": "3kxyz", "time": time}),
        ),
    );
    put(
        "firehose",
        "info",
        &frame(
            "#info",
            serde_json::json!({"name": "OutdatedCursor", "message": "m"}),
        ),
    );

    let range = |size: u64, h: &str| [&size.to_le_bytes()[..], h.as_bytes()].concat();
    put("range", "first-100", &range(1000, "bytes=0-99"));
    put("range", "open-end", &range(1000, "bytes=500-"));
    put("range", "suffix", &range(1000, "bytes=-200"));
    put("range", "content-range", &range(1 << 20, "0-65535"));
    put(
        "range",
        "content-range-total",
        &range(1 << 20, "bytes 0-65535/1048576"),
    );
}

#[test]
fn seeds_reach_past_their_parsers() {
    if std::env::var_os("ATCR_WRITE_FUZZ_SEEDS").is_some() {
        write_generated_seeds();
    }
    let car_limits = CarLimits {
        max_blocks: 10_000,
        max_total_bytes: 16 << 20,
        ..CarLimits::default()
    };
    for (name, bytes) in seeds("car") {
        read_car(&bytes, car_limits).unwrap_or_else(|e| panic!("car/{name}: {e}"));
        crate::atproto::repo::fuzz_car(&bytes);
    }
    for (name, bytes) in seeds("dagcbor") {
        dagcbor::decode_canonical(&bytes).unwrap_or_else(|e| panic!("dagcbor/{name}: {e}"));
    }
    let key = crate::atproto::repo::fuzz::fuzz_key().unwrap();
    for (name, bytes) in seeds("firehose") {
        let frame = parse_frame(&bytes, 1 << 20).unwrap_or_else(|e| panic!("firehose/{name}: {e}"));
        if let Frame::Commit(c) = frame {
            // Signed with the fuzz key: the fuzzer starts inside the signature check.
            let v = crate::atproto::firehose::verify_commit(&c, &key, 1 << 20, |_| true)
                .unwrap_or_else(|e| panic!("firehose/{name}: {e}"));
            assert!(!v.changes.is_empty(), "firehose/{name}");
        }
    }
    const MANIFEST_TYPES: [&str; 6] = [
        manifest::OCI_MANIFEST,
        manifest::OCI_INDEX,
        manifest::DOCKER_MANIFEST,
        manifest::DOCKER_MANIFEST_LIST,
        "",
        "application/json",
    ];
    for (name, bytes) in seeds("manifest") {
        let media_type = MANIFEST_TYPES[bytes[0] as usize % MANIFEST_TYPES.len()];
        manifest::parse_manifest(media_type, &bytes[1..])
            .unwrap_or_else(|e| panic!("manifest/{name}: {e}"));
    }
    for (name, bytes) in seeds("reference") {
        let s = String::from_utf8(bytes).unwrap();
        let ok = s.parse::<Digest>().is_ok()
            || s.parse::<Name>().is_ok()
            || s.parse::<Reference>().is_ok()
            || crate::oci::route::parse(&s).is_ok();
        assert!(ok, "reference/{name}: {s:?}");
    }
    for (name, bytes) in seeds("range") {
        let size = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        let h = std::str::from_utf8(&bytes[8..]).unwrap();
        let partial = matches!(
            crate::oci::types::range::parse_range(h, size),
            crate::oci::types::range::RangeOutcome::Partial(_)
        );
        let content = crate::oci::types::range::parse_content_range(h).is_some();
        assert!(partial || content, "range/{name}: {h:?}");
    }
    for (name, bytes) in seeds("readme") {
        let text = String::from_utf8(bytes).unwrap_or_else(|_| panic!("readme/{name}"));
        assert!(
            crate::web::markdown::to_html(&text).contains("<"),
            "readme/{name}"
        );
    }
    // Every target has seeds, and every seed folder is a target.
    let cargo = std::fs::read_to_string(seeds_dir().join("../Cargo.toml")).unwrap();
    let targets: Vec<&str> = cargo
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|n| *n != "atcr-fuzz")
        .collect();
    let mut folders: Vec<String> = std::fs::read_dir(seeds_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    let mut targets_sorted: Vec<String> = targets.iter().map(|s| s.to_string()).collect();
    targets_sorted.sort();
    assert_eq!(
        folders, targets_sorted,
        "fuzz/seeds/<target> for every [[bin]] of fuzz/Cargo.toml"
    );
}
