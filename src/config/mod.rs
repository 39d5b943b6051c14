//! Typed configuration: a TOML file, then `ATCR_*` environment overrides, then validation.
//!
//! Every leaf key has an environment name made of its path in capitals joined by `_`
//! (`server.listen` -> `ATCR_SERVER_LISTEN`). Invalid configuration is reported with the key
//! (or variable) that is wrong, before anything is opened; `main` exits with code 2.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The commented default configuration written by `atcr config init`.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("config key {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Things worth telling the operator that are not errors (unknown ATCR_* variables).
    #[serde(skip)]
    pub warnings: Vec<String>,
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub registry: RegistryConfig,
    pub auth: AuthConfig,
    pub identity: IdentityConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub hold: HoldConfig,
    pub index: IndexConfig,
    pub federation: FederationConfig,
    pub scan: ScanConfig,
    pub backup: BackupConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to listen on.
    pub listen: String,
    /// Public base URL (scheme://host[:port]); empty means derived from the request's Host.
    pub public_url: String,
    /// State directory: blobs, databases, keys.
    pub data_dir: PathBuf,
    /// Connections served at once. When full, an idle or stalled connection is closed to
    /// make room; when none is, the newcomer gets a quick `503` with `Retry-After`.
    pub max_connections: usize,
    /// Connections one client address (IPv6: its /64) may hold; 0: no per-address cap.
    pub max_connections_per_address: usize,
    /// Addresses or CIDR blocks exempt from the per-address cap (a reverse proxy on this host).
    pub per_address_exempt: Vec<String>,
    /// Seconds a new connection has to send the bytes that tell HTTP/1 from HTTP/2.
    pub protocol_timeout_secs: u64,
    /// Seconds a client has to send a request's complete headers (HTTP/2: the first request).
    pub header_timeout_secs: u64,
    /// Seconds an open connection may sit idle between requests (both protocols).
    pub keepalive_timeout_secs: u64,
    /// Slowest accepted transfer, bytes per second, averaged over `transfer_window_secs` of
    /// waiting on the client: request bodies it sends and responses it reads.
    pub min_transfer_rate: u64,
    /// The window (seconds of waiting on the client) over which `min_transfer_rate` is measured.
    pub transfer_window_secs: u64,
    /// Concurrent HTTP/2 streams per connection.
    pub http2_max_streams: u32,
    /// Seconds between HTTP/2 keep-alive pings on a connection; the peer must answer within
    /// the same time. 0: no pings.
    pub http2_ping_secs: u64,
    /// Seconds to let in-flight requests finish after SIGTERM.
    pub shutdown_grace_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `filesystem` or `s3`.
    pub backend: String,
    /// Filesystem blob root; empty means `<data_dir>/blobs`.
    pub root: PathBuf,
    /// New uploads are refused (`507`) while the filesystem that stages them has less than
    /// this many MiB free; reads go on. 0: only a really full disk stops uploads.
    pub min_free_mib: u64,
    pub s3: S3Config,
}

/// A secret config value: never shown by `Debug` (so never in logs).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "\"<redacted>\""
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// S3 endpoint URL, e.g. https://s3.us-chi1.upcloudobjects.com.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    /// Path-style addressing (endpoint/bucket/key) instead of bucket.endpoint/key.
    pub path_style: bool,
    pub access_key: String,
    /// Prefer `secret_key_file` or ATCR_STORAGE_S3_SECRET_KEY over writing it here.
    pub secret_key: Secret,
    /// A file whose content (trimmed) is the secret key.
    pub secret_key_file: PathBuf,
    /// Key prefix (distribution's layout is docker/registry/v2).
    pub prefix: String,
    /// Host that replaces the S3 host in presigned URLs (a CDN pull zone in front of S3).
    pub cdn_host: String,
    /// Lifetime of presigned GET URLs, seconds.
    pub presign_secs: u32,
    /// Multipart part size in MiB (5..=512): the memory one upload may hold is twice this.
    pub part_size_mib: usize,
    /// Create the bucket on start if missing (handy for tests and fresh buckets).
    pub create_bucket: bool,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint: String::new(),
            region: "us-east-1".into(),
            bucket: String::new(),
            path_style: true,
            access_key: String::new(),
            secret_key: Secret::default(),
            secret_key_file: PathBuf::new(),
            prefix: "docker/registry/v2".into(),
            cdn_host: String::new(),
            presign_secs: 1200,
            part_size_mib: 16,
            create_bucket: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    pub max_manifest_bytes: usize,
    /// Upload sessions older than this are removed, however active.
    pub upload_ttl_secs: u64,
    /// Upload sessions no request touched for this many minutes are removed.
    pub upload_idle_minutes: u64,
    /// Seconds between sweeps for expired upload sessions.
    pub upload_cleanup_secs: u64,
    /// Open upload sessions one identity may hold (registry and hold API each).
    pub max_uploads_per_identity: usize,
    /// Open upload sessions one client address may hold (registry and hold API each).
    pub max_uploads_per_address: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `atproto`: Docker token auth with ATProto app passwords. `local`: no authentication
    /// at all, pushes indexed under the name's first segment as a local owner, for trying
    /// atcr on one machine (`none` is the older name of the same mode).
    pub mode: String,
    /// Token service name (`iss`/`aud`); empty: the host of `server.public_url` or request.
    pub service: String,
    /// Lifetime of registry tokens, in seconds.
    pub token_ttl_secs: u64,
    /// Failed logins per address + identity (the resolved DID) in the window, then 429.
    pub max_failed_logins: u64,
    /// Failed logins per address over all identities in the window.
    pub max_failed_logins_per_address: u64,
    /// Failed logins per identity from all addresses after which addresses that failed for
    /// it are slowed down (one attempt per 10 s, doubling to 15 min); clean addresses never.
    pub identity_backstop: u64,
    /// The window of the failed-login limits, in seconds.
    pub failed_login_window_secs: u64,
    /// How long an accepted app password reuses its PDS session instead of a new
    /// `createSession`, in seconds (0: never).
    pub session_reuse_secs: u64,
    /// How often a reused session is confirmed alive at the PDS (`refreshSession`), in
    /// seconds (0: at every reuse).
    pub session_revalidate_secs: u64,
    /// ATProto OAuth sign-in for the web UI (needs an https `server.public_url`).
    pub oauth: bool,
    /// OAuth scopes asked for.
    pub oauth_scope: String,
    /// The name the PDS's consent page shows.
    pub client_name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// PLC directory for did:plc documents.
    pub plc_url: String,
    /// Optional `com.atproto.identity.resolveHandle` service, tried after DNS and HTTPS.
    pub handle_resolver: String,
    /// How long resolved handles and DID documents are cached, in seconds.
    pub cache_ttl_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter (`info`, `atcr=debug,hyper=info`); RUST_LOG wins when set.
    pub level: String,
    /// `auto` (the journal's native protocol under systemd, else text), `text`, `json`
    /// (one JSON object per line) or `journald`.
    pub format: String,
}

