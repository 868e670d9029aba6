//! A real `redis-server` per test (the test kit's guard) and what the
//! session store tests look at in it.

use std::time::Duration;

pub use testkit::RedisServer;

/// A plain connection to a test server, to look at the keys.
pub trait Connect {
    fn conn(&self) -> redis::Connection;
}

impl Connect for RedisServer {
    fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("a connection to the test redis-server")
    }
}

/// `EXISTS key`.
pub fn exists(conn: &mut redis::Connection, key: &str) -> bool {
    redis::cmd("EXISTS").arg(key).query::<i64>(conn).unwrap() == 1
}
