//! Who may use the console and the admin API.
//!
//! With `FRESHGATE_ADMIN_TOKEN` set, every request needs it: `Authorization: Bearer <token>`
//! from scripts, or the session cookie the login form sets in a browser. The cookie holds an
//! HMAC of the token, not the token, so a leaked cookie does not reveal it, and changing the
//! token ends every session. Comparisons are constant-time. Without a token the console is open,
//! which start-up allows only on a loopback address.

use std::net::SocketAddr;

use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, COOKIE};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

/// Name of the browser session cookie.
pub const COOKIE_NAME: &str = "freshgate_admin";

/// What the admin listener requires.
#[derive(Clone)]
pub struct AdminAuth {
    token: Option<SecretString>,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Start-up refuses an admin listener reachable from elsewhere without a token.
#[derive(Debug, thiserror::Error)]
#[error(
    "server.admin_listen = {addr} is not a loopback address and {var} is not set: set a token, or listen on 127.0.0.1"
)]
pub struct PublicWithoutToken {
    /// The address.
    pub addr: SocketAddr,
    /// The variable to set.
    pub var: &'static str,
}

impl AdminAuth {
    /// Check the listener address against the token (empty tokens count as none).
    ///
    /// # Errors
    /// A non-loopback address without a token.
    pub fn new(addr: SocketAddr, token: Option<String>) -> Result<Self, PublicWithoutToken> {
        let token = token.filter(|t| !t.is_empty()).map(SecretString::from);
        if token.is_none() && !addr.ip().is_loopback() {
            return Err(PublicWithoutToken {
                addr,
                var: crate::config::ENV_ADMIN_TOKEN,
            });
        }
        Ok(Self { token })
    }

    /// Whether a token is required.
    #[must_use]
    pub fn required(&self) -> bool {
        self.token.is_some()
    }

    /// Whether `presented` is the token.
    #[must_use]
    pub fn token_matches(&self, presented: &str) -> bool {
        self.token
            .as_ref()
            .is_some_and(|t| bool::from(t.expose_secret().as_bytes().ct_eq(presented.as_bytes())))
    }

    /// The cookie value a login sets (`None` when no token is configured).
    #[must_use]
    pub fn session_value(&self) -> Option<String> {
        let token = self.token.as_ref()?;
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(token.expose_secret().as_bytes()).ok()?;
        mac.update(b"freshgate console session v1");
        Some(hex::encode(mac.finalize().into_bytes()))
    }

    /// Whether a request may pass: no token configured, the bearer token, or the session cookie.
    #[must_use]
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        if self.token.is_none() {
            return true;
        }
        let bearer = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if bearer.is_some_and(|t| self.token_matches(t.trim())) {
            return true;
        }
        let Some(session) = self.session_value() else {
            return false;
        };
        headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .any(|(name, value)| {
                name == COOKIE_NAME && bool::from(value.as_bytes().ct_eq(session.as_bytes()))
            })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn public_listener_needs_a_token() {
        assert!(AdminAuth::new(addr("0.0.0.0:8081"), None).is_err());
        assert!(AdminAuth::new(addr("0.0.0.0:8081"), Some(String::new())).is_err());
        assert!(AdminAuth::new(addr("0.0.0.0:8081"), Some("t".into())).is_ok());
        assert!(
            !AdminAuth::new(addr("127.0.0.1:8081"), None)
                .unwrap()
                .required()
        );
        assert!(AdminAuth::new(addr("[::1]:8081"), None).is_ok());
    }

    #[test]
    fn bearer_or_session_cookie() {
        let auth = AdminAuth::new(addr("0.0.0.0:1"), Some("s3cret".into())).unwrap();
        let mut h = HeaderMap::new();
        assert!(!auth.allows(&h));
        h.insert(AUTHORIZATION, "Bearer wrong".parse().unwrap());
        assert!(!auth.allows(&h));
        h.insert(AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(auth.allows(&h));
        let mut c = HeaderMap::new();
        let session = auth.session_value().unwrap();
        assert!(!session.contains("s3cret"));
        c.insert(
            COOKIE,
            format!("a=b; {COOKIE_NAME}={session}").parse().unwrap(),
        );
        assert!(auth.allows(&c));
        c.insert(COOKIE, format!("{COOKIE_NAME}=s3cret").parse().unwrap());
        assert!(!auth.allows(&c), "the token itself is not a session");
    }
}
