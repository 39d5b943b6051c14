//! The device flow of `docker-credential-atcr` (RFC 8628 in spirit, atcr's endpoints):
//!
//! 1. the helper asks `POST /auth/device/code` -> a `device_code` (secret, for polling), a
//!    short `user_code` (`BCDF-GHJK`) and the `/device` URL to show;
//! 2. the user, signed in on the web UI, opens `/device`, checks the code and the device's
//!    name and address, and approves (or denies);
//! 3. the helper polls `POST /auth/device/token` (no faster than `interval`) and, once
//!    approved, receives a **device secret** (`atcr_device_…`, 256 random bits) exactly once;
//! 4. `/auth/token` accepts `<DID or handle> : <device secret>` as Basic credentials: no PDS
//!    call; pushes write records through the DID's stored session (OAuth or app password);
//! 5. `/settings` lists the user's devices; revoking one makes its next token request fail.
//!
//! Only hashes are keys: pending codes under `device-code/<sha256(device_code)>` (and the
//! user code pointing at it), devices under `device/<sha256(secret)>`, all sealed like the
//! PDS sessions. Pending codes live ten minutes.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::sessions::{SessionError, SessionStore};
use crate::atproto::dpop::random_id;
use crate::registry::store::now_unix;

pub const SECRET_PREFIX: &str = "atcr_device_";
pub const CODE_TTL_SECS: u64 = 600;
pub const POLL_INTERVAL_SECS: u64 = 5;
/// Pending codes per client address, and in total.
const MAX_PENDING_PER_ADDR: usize = 10;
const MAX_PENDING: usize = 1000;
/// Consonants only: no vowels (no words), no look-alikes.
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";
/// `last_used` is written at most this often per device.
const TOUCH_EVERY_SECS: u64 = 60;
const MAX_NAME: usize = 64;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Device {
    /// A public id (for the settings page and revocation forms).
    pub id: String,
    pub did: String,
    pub handle: String,
    pub name: String,
    pub created_unix: u64,
    pub last_used_unix: u64,
    /// The address that asked for the code.
    #[serde(default)]
    pub addr: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingDevice {
    pub user_code: String,
    pub name: String,
    pub addr: String,
    pub created_unix: u64,
    #[serde(default)]
    pub approved: Option<(String, String)>,
    #[serde(default)]
    pub denied: bool,
    #[serde(default)]
    pub last_poll_unix: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeviceCode {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: String,
    pub expires_in: u64,
    pub interval: u64,
}

#[derive(Debug, PartialEq)]
pub enum Poll {
    Pending,
    SlowDown,
    Denied,
    Expired,
    Approved {
        secret: String,
        did: String,
        handle: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("too many device sign-ins are waiting; try again in a few minutes")]
    TooMany,
    #[error("{0}")]
    Store(#[from] SessionError),
}

fn sha_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}
fn code_key(device_code: &str) -> String {
    format!("device-code/{}", sha_hex(device_code))
}
fn user_key(user_code: &str) -> String {
    format!("device-user/{user_code}")
}
fn device_key(secret: &str) -> String {
    format!("device/{}", sha_hex(secret))
}

/// `bcdf ghjk` / `BCDF-GHJK` -> `BCDFGHJK`.
pub fn normalize_user_code(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .take(16)
        .collect()
}

/// `BCDFGHJK` -> `BCDF-GHJK`.
pub fn display_user_code(s: &str) -> String {
    if s.len() == 8 {
        format!("{}-{}", &s[..4], &s[4..])
    } else {
        s.to_string()
    }
}

fn new_user_code() -> String {
    let mut b = [0u8; 8];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    b.iter()
        .map(|x| USER_CODE_ALPHABET[*x as usize % USER_CODE_ALPHABET.len()] as char)
        .collect()
}

fn clean_name(name: &str) -> String {
    let n: String = name
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME)
        .collect();
    if n.trim().is_empty() {
        "unnamed device".into()
    } else {
        n.trim().to_string()
    }
}

pub struct DeviceFlow {
    sessions: Arc<SessionStore>,
}

impl DeviceFlow {
    pub fn new(sessions: Arc<SessionStore>) -> DeviceFlow {
        DeviceFlow { sessions }
    }

    async fn pending(&self) -> Result<Vec<(String, PendingDevice)>, SessionError> {
        let all = self
            .sessions
            .list_sealed::<PendingDevice>("device-code/")
            .await?;
        let now = now_unix();
        let mut live = Vec::new();
        for (k, p) in all {
            if p.created_unix + CODE_TTL_SECS < now {
                let _ = self.sessions.delete_sealed(&k).await;
                let _ = self.sessions.delete_sealed(&user_key(&p.user_code)).await;
            } else {
                live.push((k, p));
            }
        }
        Ok(live)
    }

    /// Step 1: a new code pair for a device called `name` asking from `addr`.
    pub async fn create(
        &self,
        name: &str,
        addr: &str,
        base: &str,
    ) -> Result<DeviceCode, DeviceError> {
        let pending = self.pending().await?;
        if pending.len() >= MAX_PENDING
            || pending.iter().filter(|(_, p)| p.addr == addr).count() >= MAX_PENDING_PER_ADDR
        {
            return Err(DeviceError::TooMany);
        }
        let device_code = random_id(32);
        let user_code = new_user_code();
        let p = PendingDevice {
            user_code: user_code.clone(),
            name: clean_name(name),
            addr: addr.to_string(),
            created_unix: now_unix(),
            approved: None,
            denied: false,
            last_poll_unix: 0,
        };
        let ck = code_key(&device_code);
        self.sessions.put_sealed(&ck, &ck, &p).await?;
        let uk = user_key(&user_code);
        self.sessions.put_sealed(&uk, &uk, &ck).await?;
        let base = base.trim_end_matches('/');
        Ok(DeviceCode {
            device_code,
            verification_uri: format!("{base}/device"),
            verification_uri_complete: format!(
                "{base}/device?code={}",
                display_user_code(&user_code)
            ),
            user_code: display_user_code(&user_code),
            expires_in: CODE_TTL_SECS,
            interval: POLL_INTERVAL_SECS,
        })
    }

    /// The pending request a user code names (for the approval page).
    pub async fn lookup(&self, user_code: &str) -> Result<Option<PendingDevice>, SessionError> {
        let code = normalize_user_code(user_code);
        if code.is_empty() {
            return Ok(None);
        }
        let uk = user_key(&code);
        let Some(ck) = self.sessions.get_sealed::<String>(&uk, &uk).await? else {
            return Ok(None);
        };
        let p: Option<PendingDevice> = self.sessions.get_sealed(&ck, &ck).await?;
        Ok(p.filter(|p| {
            p.created_unix + CODE_TTL_SECS >= now_unix() && p.approved.is_none() && !p.denied
        }))
    }

    /// Step 2: the signed-in user approves (or denies) the request named by `user_code`.
    pub async fn decide(
        &self,
        user_code: &str,
        did: &str,
        handle: &str,
        approve: bool,
    ) -> Result<bool, SessionError> {
        let code = normalize_user_code(user_code);
        let uk = user_key(&code);
        let Some(ck) = self.sessions.get_sealed::<String>(&uk, &uk).await? else {
            return Ok(false);
        };
        let Some(mut p) = self.sessions.get_sealed::<PendingDevice>(&ck, &ck).await? else {
            return Ok(false);
        };
        if p.created_unix + CODE_TTL_SECS < now_unix() || p.approved.is_some() || p.denied {
            return Ok(false);
        }
        if approve {
            p.approved = Some((did.to_string(), handle.to_string()));
        } else {
            p.denied = true;
        }
        self.sessions.put_sealed(&ck, &ck, &p).await?;
        self.sessions.delete_sealed(&uk).await?;
        Ok(true)
    }

    /// Step 3: the helper polls.
    pub async fn poll(&self, device_code: &str) -> Result<Poll, SessionError> {
        if device_code.is_empty() || device_code.len() > 128 {
            return Ok(Poll::Expired);
        }
        let ck = code_key(device_code);
        let Some(mut p) = self.sessions.get_sealed::<PendingDevice>(&ck, &ck).await? else {
            return Ok(Poll::Expired);
        };
        let now = now_unix();
        if p.created_unix + CODE_TTL_SECS < now {
            self.sessions.delete_sealed(&ck).await?;
            return Ok(Poll::Expired);
        }
        if p.denied {
            self.sessions.delete_sealed(&ck).await?;
            return Ok(Poll::Denied);
        }
        let Some((did, handle)) = p.approved.clone() else {
            let too_fast = p.last_poll_unix + POLL_INTERVAL_SECS > now + 1;
            p.last_poll_unix = now;
            self.sessions.put_sealed(&ck, &ck, &p).await?;
            return Ok(if too_fast {
                Poll::SlowDown
            } else {
                Poll::Pending
            });
        };
        // Approved: hand out the secret exactly once (the take wins a concurrent poll).
        if self
            .sessions
            .take_sealed::<PendingDevice>(&ck, &ck)
            .await?
            .is_none()
        {
            return Ok(Poll::Expired);
        }
        let secret = format!("{SECRET_PREFIX}{}", random_id(32));
        let device = Device {
            id: random_id(9),
            did: did.clone(),
            handle: handle.clone(),
            name: p.name,
            created_unix: now,
            last_used_unix: now,
            addr: p.addr,
        };
        let dk = device_key(&secret);
        self.sessions.put_sealed(&dk, &dk, &device).await?;
        tracing::info!(%did, device = %device.id, name = %device.name, "device approved");
        Ok(Poll::Approved {
            secret,
            did,
            handle,
        })
    }

    /// Step 4: the device a secret belongs to (None: unknown or revoked).
    pub async fn authenticate(&self, secret: &str) -> Result<Option<Device>, SessionError> {
        if !secret.starts_with(SECRET_PREFIX) || secret.len() > 128 {
            return Ok(None);
        }
        // The key is a hash of the secret: the lookup itself compares nothing secret.
        let dk = device_key(secret);
        let Some(mut d) = self.sessions.get_sealed::<Device>(&dk, &dk).await? else {
            return Ok(None);
        };
        let now = now_unix();
        if d.last_used_unix + TOUCH_EVERY_SECS < now {
            d.last_used_unix = now;
            self.sessions.put_sealed(&dk, &dk, &d).await?;
        }
        Ok(Some(d))
    }

    /// Step 5: the user's devices, newest first.
    pub async fn list(&self, did: &str) -> Result<Vec<Device>, SessionError> {
        let mut out: Vec<Device> = self
            .sessions
            .list_sealed::<Device>("device/")
            .await?
            .into_iter()
            .map(|(_, d)| d)
            .filter(|d| d.did == did)
            .collect();
        out.sort_by_key(|d| std::cmp::Reverse(d.created_unix));
        Ok(out)
    }

    /// Revokes the device `id` of `did` (`None`: all of them); returns how many.
    pub async fn revoke(&self, did: &str, id: Option<&str>) -> Result<usize, SessionError> {
        let mut n = 0;
        for (k, d) in self.sessions.list_sealed::<Device>("device/").await? {
            if d.did == did && id.is_none_or(|i| i == d.id) {
                self.sessions.delete_sealed(&k).await?;
                tracing::info!(%did, device = %d.id, "device revoked");
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::atproto::xrpc::XrpcClient;
    use crate::registry::store::MetaStore;

    #[tokio::test]
    async fn the_whole_flow_and_revocation() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetaStore::open(&dir.path().join("r.redb")).unwrap();
        let ss = Arc::new(SessionStore::new(store, [1u8; 32], XrpcClient::default()));
        let flow = DeviceFlow::new(ss);
        let c = flow
            .create("laptop\n", "10.0.0.1", "https://r.example/")
            .await
            .unwrap();
        assert_eq!(c.verification_uri, "https://r.example/device");
        assert_eq!(c.user_code.len(), 9);
        assert_eq!(flow.poll(&c.device_code).await.unwrap(), Poll::Pending);
        assert_eq!(flow.poll(&c.device_code).await.unwrap(), Poll::SlowDown);
        let p = flow
            .lookup(&c.user_code.to_lowercase())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.name, "laptop");
        assert!(flow
            .decide(&c.user_code, "did:plc:a", "a.test", true)
            .await
            .unwrap());
        // The user code is spent.
        assert!(!flow
            .decide(&c.user_code, "did:plc:evil", "e", true)
            .await
            .unwrap());
        let Poll::Approved { secret, did, .. } = flow.poll(&c.device_code).await.unwrap() else {
            panic!("not approved")
        };
        assert_eq!(did, "did:plc:a");
        assert!(secret.starts_with(SECRET_PREFIX));
        // Handed out once.
        assert_eq!(flow.poll(&c.device_code).await.unwrap(), Poll::Expired);
        let d = flow.authenticate(&secret).await.unwrap().unwrap();
        assert_eq!(d.did, "did:plc:a");
        assert!(flow
            .authenticate("atcr_device_nope")
            .await
            .unwrap()
            .is_none());
        assert_eq!(flow.list("did:plc:a").await.unwrap().len(), 1);
        assert!(flow.list("did:plc:b").await.unwrap().is_empty());
        // Someone else cannot revoke it; the owner can.
        assert_eq!(flow.revoke("did:plc:b", Some(&d.id)).await.unwrap(), 0);
        assert_eq!(flow.revoke("did:plc:a", Some(&d.id)).await.unwrap(), 1);
        assert!(flow.authenticate(&secret).await.unwrap().is_none());

        // Denied requests say so.
        let c = flow
            .create("x", "10.0.0.1", "https://r.example")
            .await
            .unwrap();
        assert!(flow
            .decide(&c.user_code, "did:plc:a", "a", false)
            .await
            .unwrap());
        assert_eq!(flow.poll(&c.device_code).await.unwrap(), Poll::Denied);
    }
}
