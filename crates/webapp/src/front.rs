//! The service every connection runs: `GET /` and `HEAD /` (all the lab's
//! traffic and HAProxy's health checks) are answered straight from the
//! [`AppState`], every other request by the router ([`crate::app`]), which
//! also answers `/` itself when it is served on its own.
//!
//! Through the router, a `GET /` took a route lookup, a clone of the boxed
//! route, the cookie middleware's boxed future and its extension map, and
//! axum's `OriginalUri` and `MatchedPath` extensions: about a third of the
//! app's own CPU per request (perf, see the README's "Speed"). Here it is
//! one match on method and path, the cookie read by the same function the
//! middleware uses, and the same handler body; the unit test below sends
//! the same requests both ways and compares the answers.

use std::convert::Infallible;
use std::future::Future;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{HeaderValue, SET_COOKIE};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::ServiceExt;

use tower_sessions::session::Id;

use crate::session_cookie;
use crate::{app, ApiError, AppState, RequestId};

/// The app as a connection serves it.
#[derive(Clone, Debug)]
pub(crate) struct Front {
    state: AppState,
    router: Router,
}

impl Front {
    pub(crate) fn new(state: AppState) -> Self {
        Front {
            router: app(state.clone()),
            state,
        }
    }

    /// The answer to `req`.
    pub(crate) fn answer<B>(
        &self,
        req: Request<B>,
    ) -> impl Future<Output = Result<Response, Infallible>> + Send + 'static
    where
        B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let root = req.uri().path() == "/";
        let call = if root && (req.method() == Method::GET || req.method() == Method::HEAD) {
            Call::Root(Root::read(&req), self.state.clone())
        } else {
            // Boxed, so that the hot route's future stays small (it is
            // moved a few times per request): a few hundred bytes, not
            // kilobytes.
            Call::Router(Box::pin(self.router.clone().oneshot(req.map(Body::new))))
        };
        async move {
            match call {
                Call::Root(root, state) => Ok(root.answer(&state).await),
                Call::Router(answer) => answer.await,
            }
        }
    }
}

type RouterAnswer =
    std::pin::Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send + 'static>>;

enum Call {
    Root(Root, AppState),
    Router(RouterAnswer),
}

/// What a `GET /` or `HEAD /` needs of its request, read before it is
/// dropped.
struct Root {
    head: bool,
    /// The session id the cookie names.
    cookie: Option<Id>,
    /// The `Set-Cookie` removing a cookie that is not an id.
    removal: Option<HeaderValue>,
    /// The request id, or the 400 a malformed one gets.
    request: Result<RequestId, ApiError>,
}

impl Root {
    fn read<B>(req: &Request<B>) -> Self {
        let found = session_cookie::find(req.headers());
        Root {
            head: req.method() == Method::HEAD,
            cookie: found.id(),
            removal: found.removal(),
            request: RequestId::from_headers(req.headers()),
        }
    }

