//! The shared floor below every handler: [`AppState`] (everything a request handler can
//! reach), the composition root [`build_state`] that opens storage and wires the domain
//! services together, and the HTTP helpers ([`http`]) all handlers use. Handlers import from
//! here; nothing here imports a handler or the server, so the layering has no circle.

pub mod conn;
pub mod http;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::blob::fs::FsBlobStore;
use crate::blob::s3::{S3BlobStore, S3Settings};
use crate::blob::BlobStore;
use crate::config::Config;
use crate::registry::store::MetaStore;
use crate::registry::{Limits, Registry};

/// Everything a request handler can reach.
pub struct AppState {
    pub config: Config,
    pub registry: Arc<Registry>,
    pub auth: Arc<crate::auth::Auth>,
    /// The hold's embedded PDS (`hold.enabled`).
    pub hold: Option<Arc<crate::pds::HoldPds>>,
    /// The `io.atcr.hold.*` API over that PDS and the blob store.
    pub hold_api: Option<Arc<crate::hold::HoldService>>,
    /// Browser sessions of the web UI.
    pub web: crate::web::state::Web,
    /// The UI/search index (libSQL), fed by direct writes and the network.
    pub index: crate::index::Index,
    /// The vulnerability scanner (with the hold, when `[scan] enabled`).
    pub scanner: Option<Arc<crate::scan::service::Scanner>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create data directory {0}: {1}")]
    DataDir(std::path::PathBuf, std::io::Error),
    #[error("cannot open blob storage: {0}")]
    Blobs(String),
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot open the registry database: {0}")]
    Store(#[from] crate::registry::store::StoreError),
    #[error("cannot load keys: {0}")]
    Keys(#[from] crate::auth::keys::KeyError),
    #[error("cannot open the hold: {0}")]
    Hold(#[from] crate::pds::HoldError),
    #[error("cannot open the index: {0}")]
    Index(#[from] crate::index::IndexError),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// Open storage and build the state (the composition root).
pub async fn build_state(config: Config) -> Result<Arc<AppState>, StartError> {
    let data = config.server.data_dir.clone();
    std::fs::create_dir_all(&data).map_err(|e| StartError::DataDir(data.clone(), e))?;
    let blobs: Arc<dyn BlobStore> = match config.storage.backend.as_str() {
        "s3" => {
            let s3 = &config.storage.s3;
            let settings = S3Settings {
                endpoint: s3.endpoint.clone(),
                region: s3.region.clone(),
                bucket: s3.bucket.clone(),
                path_style: s3.path_style,
                access_key: s3.access_key.clone(),
                secret_key: config.s3_secret_key()?,
                prefix: s3.prefix.trim_matches('/').to_string(),
                cdn_host: s3.cdn_host.clone(),
                presign_secs: s3.presign_secs,
                part_size: s3.part_size_mib * 1024 * 1024,
                spill_dir: data.join("s3-uploads"),
            };
            Arc::new(
                S3BlobStore::open(settings, s3.create_bucket)
                    .await
                    .map_err(|e| StartError::Blobs(e.to_string()))?,
            )
        }
        _ => Arc::new(
            FsBlobStore::open(config.blob_root())
                .map_err(|e| StartError::Blobs(e.to_string()))?
                .with_min_free(config.storage.min_free_mib << 20),
        ),
    };
    warn_if_local_mode(&config);
    let store = MetaStore::open(&data.join("registry.redb"))?;
    let limits = Limits::from_config(&config);
    let registry = Registry::new(blobs.clone(), store.clone(), limits);
    let stored_configs = Arc::new(StoredConfigs(blobs.clone()));
    let hold = if config.hold.enabled {
        Some(crate::pds::HoldPds::open(&config)?)
    } else {
        None
    };
    // Manifests name the hold that stores their blobs: ours when it runs here.
    let local_hold_did = hold
        .as_ref()
        .map(|h| h.did().to_string())
        .unwrap_or_else(|| hold_did(&config));
    let web = crate::web::state::Web::new(store.clone());
    let auth = Arc::new(build_auth(&config, store.clone())?);
    let records = if auth.mode() == crate::auth::AuthMode::Atproto {
        // Pushes go to the hold the pusher's profile names (else the configured default,
        // else ours); remote holds are called with service tokens from the user's PDS.
        let federation = Arc::new(build_federation(&config, &auth, &local_hold_did));
        registry.set_federation(federation.clone());
        // Manifests and tags go to the owner's PDS first; logins create the sailor profile
        // (naming the default hold).
        let pds = Arc::new(crate::registry::pds::PdsRecords::new(
            auth.resolver().clone(),
            auth.sessions.clone(),
            store,
            federation.default_hold_did().to_string(),
            registry_domain(&config),
        ));
        registry.set_records(pds.clone());
        auth.set_login_hook(pds.clone());
        Some(pds)
    } else {
        None
    };
    let hold_api = match &hold {
        Some(pds) => {
            let tiers = crate::hold::Tiers::parse(&config.hold.tiers, &config.hold.default_tier)
                .map_err(|e| crate::pds::HoldError::Internal(e.to_string()))?;
            let svc = crate::hold::HoldService::new(
                pds.clone(),
                blobs,
                auth.resolver().clone(),
                tiers,
                crate::hold::uploads::UploadLimits::from_config(&config),
            );
            svc.stats().start();
            match svc.restore_uploads().await {
                Ok((0, 0)) => {}
                Ok((restored, removed)) => {
                    tracing::info!(restored, removed, "hold uploads of the last run")
                }
                Err(e) => tracing::warn!(error = %e, "cannot restore the hold's uploads"),
            }
            let resolver =
                (auth.mode() == crate::auth::AuthMode::Atproto).then(|| auth.resolver().clone());
            let base = pds
                .identity()
                .public_url
                .clone()
                .unwrap_or_else(|| format!("http://{}", pds.identity().host));
            registry.set_push_hook(Arc::new(crate::hold::registry_hook::HoldPushHook::new(
                svc.clone(),
                resolver,
                base,
            )));
            Some(svc)
        }
        None => None,
    };
    let index = crate::index::Index::open_with(&config, auth.resolver().clone()).await?;
    index.set_local_hold(local_hold_did);
    index.set_config_source(stored_configs);
    index.spawn_platform_catch_up();
    registry.set_index(index.clone());
    if let Some(r) = &records {
        r.set_index(index.clone());
    }
    let scanner = match (&hold_api, config.scan.enabled) {
        (Some(svc), true) => Some(start_scanner(&config, svc, &index)),
        _ => None,
    };
    Ok(Arc::new(AppState {
        config,
        registry,
        auth,
        hold,
        hold_api,
        web,
        index,
        scanner,
    }))
}

impl AppState {
    /// Writes what is only counted in memory (the hold's pull/push stats), at a graceful
    /// stop.
    pub async fn flush_counters(&self) {
        if let Some(h) = &self.hold_api {
            if let Err(e) = h.stats().flush_all().await {
                tracing::warn!(error = %e, "hold stats not written at shutdown");
            }
        }
    }
}

/// The `/_health` body: `ok`, or `degraded` while the index serves reads but queues
/// writes (pushes and pulls work either way, so the status code stays 200).
pub fn health(state: &AppState) -> serde_json::Value {
    let index = state.index.status();
    let status = if index.state == "ok" {
        "ok"
    } else {
        "degraded"
    };
    serde_json::json!({"status": status, "index": index})
}

/// Hold selection and the remote-hold client (`[federation]`).
fn build_federation(
    config: &Config,
    auth: &crate::auth::Auth,
    local_hold_did: &str,
) -> crate::registry::federation::Federation {
    use crate::auth::service_token::PdsServiceTokens;
    use crate::registry::federation::{Federation, FederationSettings};
    let f = &config.federation;
    let tokens = Arc::new(PdsServiceTokens::new(auth.sessions.clone()));
    Federation::new(
        FederationSettings {
            local_did: local_hold_did.to_string(),
            default_hold: (!f.default_hold_did.is_empty()).then(|| f.default_hold_did.clone()),
            profile_ttl: Duration::from_secs(f.profile_cache_secs),
            hold_ttl: Duration::from_secs(f.hold_cache_secs),
            allow_private: f.allow_private_addresses,
        },
        auth.resolver().clone(),
        tokens,
    )
}

/// Starts the scanner on the hold's PDS and blob store, tells the index about each scan,
/// and fills the index's scan table from the records the hold already has.
fn start_scanner(
    config: &Config,
    svc: &Arc<crate::hold::HoldService>,
    index: &crate::index::Index,
) -> Arc<crate::scan::service::Scanner> {
    use crate::scan::service::{ScanEvent, Scanner, Settings};
    let host = svc
        .pds()
        .identity()
        .public_url
        .as_deref()
        .and_then(|u| u.split("://").nth(1))
        .map(|h| h.trim_end_matches('/').to_string())
        .unwrap_or_else(|| svc.pds().identity().host.clone());
    let settings = Settings {
        workers: config.scan.workers,
        queue_size: config.scan.queue_size,
        limits: config.scan.limits(),
        vulndb_dir: config.vulndb_dir(),
        vulndb_urls: config.scan.vulndb_urls.clone(),
        refresh_hours: config.scan.vulndb_refresh_hours,
        host,
    };
    let scanner = Scanner::start(svc.pds().clone(), svc.blobs().clone(), settings);
    let row = |ev: &ScanEvent| crate::index::scans::ScanRow {
        digest: ev.digest.clone(),
        user_did: ev.user_did.clone(),
        repository: ev.repository.clone(),
        status: ev.status.clone(),
        critical: ev.summary.critical as i64,
        high: ev.summary.high as i64,
        medium: ev.summary.medium as i64,
        low: ev.summary.low as i64,
        total: ev.summary.total as i64,
        scanned_at: ev.scanned_at.clone(),
        platforms: 0,
    };
    let rt = tokio::runtime::Handle::current();
    let ix = index.clone();
    scanner.set_sink(Arc::new(move |ev: ScanEvent| {
        let ix = ix.clone();
        let r = row(&ev);
        rt.spawn(async move {
            if let Err(e) = ix.put_scan(&r).await {
                tracing::warn!(error = %e, "cannot index a scan");
            }
        });
    }));
    let (ix, s) = (index.clone(), scanner.clone());
    tokio::spawn(async move {
        match s.records().await {
            Ok(records) => {
                for r in records {
                    if let Err(e) = ix.put_scan(&row(&r.event())).await {
                        tracing::warn!(error = %e, "cannot index a scan");
                        break;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the hold's scan records"),
        }
    });
    svc.set_scanner(scanner.clone());
    scanner
}

/// Local mode's start-up warning: authentication is off, so say it loudly, several lines,
/// and as an error when the listener is reachable from other machines.
fn warn_if_local_mode(config: &Config) {
    if !config.local_mode() {
        return;
    }
    let addr = config.listen_addr();
    tracing::warn!("LOCAL MODE: authentication is OFF (auth.mode = \"local\")");
    tracing::warn!(
        "anyone who can reach {addr} can push, overwrite and delete every image here; \
         this mode is for trying atcr on your own machine"
    );
    tracing::warn!(
        "to sign in with an ATProto account (handle + app password), start without --local \
         (auth.mode = \"atproto\", the default)"
    );
    if !addr.ip().is_loopback() {
        tracing::error!(
            "local mode listens on {addr}, which other machines can reach: set \
             server.listen = \"127.0.0.1:5000\" or turn authentication on"
        );
    }
}

/// The index reads image configs (platforms of single images) straight from the blob
/// store: small, bounded reads of blobs this server keeps.
struct StoredConfigs(Arc<dyn BlobStore>);

#[async_trait::async_trait]
impl crate::index::ConfigSource for StoredConfigs {
    async fn config_bytes(&self, digest: &str, max: u64) -> Option<Vec<u8>> {
        use futures_util::TryStreamExt;
        let digest: crate::oci::types::Digest = digest.parse().ok()?;
        let size = self.0.stat(&digest).await.ok()??;
        if size > max {
            return None;
        }
        let read = self.0.read(&digest, None).await.ok()?;
        let chunks: Vec<bytes::Bytes> = read.stream.try_collect().await.ok()?;
        let bytes = chunks.concat();
        (bytes.len() as u64 <= max).then_some(bytes)
    }
}

/// The hold DID when no hold runs in this process: `did:web:` + the public host (`server.public_url`, else
/// `auth.service`, else `localhost:<listen port>`).
fn hold_did(config: &Config) -> String {
    use crate::registry::records::did_web_for;
    if !config.server.public_url.is_empty() {
        did_web_for(&config.server.public_url)
    } else if !config.auth.service.is_empty() {
        did_web_for(&config.auth.service)
    } else {
        did_web_for(&format!("localhost:{}", config.listen_addr().port()))
    }
}

/// This registry's host as users type it (`host[:port]`): the authority of
/// `server.public_url`, else `auth.service`, else `localhost:<listen port>`. The sailor
/// profile's `registryDomain`.
fn registry_domain(config: &Config) -> String {
    let authority = |u: &str| {
        u.split("://")
            .nth(1)
            .unwrap_or(u)
            .split('/')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    if !config.server.public_url.is_empty() {
        authority(&config.server.public_url)
    } else if !config.auth.service.is_empty() {
        authority(&config.auth.service)
    } else {
        format!("localhost:{}", config.listen_addr().port())
    }
}

/// Identity resolver, PDS session store and token issuer (keys from `<data_dir>/keys/`).
fn build_auth(config: &Config, store: Arc<MetaStore>) -> Result<crate::auth::Auth, StartError> {
    use crate::atproto::identity::{IdentityConfig, Resolver};
    use crate::atproto::xrpc::XrpcClient;
    use crate::auth::{keys, sessions::SessionStore, Auth, AuthMode, AuthSettings};
    let keys_dir = config.server.data_dir.join("keys");
    let xrpc = XrpcClient::default();
    let ic = &config.identity;
    let resolver = Resolver::new(
        IdentityConfig {
            plc_url: ic.plc_url.clone(),
            handle_resolver: (!ic.handle_resolver.is_empty()).then(|| ic.handle_resolver.clone()),
            cache_ttl: Duration::from_secs(ic.cache_ttl_secs),
            dns: true,
        },
        xrpc.clone(),
    );
    let sessions = Arc::new(SessionStore::new(
        store,
        keys::session_seal_key(&keys_dir)?,
        xrpc,
    ));
    let a = &config.auth;
    let settings = AuthSettings {
        mode: if config.local_mode() {
            AuthMode::None
        } else {
            AuthMode::Atproto
        },
        service: a.service.clone(),
        public_url: config.server.public_url.clone(),
        token_ttl: Duration::from_secs(a.token_ttl_secs),
        limits: crate::auth::ratelimit::LimitSettings {
            per_pair: a.max_failed_logins as usize,
            per_address: a.max_failed_logins_per_address as usize,
            backstop: a.identity_backstop as usize,
            window: Duration::from_secs(a.failed_login_window_secs),
        },
        session_reuse: Duration::from_secs(a.session_reuse_secs),
        session_revalidate: Duration::from_secs(a.session_revalidate_secs),
    };
    let mode = settings.mode;
    let auth = Auth::new(
        settings,
        keys::token_signing_key(&keys_dir)?,
        resolver.clone(),
        sessions.clone(),
    );
    // OAuth needs a stable https client_id: the public URL.
    let public = config.server.public_url.trim_end_matches('/');
    if mode == AuthMode::Atproto && a.oauth && public.starts_with("https://") {
        let client = crate::auth::oauth::OAuthClient::new(
            public,
            &a.client_name,
            &a.oauth_scope,
            keys::oauth_client_key(&keys_dir)?,
            resolver,
            sessions,
        );
        tracing::info!(client_id = %client.client_id(), "OAuth sign-in enabled");
        return Ok(auth.with_oauth(client));
    }
    Ok(auth)
}
