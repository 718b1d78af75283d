use limit_scaler::Scaler;
use limit_scaler::config::ScalerConfig;
use runbook_shared::config::Env;
use runbook_shared::entry::{serve, startup_failed};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    runbook_shared::logging::init();
    let config = ScalerConfig::from_env(&Env::process()).map_err(startup_failed)?;
    let scaler = Scaler::new(config, &runbook_shared::aws::load_sdk_config().await);
    serve(|event, invocation| {
        let scaler = &scaler;
        async move { scaler.handle(event, &invocation).await }
    })
    .await
}
