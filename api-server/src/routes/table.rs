//! A router that also lists what it serves.
//!
//! The OpenAPI document (`crate::openapi`) is written beside the handlers,
//! not derived from them, so something must hold the two together: every
//! route is added through a [`RouteTable`], which records its method and
//! path, and a test checks that the document describes exactly the
//! recorded routes: no route served undocumented, none documented but
//! missing.

use axum::Router;
use axum::handler::Handler;
use axum::routing::{MethodFilter, on};

/// One method on one path template, as axum and OpenAPI both write it
/// (`/v1/tenants/{tenant}`); `method` is lowercase, as in OpenAPI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Served {
    pub method: &'static str,
    pub path: &'static str,
}

/// An axum router and the list of what it routes.
#[derive(Debug)]
pub struct RouteTable<S = ()> {
    router: Router<S>,
    served: Vec<Served>,
}

impl<S: Clone + Send + Sync + 'static> Default for RouteTable<S> {
    fn default() -> Self {
        Self { router: Router::new(), served: Vec::new() }
    }
}

impl<S: Clone + Send + Sync + 'static> RouteTable<S> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get<H: Handler<T, S>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.on(MethodFilter::GET, "get", path, handler)
    }

    pub fn put<H: Handler<T, S>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.on(MethodFilter::PUT, "put", path, handler)
    }

    pub fn post<H: Handler<T, S>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.on(MethodFilter::POST, "post", path, handler)
    }

    pub fn delete<H: Handler<T, S>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.on(MethodFilter::DELETE, "delete", path, handler)
    }

    /// Both tables' routes (axum merges methods on one path).
    pub fn merge(mut self, other: Self) -> Self {
        self.router = self.router.merge(other.router);
        self.served.extend(other.served);
        self
    }

    pub fn served(&self) -> &[Served] {
        &self.served
    }

    pub fn into_router(self) -> Router<S> {
        self.router
    }

    fn on<H: Handler<T, S>, T: 'static>(
        mut self,
        filter: MethodFilter,
        method: &'static str,
        path: &'static str,
        handler: H,
    ) -> Self {
        self.router = self.router.route(path, on(filter, handler));
        self.served.push(Served { method, path });
        self
    }
}
