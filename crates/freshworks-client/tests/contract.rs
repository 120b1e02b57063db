//! Contract tests of the Freshworks client against a small in-process recording stub:
//! exact paths, headers and bodies on the way out; response shapes from spec/freshworks.md
//! and the error mapping on the way back; and that no request is ever sent twice. The calls
//! delivering tracks, groups and audiences also run against the emulator (written from the API
//! notes alone, sharing no code with the client).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use freshworks_client::{
    ClientConfig, FreshworksClient, FreshworksError, Identifier, NewSalesActivity,
    SalesAccountUpsert, SalesActivityRequest, TargetableType,
};
use serde_json::{Value, json};

const KEY: &str = "sfg999666t673t7t82";
const API: &str = "/crm/sales/api";

/// One request as the stub saw it.
#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: String,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }

    fn query_pairs(&self) -> Vec<(String, String)> {
        let url = reqwest::Url::parse(&format!(
            "http://x/?{}",
            self.query.clone().unwrap_or_default()
        ))
        .unwrap();
        url.query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }
}

/// A canned answer.
#[derive(Debug, Clone)]
struct Canned {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Option<Duration>,
}

fn canned(status: u16, body: impl Into<String>) -> Canned {
    Canned {
        status,
        headers: vec![("content-type", "application/json".into())],
        body: body.into(),
        delay: None,
    }
}

#[derive(Default)]
struct StubState {
    recorded: Mutex<Vec<Recorded>>,
    /// Keyed by `"METHOD /path"` (no query).
    responses: Mutex<HashMap<String, Canned>>,
}

struct Stub {
    addr: SocketAddr,
    state: Arc<StubState>,
}

impl Stub {
    async fn start() -> Self {
        let state = Arc::new(StubState::default());
        let app = Router::new()
            .fallback(record_and_answer)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, state }
    }

    fn on(&self, method: &str, path: &str, answer: Canned) {
        self.state
            .responses
            .lock()
            .unwrap()
            .insert(format!("{method} {path}"), answer);
    }

    fn recorded(&self) -> Vec<Recorded> {
        self.state.recorded.lock().unwrap().clone()
    }

    /// The single request recorded so far (also proves nothing was retried).
    fn only(&self) -> Recorded {
        let recorded = self.recorded();
        assert_eq!(
            recorded.len(),
            1,
            "expected exactly one request: {recorded:#?}"
        );
        recorded.into_iter().next().unwrap()
    }

    fn base_url(&self) -> String {
        format!("http://{}{API}", self.addr)
    }

    fn client(&self) -> FreshworksClient {
        self.client_with_timeout(Duration::from_secs(10))
    }

    fn client_with_timeout(&self, timeout: Duration) -> FreshworksClient {
        FreshworksClient::new(ClientConfig {
            base_url: self.base_url(),
            api_key: KEY.into(),
            timeout,
            user_agent: "freshgate-test/1".into(),
        })
        .unwrap()
    }
}

async fn record_and_answer(
    State(state): State<Arc<StubState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = format!("{method} {}", uri.path());
    state.recorded.lock().unwrap().push(Recorded {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    });
    let answer = state.responses.lock().unwrap().get(&key).cloned();
    let Some(answer) = answer else {
        return (
            StatusCode::NOT_FOUND,
            r#"{"errors":{"code":404,"message":["no canned response"]}}"#,
        )
            .into_response();
    };
    if let Some(delay) = answer.delay {
        tokio::time::sleep(delay).await;
    }
    let mut response = (StatusCode::from_u16(answer.status).unwrap(), answer.body).into_response();
    for (name, value) in answer.headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

/// The upsert response recorded from a real account (spec §2.2).
const UPSERT_SAMPLE: &str = r#"{ "contact": {
  "id": 70054866612, "first_name": null, "last_name": null,
  "display_name": "jamessampleton120@gmail.com", "avatar": null, "job_title": null,
  "city": null, "state": null, "zipcode": null, "country": null,
  "email": "jamessampleton120@gmail.com",
  "emails": [ { "id": 70047409219, "value": "jamessampleton120@gmail.com",
                "is_primary": true, "label": null, "_destroy": false } ],
  "time_zone": null, "work_number": null, "mobile_number": null, "address": null,
  "last_seen": null, "lead_score": 0, "last_contacted": null,
  "open_deals_amount": null, "won_deals_amount": null,
  "links": { "conversations": "/crm/sales/contacts/70054866612/conversations/all?x=1",
             "timeline_feeds": "/crm/sales/contacts/70054866612/timeline_feeds" },
  "custom_field": {},
  "created_at": "2022-10-11T08:42:15-04:00", "updated_at": "2022-10-11T08:42:15-04:00",
  "keyword": null, "medium": null, "tags": [], "facebook": null, "twitter": null, "linkedin": null,
  "is_deleted": false, "team_user_ids": null, "external_id": null, "work_email": null,
  "subscription_status": 1, "subscription_types": "2;3;4;5;1", "customer_fit": 0,
  "record_type_id": "71012139284", "whatsapp_subscription_status": 2, "sms_subscription_status": 2,
  "locale": null, "total_sessions": null, "phone_numbers": [],
  "web_form_ids": null, "last_assigned_at": null
} }"#;

