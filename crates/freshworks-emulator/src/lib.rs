//! freshworks-emulator
