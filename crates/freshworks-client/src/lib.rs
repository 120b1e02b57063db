//! freshworks-client
