//! Arbitrary bytes as the body of every workspace endpoint that takes one, through the real
//! router (extractors, validation, logic, store) of an in-memory control plane. Fails on a
//! panic, on any 5xx, and on any error that is not the API's envelope.

#![no_main]

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use rigbox_control::app::accounts::NewUser;
use rigbox_control::{App, ControlConfig, Store};
use rigbox_node::{Node, NodeConfig, SimConfig, SimVmm};
use rigbox_types::node::NodeHandle;
use std::sync::{Arc, OnceLock};

struct World {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    token: String,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let (router, token) = rt.block_on(async {
            let store = Store::open_memory().await.expect("store");
            let mut cfg = ControlConfig::default();
            cfg.rate_limits.auth = u32::MAX;
            cfg.rate_limits.workspaces = u32::MAX;
            cfg.argon2.memory_kib = 8;
            cfg.argon2.iterations = 1;
            let sim = SimVmm::new(SimConfig::default(), None).expect("sim");
            let node = Node::new(NodeConfig::for_host("node-1", "local"), Arc::new(sim)).await;
            let app = App::new(store, cfg, Arc::new(rigbox_control::app::SystemClock), vec![node as Arc<dyn NodeHandle>]);
            app.create_user(NewUser {
                email: "fuzz@example.com".into(),
                name: None,
                password: "fuzz-password".into(),
                plan: Some("pro".into()),
                email_verified: true,
            })
            .await
            .expect("user");
            let s = app.login("fuzz@example.com", "fuzz-password".into()).await.expect("login");
            // One workspace for the per-workspace endpoints to act on.
            let p = app.authenticate(&s.token, false).await.expect("auth").expect("principal");
            let req = rigbox_types::api::CreateWorkspaceRequest { name: "fuzz-target".into(), ..Default::default() };
            app.create_workspace(&p, req).await.expect("workspace");
            let router = rigbox_control::http::router(app);
            (router, s.token)
        });
        World { rt, router, token }
    })
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    w.rt.block_on(async {
        for (method, path) in [
            ("POST", "/api/v1/workspaces"),
            ("PUT", "/api/v1/workspaces/fuzz-target/resources"),
            ("PATCH", "/api/v1/workspaces/fuzz-target/env"),
            ("POST", "/api/v1/workspaces/fuzz-target/start"),
        ] {
            let req = Request::builder()
                .method(method)
                .uri(path)
                .header("authorization", format!("Bearer {}", w.token))
                .header("content-type", "application/json")
                .body(Body::from(data.to_vec()))
                .expect("request");
            let resp = tower::ServiceExt::oneshot(w.router.clone(), req).await.expect("infallible");
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            assert!(status < 500, "{method} {path} answered {status}: {}", String::from_utf8_lossy(&body));
            if status >= 400 {
                let v: serde_json::Value = serde_json::from_slice(&body).expect("error bodies are JSON");
                assert!(v["error"]["code"].is_string() && v["error"]["details"].is_object(), "not the envelope: {v}");
            }
        }
    });
});
