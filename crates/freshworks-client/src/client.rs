//! The HTTP client: one method per Freshworks endpoint we call (spec/freshworks.md §2–§7).
//! Every call is sent exactly once (reqwest's own retries and redirects are off; retrying is
//! the caller's decision), carries `Authorization: Token token=<key>` and
//! `Content-Type: application/json`, and comes back as an [`Exchange`] (any 2xx) or a
//! [`FreshworksError`] (anything else).

use std::fmt;
use std::sync::Arc;

use freshgate_core::fields::FieldsResponse;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::{ClientConfig, ClientError};
use crate::error::{FreshworksError, error_messages};
use crate::model::{
    BulkJobAccepted, Contact, ContactEnvelope, JobStatus, LifecycleStages, ListEnvelope, ListsPage,
    LookupResponse, OwnersResponse, SalesAccountEnvelope, SalesActivityEnvelope,
    SalesActivityTypes,
};
use crate::request::{ListMembership, NewList, SalesAccountUpsert, SalesActivityRequest};

/// Hosts a `job_status_url` may point at besides the configured base URL's own origin.
const TRUSTED_HOST_SUFFIXES: [&str; 3] = [".myfreshworks.com", ".freshworks.com", ".freshsales.io"];

/// A successful (2xx) call: the parsed body plus what is needed to record the exchange.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange<T> {
    /// HTTP status (any 2xx; upsert answers 200 or 201).
    pub status: u16,
    /// The parsed body.
    pub body: T,
    /// The raw response body.
    pub raw: String,
    /// The `X-RateLimit-Remaining` header, if sent and numeric.
    pub rate_limit_remaining: Option<u32>,
    /// e.g. `POST /contacts/upsert` (path relative to the base URL, with the query).
    pub request_line: String,
    /// The JSON body we sent, if any.
    pub request_body: Option<String>,
}

impl<T> Exchange<T> {
    /// Replace the body, keeping the rest.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Exchange<U> {
        Exchange {
            status: self.status,
            body: f(self.body),
            raw: self.raw,
            rate_limit_remaining: self.rate_limit_remaining,
            request_line: self.request_line,
            request_body: self.request_body,
        }
    }
}

/// A Freshworks CRM API client. Cheap to clone (shares one connection pool).
#[derive(Clone)]
pub struct FreshworksClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// As configured, without a trailing `/`.
    base_url: String,
    base: Url,
    auth: HeaderValue,
}

impl fmt::Debug for FreshworksClient {
    // The auth header is deliberately left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FreshworksClient")
            .field("base_url", &self.inner.base_url)
            .finish_non_exhaustive()
    }
}

