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
    /// The UI/search index (libSQL).
    Index {
        #[command(subcommand)]
        command: IndexCommand,
    },
    /// Print the version.
    Version,
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
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if systemd::stderr_is_journal() {
        // Under systemd: journald adds time and unit; `<N>` prefixes carry the priority.
        builder
            .event_format(systemd::JournalFormat::default())
            .init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
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
        .build()
        .expect("tokio runtime");
    rt.block_on(task(config))
}

async fn serve(config: Config) -> ExitCode {
    let addr = config.listen_addr();
    let state = match atcr::app::build_state(config).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(addr = %bound, "atcr listening");
    systemd::notify_ready(&format!("listening on {bound}"));
    systemd::spawn_watchdog();
    atcr::server::run(listener, state, shutdown_signal()).await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
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

async fn gc(config: Config, dry_run: bool) -> ExitCode {
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
    let index = match atcr::index::Index::open(&config).await {
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
    let result = match command {
        HoldCommand::Export { .. } => atcr::pds::HoldPds::open_unsynced(&config).and_then(|hold| {
            let car = hold.export_car_blocking()?;
            let mut out = std::io::stdout().lock();
            out.write_all(&car)
                .and_then(|()| out.flush())
                .map_err(|e| atcr::pds::HoldError::Io(PathBuf::from("<stdout>"), e))?;
            eprintln!("exported {} ({} bytes)", hold.did(), car.len());
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
