//! `spawn_app()`: a temp data dir, the emulator on :0, the gateway on :0, a reqwest client.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use freshgate::app::{App, AppOptions};
use freshgate::config::{self, Config, DestinationConfig, SourceConfig};
use freshgate_store::Store;
use freshworks_emulator::{EmulatorConfig, RunningEmulator};
use serde_json::Value;
use tokio::sync::oneshot;

pub const WRITE_KEY: &str = "test-write-key";
pub const OTHER_WRITE_KEY: &str = "other-write-key";
pub const WEBHOOK_SECRET: &str = "s3cr3t";

/// How a test wants the app.
pub struct Setup {
    pub emulator: EmulatorConfig,
    pub destination: DestinationConfig,
    pub with_destination: bool,
    pub pause_probe: Duration,
    pub writer_queue: usize,
    /// Last changes to the configuration (after the test sources and destination).
    pub tweak: fn(&mut Config),
    /// More environment variables for the configuration's `*_env` keys.
    pub env: Vec<(&'static str, &'static str)>,
    /// `FRESHGATE_ADMIN_TOKEN` of the console (none: open, as on loopback).
    pub admin_token: Option<String>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            emulator: EmulatorConfig::default(),
            destination: DestinationConfig {
                concurrency: 4,
                ..DestinationConfig::default()
            },
            with_destination: true,
            pause_probe: Duration::from_millis(500),
            writer_queue: 1024,
            tweak: |_| {},
            env: Vec::new(),
            admin_token: None,
        }
    }
}

pub struct TestApp {
    pub url: String,
    /// The web console and admin API.
    pub admin_url: String,
    pub client: reqwest::Client,
    pub emulator: RunningEmulator,
    pub store: Arc<dyn Store>,
    /// Kept so the directory lives as long as the app.
    data_dir: tempfile::TempDir,
    gateway: Gateway,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// What it takes to start the gateway again over the same data dir and emulator.
struct Gateway {
    config: Config,
    env: BTreeMap<String, String>,
    writer_queue: usize,
    pause_probe: Duration,
    admin_token: Option<String>,
}

/// A running gateway: its URL, console URL, store, shutdown trigger and task.
type Started = (
    String,
    String,
    Arc<dyn Store>,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
);

impl Gateway {
    async fn start(&self, data_dir: &std::path::Path) -> Started {
        let resolved = config::resolve(self.config.clone(), "test", &self.env).unwrap();
        let store = freshgate::cli::open_store(data_dir, self.writer_queue).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let options = AppOptions {
            pause_probe: self.pause_probe,
            housekeeping_every: Duration::from_millis(200),
            ..AppOptions::default()
        };
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_url = format!("http://{}", admin.local_addr().unwrap());
        let auth =
            freshgate::admin::AdminAuth::new(admin.local_addr().unwrap(), self.admin_token.clone())
                .unwrap();
        let app = App::build(resolved, Arc::clone(&store), options)
            .await
            .unwrap()
            .with_admin(admin, auth);
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(app.run(listener, async move {
            let _ = rx.await;
        }));
        (format!("http://{addr}"), admin_url, store, tx, handle)
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Setup::default()).await
}

pub fn test_config(emulator_url: &str, setup: &Setup, data_dir: PathBuf) -> Config {
    let mut cfg = Config::default();
    cfg.server.data_dir = data_dir;
    cfg.store.writer_queue = setup.writer_queue;
    cfg.sources.push(SourceConfig {
        name: "web".into(),
        write_keys: vec![WRITE_KEY.into()],
        webhook_secret_env: Some("TEST_WEBHOOK_SECRET".into()),
        ..SourceConfig::default()
    });
    cfg.sources.push(SourceConfig {
        name: "backend".into(),
        write_keys: vec![OTHER_WRITE_KEY.into()],
        ..SourceConfig::default()
    });
    if setup.with_destination {
        let mut d = setup.destination.clone();
        d.base_url = Some(emulator_url.to_owned());
        d.api_key_env = "TEST_FRESHWORKS_KEY".into();
        cfg.destinations.push(d);
    }
    (setup.tweak)(&mut cfg);
    cfg
}

pub async fn spawn_app_with(setup: Setup) -> TestApp {
    let emulator = RunningEmulator::start(setup.emulator.clone())
        .await
        .unwrap();
    let data_dir = tempfile::tempdir().unwrap();
    let mut env = BTreeMap::new();
    env.insert("TEST_WEBHOOK_SECRET".to_owned(), WEBHOOK_SECRET.to_owned());
    env.insert(
        "TEST_FRESHWORKS_KEY".to_owned(),
        setup.emulator.api_key.clone(),
    );
    for (k, v) in &setup.env {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    let gateway = Gateway {
        config: test_config(&emulator.base_url, &setup, data_dir.path().to_path_buf()),
        env,
        writer_queue: setup.writer_queue,
        pause_probe: setup.pause_probe,
        admin_token: setup.admin_token.clone(),
    };
    let (url, admin_url, store, tx, handle) = gateway.start(data_dir.path()).await;
    TestApp {
        url,
        admin_url,
        client: reqwest::Client::new(),
        emulator,
        store,
        data_dir,
        gateway,
        shutdown: Some(tx),
        handle: Some(handle),
    }
}

impl TestApp {
    /// POST a JSON body to a path with Basic auth.
    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.url))
            .basic_auth(WRITE_KEY, Some(""))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// POST raw bytes with chosen headers.
    pub async fn post_raw(
        &self,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self.client.post(format!("{}{path}", self.url)).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.unwrap()
    }