fn assert_common_headers(request: &Recorded) {
    assert_eq!(
        request.header("authorization"),
        Some(format!("Token token={KEY}").as_str())
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("user-agent"), Some("freshgate-test/1"));
}

#[tokio::test]
async fn upsert_contact_sends_auth_and_body_and_reads_the_spec_sample() {
    let stub = Stub::start().await;
    let mut answer = canned(200, UPSERT_SAMPLE);
    answer.headers.push(("X-RateLimit-Remaining", "399".into()));
    stub.on("POST", &format!("{API}/contacts/upsert"), answer);
    let body = json!({
        "unique_identifier": {"emails": "jamessampleton120@gmail.com"},
        "contact": {"emails": "jamessampleton120@gmail.com", "custom_field": {"cf_plan": "Pro"}}
    });

    let exchange = stub.client().upsert_contact(&body).await.unwrap();

    let request = stub.only();
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/crm/sales/api/contacts/upsert");
    assert_eq!(request.query, None);
    assert_common_headers(&request);
    assert_eq!(request.json(), body);

    assert_eq!(exchange.status, 200);
    assert_eq!(exchange.request_line, "POST /contacts/upsert");
    assert_eq!(
        exchange.request_body.as_deref(),
        Some(request.body.as_str())
    );
    assert_eq!(exchange.raw, UPSERT_SAMPLE);
    assert_eq!(exchange.rate_limit_remaining, Some(399));
    let contact = &exchange.body.contact;
    assert_eq!(contact.id, 70_054_866_612_i64);
    assert_eq!(
        contact.email.as_deref(),
        Some("jamessampleton120@gmail.com")
    );
    assert_eq!(contact.external_id, None);
    assert!(contact.custom_field.is_empty());
    assert_eq!(contact.other["record_type_id"], json!("71012139284"));
    assert_eq!(
        contact.other["emails"][0]["id"].as_i64(),
        Some(70_047_409_219)
    );
    assert_eq!(contact.other["subscription_types"], json!("2;3;4;5;1"));
}

#[tokio::test]
async fn upsert_answered_201_is_success() {
    let stub = Stub::start().await;
    stub.on(
        "POST",
        &format!("{API}/contacts/upsert"),
        canned(
            201,
            r#"{"contact":{"id":"70054866613","email":"new@x.io","external_id":"u-1","custom_field":{"cf_plan":"Pro"}}}"#,
        ),
    );
    let exchange = stub
        .client()
        .upsert_contact(&json!({"unique_identifier":{"emails":"new@x.io"},"contact":{}}))
        .await
        .unwrap();
    assert_eq!(exchange.status, 201);
    assert_eq!(exchange.body.contact.id, 70_054_866_613);
    assert_eq!(exchange.body.contact.external_id.as_deref(), Some("u-1"));
    assert_eq!(exchange.body.contact.custom_field["cf_plan"], json!("Pro"));
    assert_eq!(exchange.rate_limit_remaining, None);
    stub.only();
}

