use health_prober::Prober;
use health_prober::config::ProberConfig;
use runbook_shared::config::Env;
use runbook_shared::entry::{serve, startup_failed};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    runbook_shared::logging::init();
    let config = ProberConfig::from_env(&Env::process()).map_err(startup_failed)?;
    let prober = Prober::new(config, &runbook_shared::aws::load_sdk_config().await);
    serve(|event, invocation| {
        let prober = &prober;
        async move { prober.handle(event, &invocation).await }
    })
    .await
}
