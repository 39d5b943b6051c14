//! The `atcr` command line: parse, load config, hand over to the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use atcr::config::{Config, DEFAULT_CONFIG_TOML};
use atcr::server::systemd;

#[derive(Parser)]
#[command(
    name = "atcr",
    version,
    about = "An OCI container registry on the AT Protocol"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry (AppView and Hold) until SIGTERM or Ctrl-C.
    Serve {
        /// Config file (default: /etc/atcr/config.toml when it exists).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Local mode: no accounts, no authentication (auth.mode = "local"), listening on
        /// 127.0.0.1:5000 unless server.listen is set. For trying atcr on your own machine.
        #[arg(long)]
        local: bool,
    },
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Delete blobs no repository links any more.
    Gc {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// List what would be deleted without deleting it.
        #[arg(long)]
        dry_run: bool,
    },
    /// The hold's embedded ATProto repo (run these while `atcr serve` is stopped).
    Hold {
        #[command(subcommand)]
        command: HoldCommand,
    },
    /// Back up the data dir (databases, index, keys, config; never blobs) to a directory or
    /// s3://bucket/prefix, as `atcr-backup-<UTC time>` (0700, files 0600, manifest.json with
    /// SHA-256 checksums). A running server takes the snapshot itself (online); otherwise the
    /// files are copied under the data-dir lock. Old backups beyond backup.keep are deleted.
    Backup {
        /// A directory or s3://bucket/prefix (default: backup.target).
        target: Option<String>,
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// List the backups at the target instead of taking one.
        #[arg(long, conflicts_with = "is_configured")]
        list: bool,
        /// Only say whether backup.target is set: exit 0 if so, 1 if not (systemd ExecCondition).
        #[arg(long)]
        is_configured: bool,
    },
    /// Restore a backup into the data dir: verified first (sizes, SHA-256, redb and index
    /// integrity), refused while atcr serve runs on it; replaced files are moved aside.
    Restore {
        /// A backup directory, or s3://bucket/prefix/atcr-backup-<time>.
        backup: String,
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Replace a data dir that already holds data (moved to before-restore-<time>/).
        #[arg(long)]
        force: bool,
        /// Also write the backup's config file to --config (the old one is kept beside it).
        #[arg(long)]
        with_config: bool,
        /// Only verify the backup; change nothing.
        #[arg(long, conflicts_with_all = ["force", "with_config"])]
        verify_only: bool,
    },
    /// The UI/search index (libSQL).
    Index {
        #[command(subcommand)]
        command: IndexCommand,
    },
    /// Scan an image for vulnerabilities: `name[:tag|@digest]` in this registry (run it
    /// while `atcr serve` is stopped; the scan record is written to the hold), or an OCI
    /// layout directory `oci:<dir>[:<tag>]` (printed only).
    Scan {
        reference: String,
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print the vulnerability report (application/vnd.atcr.vulnerabilities+json).
        #[arg(long)]
        json: bool,
        /// Write the SPDX 2.3 SBOM to this file.
        #[arg(long)]
        sbom: Option<PathBuf>,
        /// The platform of a multi-platform OCI layout.
        #[arg(long, default_value = "linux/amd64")]
        platform: String,
    },
    /// The local vulnerability database (OSV).
    Vulndb {
        #[command(subcommand)]
        command: VulndbCommand,
    },
    /// Print the version.
    Version,
}