#[tokio::test]
async fn contact_fields_and_get_contact() {
    let stub = Stub::start().await;
    stub.on(
        "GET",
        &format!("{API}/settings/contacts/fields"),
        canned(
            200,
            r#"{"fields":[{"id":70000123999,"name":"cf_plan","label":"Plan","type":"dropdown","default":false,
                "required":false,"choices":[{"id":70000001,"value":"Free"}]}]}"#,
        ),
    );
    stub.on(
        "GET",
        &format!("{API}/contacts/70054866612"),
        canned(200, r#"{"contact":{"id":70054866612,"email":"a@b.co"}}"#),
    );
    let client = stub.client();

    let fields = client.contact_fields().await.unwrap();
    assert_eq!(fields.request_line, "GET /settings/contacts/fields");
    assert_eq!(fields.request_body, None);
    assert_eq!(fields.body.fields[0].name, "cf_plan");
    assert_eq!(fields.body.fields[0].choices[0].value, "Free");

    let contact = client.get_contact(70_054_866_612).await.unwrap();
    assert_eq!(contact.request_line, "GET /contacts/70054866612");
    assert_eq!(contact.body.contact.email.as_deref(), Some("a@b.co"));

    let recorded = stub.recorded();
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[0].path, "/crm/sales/api/settings/contacts/fields");
    assert_eq!(recorded[1].path, "/crm/sales/api/contacts/70054866612");
    for request in &recorded {
        assert_eq!(request.method, "GET");
        assert_common_headers(request);
        assert_eq!(request.body, "");
    }
}

#[tokio::test]
async fn lookup_by_email_unwraps_the_nesting() {
    let stub = Stub::start().await;
    stub.on(
        "GET",
        &format!("{API}/lookup"),
        canned(
            200,
            r#"{"contacts":{"contacts":[{"id":70054866612,"email":"a+b@x.io","custom_field":{"cf_x":1}}]}}"#,
        ),
    );
    let exchange = stub
        .client()
        .lookup_contact_by_email("a+b@x.io")
        .await
        .unwrap();
    let request = stub.only();
    assert_eq!(request.path, "/crm/sales/api/lookup");
    assert_eq!(
        request.query_pairs(),
        [
            ("q".to_owned(), "a+b@x.io".to_owned()),
            ("f".to_owned(), "email".to_owned()),
            ("entities".to_owned(), "contact".to_owned()),
        ]
    );
    assert_common_headers(&request);
    assert!(
        exchange
            .request_line
            .starts_with("GET /lookup?q=a%2Bb%40x.io&f=email&entities=contact")
    );
    assert_eq!(exchange.body.len(), 1);
    assert_eq!(exchange.body[0].id, 70_054_866_612);
    assert_eq!(exchange.body[0].custom_field["cf_x"], 1);
}

