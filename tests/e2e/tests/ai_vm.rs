//! Managed AI from inside a real VM: code in a Debian guest under QEMU reaches the AI proxy on
//! the bridge with the environment every login shell gets (no key), with `curl` and with the
//! real `openai` SDK; the owner's credits drop by exactly the ledger's charges; once the credits
//! are gone the VM gets 402 while SSH and apps keep working; in BYOK mode the guest's login
//! shells get the user's own provider key instead of the managed pair and the proxy answers
//! 403, until the workspace is managed again.
//!
//! The upstream is `rigbox-fake-ai` on the host's loopback (no traffic leaves the machine).
//! Same conditions as the other VM suites (`RIGBOX_VM_TESTS=1`, set by `scripts/test`).

mod support;

use rigbox_testkit::workspace_bin;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use support::{enabled, ip_of, Vms};

/// The fake upstream as a process (the test's own runtime blocks on SSH calls).
struct FakeUpstream {
    child: Child,
    openrouter_url: String,
}

impl FakeUpstream {
    fn start() -> Self {
        let mut child = Command::new(workspace_bin("rigbox-fake-ai"))
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("rigbox-fake-ai");
        let out = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(out).lines();
        let mut openrouter_url = String::new();
        for line in lines.by_ref() {
            let line = line.expect("line");
            if let Some(u) = line.strip_prefix("FAKE_AI_OPENROUTER_URL=") {
                openrouter_url = u.to_owned();
                break;
            }
        }
        assert!(!openrouter_url.is_empty(), "the fake printed its URL");
        // Keep reading: a closed pipe would kill the fake at its next line.
        std::thread::spawn(move || lines.for_each(drop));
        FakeUpstream {
            child,
            openrouter_url,
        }
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const CHAT: &str = r#"{"model":"openai/gpt-4o","max_tokens":64,"messages":[{"role":"user","content":"Hello from inside the VM"}]}"#;

const SDK_SCRIPT: &str = r#"
import json, os, openai
c = openai.OpenAI(base_url=os.environ["OPENROUTER_BASE_URL"], api_key=os.environ["OPENROUTER_API_KEY"])
r = c.chat.completions.create(model="openai/gpt-4o", max_tokens=64,
                              messages=[{"role": "user", "content": "Hi from the SDK in a VM"}])
usage = None
for ch in c.chat.completions.create(model="openai/gpt-4o", max_tokens=64, stream=True,
                                    messages=[{"role": "user", "content": "Stream it"}]):
    if ch.usage:
        usage = ch.usage.model_dump()
print(json.dumps({"text": r.choices[0].message.content, "cost": r.usage.model_dump()["cost_micro"],
                  "stream_cost": usage["cost_micro"]}))
"#;

/// The SDK venv's packages as a tarball (the guest has Python 3.11 but no PyPI access).
fn sdk_tarball(dir: &std::path::Path) -> std::path::PathBuf {
    let venv = rigbox_testkit::python::sdk_venv();
    let site = std::fs::read_dir(venv.join("lib"))
        .expect("venv lib")
        .filter_map(Result::ok)
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.is_dir())
        .expect("site-packages");
    let tar = dir.join("sdk.tgz");
    let st = Command::new("tar")
        .args([
            "--exclude=pip",
            "--exclude=setuptools",
            "--exclude=__pycache__",
            "-czf",
        ])
        .arg(&tar)
        .arg("-C")
        .arg(&site)
        .arg(".")
        .status()
        .expect("tar");
    assert!(st.success());
    tar
}

#[tokio::test(flavor = "multi_thread")]
async fn code_in_a_vm_uses_managed_ai_and_is_charged_exactly_the_ledger() {
    if !enabled() {
        return;
    }
    let fake = FakeUpstream::start();
    let vms = Vms::start_with(&format!(
        "[ai]\nbase_url = \"{}\"\napi_key = \"sk-or-fake\"\nprice_refresh = false\n\
         [[ai.prices]]\nmodel = \"openai/gpt-4o\"\ninput_usd_per_mtok = 2.5\noutput_usd_per_mtok = 10.0\n",
        fake.openrouter_url
    ))
    .await;
    let id = vms.create("ai").await;
    let ws = vms.start_ws(&id).await;
    let ip = ip_of(&ws);

    // Every login shell has the managed pair, and no provider key.
    let env = vms.run(
        &ip,
        "bash -lc 'echo \"$OPENROUTER_BASE_URL|$OPENROUTER_API_KEY\"'",
    );
    assert_eq!(
        env.trim(),
        "http://172.16.0.1:9090/v1|managed-by-rigbox",
        "exported env"
    );

    // curl with the exported URL and no key.
    let out = vms.run(
        &ip,
        &format!(
            "bash -lc 'curl -sS -D /tmp/h -H content-type:application/json -d '\\''{CHAT}'\\'' \
             \"$OPENROUTER_BASE_URL/chat/completions\"; echo; grep -i ^x-rigbox-cost-micro /tmp/h || true'"
        ),
    );
    let mut lines = out.lines();
    let body: Value = serde_json::from_str(lines.next().expect("body")).expect("json");
    assert!(body["usage"].is_object(), "{out}");
    assert!(
        body["choices"][0]["message"]["content"].is_string(),
        "{body}"
    );
    let curl_cost = body["usage"]["cost_micro"].as_i64().expect("cost_micro");
    assert!(
        out.to_lowercase()
            .contains(&format!("x-rigbox-cost-micro: {curl_cost}")),
        "{out}"
    );

    // The real openai SDK in the guest.
    let tmp = tempfile::tempdir().expect("tmp");
    let tar = sdk_tarball(tmp.path());
    let o = vms.ssh_stdin(&ip, "mkdir -p ~/sdk && tar -C ~/sdk -xzf -", &tar);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    vms.run(
        &ip,
        &format!("cat > /tmp/sdk.py <<'PYEOF'\n{SDK_SCRIPT}\nPYEOF"),
    );
    let out = vms.run(&ip, "bash -lc 'PYTHONPATH=~/sdk python3 /tmp/sdk.py'");
    let sdk: Value = serde_json::from_str(out.trim()).expect("json from the SDK script");
    assert!(
        !sdk["text"].as_str().unwrap_or_default().is_empty(),
        "{sdk}"
    );

    // Credits dropped by exactly the ledger's charges, each what the VM was told.
    let (_, l) = vms.api.get("/users/me/credits/ledger?kind=charge").await;
    let mut amounts: Vec<i64> = l["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| -e["amount_micro"].as_i64().expect("amount"))
        .collect();
    amounts.reverse();
    assert_eq!(
        amounts,
        vec![
            curl_cost,
            sdk["cost"].as_i64().expect("cost"),
            sdk["stream_cost"].as_i64().expect("stream cost")
        ],
        "{l}"
    );
    let (_, c) = vms.api.get("/users/me/credits").await;
    assert_eq!(
        c["balance_micro"].as_i64(),
        Some(250_000_000 - amounts.iter().sum::<i64>()),
        "{c}"
    );
    assert_eq!(c["reserved_micro"], 0);

    // Credits gone: the VM gets 402; SSH and apps keep working.
    let gone = c["balance_micro"].as_i64().expect("balance") as f64 / 1e6;
    let st = Command::new(workspace_bin("rigboxd"))
        .args(["admin", "--data-dir"])
        .arg(vms.daemon.data_dir())
        .args([
            "credits",
            "adjust",
            "--email",
            "vm@example.com",
            "--credits",
        ])
        .arg(format!("-{gone}"))
        .args(["--note", "test: use everything"])
        .status()
        .expect("rigboxd admin");
    assert!(st.success());
    let out = vms.run(
        &ip,
        &format!(
            "bash -lc 'curl -sS -o /tmp/b -w \"%{{http_code}}\" -H content-type:application/json \
             -d '\\''{CHAT}'\\'' \"$OPENROUTER_BASE_URL/chat/completions\"; echo; cat /tmp/b'"
        ),
    );
    let (status, body) = out.split_once('\n').expect("status line");
    assert_eq!(status, "402", "{out}");
    let err: Value = serde_json::from_str(body.trim()).expect("json");
    assert_eq!(err["error"]["code"], "credits_exhausted", "{err}");

    vms.run(
        &ip,
        "(setsid python3 -m http.server 8000 --directory /etc >/tmp/http.log 2>&1 &); sleep 1",
    );
    let (code, app) = vms
        .api
        .post(
            "/apps",
            json!({"name": "etc", "workspace_id": id, "port": 8000, "visibility": "public"}),
        )
        .await;
    assert_eq!(code, 201, "{app}");
    let edge: std::net::SocketAddr = vms
        .daemon
        .api_url()
        .trim_start_matches("http://")
        .parse()
        .expect("edge address");
    let c = reqwest::Client::builder()
        .resolve("etc.rigbox.localhost", edge)
        .no_proxy()
        .build()
        .expect("client");
    // python3 starts slowly under TCG: wait for the server to answer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let r = loop {
        let r = c
            .get(format!(
                "http://etc.rigbox.localhost:{}/hostname",
                edge.port()
            ))
            .send()
            .await
            .expect("the edge answers");
        if r.status().as_u16() != 502 || std::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    assert_eq!(
        r.status().as_u16(),
        200,
        "apps keep working without credits"
    );

    // BYOK: the user's own key replaces the managed pair in new login shells, and the proxy
    // refuses the workspace (before the wallet: 403, not 402); managed again undoes both.
    let (code, cfg) = vms
        .api
        .put(
            &format!("/workspaces/{id}/ai-config"),
            json!({"mode": "byok", "provider": "openai", "api_key": "sk-own-key-of-the-user"}),
        )
        .await;
    assert_eq!(code, 200, "{cfg}");
    assert_eq!(cfg["status"], "byok_active", "{cfg}");
    assert!(cfg.get("api_key").is_none(), "{cfg}");
    let env = guest_env_until(&vms, &ip, "sk-own-key-of-the-user|unset").await;
    assert_eq!(env, "sk-own-key-of-the-user|unset");
    let out = vms.run(
        &ip,
        &format!(
            "curl -sS -o /tmp/b -w \"%{{http_code}}\" -H content-type:application/json \
             -d '{CHAT}' http://172.16.0.1:9090/v1/chat/completions; echo; cat /tmp/b"
        ),
    );
    let (status, body) = out.split_once('\n').expect("status line");
    assert_eq!(status, "403", "{out}");
    let err: Value = serde_json::from_str(body.trim()).expect("json");
    assert_eq!(err["error"]["code"], "managed_ai_disabled", "{err}");

    let (code, cfg) = vms
        .api
        .put(
            &format!("/workspaces/{id}/ai-config"),
            json!({"mode": "managed"}),
        )
        .await;
    assert_eq!(code, 200, "{cfg}");
    assert_eq!(cfg["status"], "managed_active", "{cfg}");
    let env = guest_env_until(&vms, &ip, "unset|managed-by-rigbox").await;
    assert_eq!(
        env, "unset|managed-by-rigbox",
        "the stored key is gone from the guest"
    );
}

/// `$OPENAI_API_KEY|$OPENROUTER_API_KEY` of a new login shell in the guest ("unset" for
/// either), once it reads `want` (the agent applies a change at its next sync) or after 60 s.
async fn guest_env_until(vms: &Vms, ip: &str, want: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let env = vms.run(
            ip,
            "bash -lc 'echo \"${OPENAI_API_KEY:-unset}|${OPENROUTER_API_KEY:-unset}\"'",
        );
        let env = env.trim().to_owned();
        if env == want || std::time::Instant::now() > deadline {
            return env;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}