#[derive(Subcommand)]
enum VulndbCommand {
    /// Import OSV advisories: per-ecosystem export archives (`<Ecosystem>/all.zip` from
    /// osv-vulnerabilities.storage.googleapis.com), directories of OSV JSON files, or single
    /// files. Safe while `atcr serve` runs: it switches to the new data and re-matches.
    Import {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Keep only these sources (default: add to what is there).
        #[arg(long)]
        replace: bool,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Download `scan.vulndb_urls` now and replace the database with them.
    Refresh {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Show what the database holds.
    Status {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum IndexCommand {
    /// Rebuild the index from the network: list the repositories of each host
    /// (`index.backfill_hosts`, or --host) and read their io.atcr.* records.
    Backfill {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// PDS or relay base URL (repeatable); replaces index.backfill_hosts.
        #[arg(long)]
        host: Vec<String>,
    },
}

#[derive(Subcommand)]
enum HoldCommand {
    /// Write the hold's repo as a CAR file to stdout.
    Export {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Upsert every record of a repo CAR into the hold's repo, in one commit.
    Import {
        /// The CAR file (e.g. from `atcr hold export` or com.atproto.sync.getRepo).
        file: PathBuf,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Write the fully commented default configuration (to stdout with `-`).
    Init {
        #[arg(default_value = "config.toml")]
        path: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Load and validate the configuration, then print it as resolved.
    Check {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

const EXIT_BAD_CONFIG: u8 = 2;

fn config_path(given: Option<PathBuf>) -> Option<PathBuf> {
    given.or_else(|| {
        let default = Path::new("/etc/atcr/config.toml");
        default.exists().then(|| default.to_path_buf())
    })
}

fn load_config(given: Option<PathBuf>) -> Result<Config, ExitCode> {
    let config = Config::load(config_path(given).as_deref(), std::env::vars()).map_err(|e| {
        eprintln!("atcr: invalid configuration: {e}");
        ExitCode::from(EXIT_BAD_CONFIG)
    })?;
    for w in &config.warnings {
        eprintln!("atcr: warning: {w}");
    }
    Ok(config)
}

fn init_logging(config: &Config) {
    atcr::server::logging::init(&config.log);
    atcr::metrics::init();
}

/// glibc's malloc raises its mmap threshold every time a large block is freed (up to 32 MiB);
/// after the first few uploads, the socket read buffers and write batches (128 KiB to 1 MiB
/// each) come from the heap arenas instead, where freed memory stays resident and fragments:
/// 4 concurrent 500 MB pushes peaked 23 MiB over idle and stayed there, S3 uploads 300 MiB.
/// A fixed threshold keeps every block over 128 KiB in a mapping of its own, handed back to
/// the kernel when freed (measured by `benches/upload-memory.sh`: 13 MiB over idle, back to
/// idle at once). An operator's own `MALLOC_MMAP_THRESHOLD_` wins.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: mallopt only changes allocator parameters; called before any thread starts.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        }
    }
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("atcr {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Config {
            command: ConfigCommand::Init { path, force },
        } => {
            if path.as_os_str() == "-" {
                print!("{DEFAULT_CONFIG_TOML}");
                return ExitCode::SUCCESS;
            }
            if path.exists() && !force {
                eprintln!("atcr: {} exists; pass --force to overwrite", path.display());
                return ExitCode::FAILURE;
            }
            match std::fs::write(&path, DEFAULT_CONFIG_TOML) {
                Ok(()) => {
                    println!("wrote {}", path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("atcr: cannot write {}: {e}", path.display());
                    ExitCode::FAILURE
                }
            }
        }
        Command::Config {
            command: ConfigCommand::Check { config },
        } => match load_config(config) {
            Ok(c) => {
                print!("{}", c.to_redacted_toml());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Serve { config, local } => run_async(config, move |mut c| {
            if local {
                c.use_local_mode(std::env::var_os("ATCR_SERVER_LISTEN").is_some());
            }
            serve(c)
        }),
        Command::Hold { command } => hold_command(command),
        Command::Index {
            command: IndexCommand::Backfill { config, host },
        } => run_async(config, move |c| index_backfill(c, host)),
        Command::Gc { config, dry_run } => run_async(config, move |c| gc(c, dry_run)),
        Command::Backup {
            target,
            config,
            list,
            is_configured,
        } => {
            let file = config_path(config.clone());
            run_async(config, move |c| {
                backup(c, file, target, list, is_configured)
            })
        }
        Command::Restore {
            backup,
            config,
            force,
            with_config,
            verify_only,
        } => {
            let file = config_path(config.clone());
            let opts = atcr::backup::RestoreOptions {
                force,
                with_config,
                verify_only,
            };
            run_async(config, move |c| restore(c, file, backup, opts))
        }
        Command::Scan {
            reference,
            config,
            json,
            sbom,
            platform,
        } => run_async(config, move |c| scan(c, reference, json, sbom, platform)),
        Command::Vulndb { command } => vulndb(command),
    }
}

async fn scan(
    config: Config,
    reference: String,
    json: bool,
    sbom: Option<PathBuf>,
    platform: String,
) -> ExitCode {
    use atcr::scan;
    let started = std::time::Instant::now();
    let print = |image: &str, digest: &str, out: &scan::engine::Outcome| -> ExitCode {
        if let (Some(path), Some(bytes)) = (&sbom, &out.sbom) {
            if let Err(e) = std::fs::write(path, bytes) {
                eprintln!("atcr: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
        let report: serde_json::Value = out
            .report
            .as_deref()
            .and_then(|r| serde_json::from_slice(r).ok())
            .unwrap_or_default();
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
        } else {
            println!(
                "scanned {image} ({digest}) in {:.1} s: {}",
                started.elapsed().as_secs_f64(),
                out.status.as_str()
            );
            if let Some(r) = &out.reason {
                println!("{r}");
            }
            if !report.is_null() {
                print!("{}", scan::report::table(&report));
            }
        }
        if out.status == scan::engine::Status::Failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    };
    if let Some(rest) = reference.strip_prefix("oci:") {
        let (dir, tag) = match rest.rsplit_once(':') {
            Some((d, t)) if !t.contains('/') => (d.to_string(), Some(t.to_string())),
            _ => (rest.to_string(), None),
        };
        let limits = config.scan.limits();
        let vdb = scan::vulndb::VulnDb::new(&config.vulndb_dir());
        let result = tokio::task::spawn_blocking(move || {
            let reader = vdb.reader();
            scan::layout::scan_layout(
                std::path::Path::new(&dir),
                tag.as_deref(),
                &platform,
                &limits,
                reader.as_ref(),
            )
        })
        .await;
        return match result {
            Ok(Ok((image, out))) => print(&image.repository, &image.digest, &out),
            Ok(Err(e)) => {
                eprintln!("atcr: {e}");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("atcr: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let state = match atcr::app::build_state(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "atcr: {e} (is `atcr serve` running? use the Rescan button in the web UI then)"
            );
            return ExitCode::FAILURE;
        }
    };
    let Some(scanner) = state.scanner.clone() else {
        eprintln!("atcr: scanning needs the hold and [scan] enabled");
        return ExitCode::from(EXIT_BAD_CONFIG);
    };
    let (name, reference) = match parse_reference(&reference, &state.config) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("atcr: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let resolver = state.auth.resolver().clone();
    let requests = match scan::service::requests_for(
        &state.registry,
        Some(&resolver),
        &name,
        &reference,
        true,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("atcr: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut code = ExitCode::SUCCESS;
    for req in requests {
        let s = scanner.clone();
        let r2 = req.clone();
        let rec = tokio::task::spawn_blocking(move || s.scan_blocking(&r2)).await;
        let Ok(Some(rec)) = rec else {
            eprintln!(
                "atcr: the scan record of {} could not be written",
                req.manifest_digest
            );
            code = ExitCode::FAILURE;
            continue;
        };
        let report = match &rec.report {
            Some(d) => {
                scan::service::get_blob(scanner.blobs().as_ref(), d, scan::report::MAX_REPORT_BYTES)
                    .await
                    .ok()
            }
            None => None,
        };
        let sbom_bytes = match &rec.sbom {
            Some(d) => {
                scan::service::get_blob(scanner.blobs().as_ref(), d, scan::sbom::MAX_SBOM_BYTES)
                    .await
                    .ok()
            }
            None => None,
        };
        let out = scan::engine::Outcome {
            status: match rec.status.as_str() {
                "failed" => scan::engine::Status::Failed,
                "skipped" => scan::engine::Status::Skipped,
                _ => scan::engine::Status::Ok,
            },
            reason: (!rec.reason.is_empty()).then(|| rec.reason.clone()),
            summary: rec.summary,
            sbom: sbom_bytes,
            report,
            packages: 0,
            stats: Default::default(),
        };
        let c = print(&format!("{name}"), &rec.digest, &out);
        if c != ExitCode::SUCCESS {
            code = c;
        }
        if !json {
            println!(
                "record: at://{}/{}/{}",
                state.hold.as_ref().map(|h| h.did()).unwrap_or(""),
                scan::service::SCAN,
                rec.rkey
            );
        }
    }
    scanner.stop().await;
    code
}

/// `[host/]name[:tag|@digest]`: a first segment that is this registry's host (or has a
/// port) is dropped; no tag means `latest`.
fn parse_reference(
    s: &str,
    config: &Config,
) -> Result<(atcr::oci::types::Name, atcr::oci::types::Reference), String> {
    let mut s = s.to_string();
    if let Some((first, rest)) = s.split_once('/') {
        let public = config
            .server
            .public_url
            .split("://")
            .nth(1)
            .unwrap_or("")
            .trim_end_matches('/');
        let is_host = (first.contains(':') && !first.starts_with("did:"))
            || first == "localhost"
            || (!public.is_empty() && first == public);
        if is_host && rest.contains('/') {
            s = rest.to_string();
        }
    }
    let (name, reference) = if let Some((n, d)) = s.split_once('@') {
        (n.to_string(), d.to_string())
    } else {
        match s.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') && !t.is_empty() && n.contains('/') => {
                (n.to_string(), t.to_string())
            }
            _ => (s.clone(), "latest".to_string()),
        }
    };
    let name = name.parse().map_err(|e| format!("{name}: {e}"))?;
    let reference = reference.parse().map_err(|e| format!("{reference}: {e}"))?;
    Ok((name, reference))
}

fn vulndb(command: VulndbCommand) -> ExitCode {
    let config = match &command {
        VulndbCommand::Import { config, .. }
        | VulndbCommand::Refresh { config }
        | VulndbCommand::Status { config } => config.clone(),
    };
    let config = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logging(&config);
    let dir = config.vulndb_dir();
    let print = |r: &atcr::scan::vulndb::ImportReport| {
        println!(
            "generation {}: {} record(s) read, {} imported, {} withdrawn, {} without a known ecosystem, {} unreadable; {} advisories in the database",
            r.generation, r.records, r.imported, r.withdrawn, r.unmatched, r.failed, r.advisories
        );
    };
    match command {
        VulndbCommand::Import { paths, replace, .. } => {
            match atcr::scan::vulndb::import(&dir, &paths, replace) {
                Ok(r) => {
                    print(&r);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("atcr: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        VulndbCommand::Refresh { .. } => {
            if config.scan.vulndb_urls.is_empty() {
                eprintln!("atcr: scan.vulndb_urls is empty");
                return ExitCode::from(EXIT_BAD_CONFIG);
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            match rt.block_on(atcr::scan::vulndb::refresh_from_urls(
                &dir,
                &config.scan.vulndb_urls,
            )) {
                Ok(r) => {
                    print(&r);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("atcr: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        VulndbCommand::Status { .. } => {
            let db = atcr::scan::vulndb::VulnDb::new(&dir);
            match db.reader() {
                Some(r) => {
                    let m = &r.meta;
                    println!(
                        "generation {} updated {}: {} advisories",
                        m.generation, m.updated_at, m.advisories
                    );
                    for (eco, n) in &m.ecosystems {
                        println!("  {eco}: {n} entries");
                    }
                    for s in &m.sources {
                        println!("  from {s}");
                    }
                    ExitCode::SUCCESS
                }
                None => {
                    println!(
                        "no vulnerability database in {} (run `atcr vulndb import`)",
                        dir.display()
                    );
                    ExitCode::SUCCESS
                }
            }
        }
    }
}

/// Load the configuration, start logging and a runtime, and run `task` to completion.
fn run_async<F: std::future::Future<Output = ExitCode>>(
    given: Option<PathBuf>,
    task: impl FnOnce(Config) -> F,
) -> ExitCode {
    let config = match load_config(given) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logging(&config);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Blocking work is short (a file batch, a chunk read, a store transaction); no thread
        // waits on a client. A burst of requests queues here instead of creating hundreds of
        // threads at once.
        .max_blocking_threads(128)
        .build()
        .expect("tokio runtime");
    rt.block_on(task(config))
}

async fn serve(config: Config) -> ExitCode {
    let addr = config.listen_addr();
    // One server per data dir, and never during `atcr restore`.
    let _lock = match lock_data_dir(&config, "atcr serve") {
        Ok(l) => l,
        Err(code) => return code,
    };
    let control_config = config.clone();
    let state_dir = config.server.data_dir.clone();
    let state = match atcr::app::build_state(config).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match atcr::server::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // `atcr backup` asks this process for snapshots of the databases it has open.
    let control = match atcr::backup::control::spawn(control_config) {
        Ok(task) => Some(task),
        Err(e) => {
            tracing::error!(error = %e, "no control socket: `atcr backup` cannot take online backups");
            None
        }
    };
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(addr = %bound, "atcr listening");
    systemd::notify_ready(&format!("listening on {bound}"));
    systemd::spawn_watchdog();
    spawn_reload_on_sighup(state.clone());
    atcr::server::run(listener, state, shutdown_signal()).await;
    if let Some(task) = control {
        task.abort();
        let _ = std::fs::remove_file(state_dir.join(atcr::backup::control::SOCKET_FILE));
    }
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// SIGHUP re-reads the secrets that can change while running (the index token file).
fn spawn_reload_on_sighup(state: std::sync::Arc<atcr::app::AppState>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            if !state.index.reload_credentials() {
                tracing::info!(
                    "SIGHUP: nothing to reload (index token unchanged or not from a file)"
                );
            }
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
    systemd::notify_stopping();
    tracing::info!("shutting down: finishing in-flight requests");
}

/// Take the data-dir lock for `what`, creating the data dir when missing.
fn lock_data_dir(config: &Config, what: &str) -> Result<atcr::backup::DataDirLock, ExitCode> {
    let dir = &config.server.data_dir;
    if let Err(e) = std::fs::create_dir_all(dir) {
        eprintln!("atcr: cannot create data directory {}: {e}", dir.display());
        return Err(ExitCode::FAILURE);
    }
    atcr::backup::DataDirLock::acquire(dir, what).map_err(|e| {
        tracing::error!("{e}");
        ExitCode::FAILURE
    })
}

async fn backup(
    config: Config,
    file: Option<PathBuf>,
    target: Option<String>,
    list: bool,
    is_configured: bool,
) -> ExitCode {
    if is_configured {
        return if config.backup.target.is_empty() {
            println!("backup.target is not set: no scheduled backups");
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    let Some(target) =
        target.or_else(|| Some(config.backup.target.clone()).filter(|t| !t.is_empty()))
    else {
        eprintln!("atcr: no target: give a directory or s3://bucket/prefix, or set backup.target");
        return ExitCode::from(EXIT_BAD_CONFIG);
    };
    if list {
        return match atcr::backup::list(&config, &target).await {
            Ok(found) => {
                for l in found {
                    println!(
                        "{}{}",
                        l.name,
                        if l.complete { "" } else { " (incomplete)" }
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => backup_failed("listing backups", e),
        };
    }
    match atcr::backup::backup(&config, file.as_deref(), &target).await {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => backup_failed("backup failed", e),
    }
}

fn backup_failed(what: &str, e: atcr::backup::BackupError) -> ExitCode {
    eprintln!("atcr: {what}: {e}");
    match e {
        atcr::backup::BackupError::Usage(_) => ExitCode::from(EXIT_BAD_CONFIG),
        _ => ExitCode::FAILURE,
    }
}

async fn restore(
    config: Config,
    file: Option<PathBuf>,
    source: String,
    opts: atcr::backup::RestoreOptions,
) -> ExitCode {
    match atcr::backup::restore(&config, file.as_deref(), &source, opts).await {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => backup_failed("restore failed", e),
    }
}

async fn gc(config: Config, dry_run: bool) -> ExitCode {
    let _lock = match lock_data_dir(&config, "atcr gc") {
        Ok(l) => l,
        Err(code) => return code,
    };
    let state = match atcr::app::build_state(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("atcr: {e}");
            return ExitCode::FAILURE;
        }
    };
    match atcr::gc::collect_garbage(&state.registry, state.hold_api.as_deref(), dry_run).await {
        Ok(swept) => {
            for d in &swept {
                println!("{}{d}", if dry_run { "would delete " } else { "deleted " });
            }
            println!(
                "{} blob(s) {}",
                swept.len(),
                if dry_run { "unreferenced" } else { "deleted" }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("atcr: gc failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn index_backfill(config: Config, hosts: Vec<String>) -> ExitCode {
    let hosts = if hosts.is_empty() {
        config.index.backfill_hosts.clone()
    } else {
        hosts
    };
    if hosts.is_empty() {
        eprintln!("atcr: no hosts: set index.backfill_hosts or pass --host");
        return ExitCode::from(EXIT_BAD_CONFIG);
    }
    let index = match atcr::index::Index::open_beside_server(&config).await {
        Ok(i) => i,
        Err(e) => {
            eprintln!("atcr: {e}");
            return ExitCode::FAILURE;
        }
    };
    match index.backfill(&hosts).await {
        Ok(r) => {
            println!(
                "backfill: {} repositories listed, {} with io.atcr records, {} records, {} failed",
                r.repos_seen, r.repos_indexed, r.records, r.failures
            );
            if r.failures == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("atcr: backfill failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn hold_command(command: HoldCommand) -> ExitCode {
    use std::io::Write as _;
    let config = match &command {
        HoldCommand::Export { config } | HoldCommand::Import { config, .. } => config.clone(),
    };
    let config = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logging(&config);
    let _lock = match lock_data_dir(&config, "atcr hold") {
        Ok(l) => l,
        Err(code) => return code,
    };
    let result = match command {
        HoldCommand::Export { .. } => atcr::pds::HoldPds::open_unsynced(&config).and_then(|hold| {
            // Streamed block by block (bounded memory whatever the repo size).
            let mut out = std::io::BufWriter::with_capacity(256 * 1024, std::io::stdout().lock());
            let written = hold.write_car_blocking(&mut out)?;
            out.flush()
                .map_err(|e| atcr::pds::HoldError::Io(PathBuf::from("<stdout>"), e))?;
            eprintln!("exported {} ({written} bytes)", hold.did());
            Ok(())
        }),
        HoldCommand::Import { file, .. } => atcr::pds::read_import_file(&file).and_then(|car| {
            let hold = atcr::pds::HoldPds::open(&config)?;
            let (n, committed) = hold.import_car_blocking(&car)?;
            match committed {
                Some(c) => println!(
                    "imported {n} record(s) in commit {} (rev {})",
                    c.commit, c.rev
                ),
                None => println!("nothing to import: every record is already present"),
            }
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("atcr: {e}");
            ExitCode::FAILURE
        }
    }
}