/// `/metrics` in the Prometheus text format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics`.
    pub enabled: bool,
    /// When set, scrapes must send `Authorization: Bearer <token>`.
    pub token: Secret,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            token: Secret::default(),
        }
    }
}

/// The hold: blob storage with its embedded ATProto PDS (`did:web:<public host>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HoldConfig {
    /// Run the hold in this process.
    pub enabled: bool,
    /// Host (and port) of the hold's did:web; empty: from server.public_url, else the
    /// listen address (`localhost` for loopback/unspecified addresses).
    pub public_host: String,
    /// DID of the captain (owner). Empty: the hold is its own captain until one is set.
    pub owner_did: String,
    /// Anonymous blob reads allowed.
    pub public: bool,
    /// Any authenticated user may join the crew with `requestCrew`.
    pub allow_all_crew: bool,
    /// Announce pushes as Bluesky posts from the hold's account.
    pub enable_bluesky_posts: bool,
    /// Storage tiers in rank order, `name=size` separated by commas (units B/KB/MB/GB/TB/PB,
    /// 1024-based). Empty: no quotas. The captain is never limited.
    pub tiers: String,
    /// Tier of crew members whose record names none (or an unknown one).
    pub default_tier: String,
    /// Region of the hold's storage (captain record `region`); empty: the S3 region when
    /// the blobs are on S3.
    pub region: String,
    /// DID of the hold that replaces this one (captain record `successor`); empty: none
    /// from the config.
    pub successor: String,
}

/// The AppView's side of federation: which hold a push goes to when the pusher's sailor
/// profile names none, and the limits of calls to remote holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FederationConfig {
    /// DID of the default hold (`did:web:` or `did:plc:`); empty: the hold in this process.
    pub default_hold_did: String,
    /// Seconds a user's `io.atcr.sailor.profile` (its `defaultHold`) stays cached.
    pub profile_cache_secs: u64,
    /// Seconds a hold's endpoint (from its DID document) stays cached.
    pub hold_cache_secs: u64,
    /// Let hold endpoints be plain http on loopback or private addresses (tests, a LAN).
    pub allow_private_addresses: bool,
}

impl Default for FederationConfig {
    fn default() -> Self {
        FederationConfig {
            default_hold_did: String::new(),
            profile_cache_secs: 60,
            hold_cache_secs: 300,
            allow_private_addresses: false,
        }
    }
}

/// The vulnerability scanner the hold runs on pushed images (`src/scan/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScanConfig {
    /// Scan pushed images (SBOM + vulnerabilities) and write `io.atcr.hold.scan` records.
    pub enabled: bool,
    /// Scan worker threads (each at nice 10, idle I/O class).
    pub workers: usize,
    /// Scans waiting at most; a push beyond that gets a `skipped` record.
    pub queue_size: usize,
    /// OSV export archives downloaded every `vulndb_refresh_hours`, e.g.
    /// `https://osv-vulnerabilities.storage.googleapis.com/Debian/all.zip`. Empty: only
    /// `atcr vulndb import` updates the database.
    pub vulndb_urls: Vec<String>,
    /// Hours between downloads of `vulndb_urls` (0: never).
    pub vulndb_refresh_hours: u64,
    /// The database directory; empty means `<data_dir>/vulndb`.
    pub vulndb_dir: PathBuf,
    /// Decompressed MiB of one layer (decompression bombs stop the scan here).
    pub max_layer_mib: u64,
    /// Decompressed MiB of a whole image.
    pub max_image_mib: u64,
    /// Files (tar entries) of a whole image.
    pub max_entries: u64,
    /// MiB of one package database, lockfile or metadata file read into memory.
    pub max_file_mib: u64,
    /// MiB of one executable or Java archive scanned for embedded packages.
    pub max_binary_mib: u64,
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig {
            enabled: true,
            workers: 1,
            queue_size: 256,
            vulndb_urls: Vec::new(),
            vulndb_refresh_hours: 24,
            vulndb_dir: PathBuf::new(),
            max_layer_mib: 8 * 1024,
            max_image_mib: 16 * 1024,
            max_entries: 2_000_000,
            max_file_mib: 64,
            max_binary_mib: 1024,
        }
    }
}

impl ScanConfig {
    /// The walker's caps.
    pub fn limits(&self) -> crate::scan::walk::Limits {
        crate::scan::walk::Limits {
            max_layer_bytes: self.max_layer_mib << 20,
            max_image_bytes: self.max_image_mib << 20,
            max_entries: self.max_entries,
            max_file_bytes: self.max_file_mib << 20,
            max_binary_bytes: self.max_binary_mib << 20,
            ..crate::scan::walk::Limits::default()
        }
    }
}

