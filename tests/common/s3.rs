//! A real S3 server in-process: s3s-fs (files on disk) behind s3s, which verifies SigV4
//! signatures and presigned-URL expiry like AWS does.

use std::net::SocketAddr;

use hyper_util::rt::{TokioExecutor, TokioIo};

pub const ACCESS_KEY: &str = "testkey";
pub const SECRET_KEY: &str = "testsecret";

pub struct S3Server {
    pub addr: SocketAddr,
    pub endpoint: String,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
    stopped: tokio::sync::watch::Sender<bool>,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl S3Server {
    pub async fn start() -> S3Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = s3s_fs::FileSystem::new(dir.path()).expect("s3s-fs");
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().unwrap();
        let (stopped, watch) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let service = service.clone();
                let mut watch = watch.clone();
                tokio::spawn(async move {
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(sock), service);
                    // Dropping the connection closes its socket: kept-alive clients are cut too.
                    tokio::select! {
                        _ = conn => {}
                        _ = watch.wait_for(|s| *s) => {}
                    }
                });
            }
        });
        S3Server {
            stopped,
            addr,
            endpoint: format!("http://{addr}"),
            _dir: dir,
            task,
        }
    }

    /// Stop answering (the "S3 unreachable mid-push" fault, for real: the port closes).
    pub fn stop(&self) {
        self.task.abort();
        let _ = self.stopped.send(true);
    }

    pub fn settings(&self, bucket: &str, spill: &std::path::Path) -> atcr::blob::s3::S3Settings {
        atcr::blob::s3::S3Settings {
            endpoint: self.endpoint.clone(),
            region: "us-east-1".into(),
            bucket: bucket.into(),
            path_style: true,
            access_key: ACCESS_KEY.into(),
            secret_key: SECRET_KEY.into(),
            prefix: "docker/registry/v2".into(),
            cdn_host: String::new(),
            presign_secs: 600,
            part_size: atcr::blob::s3::MIN_PART_SIZE,
            spill_dir: spill.to_path_buf(),
        }
    }

    /// Point a server config at this S3 server.
    pub fn configure(&self, c: &mut atcr::config::Config, bucket: &str) {
        c.storage.backend = "s3".into();
        let s3 = &mut c.storage.s3;
        s3.endpoint = self.endpoint.clone();
        s3.bucket = bucket.into();
        s3.access_key = ACCESS_KEY.into();
        s3.secret_key = atcr::config::Secret(SECRET_KEY.into());
        s3.part_size_mib = 5;
        s3.create_bucket = true;
    }
}