#[tokio::test]
async fn bulk_upsert_then_job_status_with_data_as_string_and_as_object() {
    let stub = Stub::start().await;
    let job_url = format!("http://{}{API}/job_statuses/7", stub.addr);
    stub.on(
        "POST",
        &format!("{API}/contacts/bulk_upsert"),
        canned(200, json!({ "job_status_url": job_url }).to_string()),
    );
    let data = json!({
        "record_status": {"succeeded": 99, "failed": 1},
        "detailed_failure_report": [{"emails": "x@y.z", "error_message": ["Email is not unique"]}]
    });
    stub.on(
        "GET",
        &format!("{API}/job_statuses/7"),
        canned(
            200,
            json!({"status": "SUCCESS", "progress": 100, "data": data.to_string()}).to_string(),
        ),
    );
    stub.on(
        "GET",
        &format!("{API}/job_statuses/8"),
        canned(200, json!({"status": "SUCCESS", "data": data}).to_string()),
    );
    stub.on(
        "GET",
        &format!("{API}/job_statuses/9"),
        canned(200, r#"{"status":"IN_PROGRESS","data":null,"progress":10}"#),
    );
    let client = stub.client();
    let body = json!({"contacts": [
        {"emails": "a@example.com", "data": {"custom_field": {"cf_ncash": "120"}}},
        {"emails": "x@y.z", "data": {"first_name": "X"}}
    ]});

    let accepted = client.bulk_upsert_contacts(&body).await.unwrap();
    assert_eq!(accepted.request_line, "POST /contacts/bulk_upsert");
    assert_eq!(accepted.body.job_status_url, job_url);

    let as_string = client
        .job_status(&accepted.body.job_status_url)
        .await
        .unwrap();
    assert_eq!(as_string.request_line, "GET /job_statuses/7");
    let as_object = client
        .job_status(&format!("http://{}{API}/job_statuses/8", stub.addr))
        .await
        .unwrap();
    for job in [&as_string.body, &as_object.body] {
        assert!(job.is_done());
        assert!(!job.is_failed());
        assert_eq!(job.data.record_status.succeeded, 99);
        assert_eq!(job.data.record_status.failed, 1);
        let failure = &job.data.detailed_failure_report[0];
        assert_eq!(
            failure.identifier,
            Some(Identifier {
                key: "emails".into(),
                value: "x@y.z".into()
            })
        );
        assert_eq!(failure.error_message, ["Email is not unique"]);
    }
    assert_eq!(as_string.body.other["progress"], 100);

    // A path-only URL resolves against the base URL's origin.
    let running = client
        .job_status(&format!("{API}/job_statuses/9"))
        .await
        .unwrap();
    assert!(!running.body.is_terminal());

    let recorded = stub.recorded();
    assert_eq!(recorded.len(), 4);
    assert_eq!(recorded[0].method, "POST");
    assert_eq!(recorded[0].path, "/crm/sales/api/contacts/bulk_upsert");
    assert_eq!(recorded[0].json(), body);
    for request in &recorded {
        assert_common_headers(request);
    }
    assert_eq!(recorded[1].path, "/crm/sales/api/job_statuses/7");
    assert_eq!(recorded[1].method, "GET");
}

#[tokio::test]
async fn job_status_refuses_foreign_hosts_without_sending() {
    let stub = Stub::start().await;
    let client = stub.client();
    for url in [
        "http://evil.example.com/crm/sales/api/job_statuses/7",
        "https://acme.myfreshworks.com.evil.com/job_statuses/7",
        "http://acme.myfreshworks.com/job_statuses/7",
        "not a url",
    ] {
        let err = client.job_status(url).await.unwrap_err();
        assert!(
            matches!(&err, FreshworksError::InvalidUrl { url: u, .. } if u == url),
            "{err:?}"
        );
        assert_eq!(err.status(), None);
    }
    assert!(stub.recorded().is_empty());
}

#[tokio::test]
async fn lists_accounts_activities_and_selectors() {
    let stub = Stub::start().await;
    stub.on(
        "GET",
        &format!("{API}/lists"),
        canned(
            200,
            r#"{"lists":[{"id":70000053624,"name":"Sample list"}],"meta":{"total_pages":1,"total":5}}"#,
        ),
    );
    stub.on(
        "POST",
        &format!("{API}/lists"),
        canned(201, r#"{"list":{"id":"70000053625","name":"VIP"}}"#),
    );
    stub.on(
        "PUT",
        &format!("{API}/lists/70000053625/add_contacts"),
        canned(200, "{}"),
    );
    stub.on(
        "PUT",
        &format!("{API}/lists/70000053625/remove_contacts"),
        canned(200, ""),
    );
    stub.on(
        "POST",
        &format!("{API}/sales_accounts/upsert"),
        canned(
            200,
            r#"{"sales_account":{"id":70003771396,"name":"Acme","custom_field":{},"record_type_id":"71010794477"}}"#,
        ),
    );
    stub.on(
        "POST",
        &format!("{API}/sales_activities"),
        canned(
            200,
            r#"{"sales_activity":{"id":70000000001,"title":"Signed up"}}"#,
        ),
    );
    stub.on(
        "GET",
        &format!("{API}/selector/lifecycle_stages"),
        canned(
            200,
            r#"{"lifecycle_stages":[{"id":71012139273,"name":"Lead"}]}"#,
        ),
    );
    let client = stub.client();

    let lists = client.lists(2).await.unwrap();
    assert_eq!(lists.request_line, "GET /lists?page=2");
    assert_eq!(lists.body.lists[0].id, 70_000_053_624);
    assert_eq!(lists.body.lists[0].name, "Sample list");
    assert_eq!(lists.body.meta.as_ref().unwrap().total, 5);

    let created = client.create_list("VIP").await.unwrap();
    assert_eq!(created.status, 201);
    assert_eq!(created.body.list.id, 70_000_053_625);

    let added = client
        .add_to_list(70_000_053_625, &[1, 70_054_866_612])
        .await
        .unwrap();
    assert_eq!(added.body, json!({}));
    let removed = client.remove_from_list(70_000_053_625, &[1]).await.unwrap();
    assert_eq!(removed.body, Value::Null);
    assert_eq!(
        removed.request_line,
        "PUT /lists/70000053625/remove_contacts"
    );

    let account_body = json!({"unique_identifier":{"name":"Acme"},"sales_account":{"name":"Acme"}});
    let account = client.upsert_sales_account(&account_body).await.unwrap();
    assert_eq!(account.body.sales_account.id, 70_003_771_396);
    assert_eq!(
        account.body.sales_account.other["record_type_id"],
        json!("71010794477")
    );

    let activity_body = json!({"sales_activity":{"title":"Signed up","targetable_id":70054866612_i64,"targetable_type":"Contact"}});
    let activity = client.create_sales_activity(&activity_body).await.unwrap();
    assert_eq!(activity.body.sales_activity.id, 70_000_000_001);

    let stages = client.selector("lifecycle_stages").await.unwrap();
    assert_eq!(stages.body["lifecycle_stages"][0]["name"], "Lead");

    let recorded = stub.recorded();
    let lines: Vec<String> = recorded
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        lines,
        [
            "GET /crm/sales/api/lists",
            "POST /crm/sales/api/lists",
            "PUT /crm/sales/api/lists/70000053625/add_contacts",
            "PUT /crm/sales/api/lists/70000053625/remove_contacts",
            "POST /crm/sales/api/sales_accounts/upsert",
            "POST /crm/sales/api/sales_activities",
            "GET /crm/sales/api/selector/lifecycle_stages",
        ]
    );
    for request in &recorded {
        assert_common_headers(request);
    }
    assert_eq!(recorded[0].query.as_deref(), Some("page=2"));
    assert_eq!(recorded[1].json(), json!({"name": "VIP"}));
    assert_eq!(recorded[2].json(), json!({"ids": [1, 70_054_866_612_i64]}));
    assert_eq!(recorded[3].json(), json!({"ids": [1]}));
    assert_eq!(recorded[4].json(), account_body);
    assert_eq!(recorded[5].json(), activity_body);
}

#[tokio::test]
async fn typed_account_activity_fields_and_selectors() {
    let stub = Stub::start().await;
    stub.on(
        "GET",
        &format!("{API}/settings/sales_accounts/fields"),
        canned(
            200,
            r#"{"fields":[{"id":70000223401,"name":"name","label":"Name","type":"text","default":true,"base_model":"SalesAccount"},
                {"id":70000223409,"name":"industry_type_id","label":"Industry type","type":"dropdown","default":true,
                 "choices":[{"id":70000300012,"value":"Software"}]}]}"#,
        ),
    );
    stub.on(
        "POST",
        &format!("{API}/sales_accounts/upsert"),
        canned(
            200,
            r#"{"sales_account":{"id":"70003771396","name":"Initech"}}"#,
        ),
    );
    stub.on(
        "POST",
        &format!("{API}/sales_activities"),
        canned(
            201,
            r#"{"sales_activity":{"id":70000000002,"title":"Order 7"}}"#,
        ),
    );
    stub.on(
        "GET",
        &format!("{API}/selector/owners"),
        canned(
            200,
            r#"{"users":[{"id":70000012345,"display_name":"Ada","email":"ada@x.io","is_active":true},
                {"id":"70000012347","email":null,"is_active":"false"}]}"#,
        ),
    );
    stub.on(
        "GET",
        &format!("{API}/selector/sales_activity_types"),
        canned(
            200,
            r#"{"sales_activity_types":[{"id":70000612901,"name":"Purchase","internal_name":"purchase"}]}"#,
        ),
    );
    stub.on(
        "GET",
        &format!("{API}/selector/lifecycle_stages"),
        canned(200, r#"{"lifecycle_stages":null}"#),
    );
    let client = stub.client();

    let fields = client.account_fields().await.unwrap();
    assert_eq!(fields.request_line, "GET /settings/sales_accounts/fields");
    assert_eq!(fields.body.fields[1].choices[0].value, "Software");

    let mut values = serde_json::Map::new();
    values.insert("website".into(), json!("initech.example"));
    let mut custom = serde_json::Map::new();
    custom.insert("cf_plan".into(), json!("Pro"));
    let upsert = SalesAccountUpsert::new("Initech", values, custom);
    let account = client.upsert_account(&upsert).await.unwrap();
    assert_eq!(account.body.sales_account.id, 70_003_771_396);

    let activity = SalesActivityRequest {
        sales_activity: NewSalesActivity {
            title: "Order 7".into(),
            start_date: "2024-03-01T08:00:00-04:00".into(),
            end_date: "2024-03-01T08:00:00-04:00".into(),
            sales_activity_type_id: 70_000_612_901,
            targetable_type: TargetableType::Contact,
            targetable_id: 70_054_866_612,
            owner_id: 70_000_012_345,
            notes: Some("order_id: 7".into()),
            sales_activity_outcome_id: None,
        },
    };
    let created = client.create_activity(&activity).await.unwrap();
    assert_eq!(created.status, 201);
    assert_eq!(created.body.sales_activity.id, 70_000_000_002);

    let owners = client.owners().await.unwrap().body.users;
    assert_eq!(owners[0].email.as_deref(), Some("ada@x.io"));
    assert_eq!(owners[1].id, 70_000_012_347);
    assert_eq!(owners[1].is_active, Some(false));
    let types = client.sales_activity_types().await.unwrap().body;
    assert_eq!(types.sales_activity_types[0].name, "Purchase");
    let stages = client.lifecycle_stages().await.unwrap().body;
    assert!(stages.lifecycle_stages.is_empty());

    let recorded = stub.recorded();
    assert_eq!(recorded.len(), 6, "{recorded:#?}");
    for request in &recorded {
        assert_common_headers(request);
    }
    assert_eq!(
        recorded[1].json(),
        json!({"unique_identifier": {"name": "Initech"},
               "sales_account": {"name": "Initech", "website": "initech.example",
                                 "custom_field": {"cf_plan": "Pro"}}})
    );
    assert_eq!(
        recorded[2].json(),
        json!({"sales_activity": {"title": "Order 7",
            "start_date": "2024-03-01T08:00:00-04:00", "end_date": "2024-03-01T08:00:00-04:00",
            "sales_activity_type_id": 70_000_612_901_i64, "targetable_type": "Contact",
            "targetable_id": 70_054_866_612_i64, "owner_id": 70_000_012_345_i64,
            "notes": "order_id: 7"}})
    );
}