/// The index (users, repositories, tags, stars, search): a libSQL file, optionally an
/// embedded replica of a remote primary, fed by direct writes and the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IndexConfig {
    /// The local database file; empty means `<data_dir>/index.db`.
    pub path: PathBuf,
    /// libSQL primary (Turso / libsql-server, `libsql://`, `https://` or `http://`); empty:
    /// a purely local index.
    pub primary_url: String,
    /// Token for `primary_url`.
    pub auth_token: Secret,
    /// A file holding the token instead (re-read when the primary refuses it and on
    /// SIGHUP, so a rotated token needs no restart).
    pub auth_token_file: PathBuf,
    /// Seconds between embedded-replica syncs (one sync always runs at start).
    pub sync_interval_secs: u64,
    /// `com.atproto.sync.subscribeRepos` endpoints to ingest (`ws://` / `wss://` base URLs of
    /// a relay or PDS).
    pub firehose: Vec<String>,
    /// PDS or relay base URLs (`http(s)://`) whose repositories `atcr index backfill` lists.
    pub backfill_hosts: Vec<String>,
    /// Backfill at start when the index has no repositories.
    pub backfill_when_empty: bool,
    /// Largest firehose frame accepted (bytes); larger frames are skipped.
    pub max_frame_bytes: usize,
}

/// `atcr backup` (and the appliance's daily `atcr-backup.timer`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupConfig {
    /// Where backups go when `atcr backup` is given no target: an absolute directory or
    /// `s3://bucket/prefix`. Empty: none (the timer then does nothing).
    pub target: String,
    /// Backups kept at the target; older ones are deleted after a successful backup. 0: all.
    pub keep: u32,
    /// The S3 service of `s3://` targets.
    pub s3: BackupS3Config,
}

/// Connection of an `s3://` backup target; an empty endpoint means `[storage.s3]`'s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupS3Config {
    pub endpoint: String,
    pub region: String,
    pub path_style: bool,
    pub access_key: String,
    pub secret_key: Secret,
    /// A file whose content (trimmed) is the secret key.
    pub secret_key_file: PathBuf,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            target: String::new(),
            keep: 7,
            s3: BackupS3Config::default(),
        }
    }
}

impl Default for BackupS3Config {
    fn default() -> Self {
        BackupS3Config {
            endpoint: String::new(),
            region: "us-east-1".into(),
            path_style: true,
            access_key: String::new(),
            secret_key: Secret::default(),
            secret_key_file: PathBuf::new(),
        }
    }
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            path: PathBuf::new(),
            primary_url: String::new(),
            auth_token: Secret::default(),
            auth_token_file: PathBuf::new(),
            sync_interval_secs: 60,
            firehose: Vec::new(),
            backfill_hosts: Vec::new(),
            backfill_when_empty: true,
            max_frame_bytes: 4 << 20,
        }
    }
}

impl Default for HoldConfig {
    fn default() -> Self {
        HoldConfig {
            enabled: true,
            public_host: String::new(),
            owner_did: String::new(),
            public: true,
            allow_all_crew: false,
            enable_bluesky_posts: false,
            tiers: "deckhand=5GB, bosun=50GB, quartermaster=100GB".into(),
            default_tier: "deckhand".into(),
            region: String::new(),
            successor: String::new(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "0.0.0.0:5000".into(),
            public_url: String::new(),
            data_dir: default_data_dir(),
            max_connections: 1024,
            max_connections_per_address: 128,
            per_address_exempt: vec!["127.0.0.0/8".into(), "::1".into()],
            protocol_timeout_secs: 5,
            header_timeout_secs: 10,
            keepalive_timeout_secs: 30,
            min_transfer_rate: 1024,
            transfer_window_secs: 10,
            http2_max_streams: 100,
            http2_ping_secs: 20,
            shutdown_grace_secs: 30,
        }
    }
}

/// `/var/lib/atcr` (via `$STATE_DIRECTORY`) under systemd, `./data` when run by hand.
fn default_data_dir() -> PathBuf {
    match std::env::var_os("STATE_DIRECTORY") {
        Some(dirs) => PathBuf::from(
            dirs.to_string_lossy()
                .split(':')
                .next()
                .unwrap_or("/var/lib/atcr"),
        ),
        None => PathBuf::from("./data"),
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: "filesystem".into(),
            root: PathBuf::new(),
            min_free_mib: 1024,
            s3: S3Config::default(),
        }
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            max_manifest_bytes: crate::oci::types::manifest::DEFAULT_MAX_MANIFEST_BYTES,
            upload_ttl_secs: 24 * 3600,
            upload_idle_minutes: 30,
            upload_cleanup_secs: 60,
            max_uploads_per_identity: 64,
            max_uploads_per_address: 128,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: "atproto".into(),
            service: String::new(),
            token_ttl_secs: 300,
            max_failed_logins: 5,
            max_failed_logins_per_address: 20,
            identity_backstop: 30,
            failed_login_window_secs: 300,
            session_reuse_secs: 86400,
            session_revalidate_secs: 900,
            oauth: true,
            oauth_scope: "atproto transition:generic".into(),
            client_name: "atcr".into(),
        }
    }
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            plc_url: "https://plc.directory".into(),
            handle_resolver: String::new(),
            cache_ttl_secs: 600,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: "auto".into(),
        }
    }
}

impl Config {
    /// A config for tests and benches: loopback on an ephemeral port, data under `dir`.
    pub fn for_data_dir(dir: &Path) -> Config {
        let mut c = Config::default();
        c.server.listen = "127.0.0.1:0".into();
        c.server.data_dir = dir.to_path_buf();
        c.auth.mode = "none".into();
        c
    }