impl FreshworksClient {
    /// Build a client. Fails only on configuration mistakes.
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        let base_url = config.base_url.trim().trim_end_matches('/').to_owned();
        let bad_url = |reason: String| ClientError::InvalidBaseUrl {
            url: config.base_url.clone(),
            reason,
        };
        let base = Url::parse(&base_url).map_err(|e| bad_url(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(bad_url("the scheme must be http or https".into()));
        }
        if base.host_str().is_none() || base.cannot_be_a_base() {
            return Err(bad_url("it has no host".into()));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(bad_url("it must not contain a query or fragment".into()));
        }
        if config.api_key.trim().is_empty() {
            return Err(ClientError::InvalidApiKey {
                reason: "it is empty".into(),
            });
        }
        let mut auth =
            HeaderValue::from_str(&format!("Token token={}", config.api_key)).map_err(|_| {
                ClientError::InvalidApiKey {
                    reason: "it contains characters not allowed in an HTTP header".into(),
                }
            })?;
        // Sensitive values are masked by the HTTP stack's own Debug output.
        auth.set_sensitive(true);
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(config.user_agent)
            // No hidden retries: the delivery engine owns retry policy and must count every send.
            .retry(reqwest::retry::never())
            // A redirect would be a misconfigured base URL; surface it instead of following it.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ClientError::Build {
                message: error_chain(&e),
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base_url,
                base,
                auth,
            }),
        })
    }

    /// The API root as configured (no trailing `/`).
    #[must_use]
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// `POST /contacts/upsert` with the given body (`{"unique_identifier":{...},"contact":{...}}`).
    pub async fn upsert_contact(
        &self,
        body: &Value,
    ) -> Result<Exchange<ContactEnvelope>, FreshworksError> {
        self.send(
            Method::POST,
            self.endpoint(&["contacts", "upsert"]),
            Some(body),
        )
        .await
    }

    /// `GET /settings/contacts/fields`.
    pub async fn contact_fields(&self) -> Result<Exchange<FieldsResponse>, FreshworksError> {
        self.send(
            Method::GET,
            self.endpoint(&["settings", "contacts", "fields"]),
            None,
        )
        .await
    }

    /// `POST /contacts/bulk_upsert` with `{"contacts":[{"emails":"..","data":{..}}, …]}` (≤ 100 items).
    pub async fn bulk_upsert_contacts(
        &self,
        body: &Value,
    ) -> Result<Exchange<BulkJobAccepted>, FreshworksError> {
        self.send(
            Method::POST,
            self.endpoint(&["contacts", "bulk_upsert"]),
            Some(body),
        )
        .await
    }

    /// `GET <job_status_url>`. The URL must be on the base URL's origin or an https Freshworks
    /// host, because the API key is sent with it; a path starting with `/` is resolved against
    /// the base URL's origin.
    pub async fn job_status(
        &self,
        job_status_url: &str,
    ) -> Result<Exchange<JobStatus>, FreshworksError> {
        let url = self
            .job_url(job_status_url)
            .map_err(|message| FreshworksError::InvalidUrl {
                url: job_status_url.to_owned(),
                message,
                request_line: format!("GET {job_status_url}"),
            })?;
        self.send(Method::GET, url, None).await
    }

    /// `GET /contacts/{id}`.
    pub async fn get_contact(&self, id: i64) -> Result<Exchange<ContactEnvelope>, FreshworksError> {
        self.send(
            Method::GET,
            self.endpoint(&["contacts", &id.to_string()]),
            None,
        )
        .await
    }

    /// `GET /lookup?q=<email>&f=email&entities=contact`: exact-match lookup, unwrapped from
    /// `{"contacts":{"contacts":[...]}}`.
    pub async fn lookup_contact_by_email(
        &self,
        email: &str,
    ) -> Result<Exchange<Vec<Contact>>, FreshworksError> {
        self.lookup_contacts("email", email).await
    }

    /// `GET /lookup?q=<value>&f=<field>&entities=contact` (`f` = `email`, `external_id`,
    /// `mobile_number`, spec/freshworks.md §4.1), unwrapped from `{"contacts":{"contacts":[...]}}`.
    pub async fn lookup_contacts(
        &self,
        field: &str,
        value: &str,
    ) -> Result<Exchange<Vec<Contact>>, FreshworksError> {
        let mut url = self.endpoint(&["lookup"]);
        url.query_pairs_mut()
            .append_pair("q", value)
            .append_pair("f", field)
            .append_pair("entities", "contact");
        let exchange: Exchange<LookupResponse> = self.send(Method::GET, url, None).await?;
        Ok(exchange.map(LookupResponse::into_contacts))
    }

    /// `GET /lists?page=<page>`.
    pub async fn lists(&self, page: u32) -> Result<Exchange<ListsPage>, FreshworksError> {
        let mut url = self.endpoint(&["lists"]);
        url.query_pairs_mut().append_pair("page", &page.to_string());
        self.send(Method::GET, url, None).await
    }

    /// `POST /lists` with `{"name": name}`.
    pub async fn create_list(&self, name: &str) -> Result<Exchange<ListEnvelope>, FreshworksError> {
        self.send(
            Method::POST,
            self.endpoint(&["lists"]),
            Some(&to_body(&NewList {
                name: name.to_owned(),
            })),
        )
        .await
    }

    /// `PUT /lists/{list_id}/add_contacts` with `{"ids":[...]}`. The response body is
    /// unverified, so it is returned as JSON (`null` if empty).
    pub async fn add_to_list(
        &self,
        list_id: i64,
        ids: &[i64],
    ) -> Result<Exchange<Value>, FreshworksError> {
        self.list_membership(list_id, "add_contacts", ids).await
    }

    /// `PUT /lists/{list_id}/remove_contacts` with `{"ids":[...]}`.
    pub async fn remove_from_list(
        &self,
        list_id: i64,
        ids: &[i64],
    ) -> Result<Exchange<Value>, FreshworksError> {
        self.list_membership(list_id, "remove_contacts", ids).await
    }

    async fn list_membership(
        &self,
        list_id: i64,
        action: &str,
        ids: &[i64],
    ) -> Result<Exchange<Value>, FreshworksError> {
        self.send(
            Method::PUT,
            self.endpoint(&["lists", &list_id.to_string(), action]),
            Some(&to_body(&ListMembership { ids: ids.to_vec() })),
        )
        .await
    }

    /// `POST /sales_accounts/upsert` with `{"unique_identifier":{"name":..},"sales_account":{..}}`.
    pub async fn upsert_sales_account(
        &self,
        body: &Value,
    ) -> Result<Exchange<SalesAccountEnvelope>, FreshworksError> {
        self.send(
            Method::POST,
            self.endpoint(&["sales_accounts", "upsert"]),
            Some(body),
        )
        .await
    }

    /// `POST /sales_activities` with `{"sales_activity":{..}}`.
    pub async fn create_sales_activity(
        &self,
        body: &Value,
    ) -> Result<Exchange<SalesActivityEnvelope>, FreshworksError> {
        self.send(
            Method::POST,
            self.endpoint(&["sales_activities"]),
            Some(body),
        )
        .await
    }

    /// `GET /settings/sales_accounts/fields`: the sales account fields, same shape as the
    /// contact fields.
    pub async fn account_fields(&self) -> Result<Exchange<FieldsResponse>, FreshworksError> {
        self.send(
            Method::GET,
            self.endpoint(&["settings", "sales_accounts", "fields"]),
            None,
        )
        .await
    }

    /// `POST /sales_accounts/upsert` with a typed body.
    pub async fn upsert_account(
        &self,
        body: &SalesAccountUpsert,
    ) -> Result<Exchange<SalesAccountEnvelope>, FreshworksError> {
        self.upsert_sales_account(&to_body(body)).await
    }

    /// `POST /sales_activities` with a typed body.
    pub async fn create_activity(
        &self,
        body: &SalesActivityRequest,
    ) -> Result<Exchange<SalesActivityEnvelope>, FreshworksError> {
        self.create_sales_activity(&to_body(body)).await
    }

    /// `GET /selector/owners`, typed.
    pub async fn owners(&self) -> Result<Exchange<OwnersResponse>, FreshworksError> {
        self.send(Method::GET, self.endpoint(&["selector", "owners"]), None)
            .await
    }

    /// `GET /selector/sales_activity_types`, typed.
    pub async fn sales_activity_types(
        &self,
    ) -> Result<Exchange<SalesActivityTypes>, FreshworksError> {
        self.send(
            Method::GET,
            self.endpoint(&["selector", "sales_activity_types"]),
            None,
        )
        .await
    }

    /// `GET /selector/lifecycle_stages`, typed.
    pub async fn lifecycle_stages(&self) -> Result<Exchange<LifecycleStages>, FreshworksError> {
        self.send(
            Method::GET,
            self.endpoint(&["selector", "lifecycle_stages"]),
            None,
        )
        .await
    }

    /// `GET /selector/<name>` (e.g. `lifecycle_stages`, `owners`). The wrapper key differs per
    /// selector, so the body is returned as JSON.
    pub async fn selector(&self, name: &str) -> Result<Exchange<Value>, FreshworksError> {
        self.send(Method::GET, self.endpoint(&["selector", name]), None)
            .await
    }

    /// The base URL with `segments` appended, each percent-encoded.
    fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.base.clone();
        // `new` refused cannot-be-a-base URLs, so the segments are always available.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Resolve and vet a job status URL; the error is the reason for refusing it.
    fn job_url(&self, raw: &str) -> Result<Url, String> {
        let url = if raw.starts_with('/') && !raw.starts_with("//") {
            self.inner.base.join(raw)
        } else {
            Url::parse(raw)
        }
        .map_err(|e| format!("not a URL: {e}"))?;
        let base = &self.inner.base;
        let same_origin = url.origin() == base.origin();
        let trusted = url.scheme() == "https"
            && url.username().is_empty()
            && url.password().is_none()
            && url
                .host_str()
                .is_some_and(|h| TRUSTED_HOST_SUFFIXES.iter().any(|s| h.ends_with(s)));
        if same_origin || trusted {
            Ok(url)
        } else {
            Err(format!(
                "it is neither on {} nor an https Freshworks host, and the API key would be sent to it",
                base.origin().ascii_serialization()
            ))
        }
    }

    /// `METHOD /path?query`, the path relative to the base URL when it lies under it.
    fn request_line(&self, method: &Method, url: &Url) -> String {
        let base = &self.inner.base;
        let base_path = base.path().trim_end_matches('/');
        let path = url.path();
        let relative = match path.strip_prefix(base_path) {
            Some(rest) if url.origin() == base.origin() && rest.starts_with('/') => rest,
            _ => path,
        };
        match url.query() {
            Some(query) => format!("{method} {relative}?{query}"),
            None => format!("{method} {relative}"),
        }
    }

    /// Send one request, once, and read the whole answer.
    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<Exchange<T>, FreshworksError> {
        let request_line = self.request_line(&method, &url);
        // serde_json cannot fail to serialise a `Value` (its map keys are strings).
        let request_body = body.map(Value::to_string);
        let mut request = self
            .inner
            .http
            .request(method, url)
            .header(AUTHORIZATION, self.inner.auth.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json");
        if let Some(text) = &request_body {
            request = request.body(text.clone());
        }
        let transport = |e: reqwest::Error, request_line: &str, request_body: &Option<String>| {
            FreshworksError::Transport {
                message: error_chain(&e),
                timeout: e.is_timeout(),
                request_line: request_line.to_owned(),
                request_body: request_body.clone(),
            }
        };

        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                let err = transport(e, &request_line, &request_body);
                tracing::debug!(request = %request_line, error = %err, "freshworks call failed");
                return Err(err);
            }
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let raw = match response.bytes().await {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => {
                let err = transport(e, &request_line, &request_body);
                tracing::debug!(request = %request_line, status, error = %err, "freshworks body read failed");
                return Err(err);
            }
        };
        let rate_limit_remaining = header_u32(&headers, "x-ratelimit-remaining");
        tracing::debug!(request = %request_line, status, rate_limit_remaining, "freshworks call");

        if !(200..300).contains(&status) {
            return Err(FreshworksError::Http {
                status,
                messages: error_messages(&raw),
                retry_after: header_string(&headers, RETRY_AFTER.as_str()),
                rate_limit_remaining,
                body: raw,
                request_line,
                request_body,
            });
        }
        // An empty 2xx body reads as `null`, which suits `Value` answers and fails typed ones.
        let text = if raw.trim().is_empty() {
            "null"
        } else {
            raw.as_str()
        };
        match serde_json::from_str::<T>(text) {
            Ok(body) => Ok(Exchange {
                status,
                body,
                raw,
                rate_limit_remaining,
                request_line,
                request_body,
            }),
            Err(e) => Err(FreshworksError::Decode {
                status,
                message: e.to_string(),
                body: raw,
                request_line,
                request_body,
            }),
        }
    }
}

fn header_string(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
}

fn header_u32(headers: &HeaderMap, name: &str) -> Option<u32> {
    header_string(headers, name).and_then(|v| v.parse().ok())
}

/// The error and its sources, joined, so "error sending request" also says why.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A typed request body as JSON. The request types have string keys and plain values, so
/// serialisation cannot fail; `null` would be sent (and refused by the server) if it ever did.
fn to_body<T: serde::Serialize>(body: &T) -> Value {
    serde_json::to_value(body).unwrap_or(Value::Null)
}
