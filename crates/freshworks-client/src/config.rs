//! Client configuration: the base URL, the API key (never printed), timeouts, and the
//! normalisation of a user-supplied Freshworks domain into a base URL (spec/freshworks.md §1).

use std::fmt;
use std::time::Duration;

use reqwest::Url;

/// The API path under every Freshworks CRM host.
const API_PATH: &str = "/crm/sales/api";

/// The two host families Freshworks documents for a bundle alias (spec §1, [FWDOC-B]).
const HOST_SUFFIXES: [&str; 2] = [".myfreshworks.com", ".freshworks.com"];

/// What [`crate::FreshworksClient::new`] needs.
#[derive(Clone)]
pub struct ClientConfig {
    /// The API root, e.g. `https://acme.myfreshworks.com/crm/sales/api` or
    /// `http://127.0.0.1:PORT/crm/sales/api` (emulator). A trailing `/` is ignored.
    pub base_url: String,
    /// The user's API key, sent as `Authorization: Token token=<key>`. Never logged.
    pub api_key: String,
    /// Whole-request timeout (connect, send, and reading the full response body).
    pub timeout: Duration,
    /// The `User-Agent` header sent on every request.
    pub user_agent: String,
}

impl fmt::Debug for ClientConfig {
    // Hand-written so that the API key can never reach a log line through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("user_agent", &self.user_agent)
            .finish()
    }
}

/// Why a client could not be built. All of these are configuration mistakes: fix the config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// `base_url` is not an absolute `http`/`https` URL.
    #[error("invalid Freshworks base URL {url:?}: {reason}")]
    InvalidBaseUrl {
        /// The URL as configured.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The API key is empty or cannot be sent in an HTTP header. The key itself is not included.
    #[error("invalid Freshworks API key: {reason}")]
    InvalidApiKey {
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP stack could not be initialised (e.g. TLS setup failed).
    #[error("could not build the HTTP client: {message}")]
    Build {
        /// The underlying error.
        message: String,
    },
}

/// A Freshworks domain that [`base_url_for_domain`] does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid Freshworks domain {input:?}: {reason}; expected a bundle alias such as \"acme\", a host such as \
     \"acme.myfreshworks.com\" or \"acme.freshworks.com\", or an https URL such as \"https://acme.myfreshworks.com\""
)]
pub struct DomainError {
    /// The value as given.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Turn a configured Freshworks domain into the API base URL.
///
/// Accepts `acme`, `acme.myfreshworks.com`, `acme.freshworks.com`, and the same hosts as
/// `https://` URLs with or without a path (the path is replaced by `/crm/sales/api`). Surrounding
/// whitespace is trimmed; upper case is lowered. Everything else is refused: other hosts, other
/// schemes, ports, credentials, queries, inner whitespace, empty input.
pub fn base_url_for_domain(domain: &str) -> Result<String, DomainError> {
    let fail = |reason: &str| DomainError {
        input: domain.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = domain.trim();
    if trimmed.is_empty() {
        return Err(fail("it is empty"));
    }
    if trimmed.chars().any(char::is_whitespace) {
        return Err(fail("it contains whitespace"));
    }
    let host = if let Some((scheme, _)) = trimmed.split_once("://") {
        if !scheme.eq_ignore_ascii_case("https") {
            return Err(fail("only https URLs are accepted"));
        }
        let url = Url::parse(trimmed).map_err(|e| fail(&format!("it is not a valid URL ({e})")))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(fail("it must not contain credentials"));
        }
        if url.port().is_some() {
            return Err(fail("it must not contain a port"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(fail("it must not contain a query or fragment"));
        }
        url.host_str()
            .ok_or_else(|| fail("it has no host"))?
            .to_owned()
    } else {
        // A bare host, possibly followed by a path (`acme.myfreshworks.com/crm/sales/api`).
        let host = trimmed.split('/').next().unwrap_or_default();
        if host.contains([':', '@', '?', '#']) {
            return Err(fail(
                "the host must not contain a port, credentials, query or fragment",
            ));
        }
        host.to_ascii_lowercase()
    };
    let (alias, suffix) = if host.contains('.') {
        let suffix = HOST_SUFFIXES
            .iter()
            .find(|s| host.ends_with(*s))
            .ok_or_else(|| fail("the host is not under myfreshworks.com or freshworks.com"))?;
        (&host[..host.len() - suffix.len()], *suffix)
    } else {
        (host.as_str(), HOST_SUFFIXES[0])
    };
    if !is_valid_alias(alias) {
        return Err(fail(
            "the bundle alias must be one DNS label of letters, digits and '-'",
        ));
    }
    Ok(format!("https://{alias}{suffix}{API_PATH}"))
}

fn is_valid_alias(alias: &str) -> bool {
    !alias.is_empty()
        && alias.len() <= 63
        && !alias.starts_with('-')
        && !alias.ends_with('-')
        && alias
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const ACME: &str = "https://acme.myfreshworks.com/crm/sales/api";

    #[test]
    fn accepts_alias_hosts_and_urls() {
        for input in [
            "acme",
            "ACME",
            " acme \n",
            "acme.myfreshworks.com",
            "Acme.MyFreshworks.com",
            "acme.myfreshworks.com/crm/sales/api",
            "https://acme.myfreshworks.com",
            "https://acme.myfreshworks.com/",
            "https://acme.myfreshworks.com/crm/sales/api",
            "https://acme.myfreshworks.com/crm/sales/api/",
            "HTTPS://acme.myfreshworks.com",
        ] {
            assert_eq!(base_url_for_domain(input).unwrap(), ACME, "input {input:?}");
        }
        assert_eq!(
            base_url_for_domain("widgetz.freshworks.com").unwrap(),
            "https://widgetz.freshworks.com/crm/sales/api"
        );
        assert_eq!(
            base_url_for_domain("https://my-co-2.freshworks.com/crm/sales").unwrap(),
            "https://my-co-2.freshworks.com/crm/sales/api"
        );
    }

    #[test]
    fn refuses_everything_else() {
        for input in [
            "",
            "   ",
            "ac me",
            "acme.example.com",
            "example.com",
            "myfreshworks.com",
            ".myfreshworks.com",
            "a.b.myfreshworks.com",
            "evil.com/.myfreshworks.com",
            "acme.myfreshworks.com.evil.com",
            "http://acme.myfreshworks.com",
            "ftp://acme.myfreshworks.com",
            "https://acme.myfreshworks.com:8443",
            "https://user:pw@acme.myfreshworks.com",
            "https://acme.myfreshworks.com/?x=1",
            "acme.myfreshworks.com:443",
            "-acme",
            "acme_co",
            "https://",
        ] {
            let err = base_url_for_domain(input).unwrap_err();
            assert_eq!(err.input, input);
            let text = err.to_string();
            assert!(text.contains("expected a bundle alias"), "{text}");
        }
    }

    #[test]
    fn debug_redacts_the_key() {
        let config = ClientConfig {
            base_url: ACME.into(),
            api_key: "sekret-key-123".into(),
            timeout: Duration::from_secs(5),
            user_agent: "freshgate/test".into(),
        };
        let printed = format!("{config:?}");
        assert!(!printed.contains("sekret"), "{printed}");
        assert!(printed.contains("<redacted>"));
    }
}