/// Send one upsert against a canned answer and return the error; asserts it was sent once.
async fn upsert_error(answer: Canned) -> FreshworksError {
    let stub = Stub::start().await;
    stub.on("POST", &format!("{API}/contacts/upsert"), answer);
    let body = json!({"unique_identifier":{"emails":"a@b.co"},"contact":{"emails":"a@b.co"}});
    let err = stub.client().upsert_contact(&body).await.unwrap_err();
    stub.only();
    assert_eq!(err.request_line(), "POST /contacts/upsert");
    assert_eq!(err.request_body(), Some(body.to_string().as_str()));
    err
}

#[tokio::test]
async fn http_400_carries_the_message_array() {
    let body =
        r#"{"errors":{"code":400,"message":["Email is not unique","MobileNumber is not unique"]}}"#;
    let err = upsert_error(canned(400, body)).await;
    match &err {
        FreshworksError::Http {
            status,
            messages,
            body: raw,
            retry_after,
            ..
        } => {
            assert_eq!(*status, 400);
            assert_eq!(
                messages,
                &["Email is not unique", "MobileNumber is not unique"]
            );
            assert_eq!(raw, body);
            assert_eq!(*retry_after, None);
        }
        other => panic!("expected Http, got {other:?}"),
    }
    assert_eq!(err.status(), Some(400));
    assert_eq!(err.response_body(), Some(body));
    assert!(err.to_string().contains("Email is not unique"));
}

