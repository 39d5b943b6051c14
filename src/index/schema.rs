//! Versioned migrations. Each entry runs once, in order, inside one transaction together
//! with its row in `schema_migrations`; a migration is never edited after release, a new
//! version is appended instead.

/// (version, SQL). Versions are consecutive from 1.
pub(super) const MIGRATIONS: &[(i64, &str)] = &[
    (1, V1),
    (2, V2),
    (3, V3),
    (4, V4_SCANS),
    (5, V5_IMAGE_PLATFORM),
    (6, V6_STAR_COUNTS),
];

/// The first schema. Every table is a cache of records on the network (rebuildable by the
/// backfill) except `repository_stats` pull counts, which only this AppView sees, and
/// `ingest_cursor`. No PDS session or secret is ever stored here.
const V1: &str = r#"
CREATE TABLE users (
    did TEXT PRIMARY KEY,
    handle TEXT,
    pds TEXT,
    avatar TEXT,
    default_hold TEXT,
    resolved_at TEXT,
    first_seen TEXT NOT NULL
);
CREATE INDEX users_handle ON users(handle);

CREATE TABLE repositories (
    did TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (did, name)
);

CREATE TABLE manifests (
    did TEXT NOT NULL,
    repository TEXT NOT NULL,
    digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    config_digest TEXT,
    config_size INTEGER,
    total_size INTEGER,
    artifact_type TEXT,
    subject_digest TEXT,
    hold_did TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (did, repository, digest)
);
CREATE INDEX manifests_digest ON manifests(did, digest);
CREATE INDEX manifests_subject ON manifests(did, repository, subject_digest);

CREATE TABLE layers (
    did TEXT NOT NULL,
    repository TEXT NOT NULL,
    manifest_digest TEXT NOT NULL,
    position INTEGER NOT NULL,
    digest TEXT NOT NULL,
    size INTEGER NOT NULL,
    media_type TEXT NOT NULL,
    PRIMARY KEY (did, repository, manifest_digest, position)
);

CREATE TABLE manifest_references (
    did TEXT NOT NULL,
    repository TEXT NOT NULL,
    manifest_digest TEXT NOT NULL,
    position INTEGER NOT NULL,
    digest TEXT NOT NULL,
    size INTEGER NOT NULL,
    media_type TEXT NOT NULL,
    os TEXT,
    architecture TEXT,
    variant TEXT,
    PRIMARY KEY (did, repository, manifest_digest, position)
);
CREATE INDEX manifest_references_child ON manifest_references(did, repository, digest);

CREATE TABLE manifest_annotations (
    did TEXT NOT NULL,
    repository TEXT NOT NULL,
    manifest_digest TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (did, repository, manifest_digest, key)
);

CREATE TABLE tags (
    did TEXT NOT NULL,
    repository TEXT NOT NULL,
    tag TEXT NOT NULL,
    digest TEXT NOT NULL,
    rkey TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (did, repository, tag)
);
CREATE UNIQUE INDEX tags_rkey ON tags(did, rkey);
CREATE INDEX tags_updated ON tags(updated_at);

CREATE TABLE repository_annotations (
    did TEXT NOT NULL,
    repository TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (did, repository, key)
);

CREATE TABLE repo_pages (
    did TEXT NOT NULL,
    repository TEXT NOT NULL,
    description TEXT,
    avatar_cid TEXT,
    created_at TEXT,
    updated_at TEXT,
    PRIMARY KEY (did, repository)
);

CREATE TABLE stars (
    starrer_did TEXT NOT NULL,
    rkey TEXT NOT NULL,
    owner_did TEXT NOT NULL,
    repository TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (starrer_did, rkey)
);
CREATE INDEX stars_subject ON stars(owner_did, repository);

CREATE TABLE repository_stats (
    did TEXT NOT NULL,
    repository TEXT NOT NULL,
    pull_count INTEGER NOT NULL DEFAULT 0,
    push_count INTEGER NOT NULL DEFAULT 0,
    last_pull TEXT,
    last_push TEXT,
    PRIMARY KEY (did, repository)
);
CREATE INDEX repository_stats_last_push ON repository_stats(last_push);

CREATE TABLE hold_captain_records (
    hold_did TEXT PRIMARY KEY,
    owner_did TEXT NOT NULL,
    public INTEGER NOT NULL DEFAULT 0,
    allow_all_crew INTEGER NOT NULL DEFAULT 0,
    deployed_at TEXT,
    region TEXT,
    provider TEXT,
    updated_at TEXT NOT NULL
);

CREATE TABLE ingest_cursor (
    source TEXT PRIMARY KEY,
    cursor INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);

-- One row per repository (rowid = repositories.rowid), rewritten whenever its handle,
-- page or annotations change.
CREATE VIRTUAL TABLE search_fts USING fts5(
    handle, name, description, annotations,
    tokenize = 'unicode61 remove_diacritics 2'
);
"#;

