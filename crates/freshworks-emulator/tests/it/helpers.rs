//! Shared test helpers: start an emulator, call it with or without the key.

use freshworks_emulator::{EmulatorConfig, RunningEmulator};
use reqwest::Method;
use serde_json::Value;

/// A running emulator plus an HTTP client.
pub struct Env {
    pub emu: RunningEmulator,
    pub http: reqwest::Client,
    pub key: String,
}

/// A response reduced to what tests look at.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Env {
    pub async fn start() -> Self {
        Self::with(EmulatorConfig::default()).await
    }

    pub async fn with(config: EmulatorConfig) -> Self {
        let key = config.api_key.clone();
        let emu = RunningEmulator::start(config).await.unwrap();
        Self {
            emu,
            http: reqwest::Client::new(),
            key,
        }
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.emu.base_url)
        };
        let mut rb = self.http.request(method, url);
        if let Some(a) = auth {
            rb = rb.header("Authorization", a);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Resp {
            status,
            headers,
            body,
        }
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        let auth = format!("Token token={}", self.key);
        self.raw(method, path, Some(&auth), body).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Resp {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.call(Method::DELETE, path, None).await
    }

    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.emu.admin_url));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.json().await.unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            body,
        }
    }

    /// Upserts by email and returns the contact JSON.
    pub async fn upsert_email(&self, email: &str, contact: Value) -> Value {
        let r = self
            .post(
                "/contacts/upsert",
                serde_json::json!({"unique_identifier": {"emails": email}, "contact": contact}),
            )
            .await;
        assert!(r.status == 200 || r.status == 201, "{r:?}");
        r.body["contact"].clone()
    }
}

/// The one-element error body the service answers.
pub fn error_body(code: u16, message: &str) -> Value {
    serde_json::json!({"errors": {"code": code, "message": [message]}})
}
