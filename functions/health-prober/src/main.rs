use health_prober::Prober;
use health_prober::config::ProberConfig;
use runbook_shared::config::Env;
use runbook_shared::edge::publish::ReportEvents;
use runbook_shared::edge::{serve, startup_failed};

#[tokio::main]
async fn main() -> Result<(), runbook_shared::edge::Error> {
    runbook_shared::logging::init();
    let env = Env::process();
    let config = ProberConfig::from_env(&env).map_err(startup_failed)?;
    let sdk = runbook_shared::aws::load_sdk_config().await;
    let report_events = ReportEvents::from_env(&env, &sdk).map_err(startup_failed)?;
    let prober = Prober::new(config, &sdk);
    serve(
        health_prober::FUNCTION,
        report_events,
        |event, invocation| {
            let prober = &prober;
            async move { prober.handle(event, &invocation).await }
        },
    )
    .await
}