/// Manifest records have TID keys (atcr.io's lexicon), so a record key no longer names its
/// digest: manifests keep their record key (rows from V1 came from digest-hex keys), tags
/// keep the key of the manifest record they point at (resolved to a digest when that
/// record is indexed, `digest = ''` until then), repo pages keep `userEdited`.
const V2: &str = r#"
ALTER TABLE manifests ADD COLUMN rkey TEXT;
UPDATE manifests SET rkey = substr(digest, instr(digest, ':') + 1);
CREATE INDEX manifests_rkey ON manifests(did, rkey);
ALTER TABLE tags ADD COLUMN manifest_rkey TEXT;
ALTER TABLE tags ADD COLUMN media_type TEXT;
CREATE INDEX tags_manifest_rkey ON tags(did, manifest_rkey);
ALTER TABLE repo_pages ADD COLUMN user_edited INTEGER NOT NULL DEFAULT 0;
"#;

/// The outbox's exactly-once marker: the highest outbox entry applied, per outbox (each
/// appliance sharing a primary has its own). Written in the transaction that applies the
/// entry (`index/drain.rs`).
const V3: &str = r#"
CREATE TABLE outbox_applied (
    outbox TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    applied_at TEXT NOT NULL
);
"#;

/// Scan summaries (`io.atcr.hold.scan` records of this appliance's hold, one per manifest
/// digest): the repository page's severity badges and the search filter read them.
/// Rebuilt from the hold's records at start.
const V4_SCANS: &str = r#"
CREATE TABLE scans (
    digest TEXT PRIMARY KEY,
    user_did TEXT NOT NULL,
    repository TEXT NOT NULL,
    status TEXT NOT NULL,
    critical INTEGER NOT NULL,
    high INTEGER NOT NULL,
    medium INTEGER NOT NULL,
    low INTEGER NOT NULL,
    total INTEGER NOT NULL,
    scanned_at TEXT NOT NULL
);
CREATE INDEX scans_critical ON scans(critical) WHERE critical > 0;
"#;

/// The platform of single-platform images, read from their image config (an index names
/// its children's platforms itself, in `manifest_references`). NULL: not read yet, or the
/// config is not stored on this server.
const V5_IMAGE_PLATFORM: &str = r#"
ALTER TABLE manifests ADD COLUMN os TEXT;
ALTER TABLE manifests ADD COLUMN architecture TEXT;
ALTER TABLE manifests ADD COLUMN variant TEXT;
CREATE INDEX manifests_architecture ON manifests(did, repository, architecture);
"#;

/// Star counts kept beside the pull counts (triggers on `stars`, so every write path and a
/// primary shared by replicas keep them), so the home page's popular list reads the top of
/// one index instead of counting stars for every repository; and tags by (repository,
/// updated_at): a repository's latest tag is one index seek (every repository list shows it).
/// Every repository gets a stats row (the search's newest-first listing reads them).
/// The triggers insert a missing stats row with `WHERE NOT EXISTS`, not `OR IGNORE`: inside
/// a trigger fired by an upsert's `DO UPDATE` (how stars are written), SQLite applies the
/// outer statement's conflict policy, and the `OR IGNORE` failed with a UNIQUE error.
const V6_STAR_COUNTS: &str = r#"
ALTER TABLE repository_stats ADD COLUMN star_count INTEGER NOT NULL DEFAULT 0;
INSERT OR IGNORE INTO repository_stats (did, repository)
    SELECT DISTINCT owner_did, repository FROM stars;
INSERT OR IGNORE INTO repository_stats (did, repository) SELECT did, name FROM repositories;
UPDATE repository_stats SET star_count = (SELECT COUNT(*) FROM stars s
    WHERE s.owner_did = repository_stats.did AND s.repository = repository_stats.repository);
CREATE INDEX repository_stats_popular ON repository_stats(star_count, pull_count, last_push);
CREATE TRIGGER stars_count_insert AFTER INSERT ON stars BEGIN
    INSERT INTO repository_stats (did, repository)
        SELECT NEW.owner_did, NEW.repository WHERE NOT EXISTS (SELECT 1 FROM repository_stats
            WHERE did = NEW.owner_did AND repository = NEW.repository);
    UPDATE repository_stats SET star_count = star_count + 1
        WHERE did = NEW.owner_did AND repository = NEW.repository;
END;
CREATE TRIGGER stars_count_delete AFTER DELETE ON stars BEGIN
    UPDATE repository_stats SET star_count = star_count - 1
        WHERE did = OLD.owner_did AND repository = OLD.repository;
END;
CREATE TRIGGER stars_count_update AFTER UPDATE OF owner_did, repository ON stars BEGIN
    UPDATE repository_stats SET star_count = star_count - 1
        WHERE did = OLD.owner_did AND repository = OLD.repository;
    INSERT INTO repository_stats (did, repository)
        SELECT NEW.owner_did, NEW.repository WHERE NOT EXISTS (SELECT 1 FROM repository_stats
            WHERE did = NEW.owner_did AND repository = NEW.repository);
    UPDATE repository_stats SET star_count = star_count + 1
        WHERE did = NEW.owner_did AND repository = NEW.repository;
END;
CREATE INDEX tags_latest ON tags(did, repository, updated_at);
"#;
