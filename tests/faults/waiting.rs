//! Waiting through outages: watches and retries that ride out a restarted API server.

use super::*;

/// Waits until `cond` holds for the named object, from a watch that rides out API outages;
/// panics after `timeout` with the object's last state.
pub(crate) async fn eventually<K>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    what: &str,
    cond: impl Fn(&K) -> bool,
) -> K
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(api.clone(), config)
        .default_backoff()
        .applied_objects()
        .boxed();
    let found = async {
        while let Some(item) = stream.next().await {
            if let Ok(obj) = item
                && cond(&obj)
            {
                return obj;
            }
        }
        unreachable!("a watcher stream does not end")
    };
    match tokio::time::timeout(timeout, found).await {
        Ok(obj) => obj,
        Err(_) => {
            let last = api.get_opt(name).await.ok().flatten();
            panic!(
                "timed out after {timeout:?} waiting for {what}; last state of {name}: {last:#?}"
            )
        }
    }
}

/// Retries a request through an outage (up to a minute).
pub(crate) async fn retry<T, F, Fut>(what: &str, f: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut last = None;
    for _ in 0..120 {
        match f().await {
            Ok(v) => return v,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("{what}: {last:?}")
}
