//! Who is applying: the host (or ECS task), the release and the image, for the history rows
//! and the result event.
//!
//! ECS task metadata (v4) is read once at start with a short timeout; unset or unreachable
//! means "not on ECS" and the run carries on with the host name. A plain HTTP/1.0 GET: the
//! endpoint is a link-local plain-HTTP service, and this keeps an HTTP client out of every run
//! that does not need one.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// This build's version, recorded with every applied file.
pub const MIGRUN_VERSION: &str = env!("CARGO_PKG_VERSION");

const TIMEOUT: Duration = Duration::from_secs(2);

/// What the history rows and the result event say about who applied a migration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The ECS task ARN on ECS, else the host name.
    pub applied_by: String,
    /// `MIGRUN_RELEASE` or `GIT_SHA`.
    pub release: Option<String>,
    /// The ECS task ARN, when on ECS.
    pub ecs_task_arn: Option<String>,
    /// The container image, when on ECS.
    pub image: Option<String>,
    /// The container image's digest, when on ECS.
    pub image_digest: Option<String>,
    /// The ECS cluster (its name, from the ARN the task metadata gives), when on ECS.
    pub ecs_cluster: Option<String>,
    /// The task definition's family (without its revision), when on ECS.
    pub ecs_family: Option<String>,
}

impl Identity {
    /// On ECS the task ARN is who applied a migration; the host name is a throwaway id there.
    pub fn new(host: &str, release: Option<String>, task: Option<TaskIdentity>) -> Identity {
        let task = task.unwrap_or_default();
        Identity {
            applied_by: task.task_arn.clone().unwrap_or_else(|| host.to_string()),
            release,
            ecs_task_arn: task.task_arn,
            image: task.image,
            image_digest: task.image_digest,
            ecs_cluster: task.cluster.map(|c| c.rsplit('/').next().unwrap_or_default().to_string()),
            ecs_family: task.task_definition.map(|d| d.split(':').next().unwrap_or_default().to_string()),
        }
    }
}

/// The kernel's host name, else `$HOSTNAME`.
pub fn host_name(hostname_var: Option<String>) -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it on success.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let from_kernel = ok
        .then(|| {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            String::from_utf8_lossy(&buf[..end]).into_owned()
        })
        .filter(|h| !h.is_empty());
    from_kernel.or(hostname_var).unwrap_or_else(|| "unknown-host".to_string())
}

/// What ECS says about the task and this container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskIdentity {
    /// The task's ARN.
    pub task_arn: Option<String>,
    /// The cluster's name or ARN.
    pub cluster: Option<String>,
    /// `family:revision`
    pub task_definition: Option<String>,
    /// The container image.
    pub image: Option<String>,
    /// The container image's digest.
    pub image_digest: Option<String>,
}

/// Reads the task and container metadata; `None` (with a log line) when unreachable.
pub async fn fetch_task(base: &str) -> Option<TaskIdentity> {
    let task = get_json(&format!("{}/task", base.trim_end_matches('/'))).await;
    let container = get_json(base.trim_end_matches('/')).await;
    let (task, container) = match (task, container) {
        (Ok(task), Ok(container)) => (task, container),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "ECS task metadata unreachable; recording the host name only");
            return None;
        }
    };
    let text = |v: &serde_json::Value, key: &str| v.get(key).and_then(|x| x.as_str()).map(str::to_string);
    let identity = TaskIdentity {
        task_arn: text(&task, "TaskARN"),
        cluster: text(&task, "Cluster"),
        task_definition: match (text(&task, "Family"), text(&task, "Revision")) {
            (Some(family), Some(revision)) => Some(format!("{family}:{revision}")),
            (family, _) => family,
        },
        image: text(&container, "Image"),
        image_digest: text(&container, "ImageID"),
    };
    tracing::info!(
        task_arn = identity.task_arn.as_deref().unwrap_or(""),
        cluster = identity.cluster.as_deref().unwrap_or(""),
        task_definition = identity.task_definition.as_deref().unwrap_or(""),
        image = identity.image.as_deref().unwrap_or(""),
        image_digest = identity.image_digest.as_deref().unwrap_or(""),
        "ECS task"
    );
    Some(identity)
}

async fn get_json(url: &str) -> Result<serde_json::Value, String> {
    let body =
        tokio::time::timeout(TIMEOUT, get(url)).await.map_err(|_| format!("{url}: no answer within {TIMEOUT:?}"))??;
    serde_json::from_slice(&body).map_err(|e| format!("{url}: not JSON: {e}"))
}

async fn get(url: &str) -> Result<Vec<u8>, String> {
    let rest =
        url.strip_prefix("http://").ok_or_else(|| format!("{url}: only http:// metadata endpoints are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let address = if authority.contains(':') { authority.to_string() } else { format!("{authority}:80") };
    let mut stream = tokio::net::TcpStream::connect(&address).await.map_err(|e| format!("{url}: {e}"))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nAccept: application/json\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("{url}: {e}"))?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.map_err(|e| format!("{url}: {e}"))?;
    let split =
        response.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| format!("{url}: malformed HTTP response"))?;
    let status_line = String::from_utf8_lossy(&response[..split]).lines().next().unwrap_or_default().to_string();
    if status_line.split_whitespace().nth(1) != Some("200") {
        return Err(format!("{url}: {status_line}"));
    }
    Ok(response[split + 4..].to_vec())
}
