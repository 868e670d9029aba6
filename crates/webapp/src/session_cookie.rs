//! The session cookie of a request, read as tower-sessions' layer reads it
//! (the last `NODESESSID` of all `Cookie` headers, percent-decoded, parsed
//! as a 128-bit id), without the layer's per-request session object.
//!
//! The handlers never change a tower-sessions `Session` (`hello` starts a
//! session and sets its cookie itself, as the layer would have),
//! so all the layer did per request was: parse the cookies into a jar,
//! build a `Session` (an `Arc`, two locks, a boxed future) and, after the
//! answer, remove a cookie whose value is not an id (a `Set-Cookie` with
//! `Max-Age=0`). That was 7 % of the CPU of a `GET /` (perf, see the
//! README's "Speed"). [`read_session_cookie`] does the same two things: it
//! hands the id to the handler as [`SessionCookie`] and removes a cookie it
//! cannot read, with the same header; the test below runs both side by
//! side on the same requests.

use axum::extract::{FromRequestParts, Request};
use axum::http::header::{HeaderMap, HeaderValue, COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use tower_sessions::cookie::Cookie;
use tower_sessions::session::Id;

use crate::{COOKIE_NAME, COOKIE_PATH};

/// The session id the request's cookie names, if it names one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionCookie(pub Option<Id>);

/// What the request's `NODESESSID` cookie holds.
pub(crate) enum Found {
    None,
    Id(Id),
    /// A cookie whose value is not an id: removed in the answer.
    Unreadable(Cookie<'static>),
}

/// The last `NODESESSID` cookie of all `Cookie` headers, as tower-cookies'
/// jar keeps it: each header split at `;`, each piece parsed and
/// percent-decoded (pieces that do not parse are skipped), a later cookie of
/// the same name replacing an earlier one.
pub(crate) fn find(headers: &HeaderMap) -> Found {
    let mut last = None;
    for header in headers.get_all(COOKIE) {
        let Ok(text) = std::str::from_utf8(header.as_bytes()) else {
            continue;
        };
        for piece in text.split(';') {
            if let Ok(cookie) = Cookie::parse_encoded(piece) {
                if cookie.name() == COOKIE_NAME {
                    last = Some(cookie);
                }
            }
        }
    }
    match last {
        None => Found::None,
        Some(cookie) => match cookie.value().parse::<Id>() {
            Ok(id) => Found::Id(id),
            Err(_) => Found::Unreadable(cookie.into_owned()),
        },
    }
}

impl Found {
    /// The id it names, if it names one.
    pub(crate) fn id(&self) -> Option<Id> {
        match self {
            Found::Id(id) => Some(*id),
            _ => None,
        }
    }

    /// When the cookie's value is not an id, appends to the answer the
    /// `Set-Cookie` that removes it (`NODESESSID=; Path=/; Max-Age=0;
    /// Expires=<a year ago>`), after any the handler set, as tower-sessions
    /// did.
    pub(crate) fn remove_unreadable(&self, res: &mut Response) {
        if let Some(value) = self.removal() {
            res.headers_mut().append(SET_COOKIE, value);
        }
    }

    /// The `Set-Cookie` that [`Found::remove_unreadable`] appends, if any.
    pub(crate) fn removal(&self) -> Option<HeaderValue> {
        let Found::Unreadable(cookie) = self else {
            return None;
        };
        let mut cookie = cookie.clone();
        cookie.set_path(COOKIE_PATH);
        cookie.make_removal();
        HeaderValue::from_str(&cookie.to_string()).ok()
    }
}

/// Middleware: puts the request's [`SessionCookie`] in its extensions and
/// removes a cookie that is not an id ([`Found::remove_unreadable`]).
pub async fn read_session_cookie(mut req: Request, next: Next) -> Response {
    let found = find(req.headers());
    req.extensions_mut().insert(SessionCookie(found.id()));
    let mut res = next.run(req).await;
    found.remove_unreadable(&mut res);
    res
}

impl<S: Send + Sync> FromRequestParts<S> for SessionCookie {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<SessionCookie>()
            .copied()
            .unwrap_or(SessionCookie(None)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::{SessionBackend, SessionCache};
    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use std::time::Duration;
    use tower::ServiceExt;
    use tower_sessions::Session;

    /// The `Set-Cookie` values of an answer, with the `Expires` date cut
    /// (it is "now minus a year", to the second).
    fn set_cookies(res: &Response) -> Vec<String> {
        res.headers()
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| {
                let v = v.to_str().unwrap();
                v.split("; Expires=").next().unwrap().to_owned()
            })
            .collect()
    }

    /// Each request through tower-sessions' layer and through ours: the
    /// handler sees the same id, the answer gets the same `Set-Cookie`s.
    #[tokio::test]
    async fn reads_and_removes_cookies_as_tower_sessions_does() {
        let valid = Id::default().to_string();
        let other = Id::default().to_string();
        let cases: Vec<Vec<String>> = vec![
            vec![],
            vec![format!("NODESESSID={valid}")],
            vec![format!("a=1; NODESESSID={valid}; b=2")],
            vec![format!(" NODESESSID = {valid} ")],
            vec![format!("NODESESSID={valid}; NODESESSID={other}")],
            vec![format!("NODESESSID={valid}"), format!("NODESESSID={other}")],
            vec![format!("NODESESSID={valid}"), "NODESESSID=bad".into()],
            vec!["NODESESSID=bad".into(), format!("NODESESSID={valid}")],
            vec!["NODESESSID=not-an-id".into()],
            vec!["NODESESSID=".into()],
            vec!["NODESESSID".into()],
            vec![format!("NODESESSID={}", &valid[..21])],
            vec![format!("NODESESSID={valid}A")],
            vec![format!("NODE%53ESSID={valid}")],
            vec![format!("NODESESSID={}", valid.replacen('A', "%41", 1))],
            vec!["NODESESSID=%zz".into()],
            vec!["other=1".into()],
            vec![";;".into()],
            vec![format!("nodesessid={valid}")],
        ];
        for cookies in cases {
            let store = SessionBackend::Memory(SessionCache::new(10, Duration::from_secs(60)));
            let theirs = Router::new()
                .route(
                    "/",
                    get(|session: Session| async move { format!("{:?}", session.id()) }),
                )
                .layer(crate::session_layer(store));
            let ours = Router::new()
                .route(
                    "/",
                    get(|cookie: SessionCookie| async move { format!("{:?}", cookie.0) }),
                )
                .layer(axum::middleware::from_fn(read_session_cookie));
            let request = || {
                let mut req = Request::get("/");
                for c in &cookies {
                    req = req.header(COOKIE, c.as_str());
                }
                req.body(Body::empty()).unwrap()
            };
            let their_res = theirs.oneshot(request()).await.unwrap();
            let our_res = ours.oneshot(request()).await.unwrap();
            assert_eq!(
                set_cookies(&our_res),
                set_cookies(&their_res),
                "{cookies:?}"
            );
            let body = |res: Response| async move {
                let bytes = axum::body::to_bytes(res.into_body(), 1 << 16)
                    .await
                    .unwrap();
                String::from_utf8(bytes.to_vec()).unwrap()
            };
            assert_eq!(body(our_res).await, body(their_res).await, "{cookies:?}");
        }
    }

    #[test]
    fn a_removal_cookie_expires_now() {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_static("NODESESSID=x"));
        let Found::Unreadable(mut cookie) = find(&headers) else {
            panic!("an unreadable cookie");
        };
        cookie.set_path(COOKIE_PATH);
        cookie.make_removal();
        let text = cookie.to_string();
        assert!(
            text.starts_with("NODESESSID=; Path=/; Max-Age=0; Expires="),
            "{text}"
        );
    }
}
