//! The one form of an email address that freshgate compares, stores and sends.
//!
//! Mapping, the contact shadow, the identity rule and the reference model all go through
//! [`normalize`], so two spellings of one address (`José@x.io` typed on a Mac, which sends the
//! decomposed `e` + U+0301, and on Windows, which sends the precomposed `é`) are one contact.

use unicode_normalization::UnicodeNormalization;

/// Trimmed, Unicode NFC, lower-cased as a whole (local part included: Freshworks matches
/// emails case-insensitively, and a contact per capitalisation would be a duplicate).
#[must_use]
pub fn normalize(email: &str) -> String {
    email.trim().nfc().collect::<String>().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nfc_and_nfd_spellings_are_one_address() {
        let nfc = "jos\u{e9}@example.org";
        let nfd = "jose\u{301}@example.org";
        assert_ne!(nfc, nfd);
        assert_eq!(normalize(nfc), normalize(nfd));
        assert_eq!(normalize(nfd), nfc);
    }

    #[test]
    fn trims_and_lower_cases_the_whole_address() {
        assert_eq!(
            normalize("  Jos\u{c9}@Example.ORG \n"),
            "jos\u{e9}@example.org"
        );
        assert_eq!(normalize("JOSE\u{301}@X.IO"), "jos\u{e9}@x.io");
    }
}
