//! The one Redis connection every shared-state module talks through: a standalone server or
//! a Redis Cluster, chosen by the URL, behind redis-rs's `ConnectionLike` so scripts and
//! commands are written once.
//!
//! URLs: `redis://…` for one server; `redis+cluster://host:port,host:port` for a cluster,
//! listing any of its nodes (the rest are discovered). Credentials in the first node's
//! address apply to every node. TLS (`rediss://`, `rediss+cluster://`) is refused with a
//! clear error for now: it is not compiled in.
//!
//! Why this works on a cluster unchanged: every key Veil writes carries the `{prefix}` hash
//! tag, so all of a call's keys — and every key a Lua script touches — sit in one slot, on
//! one node. Pub/sub needs no routing: a message published on any node reaches subscribers
//! on every node, so the change feed subscribes through one node's plain connection
//! ([`pubsub_url`]).

use crate::{COMMAND_TIMEOUT, ClusterError};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use std::time::Duration;

const CLUSTER_SCHEMES: [(&str, &str); 2] = [("redis+cluster://", "redis://"), ("rediss+cluster://", "rediss://")];

/// A connection to a standalone Redis or to a Redis Cluster. Cloning is cheap and shares
/// the underlying multiplexed connection(s); both kinds reconnect by themselves, so an
/// outage ends without a restart and each command fails fast while Redis is away.
#[derive(Clone)]
pub enum RedisConnection {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Standalone(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Standalone(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Standalone(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

/// The node addresses of a cluster URL, each as a plain `redis://` or `rediss://` URL;
/// `None` for a standalone URL.
pub fn cluster_nodes(url: &str) -> Result<Option<Vec<String>>, ClusterError> {
    let Some((rest, scheme)) =
        CLUSTER_SCHEMES.iter().find_map(|(cluster, plain)| url.strip_prefix(cluster).map(|rest| (rest, *plain)))
    else {
        if url.contains(',') {
            return Err(ClusterError::Url(
                "several addresses need a cluster URL: redis+cluster://host:port,host:port".into(),
            ));
        }
        return Ok(None);
    };
    let mut hosts = rest.split(',').map(str::trim).filter(|host| !host.is_empty());
    let Some(first) = hosts.next() else {
        return Err(ClusterError::Url("a cluster URL must name at least one node".into()));
    };
    // Credentials are written once, on the first node; the path (a database) means nothing
    // on a cluster, which has only database 0.
    let (credentials, first) = match first.rsplit_once('@') {
        Some((credentials, host)) => (Some(credentials), host),
        None => (None, first),
    };
    let node = |host: &str| {
        let host = host.split('/').next().unwrap_or(host);
        match credentials {
            Some(credentials) => format!("{scheme}{credentials}@{host}"),
            None => format!("{scheme}{host}"),
        }
    };
    Ok(Some(std::iter::once(first).chain(hosts).map(node).collect()))
}

/// The URL the change feed subscribes through: the URL itself, or a cluster's first node.
pub fn pubsub_url(url: &str) -> Result<String, ClusterError> {
    Ok(match cluster_nodes(url)? {
        Some(nodes) => nodes.into_iter().next().unwrap_or_default(),
        None => url.to_owned(),
    })
}

/// Connects to the standalone server or cluster `url` names.
pub async fn connect(url: &str) -> Result<RedisConnection, ClusterError> {
    if url.starts_with("rediss") {
        return Err(ClusterError::Url(
            "TLS to Redis (rediss://) is not supported yet; reach Redis over a private network or a TLS tunnel".into(),
        ));
    }
    let connection = match cluster_nodes(url)? {
        Some(nodes) => connect_cluster(nodes).await?,
        None => connect_standalone(url).await?,
    };
    metrics::gauge!(crate::REDIS_UP).set(1.0);
    Ok(connection)
}

async fn connect_standalone(url: &str) -> Result<RedisConnection, ClusterError> {
    let client = redis::Client::open(url).map_err(|e| ClusterError::Url(e.to_string()))?;
    let address = client.get_connection_info().addr().to_string();
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(COMMAND_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    let manager = ConnectionManager::new_with_config(client, config)
        .await
        .map_err(|e| ClusterError::Connect { address, reason: e.to_string() })?;
    Ok(RedisConnection::Standalone(manager))
}

async fn connect_cluster(nodes: Vec<String>) -> Result<RedisConnection, ClusterError> {
    let address = nodes.join(",");
    let client = ClusterClient::builder(nodes)
        .connection_timeout(COMMAND_TIMEOUT)
        .response_timeout(COMMAND_TIMEOUT)
        .retries(1)
        .build()
        .map_err(|e| ClusterError::Url(e.to_string()))?;
    let connection =
        client.get_async_connection().await.map_err(|e| ClusterError::Connect { address, reason: e.to_string() })?;
    Ok(RedisConnection::Cluster(connection))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_become_node_urls() {
        assert_eq!(cluster_nodes("redis://127.0.0.1:6379/2").unwrap(), None);
        assert_eq!(
            cluster_nodes("redis+cluster://127.0.0.1:7000,127.0.0.1:7001").unwrap().unwrap(),
            ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]
        );
        assert_eq!(
            cluster_nodes("rediss+cluster://veil:secret@a.example:7000,b.example:7000/0").unwrap().unwrap(),
            ["rediss://veil:secret@a.example:7000", "rediss://veil:secret@b.example:7000"]
        );
        assert_eq!(pubsub_url("redis+cluster://h1:7000,h2:7001").unwrap(), "redis://h1:7000");
        assert_eq!(pubsub_url("redis://h:6379").unwrap(), "redis://h:6379");
        assert!(cluster_nodes("redis+cluster://").is_err());
        assert!(cluster_nodes("redis://a:1,b:2").is_err());
    }

    #[tokio::test]
    async fn tls_urls_are_refused_with_a_clear_error() {
        for url in ["rediss://h:6379", "rediss+cluster://h:7000,h:7001"] {
            match connect(url).await {
                Err(ClusterError::Url(reason)) => assert!(reason.contains("not supported"), "{reason}"),
                Err(other) => panic!("{url}: {other}"),
                Ok(_) => panic!("{url} connected"),
            }
        }
    }
}
