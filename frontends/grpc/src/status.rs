//! The one place where an engine error becomes a gRPC status. Every handler goes through
//! [`to_status`], so a variant's wire code is decided here and nowhere else.

use nereid_engine::EngineError;
use tonic::{Code, Status};

/// The gRPC code of an engine error.
pub fn code(error: &EngineError) -> Code {
    match error {
        EngineError::InvalidArgument(_) => Code::InvalidArgument,
        EngineError::NotFound(_) => Code::NotFound,
        EngineError::Unavailable(_) => Code::Unavailable,
        EngineError::ResourceExhausted(_) => Code::ResourceExhausted,
        EngineError::Unimplemented(_) => Code::Unimplemented,
        EngineError::Cancelled(_) => Code::Cancelled,
        EngineError::DeadlineExceeded(_) => Code::DeadlineExceeded,
        EngineError::Internal(_) => Code::Internal,
    }
}

/// The gRPC status of an engine error, carrying its message unchanged.
pub fn to_status(error: EngineError) -> Status {
    let code = code(&error);
    Status::new(code, error.to_string())
}

/// The engine error a gRPC status stands for (the inverse of [`to_status`]), used by the
/// client so callers see one error type whichever side failed. Codes the engine never
/// produces become [`EngineError::Internal`] or [`EngineError::Unavailable`] by their
/// nature.
pub fn from_status(status: &Status) -> EngineError {
    let msg = status.message().to_string();
    match status.code() {
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
            EngineError::InvalidArgument(msg)
        }
        Code::NotFound => EngineError::NotFound(msg),
        Code::Unavailable | Code::Aborted => EngineError::Unavailable(msg),
        Code::ResourceExhausted => EngineError::ResourceExhausted(msg),
        Code::Unimplemented => EngineError::Unimplemented(msg),
        Code::Cancelled => EngineError::Cancelled(msg),
        Code::DeadlineExceeded => EngineError::DeadlineExceeded(msg),
        _ => EngineError::Internal(msg),
    }
}

/// Short for the UNIMPLEMENTED answer of an RPC Nereid does not serve yet.
pub(crate) fn not_built(rpc: &str, why: &str) -> Status {
    Status::unimplemented(format!("{rpc} is not implemented by Nereid yet: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_code_and_round_trips() {
        let cases = [
            (
                EngineError::InvalidArgument("a".into()),
                Code::InvalidArgument,
            ),
            (EngineError::NotFound("b".into()), Code::NotFound),
            (EngineError::Unavailable("c".into()), Code::Unavailable),
            (
                EngineError::ResourceExhausted("h".into()),
                Code::ResourceExhausted,
            ),
            (EngineError::Unimplemented("d".into()), Code::Unimplemented),
            (EngineError::Cancelled("e".into()), Code::Cancelled),
            (
                EngineError::DeadlineExceeded("f".into()),
                Code::DeadlineExceeded,
            ),
            (EngineError::Internal("g".into()), Code::Internal),
        ];
        for (error, want) in cases {
            let status = to_status(error.clone());
            assert_eq!(status.code(), want);
            assert_eq!(status.message(), error.to_string());
            assert_eq!(from_status(&status), error);
        }
    }
}
