//! freshgate
