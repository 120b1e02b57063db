//! The real official clients: `@segment/analytics-node` 3.1.0 from npm and
//! `segment-analytics-python` 2.4.0 from PyPI, installed into a cache directory and pointed at a
//! running server by changing only their host.

use std::path::PathBuf;
use std::process::Command;

use crate::helpers::*;

fn cache_dir() -> PathBuf {
    let base = std::env::var_os("FRESHGATE_COMPAT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("freshgate-compat-clients"));
    std::fs::create_dir_all(&base).unwrap();
    base
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_analytics_node_3_1_0() {
    let dir = cache_dir().join("node");
    std::fs::create_dir_all(&dir).unwrap();
    if !dir
        .join("node_modules/@segment/analytics-node/package.json")
        .exists()
    {
        run(
            Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--prefix"])
                .arg(&dir)
                .arg("@segment/analytics-node@3.1.0"),
            "npm install @segment/analytics-node@3.1.0",
        );
    }
    let app = spawn_app().await;
    let script = format!(
        r#"
const {{ Analytics }} = require('@segment/analytics-node');
const a = new Analytics({{ writeKey: '{WRITE_KEY}', host: '{url}', flushAt: 2 }});
a.identify({{ userId: 'node-user', traits: {{ email: 'node@example.com', firstName: 'Node' }}, messageId: 'node-compat-1' }});
a.track({{ userId: 'node-user', event: 'Compat Tested', messageId: 'node-compat-2' }});
a.closeAndFlush().then(() => console.log('flushed'));
"#,
        url = app.url
    );
    run(
        Command::new("node")
            .arg("-e")
            .arg(&script)
            .current_dir(&dir),
        "node analytics-node",
    );
    for id in ["node-compat-1", "node-compat-2"] {
        assert_eq!(app.store.event_traces(id).await.unwrap().len(), 1, "{id}");
    }
    app.drain().await;
    assert_eq!(
        app.contact_by_email("node@example.com").unwrap()["first_name"],
        "Node"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_analytics_python_2_4_0_with_gzip() {
    let venv = cache_dir().join("py-venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "python3 -m venv",
        );
    }
    let check = Command::new(&python)
        .args(["-c", "import segment.analytics"])
        .output()
        .unwrap();
    if !check.status.success() {
        run(
            Command::new(&python).args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "segment-analytics-python==2.4.0",
            ]),
            "pip install segment-analytics-python==2.4.0",
        );
    }
    let app = spawn_app().await;
    let script = format!(
        r#"
import segment.analytics as analytics
errors = []
analytics.write_key = '{WRITE_KEY}'
analytics.host = '{url}'
analytics.gzip = True
analytics.sync_mode = True
analytics.on_error = lambda e, batch: errors.append(e)
analytics.identify('py-user', {{'email': 'py@example.com', 'first_name': 'Py'}}, message_id='py-compat-1')
analytics.track('py-user', 'Compat Tested', message_id='py-compat-2')
analytics.flush()
assert not errors, errors
print('ok')
"#,
        url = app.url
    );
    run(
        Command::new(&python).arg("-c").arg(&script),
        "python analytics",
    );
    for id in ["py-compat-1", "py-compat-2"] {
        assert_eq!(app.store.event_traces(id).await.unwrap().len(), 1, "{id}");
    }
    app.drain().await;
    assert_eq!(
        app.contact_by_email("py@example.com").unwrap()["first_name"],
        "Py"
    );
    app.stop().await;
}
