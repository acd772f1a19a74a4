//! GetCACaps (RFC 8894 §3.5.2): the capabilities advertised are exactly the ones implemented.

use crate::alg::ScepOptions;

/// A GetCACaps keyword.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Capability {
    /// AES-CBC content encryption.
    Aes,
    /// Triple DES content encryption (legacy).
    Des3,
    /// PKIOperation by POST.
    PostPkiOperation,
    /// RenewalReq.
    Renewal,
    /// SHA-1 (legacy).
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-512.
    Sha512,
    /// The RFC 8894 baseline (AES, POSTPKIOperation, SHA-256).
    ScepStandard,
    /// GetNextCACert.
    GetNextCaCert,
}

impl Capability {
    /// The keyword as it appears in the GetCACaps answer.
    pub fn keyword(self) -> &'static str {
        match self {
            Self::Aes => "AES",
            Self::Des3 => "DES3",
            Self::PostPkiOperation => "POSTPKIOperation",
            Self::Renewal => "Renewal",
            Self::Sha1 => "SHA-1",
            Self::Sha256 => "SHA-256",
            Self::Sha512 => "SHA-512",
            Self::ScepStandard => "SCEPStandard",
            Self::GetNextCaCert => "GetNextCACert",
        }
    }
}

/// What this crate implements: AES, SHA-256 and SHA-512, POSTPKIOperation, Renewal and
/// SCEPStandard; with the legacy option also SHA-1 and DES3. (Single DES, also accepted under
/// the legacy option, has no keyword: clients assume it. Neither has SHA-384, which is
/// accepted too.)
pub fn implemented_capabilities(options: &ScepOptions) -> Vec<Capability> {
    let mut caps = vec![
        Capability::Aes,
        Capability::PostPkiOperation,
        Capability::Renewal,
        Capability::Sha256,
        Capability::Sha512,
        Capability::ScepStandard,
    ];
    if options.legacy {
        caps.extend([Capability::Des3, Capability::Sha1]);
    }
    caps
}

/// The GetCACaps body (`text/plain`): one keyword per line, each line ended by a line feed.
pub fn ca_caps_text(capabilities: &[Capability]) -> String {
    capabilities
        .iter()
        .map(|c| format!("{}\n", c.keyword()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_caps_are_exactly_the_implemented_ones() {
        let text = ca_caps_text(&implemented_capabilities(&ScepOptions::STRICT));
        assert_eq!(
            text,
            "AES\nPOSTPKIOperation\nRenewal\nSHA-256\nSHA-512\nSCEPStandard\n"
        );
        assert!(!text.contains("DES3") && !text.contains("SHA-1"));
    }

    #[test]
    fn legacy_adds_sha1_and_des3() {
        let caps = implemented_capabilities(&ScepOptions::LEGACY);
        assert!(caps.contains(&Capability::Des3));
        assert!(caps.contains(&Capability::Sha1));
        let text = ca_caps_text(&caps);
        assert!(text.ends_with("DES3\nSHA-1\n"));
    }
}
