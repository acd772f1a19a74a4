//! Why one request, order or enrollment failed, reduced to a kind the report can count:
//! servers fail in a few ways many times, and the counts say which way. Each protocol adds its
//! own constructors (ACME problem documents, SCEP failInfo).

/// A failure: its countable `kind` and a human `detail` (the first of each kind is reported).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) kind: String,
    pub(crate) detail: String,
}

impl Failure {
    /// Connection refused, reset, TLS failure, unreadable response.
    pub(crate) fn transport(detail: String) -> Self {
        Self {
            kind: "transport".into(),
            detail,
        }
    }

    pub(crate) fn timeout() -> Self {
        Self {
            kind: "timeout".into(),
            detail: "no answer within the request timeout".into(),
        }
    }

    /// An answer that breaks the protocol: a missing header, an object without its fields, a
    /// certificate that is not what was asked for.
    pub(crate) fn invalid(detail: String) -> Self {
        Self {
            kind: "invalid response".into(),
            detail,
        }
    }

    /// A well-formed answer that says the work cannot go on (an invalid authorization, a
    /// refused enrollment), or a failure of the generator's own state.
    pub(crate) fn state(kind: &str, detail: String) -> Self {
        Self {
            kind: kind.into(),
            detail,
        }
    }
}
