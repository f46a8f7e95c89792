//! Exit codes scripts can rely on, and the error type that carries one.

use std::io;
use std::process::ExitCode;

use novacrond::client::ClientError;

pub const OK: u8 = 0;
pub const OTHER: u8 = 1;
/// Also clap's own code for a bad command line.
pub const USAGE: u8 = 2;
pub const NOT_FOUND: u8 = 3;
pub const CONFLICT: u8 = 4;
pub const INVALID: u8 = 5;
pub const TIMEOUT: u8 = 6;
pub const DENIED: u8 = 7;
pub const CONNECT: u8 = 8;

/// For `novactl --help`; API.md repeats it ("novactl exit codes").
pub const HELP: &str = "\
Exit codes:
  0  success
  1  any other error
  2  usage: bad arguments or options (including an unusable --url)
  3  not found (unknown domain or operation)
  4  conflict: wrong_state, busy, already_exists
  5  invalid input: invalid_config, bad_request, too_large, unsupported_media_type,
     or a local file or argument that cannot be used
  6  timeout
  7  unauthorized or forbidden
  8  cannot connect to the daemon";

/// Everything a command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Input given on the command line or in a file that cannot be used as is.
    #[error("{0}")]
    Input(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// An operation that failed on the daemon, reported with its error code.
    #[error("{message}")]
    Failed { code: String, message: String },
    #[error("{0}")]
    Other(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Client(e) => for_client_error(e),
            CliError::Input(_) => INVALID,
            CliError::Failed { code, .. } => for_error_code(code).unwrap_or(OTHER),
            CliError::Io { .. } | CliError::Other(_) => OTHER,
        }
    }

    /// Writing to a closed pipe (`novactl events | head`) is how a reader says "enough",
    /// not an error worth a message.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
    }

    pub fn into_exit_code(self) -> ExitCode {
        ExitCode::from(self.exit_code())
    }
}

pub fn for_client_error(e: &ClientError) -> u8 {
    match e {
        ClientError::Connect { .. } => CONNECT,
        ClientError::BadTarget(_) | ClientError::InvalidRequest(_) => USAGE,
        ClientError::Api { status, code, .. } => {
            for_error_code(code).unwrap_or_else(|| for_status(*status))
        }
        ClientError::Http(_) | ClientError::Protocol(_) | ClientError::TooLarge { .. } => OTHER,
    }
}

/// The server's stable error codes (API.md, "Errors").
pub fn for_error_code(code: &str) -> Option<u8> {
    Some(match code {
        "not_found" => NOT_FOUND,
        "wrong_state" | "busy" | "already_exists" => CONFLICT,
        "invalid_config" | "bad_request" | "too_large" | "unsupported_media_type" => INVALID,
        "timeout" => TIMEOUT,
        "unauthorized" | "forbidden" => DENIED,
        "method_not_allowed" | "not_acceptable" | "qmp_error" | "internal" | "unsupported"
        | "remote" | "unavailable" => OTHER,
        _ => return None,
    })
}

/// For an answer without a known code (a proxy in between, a newer daemon).
fn for_status(status: u16) -> u8 {
    match status {
        404 => NOT_FOUND,
        409 => CONFLICT,
        400 | 413 | 415 | 422 => INVALID,
        408 | 504 => TIMEOUT,
        401 | 403 => DENIED,
        _ => OTHER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: &str) -> ClientError {
        ClientError::Api {
            status,
            code: code.into(),
            message: String::new(),
            details: Vec::new(),
        }
    }

    #[test]
    fn maps_every_contract_code() {
        let cases = [
            (404, "not_found", NOT_FOUND),
            (409, "wrong_state", CONFLICT),
            (409, "busy", CONFLICT),
            (409, "already_exists", CONFLICT),
            (400, "invalid_config", INVALID),
            (400, "bad_request", INVALID),
            (413, "too_large", INVALID),
            (415, "unsupported_media_type", INVALID),
            (504, "timeout", TIMEOUT),
            (401, "unauthorized", DENIED),
            (403, "forbidden", DENIED),
            (405, "method_not_allowed", OTHER),
            (406, "not_acceptable", OTHER),
            (422, "qmp_error", OTHER),
            (500, "internal", OTHER),
            (501, "unsupported", OTHER),
            (502, "remote", OTHER),
        ];
        for (status, code, exit) in cases {
            assert_eq!(for_client_error(&api(status, code)), exit, "{code}");
        }
    }

    #[test]
    fn every_domain_error_code_has_a_mapping() {
        for code in novacron_domain::ErrorCode::ALL {
            assert!(for_error_code(code.as_str()).is_some(), "{code}");
        }
    }

    #[test]
    fn unknown_codes_fall_back_to_the_status() {
        assert_eq!(for_client_error(&api(404, "")), NOT_FOUND);
        assert_eq!(for_client_error(&api(409, "new_code")), CONFLICT);
        assert_eq!(for_client_error(&api(401, "")), DENIED);
        assert_eq!(for_client_error(&api(504, "")), TIMEOUT);
        assert_eq!(for_client_error(&api(418, "")), OTHER);
    }

    #[test]
    fn local_failures() {
        let connect = ClientError::Connect {
            target: "/x".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        assert_eq!(for_client_error(&connect), CONNECT);
        assert_eq!(for_client_error(&ClientError::BadTarget("x".into())), USAGE);
        assert_eq!(CliError::Input("x".into()).exit_code(), INVALID);
        let failed = CliError::Failed {
            code: "timeout".into(),
            message: "m".into(),
        };
        assert_eq!(failed.exit_code(), TIMEOUT);
        let pipe = CliError::Io {
            what: "stdout".into(),
            source: io::Error::from(io::ErrorKind::BrokenPipe),
        };
        assert!(pipe.is_broken_pipe());
        assert_eq!(pipe.exit_code(), OTHER);
    }
}