    pub async fn batch(&self, events: Vec<Value>) {
        let r = self
            .post("/v1/batch", &serde_json::json!({"batch": events}))
            .await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    /// Contacts in the emulator, by email.
    pub fn contacts(&self) -> Vec<Value> {
        self.emulator.state.contacts()
    }

    pub fn contact_by_email(&self, email: &str) -> Option<Value> {
        self.contacts()
            .into_iter()
            .find(|c| c["email"].as_str() == Some(email))
    }

    /// Calls the emulator received, optionally only those whose path contains `needle`.
    pub fn calls(&self, needle: &str) -> usize {
        self.emulator
            .state
            .request_log()
            .iter()
            .filter(|r| r.path.contains(needle))
            .count()
    }

    /// Wait until nothing is pending for any destination.
    pub async fn drain(&self) {
        self.wait_for("queue drained", || async {
            let s = self.store.stats().await.unwrap();
            s.destinations.iter().all(|d| d.pending == 0)
        })
        .await;
    }

    pub async fn wait_for<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        wait_for(what, Duration::from_secs(30), &mut check).await;
    }

    /// Stop the gateway (graceful drain, store closed) and start it again over the same data
    /// dir and emulator, as a restarted process would.
    pub async fn restart(mut self) -> Self {
        self.stop_gateway().await;
        let (url, admin_url, store, tx, handle) = self.gateway.start(self.data_dir.path()).await;
        self.url = url;
        self.admin_url = admin_url;
        self.store = store;
        self.shutdown = Some(tx);
        self.handle = Some(handle);
        self
    }

    /// [`TestApp::restart`] with a changed configuration (as an operator edits the file).
    pub async fn restart_with(mut self, change: impl FnOnce(&mut Config)) -> Self {
        change(&mut self.gateway.config);
        self.restart().await
    }

    async fn stop_gateway(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.unwrap().unwrap();
        }
    }

    pub async fn stop(mut self) {
        self.stop_gateway().await;
        self.emulator.stop().await;
    }
}

pub async fn wait_for<F, Fut>(what: &str, limit: Duration, check: &mut F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A minimal valid identify.
pub fn identify(user: &str, email: &str, traits: Value, ts: &str, message_id: &str) -> Value {
    let mut t = traits;
    t["email"] = Value::String(email.to_owned());
    serde_json::json!({
        "type": "identify", "userId": user, "traits": t, "timestamp": ts, "messageId": message_id
    })
}
