//! `fanout up` / `fanout status` resolved: the worker's settings validated, the engine's index
//! read, and what every target's connection shares.

use super::command::{FanoutRequest, Format};
use super::connection::Shared;
use super::inputs::Inputs;
use super::{truncate, ConfigError};
use crate::duration::{self, Millis};
use crate::fleet::capacity::Capacity;
use crate::fleet::worker::{Canary, Settings, Start};
use crate::run::cli::{FanoutAction, FanoutUpArgs, TargetArgs};
use crate::run::settings::DATABASE_URL;

const FROM_BATCH: &str = "AWS_BATCH_JOB_ARRAY_SIZE (--workers)";

pub fn request(inputs: &Inputs, action: FanoutAction, format: Format) -> Result<FanoutRequest, ConfigError> {
    let request = |targets: TargetArgs, status_only: bool, settings: Settings| -> Result<_, ConfigError> {
        Ok(FanoutRequest {
            status_only,
            format,
            source: targets.targets,
            targets_query: targets.targets_query,
            coord_url: targets.coord_url,
            only: None,
            run_id: None,
            settings,
            base_url: inputs.text(&DATABASE_URL),
            shared: Shared::read(inputs)?,
        })
    };
    let defaults = Settings::default();
    let FanoutUpArgs {
        targets,
        concurrency,
        max_conns_per_server,
        workers,
        canary,
        max_failure_rate,
        run_id,
        deadline,
        only,
        retry_failed,
    } = match action {
        FanoutAction::Status { targets, .. } => return request(targets, true, defaults),
        FanoutAction::Up(args) => args,
    };
    let invalid = |flag: &'static str, value: String, expected: &str| ConfigError::Flag {
        flag,
        value: truncate(&value, 40),
        expected: expected.to_string(),
    };
    if concurrency == 0 {
        return Err(invalid("--concurrency", "0".into(), "at least 1"));
    }
    if max_conns_per_server == Some(0) {
        return Err(invalid("--max-conns-per-server", "0".into(), "at least 1"));
    }
    let batch_size = inputs.var("AWS_BATCH_JOB_ARRAY_SIZE");
    let (workers, named) = match (workers, &batch_size) {
        (Some(0), _) => return Err(invalid("--workers", "0".into(), "at least 1")),
        (Some(w), _) => (Some(w), "--workers"),
        (None, Some(size)) => {
            let w = size.trim().parse::<u32>().ok().filter(|w| *w > 0);
            (Some(w.ok_or_else(|| invalid(FROM_BATCH, size.clone(), "a count of at least 1"))?), FROM_BATCH)
        }
        (None, None) => (None, "--workers"),
    };
    if let (Some(w), Some(k)) = (workers, max_conns_per_server) {
        if w >= k {
            return Err(invalid(
                named,
                w.to_string(),
                "fewer than --max-conns-per-server: each worker's coordination session takes one of the K slots",
            ));
        }
    }
    if let Some(rate) = max_failure_rate.filter(|r| !(0.0..=1.0).contains(r)) {
        return Err(invalid("--max-failure-rate", rate.to_string(), "a share between 0 and 1"));
    }
    let deadline = match deadline {
        Some(text) => Some(
            Millis::parse(&text)
                .ok_or_else(|| invalid("--deadline", text.clone(), duration::expected(&text)))?
                .as_duration(),
        ),
        None => None,
    };
    // `--only` migrates one target: no canary before it.
    let canary = match (canary, &only) {
        (Some(_), Some(_)) | (None, _) => Canary::None,
        (Some(text), None) => {
            Canary::parse(&text).ok_or_else(|| invalid("--canary", text.clone(), "a count (5) or a share (2%)"))?
        }
    };
    let settings = Settings {
        concurrency: concurrency as usize,
        capacity: Capacity { per_server: max_conns_per_server, workers },
        canary,
        max_failure_rate,
        deadline,
        retry_failed,
        start: start(inputs, batch_size.as_deref()),
    };
    Ok(FanoutRequest { only, run_id, ..request(targets, false, settings)? })
}

/// Where this worker starts: the engine's index (Kubernetes indexed jobs, AWS Batch arrays),
/// else a seed of its own from the process id and the clock.
fn start(inputs: &Inputs, batch_size: Option<&str>) -> Start {
    let index = ["JOB_COMPLETION_INDEX", "AWS_BATCH_JOB_ARRAY_INDEX"]
        .iter()
        .find_map(|name| inputs.var(name)?.trim().parse::<usize>().ok());
    match index {
        Some(index) => Start::Index { index, size: batch_size.and_then(|s| s.trim().parse().ok()) },
        None => {
            let nanos =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
            Start::Seed((std::process::id() as usize).wrapping_mul(2654435761).wrapping_add(nanos as usize))
        }
    }
}