    /// Load from an optional file, apply `ATCR_*` overrides from `env`, validate.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (mut value, source) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError::Read {
                    path: p.to_path_buf(),
                    source: e,
                })?;
                let v: toml::Table =
                    text.parse()
                        .map_err(|e: toml::de::Error| ConfigError::Parse {
                            path: p.display().to_string(),
                            message: e.to_string(),
                        })?;
                (v, p.display().to_string())
            }
            None => (toml::Table::new(), "(defaults)".to_string()),
        };
        let warnings = apply_env(&mut value, env)?;
        let mut config: Config =
            toml::Value::Table(value)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: source,
                    message: e.to_string(),
                })?;
        config.validate()?;
        config.warnings = warnings;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: String| Err(ConfigError::Invalid { key, message });
        if self.server.listen.parse::<SocketAddr>().is_err() {
            return invalid(
                "server.listen",
                format!("{:?} is not an address:port", self.server.listen),
            );
        }
        if !self.server.public_url.is_empty() {
            let u = &self.server.public_url;
            let ok = (u.starts_with("http://") || u.starts_with("https://"))
                && u.split("://")
                    .nth(1)
                    .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'));
            if !ok {
                return invalid(
                    "server.public_url",
                    format!("{u:?} must look like https://host[:port] with no path"),
                );
            }
        }
        if self.server.data_dir.as_os_str().is_empty() {
            return invalid("server.data_dir", "must not be empty".into());
        }
        if self.server.max_connections == 0 {
            return invalid("server.max_connections", "must be at least 1".into());
        }
        for cidr in &self.server.per_address_exempt {
            if Cidr::parse(cidr).is_none() {
                return invalid(
                    "server.per_address_exempt",
                    format!("{cidr:?} is not an IP address or CIDR block (10.0.0.0/8, ::1)"),
                );
            }
        }
        for (key, value) in [
            (
                "server.protocol_timeout_secs",
                self.server.protocol_timeout_secs,
            ),
            (
                "server.header_timeout_secs",
                self.server.header_timeout_secs,
            ),
            (
                "server.keepalive_timeout_secs",
                self.server.keepalive_timeout_secs,
            ),
            (
                "server.transfer_window_secs",
                self.server.transfer_window_secs,
            ),
            (
                "registry.upload_idle_minutes",
                self.registry.upload_idle_minutes,
            ),
            (
                "registry.upload_cleanup_secs",
                self.registry.upload_cleanup_secs,
            ),
        ] {
            if !(1..=86400).contains(&value) {
                return invalid(key, format!("{value} is outside 1..=86400"));
            }
        }
        if self.server.http2_max_streams == 0 {
            return invalid("server.http2_max_streams", "must be at least 1".into());
        }
        if self.registry.max_uploads_per_identity == 0 {
            return invalid(
                "registry.max_uploads_per_identity",
                "must be at least 1".into(),
            );
        }
        if self.registry.max_uploads_per_address == 0 {
            return invalid(
                "registry.max_uploads_per_address",
                "must be at least 1".into(),
            );
        }
        match self.storage.backend.as_str() {
            "filesystem" => {}
            "s3" => {
                let s3 = &self.storage.s3;
                if !(s3.endpoint.starts_with("http://") || s3.endpoint.starts_with("https://")) {
                    return invalid(
                        "storage.s3.endpoint",
                        format!("{:?} must be an http(s) URL", s3.endpoint),
                    );
                }
                if s3.bucket.is_empty() {
                    return invalid(
                        "storage.s3.bucket",
                        "must be set when storage.backend is s3".into(),
                    );
                }
                if s3.access_key.is_empty() {
                    return invalid(
                        "storage.s3.access_key",
                        "must be set when storage.backend is s3".into(),
                    );
                }
                if s3.secret_key.0.is_empty() && s3.secret_key_file.as_os_str().is_empty() {
                    return invalid(
                        "storage.s3.secret_key",
                        "set it, or storage.s3.secret_key_file".into(),
                    );
                }
                if !(5..=512).contains(&s3.part_size_mib) {
                    return invalid(
                        "storage.s3.part_size_mib",
                        format!("{} is outside 5..=512", s3.part_size_mib),
                    );
                }
                if !(1..=7 * 24 * 3600).contains(&s3.presign_secs) {
                    return invalid("storage.s3.presign_secs", "must be 1..=604800".into());
                }
            }
            other => {
                return invalid(
                    "storage.backend",
                    format!("{other:?} is not a known backend (filesystem, s3)"),
                )
            }
        }
        let m = self.registry.max_manifest_bytes;
        if !(1024..=64 * 1024 * 1024).contains(&m) {
            return invalid(
                "registry.max_manifest_bytes",
                format!("{m} is outside 1 KiB..64 MiB"),
            );
        }
        if self.registry.upload_ttl_secs < 60 {
            return invalid("registry.upload_ttl_secs", "must be at least 60".into());
        }
        if !matches!(self.auth.mode.as_str(), "local" | "none" | "atproto") {
            return invalid(
                "auth.mode",
                format!(
                    "{:?} is not a known mode (atproto, or local to run without accounts)",
                    self.auth.mode
                ),
            );
        }
        if !(10..=86400).contains(&self.auth.token_ttl_secs) {
            return invalid("auth.token_ttl_secs", "must be within 10..86400".into());
        }
        if self.auth.max_failed_logins == 0 {
            return invalid("auth.max_failed_logins", "must be at least 1".into());
        }
        if self.auth.max_failed_logins_per_address < self.auth.max_failed_logins {
            return invalid(
                "auth.max_failed_logins_per_address",
                "must be at least auth.max_failed_logins".into(),
            );
        }
        if self.auth.identity_backstop == 0 {
            return invalid("auth.identity_backstop", "must be at least 1".into());
        }
        if !(10..=86400).contains(&self.auth.failed_login_window_secs) {
            return invalid(
                "auth.failed_login_window_secs",
                "must be within 10..86400".into(),
            );
        }
        if self.auth.session_reuse_secs > 30 * 86400 {
            return invalid("auth.session_reuse_secs", "must be at most 30 days".into());
        }
        if self.auth.session_revalidate_secs > 86400 {
            return invalid(
                "auth.session_revalidate_secs",
                "must be at most 86400".into(),
            );
        }
        if !self.auth.oauth_scope.split(' ').any(|s| s == "atproto") {
            return invalid("auth.oauth_scope", "must include \"atproto\"".into());
        }
        let url_ok = |u: &str| u.starts_with("http://") || u.starts_with("https://");
        if !url_ok(&self.identity.plc_url) {
            return invalid(
                "identity.plc_url",
                format!("{:?} must be an http(s) URL", self.identity.plc_url),
            );
        }
        if !self.identity.handle_resolver.is_empty() && !url_ok(&self.identity.handle_resolver) {
            return invalid(
                "identity.handle_resolver",
                format!("{:?} must be an http(s) URL", self.identity.handle_resolver),
            );
        }
        self.validate_hold()?;
        self.validate_federation()?;
        self.validate_index()?;
        self.validate_observability()?;
        self.validate_scan()?;
        self.validate_backup()?;
        Ok(())
    }

    fn validate_backup(&self) -> Result<(), ConfigError> {
        let t = &self.backup.target;
        if t.is_empty() {
            return Ok(());
        }
        if let Err(message) = self.backup_target_checked(t) {
            return Err(ConfigError::Invalid {
                key: "backup.target",
                message,
            });
        }
        if !t.starts_with("s3://") && !Path::new(t).is_absolute() {
            return Err(ConfigError::Invalid {
                key: "backup.target",
                message: format!("{t:?} must be an absolute directory or s3://bucket/prefix"),
            });
        }
        Ok(())
    }

    /// Check a backup target (`backup.target` or the `atcr backup` argument): a directory, or
    /// `s3://bucket[/prefix]` with an S3 service to reach it (`[backup.s3]` or `[storage.s3]`).
    pub fn backup_target_checked(&self, target: &str) -> Result<(), String> {
        let Some(rest) = target.strip_prefix("s3://") else {
            return if target.trim().is_empty() {
                Err("empty backup target".into())
            } else {
                Ok(())
            };
        };
        let bucket = rest.split('/').next().unwrap_or_default();
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        if !bucket_ok {
            return Err(format!("{target:?}: {bucket:?} is not an S3 bucket name"));
        }
        if rest.split('/').skip(1).any(|seg| seg == "..") {
            return Err(format!("{target:?}: the prefix must not contain .."));
        }
        let own = &self.backup.s3;
        if own.endpoint.is_empty() {
            if self.storage.backend != "s3" {
                return Err(format!(
                    "{target:?} needs backup.s3.endpoint and its keys (or an s3 blob store to borrow them from)"
                ));
            }
        } else if !(own.endpoint.starts_with("http://") || own.endpoint.starts_with("https://")) {
            return Err(format!(
                "backup.s3.endpoint {:?} must be an http(s) URL",
                own.endpoint
            ));
        } else if own.access_key.is_empty()
            || (own.secret_key.0.is_empty() && own.secret_key_file.as_os_str().is_empty())
        {
            return Err(
                "backup.s3.access_key and backup.s3.secret_key (or secret_key_file) must be set"
                    .into(),
            );
        }
        Ok(())
    }

    fn validate_observability(&self) -> Result<(), ConfigError> {
        if !matches!(
            self.log.format.as_str(),
            "auto" | "text" | "json" | "journald"
        ) {
            return Err(ConfigError::Invalid {
                key: "log.format",
                message: format!(
                    "{:?} is not a known format (auto, text, json, journald)",
                    self.log.format
                ),
            });
        }
        Ok(())
    }

    fn validate_scan(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: String| Err(ConfigError::Invalid { key, message });
        let sc = &self.scan;
        if !(1..=64).contains(&sc.workers) {
            return invalid("scan.workers", "must be within 1..=64".into());
        }
        if !(1..=100_000).contains(&sc.queue_size) {
            return invalid("scan.queue_size", "must be within 1..=100000".into());
        }
        for u in &sc.vulndb_urls {
            if !(u.starts_with("https://") || u.starts_with("http://")) {
                return invalid("scan.vulndb_urls", format!("{u:?} must be an http(s) URL"));
            }
        }
        for (key, v) in [
            ("scan.max_layer_mib", sc.max_layer_mib),
            ("scan.max_image_mib", sc.max_image_mib),
            ("scan.max_file_mib", sc.max_file_mib),
            ("scan.max_binary_mib", sc.max_binary_mib),
        ] {
            if !(1..=1 << 30).contains(&v) {
                return invalid(key, format!("{v} is outside 1..=1073741824"));
            }
        }
        if sc.max_entries == 0 {
            return invalid("scan.max_entries", "must be at least 1".into());
        }
        Ok(())
    }

    /// The vulnerability database directory.
    pub fn vulndb_dir(&self) -> PathBuf {
        if self.scan.vulndb_dir.as_os_str().is_empty() {
            self.server.data_dir.join("vulndb")
        } else {
            self.scan.vulndb_dir.clone()
        }
    }

    fn validate_index(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: String| Err(ConfigError::Invalid { key, message });
        let ix = &self.index;
        let u = &ix.primary_url;
        if !u.is_empty() {
            if !["libsql://", "https://", "http://"]
                .iter()
                .any(|p| u.starts_with(p))
            {
                return invalid(
                    "index.primary_url",
                    format!("{u:?} must start with libsql://, https:// or http://"),
                );
            }
            if ix.sync_interval_secs == 0 {
                return invalid("index.sync_interval_secs", "must be at least 1".into());
            }
            if !ix.auth_token.0.is_empty() && !ix.auth_token_file.as_os_str().is_empty() {
                return invalid(
                    "index.auth_token_file",
                    "set either index.auth_token or index.auth_token_file, not both".into(),
                );
            }
        }
        for f in &ix.firehose {
            if !(f.starts_with("ws://") || f.starts_with("wss://")) {
                return invalid(
                    "index.firehose",
                    format!("{f:?} must start with ws:// or wss://"),
                );
            }
        }
        for h in &ix.backfill_hosts {
            if !(h.starts_with("http://") || h.starts_with("https://")) {
                return invalid(
                    "index.backfill_hosts",
                    format!("{h:?} must start with http:// or https://"),
                );
            }
        }
        if ix.max_frame_bytes < 1024 {
            return invalid("index.max_frame_bytes", "must be at least 1024".into());
        }
        Ok(())
    }

    /// The index database file.
    pub fn index_path(&self) -> PathBuf {
        if self.index.path.as_os_str().is_empty() {
            self.server.data_dir.join("index.db")
        } else {
            self.index.path.clone()
        }
    }

    fn validate_federation(&self) -> Result<(), ConfigError> {
        let d = &self.federation.default_hold_did;
        if !d.is_empty()
            && (crate::atproto::repo::syntax::validate_did(d).is_err()
                || !(d.starts_with("did:web:") || d.starts_with("did:plc:")))
        {
            return Err(ConfigError::Invalid {
                key: "federation.default_hold_did",
                message: format!("{d:?} is not a did:web or did:plc DID"),
            });
        }
        Ok(())
    }

    fn validate_hold(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: String| Err(ConfigError::Invalid { key, message });
        let h = &self.hold.public_host;
        if !h.is_empty() {
            let (name, port) = match h.rsplit_once(':') {
                Some((n, p)) => (n, Some(p)),
                None => (h.as_str(), None),
            };
            let name_ok = !name.is_empty()
                && name.len() <= 253
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
            let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
            if !name_ok || !port_ok {
                return invalid(
                    "hold.public_host",
                    format!(
                        "{h:?} must be a host name with an optional :port (no scheme, no path)"
                    ),
                );
            }
        }
        let o = &self.hold.owner_did;
        if !o.is_empty() {
            let ok = o.len() <= 2048
                && o.strip_prefix("did:")
                    .and_then(|rest| rest.split_once(':'))
                    .is_some_and(|(method, id)| {
                        !method.is_empty()
                            && method.bytes().all(|b| b.is_ascii_lowercase())
                            && !id.is_empty()
                            && !id.ends_with(':')
                            && id
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b".-_:%".contains(&b))
                    });
            if !ok {
                return invalid("hold.owner_did", format!("{o:?} is not a DID"));
            }
            // did:plc identifiers are exactly 24 base32 characters; this also catches an
            // unreplaced template placeholder before the hold adopts it as captain.
            if let Some(id) = o.strip_prefix("did:plc:") {
                let plc_ok = id.len() == 24
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b));
                if !plc_ok {
                    return invalid(
                        "hold.owner_did",
                        format!("{o:?} is not a did:plc (24 base32 characters)"),
                    );
                }
            }
        }
        if let Err(e) = crate::hold::quota::Tiers::parse(&self.hold.tiers, &self.hold.default_tier)
        {
            return invalid("hold.tiers", e.0);
        }
        if self.hold.region.len() > 64 {
            return invalid("hold.region", "at most 64 characters".into());
        }
        let successor = &self.hold.successor;
        if !successor.is_empty() {
            if let Err(e) = crate::atproto::repo::syntax::validate_did(successor) {
                return invalid("hold.successor", format!("{successor:?} is not a DID: {e}"));
            }
        }
        Ok(())
    }

    /// The region the hold publishes in its captain record: `hold.region`, else the S3
    /// region when the blobs are on S3, else none.
    pub fn hold_region(&self) -> String {
        if !self.hold.region.is_empty() {
            self.hold.region.clone()
        } else if self.storage.backend == "s3" {
            self.storage.s3.region.clone()
        } else {
            String::new()
        }
    }

    /// Local mode (`auth.mode = "local"`, or its older name `none`): no authentication.
    pub fn local_mode(&self) -> bool {
        matches!(self.auth.mode.as_str(), "local" | "none")
    }

    /// `atcr serve --local`: local mode, on loopback unless the listen address was chosen
    /// (in the file, or `listen_from_env`).
    pub fn use_local_mode(&mut self, listen_from_env: bool) {
        self.auth.mode = "local".into();
        if !listen_from_env && self.server.listen == ServerConfig::default().listen {
            self.server.listen = "127.0.0.1:5000".into();
        }
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.server.listen.parse().expect("validated")
    }

    /// The S3 secret, from the config value or its file.
    pub fn s3_secret_key(&self) -> Result<String, ConfigError> {
        let s3 = &self.storage.s3;
        if !s3.secret_key.0.is_empty() {
            return Ok(s3.secret_key.0.clone());
        }
        std::fs::read_to_string(&s3.secret_key_file)
            .map(|s| s.trim().to_string())
            .map_err(|e| ConfigError::Invalid {
                key: "storage.s3.secret_key_file",
                message: format!("cannot read {}: {e}", s3.secret_key_file.display()),
            })
    }

    /// The resolved configuration as TOML with secrets masked (`config check`).
    pub fn to_redacted_toml(&self) -> String {
        let mut c = self.clone();
        if !c.storage.s3.secret_key.0.is_empty() {
            c.storage.s3.secret_key = Secret("<redacted>".into());
        }
        if !c.metrics.token.0.is_empty() {
            c.metrics.token = Secret("<redacted>".into());
        }
        if !c.index.auth_token.0.is_empty() {
            c.index.auth_token = Secret("<redacted>".into());
        }
        if !c.backup.s3.secret_key.0.is_empty() {
            c.backup.s3.secret_key = Secret("<redacted>".into());
        }
        toml::to_string_pretty(&c).unwrap_or_default()
    }

    pub fn blob_root(&self) -> PathBuf {
        if self.storage.root.as_os_str().is_empty() {
            self.server.data_dir.join("blobs")
        } else {
            self.storage.root.clone()
        }
    }
}