#[tokio::test]
async fn http_401_with_an_unverified_body_shape() {
    let body = r#"{"login":"failed","message":"Incorrect or expired API key"}"#;
    let err = upsert_error(canned(401, body)).await;
    assert_eq!(err.status(), Some(401));
    assert_eq!(err.messages(), ["Incorrect or expired API key"]);
    assert_eq!(err.response_body(), Some(body));
}

#[tokio::test]
async fn http_429_carries_retry_after_and_remaining() {
    let mut answer = canned(
        429,
        r#"{"errors":{"code":429,"message":"Too many requests"}}"#,
    );
    answer.headers.push(("Retry-After", "37".into()));
    answer.headers.push(("X-RateLimit-Remaining", "0".into()));
    let err = upsert_error(answer).await;
    assert_eq!(err.status(), Some(429));
    assert_eq!(err.retry_after(), Some("37"));
    assert_eq!(err.rate_limit_remaining(), Some(0));
    assert_eq!(err.messages(), ["Too many requests"]);
}

#[tokio::test]
async fn http_500_is_not_retried() {
    let err = upsert_error(canned(500, r#"{"errors":{"code":500,"message":[]}}"#)).await;
    assert_eq!(err.status(), Some(500));
    assert!(err.messages().is_empty());
    assert_eq!(err.retry_after(), None);
}

#[tokio::test]
async fn non_json_error_body_is_kept_raw() {
    let mut answer = canned(502, "<html><body>Bad Gateway</body></html>");
    answer.headers = vec![("content-type", "text/html".into())];
    let err = upsert_error(answer).await;
    assert_eq!(err.status(), Some(502));
    assert!(err.messages().is_empty());
    assert_eq!(
        err.response_body(),
        Some("<html><body>Bad Gateway</body></html>")
    );
}

#[tokio::test]
async fn unreadable_2xx_body_is_a_decode_error() {
    let err = upsert_error(canned(200, "<html>maintenance</html>")).await;
    match &err {
        FreshworksError::Decode { status, body, .. } => {
            assert_eq!(*status, 200);
            assert_eq!(body, "<html>maintenance</html>");
        }
        other => panic!("expected Decode, got {other:?}"),
    }
    let err = upsert_error(canned(200, r#"{"contact":{"id":"not-a-number"}}"#)).await;
    assert!(matches!(err, FreshworksError::Decode { .. }), "{err:?}");
}

#[tokio::test]
async fn timeout_is_a_transport_error_and_not_retried() {
    let stub = Stub::start().await;
    let mut answer = canned(200, UPSERT_SAMPLE);
    // Far longer than the client's timeout; the assertion is on the error kind, not on time.
    answer.delay = Some(Duration::from_secs(60));
    stub.on("POST", &format!("{API}/contacts/upsert"), answer);
    let client = stub.client_with_timeout(Duration::from_millis(200));

    let err = client
        .upsert_contact(&json!({"unique_identifier":{"emails":"a@b.co"},"contact":{}}))
        .await
        .unwrap_err();

    match &err {
        FreshworksError::Transport {
            timeout,
            request_line,
            request_body,
            ..
        } => {
            assert!(*timeout);
            assert_eq!(request_line, "POST /contacts/upsert");
            assert!(request_body.is_some());
        }
        other => panic!("expected Transport, got {other:?}"),
    }
    assert!(err.is_timeout());
    assert_eq!(err.status(), None);
    assert_eq!(err.response_body(), None);
    stub.only();
}

#[tokio::test]
async fn connection_refused_is_a_transport_error() {
    // Take a free port and release it, so nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = FreshworksClient::new(ClientConfig {
        base_url: format!("http://127.0.0.1:{port}{API}/"),
        api_key: KEY.into(),
        timeout: Duration::from_secs(10),
        user_agent: "freshgate-test/1".into(),
    })
    .unwrap();
    assert_eq!(client.base_url(), format!("http://127.0.0.1:{port}{API}"));

    let err = client.get_contact(1).await.unwrap_err();

    match &err {
        FreshworksError::Transport {
            timeout,
            request_line,
            request_body,
            message,
        } => {
            assert!(!*timeout);
            assert_eq!(request_line, "GET /contacts/1");
            assert_eq!(*request_body, None);
            assert!(!message.is_empty());
        }
        other => panic!("expected Transport, got {other:?}"),
    }
}

#[tokio::test]
async fn client_debug_and_errors_never_show_the_key() {
    let stub = Stub::start().await;
    stub.on(
        "GET",
        &format!("{API}/contacts/1"),
        canned(401, r#"{"errors":{"code":401,"message":["nope"]}}"#),
    );
    let client = stub.client();
    assert!(!format!("{client:?}").contains(KEY));
    let err = client.get_contact(1).await.unwrap_err();
    assert!(!format!("{err:?}").contains(KEY));
    assert!(!err.to_string().contains(KEY));
}

#[test]
fn bad_configs_are_refused() {
    let config = |base_url: &str, api_key: &str| ClientConfig {
        base_url: base_url.into(),
        api_key: api_key.into(),
        timeout: Duration::from_secs(1),
        user_agent: "t".into(),
    };
    assert!(FreshworksClient::new(config("ftp://x/crm/sales/api", KEY)).is_err());
    assert!(FreshworksClient::new(config("not a url", KEY)).is_err());
    assert!(
        FreshworksClient::new(config("https://acme.myfreshworks.com/crm/sales/api", "")).is_err()
    );
    assert!(
        FreshworksClient::new(config(
            "https://acme.myfreshworks.com/crm/sales/api",
            "a\nb"
        ))
        .is_err()
    );
    let err = FreshworksClient::new(config(
        "https://acme.myfreshworks.com/crm/sales/api",
        "sek\nret",
    ))
    .unwrap_err();
    assert!(!err.to_string().contains("sek"));
}

/// A client of a fresh emulator.
async fn emulator() -> (freshworks_emulator::RunningEmulator, FreshworksClient) {
    let config = freshworks_emulator::EmulatorConfig::default();
    let key = config.api_key.clone();
    let emu = freshworks_emulator::RunningEmulator::start(config)
        .await
        .unwrap();
    let client = FreshworksClient::new(ClientConfig {
        base_url: emu.base_url.clone(),
        api_key: key,
        timeout: Duration::from_secs(10),
        user_agent: "freshgate-test/1".into(),
    })
    .unwrap();
    (emu, client)
}

#[tokio::test]
async fn emulator_accounts_activities_selectors_and_list_paging() {
    let (_emu, client) = emulator().await;

    let fields = client.account_fields().await.unwrap().body.fields;
    assert!(fields.iter().any(|f| f.name == "number_of_employees"));
    let types = client.sales_activity_types().await.unwrap().body;
    let purchase = types
        .sales_activity_types
        .iter()
        .find(|t| t.name == "Purchase")
        .unwrap()
        .id;
    let stages = client.lifecycle_stages().await.unwrap().body;
    assert!(stages.lifecycle_stages.iter().any(|s| s.name == "Customer"));
    let owners = client.owners().await.unwrap().body.users;
    let owner = owners
        .iter()
        .find(|o| o.is_active != Some(false))
        .unwrap()
        .id;

    let upsert = SalesAccountUpsert::new(
        "Initech",
        json!({"website": "initech.example", "number_of_employees": 120})
            .as_object()
            .unwrap()
            .clone(),
        serde_json::Map::new(),
    );
    let first = client
        .upsert_account(&upsert)
        .await
        .unwrap()
        .body
        .sales_account;
    let again = client
        .upsert_account(&upsert)
        .await
        .unwrap()
        .body
        .sales_account;
    assert_eq!(first.id, again.id, "accounts are upserted by name");

    let contact = client
        .upsert_contact(&json!({"unique_identifier": {"emails": "act@x.io"},
                                "contact": {"emails": "act@x.io"}}))
        .await
        .unwrap()
        .body
        .contact
        .id;
    let body = |type_id: i64, owner_id: i64| SalesActivityRequest {
        sales_activity: NewSalesActivity {
            title: "Order 7".into(),
            start_date: "2024-03-01T08:00:00-04:00".into(),
            end_date: "2024-03-01T08:00:00-04:00".into(),
            sales_activity_type_id: type_id,
            targetable_type: TargetableType::Contact,
            targetable_id: contact,
            owner_id,
            notes: Some("order_id: 7".into()),
            sales_activity_outcome_id: None,
        },
    };
    let created = client
        .create_activity(&body(purchase, owner))
        .await
        .unwrap();
    assert!(created.body.sales_activity.id > 0);
    for bad in [body(1, owner), body(purchase, 2)] {
        let err = client.create_activity(&bad).await.unwrap_err();
        assert_eq!(err.status(), Some(400), "{err}");
    }

    // Lists are found by name across pages (25 per page by default).
    for i in 0..30 {
        client.create_list(&format!("list-{i:02}")).await.unwrap();
    }
    let first_page = client.lists(1).await.unwrap().body;
    assert_eq!(first_page.meta.as_ref().unwrap().total_pages, 2);
    let second_page = client.lists(2).await.unwrap().body;
    assert!(second_page.lists.iter().any(|l| l.name == "list-29"));
    let list = second_page
        .lists
        .iter()
        .find(|l| l.name == "list-29")
        .unwrap()
        .id;
    client.add_to_list(list, &[contact]).await.unwrap();
    client.remove_from_list(list, &[contact]).await.unwrap();
}
