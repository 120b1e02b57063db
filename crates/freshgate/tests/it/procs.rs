//! Real processes for end-to-end tests: the `freshgate` binary as server and as emulator
//! (killed with SIGKILL when dropped), a site (config + data dir) pointing at the emulator, and
//! the calls a Segment client makes.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use freshgate_core::fields::FieldDef;
use freshgate_core::mapping::FieldIndex;
use serde_json::{Value, json};

pub(crate) const KEY: &str = "quota-test-key";
pub(crate) const KEY_VAR: &str = "QUOTA_TEST_FRESHWORKS_KEY";
pub(crate) const WRITE_KEY: &str = "quota-write-key";

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// A child process killed (SIGKILL) when dropped.
pub(crate) struct Proc(pub(crate) Arc<Mutex<Child>>);

impl Proc {
    pub(crate) fn kill9(&self) {
        let mut c = self.0.lock().unwrap();
        let _ = c.kill();
        let _ = c.wait();
    }
    pub(crate) fn exited(&self) -> bool {
        self.0.lock().unwrap().try_wait().unwrap().is_some()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Spawn and return the `http://…` word of the first stdout line that has one.
pub(crate) fn spawn_url(cmd: &mut Command) -> (Proc, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let proc = Proc(Arc::new(Mutex::new(child)));
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines.next().expect("process printed its URL").unwrap();
        if let Some(w) = line.split_whitespace().find(|w| w.starts_with("http://")) {
            break w.to_owned();
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    (proc, url)
}

pub(crate) struct Emulator {
    pub(crate) _proc: Proc,
    pub(crate) base: String,
    pub(crate) admin: String,
    pub(crate) scale: f64,
}

pub(crate) fn emulator(hourly: u32, minute: u32, scale: f64) -> Emulator {
    let (proc, base) = spawn_url(
        Command::new(env!("CARGO_BIN_EXE_freshgate"))
            .args(["emulator", "--listen", "127.0.0.1:0", "--api-key", KEY])
            .args(["--hourly-limit", &hourly.to_string()])
            .args(["--minute-limit", &minute.to_string()])
            .args(["--time-scale", &scale.to_string()])
            .env_remove("FRESHWORKS_API_KEY")
            .env("RUST_LOG", "warn"),
    );
    let admin = base.replace("/crm/sales/api", "/__emulator");
    Emulator {
        _proc: proc,
        base,
        admin,
        scale,
    }
}

/// One logged API call of the emulator.
#[derive(Debug, Clone)]
pub(crate) struct Logged {
    pub(crate) path: String,
    pub(crate) status: u16,
    pub(crate) body: String,
    pub(crate) counted: bool,
    /// Wall seconds since the Unix epoch.
    pub(crate) at: f64,
}

/// `(bulk_upsert calls, job status polls)` in a call log.
pub(crate) fn bulk_calls(log: &[Logged]) -> (usize, usize) {
    let count = |f: &dyn Fn(&str) -> bool| log.iter().filter(|l| f(&l.path)).count();
    (
        count(&|p| p.ends_with("/bulk_upsert")),
        count(&|p| p.contains("/job_statuses/")),
    )
}

impl Emulator {
    pub(crate) async fn get(&self, what: &str) -> Value {
        http()
            .get(format!("{}/{what}", self.admin))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
    pub(crate) async fn post(&self, what: &str, body: Value) {
        let r = http()
            .post(format!("{}/{what}", self.admin))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{what}: {}", r.status());
    }
    pub(crate) async fn clear_faults(&self) {
        let r = http()
            .delete(format!("{}/faults", self.admin))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    pub(crate) async fn contacts(&self) -> Vec<Value> {
        self.get("state").await["contacts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
    pub(crate) async fn log(&self) -> Vec<Logged> {
        let v = self.get("requests").await;
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let at = time::OffsetDateTime::parse(
                    r["at"].as_str().unwrap(),
                    &time::format_description::well_known::Rfc3339,
                )
                .unwrap();
                Logged {
                    path: r["path"].as_str().unwrap().to_owned(),
                    status: u16::try_from(r["status"].as_u64().unwrap()).unwrap(),
                    body: r["body"].as_str().unwrap_or("").to_owned(),
                    counted: r["counted"].as_bool().unwrap(),
                    at: at.unix_timestamp_nanos() as f64 / 1e9,
                }
            })
            .collect()
    }
    /// The account's field metadata, as freshgate reads it (one counted call).
    pub(crate) async fn field_index(&self) -> FieldIndex {
        let v: Value = http()
            .get(format!("{}/settings/contacts/fields", self.base))
            .header("Authorization", format!("Token token={KEY}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let defs: Vec<FieldDef> = serde_json::from_value(v["fields"].clone()).unwrap();
        FieldIndex::new(&defs)
    }
}

pub(crate) fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

/// A temp dir with a config file pointing at the emulator.
pub(crate) struct Site {
    pub(crate) dir: tempfile::TempDir,
    /// The PostgreSQL database of the queue (`[store] kind = "postgres"`), if not SQLite.
    pub(crate) database_url: Option<String>,
}

impl Site {
    /// Run a `freshgate` command against this site's config and data dir; its stdout (the
    /// command must succeed).
    pub(crate) fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_freshgate"))
            .args(args)
            .arg("--config")
            .arg(self.config())
            .arg("--data-dir")
            .arg(self.data())
            .env(KEY_VAR, KEY)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub(crate) fn new(emu: &Emulator, destination_extra: &str) -> Self {
        Self::with_store(emu, destination_extra, None)
    }
    /// A site whose queue is the PostgreSQL database at `database_url` (else SQLite).
    pub(crate) fn with_store(
        emu: &Emulator,
        destination_extra: &str,
        database_url: Option<String>,
    ) -> Self {
        let site = Self {
            dir: tempfile::tempdir().unwrap(),
            database_url,
        };
        site.rewrite(emu, destination_extra);
        site
    }
    /// Write the config file again (read by the next server started).
    pub(crate) fn rewrite(&self, emu: &Emulator, destination_extra: &str) {
        let store = if self.database_url.is_some() {
            "[store]\nkind = \"postgres\"\n\n"
        } else {
            ""
        };
        let cfg = format!(
            "{store}[[sources]]\nname = \"web\"\nwrite_keys = [\"{WRITE_KEY}\"]\n\n\
             [[destinations]]\nname = \"crm\"\nbase_url = \"{}\"\napi_key_env = \"{KEY_VAR}\"\n{destination_extra}\n",
            emu.base
        );
        std::fs::write(self.config(), cfg).unwrap();
    }
    pub(crate) fn config(&self) -> PathBuf {
        self.dir.path().join("freshgate.toml")
    }
    pub(crate) fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    pub(crate) fn serve(&self, scale: f64) -> (Proc, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_freshgate"));
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--log-format", "json"])
        .args(["--time-scale", &scale.to_string(), "--config"])
        .arg(self.config())
        .arg("--data-dir")
        .arg(self.data())
        .env(KEY_VAR, KEY)
        .env("RUST_LOG", "warn");
        if let Some(url) = &self.database_url {
            cmd.env("DATABASE_URL", url);
        }
        spawn_url(&mut cmd)
    }
    /// `freshgate dlq list --json` (run while no server holds the store).
    pub(crate) fn dead_letters(&self) -> Vec<Value> {
        serde_json::from_str(&self.cli(&["dlq", "list", "--json", "--limit", "100000"])).unwrap()
    }
}

/// POST a batch until it gets a 200 (a client's retries). `None` if the server is gone.
pub(crate) async fn post_batch(url: &str, events: &[Value]) -> Option<()> {
    for _ in 0..200 {
        let r = http()
            .post(format!("{url}/v1/batch"))
            .basic_auth(WRITE_KEY, Some(""))
            .json(&json!({ "batch": events }))
            .send()
            .await;
        match r {
            Ok(r) if r.status() == 200 => return Some(()),
            Ok(r) if r.status() == 503 => tokio::time::sleep(Duration::from_millis(50)).await,
            Ok(r) => panic!("batch refused: {} {}", r.status(), r.text().await.unwrap()),
            Err(_) => return None,
        }
    }
    panic!("the server stayed saturated");
}

pub(crate) async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    loop {
        match check().await {
            Ok(()) => return,
            Err(e) => assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub(crate) fn identify(
    user: &str,
    email: &str,
    traits: Value,
    ts_ms: i64,
    message_id: &str,
) -> Value {
    let mut t = traits;
    t["email"] = Value::String(email.to_owned());
    let ts = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts_ms) * 1_000_000)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    json!({"type": "identify", "userId": user, "traits": t, "timestamp": ts, "messageId": message_id})
}

/// A contact's value of a field by internal name (built-in at the top, custom under
/// `custom_field`).
pub(crate) fn field_of<'a>(contact: &'a Value, name: &str) -> &'a Value {
    if name.starts_with("cf_") {
        &contact["custom_field"][name]
    } else {
        &contact[name]
    }
}

pub(crate) fn same_value(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() < 1e-9,
        _ => a == b,
    }
}
