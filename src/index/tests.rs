//! The index on a temp file: migrations, every query, FTS, direct-write and ingest paths.

use serde_json::json;

use super::apply::{RecordChange, MANIFEST_NSID, PAGE_NSID, PROFILE_NSID, STAR_NSID, TAG_NSID};
use super::*;

const ALICE: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";
const BOB: &str = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb";

fn config(dir: &std::path::Path) -> Config {
    let mut c = Config::for_data_dir(dir);
    // Nothing listens there: identity lookups of test DIDs fail at once, offline.
    c.identity.plc_url = "http://127.0.0.1:9".into();
    // Owners are network identities here (local mode keys them by name instead).
    c.auth.mode = "atproto".into();
    c
}

fn hex(n: u8) -> String {
    format!("{:02x}", n).repeat(32)
}

fn digest(n: u8) -> String {
    format!("sha256:{}", hex(n))
}

fn up(collection: &str, rkey: &str, value: serde_json::Value) -> RecordChange {
    RecordChange::Upsert {
        collection: collection.into(),
        rkey: rkey.into(),
        value,
    }
}

fn image(repo: &str, n: u8, created: &str, annotations: serde_json::Value) -> RecordChange {
    up(
        MANIFEST_NSID,
        &hex(n),
        json!({
            "$type": MANIFEST_NSID, "repository": repo, "digest": digest(n),
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(n + 100), "size": 100},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(n + 101), "size": 1000},
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(n + 102), "size": 2000}
            ],
            "annotations": annotations, "holdDid": "did:web:hold.example.com", "createdAt": created,
        }),
    )
}

fn tag(repo: &str, t: &str, n: u8, at: &str) -> RecordChange {
    up(
        TAG_NSID,
        &crate::registry::records::tag_rkey(repo, t),
        json!({"$type": TAG_NSID, "repository": repo, "tag": t,
               "manifest": format!("at://{ALICE}/{MANIFEST_NSID}/{}", hex(n)), "updatedAt": at}),
    )
}

async fn count(ix: &Index, sql: &str) -> i64 {
    let c = ix.reader().await;
    let mut rows = c.query(sql, ()).await.unwrap();
    rows.next().await.unwrap().unwrap().get(0).unwrap()
}

#[tokio::test]
async fn migrations_are_idempotent_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path());
    let ix = Index::open(&c).await.unwrap();
    assert!(dir.path().join("index.db").exists());
    let migrations = schema::MIGRATIONS.len() as i64;
    assert_eq!(
        count(&ix, "SELECT COUNT(*) FROM schema_migrations").await,
        migrations
    );
    ix.apply_records(
        ALICE,
        &[image("app", 1, "2026-01-01T00:00:00Z", json!({}))],
        None,
    )
    .await
    .unwrap();
    drop(ix);
    let ix = Index::open(&c).await.unwrap();
    assert_eq!(
        count(&ix, "SELECT COUNT(*) FROM schema_migrations").await,
        migrations
    );
    assert_eq!(
        count(&ix, "SELECT MAX(version) FROM schema_migrations").await,
        schema::MIGRATIONS.last().unwrap().0
    );
    // Rows survive a reopen; the migration did not run again over them.
    assert_eq!(ix.storage_stats().await.unwrap().manifests, 1);
}