    /// As the router with the cookie middleware answers: the cookie read
    /// first, then the request id (a malformed one is a 400), then the
    /// handler; a cookie that is not an id removed in the answer.
    async fn answer(self, state: &AppState) -> Response {
        let mut res = if self.head {
            state.health()
        } else {
            match self.request {
                Ok(request) => state
                    .hello(request.as_str(), self.cookie)
                    .await
                    .unwrap_or_else(IntoResponse::into_response),
                Err(e) => e.into_response(),
            }
        };
        if let Some(removal) = self.removal {
            res.headers_mut().append(SET_COOKIE, removal);
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;
    use axum::body::HttpBody;
    use axum::http::header::{CONTENT_LENGTH, COOKIE, SET_COOKIE};
    use clap::Parser;
    use tower_sessions::session::Id;

    /// The answer as the client sees it: status, headers without the
    /// length (hyper writes it from the body's exact size, checked), body;
    /// a session id or count that must differ between two answers replaced.
    async fn seen(res: Response, ids: &[String]) -> (u16, Vec<(String, String)>, String) {
        let status = res.status().as_u16();
        let mut headers = Vec::new();
        for (name, value) in res.headers() {
            if name != CONTENT_LENGTH {
                headers.push((name.to_string(), value.to_str().unwrap().to_owned()));
            }
        }
        let hint = res.body().size_hint().exact();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .unwrap();
        assert_eq!(hint, Some(bytes.len() as u64), "the length is known");
        let mut body = String::from_utf8(bytes.to_vec()).unwrap();
        let blank = |text: &mut String| {
            for id in ids {
                *text = text.replace(id, "ID");
            }
        };
        for (name, value) in &mut headers {
            if name == SET_COOKIE.as_str() {
                // A new session's id is drawn per answer.
                let cut = value.find(';').unwrap_or(value.len());
                value.replace_range(..cut, "NODESESSID=NEW");
            }
            blank(value);
        }
        if let Ok(mut doc) = serde_json::from_str::<serde_json::Value>(&body) {
            if doc.get("sessionViews").is_some() {
                doc["sessionViews"] = 0.into();
                if !doc["id"]
                    .as_str()
                    .is_some_and(|id| ids.iter().any(|i| i == id))
                {
                    doc["id"] = "NEW".into();
                }
            }
            body = doc.to_string();
        }
        blank(&mut body);
        (status, headers, body)
    }

    /// The same requests through the front and through the router alone,
    /// on one store: the same answers.
    #[tokio::test]
    async fn the_front_answers_as_the_router_does() {
        let state =
            AppState::new(&Config::parse_from(["webapp", "--server-ip", "10.1.2.3"])).unwrap();
        let front = Front::new(state.clone());
        let router = app(state.clone());
        let first = front
            .answer(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let cookie = first.headers()[SET_COOKIE].to_str().unwrap().to_owned();
        let pair = cookie.split(';').next().unwrap().to_owned();
        let live = pair.trim_start_matches("NODESESSID=").to_owned();
        let unknown = Id::default().to_string();
        // Method, URI, headers.
        type Case<'a> = (Method, &'a str, Vec<(&'a str, String)>);
        let cases: Vec<Case> = vec![
            (Method::GET, "/", vec![]),
            (Method::GET, "/?x=1", vec![]),
            (Method::GET, "/", vec![("cookie", pair.clone())]),
            (
                Method::GET,
                "/",
                vec![("cookie", format!("NODESESSID={unknown}"))],
            ),
            (Method::GET, "/", vec![("cookie", "NODESESSID=bad".into())]),
            (
                Method::GET,
                "/",
                vec![
                    ("cookie", format!("a=1; {pair}")),
                    ("x-request-id", "r1".into()),
                ],
            ),
            (Method::GET, "/", vec![("x-request-id", "é".into())]),
            (
                Method::GET,
                "/",
                vec![
                    ("x-request-id", "x".repeat(300)),
                    ("cookie", "NODESESSID=bad".into()),
                ],
            ),
            (Method::HEAD, "/", vec![]),
            (Method::HEAD, "/", vec![("cookie", "NODESESSID=bad".into())]),
            (Method::POST, "/", vec![]),
            (Method::GET, "/nowhere", vec![]),
            (Method::GET, "//", vec![]),
        ];
        for (method, uri, headers) in cases {
            let request = || {
                let mut req = Request::builder().method(method.clone()).uri(uri);
                for (name, value) in &headers {
                    req = req.header(*name, value.as_str());
                }
                req.body(Body::empty()).unwrap()
            };
            let ids = [live.clone(), unknown.clone()];
            let theirs = router.clone().oneshot(request()).await.unwrap();
            let ours = front.answer(request()).await.unwrap();
            let case = format!("{method} {uri} {headers:?}");
            assert_eq!(seen(ours, &ids).await, seen(theirs, &ids).await, "{case}");
        }
        // Both ways counted on the one store: the first answer, the plain
        // cookie's GET by both, the one with request id r1 once (the second
        // is a replay), and this one.
        let mut req = Request::get("/").body(Body::empty()).unwrap();
        req.headers_mut().insert(COOKIE, pair.parse().unwrap());
        let last = front.answer(req).await.unwrap();
        let bytes = axum::body::to_bytes(last.into_body(), 1 << 16)
            .await
            .unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(doc["sessionViews"], 1 + 2 + 1 + 1, "{doc}");
    }
}
