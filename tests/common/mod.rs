//! Shared test harness: a real server on 127.0.0.1:0 over a temp data dir, driven with a
//! real HTTP client.
#![allow(dead_code)]

use atcr::config::Config;
use atcr::server::Running;

pub struct TestServer {
    pub running: Running,
    pub base: String,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// Start with a config tweak applied to the defaults.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::for_data_dir(dir.path());
        tweak(&mut config);
        let running = atcr::server::spawn(config).await.expect("server starts");
        let base = running.base_url();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        TestServer { running, base, client, dir }
    }

    /// Stop and start again on the same data dir (restart survival tests).
    pub async fn restart(self) -> TestServer {
        let TestServer { running, dir, client, .. } = self;
        let config = running.state.config.clone();
        running.stop().await;
        let running = atcr::server::spawn(config).await.expect("server restarts");
        let base = running.base_url();
        TestServer { running, base, client, dir }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
}
