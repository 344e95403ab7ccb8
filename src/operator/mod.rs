//! The operator process: configuration, the shared client, and the lifecycle of the
//! controllers (start, run until a shutdown signal, stop cleanly).

pub mod shutdown;

use kube::Client;
use thiserror::Error;

/// Errors that stop the operator from starting.
#[derive(Debug, Error)]
pub enum Error {
    #[error("connecting to the Kubernetes API: {0}")]
    Connect(#[source] kube::Error),
    #[error("reading the API server version: {0}")]
    ServerVersion(#[source] kube::Error),
}

/// Connects with the in-cluster configuration or the kubeconfig (`KUBECONFIG`, then
/// `~/.kube/config`), and checks the API server answers.
pub async fn connect() -> Result<Client, Error> {
    let client = Client::try_default().await.map_err(Error::Connect)?;
    let version = client
        .apiserver_version()
        .await
        .map_err(Error::ServerVersion)?;
    tracing::info!(server = %version.git_version, platform = %version.platform, "connected to the Kubernetes API");
    Ok(client)
}

/// Runs the controllers until `shutdown` resolves, then stops them; returns what `shutdown`
/// returned. Missing CRDs are reported (the operator does not install them) and waited for.
pub async fn run<S: std::future::Future>(client: Client, shutdown: S) -> Result<S::Output, Error> {
    report_missing_crds(&client).await;
    Ok(shutdown.await)
}

/// Logs each nodeops CRD the cluster does not serve, with the command that installs it.
async fn report_missing_crds(client: &Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
    for crd in crate::api::crds() {
        let name = crd.metadata.name.unwrap_or_default();
        match api.get_opt(&name).await {
            Ok(Some(_)) => tracing::debug!(crd = %name, "CRD installed"),
            Ok(None) => {
                tracing::warn!(crd = %name, "CRD not installed: apply crds/ (kubectl apply -f crds/) or the Helm chart")
            }
            Err(e) => tracing::warn!(crd = %name, error = %e, "cannot read CRD"),
        }
    }
}
