use lambda_runtime::{Error, LambdaEvent, service_fn};
use limit_scaler::Scaler;
use limit_scaler::config::ScalerConfig;
use runbook_shared::config::Env;
use runbook_shared::deadline::Deadline;
use runbook_shared::safety::Invocation;
use serde_json::Value;
use tracing::Instrument;

#[tokio::main]
async fn main() -> Result<(), Error> {
    runbook_shared::logging::init();
    let config = ScalerConfig::from_env(&Env::process())
        .inspect_err(|err| tracing::error!(error = %err, "bad configuration"))?;
    let sdk = runbook_shared::aws::load_sdk_config().await;
    let scaler = Scaler::new(config, &sdk);
    let scaler = &scaler;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let invocation = Invocation::new(&event.context.request_id, Deadline::from_epoch_millis(event.context.deadline));
        let span = tracing::info_span!("invocation", request_id = %event.context.request_id, target = tracing::field::Empty);
        let report = scaler.handle(event.payload, &invocation).instrument(span).await;
        runbook_shared::logging::log_report(&report);
        Ok::<_, Error>(report)
    }))
    .await
}
