//! The control socket of a running `atcr serve`: `<data_dir>/control.sock` (0600; only root
//! and the server's own user are answered, checked with `SO_PEERCRED`). `atcr backup` asks it
//! for a snapshot, because only the process that has the redb files open can copy them
//! consistently (redb locks its files against other processes). One request per connection,
//! one JSON line each way:
//! ```text
//! -> {"op":"snapshot"}
//! <- {"ok":true,"dir":"<data_dir>/backup-staging/<id>","files":[{"path":"hold.redb","size":..},..]}
//! <- {"ok":false,"error":"..."}
//! ```
//! The snapshot directory belongs to the caller afterwards, who removes it; the server clears
//! ones left behind for more than an hour.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::snapshot::Taken;
use super::BackupError;
use crate::config::Config;

pub const SOCKET_FILE: &str = "control.sock";
pub const STAGING_DIR: &str = "backup-staging";
/// Longest request line accepted.
const MAX_REQUEST: u64 = 4096;
/// How long a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `atcr backup` waits for the server's snapshot.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Snapshot directories older than this were abandoned by their caller.
const STALE_STAGING: Duration = Duration::from_secs(3600);

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    op: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Reply {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dir: Option<PathBuf>,
    #[serde(default)]
    files: Vec<Taken>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Listen on the control socket of `config`'s data dir until the task is aborted. The caller
/// holds the data-dir lock, so a socket file found there is a leftover and is replaced.
pub fn spawn(config: Config) -> io::Result<tokio::task::JoinHandle<()>> {
    use std::os::unix::fs::PermissionsExt;
    let path = config.server.data_dir.join(SOCKET_FILE);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let busy = std::sync::Arc::new(tokio::sync::Mutex::new(()));
    Ok(tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let config = config.clone();
            let busy = busy.clone();
            tokio::spawn(async move {
                if let Err(e) = answer(stream, &config, &busy).await {
                    tracing::warn!(error = %e, "control request failed");
                }
            });
        }
    }))
}

async fn answer(
    stream: UnixStream,
    config: &Config,
    busy: &tokio::sync::Mutex<()>,
) -> io::Result<()> {
    let peer = stream.peer_cred()?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if peer.uid() != 0 && peer.uid() != me {
        tracing::warn!(
            uid = peer.uid(),
            "control socket: caller is neither root nor us"
        );
        return Ok(());
    }
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut limited = BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_REQUEST));
    tokio::time::timeout(REQUEST_TIMEOUT, limited.read_line(&mut line))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no request"))??;
    let reply = match serde_json::from_str::<Request>(line.trim()) {
        Ok(r) if r.op == "snapshot" => {
            let _one_at_a_time = busy.lock().await;
            let started = std::time::Instant::now();
            match snapshot(config).await {
                Ok((dir, files)) => {
                    tracing::info!(
                        files = files.len(),
                        ms = started.elapsed().as_millis() as u64,
                        "backup snapshot written"
                    );
                    Reply {
                        ok: true,
                        dir: Some(dir),
                        files,
                        error: None,
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "backup snapshot failed");
                    failure(e.to_string())
                }
            }
        }
        Ok(r) => failure(format!("unknown op {:?}", r.op)),
        Err(e) => failure(format!("bad request: {e}")),
    };
    let mut out = serde_json::to_vec(&reply).map_err(io::Error::other)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}

fn failure(error: String) -> Reply {
    Reply {
        ok: false,
        dir: None,
        files: Vec::new(),
        error: Some(error),
    }
}

async fn snapshot(config: &Config) -> Result<(PathBuf, Vec<Taken>), BackupError> {
    let staging = config.server.data_dir.join(STAGING_DIR);
    super::create_private_dir(&staging)?;
    remove_stale(&staging);
    let dir = staging.join(uuid::Uuid::new_v4().simple().to_string());
    super::create_private_dir(&dir)?;
    match super::snapshot::take(config, &dir).await {
        Ok(files) => Ok((dir, files)),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            Err(e)
        }
    }
}

fn remove_stale(staging: &Path) {
    let Ok(entries) = std::fs::read_dir(staging) else {
        return;
    };
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_STAGING);
        if old {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Ask the server running on `data_dir` for a snapshot. `Ok(None)`: no server listens there.
pub async fn request_snapshot(
    data_dir: &Path,
) -> Result<Option<(PathBuf, Vec<Taken>)>, BackupError> {
    let path = data_dir.join(SOCKET_FILE);
    let stream = match UnixStream::connect(&path).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(BackupError::io(&path, e)),
    };
    let exchange = async {
        let (read, mut write) = stream.into_split();
        write.write_all(b"{\"op\":\"snapshot\"}\n").await?;
        let mut line = String::new();
        BufReader::new(tokio::io::AsyncReadExt::take(read, 16 << 20))
            .read_line(&mut line)
            .await?;
        Ok::<_, io::Error>(line)
    };
    let line = tokio::time::timeout(SNAPSHOT_TIMEOUT, exchange)
        .await
        .map_err(|_| BackupError::Other("the server's snapshot took over an hour".into()))?
        .map_err(|e| BackupError::io(&path, e))?;
    if line.is_empty() {
        return Err(BackupError::Other(format!(
            "{} closed without an answer (only root and the server's user may ask)",
            path.display()
        )));
    }
    let reply: Reply = serde_json::from_str(line.trim())
        .map_err(|e| BackupError::Other(format!("bad answer from {}: {e}", path.display())))?;
    match (reply.ok, reply.dir) {
        (true, Some(dir)) => Ok(Some((dir, reply.files))),
        _ => Err(BackupError::Other(format!(
            "the server could not take a snapshot: {}",
            reply.error.unwrap_or_default()
        ))),
    }
}
