//! Who is asking: HS256 JWTs with the SPEC's claims.
//!
//! `admin` reads everything; `community_admin` only the communities in its
//! `communities` claim; `user` only `/user/{sub}`. Only HS256 is accepted
//! (`alg: none` and every other algorithm are refused), `exp` is required
//! (any NumericDate: `time.time() + 600` from Python is a fraction), `nbf`
//! is honoured when present, a `community_admin` token must carry
//! `communities`, and the reserved UUIDs
//! ([`activity_core::event::is_reserved`]) are refused in it.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;
use crate::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    CommunityAdmin,
    User,
}

/// The token's claims.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    /// Expiry: seconds since the epoch, whole or not (RFC 7519's
    /// NumericDate; many clients write `now + ttl` as a fraction). Checked
    /// exactly in [`Keys::verify`]; minted tokens carry whole seconds.
    #[serde(serialize_with = "numeric_date")]
    pub exp: f64,
    pub role: Role,
    /// The communities a `community_admin` may read; required for that
    /// role (a token without the claim is refused, an empty list reads
    /// nothing), ignored for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub communities: Option<Vec<Uuid>>,
    /// Not before: seconds since the epoch, whole or not (RFC 7519's
    /// NumericDate). `jsonwebtoken`'s own check reads only a whole `nbf`
    /// that fits 64 bits and takes any other as absent, so `1e30` or
    /// `1893456000.5` let a token in early; [`Keys::verify`] checks this
    /// field instead (one check, one message), and a value that is not a
    /// number fails to parse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<f64>,
}

/// The verified caller of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub role: Role,
    pub subject: String,
    pub communities: Arc<HashSet<Uuid>>,
}

impl Caller {
    /// `None` for every community (admin), otherwise the ones it may read.
    pub fn community_scope(&self) -> Option<Vec<Uuid>> {
        match self.role {
            Role::Admin => None,
            Role::CommunityAdmin => {
                let mut ids: Vec<Uuid> = self.communities.iter().copied().collect();
                ids.sort();
                Some(ids)
            }
            Role::User => Some(Vec::new()),
        }
    }

    pub fn may_read_community(&self, id: Uuid) -> bool {
        match self.role {
            Role::Admin => true,
            Role::CommunityAdmin => self.communities.contains(&id),
            Role::User => false,
        }
    }

    /// The user this caller is, if it is a `user` (its `sub`).
    pub fn user_id(&self) -> Option<Uuid> {
        match self.role {
            Role::User => Uuid::parse_str(&self.subject).ok(),
            _ => None,
        }
    }
}

/// Signs and verifies tokens with one HS256 key.
#[derive(Clone)]
pub struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl Keys {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }

    pub fn mint(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
    }

    pub fn verify(&self, token: &str) -> Result<Caller, ApiError> {
        refuse_critical_extensions(token)?;
        let mut validation = Validation::new(Algorithm::HS256);
        // `exp` and `nbf` are checked below, whatever number they are (see
        // `Claims::exp`, `Claims::nbf`): `jsonwebtoken` reads a fractional
        // `exp` as missing. `Claims` requires `exp` (a token without it
        // fails to parse).
        validation.set_required_spec_claims(&["sub"]);
        validation.validate_exp = false;
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|e| ApiError::Unauthorized(format!("invalid token: {e}")))?;
        let claims = data.claims;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        if !claims.exp.is_finite() || claims.exp <= now {
            return Err(ApiError::Unauthorized(
                "invalid token: it has expired (exp)".into(),
            ));
        }
        if let Some(nbf) = claims.nbf {
            if !nbf.is_finite() || nbf > now {
                return Err(ApiError::Unauthorized(
                    "invalid token: it is not valid yet (nbf)".into(),
                ));
            }
        }
        let communities = match (claims.role, claims.communities) {
            (Role::CommunityAdmin, None) => {
                return Err(ApiError::Unauthorized(
                    "invalid token: a community_admin token must carry communities (a list of community UUIDs)"
                        .into(),
                ))
            }
            (_, communities) => communities.unwrap_or_default(),
        };
        if communities
            .iter()
            .any(|id| activity_core::event::is_reserved(*id))
        {
            return Err(ApiError::Unauthorized(
                "invalid token: communities must not hold the nil or the max UUID (both are reserved)"
                    .into(),
            ));
        }
        let user_id = Uuid::parse_str(&claims.sub).ok();
        if claims.role == Role::User && user_id.is_none_or(activity_core::event::is_reserved) {
            return Err(ApiError::Unauthorized(
                "invalid token: a user token's sub must be the user's UUID (not a reserved one)"
                    .into(),
            ));
        }
        Ok(Caller {
            role: claims.role,
            subject: claims.sub,
            communities: Arc::new(communities.into_iter().collect()),
        })
    }
}

/// Writes a whole NumericDate as an integer (what every JWT library reads),
/// any other as it is.
fn numeric_date<S: serde::Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    if value.fract() == 0.0 && *value >= 0.0 && *value < u64::MAX as f64 {
        serializer.serialize_u64(*value as u64)
    } else {
        serializer.serialize_f64(*value)
    }
}

/// RFC 7515 (4.1.11): a header's `crit` names extensions the recipient
/// must understand or else refuse the token. This API understands none, and
/// `jsonwebtoken` ignores the parameter, so a token carrying it is refused
/// here.
fn refuse_critical_extensions(token: &str) -> Result<(), ApiError> {
    use base64::Engine;
    let header = token.split('.').next().unwrap_or_default();
    let critical = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .is_some_and(|header| header.get("crit").is_some());
    if critical {
        return Err(ApiError::Unauthorized(
            "invalid token: critical header extensions (crit) are not supported".into(),
        ));
    }
    // A header that does not decode is refused by the verification itself.
    Ok(())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                ApiError::Unauthorized("missing Authorization: Bearer <token>".into())
            })?;
        let value = header
            .to_str()
            .map_err(|_| ApiError::Unauthorized("malformed Authorization header".into()))?;
        let token = activity_core::bearer_credential(value).ok_or_else(|| {
            ApiError::Unauthorized("expected Authorization: Bearer <token>".into())
        })?;
        state.keys.verify(token)
    }
}
