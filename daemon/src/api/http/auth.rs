//! Who is calling: on the Unix socket, the peer's uid (root and the daemon's own user are
//! admin, any other user who can open the 0660 socket is an operator); on TCP, a bearer token
//! from the configuration.

use hyper::header::AUTHORIZATION;
use hyper::{Request, StatusCode};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use crate::config::{ApiToken, Role};
use crate::service::audit::Actor;

#[derive(Debug, Clone)]
pub struct Caller {
    pub role: Role,
    /// Who this is, for the audit log.
    pub actor: Actor,
}

pub fn unix_caller(uid: Option<u32>) -> Caller {
    // The daemon's own user is admin too: a daemon run by a user (XDG paths) can do no more
    // than that user, so there is nothing to keep from them.
    let own = nix::unistd::geteuid().as_raw();
    let role = if uid == Some(0) || uid == Some(own) {
        Role::Admin
    } else {
        Role::Operator
    };
    Caller {
        role,
        actor: Actor {
            via: "http-unix",
            uid,
            role: Some(role),
            ..Actor::default()
        },
    }
}

/// The caller a bearer token identifies; 401 without a known token.
pub fn token_caller<B>(req: &Request<B>, tokens: &[ApiToken]) -> Result<Caller, ApiError> {
    let unauthorized =
        |why: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", why.to_owned());
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .ok_or_else(|| unauthorized("this endpoint needs Authorization: Bearer <token>"))?;
    let token = header
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| unauthorized("Authorization must be: Bearer <token>"))?;
    let digest = hex(&Sha256::digest(token.as_bytes()));
    // Comparing digests, not secrets: timing reveals nothing usable about a token.
    tokens
        .iter()
        .find(|t| t.sha256 == digest)
        .map(|t| Caller {
            role: t.role,
            actor: Actor {
                via: "http-tcp",
                token: Some(t.name.clone()),
                role: Some(t.role),
                ..Actor::default()
            },
        })
        .ok_or_else(|| unauthorized("unknown token"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_peers_carry_their_role_to_the_service() {
        let root = unix_caller(Some(0));
        assert_eq!(
            (root.role, root.actor.role),
            (Role::Admin, Some(Role::Admin))
        );
        let own = unix_caller(Some(nix::unistd::geteuid().as_raw()));
        assert_eq!(own.actor.role, Some(Role::Admin));
        if nix::unistd::geteuid().is_root() {
            let other = unix_caller(Some(4242));
            assert_eq!(other.actor.role, Some(Role::Operator));
            assert!(!other.actor.is_admin());
        }
        assert!(!unix_caller(None).actor.is_admin());
    }

    #[test]
    fn tokens_are_matched_by_hash() {
        let tokens = vec![ApiToken {
            name: "ci".into(),
            sha256: hex(&Sha256::digest(b"s3cret")),
            role: Role::Operator,
        }];
        let req = |h: Option<&str>| {
            let mut b = Request::builder();
            if let Some(h) = h {
                b = b.header(AUTHORIZATION, h);
            }
            b.body(()).unwrap()
        };
        assert_eq!(
            token_caller(&req(Some("Bearer s3cret")), &tokens)
                .unwrap()
                .role,
            Role::Operator
        );
        for bad in [
            None,
            Some("Bearer nope"),
            Some("Basic s3cret"),
            Some("Bearer "),
        ] {
            let e = token_caller(&req(bad), &tokens).unwrap_err();
            assert_eq!(e.status, StatusCode::UNAUTHORIZED, "{bad:?}");
        }
    }
}
