//! `docker-credential-atcr`: the Docker credential helper for atcr registries.
//!
//! Docker, Podman, Skopeo and Buildah run it for the registries their config names under
//! `credHelpers` (`{"credHelpers": {"registry.example.com": "atcr"}}`), speaking the
//! credential-helper protocol on stdin/stdout:
//!   get    (stdin: server URL)              -> {"ServerURL","Username","Secret"}
//!   store  (stdin: {"ServerURL","Username","Secret"})
//!   erase  (stdin: server URL)
//!   list                                     -> {"<server URL>": "<username>", ...}
//! People run the other verbs:
//!   login [--name NAME] [--ca-cert FILE] <registry>   device flow: shows a code, you approve
//!                                                     it at <registry>/device in a browser
//!   logout <registry> | status | version
//!   configure-docker [<registry>...]      adds the helper to ~/.docker/config.json
//!   configure-containers [<registry>...]  ...and to the containers auth.json (podman, skopeo)
//!
//! Credentials live in `$ATCR_CREDENTIALS_FILE`, else `$XDG_CONFIG_HOME/atcr/credentials.json`
//! (`~/.config/atcr/credentials.json`), written 0600 through a temp file and a rename. A device
//! credential is revocable in the registry's /settings; nothing here knows a password.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde::{Deserialize, Serialize};