#[tokio::test]
async fn records_fill_every_query() {
    let dir = tempfile::tempdir().unwrap();
    let ix = Index::open(&config(dir.path())).await.unwrap();
    let desc = "Tiny web server written in Rust";
    ix.apply_records(
        ALICE,
        &[
            image(
                "app",
                1,
                "2026-01-01T00:00:00Z",
                json!({"org.opencontainers.image.description": desc, "org.opencontainers.image.licenses": "MIT"}),
            ),
            tag("app", "v1", 1, "2026-01-01T00:00:01Z"),
            image("app", 2, "2026-01-02T00:00:00Z", json!({})),
            tag("app", "v2", 2, "2026-01-02T00:00:01Z"),
            // An index over 1 and 2, with platforms.
            up(MANIFEST_NSID, &hex(3), json!({
                "repository": "app", "digest": digest(3), "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json", "createdAt": "2026-01-03T00:00:00Z",
                "manifests": [
                    {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(1), "size": 500,
                     "platform": {"os": "linux", "architecture": "amd64"}},
                    {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(2), "size": 501,
                     "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}
                ]})),
            tag("app", "latest", 3, "2026-01-03T00:00:01Z"),
            // A signature referring to manifest 1.
            up(MANIFEST_NSID, &hex(4), json!({
                "repository": "app", "digest": digest(4), "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json", "createdAt": "2026-01-04T00:00:00Z",
                "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
                "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest(200), "size": 2},
                "layers": [{"mediaType": "application/octet-stream", "digest": digest(201), "size": 10}],
                "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(1), "size": 500}})),
            image("tools/builder", 5, "2025-12-01T00:00:00Z", json!({})),
            tag("tools/builder", "1.0", 5, "2025-12-01T00:00:01Z"),
            up(PROFILE_NSID, "self", json!({"defaultHold": "did:web:hold.example.com", "createdAt": "2026-01-01T00:00:00Z"})),
        ],
        Some(("ws://relay.example/xrpc", 41)),
    )
    .await
    .unwrap();
    ix.set_user_identity(ALICE, Some("alice.test"), Some("http://localhost:2583"))
        .await
        .unwrap();
    assert_eq!(
        ix.ingest_cursor("ws://relay.example/xrpc").await.unwrap(),
        Some(41)
    );
    assert_eq!(ix.ingest_cursor("ws://other").await.unwrap(), None);

    // repository(): description from the annotation until a repo page exists.
    let r = ix.repository(ALICE, "app").await.unwrap().unwrap();
    assert_eq!(r.summary.handle.as_deref(), Some("alice.test"));
    assert_eq!(r.summary.description.as_deref(), Some(desc));
    assert_eq!(r.description_source.as_deref(), Some("annotation"));
    assert_eq!(r.annotations["org.opencontainers.image.licenses"], "MIT");
    assert_eq!((r.tag_count, r.manifest_count), (3, 4));
    assert_eq!(r.summary.push_count, 4);
    assert_eq!(r.summary.last_push.as_deref(), Some("2026-01-04T00:00:00Z"));
    assert_eq!(r.summary.latest_tag.as_deref(), Some("latest"));
    assert!(ix.repository(ALICE, "nope").await.unwrap().is_none());

    // tags(): newest first, sizes, platforms for the index.
    let tags = ix.tags(ALICE, "app", 10, 0).await.unwrap();
    let names: Vec<_> = tags.iter().map(|t| t.tag.as_str()).collect();
    assert_eq!(names, ["latest", "v2", "v1"]);
    assert_eq!(tags[2].total_size, Some(3100));
    assert_eq!(
        tags[0].total_size,
        Some(6200),
        "index: the sum of its children"
    );
    assert_eq!(tags[0].platforms.len(), 2);
    assert_eq!(tags[0].platforms[1].variant.as_deref(), Some("v8"));
    // Each child's image size (config + layers), not its manifest's 500 bytes.
    assert_eq!(tags[0].image_sizes, [Some(3100), Some(3100)]);
    // No config source here: a single image's platform stays unknown, not guessed.
    assert!(tags[1].platforms.is_empty());
    assert!(tags[1].image_sizes.is_empty());
    assert_eq!(ix.tags(ALICE, "app", 1, 1).await.unwrap()[0].tag, "v2");

    // manifest(): layers, children, annotations, referrers, tags.
    let m = ix
        .manifest(ALICE, "app", &digest(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.layers.len(), 2);
    assert_eq!(m.layers[1].size, 2000);
    assert_eq!(m.config_digest.as_deref(), Some(digest(101).as_str()));
    assert_eq!(m.hold_did.as_deref(), Some("did:web:hold.example.com"));
    assert_eq!(m.referrers.len(), 1);
    assert_eq!(m.referrers[0].digest, digest(4));
    assert_eq!(m.tags, ["v1"]);
    let sig = ix
        .manifest(ALICE, "app", &digest(4))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sig.subject.as_deref(), Some(digest(1).as_str()));
    let idx = ix
        .manifest(ALICE, "app", &digest(3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(idx.children.len(), 2);
    assert_eq!(idx.children[0].size, 500);
    assert_eq!(idx.children[0].image_size, Some(3100));
    assert!(idx.platform.is_none());
    assert_eq!(
        idx.children[0]
            .platform
            .as_ref()
            .unwrap()
            .architecture
            .as_deref(),
        Some("amd64")
    );

    // users.
    let u = ix
        .user_by_handle_or_did("Alice.Test")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(u.did, ALICE);
    assert_eq!(u.default_hold.as_deref(), Some("did:web:hold.example.com"));
    assert_eq!(
        ix.user_by_handle_or_did(ALICE)
            .await
            .unwrap()
            .unwrap()
            .handle
            .as_deref(),
        Some("alice.test")
    );
    assert!(ix
        .user_by_handle_or_did("nobody.test")
        .await
        .unwrap()
        .is_none());
    let repos: Vec<_> = ix
        .user_repos(ALICE)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(repos, ["app", "tools/builder"]);

    // Stars from bob: the lexicon's AT-URI subject and an old object subject.
    ix.apply_records(
        BOB,
        &[
            up(STAR_NSID, "3kstar1", json!({"subject": format!("at://{ALICE}/{PAGE_NSID}/app"), "createdAt": "2026-02-01T00:00:00Z"})),
            up(STAR_NSID, "3kstar2", json!({"subject": {"did": ALICE, "repository": "tools/builder"}, "createdAt": "2026-02-02T00:00:00Z"})),
            up(STAR_NSID, "3kbad", json!({"subject": 7})),
        ],
        None,
    )
    .await
    .unwrap();
    assert!(ix.is_starred(BOB, ALICE, "app").await.unwrap());
    assert!(!ix.is_starred(ALICE, ALICE, "app").await.unwrap());
    assert_eq!(
        ix.star_rkey(BOB, ALICE, "app").await.unwrap().as_deref(),
        Some("3kstar1")
    );
    let stars: Vec<_> = ix
        .user_stars(BOB)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(stars, ["tools/builder", "app"]);
    assert_eq!(
        ix.repository(ALICE, "app")
            .await
            .unwrap()
            .unwrap()
            .summary
            .star_count,
        1
    );

    // The same stars again (a backfill re-applies them: upserts firing the count triggers),
    // then one moved to another repository: counts stay exact, nothing fails.
    let star_count = |repo: &'static str| {
        let ix = ix.clone();
        async move {
            ix.repository(ALICE, repo)
                .await
                .unwrap()
                .unwrap()
                .summary
                .star_count
        }
    };
    for _ in 0..2 {
        ix.apply_records(
            BOB,
            &[
                up(STAR_NSID, "3kstar1", json!({"subject": format!("at://{ALICE}/{PAGE_NSID}/app"), "createdAt": "2026-02-01T00:00:00Z"})),
                up(STAR_NSID, "3kstar2", json!({"subject": {"did": ALICE, "repository": "tools/builder"}, "createdAt": "2026-02-02T00:00:00Z"})),
            ],
            None,
        )
        .await
        .expect("re-applying stars");
    }
    assert_eq!(
        (star_count("app").await, star_count("tools/builder").await),
        (1, 1)
    );
    ix.apply_records(
        BOB,
        &[up(STAR_NSID, "3kstar2", json!({"subject": {"did": ALICE, "repository": "app"}, "createdAt": "2026-02-02T00:00:00Z"}))],
        None,
    )
    .await
    .expect("moving a star");
    assert_eq!(
        (star_count("app").await, star_count("tools/builder").await),
        (2, 0)
    );
    ix.apply_records(
        BOB,
        &[up(STAR_NSID, "3kstar2", json!({"subject": {"did": ALICE, "repository": "tools/builder"}, "createdAt": "2026-02-02T00:00:00Z"}))],
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        (star_count("app").await, star_count("tools/builder").await),
        (1, 1)
    );

    // The UI's star calls.
    ix.put_star(ALICE, "3kself", ALICE, "app").await.unwrap();
    assert_eq!(
        ix.repository(ALICE, "app")
            .await
            .unwrap()
            .unwrap()
            .summary
            .star_count,
        2
    );
    ix.delete_star(ALICE, "3kself").await.unwrap();
    assert!(!ix.is_starred(ALICE, ALICE, "app").await.unwrap());

    // Popular: app has a star and pulls.
    ix.note_pull(ALICE, "tools/builder");
    ix.note_pull("alice.test", "app");
    ix.note_pull(ALICE, "app");
    ix.flush_pulls().await.unwrap();
    let r = ix.repository(ALICE, "app").await.unwrap().unwrap();
    assert_eq!(
        r.summary.pull_count, 2,
        "handle pulls resolve through the users table"
    );
    assert!(r.last_pull.is_some());
    let pop = ix.popular_repos(10).await.unwrap();
    assert_eq!(pop[0].name, "app");

    let recent = ix.recent_pushes(2).await.unwrap();
    assert_eq!(recent.len(), 2);
    assert_eq!(recent[0].tag, "latest");
    assert_eq!(recent[0].handle.as_deref(), Some("alice.test"));
    assert_eq!(
        recent[0].media_type.as_deref(),
        Some("application/vnd.oci.image.index.v1+json")
    );

    let stats = ix.storage_stats().await.unwrap();
    assert_eq!(
        (
            stats.users,
            stats.repositories,
            stats.manifests,
            stats.tags,
            stats.stars,
            stats.pulls
        ),
        (2, 2, 5, 4, 2, 3)
    );
}

/// Manifest records keyed by TID (atcr.io's lexicon): one digest in two repositories is two
/// records, tags find their digest through the record they name (also when the tag arrives
/// first), deletes go by record key; old digest-hex keys keep working beside them.
#[tokio::test]
async fn tid_keyed_manifests_and_old_digest_keys() {
    let dir = tempfile::tempdir().unwrap();
    let ix = Index::open(&config(dir.path())).await.unwrap();
    let rec = |repo: &str, n: u8| {
        json!({"$type": MANIFEST_NSID, "repository": repo, "digest": digest(n),
               "mediaType": "application/vnd.oci.image.manifest.v1+json", "schemaVersion": 2,
               "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(n + 1), "size": 10}],
               "createdAt": "2026-01-01T00:00:00Z"})
    };
    let tag_at = |repo: &str, t: &str, mkey: &str| {
        up(
            TAG_NSID,
            &crate::registry::records::tag_rkey(repo, t),
            json!({"$type": TAG_NSID, "repository": repo, "tag": t,
                   "manifest": format!("at://{ALICE}/{MANIFEST_NSID}/{mkey}"),
                   "mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "updatedAt": "2026-01-01T00:00:01Z"}),
        )
    };
    let (k1, k2, k3) = ("3lbaaaaaaaaa2", "3lbaaaaaaaab2", "3lbaaaaaaaac2");
    ix.apply_records(
        ALICE,
        &[
            up(MANIFEST_NSID, k1, rec("single", 1)),
            tag_at("single", "v1", k1),
            up(MANIFEST_NSID, k2, rec("late", 1)),
            tag_at("late", "v1", k2),
            // A tag that names a record not indexed yet stays hidden until it arrives.
            tag_at("late", "v2", k3),
        ],
        None,
    )
    .await
    .unwrap();
    let tags = |repo: &'static str| {
        let ix = ix.clone();
        async move {
            ix.tags(ALICE, repo, 10, 0)
                .await
                .unwrap()
                .into_iter()
                .map(|t| (t.tag, t.digest))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(tags("single").await, vec![("v1".into(), digest(1))]);
    assert_eq!(tags("late").await, vec![("v1".into(), digest(1))]);
    assert_eq!(
        ix.manifest_rkey(ALICE, "late", &digest(1)).await.unwrap(),
        Some(k2.to_string())
    );
    ix.apply_records(ALICE, &[up(MANIFEST_NSID, k3, rec("late", 5))], None)
        .await
        .unwrap();
    let mut late = tags("late").await;
    late.sort();
    assert_eq!(
        late,
        vec![("v1".into(), digest(1)), ("v2".into(), digest(5))]
    );
    // Deleting one repository's record leaves the other repository's record of the digest.
    ix.apply_records(
        ALICE,
        &[RecordChange::Delete {
            collection: MANIFEST_NSID.into(),
            rkey: k1.into(),
        }],
        None,
    )
    .await
    .unwrap();
    assert!(ix
        .manifest(ALICE, "single", &digest(1))
        .await
        .unwrap()
        .is_none());
    assert!(ix
        .manifest(ALICE, "late", &digest(1))
        .await
        .unwrap()
        .is_some());

    // Written the old way: rkey = digest hex, the tag's URI names that key.
    ix.apply_records(
        ALICE,
        &[
            up(MANIFEST_NSID, &hex(7), rec("old", 7)),
            tag_at("old", "v1", &hex(7)),
            // An old tag whose manifest record is not (yet) indexed: the key is the digest.
            tag_at("old", "v0", &hex(9)),
        ],
        None,
    )
    .await
    .unwrap();
    let mut old = tags("old").await;
    old.sort();
    assert_eq!(
        old,
        vec![("v0".into(), digest(9)), ("v1".into(), digest(7))]
    );
    ix.apply_records(
        ALICE,
        &[RecordChange::Delete {
            collection: MANIFEST_NSID.into(),
            rkey: hex(7),
        }],
        None,
    )
    .await
    .unwrap();
    assert!(ix
        .manifest(ALICE, "old", &digest(7))
        .await
        .unwrap()
        .is_none());

    // A page (key = repository name) and a star naming it.
    ix.apply_records(
        ALICE,
        &[up(
            PAGE_NSID,
            "toolbox",
            json!({"$type": PAGE_NSID, "repository": "toolbox", "description": "# hi",
                   "userEdited": true, "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z"}),
        )],
        None,
    )
    .await
    .unwrap();
    ix.apply_records(
        BOB,
        &[up(
            STAR_NSID,
            "3lbaaaaaaaad2",
            json!({"$type": STAR_NSID, "subject": format!("at://{ALICE}/{PAGE_NSID}/toolbox"),
                   "createdAt": "2026-01-01T00:00:00Z"}),
        )],
        None,
    )
    .await
    .unwrap();
    let r = ix.repository(ALICE, "toolbox").await.unwrap().unwrap();
    assert_eq!(r.summary.description.as_deref(), Some("# hi"));
    assert!(r.user_edited && r.has_page);
    assert!(ix.is_starred(BOB, ALICE, "toolbox").await.unwrap());
    // A page whose key and repository disagree is skipped.
    ix.apply_records(
        ALICE,
        &[up(
            PAGE_NSID,
            "other",
            json!({"$type": PAGE_NSID, "repository": "not-other",
                   "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z"}),
        )],
        None,
    )
    .await
    .unwrap();
    assert!(ix.repository(ALICE, "other").await.unwrap().is_none());
    assert!(ix.repository(ALICE, "not-other").await.unwrap().is_none());
}

/// A sha512 manifest (registry without a PDS) is indexed like any other.
#[tokio::test]
async fn sha512_manifests_are_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let ix = Index::open(&config(dir.path())).await.unwrap();
    let d512 = format!("sha512:{}", "ab".repeat(64));
    ix.apply_records(
        ALICE,
        &[
            up(MANIFEST_NSID, &"ab".repeat(64), json!({
                "repository": "big", "digest": d512, "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "layers": [{"mediaType": "l", "digest": format!("sha512:{}", "cd".repeat(64)), "size": 5}],
                "createdAt": "2026-01-01T00:00:00Z"})),
            up(TAG_NSID, "big:v1", json!({"repository": "big", "tag": "v1",
                "manifestDigest": d512, "updatedAt": "2026-01-01T00:00:01Z"})),
        ],
        None,
    )
    .await
    .unwrap();
    let m = ix.manifest(ALICE, "big", &d512).await.unwrap().unwrap();
    assert_eq!(m.layers.len(), 1);
    assert_eq!(ix.tags(ALICE, "big", 10, 0).await.unwrap()[0].digest, d512);
}

#[tokio::test]
async fn search_covers_handles_names_descriptions_annotations() {
    let dir = tempfile::tempdir().unwrap();
    let ix = Index::open(&config(dir.path())).await.unwrap();
    ix.apply_records(
        ALICE,
        &[
            image(
                "webserver",
                1,
                "2026-01-01T00:00:00Z",
                json!({"org.opencontainers.image.source": "https://git.example/zebra-project"}),
            ),
            tag("webserver", "v1", 1, "2026-01-01T00:00:00Z"),
            image("db", 2, "2026-01-02T00:00:00Z", json!({})),
            tag("db", "v1", 2, "2026-01-02T00:00:00Z"),
        ],
        None,
    )
    .await
    .unwrap();
    ix.apply_records(
        BOB,
        &[
            image("other", 3, "2026-01-03T00:00:00Z", json!({})),
            up(PAGE_NSID, "other", json!({"repository": "other", "description": "A **Kangaroo** tracker", "createdAt": "2026-01-03T00:00:00Z", "updatedAt": "2026-01-03T00:00:00Z"})),
        ],
        None,
    )
    .await
    .unwrap();
    ix.set_user_identity(ALICE, Some("alice.test"), None)
        .await
        .unwrap();
    ix.set_user_identity(BOB, Some("bob.test"), None)
        .await
        .unwrap();
    let f = SearchFilters::default();
    let names = |r: &SearchResults| r.results.iter().map(|x| x.name.clone()).collect::<Vec<_>>();

    let r = ix.search("webserv", &f, 10, 0).await.unwrap();
    assert_eq!((names(&r), r.total), (vec!["webserver".to_string()], 1));
    let r = ix.search("alice", &f, 10, 0).await.unwrap();
    assert_eq!(r.total, 2, "{r:?}");
    let r = ix.search("kangaroo", &f, 10, 0).await.unwrap();
    assert_eq!(names(&r), ["other"]);
    assert_eq!(
        r.results[0].description.as_deref(),
        Some("A **Kangaroo** tracker")
    );
    let r = ix.search("zebra", &f, 10, 0).await.unwrap();
    assert_eq!(names(&r), ["webserver"]);
    // FTS syntax in user input is just words.
    let r = ix.search("\"db\" OR NEAR(", &f, 10, 0).await.unwrap();
    assert_eq!(r.total, 0);
    let r = ix.search("db", &f, 10, 0).await.unwrap();
    assert_eq!(names(&r), ["db"]);
    // Empty query: everything, newest push first; paging and total.
    let r = ix.search("", &f, 2, 0).await.unwrap();
    assert_eq!(
        (names(&r), r.total),
        (vec!["other".to_string(), "db".to_string()], 3)
    );
    let r = ix.search("", &f, 2, 2).await.unwrap();
    assert_eq!(names(&r), ["webserver"]);
    let only_bob = SearchFilters {
        owner_did: Some(BOB.into()),
        ..Default::default()
    };
    assert_eq!(
        names(&ix.search("", &only_bob, 10, 0).await.unwrap()),
        ["other"]
    );
    // A handle change reaches the search rows.
    ix.set_user_identity(ALICE, Some("alicia.test"), None)
        .await
        .unwrap();
    assert_eq!(ix.search("alice", &f, 10, 0).await.unwrap().total, 0);
    assert_eq!(ix.search("alicia", &f, 10, 0).await.unwrap().total, 2);
    // The page's description wins over annotations once it exists.
    let r = ix.repository(BOB, "other").await.unwrap().unwrap();
    assert_eq!(r.description_source.as_deref(), Some("page"));
}

#[tokio::test]
async fn echoes_deletes_and_bad_records() {
    let dir = tempfile::tempdir().unwrap();
    let ix = Index::open(&config(dir.path())).await.unwrap();
    let batch = [
        image("app", 1, "2026-01-01T00:00:00Z", json!({})),
        tag("app", "v1", 1, "2026-01-01T00:00:01Z"),
    ];
    ix.apply_records(ALICE, &batch, None).await.unwrap();
    // The same records again (the firehose echo of a direct write, a backfill): no change.
    ix.apply_records(ALICE, &batch, None).await.unwrap();
    let r = ix.repository(ALICE, "app").await.unwrap().unwrap();
    assert_eq!(
        (r.summary.push_count, r.tag_count, r.manifest_count),
        (1, 1, 1)
    );

    // A bad record is skipped; the rest of the batch and the cursor still apply.
    ix.apply_records(
        ALICE,
        &[
            up(
                MANIFEST_NSID,
                "x",
                json!({"repository": "app", "digest": "not-a-digest", "mediaType": "m"}),
            ),
            up(TAG_NSID, "y", json!({"repository": "app"})),
            up(
                MANIFEST_NSID,
                "z",
                json!({"repository": "x".repeat(300), "digest": digest(9), "mediaType": "m"}),
            ),
            tag("app", "v1-copy", 1, "2026-01-01T00:00:02Z"),
            up("app.bsky.feed.post", "p", json!({"text": "ignored"})),
        ],
        Some(("src", 7)),
    )
    .await
    .unwrap();
    assert_eq!(ix.tags(ALICE, "app", 10, 0).await.unwrap().len(), 2);
    assert_eq!(ix.ingest_cursor("src").await.unwrap(), Some(7));

    // A moved tag replaces the old row (same rkey).
    ix.apply_records(
        ALICE,
        &[
            image("app", 2, "2026-01-02T00:00:00Z", json!({})),
            tag("app", "v1", 2, "2026-01-02T00:00:01Z"),
        ],
        None,
    )
    .await
    .unwrap();
    let tags = ix.tags(ALICE, "app", 10, 0).await.unwrap();
    assert_eq!(
        tags.iter().find(|t| t.tag == "v1").unwrap().digest,
        digest(2)
    );

    // Deletes: tags, then manifests; the repository disappears with its last record.
    let del = |c: &str, k: &str| RecordChange::Delete {
        collection: c.into(),
        rkey: k.into(),
    };
    ix.apply_records(
        ALICE,
        &[
            del(TAG_NSID, &crate::registry::records::tag_rkey("app", "v1")),
            del(
                TAG_NSID,
                &crate::registry::records::tag_rkey("app", "v1-copy"),
            ),
            del(MANIFEST_NSID, &hex(1)),
        ],
        None,
    )
    .await
    .unwrap();
    let r = ix.repository(ALICE, "app").await.unwrap().unwrap();
    assert_eq!((r.tag_count, r.manifest_count), (0, 1));
    assert!(ix
        .manifest(ALICE, "app", &digest(1))
        .await
        .unwrap()
        .is_none());
    ix.apply_records(ALICE, &[del(MANIFEST_NSID, &hex(2))], None)
        .await
        .unwrap();
    assert!(ix.repository(ALICE, "app").await.unwrap().is_none());
    assert_eq!(
        ix.search("app", &SearchFilters::default(), 10, 0)
            .await
            .unwrap()
            .total,
        0
    );
    assert_eq!(count(&ix, "SELECT COUNT(*) FROM layers").await, 0);

    // An account deleted on the network leaves nothing behind.
    ix.apply_records(
        ALICE,
        &[image("gone", 3, "2026-01-05T00:00:00Z", json!({}))],
        None,
    )
    .await
    .unwrap();
    ix.forget_account(ALICE).await.unwrap();
    assert_eq!(ix.storage_stats().await.unwrap().repositories, 0);
    assert!(ix.user_by_handle_or_did(ALICE).await.unwrap().is_none());
}

/// Embedded replica of a real libsql-server / Turso primary: only with
/// `ATCR_TEST_LIBSQL_URL` (and `ATCR_TEST_LIBSQL_TOKEN` when the primary wants one).
#[tokio::test]
async fn embedded_replica_against_a_primary() {
    let Ok(url) = std::env::var("ATCR_TEST_LIBSQL_URL") else {
        eprintln!("SKIPPED: ATCR_TEST_LIBSQL_URL is not set (no libsql-server to replicate from)");
        return;
    };
    let token = std::env::var("ATCR_TEST_LIBSQL_TOKEN").unwrap_or_default();
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let open = |dir: &std::path::Path| {
        let mut c = config(dir);
        c.index.primary_url = url.clone();
        c.index.auth_token = crate::config::Secret(token.clone());
        c.index.sync_interval_secs = 1;
        c
    };
    let a = Index::open(&open(d1.path())).await.unwrap();
    assert!(a.is_replica());
    a.sync().await.unwrap();
    let repo = format!("replica-{}", std::process::id());
    // Writes go to the primary as one request per transaction; one sync brings them back.
    let (tx0, req0) = (a.status().write_transactions, a.status().primary_requests);
    a.apply_records(
        ALICE,
        &[
            image(&repo, 7, "2026-03-01T00:00:00Z", json!({})),
            tag(&repo, "v1", 7, "2026-03-01T00:00:01Z"),
        ],
        None,
    )
    .await
    .unwrap();
    let (tx, req) = (
        a.status().write_transactions - tx0,
        a.status().primary_requests - req0,
    );
    eprintln!("one push: {tx} write transaction(s), {req} request(s) to the primary");
    assert_eq!(tx, 1);
    assert!(req <= 4, "{req} requests for one push");
    assert!(a.repository(ALICE, &repo).await.unwrap().is_some());
    // A second replica (another machine) sees it after its first sync.
    let b = Index::open(&open(d2.path())).await.unwrap();
    b.sync().await.unwrap();
    assert!(b.repository(ALICE, &repo).await.unwrap().is_some());
    // Direct writes (the outbox) and pull counts reach the primary too.
    a.put_star(BOB, "3kreplica", ALICE, &repo).await.unwrap();
    a.note_pull(ALICE, &repo);
    a.flush_pulls().await.unwrap();
    b.sync().await.unwrap();
    assert!(b.is_starred(BOB, ALICE, &repo).await.unwrap());
    assert_eq!(
        b.repository(ALICE, &repo)
            .await
            .unwrap()
            .unwrap()
            .summary
            .pull_count,
        1
    );
    a.forget_account(ALICE).await.unwrap();
    a.sync().await.unwrap();
    b.sync().await.unwrap();
    assert!(b.repository(ALICE, &repo).await.unwrap().is_none());
}

/// What the firehose and the backfill write is replayed after a power cut (the cursor is in
/// the same transaction), so their commits skip the WAL fsync; an outbox entry is removed
/// once applied, so the transaction that applies it is fsynced (synchronous=FULL, 2).
#[tokio::test]
async fn outbox_transactions_are_fsynced_and_replayable_ones_are_not() {
    async fn writer_sync(ix: &Index) -> i64 {
        let w = ix.writer().await;
        let mut rows = w.ship().query("PRAGMA synchronous", ()).await.unwrap();
        rows.next().await.unwrap().unwrap().get(0).unwrap()
    }
    let dir = tempfile::tempdir().unwrap();
    let ix = Index::open(&config(dir.path())).await.unwrap();
    ix.apply_records(
        ALICE,
        &[image("app", 1, "2026-01-01T00:00:00Z", json!({}))],
        Some(("wss://relay.example", 7)),
    )
    .await
    .unwrap();
    assert_eq!(writer_sync(&ix).await, 1, "NORMAL for a replayable write");
    ix.note_pull(ALICE, "app");
    ix.flush_pulls().await.unwrap();
    assert_eq!(writer_sync(&ix).await, 2, "FULL for an outbox entry");
    ix.apply_records(ALICE, &[tag("app", "v1", 1, "2026-01-01T00:00:01Z")], None)
        .await
        .unwrap();
    assert_eq!(writer_sync(&ix).await, 1);
    assert_eq!(
        ix.ingest_cursor("wss://relay.example").await.unwrap(),
        Some(7)
    );
}