/// An IP address block from the config (`10.0.0.0/8`, `::1`; a bare address is one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: std::net::IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().ok()?)),
            None => (s.trim(), None),
        };
        let net: std::net::IpAddr = addr.parse().ok()?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr { net, prefix })
    }

    /// Whether `ip` is in the block (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        let (a, b, bits) = match (self.net, ip) {
            (std::net::IpAddr::V4(n), std::net::IpAddr::V4(i)) => {
                (u32::from(n) as u128, u32::from(i) as u128, 32)
            }
            (std::net::IpAddr::V6(n), std::net::IpAddr::V6(i)) => {
                (u128::from(n), u128::from(i), 128)
            }
            _ => return false,
        };
        let shift = bits - self.prefix as u32;
        shift >= bits || (a >> shift) == (b >> shift)
    }
}

/// Leaf paths of the default config, keyed by their environment variable name.
fn env_keys() -> BTreeMap<String, (Vec<String>, toml::Value)> {
    fn walk(
        prefix: &mut Vec<String>,
        v: &toml::Value,
        out: &mut BTreeMap<String, (Vec<String>, toml::Value)>,
    ) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    prefix.push(k.clone());
                    walk(prefix, v, out);
                    prefix.pop();
                }
            }
            leaf => {
                let var = format!("ATCR_{}", prefix.join("_").to_uppercase());
                out.insert(var, (prefix.clone(), leaf.clone()));
            }
        }
    }
    let mut out = BTreeMap::new();
    let defaults = toml::Value::try_from(Config::default()).expect("defaults serialize");
    walk(&mut Vec::new(), &defaults, &mut out);
    out
}