const NOT_FOUND: &str = "credentials not found in native keychain";
/// Longest stdin accepted (a server URL or one credential).
const MAX_STDIN: u64 = 64 * 1024;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Store {
    #[serde(default)]
    registries: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    username: String,
    secret: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    handle: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Credentials {
    #[serde(rename = "ServerURL")]
    server_url: String,
    username: String,
    secret: String,
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("docker-credential-atcr: {msg}");
    ExitCode::FAILURE
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn config_home() -> PathBuf {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| home().join(".config"))
}

fn store_path() -> PathBuf {
    std::env::var_os("ATCR_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| config_home().join("atcr").join("credentials.json"))
}

/// `https://Registry.Example.com:443/v2/` -> `registry.example.com:443`: the key of an entry.
fn registry_key(server: &str) -> String {
    let s = server.trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    s.split('/').next().unwrap_or("").to_ascii_lowercase()
}

fn read_json_file<T: for<'de> Deserialize<'de> + Default>(p: &Path) -> Result<T, String> {
    match std::fs::read(p) {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Ok(T::default()),
        Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

/// Writes `bytes` to `p` with mode 0600 through a temp file, fsync and rename.
fn write_private(p: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = p.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        p.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, p).map_err(|e| format!("{}: {e}", p.display()))
}

fn load() -> Result<Store, String> {
    read_json_file(&store_path())
}

fn save(s: &Store) -> Result<(), String> {
    let mut bytes = serde_json::to_vec_pretty(s).map_err(|e| e.to_string())?;
    bytes.push(b'\n');
    write_private(&store_path(), &bytes)
}

fn stdin_text() -> Result<String, String> {
    let mut s = String::new();
    std::io::stdin()
        .take(MAX_STDIN)
        .read_to_string(&mut s)
        .map_err(|e| format!("stdin: {e}"))?;
    Ok(s.trim().to_string())
}

// ---- the protocol -------------------------------------------------------------------------

fn get() -> ExitCode {
    let server = match stdin_text() {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let store = match load() {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    match store.registries.get(&registry_key(&server)) {
        Some(e) => {
            let out = Credentials {
                server_url: server,
                username: e.username.clone(),
                secret: e.secret.clone(),
            };
            println!("{}", serde_json::to_string(&out).unwrap_or_default());
            ExitCode::SUCCESS
        }
        None => {
            // The protocol's "not found" answer: this text on stdout, exit 1.
            println!("{NOT_FOUND}");
            ExitCode::FAILURE
        }
    }
}

fn store_cmd() -> ExitCode {
    let text = match stdin_text() {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let c: Credentials = match serde_json::from_str(&text) {
        Ok(c) => c,
        Err(e) => return fail(format!("store: {e}")),
    };
    let key = registry_key(&c.server_url);
    if key.is_empty() {
        return fail("store: empty ServerURL");
    }
    let mut store = match load() {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    store.registries.insert(
        key,
        Entry {
            username: c.username,
            secret: c.secret,
            handle: String::new(),
        },
    );
    match save(&store) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn erase(server: &str) -> ExitCode {
    let mut store = match load() {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    if store.registries.remove(&registry_key(server)).is_none() {
        println!("{NOT_FOUND}");
        return ExitCode::FAILURE;
    }
    match save(&store) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn list() -> ExitCode {
    let store = match load() {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let m: BTreeMap<&String, &String> = store
        .registries
        .iter()
        .map(|(k, v)| (k, &v.username))
        .collect();
    println!("{}", serde_json::to_string(&m).unwrap_or_default());
    ExitCode::SUCCESS
}

// ---- login: the device flow ---------------------------------------------------------------

#[derive(Deserialize)]
struct DeviceCode {
    device_code: String,
    user_code: String,
    verification_uri: String,
    #[serde(default)]
    verification_uri_complete: String,
    expires_in: u64,
    interval: u64,
}

#[derive(Deserialize)]
struct DeviceToken {
    device_secret: String,
    did: String,
    handle: String,
}

#[derive(Deserialize, Default)]
struct OAuthErr {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

fn base_url(registry: &str) -> String {
    let r = registry.trim().trim_end_matches('/');
    if r.starts_with("https://") || r.starts_with("http://") {
        r.to_string()
    } else {
        format!("https://{r}")
    }
}

fn http_client(ca_cert: Option<&Path>) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .user_agent(concat!(
            "docker-credential-atcr/",
            env!("CARGO_PKG_VERSION")
        ));
    if let Some(p) = ca_cert {
        let pem = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let cert =
            reqwest::Certificate::from_pem(&pem).map_err(|e| format!("{}: {e}", p.display()))?;
        b = b.add_root_certificate(cert);
    }
    b.build().map_err(|e| e.to_string())
}

fn device_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let user = std::env::var("USER").unwrap_or_default();
    match (user.is_empty(), host.is_empty()) {
        (false, false) => format!("docker-credential-atcr: {user}@{host}"),
        (true, false) => format!("docker-credential-atcr: {host}"),
        _ => "docker-credential-atcr".into(),
    }
}

async fn login(registry: &str, name: &str, ca_cert: Option<&Path>) -> Result<(), String> {
    let base = base_url(registry);
    let http = http_client(ca_cert)?;
    let resp = http
        .post(format!("{base}/auth/device/code"))
        .json(&serde_json::json!({ "device_name": name }))
        .send()
        .await
        .map_err(|e| format!("{base}: {e}"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let e: OAuthErr = resp.json().await.unwrap_or_default();
        return Err(format!(
            "{base} refused the device sign-in: HTTP {status} {} {}",
            e.error, e.error_description
        ));
    }
    let code: DeviceCode = resp.json().await.map_err(|e| format!("{base}: {e}"))?;
    let url = if code.verification_uri_complete.is_empty() {
        code.verification_uri.clone()
    } else {
        code.verification_uri_complete.clone()
    };
    eprintln!("To sign this computer in to {base}, open");
    eprintln!("  {url}");
    eprintln!(
        "in a browser where you are signed in, and approve the code {}",
        code.user_code
    );
    eprintln!("(or enter it at {}). Waiting...", code.verification_uri);
    let mut interval = Duration::from_secs(code.interval.clamp(1, 60));
    let deadline = std::time::Instant::now() + Duration::from_secs(code.expires_in.min(3600));
    loop {
        if std::time::Instant::now() > deadline {
            return Err("the code expired before it was approved; run login again".into());
        }
        tokio::time::sleep(interval).await;
        let resp = match http
            .post(format!("{base}/auth/device/token"))
            .json(&serde_json::json!({ "device_code": code.device_code }))
            .send()
            .await
        {
            Ok(r) => r,
            // A network blip: keep polling until the code expires.
            Err(_) => continue,
        };
        if resp.status().is_success() {
            let t: DeviceToken = resp.json().await.map_err(|e| format!("{base}: {e}"))?;
            let mut store = load()?;
            store.registries.insert(
                registry_key(&base),
                Entry {
                    username: t.did.clone(),
                    secret: t.device_secret,
                    handle: t.handle.clone(),
                },
            );
            save(&store)?;
            eprintln!(
                "Signed in to {} as {} ({}).",
                registry_key(&base),
                t.handle,
                t.did
            );
            return Ok(());
        }
        let e: OAuthErr = resp.json().await.unwrap_or_default();
        match e.error.as_str() {
            "authorization_pending" => {}
            "slow_down" => interval += Duration::from_secs(5),
            "access_denied" => return Err("the sign-in was denied in the browser".into()),
            "expired_token" => return Err("the code expired; run login again".into()),
            other => return Err(format!("{base}: {other} {}", e.error_description)),
        }
    }
}

// ---- configure ----------------------------------------------------------------------------

fn docker_config_path() -> PathBuf {
    std::env::var_os("DOCKER_CONFIG")
        .map(|d| PathBuf::from(d).join("config.json"))
        .unwrap_or_else(|| home().join(".docker").join("config.json"))
}

fn containers_auth_path() -> PathBuf {
    std::env::var_os("REGISTRY_AUTH_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| config_home().join("containers").join("auth.json"))
}

/// Adds `"credHelpers": {"<registry>": "atcr"}` to a JSON config, keeping everything else.
fn add_cred_helpers(path: &Path, registries: &[String]) -> Result<(), String> {
    let mut v: serde_json::Value =
        read_json_file::<Option<serde_json::Value>>(path)?.unwrap_or_else(|| serde_json::json!({}));
    let obj = v
        .as_object_mut()
        .ok_or_else(|| format!("{} is not a JSON object", path.display()))?;
    let helpers = obj
        .entry("credHelpers")
        .or_insert_with(|| serde_json::json!({}));
    let helpers = helpers
        .as_object_mut()
        .ok_or_else(|| format!("{}: credHelpers is not an object", path.display()))?;
    for r in registries {
        helpers.insert(registry_key(r), "atcr".into());
    }
    let mut bytes = serde_json::to_vec_pretty(&v).map_err(|e| e.to_string())?;
    bytes.push(b'\n');
    write_private(path, &bytes)?;
    eprintln!(
        "{}: credHelpers -> atcr for {}",
        path.display(),
        registries.join(", ")
    );
    Ok(())
}

fn configure(path: PathBuf, args: &[String]) -> ExitCode {
    let registries: Vec<String> = if args.is_empty() {
        match load() {
            Ok(s) => s.registries.keys().cloned().collect(),
            Err(e) => return fail(e),
        }
    } else {
        args.to_vec()
    };
    if registries.is_empty() {
        return fail("name a registry (or log in to one first)");
    }
    match add_cred_helpers(&path, &registries) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: docker-credential-atcr <get|store|erase|list>   (the credential-helper protocol)\n\
         \x20      docker-credential-atcr login [--name NAME] [--ca-cert FILE] <registry>\n\
         \x20      docker-credential-atcr logout <registry> | status | version\n\
         \x20      docker-credential-atcr configure-docker [<registry>...]\n\
         \x20      docker-credential-atcr configure-containers [<registry>...]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        return usage();
    };
    let rest = &args[1..];
    match cmd.as_str() {
        "get" => get(),
        "store" => store_cmd(),
        "erase" => match stdin_text() {
            Ok(s) => erase(&s),
            Err(e) => fail(e),
        },
        "list" => list(),
        "login" => {
            let mut name = device_name();
            let mut ca: Option<PathBuf> = std::env::var_os("ATCR_CA_CERT").map(PathBuf::from);
            let mut registry = None;
            let mut it = rest.iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--name" => name = it.next().cloned().unwrap_or_default(),
                    "--ca-cert" => ca = it.next().map(PathBuf::from),
                    r if !r.starts_with('-') => registry = Some(r.to_string()),
                    _ => return usage(),
                }
            }
            let Some(registry) = registry else {
                return usage();
            };
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return fail(e),
            };
            match rt.block_on(login(&registry, &name, ca.as_deref())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        "logout" => match rest.first() {
            Some(r) => erase(r),
            None => usage(),
        },
        "status" => {
            match load() {
                Ok(s) if s.registries.is_empty() => eprintln!("not signed in to any registry"),
                Ok(s) => {
                    for (k, e) in &s.registries {
                        let who = if e.handle.is_empty() {
                            &e.username
                        } else {
                            &e.handle
                        };
                        println!("{k}\t{who}\t{}", e.username);
                    }
                }
                Err(e) => return fail(e),
            }
            ExitCode::SUCCESS
        }
        "configure-docker" => configure(docker_config_path(), rest),
        "configure-containers" => configure(containers_auth_path(), rest),
        "version" | "--version" => {
            println!("docker-credential-atcr {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => usage(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_keys_normalise() {
        assert_eq!(
            registry_key("https://Reg.Example.com:5000/v2/"),
            "reg.example.com:5000"
        );
        assert_eq!(registry_key("localhost:5000"), "localhost:5000");
        assert_eq!(registry_key(" http://a.b "), "a.b");
        assert_eq!(base_url("reg.example"), "https://reg.example");
        assert_eq!(base_url("http://127.0.0.1:5000/"), "http://127.0.0.1:5000");
    }
}
