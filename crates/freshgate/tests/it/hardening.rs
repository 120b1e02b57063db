//! Hostile input: forged webhook batches, unauthenticated bodies, client-made metric labels,
//! slow clients, refusals without a body, a store that cannot write, a closed stdout.

#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    // Enough rejected rows that the output overflows the pipe buffer.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = freshgate::cli::open_store(dir.path(), 16).unwrap();
        let rejected = (0..400)
            .map(|i| freshgate_store::RejectedInput {
                source: Some("web".into()),
                raw: format!("{{\"n\":{i},\"pad\":\"{}\"}}", "p".repeat(1000)).into_bytes(),
                reason: "missing userId and anonymousId".into(),
                received_at_ms: 1_700_000_000_000,
            })
            .collect();
        store
            .append(freshgate_store::AppendBatch {
                events: Vec::new(),
                rejected,
                dedup_window_ms: 1,
            })
            .await
            .unwrap();
        store.close().await;
    });
    // `freshgate events rejected | head -2`
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_freshgate"))
        .args(["events", "rejected", "--limit", "400", "--data-dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let stdout = child.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(stdout).lines();
        for _ in 0..2 {
            lines.next().unwrap().unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}