/// Apply `ATCR_*` overrides. Unknown `ATCR_*` names are returned as warnings (scripts export
/// their own ATCR_-prefixed variables), so a typo is visible without stopping the service.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<String>, ConfigError> {
    let mut warnings = Vec::new();
    let keys = env_keys();
    for (var, raw) in env {
        if !var.starts_with("ATCR_") || var.starts_with("ATCR_TEST_") {
            continue;
        }
        let Some((path, default)) = keys.get(&var) else {
            warnings.push(format!("ignoring environment variable {var}: not a configuration key (see `atcr config init -`)"));
            continue;
        };
        let err = |m: &str| ConfigError::Env {
            var: var.clone(),
            message: m.to_string(),
        };
        let value = match default {
            toml::Value::Integer(_) => {
                toml::Value::Integer(raw.trim().parse().map_err(|_| err("expected an integer"))?)
            }
            toml::Value::Boolean(_) => toml::Value::Boolean(match raw.trim() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => return Err(err("expected true or false")),
            }),
            toml::Value::Float(_) => {
                toml::Value::Float(raw.trim().parse().map_err(|_| err("expected a number"))?)
            }
            // Lists of strings: comma-separated.
            toml::Value::Array(_) => toml::Value::Array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_string()))
                    .collect(),
            ),
            _ => toml::Value::String(raw),
        };
        let mut cur = &mut *table;
        for seg in &path[..path.len() - 1] {
            let entry = cur
                .entry(seg.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            cur = entry
                .as_table_mut()
                .ok_or_else(|| err("its section is not a table in the config file"))?;
        }
        cur.insert(path[path.len() - 1].clone(), value);
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn cidr_blocks() {
        let lo = Cidr::parse("127.0.0.0/8").unwrap();
        assert!(lo.contains("127.0.0.2".parse().unwrap()));
        assert!(
            lo.contains("::ffff:127.0.0.1".parse().unwrap()),
            "v4-mapped"
        );
        assert!(!lo.contains("128.0.0.1".parse().unwrap()));
        assert!(!lo.contains("::1".parse().unwrap()));
        let one = Cidr::parse("::1").unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        assert!(!one.contains("::2".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        for bad in ["", "10.0.0.0/33", "example.com", "10.0.0.0/x"] {
            assert!(Cidr::parse(bad).is_none(), "{bad}");
        }
        let e = Config::load(
            None,
            env(&[("ATCR_SERVER_PER_ADDRESS_EXEMPT", "10.0.0.0/40")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("server.per_address_exempt"), "{e}");
        let e = Config::load(None, env(&[("ATCR_SERVER_HEADER_TIMEOUT_SECS", "0")])).unwrap_err();
        assert!(e.to_string().contains("server.header_timeout_secs"), "{e}");
    }

    #[test]
    fn default_template_matches_defaults() {
        let parsed: Config = toml::from_str(DEFAULT_CONFIG_TOML).expect("template parses");
        let mut expected = Config::default();
        expected.server.data_dir = parsed.server.data_dir.clone();
        assert_eq!(parsed, expected);
    }

    #[test]
    fn index_section_env_lists_and_validation() {
        let c = Config::load(
            None,
            env(&[
                (
                    "ATCR_INDEX_FIREHOSE",
                    "ws://127.0.0.1:2583, wss://relay.example",
                ),
                ("ATCR_INDEX_BACKFILL_HOSTS", "http://127.0.0.1:2583"),
                ("ATCR_INDEX_AUTH_TOKEN", "zq-secret-9"),
                ("ATCR_INDEX_PRIMARY_URL", "libsql://db.example.turso.io"),
            ]),
        )
        .unwrap();
        assert_eq!(
            c.index.firehose,
            ["ws://127.0.0.1:2583", "wss://relay.example"]
        );
        assert_eq!(c.index.backfill_hosts, ["http://127.0.0.1:2583"]);
        assert!(
            !format!("{:?}", c.index).contains("zq-secret-9"),
            "token shown by Debug"
        );
        assert_eq!(c.index_path(), c.server.data_dir.join("index.db"));
        let shown = c.to_redacted_toml();
        assert!(
            shown.contains("<redacted>") && !shown.contains("zq-secret-9"),
            "{shown}"
        );
        for (var, value, key) in [
            ("ATCR_INDEX_FIREHOSE", "http://x", "index.firehose"),
            (
                "ATCR_INDEX_BACKFILL_HOSTS",
                "ws://x",
                "index.backfill_hosts",
            ),
            ("ATCR_INDEX_PRIMARY_URL", "ftp://x", "index.primary_url"),
            ("ATCR_INDEX_MAX_FRAME_BYTES", "10", "index.max_frame_bytes"),
        ] {
            let e = Config::load(None, env(&[(var, value)])).unwrap_err();
            assert!(e.to_string().contains(key), "{var}={value}: {e}");
        }
    }

    #[test]
    fn env_overrides_and_errors() {
        let c = Config::load(
            None,
            env(&[
                ("ATCR_SERVER_LISTEN", "127.0.0.1:7000"),
                ("ATCR_SERVER_MAX_CONNECTIONS", "5"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:7000");
        assert_eq!(c.server.max_connections, 5);
        let e = Config::load(None, env(&[("ATCR_SERVER_MAX_CONNECTIONS", "many")])).unwrap_err();
        assert!(e.to_string().contains("ATCR_SERVER_MAX_CONNECTIONS"), "{e}");
        let c = Config::load(None, env(&[("ATCR_SERVR_LISTEN", "x")])).unwrap();
        assert!(
            c.warnings.iter().any(|w| w.contains("ATCR_SERVR_LISTEN")),
            "{:?}",
            c.warnings
        );
        let e = Config::load(None, env(&[("ATCR_SERVER_LISTEN", "nope")])).unwrap_err();
        assert!(e.to_string().contains("server.listen"), "{e}");
        assert!(Config::load(None, env(&[("ATCR_TEST_ANYTHING", "x"), ("PATH", "/bin")])).is_ok());
    }

    #[test]
    fn hold_section_env_and_validation() {
        let c = Config::load(
            None,
            env(&[
                ("ATCR_HOLD_OWNER_DID", "did:plc:ewvi7nxzyoun6zhxrhs64oiz"),
                ("ATCR_HOLD_PUBLIC", "false"),
                ("ATCR_HOLD_PUBLIC_HOST", "hold.example.com:8443"),
            ]),
        )
        .unwrap();
        assert_eq!(c.hold.owner_did, "did:plc:ewvi7nxzyoun6zhxrhs64oiz");
        assert!(!c.hold.public && c.hold.enabled && !c.hold.allow_all_crew);
        for (var, val, key) in [
            ("ATCR_HOLD_OWNER_DID", "alice.bsky.social", "hold.owner_did"),
            ("ATCR_HOLD_OWNER_DID", "did:plc:", "hold.owner_did"),
            (
                "ATCR_HOLD_PUBLIC_HOST",
                "https://hold.example.com",
                "hold.public_host",
            ),
            (
                "ATCR_HOLD_PUBLIC_HOST",
                "hold.example.com/x",
                "hold.public_host",
            ),
            (
                "ATCR_HOLD_PUBLIC_HOST",
                "hold.example.com:0",
                "hold.public_host",
            ),
        ] {
            let e = Config::load(None, env(&[(var, val)]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{var}={val}: {e}");
        }
    }

    #[test]
    fn s3_settings_are_validated() {
        let base = [
            ("ATCR_STORAGE_BACKEND", "s3"),
            ("ATCR_STORAGE_S3_ENDPOINT", "http://127.0.0.1:9000"),
            ("ATCR_STORAGE_S3_BUCKET", "blobs"),
            ("ATCR_STORAGE_S3_ACCESS_KEY", "ak"),
            ("ATCR_STORAGE_S3_SECRET_KEY", "sk"),
        ];
        let c = Config::load(None, env(&base)).unwrap();
        assert_eq!(c.storage.backend, "s3");
        assert_eq!(c.s3_secret_key().unwrap(), "sk");
        for (drop, key) in [
            (1, "storage.s3.endpoint"),
            (2, "storage.s3.bucket"),
            (4, "storage.s3.secret_key"),
        ] {
            let partial: Vec<_> = base
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != drop)
                .map(|(_, kv)| *kv)
                .collect();
            let e = Config::load(None, env(&partial)).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
        let e = Config::load(None, env(&[("ATCR_STORAGE_BACKEND", "ftp")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("storage.backend"), "{e}");
    }

    #[test]
    fn file_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[server]\nlisten = 5\n").unwrap();
        let e = Config::load(Some(&p), []).unwrap_err().to_string();
        assert!(e.contains("listen"), "{e}");
        std::fs::write(&p, "[server]\nlisen = \"x\"\n").unwrap();
        let e = Config::load(Some(&p), []).unwrap_err().to_string();
        assert!(e.contains("lisen"), "{e}");
        std::fs::write(&p, "[auth]\nmode = \"open\"\n").unwrap();
        let e = Config::load(Some(&p), []).unwrap_err().to_string();
        assert!(e.contains("auth.mode"), "{e}");
    }
}
